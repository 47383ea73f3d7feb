package etcd

import (
	"bytes"
	"context"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/gate"
)

// electionServer serves v3electionpb.Election, authorized on the election's
// name.
type electionServer struct {
	v3electionpb.UnsafeElectionServer
	s *Server
}

var _ v3electionpb.ElectionServer = (*electionServer)(nil)

func electionOp(act gate.Action, method string, name []byte) gate.Op {
	op := etcdOp(gate.ResourceElection, act, method)
	op.Keys = gate.KeyRange{Key: name}
	return op
}

func (e *electionServer) Campaign(ctx context.Context, r *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	op := electionOp(gate.ActionCampaign, "/v3electionpb.Election/Campaign", r.Name)
	op.Lease = r.Lease
	op.ValueSize = len(r.Value)
	d := opsDecoder{ctx: ctx, leaseKeys: e.s.leaseKeys, ops: []gate.Op{op}}
	if err := d.leaseAttach(r.Lease, "/v3electionpb.Election/Campaign", 0); err != nil {
		return nil, err
	}
	if err := e.s.check(ctx, d.ops, nil); err != nil {
		return nil, err
	}
	return e.s.up.election.Campaign(upstreamCtx(ctx), r)
}

func (e *electionServer) Proclaim(ctx context.Context, r *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	if !leaderKeyUnderName(r.GetLeader()) {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	op := electionOp(gate.ActionProclaim, "/v3electionpb.Election/Proclaim", r.GetLeader().GetKey())
	op.Lease = r.GetLeader().GetLease()
	op.ValueSize = len(r.Value)
	ops := [1]gate.Op{op}
	if err := e.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	return e.s.up.election.Proclaim(upstreamCtx(ctx), r)
}

func (e *electionServer) Leader(ctx context.Context, r *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	ops := [1]gate.Op{electionOp(gate.ActionRead, "/v3electionpb.Election/Leader", r.Name)}
	if err := e.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	return e.s.up.election.Leader(upstreamCtx(ctx), r)
}

func (e *electionServer) Observe(r *v3electionpb.LeaderRequest, stream grpc.ServerStreamingServer[v3electionpb.LeaderResponse]) error {
	ctx := stream.Context()
	ops := [1]gate.Op{electionOp(gate.ActionWatch, "/v3electionpb.Election/Observe", r.Name)}
	if err := e.s.check(ctx, ops[:], nil); err != nil {
		return err
	}
	up, err := e.s.up.election.Observe(upstreamCtx(ctx), r)
	if err != nil {
		return err
	}
	return relay(ctx, up.Recv, stream.Send)
}

func (e *electionServer) Resign(ctx context.Context, r *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	if !leaderKeyUnderName(r.GetLeader()) {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	ops := [1]gate.Op{electionOp(gate.ActionResign, "/v3electionpb.Election/Resign", r.GetLeader().GetKey())}
	if err := e.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	return e.s.up.election.Resign(upstreamCtx(ctx), r)
}

// leaderKeyUnderName reports whether a leader key lies in its election's
// key space (NAME/...): Proclaim and Resign act on the key.
func leaderKeyUnderName(l *v3electionpb.LeaderKey) bool {
	return len(l.GetName()) > 0 && bytes.HasPrefix(l.GetKey(), append(bytes.Clone(l.GetName()), '/'))
}
