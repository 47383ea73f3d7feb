package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/storegate/storegate/gate"
)

// respondKVs runs the response chain over key-values answering op, the op
// as asked (from Request.Asked; nil: no plugin answers it).
func (s *Server) respondKVs(ctx context.Context, q *gate.Request, op *gate.Op, kvs ...*mvccKV) error {
	if op == nil {
		return nil
	}
	for _, kv := range kvs {
		if kv == nil {
			continue
		}
		k, v, err := q.Respond(ctx, op, kv.Key, kv.Value)
		if err != nil {
			return s.grpcError(ctx, err)
		}
		kv.Key, kv.Value = k, v
	}
	return nil
}

// respondTxn runs the response chain over every range result and previous
// key-value of a transaction's answer, nested ones included.
func (s *Server) respondTxn(ctx context.Context, q *gate.Request, req *pb.TxnRequest, resp *pb.TxnResponse) error {
	if !s.gate.Plugins() {
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
				err = s.respondKVs(ctx, q, q.Asked(sent.GetRequestRange()), rr.Kvs...)
			}
		case *pb.ResponseOp_ResponsePut:
			if p := x.ResponsePut; p != nil {
				err = s.respondKVs(ctx, q, q.Asked(sent.GetRequestPut()), p.PrevKv)
			}
		case *pb.ResponseOp_ResponseDeleteRange:
			if dr := x.ResponseDeleteRange; dr != nil {
				err = s.respondKVs(ctx, q, q.Asked(sent.GetRequestDeleteRange()), dr.PrevKvs...)
			}
		case *pb.ResponseOp_ResponseTxn:
			if x.ResponseTxn != nil && sent.GetRequestTxn() != nil {
				err = s.respondTxn(ctx, q, sent.GetRequestTxn(), x.ResponseTxn)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}
