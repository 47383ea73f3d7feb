package etcd

import (
	"bytes"
	"context"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"

	"github.com/storegate/storegate/gate"
)

// lockServer serves v3lockpb.Lock. A lock's key space is its name: Lock is
// authorized on the name, Unlock on the owner key (name/<lease hex>).
type lockServer struct {
	v3lockpb.UnsafeLockServer
	s *Server
}

var _ v3lockpb.LockServer = (*lockServer)(nil)

func (l *lockServer) Lock(ctx context.Context, r *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	op := etcdOp(gate.ResourceLock, gate.ActionAcquire, "/v3lockpb.Lock/Lock")
	pfx := append(bytes.Clone(r.Name), '/')
	op.Keys = gate.KeyRange{Key: pfx, End: gate.PrefixEnd(pfx)}
	op.Lease = r.Lease
	d := opsDecoder{ctx: ctx, leaseKeys: l.s.leaseKeys, ops: []gate.Op{op}}
	if err := d.leaseAttach(r.Lease, "/v3lockpb.Lock/Lock", 0); err != nil {
		return nil, err
	}
	if err := l.s.check(ctx, d.ops, nil); err != nil {
		return nil, err
	}
	return l.s.up.lock.Lock(upstreamCtx(ctx), r)
}

func (l *lockServer) Unlock(ctx context.Context, r *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	op := etcdOp(gate.ResourceLock, gate.ActionRelease, "/v3lockpb.Lock/Unlock")
	op.Keys = gate.KeyRange{Key: r.Key}
	ops := [1]gate.Op{op}
	if err := l.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	return l.s.up.lock.Unlock(upstreamCtx(ctx), r)
}
