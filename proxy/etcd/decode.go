package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/storegate/storegate/gate"
)

// Method names, as the gate and the decision log see them.
const (
	mRange       = "/etcdserverpb.KV/Range"
	mRangeStream = "/etcdserverpb.KV/RangeStream"
	mPut         = "/etcdserverpb.KV/Put"
	mDeleteRange = "/etcdserverpb.KV/DeleteRange"
	mTxn         = "/etcdserverpb.KV/Txn"
	mCompact     = "/etcdserverpb.KV/Compact"
	mWatch       = "/etcdserverpb.Watch/Watch"
)

func etcdOp(res gate.Resource, act gate.Action, method string) gate.Op {
	return gate.Op{Protocol: gate.ProtocolEtcd, Resource: res, Action: act, Method: method}
}

func rangeOp(r *pb.RangeRequest, method string) gate.Op {
	op := etcdOp(gate.ResourceKV, gate.ActionRead, method)
	op.Keys = gate.KeyRange{Key: r.Key, End: r.RangeEnd}
	return op
}

func deleteOp(r *pb.DeleteRangeRequest, method string) gate.Op {
	op := etcdOp(gate.ResourceKV, gate.ActionDelete, method)
	op.Keys = gate.KeyRange{Key: r.Key, End: r.RangeEnd}
	op.PrevKV = r.PrevKv
	return op
}

func putOp(r *pb.PutRequest, method string) gate.Op {
	op := etcdOp(gate.ResourceKV, gate.ActionWrite, method)
	op.Keys = gate.KeyRange{Key: r.Key}
	op.Lease = r.Lease
	op.ValueSize = len(r.Value)
	op.Value = r.Value
	op.PrevKV = r.PrevKv
	return op
}

// prefixRange is every key under name + "/": what etcd's elections and
// locks named name act on.
func prefixRange(name []byte) gate.KeyRange {
	pfx := make([]byte, len(name)+1)
	copy(pfx, name)
	pfx[len(name)] = '/'
	return gate.KeyRange{Key: pfx, End: gate.PrefixEnd(pfx)}
}

// decoder fills a gate request with the ops of etcd requests.
type decoder struct {
	s         *Server
	q         *gate.Request
	maxTxnOps int
	txnOps    int // ops walked, compares included: the next op's TxnIndex
	requests  int // requests walked, nested ones included
	// compares are the indexes of the reads that compares decode to;
	// ranges maps each range request of a txn to its op's index.
	compares []int
	ranges   map[*pb.RangeRequest]int
}

func (s *Server) decoder(q *gate.Request) *decoder {
	return &decoder{s: s, q: q, maxTxnOps: s.opts.MaxTxnOps}
}

// carry says whether plugins may rewrite ops, so that Carry's write-back
// is wanted: without plugins the closure is not even made (it would be
// allocated on every request).
func (d *decoder) carry() bool { return d.s.gate.Plugins() }

// rangeReq adds a range's read; its answer can be narrowed.
func (d *decoder) rangeReq(r *pb.RangeRequest, method string, txnIndex int) int {
	op := rangeOp(r, method)
	op.TxnIndex = txnIndex
	i := d.q.Ask(op)
	d.q.Narrow(i)
	if d.carry() {
		d.q.Carry(i, r, func(op *gate.Op) { r.Key, r.RangeEnd = op.Keys.Key, op.Keys.End })
	}
	return i
}

// put adds the ops of a Put: write the key; a prev_kv read of the same key;
// the use of an attached lease, which must be the caller's, and write
// access to every key already on it (etcd's own rule).
func (d *decoder) put(r *pb.PutRequest, method string, txnIndex int) {
	op := putOp(r, method)
	op.TxnIndex = txnIndex
	i := d.q.Ask(op)
	if d.carry() {
		d.q.Carry(i, r, func(op *gate.Op) { r.Key, r.Value = op.Keys.Key, op.Value })
	}
	d.prevKV(&op, false)
	if r.Lease != 0 {
		d.s.useLease(d.q, gate.ActionWrite, method, r.Lease, txnIndex, true)
	}
}

// prevKV adds, for an op that asks for the previous key-values, a read of
// the same keys (narrowable when the answer is a list of them).
func (d *decoder) prevKV(op *gate.Op, narrow bool) {
	if !op.PrevKV {
		return
	}
	rd := etcdOp(gate.ResourceKV, gate.ActionRead, op.Method)
	rd.Keys = op.Keys
	rd.TxnIndex = op.TxnIndex
	i := d.q.Ask(rd)
	if narrow {
		d.q.Narrow(i)
	}
}

func (d *decoder) del(r *pb.DeleteRangeRequest, method string, txnIndex int) {
	op := deleteOp(r, method)
	op.TxnIndex = txnIndex
	i := d.q.Ask(op)
	if d.carry() {
		d.q.Carry(i, r, func(op *gate.Op) { r.Key, r.RangeEnd = op.Keys.Key, op.Keys.End })
	}
	d.prevKV(&op, true)
}

// txn walks a transaction: every compare is a read of its key range; every
// request of both branches, recursing into nested transactions. It fails
// when the transaction holds more than maxTxnOps requests in all.
func (d *decoder) txn(r *pb.TxnRequest) error {
	if len(r.Compare) > d.maxTxnOps {
		return errTooManyOps // etcd's own bound, per transaction
	}
	for _, c := range r.Compare {
		d.txnOps++
		op := etcdOp(gate.ResourceKV, gate.ActionRead, mTxn)
		op.Keys = gate.KeyRange{Key: c.Key, End: c.RangeEnd}
		if c.Target == pb.Compare_VALUE {
			// For plugins: a compare of values compares stored bytes, so a
			// plugin that rewrites values must see (and may rewrite or
			// refuse) the value compared. Policy sees a read.
			op.Value = c.GetValue()
			if op.Value == nil {
				op.Value = []byte{}
			}
		}
		if c.Target == pb.Compare_LEASE && c.GetLease() != 0 {
			op.Lease = c.GetLease()
		}
		op.TxnIndex = d.txnOps
		// A compare reads its whole range: it is never narrowed.
		i := d.q.Ask(op)
		d.compares = append(d.compares, i)
		if d.carry() {
			d.q.Carry(i, c, func(op *gate.Op) {
				c.Key, c.RangeEnd = op.Keys.Key, op.Keys.End
				if c.Target == pb.Compare_VALUE {
					c.TargetUnion = &pb.Compare_Value{Value: op.Value}
				}
			})
		}
	}
	for _, branch := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, ro := range branch {
			d.txnOps++
			if d.requests++; d.requests > d.maxTxnOps {
				return errTooManyOps
			}
			switch x := ro.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if x.RequestRange == nil {
					return errEmptyRequestOp
				}
				if len(x.RequestRange.Key) == 0 {
					return errEmptyKey
				}
				if d.ranges == nil {
					d.ranges = map[*pb.RangeRequest]int{}
				}
				d.ranges[x.RequestRange] = d.rangeReq(x.RequestRange, mTxn, d.txnOps)
			case *pb.RequestOp_RequestPut:
				if x.RequestPut == nil {
					return errEmptyRequestOp
				}
				if len(x.RequestPut.Key) == 0 {
					return errEmptyKey
				}
				d.put(x.RequestPut, mTxn, d.txnOps)
			case *pb.RequestOp_RequestDeleteRange:
				if x.RequestDeleteRange == nil {
					return errEmptyRequestOp
				}
				if len(x.RequestDeleteRange.Key) == 0 {
					return errEmptyKey
				}
				d.del(x.RequestDeleteRange, mTxn, d.txnOps)
			case *pb.RequestOp_RequestTxn:
				if x.RequestTxn == nil {
					return errEmptyRequestOp
				}
				if err := d.txn(x.RequestTxn); err != nil {
					return err
				}
			default:
				return errEmptyRequestOp
			}
		}
	}
	return nil
}

// begin starts the gate request for the caller of ctx.
func (s *Server) begin(ctx context.Context) *gate.Request {
	return s.gate.Begin(caller(ctx))
}

// authorize drives q through authorization and the plugins' request chain
// and maps a refusal to etcd's error.
func (s *Server) authorize(ctx context.Context, q *gate.Request) error {
	if err := q.Authorize(ctx); err != nil {
		return s.grpcError(ctx, err)
	}
	if err := q.Transform(ctx); err != nil {
		return s.grpcError(ctx, err)
	}
	return nil
}

// allow authorizes a request of the single op op.
func (s *Server) allow(ctx context.Context, op gate.Op) error {
	q := s.begin(ctx)
	q.Ask(op)
	return s.authorize(ctx, q)
}
