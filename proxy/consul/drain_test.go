package consul

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
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

// countingTransport counts the blocking queries that reach the agent.
type countingTransport struct {
	next     http.RoundTripper
	blocking atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if blockingQuery(r) {
		c.blocking.Add(1)
	}
	return c.next.RoundTrip(r)
}

// drainEnv is the front (its *Server in hand, to drain it) in front of a
// real agent, with web's and admin's clients.
type drainEnv struct {
	srv     *Server
	front   string
	clients map[string]*http.Client
	up      *countingTransport
}

func newDrainEnv(t *testing.T) *drainEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	agent, _ := url.Parse("http://" + startAgent(t))
	ca := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	src, err := mtls.NewFileSource(ctx, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	eng, err := policy.Load(ctx, policy.Config{Dir: testenv.New(t).Policies(testIntentions)})
	if err != nil {
		t.Fatal(err)
	}
	trust := []spiffeid.TrustDomain{ca.TrustDomain}
	e := &drainEnv{clients: map[string]*http.Client{}}
	wrap := func(rt http.RoundTripper) http.RoundTripper { e.up = &countingTransport{next: rt}; return e.up }
	e.srv, err = New(gate.New(eng, nil, gate.WithReserved([]byte("/_storegate/"))), authn.New(trust),
		Options{Upstream: agent, WrapTransport: wrap})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(e.srv.Handler())
	ts.TLS = mtls.ServerConfig(src, trust, slog.Default())
	ts.StartTLS()
	t.Cleanup(ts.Close)
	e.front = ts.URL
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(ca.Bundle())
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("reading the bundle: %v", err)
	}
	for _, who := range []string{"admin", "web"} {
		f := ca.SVID(t, who, "/"+who)
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
		t.Cleanup(tr.CloseIdleConnections)
		e.clients[who] = &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	}
	return e
}

// reply is one answer of the front.
type reply struct {
	code  int
	body  string
	index string
	took  time.Duration
	err   error
}

func (e *drainEnv) do(who, method, path string, body []byte) reply {
	start := time.Now()
	req, err := http.NewRequest(method, e.front+path, bytes.NewReader(body))
	if err != nil {
		return reply{err: err}
	}
	resp, err := e.clients[who].Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: string(b), index: resp.Header.Get("X-Consul-Index"), took: time.Since(start), err: err}
}

// TestDrainAnswersBlockingQueries proves the Consul front's drain entry
// point: blocking queries held at the agent (a plain one, and a filtered
// one the gateway re-blocks itself) are answered as soon as Drain is
// called, long before their 60 s wait, as Consul answers a wait that ran
// out — 200, the unchanged answer and the index they blocked on, which
// clients simply ask again with; a blocking query that comes after Drain
// is answered at once; other requests are served and applied as before.
func TestDrainAnswersBlockingQueries(t *testing.T) {
	e := newDrainEnv(t)
	if r := e.do("admin", http.MethodPut, "/v1/kv/app/d1", []byte("one")); r.err != nil || r.code != 200 {
		t.Fatalf("seed: %+v", r)
	}
	if r := e.do("admin", http.MethodPut, "/v1/kv/app/secret/s", []byte("hidden")); r.err != nil || r.code != 200 {
		t.Fatalf("seed: %+v", r)
	}
	queries := map[string]string{
		"plain":    "/v1/kv/app/d1",
		"filtered": "/v1/kv/app/?recurse", // web cannot read app/secret/: narrowed, re-blocked
	}
	first := map[string]reply{}
	for name, path := range queries {
		r := e.do("web", http.MethodGet, path, nil)
		if r.err != nil || r.code != 200 || r.index == "" || strings.Contains(r.body, "hidden") {
			t.Fatalf("%s read: %+v", name, r)
		}
		first[name] = r
	}
	done := map[string]chan reply{}
	for name, path := range queries {
		c, u := make(chan reply, 1), path+sep(path)+"index="+first[name].index+"&wait=60s"
		done[name] = c
		go func() { c <- e.do("web", http.MethodGet, u, nil) }()
	}
	// Both are held at the agent: two blocking reads reached it.
	e.eventually(t, func(context.Context) error {
		if n := e.up.blocking.Load(); n < 2 {
			return fmt.Errorf("%d blocking queries at the agent, want 2", n)
		}
		return nil
	})
	drained := time.Now()
	e.srv.Drain()
	for name := range queries {
		select {
		case r := <-done[name]:
			if r.err != nil || r.code != 200 || r.body != first[name].body || r.index != first[name].index {
				t.Errorf("%s: drained answer %+v, want 200, the same body and index %s", name, r, first[name].index)
			}
			t.Logf("%s blocking query answered %v after Drain (index %s)", name, time.Since(drained).Round(time.Millisecond), r.index)
		case <-time.After(20 * time.Second):
			t.Fatalf("%s blocking query still held 20s after Drain", name)
		}
	}
	if !e.srv.Draining() {
		t.Fatal("Draining() is false after Drain")
	}
	// After Drain: a blocking query does not block; writes go through.
	r := e.do("web", http.MethodGet, "/v1/kv/app/d1?index="+first["plain"].index+"&wait=60s", nil)
	if r.err != nil || r.code != 200 || r.took > 20*time.Second {
		t.Fatalf("blocking query after Drain: %+v", r)
	}
	if r := e.do("web", http.MethodPut, "/v1/kv/app/d2", []byte("two")); r.err != nil || r.code != 200 {
		t.Fatalf("write after Drain: %+v", r)
	}
	if r := e.do("admin", http.MethodGet, "/v1/kv/app/d2?raw", nil); r.err != nil || r.body != "two" {
		t.Fatalf("the write after Drain is not in Consul: %+v", r)
	}
}

func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

func (e *drainEnv) eventually(t *testing.T, cond func(context.Context) error) {
	t.Helper()
	testenv.New(t).Eventually(20*time.Second, cond)
}
