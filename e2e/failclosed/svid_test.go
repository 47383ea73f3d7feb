package failclosed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/spiretest"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
)

// svidTTL is the SPIRE SVIDs' lifetime here: short, so that one expires
// soon after the agent is stopped.
const svidTTL = 20 * time.Second

// TestExpiredSVIDStopsServing proves that when the gateway's identity comes
// from a real SPIRE agent (internal/spiretest) and the agent goes away for
// longer than the SVID lives, the gateway stops serving: once the SVID has
// expired, no handshake on its etcd front presents a certificate (not even
// to a client that would accept an expired one), /readyz answers 503
// naming the expired SVID, and every answer comes in bounded time. When the
// agent is back the gateway serves a fresh SVID, is ready again, and a
// caller's write goes through to etcd.
func TestExpiredSVIDStopsServing(t *testing.T) {
	env := testenv.New(t)
	p := env.PKI()
	ec := env.Etcd(testenv.EtcdSpec{PKI: p})
	s := spiretest.Start(t, spiretest.Options{SVIDTTL: svidTTL})
	s.Register(t, "spiffe://example.org/storegate", []string{spiretest.PathSelector(gatewayBin)}, []string{"localhost"})
	s.Register(t, "spiffe://example.org/app", []string{s.FetchSelector()}, nil)

	cfg := env.GatewayConfig(p, env.Policies(testenv.AllowAll), ec.Endpoints, "")
	cfg.Identity = config.IdentityConfig{WorkloadAPI: s.SocketPath, TrustDomains: []string{"example.org"}}
	g := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg})

	put := func(ctx context.Context, key string) error {
		f := s.FetchX509(t, t.TempDir())
		c, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: f.Cert, Key: f.Key, CA: f.Bundle, ServerName: "localhost"})
		if err != nil {
			return err
		}
		conn, err := grpc.NewClient(g.Etcd, grpc.WithTransportCredentials(credentials.NewTLS(c)))
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte("v")})
		return err
	}
	env.Eventually(time.Minute, func(ctx context.Context) error { return put(ctx, "/app/before") })

	// served is the certificate the front presents to a client that
	// accepts anything, or the handshake's error, and when the handshake
	// began (the server checks its SVID after that).
	var began time.Time
	served := func() (*x509.Certificate, error) {
		var got *x509.Certificate
		began = time.Now()
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", g.Etcd, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"},
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) > 0 {
					got = cs.PeerCertificates[0]
				}
				return nil
			}})
		if err == nil {
			c.Close()
		}
		return got, err
	}
	if cert, err := served(); err != nil || cert == nil {
		t.Fatalf("with the agent up: %v", err)
	}

	s.StopAgent(t)
	stopped := time.Now()
	agentUp := false
	defer func() {
		if !agentUp {
			s.StartAgent(t)
		}
	}()
	// Within the SVID's lifetime (and some slack) the gateway must stop
	// serving; until then it may serve its still valid SVID.
	env.Eventually(svidTTL+30*time.Second, func(ctx context.Context) error {
		cert, err := served()
		if cert != nil && began.After(cert.NotAfter) {
			t.Fatalf("the gateway presented its SVID %v after it expired at %v", cert.URIs, cert.NotAfter)
		}
		if err == nil {
			return fmt.Errorf("still serving (SVID valid until %v)", cert.NotAfter)
		}
		return nil
	})
	t.Logf("stopped serving %v after the agent went away", time.Since(stopped))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	code, body, err := adminGet(ctx, g, "/readyz")
	cancel()
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "svid") {
		t.Errorf("/readyz with an expired SVID: %d %q %v, want 503 naming the SVID", code, body, err)
	}
	start := time.Now()
	if _, err := served(); err == nil {
		t.Errorf("a handshake succeeded with the SVID expired")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a refused handshake took %v", took)
	}

	s.StartAgent(t)
	agentUp = true
	env.Eventually(2*time.Minute, func(ctx context.Context) error {
		cert, err := served()
		if err != nil {
			return err
		}
		if began.After(cert.NotAfter) {
			t.Fatalf("after the agent came back: served an expired SVID (%v)", cert.NotAfter)
		}
		return g.Ready(ctx)
	})
	env.Eventually(time.Minute, func(ctx context.Context) error { return put(ctx, "/app/after") })
	direct := env.MembersClient(ec, "etcd")
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if r, err := direct.Get(ctx, "/app/after"); err != nil || len(r.Kvs) != 1 {
		t.Errorf("etcd: /app/after = %v, %v; want written after the agent came back", r, err)
	}
}
