package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/storegate/storegate/gate"
)

// kvServer serves etcdserverpb.KV.
type kvServer struct {
	pb.UnsafeKVServer // a new upstream method is a compile error, not a passthrough
	s                 *Server
}

var _ pb.KVServer = (*kvServer)(nil)

func (k *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if len(r.Key) == 0 {
		return nil, errEmptyKey
	}
	ops := [1]gate.Op{rangeOp(r, mRange)}
	var eff [1]gate.Effect
	if err := k.s.check(ctx, ops[:], eff[:]); err != nil {
		return nil, err
	}
	asked, r, err := k.s.transformRange(ctx, ops[:], r)
	if err != nil {
		return nil, err
	}
	if eff[0] == gate.Filter {
		return k.filteredRange(ctx, r, mRange, asked)
	}
	resp, err := k.s.up.kv.Range(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondKVs(ctx, asked, resp.Kvs...); err != nil {
		return nil, err
	}
	return resp, nil
}

// transformRange runs the request chain over a range's op; the request is
// copied before plugins rewrite it, so that the caller's stays as sent. It
// returns the op as asked (nil without plugins) and the request to send.
func (s *Server) transformRange(ctx context.Context, ops []gate.Op, r *pb.RangeRequest) (*gate.Op, *pb.RangeRequest, error) {
	if !s.gate.Plugins() {
		return nil, r, nil
	}
	up := proto.Clone(r).(*pb.RangeRequest)
	d := opsDecoder{ops: ops[:0], plugins: true}
	rangeRewrite(&d, up)
	orig, err := s.transform(ctx, ops, d.rewrites)
	if err != nil {
		return nil, nil, err
	}
	return orig[up], up, nil
}

// filteredRange serves a range the caller may read only in part: it asks for
// every key of the range (limit and count computed here, so that neither
// counts nor "more" reveal hidden keys) and keeps the readable ones.
func (k *kvServer) filteredRange(ctx context.Context, r *pb.RangeRequest, method string, asked *gate.Op) (*pb.RangeResponse, error) {
	up := proto.Clone(r).(*pb.RangeRequest)
	up.Limit = 0
	if up.CountOnly {
		up.CountOnly = false
		up.KeysOnly = true
	}
	resp, err := k.s.up.kv.Range(upstreamCtx(ctx), up)
	if err != nil {
		return nil, err
	}
	// Plugins first, so that narrowing judges keys as the caller knows them.
	if err := k.s.respondKVs(ctx, asked, resp.Kvs...); err != nil {
		return nil, err
	}
	k.s.narrowRange(ctx, r, resp, method)
	return resp, nil
}

// narrowRange keeps the readable key-values of resp, the whole answer to
// r asked without limit or count_only, and applies r's limit and count_only.
func (s *Server) narrowRange(ctx context.Context, r *pb.RangeRequest, resp *pb.RangeResponse, method string) {
	id := caller(ctx)
	visible := resp.Kvs[:0]
	for _, kv := range resp.Kvs {
		if s.gate.Readable(ctx, id, gate.ProtocolEtcd, gate.ResourceKV, method, kv.Key) {
			visible = append(visible, kv)
		}
	}
	resp.Count = int64(len(visible))
	resp.More = false
	switch {
	case r.CountOnly:
		visible = nil
	case r.Limit > 0 && int64(len(visible)) > r.Limit:
		visible = visible[:r.Limit]
		resp.More = true
	}
	resp.Kvs = visible
}

func (k *kvServer) RangeStream(r *pb.RangeRequest, stream grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	ctx := stream.Context()
	if len(r.Key) == 0 {
		return errEmptyKey
	}
	ops := [1]gate.Op{rangeOp(r, mRangeStream)}
	var eff [1]gate.Effect
	if err := k.s.check(ctx, ops[:], eff[:]); err != nil {
		return err
	}
	asked, r, err := k.s.transformRange(ctx, ops[:], r)
	if err != nil {
		return err
	}
	if eff[0] == gate.Filter {
		resp, err := k.filteredRange(ctx, r, mRangeStream, asked)
		if err != nil {
			return err
		}
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: resp})
	}
	up, err := k.s.up.kv.RangeStream(upstreamCtx(ctx), r)
	if err != nil {
		return err
	}
	if asked != nil && k.s.gate.Responds(asked) {
		return relay(ctx, up.Recv, func(m *pb.RangeStreamResponse) error {
			if rr := m.GetRangeResponse(); rr != nil {
				if err := k.s.respondKVs(ctx, asked, rr.Kvs...); err != nil {
					return err
				}
			}
			return stream.Send(m)
		})
	}
	return relay(ctx, up.Recv, stream.Send)
}

func (k *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if len(r.Key) == 0 {
		return nil, errEmptyKey
	}
	d := opsDecoder{ctx: ctx, leaseKeys: k.s.leaseKeys, plugins: k.s.gate.Plugins()}
	if err := d.put(r, mPut, 0); err != nil {
		return nil, err
	}
	if err := k.s.check(ctx, d.ops, nil); err != nil {
		return nil, err
	}
	asked, err := k.s.transform(ctx, d.ops, d.rewrites)
	if err != nil {
		return nil, err
	}
	resp, err := k.s.up.kv.Put(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondKVs(ctx, asked[r], resp.PrevKv); err != nil {
		return nil, err
	}
	return resp, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if len(r.Key) == 0 {
		return nil, errEmptyKey
	}
	d := opsDecoder{ctx: ctx, plugins: k.s.gate.Plugins()}
	d.del(r, mDeleteRange, 0)
	eff := make([]gate.Effect, len(d.ops))
	if err := k.s.check(ctx, d.ops, eff); err != nil {
		return nil, err
	}
	asked, err := k.s.transform(ctx, d.ops, d.rewrites)
	if err != nil {
		return nil, err
	}
	resp, err := k.s.up.kv.DeleteRange(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondKVs(ctx, asked[r], resp.PrevKvs...); err != nil {
		return nil, err
	}
	if anyFilter(eff) {
		resp.PrevKvs = k.s.readable(ctx, mDeleteRange, resp.PrevKvs)
	}
	return resp, nil
}

func (k *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	d := opsDecoder{ctx: ctx, leaseKeys: k.s.leaseKeys, maxTxnOps: k.s.opts.MaxTxnOps, plugins: k.s.gate.Plugins()}
	if err := d.txn(r); err != nil {
		return nil, err
	}
	eff := make([]gate.Effect, len(d.ops))
	if err := k.s.check(ctx, d.ops, eff); err != nil {
		return nil, err
	}
	// A compare reads its whole range: it cannot be narrowed.
	for _, i := range d.compares {
		if eff[i] == gate.Filter {
			return nil, k.s.grpcError(ctx, gate.Denied(&d.ops[i], "a compare over a partly readable range"))
		}
	}
	// Filtered ranges are asked for whole and narrowed here, as Range does.
	narrowed := map[*pb.RangeRequest]*pb.RangeRequest{}
	for rr, i := range d.ranges {
		if eff[i] == gate.Filter {
			narrowed[rr] = proto.Clone(rr).(*pb.RangeRequest)
			rr.Limit = 0
			if rr.CountOnly {
				rr.CountOnly, rr.KeysOnly = false, true
			}
		}
	}
	asked, err := k.s.transform(ctx, d.ops, d.rewrites)
	if err != nil {
		return nil, err
	}
	resp, err := k.s.up.kv.Txn(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondTxn(ctx, r, resp, asked); err != nil {
		return nil, err
	}
	if anyFilter(eff) {
		k.s.filterTxn(ctx, r, resp, narrowed)
	}
	return resp, nil
}

func (k *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	ops := [1]gate.Op{etcdOp(gate.ResourceKV, gate.ActionCompact, mCompact)}
	if err := k.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	return k.s.up.kv.Compact(upstreamCtx(ctx), r)
}

func anyFilter(eff []gate.Effect) bool {
	for _, e := range eff {
		if e == gate.Filter {
			return true
		}
	}
	return false
}

// readable keeps the key-values the caller of ctx may read.
func (s *Server) readable(ctx context.Context, method string, kvs []*mvccKV) []*mvccKV {
	id := caller(ctx)
	out := kvs[:0]
	for _, kv := range kvs {
		if s.gate.Readable(ctx, id, gate.ProtocolEtcd, gate.ResourceKV, method, kv.Key) {
			out = append(out, kv)
		}
	}
	return out
}

// filterTxn drops unreadable key-values from every range and prev_kv of a
// transaction response, nested ones included.
func (s *Server) filterTxn(ctx context.Context, req *pb.TxnRequest, resp *pb.TxnResponse, narrowed map[*pb.RangeRequest]*pb.RangeRequest) {
	branch := req.Success
	if !resp.Succeeded {
		branch = req.Failure
	}
	for i, ro := range resp.Responses {
		var sent *pb.RequestOp
		if i < len(branch) {
			sent = branch[i]
		}
		switch x := ro.Response.(type) {
		case *pb.ResponseOp_ResponseRange:
			if rr := x.ResponseRange; rr != nil {
				if orig := narrowed[sent.GetRequestRange()]; orig != nil {
					s.narrowRange(ctx, orig, rr, mTxn)
					continue
				}
				n := len(rr.Kvs)
				rr.Kvs = s.readable(ctx, mTxn, rr.Kvs)
				rr.Count -= int64(n - len(rr.Kvs))
			}
		case *pb.ResponseOp_ResponsePut:
			if p := x.ResponsePut; p != nil && p.PrevKv != nil {
				if len(s.readable(ctx, mTxn, []*mvccKV{p.PrevKv})) == 0 {
					p.PrevKv = nil
				}
			}
		case *pb.ResponseOp_ResponseDeleteRange:
			if dr := x.ResponseDeleteRange; dr != nil {
				dr.PrevKvs = s.readable(ctx, mTxn, dr.PrevKvs)
			}
		case *pb.ResponseOp_ResponseTxn:
			if x.ResponseTxn != nil && sent.GetRequestTxn() != nil {
				s.filterTxn(ctx, sent.GetRequestTxn(), x.ResponseTxn, narrowed)
			}
		}
	}
}

// leaseKeys lists the keys attached to a lease, from the upstream.
func (s *Server) leaseKeys(ctx context.Context, id int64) ([][]byte, error) {
	resp, err := s.up.lease.LeaseTimeToLive(upstreamCtx(ctx), &pb.LeaseTimeToLiveRequest{ID: id, Keys: true})
	if err != nil {
		return nil, err
	}
	return resp.Keys, nil
}

type mvccKV = mvccpb.KeyValue
