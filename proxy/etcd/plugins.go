package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/storegate/storegate/gate"
)

// rewrite is an op a request carries that plugins may change: the request
// message it came from (the key of its answer's response chain) and how to
// write the changed op back into it.
type rewrite struct {
	op    int // index in the decoder's ops
	req   any // *pb.PutRequest, *pb.RangeRequest, *pb.DeleteRangeRequest, *pb.Compare
	apply func(op *gate.Op)
}

// asked maps each request message of a request to its op as the caller
// sent it: what the response chain is told the answer is for.
type asked map[any]*gate.Op

// transform runs the request chain over the ops a request carries, after
// policy allowed the request, and writes back what plugins changed. It
// returns the ops as asked, for the response chain (nil without plugins).
func (s *Server) transform(ctx context.Context, ops []gate.Op, rws []rewrite) (asked, error) {
	if !s.gate.Plugins() || len(rws) == 0 {
		return nil, nil
	}
	orig := make(asked, len(rws))
	id := caller(ctx)
	for _, rw := range rws {
		before := ops[rw.op]
		orig[rw.req] = &before
		op := before
		if err := s.gate.Transform(ctx, id, &op); err != nil {
			return nil, s.grpcError(ctx, err)
		}
		rw.apply(&op)
	}
	return orig, nil
}

// respondKVs runs the response chain over key-values answering op.
func (s *Server) respondKVs(ctx context.Context, op *gate.Op, kvs ...*mvccKV) error {
	if op == nil || !s.gate.Responds(op) {
		return nil
	}
	id := caller(ctx)
	for _, kv := range kvs {
		if kv == nil {
			continue
		}
		k, v, err := s.gate.Response(ctx, id, op, kv.Key, kv.Value)
		if err != nil {
			return s.grpcError(ctx, err)
		}
		kv.Key, kv.Value = k, v
	}
	return nil
}

// respondTxn runs the response chain over every range result and previous
// key-value of a transaction's answer, nested ones included.
func (s *Server) respondTxn(ctx context.Context, req *pb.TxnRequest, resp *pb.TxnResponse, orig asked) error {
	if orig == nil {
		return nil
	}
	branch := req.Success
	if !resp.Succeeded {
		branch = req.Failure
	}
	for i, ro := range resp.Responses {
		if i >= len(branch) {
			break
		}
		sent := branch[i]
		var err error
		switch x := ro.Response.(type) {
		case *pb.ResponseOp_ResponseRange:
			if rr := x.ResponseRange; rr != nil {
				err = s.respondKVs(ctx, orig[sent.GetRequestRange()], rr.Kvs...)
			}
		case *pb.ResponseOp_ResponsePut:
			if p := x.ResponsePut; p != nil {
				err = s.respondKVs(ctx, orig[sent.GetRequestPut()], p.PrevKv)
			}
		case *pb.ResponseOp_ResponseDeleteRange:
			if dr := x.ResponseDeleteRange; dr != nil {
				err = s.respondKVs(ctx, orig[sent.GetRequestDeleteRange()], dr.PrevKvs...)
			}
		case *pb.ResponseOp_ResponseTxn:
			if x.ResponseTxn != nil && sent.GetRequestTxn() != nil {
				err = s.respondTxn(ctx, sent.GetRequestTxn(), x.ResponseTxn, orig)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Write-backs for each request message that carries keys or a value.

func putRewrite(d *opsDecoder, r *pb.PutRequest) {
	if !d.plugins {
		return
	}
	d.rewrites = append(d.rewrites, rewrite{op: len(d.ops), req: r, apply: func(op *gate.Op) {
		r.Key, r.Value = op.Keys.Key, op.Value
	}})
}

func rangeRewrite(d *opsDecoder, r *pb.RangeRequest) {
	if !d.plugins {
		return
	}
	d.rewrites = append(d.rewrites, rewrite{op: len(d.ops), req: r, apply: func(op *gate.Op) {
		r.Key, r.RangeEnd = op.Keys.Key, op.Keys.End
	}})
}

func deleteRewrite(d *opsDecoder, r *pb.DeleteRangeRequest) {
	if !d.plugins {
		return
	}
	d.rewrites = append(d.rewrites, rewrite{op: len(d.ops), req: r, apply: func(op *gate.Op) {
		r.Key, r.RangeEnd = op.Keys.Key, op.Keys.End
	}})
}

func compareRewrite(d *opsDecoder, c *pb.Compare) {
	if !d.plugins {
		return
	}
	d.rewrites = append(d.rewrites, rewrite{op: len(d.ops), req: c, apply: func(op *gate.Op) {
		c.Key, c.RangeEnd = op.Keys.Key, op.Keys.End
		if c.Target == pb.Compare_VALUE {
			c.TargetUnion = &pb.Compare_Value{Value: op.Value}
		}
	}})
}
