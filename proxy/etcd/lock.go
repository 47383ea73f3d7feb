package etcd

import (
	"context"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"

	"github.com/storegate/storegate/gate"
)

// lockServer serves v3lockpb.Lock. A lock's key space is its name: Lock
// writes NAME/<lease hex> with the lease and waits on the keys before it,
// so it is authorized on the NAME/ prefix with a lease the caller owns;
// Unlock deletes the owner key it names and is authorized on that key.
type lockServer struct {
	v3lockpb.UnsafeLockServer
	s *Server
}

var _ v3lockpb.LockServer = (*lockServer)(nil)

const (
	mLock   = "/v3lockpb.Lock/Lock"
	mUnlock = "/v3lockpb.Lock/Unlock"
)

func (l *lockServer) Lock(ctx context.Context, r *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	q := l.s.begin(ctx)
	op := etcdOp(gate.ResourceLock, gate.ActionAcquire, mLock)
	op.Keys = prefixRange(r.Name)
	op.Lease = r.Lease
	q.Ask(op)
	l.s.useLease(q, gate.ActionWrite, mLock, r.Lease, 0, true)
	if err := l.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	return l.s.up.lock.Lock(upstreamCtx(ctx), r)
}

func (l *lockServer) Unlock(ctx context.Context, r *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	op := etcdOp(gate.ResourceLock, gate.ActionRelease, mUnlock)
	op.Keys = gate.KeyRange{Key: r.Key}
	if err := l.s.allow(ctx, op); err != nil {
		return nil, err
	}
	return l.s.up.lock.Unlock(upstreamCtx(ctx), r)
}
