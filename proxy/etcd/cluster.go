package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/storegate/storegate/gate"
)

// clusterServer serves etcdserverpb.Cluster. Member lists go back with the
// live gateway replicas' URLs as the members' client URLs (see advertise),
// so that clients that discover the cluster (etcdctl --cluster, client/v3
// sync) spread over the gateways and never reach etcd directly.
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

// advertise replaces members' client URLs with the gateway replicas', and
// hides their peer URLs from callers that may not administer the cluster:
// callers reach the cluster only through the gateways, and the members' own
// addresses are only for those who may change its membership (and need
// them for member update). IDs, names, learner flags stay etcd's, so that
// member list and move-leader still name the real members. Members that
// have not started (no client URLs yet) keep their empty client URLs.
//
// The live replicas (s.replicas, sorted, so every replica answers alike)
// are dealt out over the started voting members in turn: client/v3's Sync
// and etcdctl's --cluster take every member's client URLs as they come,
// without removing duplicates, so with at least as many replicas as voting
// members each replica's URLs appear exactly once. With fewer, every
// voting member still gets one replica (some replicas then appear twice):
// a started member never shows empty client URLs, which tools read as
// "unstarted". Learners (which Sync skips) get one replica each, in the
// same turn after the voters.
func (s *Server) advertise(ctx context.Context, members []*pb.Member) {
	admin := etcdOp(gate.ResourceCluster, gate.ActionAdmin, "/etcdserverpb.Cluster/MemberList")
	peers := s.gate.Allows(ctx, caller(ctx), &admin)
	var voters, learners []*pb.Member
	for _, m := range members {
		if !peers {
			m.PeerURLs = nil
		}
		if len(m.ClientURLs) == 0 {
			continue
		}
		if m.IsLearner {
			learners = append(learners, m)
		} else {
			voters = append(voters, m)
		}
	}
	reps := s.replicas()
	for _, m := range append(voters, learners...) {
		m.ClientURLs = nil
	}
	if len(reps) == 0 {
		// No URL to advertise (a front built without AdvertiseURLs):
		// never etcd's own, which would lead callers around the gateway.
		return
	}
	// deal gives to's members n replicas in turn from reps[from].
	deal := func(to []*pb.Member, from, n int) {
		for i := range n {
			m := to[i%len(to)]
			m.ClientURLs = append(m.ClientURLs, reps[(from+i)%len(reps)]...)
		}
	}
	deal(voters, 0, max(len(reps), len(voters)))
	deal(learners, len(voters), len(learners))
}
