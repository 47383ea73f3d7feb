package consul

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/authn"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
	"github.com/storegate/storegate/policy"
)

// testNode is the name of the test agent's node.
const testNode = "storegate-unit"

// testIntentions: admin may do everything; web owns /app/ but not
// /app/secret/, may lock under /app/locks/ and read and register web-*
// services and their checks (and use no session); batch may use sessions,
// locks and keys.
const testIntentions = `intentions:
  - name: admin-all
    source: "spiffe://example.org/admin"
    resources: ["*"]
    actions: ["*"]
    effect: allow
  - name: web-app-kv
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [read, write, delete]
    keys: ["/app/**"]
    effect: allow
  - name: web-no-secrets
    source: "spiffe://example.org/web"
    resources: ["*"]
    actions: ["*"]
    keys: ["/app/secret/**"]
    effect: deny
  - name: web-locks
    source: "spiffe://example.org/web"
    resources: [lock]
    actions: [acquire, release]
    keys: ["/app/locks/**"]
    effect: allow
  - name: web-services
    source: "spiffe://example.org/web"
    resources: [service, check]
    actions: [read, register, deregister]
    services: ["web-*"]
    effect: allow
  - name: batch-sessions
    source: "spiffe://example.org/batch"
    resources: [session, lock, kv]
    actions: ["*"]
    effect: allow
`

// env is a real Consul agent, a recorder of what reaches it, and the front
// in front of both on an mTLS listener.
type env struct {
	consul  string // the agent's address, http://...
	front   string // the front's address, https://...
	clients map[string]*http.Client
	rec     *recorder
	// policyDir and policy are the front's policy, for tests that change it.
	policyDir string
	policy    *policy.Engine
}

// recorder forwards to the agent and remembers every method and path
// that reached it.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, s)
}

// all returns what reached the agent, in order.
func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// count reports how many requests for "METHOD /path" reached the agent.
func (r *recorder) count(what string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.seen {
		if s == what {
			n++
		}
	}
	return n
}

func newEnv(t *testing.T, opts ...gate.Option) *env {
	t.Helper()
	return newEnvOptions(t, Options{}, opts...)
}

// newEnvOptions is newEnv with the front's options fo (Upstream is set
// here).
func newEnvOptions(t *testing.T, fo Options, opts ...gate.Option) *env {
	t.Helper()
	e := &env{consul: "http://" + startAgent(t), rec: &recorder{}}

	up, _ := url.Parse(e.consul)
	rp := httputil.NewSingleHostReverseProxy(up)
	recSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The front reads the agent's own ports once per process, at its
		// first registration (they are guarded check targets): a fixed
		// cost, not one a caller can repeat, so not counted here.
		if r.URL.Path != "/v1/agent/self" {
			e.rec.add(r.Method + " " + r.URL.Path)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(recSrv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	src, err := mtls.NewFileSource(ctx, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })

	dir := testenv.New(t).Policies(testIntentions)
	eng, err := policy.Load(ctx, policy.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e.policyDir, e.policy = dir, eng
	trust := []spiffeid.TrustDomain{ca.TrustDomain}
	recURL, _ := url.Parse(recSrv.URL)
	// As cmd/gateway builds it: the gate keeps every caller off the
	// gateway's own records, in both stores.
	opts = append([]gate.Option{gate.WithReserved([]byte("/_storegate/"))}, opts...)
	fo.Upstream = recURL
	front, err := New(gate.New(eng, nil, opts...), authn.New(trust), fo)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(front.Handler())
	ts.TLS = mtls.ServerConfig(src, trust, slog.Default())
	ts.StartTLS()
	t.Cleanup(ts.Close)
	e.front = ts.URL

	roots := x509.NewCertPool()
	pem, err := os.ReadFile(ca.Bundle())
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("reading the bundle: %v", err)
	}
	e.clients = map[string]*http.Client{}
	for _, who := range []string{"admin", "web", "batch"} {
		f := ca.SVID(t, who, "/"+who)
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
		t.Cleanup(tr.CloseIdleConnections)
		e.clients[who] = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	return e
}

// do sends a request through the front as who ("" sends it to the agent
// directly) and returns the status and body.
func (e *env) do(t *testing.T, who, method, path string, body []byte) (int, string) {
	t.Helper()
	base, c := e.front, e.clients[who]
	if who == "" {
		base, c = e.consul, http.DefaultClient
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s as %q: %v", method, path, who, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// startAgent starts the real Consul 1.14.11 agent (testenv: bin/consul,
// built when missing) in -dev mode on loopback ports and returns its HTTP
// address once it has a leader.
func startAgent(t *testing.T) string {
	t.Helper()
	return testenv.New(t).Consul(testenv.ConsulSpec{Node: testNode}).HTTPAddr
}
