package authn_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/authn"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

var (
	exampleOrg = spiffeid.RequireTrustDomainFromString("example.org")
	otherOrg   = spiffeid.RequireTrustDomainFromString("other.org")
)

func leaf(t *testing.T, f mtlstest.Files) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf
}

func TestIdentify(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	other := mtlstest.NewCA(t, "other.org")
	web := leaf(t, ca.SVID(t, "web", "/web"))
	state := func(certs ...*x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: certs}
	}
	tests := []struct {
		name    string
		trust   []spiffeid.TrustDomain
		state   *tls.ConnectionState
		want    string
		wantErr error
	}{
		{"valid", []spiffeid.TrustDomain{exampleOrg}, state(web), "spiffe://example.org/web", nil},
		{"one of several trust domains", []spiffeid.TrustDomain{otherOrg, exampleOrg}, state(web), "spiffe://example.org/web", nil},
		{"no state", []spiffeid.TrustDomain{exampleOrg}, nil, "", authn.ErrNoTLS},
		{"handshake not complete", []spiffeid.TrustDomain{exampleOrg}, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{web}}, "", authn.ErrNoTLS},
		{"no certificate", []spiffeid.TrustDomain{exampleOrg}, state(), "", authn.ErrNoCertificate},
		{"no URI SAN", []spiffeid.TrustDomain{exampleOrg}, state(leaf(t, ca.NoURISAN(t))), "", authn.ErrNoSPIFFEID},
		{"other trust domain", []spiffeid.TrustDomain{exampleOrg}, state(leaf(t, other.SVID(t, "web", "/web"))), "", authn.ErrUntrusted},
		{"no trust domains", nil, state(web), "", authn.ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := authn.New(tt.trust).Identify(tt.state)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.HasPrefix(err.Error(), "authn: ") {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if !id.IsZero() {
					t.Errorf("identity %s returned with an error", id)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tt.want {
				t.Errorf("identity %s, want %s", id, tt.want)
			}
		})
	}
}

// TestIdentifyHandshake runs a real mTLS handshake on loopback and
// identifies the caller from the server's connection state.
func TestIdentifyHandshake(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	web := ca.SVID(t, "web", "/ns/prod/web")
	src, err := mtls.NewFileSource(t.Context(), mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", mtls.ServerConfig(src, []spiffeid.TrustDomain{exampleOrg}, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	type result struct {
		id  gate.Identity
		err error
	}
	results := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			results <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			results <- result{err: err}
			return
		}
		cs := tc.ConnectionState()
		id, err := authn.New([]spiffeid.TrustDomain{exampleOrg}).Identify(&cs)
		results <- result{id, err}
		_, _ = io.Copy(tc, tc)
	}()

	pair, err := tls.LoadX509KeyPair(web.Cert, web.Key)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(ca.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), &tls.Config{
		RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.id.String() != "spiffe://example.org/ns/prod/web" || r.id.TrustDomain() != exampleOrg {
			t.Errorf("identity %s", r.id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server never identified the client")
	}
}

func TestIdentifyAllocs(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	cs := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf(t, ca.SVID(t, "web", "/web"))}}
	a := authn.New([]spiffeid.TrustDomain{otherOrg, exampleOrg})
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := a.Identify(cs); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%v allocations per Identify", allocs)
	if allocs > 1 {
		t.Errorf("%v allocations per Identify, want at most 1 (the ID's string)", allocs)
	}
}

func BenchmarkIdentify(b *testing.B) {
	ca := mtlstest.NewCA(b, "example.org")
	f := ca.SVID(b, "web", "/web")
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		b.Fatal(err)
	}
	cs := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{pair.Leaf}}
	a := authn.New([]spiffeid.TrustDomain{exampleOrg})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Identify(cs); err != nil {
			b.Fatal(err)
		}
	}
}
