package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/internal/drain"
)

// Authenticator turns a verified TLS connection into the caller's identity.
type Authenticator interface {
	Identify(state *tls.ConnectionState) (gate.Identity, error)
}

// Options configure the front.
type Options struct {
	// AdvertiseURLs are the gateway's client URLs; MemberList and the
	// member-change RPCs return them as every member's client URLs so that
	// clients never bypass the gateway.
	AdvertiseURLs []string
	// FleetTTL, when set, registers this replica (its AdvertiseURLs) in
	// etcd's reserved fleet records with a lease of this TTL, and makes
	// MemberList answer with every live replica's URLs (see fleet.go).
	FleetTTL time.Duration
	// MaxRequestBytes bounds a request message (default 2 MiB: etcd's
	// 1.5 MiB request limit plus gRPC overhead).
	MaxRequestBytes int
	// MaxTxnOps bounds the ops of one Txn, nested ones included (default
	// 128, etcd's default).
	MaxTxnOps int
	// Limits bound the streams and watches callers hold open.
	Limits Limits
	// Throttle, when set, is charged for every request the front refuses
	// and holds back the connections of callers who owe (throttle.Debts).
	Throttle Throttle
	Logger   *slog.Logger
}

// Throttle makes callers pay for refusals: Charge records one, and a
// connection from Conn is not read while its caller owes.
type Throttle interface {
	Charge(id gate.Identity, size int)
	Conn(c net.Conn, id gate.Identity) net.Conn
}

// Server is the etcd front.
type Server struct {
	gate   *gate.Gate
	up     *Upstream
	auth   Authenticator
	opts   Options
	log    *slog.Logger
	limits limiters
	drain  drain.Signal // drain.go
	fleet  *fleet       // nil without Options.FleetTTL
	hub    *watchHub    // shared upstream watches (watchhub.go)
}

// upstreamCleanupTimeout bounds the gateway's own clean-up calls upstream
// (revoking a lease whose owner could not be recorded).
const upstreamCleanupTimeout = 5 * time.Second

// New returns the etcd front for g, forwarding to up. g must reserve
// ReservedPrefix (gate.WithReserved), where the front keeps its records.
func New(g *gate.Gate, up *Upstream, auth Authenticator, opts Options) *Server {
	if !g.Reserved([]byte(leaseOwnerPrefix)) {
		panic("etcd: the gate must reserve " + ReservedPrefix + " (gate.WithReserved)")
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = 2 << 20
	}
	if opts.MaxTxnOps <= 0 {
		opts.MaxTxnOps = 128
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{gate: g, up: up, auth: auth, opts: opts, log: opts.Logger, limits: newLimiters(opts.Limits)}
	// Shared watches outlive the callers that opened them; they end with
	// their last subscriber, or when up is closed.
	s.hub = newWatchHub(context.Background(), func(ctx context.Context) (upWatch, error) { return up.watch.Watch(ctx) })
	if opts.FleetTTL > 0 && len(opts.AdvertiseURLs) > 0 {
		s.fleet = newFleet(up.client, opts.AdvertiseURLs, opts.FleetTTL, opts.Logger)
	}
	return s
}

// GRPCServer returns a gRPC server with every etcd service registered,
// serving TLS with creds. Extra options (e.g. stats handlers) are appended.
func (s *Server) GRPCServer(creds credentials.TransportCredentials, extra ...grpc.ServerOption) *grpc.Server {
	if s.opts.Throttle != nil {
		creds = throttledCreds{TransportCredentials: creds, s: s}
	}
	opts := []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(s.opts.MaxRequestBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		// etcd clients ping every few seconds; grpc-go's default policy
		// (5 min) would answer them with GOAWAY too_many_pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		// Policy evaluation recurses deeply; a fresh goroutine per RPC would
		// grow its stack from 8 KiB on every request (a quarter of the CPU in
		// profiles). Long-lived workers keep their grown stacks; when all are
		// busy (e.g. holding watch streams) gRPC starts goroutines as usual.
		grpc.NumStreamWorkers(uint32(16 * runtime.GOMAXPROCS(0))),
		grpc.ChainUnaryInterceptor(s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamAuth),
	}
	gs := grpc.NewServer(append(opts, extra...)...)
	pb.RegisterKVServer(gs, &kvServer{s: s})
	pb.RegisterWatchServer(gs, &watchServer{s: s})
	pb.RegisterLeaseServer(gs, &leaseServer{s: s})
	pb.RegisterClusterServer(gs, &clusterServer{s: s})
	pb.RegisterMaintenanceServer(gs, &maintenanceServer{s: s})
	pb.RegisterAuthServer(gs, &authServer{s: s})
	v3lockpb.RegisterLockServer(gs, &lockServer{s: s})
	v3electionpb.RegisterElectionServer(gs, &electionServer{s: s})
	return gs
}

// identify authenticates the peer of ctx.
func (s *Server) identify(ctx context.Context) (gate.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return gate.Identity{}, status.Error(codes.Unauthenticated, "storegate: no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return gate.Identity{}, status.Error(codes.Unauthenticated, "storegate: connection is not TLS; an X.509-SVID is required")
	}
	id, err := s.auth.Identify(&ti.State)
	if err != nil {
		return gate.Identity{}, status.Errorf(codes.Unauthenticated, "storegate: %v", err)
	}
	return id, nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id, err := s.gate.Authenticate(ctx, gate.ProtocolEtcd, func() (gate.Identity, error) { return s.identify(ctx) })
	if err != nil {
		return nil, err
	}
	if err := checkKnown(req); err != nil {
		s.charge(id, req, err)
		return nil, err
	}
	resp, err := h(gate.WithIdentity(ctx, id), req)
	s.charge(id, req, err)
	return resp, scrubbed(err)
}

// charge bills id for req when err refuses it (see Throttle).
func (s *Server) charge(id gate.Identity, req any, err error) {
	if s.opts.Throttle == nil || !refusal(err) {
		return
	}
	size := 0
	if m, ok := req.(proto.Message); ok {
		size = proto.Size(m)
	}
	s.opts.Throttle.Charge(id, size)
}

// refusal reports whether err refuses the caller's request: a denial, a
// request the front cannot read or will not serve, a limit.
func refusal(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated, codes.ResourceExhausted, codes.Unimplemented:
		return true
	}
	return false
}

// throttledCreds hands gRPC connections that are not read while their
// caller owes the Throttle.
type throttledCreds struct {
	credentials.TransportCredentials
	s *Server
}

func (c throttledCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, ai, err
	}
	if ti, ok := ai.(credentials.TLSInfo); ok {
		if id, err := c.s.auth.Identify(&ti.State); err == nil {
			conn = c.s.opts.Throttle.Conn(conn, id)
		}
	}
	return conn, ai, nil
}

func (c throttledCreds) Clone() credentials.TransportCredentials {
	return throttledCreds{TransportCredentials: c.TransportCredentials.Clone(), s: c.s}
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx := ss.Context()
	id, err := s.gate.Authenticate(ctx, gate.ProtocolEtcd, func() (gate.Identity, error) { return s.identify(ctx) })
	if err != nil {
		return err
	}
	if !s.limits.streams.acquire(id) {
		s.charge(id, nil, rpctypes.ErrGRPCRequestTooManyRequests)
		return rpctypes.ErrGRPCRequestTooManyRequests
	}
	defer s.limits.streams.release(id)
	err = s.untilDrain(ss, func(ctx context.Context) error {
		return h(srv, &identifiedStream{ServerStream: knownFieldsStream{ss}, ctx: gate.WithIdentity(ctx, id)})
	})
	s.charge(id, nil, err)
	return scrubbed(err)
}

type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identifiedStream) Context() context.Context { return s.ctx }

// caller returns the identity the interceptors stored.
func caller(ctx context.Context) gate.Identity {
	id, _ := gate.IdentityFrom(ctx)
	return id
}

// grpcError maps a gate error to the status etcd clients expect. Other
// errors (already gRPC statuses from the upstream) pass unchanged.
func (s *Server) grpcError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	ge := gate.AsError(err)
	if ge == nil {
		return err
	}
	if ge.Reason != "" {
		// The client matches the message text exactly; the reason travels
		// in a trailer for people and tools that look.
		_ = grpc.SetTrailer(ctx, metadata.Pairs("storegate-reason", ge.Reason))
	}
	switch ge.Kind {
	case gate.KindDenied:
		return rpctypes.ErrGRPCPermissionDenied
	case gate.KindUnauthenticated:
		return status.Error(codes.Unauthenticated, "storegate: "+ge.Reason)
	case gate.KindInvalid:
		return status.Error(codes.InvalidArgument, "storegate: "+ge.Reason)
	case gate.KindUnimplemented:
		return status.Error(codes.Unimplemented, "storegate: "+ge.Reason)
	case gate.KindUnavailable:
		return status.Error(codes.Unavailable, "storegate: "+ge.Reason)
	}
	return rpctypes.ErrGRPCPermissionDenied
}

// upstreamCtx is the context for a forwarded call: the caller's deadline and
// cancellation, none of its metadata (its token never reaches the store),
// and etcd's require-leader flag when the caller set it.
func upstreamCtx(ctx context.Context) context.Context {
	// One key looked up, rather than the caller's whole metadata copied.
	if v := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey); len(v) > 0 && v[0] == rpctypes.MetadataHasLeader {
		return metadata.NewOutgoingContext(ctx, metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader))
	}
	return metadata.NewOutgoingContext(ctx, nil)
}

// isCanceled reports whether err only says the caller went away.
func isCanceled(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled)
}

// relay copies a server stream from the upstream to the caller until the
// upstream ends it. The caller going away is not an error.
func relay[T any](ctx context.Context, recv func() (*T, error), send func(*T) error) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if isCanceled(ctx, err) {
				return nil
			}
			return err
		}
		if err := send(m); err != nil {
			return err
		}
	}
}
