package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/authn"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
	"github.com/storegate/storegate/policy"
)

// waitTimeout bounds every wait on a condition in these tests.
const waitTimeout = 30 * time.Second

// testIntentions is the policy most tests run with. Callers:
//
//	admin   everything
//	web     kv/watch read write delete watch on /app/**, never /app/secret/**;
//	        leases; locks on /app/locks/**; elections on /app/election/**;
//	        cluster and status reads
//	reader  kv/watch read and watch on /app/**
//	writer  kv write on /w/** (no read)
//	monitor maintenance read (Hash, HashKV, Alarm GET), status read
//	nobody  nothing
const testIntentions = `intentions:
  - name: admin-all
    source: "spiffe://example.org/admin"
    resources: ["*"]
    actions: ["*"]
    owners: ["**"]
    effect: allow
  - name: web-app-kv
    source: "spiffe://example.org/web"
    resources: [kv, watch]
    actions: [read, write, delete, watch]
    keys: ["/app/**"]
    effect: allow
  - name: web-no-secrets
    source: "spiffe://example.org/web"
    resources: ["*"]
    actions: ["*"]
    keys: ["/app/secret/**"]
    effect: deny
  - name: web-leases
    source: "spiffe://example.org/web"
    resources: [lease]
    actions: ["*"]
    effect: allow
  - name: web-locks
    source: "spiffe://example.org/web"
    resources: [lock]
    actions: [acquire, release]
    keys: ["/app/locks/**"]
    effect: allow
  - name: web-elections
    source: "spiffe://example.org/web"
    resources: [election]
    actions: ["*"]
    keys: ["/app/election/**"]
    effect: allow
  - name: web-cluster-read
    source: "spiffe://example.org/web"
    resources: [cluster, status]
    actions: [read]
    effect: allow
  - name: reader-app
    source: "spiffe://example.org/reader"
    resources: [kv, watch]
    actions: [read, watch]
    keys: ["/app/**"]
    effect: allow
  - name: writer-w
    source: "spiffe://example.org/writer"
    resources: [kv]
    actions: [write]
    keys: ["/w/**"]
    effect: allow
  - name: monitor-maintenance
    source: "spiffe://example.org/monitor"
    resources: [maintenance, status]
    actions: [read]
    effect: allow
`

// envConfig configures one test environment.
type envConfig struct {
	// intentions is written to intentions.yaml (testIntentions if empty).
	intentions string
	// rego, when set, replaces the shipped authz.rego and the intentions:
	// the policy directory then holds this one module.
	rego string
	// opts are the front's options; AdvertiseURLs defaults to the
	// gateway's own https URL.
	opts Options
	// etcdMaxRequestBytes is the embedded etcd's MaxRequestBytes
	// (64 KiB if zero).
	etcdMaxRequestBytes uint
	// log receives the front's, the gate's and the engine's logs
	// (discarded if nil, unless STOREGATE_TEST_LOG is set).
	log *slog.Logger
}

// env is a real etcd (embedded, client TLS required) with the front served
// in front of it on a loopback listener.
type env struct {
	ca      *mtlstest.CA
	etcd    *testenv.Etcd
	etcdURL string
	addr    string // the gateway's host:port
	srv     *Server
	gs      *grpc.Server
	up      *Upstream
	// direct is a client straight to etcd with the gateway's credentials,
	// for setting up and checking state behind the front's back.
	direct *clientv3.Client

	mu    sync.Mutex
	svids map[string]mtlstest.Files
}

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func testLogger() *slog.Logger {
	if os.Getenv("STOREGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return discardLog
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	return testenv.New(t).Addr()
}

// writePolicy writes a policy directory: the shipped Rego and intentions
// (testIntentions if empty), or one custom module.
func writePolicy(t testing.TB, intentions, rego string) string {
	t.Helper()
	if rego != "" {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "custom.rego"), []byte(rego), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	if intentions == "" {
		intentions = testIntentions
	}
	return testenv.New(t).Policies(intentions)
}

// newEnv starts etcd and the front; both stop when the test ends.
func newEnv(t testing.TB, cfg envConfig) *env {
	t.Helper()
	e := &env{ca: mtlstest.NewCA(t, "example.org"), svids: map[string]mtlstest.Files{}}
	e.ca.SVID(t, "etcd", "/etcd")
	gwFiles := e.ca.SVID(t, "gateway", "/storegate")
	e.startEtcd(t, cfg.etcdMaxRequestBytes)

	log := cfg.log
	if log == nil {
		log = testLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	upTLS, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: gwFiles.Cert, Key: gwFiles.Key, CA: e.ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	e.up, err = Dial(UpstreamConfig{Endpoints: []string{e.etcdURL}, TLS: upTLS, DialTimeout: 5 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.up.Close() })
	e.direct, err = clientv3.New(clientv3.Config{
		Endpoints: []string{e.etcdURL}, TLS: upTLS.Clone(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.direct.Close() })

	engine, err := policy.Load(ctx, policy.Config{Dir: writePolicy(t, cfg.intentions, cfg.rego), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	src, err := mtls.NewFileSource(ctx, mtls.FileConfig{Cert: gwFiles.Cert, Key: gwFiles.Key, Bundle: e.ca.Bundle()}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	tds := []spiffeid.TrustDomain{e.ca.TrustDomain}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	opts := cfg.opts
	if opts.AdvertiseURLs == nil {
		opts.AdvertiseURLs = []string{"https://" + e.addr}
	}
	opts.Logger = log
	e.srv = New(gate.New(engine, log, gate.WithReserved([]byte(ReservedPrefix))), e.up, authn.New(tds), opts)
	e.gs = e.srv.GRPCServer(credentials.NewTLS(mtls.ServerConfig(src, tds, log)))
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = e.gs.Serve(lis)
	}()
	t.Cleanup(func() {
		e.gs.Stop()
		<-served
	})

	// Ready: the upstream answers through the gateway's own connection.
	waitFor(t, "the upstream to answer", func() bool {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		return e.up.Ready(rctx) == nil
	})
	return e
}

// startEtcd starts one embedded etcd member (testenv) serving etcd's SVID
// from the test CA, with client certificates required.
func (e *env) startEtcd(t testing.TB, maxReq uint) {
	t.Helper()
	if maxReq == 0 {
		maxReq = 64 << 10
	}
	e.etcd = testenv.New(t).Etcd(testenv.EtcdSpec{PKI: &testenv.PKI{Dir: e.ca.Dir}, Embed: func(cfg *embed.Config) {
		cfg.LogOutputs = []string{"/dev/null"}
		cfg.MaxRequestBytes = maxReq
		// Short ticks: a single member elects itself at once, and the
		// minimum lease TTL (3 election timeouts) is one second, which
		// keeps the keep-alive tests short.
		cfg.TickMs = 20
		cfg.ElectionMs = 200
	}})
	e.etcdURL = e.etcd.Endpoints[0]
}

// stopEtcd stops the upstream (idempotent).
func (e *env) stopEtcd() { e.etcd.Kill(0) }

// svid returns (issuing on first use) the SVID of caller name, whose
// SPIFFE ID is spiffe://example.org/<name>.
func (e *env) svid(t testing.TB, name string) mtlstest.Files {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if f, ok := e.svids[name]; ok {
		return f
	}
	f := e.ca.SVID(t, "caller-"+name, "/"+name)
	e.svids[name] = f
	return f
}

func (e *env) callerTLS(t testing.TB, name string) credentials.TransportCredentials {
	t.Helper()
	f := e.svid(t, name)
	cfg, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: f.Cert, Key: f.Key, CA: e.ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewTLS(cfg)
}

// client is a client/v3 client of the gateway, as caller name.
func (e *env) client(t testing.TB, name string) *clientv3.Client {
	t.Helper()
	f := e.svid(t, name)
	cfg, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: f.Cert, Key: f.Key, CA: e.ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{e.addr}, TLS: cfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		MaxCallSendMsgSize: 4 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// conn is a plain gRPC connection to the gateway, as caller name, for
// wire-level checks (no client/v3 retries or rewriting).
func (e *env) conn(t testing.TB, name string) *grpc.ClientConn {
	t.Helper()
	return e.dial(t, e.callerTLS(t, name))
}

func (e *env) dial(t testing.TB, creds credentials.TransportCredentials, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20))}, extra...)
	cc, err := grpc.NewClient(e.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (e *env) kv(t testing.TB, name string) pb.KVClient { return pb.NewKVClient(e.conn(t, name)) }

// put writes key=val straight to etcd.
func (e *env) put(t testing.TB, key, val string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := e.direct.Put(ctx, key, val, opts...)
	if err != nil {
		t.Fatalf("direct put %q: %v", key, err)
	}
	return r
}

// keys lists the keys under prefix, straight from etcd.
func (e *env) keys(t testing.TB, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := e.direct.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, kv := range r.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// value returns key's value straight from etcd, and whether it exists.
func (e *env) value(t testing.TB, key string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := e.direct.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) == 0 {
		return "", false
	}
	return string(r.Kvs[0].Value), true
}

// grant grants a lease straight in etcd.
// grant grants a lease through the gateway as web, so that web owns it
// (most tests' leases are web's; see grantDirect for one nobody owns).
func (e *env) grant(t testing.TB, ttl int64) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := pb.NewLeaseClient(e.conn(t, "web")).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return clientv3.LeaseID(r.ID)
}

// grantDirect grants a lease straight in etcd: no owner is on record.
func (e *env) grantDirect(t testing.TB, ttl int64) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := e.direct.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitFor waits (testenv.Eventually) until cond holds, failing the test
// after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	err := testenv.Eventually(context.Background(), waitTimeout, func(context.Context) error {
		if cond() {
			return nil
		}
		return errors.New(what + " has not happened")
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// wantDenied asserts that err is etcd's permission denied, exactly.
func wantDenied(t testing.TB, err error) {
	t.Helper()
	wantStatus(t, err, codes.PermissionDenied, "etcdserver: permission denied")
}

// wantStatus asserts err's gRPC code and, when msg is not empty, its exact
// message.
func wantStatus(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %q", code, msg)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v (%T) is not a gRPC status; want %v %q", err, err, code, msg)
	}
	if st.Code() != code || (msg != "" && st.Message() != msg) {
		t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), code, msg)
	}
}

// wantClientDenied asserts that a client/v3 error is etcd's permission
// denied.
func wantClientDenied(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("got %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
}

func mustOK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// frontGoroutines returns the stacks of the goroutines running code of
// this package whose function names contain any of fns.
func frontGoroutines(fns ...string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range fns {
			if strings.Contains(g, "storegate/proxy/etcd."+fn) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// waitNoFrontGoroutines waits until no goroutine runs any of fns.
func waitNoFrontGoroutines(t testing.TB, fns ...string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		left := frontGoroutines(fns...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the front still running after %v:\n%s", len(left), waitTimeout, strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func keysOf(kvs []*mvccKV) []string {
	out := []string{}
	for _, kv := range kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

func eqStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func wantKeys(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !eqStrings(got, want) {
		t.Fatalf("%s: got keys %q, want %q", what, got, want)
	}
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// has reports whether a record with msg has an attribute key whose value
// contains sub.
func (r *logRecorder) has(msg, key, sub string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if rec.Message != msg {
			continue
		}
		found := false
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == key && strings.Contains(a.Value.String(), sub) {
				found = true
				return false
			}
			return true
		})
		if found {
			return true
		}
	}
	return false
}

func hexID(id uint64) string { return fmt.Sprintf("%x", id) }
