package etcd

import (
	"bytes"
	"context"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/gate"
)

// electionServer serves v3electionpb.Election. etcd's election service
// acts on every key under NAME/ (Campaign writes NAME/<lease> and waits
// on the keys before it; Leader and Observe read the first-created one;
// Proclaim and Resign write and delete the leader key), so every RPC is
// authorized on that prefix, and the lease it runs its session on (which
// it keeps alive and attaches the leader key to) must be the caller's.
type electionServer struct {
	v3electionpb.UnsafeElectionServer
	s *Server
}

var _ v3electionpb.ElectionServer = (*electionServer)(nil)

const (
	mCampaign = "/v3electionpb.Election/Campaign"
	mProclaim = "/v3electionpb.Election/Proclaim"
	mLeader   = "/v3electionpb.Election/Leader"
	mObserve  = "/v3electionpb.Election/Observe"
	mResign   = "/v3electionpb.Election/Resign"
)

func electionOp(act gate.Action, method string, name []byte) gate.Op {
	op := etcdOp(gate.ResourceElection, act, method)
	op.Keys = prefixRange(name)
	return op
}

func (e *electionServer) Campaign(ctx context.Context, r *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	q := e.s.begin(ctx)
	op := electionOp(gate.ActionCampaign, mCampaign, r.Name)
	op.Lease = r.Lease
	op.ValueSize = len(r.Value)
	q.Ask(op)
	e.s.useLease(q, gate.ActionWrite, mCampaign, r.Lease, 0, true)
	if err := e.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	return e.s.up.election.Campaign(upstreamCtx(ctx), r)
}

// leaderRequest authorizes act on a leader key's election: the key must lie
// under its name, and its lease must be the caller's.
func (e *electionServer) leaderRequest(ctx context.Context, act gate.Action, method string, l *v3electionpb.LeaderKey, valueSize int) error {
	if l == nil {
		return rpctypes.ErrGRPCPermissionDenied
	}
	if !leaderKeyUnderName(l) {
		return e.s.grpcError(ctx, &gate.Error{Kind: gate.KindDenied, Reason: "the leader key is not under its election's name"})
	}
	q := e.s.begin(ctx)
	op := electionOp(act, method, l.Name)
	op.Lease = l.Lease
	op.ValueSize = valueSize
	q.Ask(op)
	e.s.useLease(q, gate.ActionWrite, method, l.Lease, 0, act == gate.ActionProclaim)
	return e.s.authorize(ctx, q)
}

func (e *electionServer) Proclaim(ctx context.Context, r *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	if err := e.leaderRequest(ctx, gate.ActionProclaim, mProclaim, r.Leader, len(r.Value)); err != nil {
		return nil, err
	}
	return e.s.up.election.Proclaim(upstreamCtx(ctx), r)
}

func (e *electionServer) Resign(ctx context.Context, r *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	if err := e.leaderRequest(ctx, gate.ActionResign, mResign, r.Leader, 0); err != nil {
		return nil, err
	}
	return e.s.up.election.Resign(upstreamCtx(ctx), r)
}

func (e *electionServer) Leader(ctx context.Context, r *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	if err := e.s.allow(ctx, electionOp(gate.ActionRead, mLeader, r.Name)); err != nil {
		return nil, err
	}
	return e.s.up.election.Leader(upstreamCtx(ctx), r)
}

// Observe relays the election's leaders while the caller may watch them:
// on every policy change the stream is judged again, and one no longer
// allowed ends with PermissionDenied.
func (e *electionServer) Observe(r *v3electionpb.LeaderRequest, stream grpc.ServerStreamingServer[v3electionpb.LeaderResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	op := electionOp(gate.ActionWatch, mObserve, r.Name)
	changed := e.s.gate.PolicyChanged()
	if err := e.s.allow(ctx, op); err != nil {
		return err
	}
	up, err := e.s.up.election.Observe(upstreamCtx(ctx), r)
	if err != nil {
		return err
	}
	msgs := make(chan *v3electionpb.LeaderResponse)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := up.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case m := <-msgs:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-errc:
			if isCanceled(ctx, err) {
				return nil
			}
			return err
		case <-changed:
			changed = e.s.gate.PolicyChanged()
			if err := e.s.allow(ctx, op); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// leaderKeyUnderName reports whether a leader key lies in its election's
// key space (NAME/...): Proclaim and Resign act on the key.
func leaderKeyUnderName(l *v3electionpb.LeaderKey) bool {
	return len(l.GetName()) > 0 && bytes.HasPrefix(l.GetKey(), append(bytes.Clone(l.GetName()), '/'))
}
