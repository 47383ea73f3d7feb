package e2e

// A hostile-caller suite for the etcd front: one test per class of
// /work/shared/THREATS.md that applies to etcd, each with subtests varying
// the attack. Callers speak raw gRPC (not etcdctl) with SVIDs minted by the
// harness's dev CA, against the real gateway binary running the shipped
// intentions, and every outcome is checked in etcd itself, read directly
// with the harness's etcd client certificate.
//
// This file holds the shared helpers; the tests are in hostile_etcd_*_test.go.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// heEnv is one etcd member, one gateway in front of it, a direct client
// and raw gRPC connections of the callers through the gateway.
type heEnv struct {
	p      *pki
	ec     *etcdCluster
	gw     *gateway
	direct *clientv3.Client // straight to etcd, never through the gateway
	web    *grpc.ClientConn // spiffe://example.org/web via the gateway
	admin  *grpc.ClientConn // spiffe://example.org/admin via the gateway
}

// heShipped is the shipped intentions file, as it is in the tree now.
func heShipped(t *testing.T) string {
	t.Helper()
	return mustRead(t, filepath.Join(repoRoot, "policies", "intentions.yaml"))
}

// heOpsIntention adds a third caller, spiffe://example.org/ops, that may
// only read the cluster's membership (to see member lists as a caller who
// may not administer the cluster sees them). It names no one else.
const heOpsIntention = `
  - name: ops-member-list
    description: hostile suite only; reads the member list, nothing else.
    source: "spiffe://example.org/ops"
    resources: [cluster]
    actions: [read]
    effect: allow
`

// newHeEnv starts etcd and a gateway running intentions (the shipped ones
// when empty) in a policy directory of its own.
func newHeEnv(t *testing.T, intentions string) *heEnv {
	t.Helper()
	if intentions == "" {
		intentions = heShipped(t)
	}
	p := newPKI(t, "admin", "web", "ops")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{policyDir: copyPolicies(t, intentions)})
	e := &heEnv{p: p, ec: ec, gw: gw}
	e.direct = heDirect(t, p, ec.endpoints, "etcd")
	e.web = heConn(t, p, gw.addr, "web")
	e.admin = heConn(t, p, gw.addr, "admin")
	return e
}

func heTLS(t *testing.T, p *pki, who string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.path(who+".pem"), p.path(who+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(mustRead(t, p.bundle()))) {
		t.Fatal("no certificates in the bundle")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// heConn is a raw gRPC connection to addr with who's SVID.
func heConn(t *testing.T, p *pki, addr, who string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(heTLS(t, p, who))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// heDirect is a client/v3 client straight to etcd with who's certificate.
func heDirect(t *testing.T, p *pki, endpoints []string, who string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: heTLS(t, p, who),
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// heCtx is a context for one call, bounded so that a hang fails the test.
func heCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *heEnv) put(t *testing.T, key, value string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	r, err := e.direct.Put(heCtx(t), key, value, opts...)
	if err != nil {
		t.Fatalf("direct put %q: %v", key, err)
	}
	return r
}

// get reads key directly (nil when absent).
func (e *heEnv) get(t *testing.T, key string) *mvccpb.KeyValue {
	t.Helper()
	r, err := e.direct.Get(heCtx(t), key)
	if err != nil {
		t.Fatalf("direct get %q: %v", key, err)
	}
	if len(r.Kvs) == 0 {
		return nil
	}
	return r.Kvs[0]
}

// rev is etcd's current revision, read directly.
func (e *heEnv) rev(t *testing.T) int64 {
	t.Helper()
	r, err := e.direct.Get(heCtx(t), "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// all is every key-value in etcd, read directly, by key.
func (e *heEnv) all(t *testing.T) map[string]*mvccpb.KeyValue {
	t.Helper()
	r, err := e.direct.Get(heCtx(t), "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*mvccpb.KeyValue{}
	for _, kv := range r.Kvs {
		m[string(kv.Key)] = kv
	}
	return m
}

// ttl is a lease's remaining and granted TTL read directly (-1 when gone),
// and its keys.
func (e *heEnv) ttl(t *testing.T, id int64) (int64, int64, []string) {
	t.Helper()
	r, err := e.direct.TimeToLive(heCtx(t), clientv3.LeaseID(id), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatalf("direct timetolive %x: %v", id, err)
	}
	var keys []string
	for _, k := range r.Keys {
		keys = append(keys, string(k))
	}
	return r.TTL, r.GrantedTTL, keys
}

// grant grants a lease through the gateway as conn's caller.
func heGrant(t *testing.T, conn *grpc.ClientConn, ttl int64) int64 {
	t.Helper()
	r, err := pb.NewLeaseClient(conn).LeaseGrant(heCtx(t), &pb.LeaseGrantRequest{TTL: ttl})
	if err != nil || r.Error != "" {
		t.Fatalf("lease grant through the gateway: %v %s", err, r.GetError())
	}
	return r.ID
}

// heOwnerKey is the gateway's record of a lease's owner.
func heOwnerKey(id int64) string { return fmt.Sprintf("/_storegate/leases/%016x", uint64(id)) }

// webReadable is what the shipped intentions let web read one key at a
// time: /app/** but /app/secret/**, and the top level of /shared/.
func webReadable(k string) bool {
	if strings.HasPrefix(k, "/app/") && !strings.HasPrefix(k, "/app/secret/") {
		return true
	}
	if rest, ok := strings.CutPrefix(k, "/shared/"); ok && !strings.Contains(rest, "/") {
		return true
	}
	return false
}

// webWritable: web may write and delete /app/** but /app/secret/**.
func webWritable(k string) bool {
	return strings.HasPrefix(k, "/app/") && !strings.HasPrefix(k, "/app/secret/")
}

// heReserved: keys under the gateway's reserved prefix.
func heReserved(k string) bool { return strings.HasPrefix(k, "/_storegate/") }

// inRange reports whether k lies in etcd's range [key, end).
func inRange(k, key, end []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.Equal(k, key)
	case len(end) == 1 && end[0] == 0:
		return bytes.Compare(k, key) >= 0
	}
	return bytes.Compare(k, key) >= 0 && bytes.Compare(k, end) < 0
}

// heDenied checks err is etcd's own permission denied: code
// PermissionDenied, message exactly etcd's.
func heDenied(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: allowed, want etcdserver: permission denied", what)
		return
	}
	s, _ := status.FromError(err)
	if s.Code() != codes.PermissionDenied || s.Message() != status.Convert(rpctypes.ErrGRPCPermissionDenied).Message() {
		t.Errorf("%s: %v, want PermissionDenied %q", what, err, "etcdserver: permission denied")
	}
}

// heCode checks err has code c.
func heCode(t *testing.T, what string, err error, c codes.Code) {
	t.Helper()
	if status.Code(err) != c {
		t.Errorf("%s: %v, want code %v", what, err, c)
	}
}

// heTrailer is a call option that collects the storegate-reason trailer.
type heTrailer struct{ md metadata.MD }

func (h *heTrailer) opt() grpc.CallOption { return grpc.Trailer(&h.md) }
func (h *heTrailer) reason() string       { return strings.Join(h.md.Get("storegate-reason"), "; ") }

// heNoLeak fails when any of secrets appears in any of texts.
func heNoLeak(t *testing.T, what string, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, x := range texts {
			if s != "" && strings.Contains(x, s) {
				t.Errorf("%s: %q leaked in %q", what, s, x)
			}
		}
	}
}

// heWatch is a raw watch stream through the gateway, its responses read
// by a goroutine.
type heWatch struct {
	s    pb.Watch_WatchClient
	resp chan *pb.WatchResponse
	err  chan error
	stop context.CancelFunc
}

func heOpenWatch(t *testing.T, conn *grpc.ClientConn) *heWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ctx = metadata.AppendToOutgoingContext(ctx, rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
	s, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &heWatch{s: s, resp: make(chan *pb.WatchResponse, 4096), err: make(chan error, 1), stop: cancel}
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				w.err <- err
				close(w.resp)
				return
			}
			w.resp <- r
		}
	}()
	return w
}

func (w *heWatch) create(t *testing.T, cr *pb.WatchCreateRequest) {
	t.Helper()
	if err := w.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}); err != nil {
		t.Fatalf("watch create: %v", err)
	}
}

func (w *heWatch) cancel(t *testing.T, id int64) {
	t.Helper()
	if err := w.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
		CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}); err != nil {
		t.Fatalf("watch cancel: %v", err)
	}
}

// next returns the next response, or nil after d (or when the stream ends).
func (w *heWatch) next(d time.Duration) *pb.WatchResponse {
	select {
	case r := <-w.resp:
		return r
	case <-time.After(d):
		return nil
	}
}

// drain collects the responses that arrive within d.
func (w *heWatch) drain(d time.Duration) []*pb.WatchResponse {
	var got []*pb.WatchResponse
	deadline := time.After(d)
	for {
		select {
		case r, open := <-w.resp:
			if !open {
				return got
			}
			got = append(got, r)
		case <-deadline:
			return got
		}
	}
}

// until reads responses until ok says stop (returning them all), failing
// after d.
func (w *heWatch) until(t *testing.T, d time.Duration, ok func(*pb.WatchResponse) bool) []*pb.WatchResponse {
	t.Helper()
	var got []*pb.WatchResponse
	deadline := time.After(d)
	for {
		select {
		case r, open := <-w.resp:
			if !open {
				t.Fatalf("watch stream ended: %v (after %d responses)", <-w.err, len(got))
			}
			got = append(got, r)
			if ok(r) {
				return got
			}
		case <-deadline:
			t.Fatalf("watch: condition not met in %v (%d responses)", d, len(got))
		}
	}
}

// heEtcdMetric reads etcd's /metrics on its client URL and sums the
// samples of name whose label set contains every one of labels.
func heEtcdMetric(t *testing.T, e *heEnv, name string, labels ...string) float64 {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: heTLS(t, e.p, "etcd")}, Timeout: 10 * time.Second}
	resp, err := c.Get(e.ec.endpoints[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	found := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0
	}
	return sum
}

// heWriteIntentions replaces the gateway's intentions.yaml atomically.
func heWriteIntentions(t *testing.T, dir, intentions string) {
	t.Helper()
	tmp := filepath.Join(dir, ".intentions.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(intentions), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "intentions.yaml")); err != nil {
		t.Fatal(err)
	}
}

// heEventually polls cond every 20 ms until it holds, failing after d.
func heEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// heIsDenied reports whether err is etcd's permission denied.
func heIsDenied(err error) bool {
	return status.Code(err) == codes.PermissionDenied
}

var errHeStop = errors.New("stop")
