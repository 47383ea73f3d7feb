package etcd

import (
	"context"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/gate"
)

// MemberMetadataKey is the gRPC metadata key with which a caller may route a
// per-member RPC (Status, Defragment, Hash, HashKV, Snapshot) to one member
// by its hexadecimal ID. Without it those RPCs go to the leader, which is
// what `etcdctl move-leader` needs from a single gateway endpoint.
const MemberMetadataKey = "storegate-member"

// maintenanceServer serves etcdserverpb.Maintenance.
type maintenanceServer struct {
	pb.UnsafeMaintenanceServer
	s *Server
}

var _ pb.MaintenanceServer = (*maintenanceServer)(nil)

func (m *maintenanceServer) authorize(ctx context.Context, res gate.Resource, act gate.Action, method string) error {
	ops := [1]gate.Op{etcdOp(res, act, method)}
	return m.s.allow(ctx, ops[0])
}

// member returns the maintenance client for the member the caller named,
// or for the leader.
func (m *maintenanceServer) member(ctx context.Context) (pb.MaintenanceClient, error) {
	var id uint64
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(MemberMetadataKey); len(v) > 0 {
			n, err := strconv.ParseUint(v[0], 16, 64)
			if err != nil || n == 0 {
				return nil, status.Errorf(codes.InvalidArgument, "storegate: %s %q is not a hexadecimal member ID", MemberMetadataKey, v[0])
			}
			id = n
		}
	}
	return m.s.up.maintenanceFor(ctx, id)
}

func (m *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	act := gate.ActionAdmin
	if r.Action == pb.AlarmRequest_GET {
		act = gate.ActionRead
	}
	if err := m.authorize(ctx, gate.ResourceMaintenance, act, "/etcdserverpb.Maintenance/Alarm"); err != nil {
		return nil, err
	}
	return m.s.up.maintenance().Alarm(upstreamCtx(ctx), r)
}

func (m *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	if err := m.authorize(ctx, gate.ResourceStatus, gate.ActionRead, "/etcdserverpb.Maintenance/Status"); err != nil {
		return nil, err
	}
	mc, err := m.member(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := mc.Status(upstreamCtx(ctx), r)
	m.s.up.forgetLeader(err)
	if err == nil {
		m.s.up.noteLeader(resp.Leader)
	}
	return resp, err
}

func (m *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := m.authorize(ctx, gate.ResourceMaintenance, gate.ActionAdmin, "/etcdserverpb.Maintenance/Defragment"); err != nil {
		return nil, err
	}
	mc, err := m.member(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := mc.Defragment(upstreamCtx(ctx), r)
	m.s.up.forgetLeader(err)
	return resp, err
}

func (m *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := m.authorize(ctx, gate.ResourceMaintenance, gate.ActionRead, "/etcdserverpb.Maintenance/Hash"); err != nil {
		return nil, err
	}
	mc, err := m.member(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := mc.Hash(upstreamCtx(ctx), r)
	m.s.up.forgetLeader(err)
	return resp, err
}

func (m *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := m.authorize(ctx, gate.ResourceMaintenance, gate.ActionRead, "/etcdserverpb.Maintenance/HashKV"); err != nil {
		return nil, err
	}
	mc, err := m.member(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := mc.HashKV(upstreamCtx(ctx), r)
	m.s.up.forgetLeader(err)
	return resp, err
}

// Snapshot streams a member's backend unchanged. It reveals every key, so
// it is an admin operation.
func (m *maintenanceServer) Snapshot(r *pb.SnapshotRequest, stream grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	ctx := stream.Context()
	if err := m.authorize(ctx, gate.ResourceMaintenance, gate.ActionAdmin, "/etcdserverpb.Maintenance/Snapshot"); err != nil {
		return err
	}
	mc, err := m.member(ctx)
	if err != nil {
		return err
	}
	up, err := mc.Snapshot(upstreamCtx(ctx), r)
	if err != nil {
		return err
	}
	err = relay(ctx, up.Recv, stream.Send)
	m.s.up.forgetLeader(err)
	return err
}

// MoveLeader must be served by the leader.
func (m *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := m.authorize(ctx, gate.ResourceMaintenance, gate.ActionAdmin, "/etcdserverpb.Maintenance/MoveLeader"); err != nil {
		return nil, err
	}
	mc, err := m.s.up.maintenanceFor(ctx, 0)
	if err != nil {
		return nil, err
	}
	resp, err := mc.MoveLeader(upstreamCtx(ctx), r)
	m.s.up.forgetLeader(err)
	if err == nil {
		m.s.up.noteLeader(r.TargetID)
	}
	return resp, err
}

func (m *maintenanceServer) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if err := m.authorize(ctx, gate.ResourceMaintenance, gate.ActionAdmin, "/etcdserverpb.Maintenance/Downgrade"); err != nil {
		return nil, err
	}
	return m.s.up.maintenance().Downgrade(upstreamCtx(ctx), r)
}
