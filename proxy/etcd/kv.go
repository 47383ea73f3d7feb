package etcd

import (
	"bytes"
	"cmp"
	"context"
	"slices"

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
	q, up, err := k.s.rangeRequest(ctx, r, mRange)
	if err != nil {
		return nil, err
	}
	if q.Filtered() {
		return k.filteredRange(ctx, q, r, up, mRange)
	}
	resp, err := k.s.up.kv.Range(upstreamCtx(ctx), up)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondKVs(ctx, q, q.Asked(up), resp.Kvs...); err != nil {
		return nil, err
	}
	return resp, nil
}

// rangeRequest authorizes a range and returns the request to forward: a
// copy when plugins may rewrite it, so that the caller's stays as sent.
func (s *Server) rangeRequest(ctx context.Context, r *pb.RangeRequest, method string) (*gate.Request, *pb.RangeRequest, error) {
	up := r
	if s.gate.Plugins() {
		up = proto.Clone(r).(*pb.RangeRequest)
	}
	q := s.begin(ctx)
	s.decoder(q).rangeReq(up, method, 0)
	if err := s.authorize(ctx, q); err != nil {
		return nil, nil, err
	}
	return q, up, nil
}

// filteredRange serves a range the caller may read only in part: it asks for
// every key of the range (limit and count computed here, so that neither
// counts nor "more" reveal hidden keys) and keeps the readable ones.
func (k *kvServer) filteredRange(ctx context.Context, q *gate.Request, asked, r *pb.RangeRequest, method string) (*pb.RangeResponse, error) {
	whole := proto.Clone(r).(*pb.RangeRequest)
	askWhole(whole)
	resp, err := k.s.up.kv.Range(upstreamCtx(ctx), whole)
	if err != nil {
		return nil, err
	}
	// Plugins first, so that narrowing judges keys as the caller knows them.
	if err := k.s.respondKVs(ctx, q, q.Asked(r), resp.Kvs...); err != nil {
		return nil, err
	}
	k.s.narrowRange(ctx, q, asked, resp, method)
	return resp, nil
}

// askWhole turns r, a range the caller may read only in part, into the
// request for its whole answer (see narrowRange): no limit, no count_only
// (keys only instead), and values kept when they are the sort target.
func askWhole(r *pb.RangeRequest) {
	r.Limit = 0
	if r.CountOnly {
		r.CountOnly, r.KeysOnly = false, true
	}
	if r.SortTarget == pb.RangeRequest_VALUE {
		r.KeysOnly = false // sortTotal needs them; narrowRange drops them
	}
}

// narrowRange keeps the readable key-values of resp, the whole answer to
// r asked as askWhole does, and applies r's order, limit, count_only and
// keys_only.
func (s *Server) narrowRange(ctx context.Context, q *gate.Request, r *pb.RangeRequest, resp *pb.RangeResponse, method string) {
	resp.Kvs = s.readable(ctx, q, method, resp.Kvs)
	sortTotal(r, resp.Kvs)
	if r.KeysOnly {
		for _, kv := range resp.Kvs {
			kv.Value = nil
		}
	}
	resp.Count = int64(len(resp.Kvs))
	resp.More = false
	switch {
	case r.CountOnly:
		resp.Kvs = nil
	case r.Limit > 0 && int64(len(resp.Kvs)) > r.Limit:
		resp.Kvs = resp.Kvs[:r.Limit]
		resp.More = true
	}
}

// sortTotal orders kvs as r asks, like etcd, but totally: etcd's sort is
// not stable, so readable keys that tie on the sort target come back in an
// order that depends on the hidden keys around them (the order would tell
// that something hidden changed). Ties go by key, in the asked direction.
func sortTotal(r *pb.RangeRequest, kvs []*mvccpb.KeyValue) {
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if order != pb.RangeRequest_ASCEND && order != pb.RangeRequest_DESCEND {
		return // NONE: etcd's key order, already total
	}
	var by func(a, b *mvccpb.KeyValue) int
	switch r.SortTarget {
	case pb.RangeRequest_KEY:
		by = func(a, b *mvccpb.KeyValue) int { return 0 }
	case pb.RangeRequest_VERSION:
		by = func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.Version, b.Version) }
	case pb.RangeRequest_CREATE:
		by = func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) }
	case pb.RangeRequest_MOD:
		by = func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.ModRevision, b.ModRevision) }
	case pb.RangeRequest_VALUE:
		by = func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Value, b.Value) }
	default:
		return
	}
	sign := 1
	if order == pb.RangeRequest_DESCEND {
		sign = -1
	}
	slices.SortFunc(kvs, func(a, b *mvccpb.KeyValue) int {
		if c := by(a, b); c != 0 {
			return sign * c
		}
		return sign * bytes.Compare(a.Key, b.Key)
	})
}

func (k *kvServer) RangeStream(r *pb.RangeRequest, stream grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	ctx := stream.Context()
	if len(r.Key) == 0 {
		return errEmptyKey
	}
	q, up, err := k.s.rangeRequest(ctx, r, mRangeStream)
	if err != nil {
		return err
	}
	if q.Filtered() {
		resp, err := k.filteredRange(ctx, q, r, up, mRangeStream)
		if err != nil {
			return err
		}
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: resp})
	}
	ups, err := k.s.up.kv.RangeStream(upstreamCtx(ctx), up)
	if err != nil {
		return err
	}
	if asked := q.Asked(up); asked != nil {
		return relay(ctx, ups.Recv, func(m *pb.RangeStreamResponse) error {
			if rr := m.GetRangeResponse(); rr != nil {
				if err := k.s.respondKVs(ctx, q, asked, rr.Kvs...); err != nil {
					return err
				}
			}
			return stream.Send(m)
		})
	}
	return relay(ctx, ups.Recv, stream.Send)
}

func (k *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if len(r.Key) == 0 {
		return nil, errEmptyKey
	}
	q := k.s.begin(ctx)
	k.s.decoder(q).put(r, mPut, 0)
	if err := k.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	resp, err := k.s.up.kv.Put(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondKVs(ctx, q, q.Asked(r), resp.PrevKv); err != nil {
		return nil, err
	}
	return resp, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if len(r.Key) == 0 {
		return nil, errEmptyKey
	}
	q := k.s.begin(ctx)
	k.s.decoder(q).del(r, mDeleteRange, 0)
	if err := k.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	resp, err := k.s.up.kv.DeleteRange(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondKVs(ctx, q, q.Asked(r), resp.PrevKvs...); err != nil {
		return nil, err
	}
	if q.Filtered() {
		resp.PrevKvs = k.s.readable(ctx, q, mDeleteRange, resp.PrevKvs)
	}
	return resp, nil
}

func (k *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	q := k.s.begin(ctx)
	d := k.s.decoder(q)
	if err := d.txn(r); err != nil {
		return nil, err
	}
	// A compare reads its whole range: its op is not narrowable, so a
	// partly readable compare is denied by the gate.
	if err := q.Authorize(ctx); err != nil {
		return nil, k.s.grpcError(ctx, err)
	}
	// Filtered ranges are asked for whole and narrowed here, as Range does.
	narrowed := map[*pb.RangeRequest]*pb.RangeRequest{}
	for rr, i := range d.ranges {
		if q.Effect(i) == gate.Filter {
			narrowed[rr] = proto.Clone(rr).(*pb.RangeRequest)
			askWhole(rr)
		}
	}
	if err := q.Transform(ctx); err != nil {
		return nil, k.s.grpcError(ctx, err)
	}
	resp, err := k.s.up.kv.Txn(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := k.s.respondTxn(ctx, q, r, resp); err != nil {
		return nil, err
	}
	if q.Filtered() {
		k.s.filterTxn(ctx, q, r, resp, narrowed)
	}
	return resp, nil
}

func (k *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := k.s.allow(ctx, etcdOp(gate.ResourceKV, gate.ActionCompact, mCompact)); err != nil {
		return nil, err
	}
	return k.s.up.kv.Compact(upstreamCtx(ctx), r)
}

// readable keeps the key-values the caller of q may read.
func (s *Server) readable(ctx context.Context, q *gate.Request, method string, kvs []*mvccKV) []*mvccKV {
	out := kvs[:0]
	for _, kv := range kvs {
		if q.Readable(ctx, gate.ProtocolEtcd, gate.ResourceKV, method, kv.Key) {
			out = append(out, kv)
		}
	}
	return out
}

// filterTxn drops unreadable key-values from every range and prev_kv of a
// transaction response, nested ones included.
func (s *Server) filterTxn(ctx context.Context, q *gate.Request, req *pb.TxnRequest, resp *pb.TxnResponse, narrowed map[*pb.RangeRequest]*pb.RangeRequest) {
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
					s.narrowRange(ctx, q, orig, rr, mTxn)
					continue
				}
				n := len(rr.Kvs)
				rr.Kvs = s.readable(ctx, q, mTxn, rr.Kvs)
				rr.Count -= int64(n - len(rr.Kvs))
			}
		case *pb.ResponseOp_ResponsePut:
			if p := x.ResponsePut; p != nil && p.PrevKv != nil {
				if len(s.readable(ctx, q, mTxn, []*mvccKV{p.PrevKv})) == 0 {
					p.PrevKv = nil
				}
			}
		case *pb.ResponseOp_ResponseDeleteRange:
			if dr := x.ResponseDeleteRange; dr != nil {
				dr.PrevKvs = s.readable(ctx, q, mTxn, dr.PrevKvs)
			}
		case *pb.ResponseOp_ResponseTxn:
			if x.ResponseTxn != nil && sent.GetRequestTxn() != nil {
				s.filterTxn(ctx, q, sent.GetRequestTxn(), x.ResponseTxn, narrowed)
			}
		}
	}
}

type mvccKV = mvccpb.KeyValue
