package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/storegate/storegate/gate"
)

// clusterServer serves etcdserverpb.Cluster. Member lists go back with the
// gateway's own URLs as every member's client URLs, so that clients that
// discover the cluster (etcdctl --cluster, client/v3 sync) keep coming
// through the gateway.
type clusterServer struct {
	pb.UnsafeClusterServer
	s *Server
}

var _ pb.ClusterServer = (*clusterServer)(nil)

func (c *clusterServer) authorize(ctx context.Context, act gate.Action, method string) error {
	ops := [1]gate.Op{etcdOp(gate.ResourceCluster, act, method)}
	return c.s.allow(ctx, ops[0])
}

func (c *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if err := c.authorize(ctx, gate.ActionAdmin, "/etcdserverpb.Cluster/MemberAdd"); err != nil {
		return nil, err
	}
	resp, err := c.s.up.cluster.MemberAdd(upstreamCtx(ctx), r)
	if err == nil {
		c.s.advertise(ctx, resp.Members)
	}
	return resp, err
}

func (c *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := c.authorize(ctx, gate.ActionAdmin, "/etcdserverpb.Cluster/MemberRemove"); err != nil {
		return nil, err
	}
	resp, err := c.s.up.cluster.MemberRemove(upstreamCtx(ctx), r)
	if err == nil {
		c.s.advertise(ctx, resp.Members)
	}
	return resp, err
}

func (c *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := c.authorize(ctx, gate.ActionAdmin, "/etcdserverpb.Cluster/MemberUpdate"); err != nil {
		return nil, err
	}
	resp, err := c.s.up.cluster.MemberUpdate(upstreamCtx(ctx), r)
	if err == nil {
		c.s.advertise(ctx, resp.Members)
	}
	return resp, err
}

func (c *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if err := c.authorize(ctx, gate.ActionRead, "/etcdserverpb.Cluster/MemberList"); err != nil {
		return nil, err
	}
	resp, err := c.s.up.cluster.MemberList(upstreamCtx(ctx), r)
	if err == nil {
		c.s.advertise(ctx, resp.Members)
	}
	return resp, err
}

func (c *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if err := c.authorize(ctx, gate.ActionAdmin, "/etcdserverpb.Cluster/MemberPromote"); err != nil {
		return nil, err
	}
	resp, err := c.s.up.cluster.MemberPromote(upstreamCtx(ctx), r)
	if err == nil {
		c.s.advertise(ctx, resp.Members)
	}
	return resp, err
}

// advertise replaces members' client URLs with the gateway's, and hides
// their peer URLs from callers that may not administer the cluster:
// callers reach the cluster only through the gateway, and the members' own
// addresses are only for those who may change its membership (and need
// them for member update). Members that have not started (no client URLs
// yet) keep their empty client URLs.
func (s *Server) advertise(ctx context.Context, members []*pb.Member) {
	admin := etcdOp(gate.ResourceCluster, gate.ActionAdmin, "/etcdserverpb.Cluster/MemberList")
	peers := s.gate.Allows(ctx, caller(ctx), &admin)
	for _, m := range members {
		if !peers {
			m.PeerURLs = nil
		}
		if len(m.ClientURLs) > 0 && len(s.opts.AdvertiseURLs) > 0 {
			m.ClientURLs = append([]string(nil), s.opts.AdvertiseURLs...)
		}
	}
}
