package mtls_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

func trustDomains(names ...string) []spiffeid.TrustDomain {
	tds := make([]spiffeid.TrustDomain, len(names))
	for i, n := range names {
		tds[i] = spiffeid.RequireTrustDomainFromString(n)
	}
	return tds
}

func newFileSource(t *testing.T, cfg mtls.FileConfig, log *slog.Logger) *mtls.FileSource {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	src, err := mtls.NewFileSource(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestServerConfig(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	other := mtlstest.NewCA(t, "other.org")
	imposter := mtlstest.NewCA(t, "example.org") // same name, its own key
	gw := ca.SVID(t, "gateway", "/gateway")
	src := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, nil)

	example := []string{"example.org"}
	tests := []struct {
		name   string
		client mtlstest.Files // zero: no certificate
		trust  []string
		reason string // empty: accepted
	}{
		{"valid", ca.SVID(t, "web", "/web"), example, ""},
		{"no certificate", mtlstest.Files{}, example, "no certificate"},
		{"no URI SAN", ca.NoURISAN(t), example, "no SPIFFE ID"},
		{"expired", ca.Expired(t, "/web"), example, "expired"},
		{"not yet valid", ca.Issue(t, mtlstest.Loopback(mtls.IssueRequest{ID: ca.ID("/web"), Out: "not-yet-valid",
			NotBefore: time.Now().Add(time.Hour)})), example, "not yet valid"},
		{"other trust domain", other.SVID(t, "web", "/web"), example, "untrusted trust domain"},
		{"trusted domain without bundle", other.SVID(t, "web", "/web"), []string{"example.org", "other.org"}, "no trust bundle"},
		{"wrong CA same trust domain", imposter.SVID(t, "web", "/web"), example, "unknown authority"},
		{"leaf CA true", ca.LeafCATrue(t, "/web"), example, "invalid SVID"},
		{"no trust domains", ca.SVID(t, "web", "/web"), nil, "untrusted trust domain"},
	}
	versions := map[string]uint16{"TLS1.2": tls.VersionTLS12, "TLS1.3": tls.VersionTLS13}
	for _, tt := range tests {
		for vname, version := range versions {
			t.Run(tt.name+"/"+vname, func(t *testing.T) {
				rec := &logRecorder{}
				var mu sync.Mutex
				var accepted []tls.ConnectionState
				addr := serve(t, mtls.ServerConfig(src, trustDomains(tt.trust...), slog.New(rec)), func(cs tls.ConnectionState) {
					mu.Lock()
					defer mu.Unlock()
					accepted = append(accepted, cs)
				})
				c, err := dial(addr, &tls.Config{
					RootCAs:      roots(t, ca.Bundle()),
					ServerName:   "localhost",
					Certificates: clientCert(t, tt.client.Cert, tt.client.Key),
					MinVersion:   version,
					MaxVersion:   version,
					NextProtos:   []string{"h2"},
				})
				if tt.reason == "" {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					defer c.Close()
					if got := c.ConnectionState().NegotiatedProtocol; got != "h2" {
						t.Errorf("ALPN = %q, want h2", got)
					}
					mu.Lock()
					defer mu.Unlock()
					if len(accepted) != 1 || accepted[0].PeerCertificates[0].URIs[0].String() != "spiffe://example.org/web" {
						t.Errorf("server saw %d connections, want 1 from spiffe://example.org/web", len(accepted))
					}
					if n := rec.count("mtls: refused client"); n != 0 {
						t.Errorf("%d refusals logged for a valid client", n)
					}
					return
				}
				if err == nil {
					c.Close()
					t.Fatal("accepted, want refused")
				}
				t.Logf("client error: %v", err)
				var attrs map[string]string
				eventually(t, "refusal logged with reason "+tt.reason, func() bool {
					var ok bool
					attrs, ok = rec.find("mtls: refused client", map[string]string{"reason": tt.reason})
					return ok
				})
				t.Logf("server log: %v", attrs)
				if !strings.HasPrefix(attrs["remote"], "127.0.0.1:") {
					t.Errorf("remote = %q, want the client's address", attrs["remote"])
				}
				if n := rec.count("mtls: refused client"); n != 1 {
					t.Errorf("refusal logged %d times, want once", n)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(accepted) != 0 {
					t.Errorf("server completed %d handshakes", len(accepted))
				}
			})
		}
	}
}

// TestServerConfigResumption checks that resumed sessions work and are
// checked against the bundle of the day, not of the first handshake.
func TestServerConfigResumption(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	imposter := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	web := ca.SVID(t, "web", "/web")
	rec := &logRecorder{}
	src := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, nil)
	addr := serve(t, mtls.ServerConfig(src, trustDomains("example.org"), slog.New(rec)), nil)
	cfg := &tls.Config{RootCAs: roots(t, ca.Bundle()), ServerName: "localhost",
		Certificates: clientCert(t, web.Cert, web.Key), ClientSessionCache: tls.NewLRUClientSessionCache(8)}

	for i, wantResume := range []bool{false, true} {
		c, err := dial(addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().DidResume; got != wantResume {
			t.Errorf("connection %d: DidResume = %v, want %v", i, got, wantResume)
		}
		c.Close()
	}

	// The CA that signed web leaves the bundle: even a resumed session is refused.
	imposterCA, err := os.ReadFile(imposter.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca.Bundle()+".new", imposterCA, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ca.Bundle()+".new", ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the client to be refused", func() bool {
		c, err := dial(addr, cfg)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if _, ok := rec.find("mtls: refused client", map[string]string{"reason": "unknown authority"}); !ok {
		t.Error("refusal not logged as unknown authority")
	}
}
