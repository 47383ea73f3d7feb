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

// leaseKeys returns the keys attached to lease id, for the rule (etcd's own)
// that attaching to or revoking a lease needs write access to every key
// already on it.
type leaseKeys func(ctx context.Context, id int64) ([][]byte, error)

// opsDecoder turns requests into gate ops.
type opsDecoder struct {
	ctx       context.Context
	leaseKeys leaseKeys
	maxTxnOps int
	ops       []gate.Op
	txnOps    int
	// compares are the indexes in ops of the reads that compares decode
	// to; ranges maps each range request of a txn to its op's index.
	compares []int
	ranges   map[*pb.RangeRequest]int
	// plugins: record rewrites (the ops the request carries) for them;
	// without plugins a request pays nothing for them.
	plugins  bool
	rewrites []rewrite
}

// put adds the ops of a Put: write the key; a prev_kv read of the same key;
// write access to every key already on an attached lease.
func (d *opsDecoder) put(r *pb.PutRequest, method string, txnIndex int) error {
	op := putOp(r, method)
	op.TxnIndex = txnIndex
	putRewrite(d, r)
	d.ops = append(d.ops, op)
	d.prevKV(&op)
	return d.leaseAttach(r.Lease, method, txnIndex)
}

// prevKV adds, for an op that asks for the previous key-values, a read of
// the same keys.
func (d *opsDecoder) prevKV(op *gate.Op) {
	if !op.PrevKV {
		return
	}
	rd := etcdOp(gate.ResourceKV, gate.ActionRead, op.Method)
	rd.Keys = op.Keys
	rd.TxnIndex = op.TxnIndex
	d.ops = append(d.ops, rd)
}

func (d *opsDecoder) leaseAttach(lease int64, method string, txnIndex int) error {
	if lease == 0 || d.leaseKeys == nil {
		return nil
	}
	keys, err := d.leaseKeys(d.ctx, lease)
	if err != nil {
		return err
	}
	for _, k := range keys {
		w := etcdOp(gate.ResourceKV, gate.ActionWrite, method)
		w.Keys = gate.KeyRange{Key: k}
		w.Lease = lease
		w.TxnIndex = txnIndex
		d.ops = append(d.ops, w)
	}
	return nil
}

func (d *opsDecoder) del(r *pb.DeleteRangeRequest, method string, txnIndex int) {
	op := deleteOp(r, method)
	op.TxnIndex = txnIndex
	deleteRewrite(d, r)
	d.ops = append(d.ops, op)
	d.prevKV(&op)
}

// txn walks a transaction: every compare is a read of its key range; every
// request of both branches, recursing into nested transactions. It fails
// when the transaction holds more than maxTxnOps requests in all.
func (d *opsDecoder) txn(r *pb.TxnRequest) error {
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
		op.TxnIndex = d.txnOps
		d.compares = append(d.compares, len(d.ops))
		compareRewrite(d, c)
		d.ops = append(d.ops, op)
	}
	for _, branch := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, ro := range branch {
			d.txnOps++
			if d.txnOps > d.maxTxnOps {
				return errTooManyOps
			}
			switch x := ro.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if x.RequestRange == nil {
					return errEmptyRequestOp
				}
				op := rangeOp(x.RequestRange, mTxn)
				op.TxnIndex = d.txnOps
				if d.ranges == nil {
					d.ranges = map[*pb.RangeRequest]int{}
				}
				d.ranges[x.RequestRange] = len(d.ops)
				rangeRewrite(d, x.RequestRange)
				d.ops = append(d.ops, op)
			case *pb.RequestOp_RequestPut:
				if x.RequestPut == nil {
					return errEmptyRequestOp
				}
				if err := d.put(x.RequestPut, mTxn, d.txnOps); err != nil {
					return err
				}
			case *pb.RequestOp_RequestDeleteRange:
				if x.RequestDeleteRange == nil {
					return errEmptyRequestOp
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
