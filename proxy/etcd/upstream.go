package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UpstreamConfig says how to reach the real etcd cluster.
type UpstreamConfig struct {
	Endpoints []string
	TLS       *tls.Config // the gateway's own client credentials
	// Username and Password, when set, authenticate the gateway to etcd's
	// own auth as well.
	Username, Password string
	DialTimeout        time.Duration
	// RequestTimeout bounds each unary call that has no deadline of its
	// own (default DefaultRequestTimeout; see boundedConn).
	RequestTimeout time.Duration
	// DialOptions are appended to the gRPC dial options (e.g. tracing).
	DialOptions []grpc.DialOption
	Logger      *slog.Logger
}

// Upstream is the gateway's connection to an etcd cluster: one balanced
// connection over every endpoint for cluster-wide RPCs, and one connection
// per endpoint for the per-member ones (Status, Defragment, Hash, HashKV,
// Snapshot, MoveLeader), which are routed to the leader unless the caller
// names a member. Connections reconnect by themselves, so members or the
// whole cluster may restart under a running gateway.
type Upstream struct {
	cfg    UpstreamConfig
	client *clientv3.Client

	kv       pb.KVClient
	watch    pb.WatchClient
	lease    pb.LeaseClient
	cluster  pb.ClusterClient
	auth     pb.AuthClient
	lock     v3lockpb.LockClient
	election v3electionpb.ElectionClient

	mu      sync.Mutex
	members map[string]*clientv3.Client // by endpoint
	byID    map[uint64]*clientv3.Client // by member ID, learned from Status
	leader  uint64
}

// Dial connects to the cluster. It does not wait for the cluster to be up.
func Dial(cfg UpstreamConfig) (*Upstream, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: upstream has no endpoints")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c, err := newClient(cfg, cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	conn := bounded(c.ActiveConnection(), cfg.RequestTimeout)
	return &Upstream{
		cfg: cfg, client: c,
		kv: pb.NewKVClient(conn), watch: pb.NewWatchClient(conn), lease: pb.NewLeaseClient(conn),
		cluster: pb.NewClusterClient(conn), auth: pb.NewAuthClient(conn),
		lock: v3lockpb.NewLockClient(conn), election: v3electionpb.NewElectionClient(conn),
		members: map[string]*clientv3.Client{}, byID: map[uint64]*clientv3.Client{},
	}, nil
}

func newClient(cfg UpstreamConfig, endpoints []string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:          endpoints,
		TLS:                cfg.TLS,
		Username:           cfg.Username,
		Password:           cfg.Password,
		DialTimeout:        cfg.DialTimeout,
		DialKeepAliveTime:  30 * time.Second,
		MaxCallSendMsgSize: 2 << 20,
		MaxCallRecvMsgSize: math.MaxInt32,
		// Reconnect quickly after a member or the cluster restarts
		// (grpc's default backoff grows to two minutes).
		DialOptions: append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})}, cfg.DialOptions...),
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: upstream %v: %w", endpoints, err)
	}
	return c, nil
}

// Close closes every upstream connection.
func (u *Upstream) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.members {
		c.Close()
	}
	return u.client.Close()
}

// Ready reports whether the cluster answers a status call now and has a
// leader. It asks over the balanced connection, so one member in reconnect
// backoff does not make the gateway unready.
func (u *Upstream) Ready(ctx context.Context) error {
	resp, err := u.maintenance().Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return err
	}
	if resp.Leader == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	u.noteLeader(resp.Leader)
	return nil
}

// maintenance is the maintenance client of the whole cluster (any member),
// bounded as every unary call is.
func (u *Upstream) maintenance() pb.MaintenanceClient {
	return pb.NewMaintenanceClient(bounded(u.client.ActiveConnection(), u.cfg.RequestTimeout))
}

// maintenanceFor returns the maintenance client of member id, or of the
// leader when id is 0.
func (u *Upstream) maintenanceFor(ctx context.Context, id uint64) (pb.MaintenanceClient, error) {
	c, err := u.memberClient(ctx, id)
	if err != nil {
		return nil, err
	}
	return pb.NewMaintenanceClient(bounded(c.ActiveConnection(), u.cfg.RequestTimeout)), nil
}

func (u *Upstream) memberClient(ctx context.Context, id uint64) (*clientv3.Client, error) {
	u.mu.Lock()
	if id == 0 {
		id = u.leader
	}
	c := u.byID[id]
	u.mu.Unlock()
	if c != nil && id != 0 {
		return c, nil
	}
	if err := u.discover(ctx); err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if id == 0 {
		id = u.leader
	}
	if c := u.byID[id]; c != nil {
		return c, nil
	}
	if id == 0 {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	return nil, status.Errorf(codes.NotFound, "storegate: member %x is not reachable through any configured endpoint", id)
}

// discover asks every endpoint for its status, learning member IDs and the
// leader.
func (u *Upstream) discover(ctx context.Context) error {
	type result struct {
		c    *clientv3.Client
		resp *pb.StatusResponse
		err  error
	}
	results := make(chan result, len(u.cfg.Endpoints))
	for _, ep := range u.cfg.Endpoints {
		c, err := u.endpointClient(ep)
		if err != nil {
			results <- result{err: err}
			continue
		}
		go func() {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			r, err := pb.NewMaintenanceClient(c.ActiveConnection()).Status(sctx, &pb.StatusRequest{})
			results <- result{c: c, resp: r, err: err}
		}()
	}
	var firstErr error
	ok := false
	for range u.cfg.Endpoints {
		r := <-results
		if r.err != nil {
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		ok = true
		u.mu.Lock()
		u.byID[r.resp.Header.GetMemberId()] = r.c
		if r.resp.Leader != 0 {
			u.leader = r.resp.Leader
		}
		u.mu.Unlock()
	}
	if !ok {
		return firstErr
	}
	return nil
}

func (u *Upstream) endpointClient(ep string) (*clientv3.Client, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c := u.members[ep]; c != nil {
		return c, nil
	}
	c, err := newClient(u.cfg, []string{ep})
	if err != nil {
		return nil, err
	}
	u.members[ep] = c
	return c, nil
}

// forgetLeader drops the cached leader after an error that suggests it
// moved, so the next per-member call rediscovers it.
func (u *Upstream) forgetLeader(err error) {
	if err == nil {
		return
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.FailedPrecondition, codes.DeadlineExceeded:
		u.mu.Lock()
		u.leader = 0
		u.mu.Unlock()
	}
}

// noteLeader records the leader a status answer names.
func (u *Upstream) noteLeader(leader uint64) {
	if leader == 0 {
		return
	}
	u.mu.Lock()
	u.leader = leader
	u.mu.Unlock()
}
