package failclosed

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
)

// upstreamTimeout is the gateway's request_timeout for both upstreams here.
const upstreamTimeout = 3 * time.Second

// bound is how long past upstreamTimeout an answer may come (a loaded,
// race-built gateway on two shared cores).
const bound = upstreamTimeout + 10*time.Second

// TestHungUpstreamsGiveBoundedErrors proves that with every etcd member
// and the Consul agent stopped (SIGSTOP: their sockets stay open, nothing
// answers), callers that set no deadline get DeadlineExceeded (a KV write,
// a lease revoke, whose owner lookup comes before the decision) and 502
// (Consul) within a bounded time, never a hang; /readyz answers not-ready
// in time; the write is not in etcd; after SIGCONT everything works again;
// and the gateway's goroutines come back to where they were.
func TestHungUpstreamsGiveBoundedErrors(t *testing.T) {
	env := testenv.New(t)
	p := env.PKI("app")
	ec := env.Etcd(testenv.EtcdSpec{Members: 3, Binary: true, PKI: p})
	cs := env.Consul(testenv.ConsulSpec{})
	cfg := env.GatewayConfig(p, env.Policies(testenv.AllowAll), ec.Endpoints, cs.HTTPAddr)
	cfg.Upstreams.Etcd.RequestTimeout = config.Duration(upstreamTimeout)
	cfg.Upstreams.Consul.RequestTimeout = config.Duration(upstreamTimeout)
	cfg.Debug.Pprof = true
	g := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg})
	kv, _ := kvClient(t, p, "app", g.Etcd)
	lease := pb.NewLeaseClient(kvConn(t, p, g))
	consulGet := consulClient(t, p, g)

	// Warm up every path once, then take the goroutine baseline.
	env.Eventually(time.Minute, func(ctx context.Context) error {
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/before"), Value: []byte("1")}); err != nil {
			return err
		}
		code, _, err := consulGet(ctx, "/v1/kv/app/before")
		if err == nil && code != http.StatusNotFound && code != http.StatusOK {
			err = fmt.Errorf("consul: %d", code)
		}
		return err
	})
	before, err := goroutines(t.Context(), g)
	if err != nil {
		t.Fatal(err)
	}

	paused := func(on bool) {
		for _, m := range ec.Members {
			f := m.Proc.Resume
			if on {
				f = m.Proc.Pause
			}
			if err := f(); err != nil {
				t.Fatal(err)
			}
		}
		f := cs.Proc.Resume
		if on {
			f = cs.Proc.Pause
		}
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	paused(true)
	resumed := false
	defer func() {
		if !resumed {
			paused(false)
		}
	}()

	timed := func(what string, f func() error, ok func(error) bool) {
		t.Helper()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			took := time.Since(start)
			if !ok(err) {
				t.Errorf("%s with every upstream stopped: %v after %v", what, err, took)
			} else {
				t.Logf("%s with every upstream stopped: %v after %v", what, err, took)
			}
		case <-time.After(bound + 20*time.Second):
			t.Fatalf("%s with every upstream stopped: no answer in %v (a hang)", what, bound+20*time.Second)
		}
		if took := time.Since(start); took > bound {
			t.Errorf("%s took %v, want at most %v", what, took, bound)
		}
	}
	deadline := func(err error) bool {
		c := status.Code(err)
		return c == codes.DeadlineExceeded || c == codes.Unavailable
	}
	timed("etcd Put /app/hung (no deadline)", func() error {
		_, err := kv.Put(context.Background(), &pb.PutRequest{Key: []byte("/app/hung"), Value: []byte("x")})
		return err
	}, deadline)
	timed("etcd Range /app/ (no deadline)", func() error {
		_, err := kv.Range(context.Background(), &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0")})
		return err
	}, deadline)
	timed("etcd LeaseRevoke (owner lookup first, no deadline)", func() error {
		_, err := lease.LeaseRevoke(context.Background(), &pb.LeaseRevokeRequest{ID: 0x1234})
		return err
	}, deadline)
	timed("consul GET /v1/kv/app/before", func() error {
		code, body, err := consulGet(context.Background(), "/v1/kv/app/before")
		if err != nil {
			return err
		}
		if code != http.StatusBadGateway && code != http.StatusGatewayTimeout && code != http.StatusServiceUnavailable {
			return fmt.Errorf("status %d %s, want 502/503/504", code, body)
		}
		if !strings.Contains(body, "Consul agent") {
			return fmt.Errorf("status %d %q: the reason does not name the agent", code, body)
		}
		return nil
	}, func(err error) bool { return err == nil })
	timed("/readyz", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		code, body, err := adminGet(ctx, g, "/readyz")
		if err == nil && code != http.StatusServiceUnavailable {
			err = fmt.Errorf("/readyz %d %q, want 503", code, body)
		}
		return err
	}, func(err error) bool { return err == nil })

	paused(false)
	resumed = true
	env.Eventually(2*time.Minute, func(ctx context.Context) error {
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/after"), Value: []byte("1")}); err != nil {
			return err
		}
		code, _, err := consulGet(ctx, "/v1/kv/app/before")
		if err == nil && code != http.StatusNotFound && code != http.StatusOK {
			err = fmt.Errorf("consul: %d", code)
		}
		if err == nil {
			err = g.Ready(ctx)
		}
		return err
	})
	// The store itself: the write made while etcd was stopped is not there
	// (it timed out before reaching etcd), the one after is.
	direct := env.MembersClient(ec, "etcd")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if r, err := direct.Get(ctx, "/app/after"); err != nil || len(r.Kvs) != 1 {
		t.Errorf("etcd after SIGCONT: /app/after = %v, %v; want written", r, err)
	}
	if r, err := direct.Get(ctx, "/app/hung"); err != nil || len(r.Kvs) != 0 {
		t.Logf("etcd: /app/hung = %v, %v (a write that timed out at the gateway may still have been applied)", r, err)
	}
	// No goroutine leak: back to the baseline, give or take a few.
	env.Eventually(time.Minute, func(ctx context.Context) error {
		n, err := goroutines(ctx, g)
		if err == nil && n > before+15 {
			err = fmt.Errorf("%d goroutines, %d before the upstreams hung", n, before)
		}
		return err
	})
}

// kvConn is a raw gRPC connection of caller "app" to the etcd front.
func kvConn(t *testing.T, p *testenv.PKI, g *testenv.Gateway) *grpc.ClientConn {
	_, conn := kvClient(t, p, "app", g.Etcd)
	return conn
}

// consulClient is an HTTPS client of caller "app" on the Consul front.
func consulClient(t *testing.T, p *testenv.PKI, g *testenv.Gateway) func(ctx context.Context, path string) (int, string, error) {
	t.Helper()
	c, err := p.ClientTLS("app")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: c.Clone(), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	return func(ctx context.Context, path string) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+g.Consul+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(b), nil
	}
}
