package mtls_test

import (
	"crypto/tls"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

func TestClientConfig(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	other := mtlstest.NewCA(t, "other.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	web := ca.SVID(t, "web", "/web")
	otherGW := other.SVID(t, "gateway", "/gateway")
	server := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, nil)
	otherServer := newFileSource(t, mtls.FileConfig{Cert: otherGW.Cert, Key: otherGW.Key, Bundle: other.Bundle(),
		Federated: map[spiffeid.TrustDomain]string{ca.TrustDomain: ca.Bundle()}}, nil)
	client := newFileSource(t, mtls.FileConfig{Cert: web.Cert, Key: web.Key, Bundle: ca.Bundle()}, nil)

	addr := serve(t, mtls.ServerConfig(server, trustDomains("example.org"), nil), nil)
	otherAddr := serve(t, mtls.ServerConfig(otherServer, trustDomains("example.org"), nil), nil)

	tests := []struct {
		name      string
		addr      string
		authorize tlsconfig.Authorizer
		wantErr   string // empty: connects
	}{
		{"authorized ID", addr, tlsconfig.AuthorizeID(ca.ID("/gateway")), ""},
		{"member of trust domain", addr, tlsconfig.AuthorizeMemberOf(ca.TrustDomain), ""},
		{"other ID", addr, tlsconfig.AuthorizeID(ca.ID("/db")), "is not authorized"},
		{"no authorizer", addr, nil, "no authorizer"},
		{"server of a trust domain without bundle", otherAddr, tlsconfig.AuthorizeAny(), "no bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dial(tt.addr, mtls.ClientConfig(client, tt.authorize))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("connected, want refused")
			}
			if !strings.HasPrefix(err.Error(), "mtls: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want mtls: ...%s...", err, tt.wantErr)
			}
		})
	}
}

func TestFileClientConfig(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	web := ca.SVID(t, "web", "/web")
	server := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, nil)
	var mu sync.Mutex
	var seen []string
	addr := serve(t, mtls.ServerConfig(server, trustDomains("example.org"), nil), func(cs tls.ConnectionState) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, cs.PeerCertificates[0].URIs[0].String())
	})
	lastSeen := func() string {
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1]
	}

	cfg, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: web.Cert, Key: web.Key, CA: ca.Bundle(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := lastSeen(); got != "spiffe://example.org/web" {
		t.Fatalf("server saw %s", got)
	}

	// Replacing the files changes the certificate of the next handshake.
	ca.SVID(t, "web", "/web2")
	eventually(t, "the new client certificate", func() bool {
		c, err := dial(addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		return lastSeen() == "spiffe://example.org/web2"
	})
	if err := roundTrip(c, "established"); err != nil {
		t.Fatal(err)
	}

	// Host names are checked as usual.
	bad, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: web.Cert, Key: web.Key, CA: ca.Bundle(), ServerName: "evil.example"})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := dial(addr, bad); err == nil {
		c.Close()
		t.Fatal("connected to a server whose certificate does not name it")
	}
}

func TestFileClientConfigErrors(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	web := ca.SVID(t, "web", "/web")
	tests := []struct {
		name  string
		files mtls.ClientFiles
	}{
		{"missing CA", mtls.ClientFiles{CA: ca.Dir + "/missing.pem"}},
		{"CA is a key", mtls.ClientFiles{CA: web.Key}},
		{"cert without key", mtls.ClientFiles{Cert: web.Cert, CA: ca.Bundle()}},
		{"key of another cert", mtls.ClientFiles{Cert: web.Cert, Key: ca.Dir + "/" + mtls.CAKeyFile, CA: ca.Bundle()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mtls.FileClientConfig(tt.files)
			if err == nil || !strings.HasPrefix(err.Error(), "mtls: ") {
				t.Fatalf("error %v, want one prefixed mtls: ", err)
			}
			t.Log(err)
		})
	}
}

func TestStartWorkloadSource(t *testing.T) {
	unsetenv(t, "SPIFFE_ENDPOINT_SOCKET")
	for _, addr := range []string{"tcp://not-an-ip:8081", ""} {
		if src, err := mtls.StartWorkloadSource(t.Context(), addr, nil); err == nil {
			src.Close()
			t.Errorf("%q: no error", addr)
		} else if !strings.HasPrefix(err.Error(), "mtls: ") {
			t.Errorf("error %q lacks the package prefix", err)
		}
	}
	// An agent that is not there (yet): the source starts, says why it has
	// no SVID, and keeps trying.
	sock := "unix://" + t.TempDir() + "/agent.sock"
	src, err := mtls.StartWorkloadSource(t.Context(), sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.GetX509SVID(); err == nil || !strings.Contains(err.Error(), "no SVID yet from the workload API at "+sock) {
		t.Errorf("GetX509SVID before the agent answers: %v", err)
	}
	select {
	case <-src.Ready():
		t.Error("ready without an agent")
	default:
	}
}

// TestSourceClientConfigPeer: the upstream is named by a SPIFFE ID or a
// trust domain; anything else is a configuration error.
func TestSourceClientConfigPeer(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	src := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, nil)
	for _, ok := range []string{"spiffe://example.org/etcd", "spiffe://example.org", "example.org"} {
		if _, err := mtls.SourceClientConfig(src, ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "https://etcd:2379", "spiffe://"} {
		if _, err := mtls.SourceClientConfig(src, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
