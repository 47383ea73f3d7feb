package mtls_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

func TestNewFileSourceErrors(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	web := ca.SVID(t, "web", "/web")
	noURI := ca.NoURISAN(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := write("empty.pem", "")
	garbage := write("garbage.pem", "not PEM at all")
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		cfg  mtls.FileConfig
	}{
		{"no files", mtls.FileConfig{}},
		{"missing cert", mtls.FileConfig{Cert: missing, Key: gw.Key, Bundle: ca.Bundle()}},
		{"key of another cert", mtls.FileConfig{Cert: gw.Cert, Key: web.Key, Bundle: ca.Bundle()}},
		{"cert without URI SAN", mtls.FileConfig{Cert: noURI.Cert, Key: noURI.Key, Bundle: ca.Bundle()}},
		{"garbage cert", mtls.FileConfig{Cert: garbage, Key: gw.Key, Bundle: ca.Bundle()}},
		{"empty key", mtls.FileConfig{Cert: gw.Cert, Key: empty, Bundle: ca.Bundle()}},
		{"empty bundle", mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: empty}},
		{"garbage bundle", mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: garbage}},
		{"missing federated bundle", mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle(),
			Federated: map[spiffeid.TrustDomain]string{spiffeid.RequireTrustDomainFromString("other.org"): missing}}},
		{"federated bundle for own trust domain", mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle(),
			Federated: map[spiffeid.TrustDomain]string{ca.TrustDomain: ca.Bundle()}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := mtls.NewFileSource(context.Background(), tt.cfg, nil)
			if err == nil {
				src.Close()
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "mtls: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			t.Log(err)
		})
	}
}

func TestFileSourceFederated(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	other := mtlstest.NewCA(t, "other.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	src := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle(),
		Federated: map[spiffeid.TrustDomain]string{other.TrustDomain: other.Bundle()}}, nil)
	addr := serve(t, mtls.ServerConfig(src, trustDomains("example.org", "other.org"), nil), nil)
	for _, client := range []mtlstest.Files{ca.SVID(t, "web", "/web"), other.SVID(t, "web", "/web")} {
		c, err := dial(addr, &tls.Config{RootCAs: roots(t, ca.Bundle()), ServerName: "localhost",
			Certificates: clientCert(t, client.Cert, client.Key)})
		if err != nil {
			t.Fatalf("%s refused: %v", client.Cert, err)
		}
		c.Close()
	}
}

// TestFileSourceRotation replaces the server's files the safe way (new
// files renamed over the old) and the broken way, and checks what new and
// established connections see.
func TestFileSourceRotation(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	imposter := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	web := ca.SVID(t, "web", "/web")
	rec := &logRecorder{}
	log := slog.New(rec)
	src := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, log)
	addr := serve(t, mtls.ServerConfig(src, trustDomains("example.org"), log), nil)

	pool := roots(t, ca.Bundle())
	clientCfg := func(f mtlstest.Files) *tls.Config {
		return &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: clientCert(t, f.Cert, f.Key)}
	}
	serverSerial := func(c *tls.Conn) *big.Int { return c.ConnectionState().PeerCertificates[0].SerialNumber }
	// newSerial dials and returns the serial of the certificate the server presented.
	newSerial := func() *big.Int {
		c, err := dial(addr, clientCfg(web))
		if err != nil {
			t.Fatalf("new connection refused: %v", err)
		}
		defer c.Close()
		return serverSerial(c)
	}
	waitSerial := func(what string, want *big.Int) {
		t.Helper()
		eventually(t, what, func() bool { return newSerial().Cmp(want) == 0 })
	}
	replace := func(from, to string) {
		t.Helper()
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	writeRename := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path+".new", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		replace(path+".new", path)
	}

	established, err := dial(addr, clientCfg(web))
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	first := serverSerial(established)

	// Rotate: new files, renamed over the old ones.
	next := ca.SVID(t, "gateway-next", "/gateway")
	nextSerial := leafSerial(t, next.Cert)
	replace(next.Key, gw.Key)
	replace(next.Cert, gw.Cert)
	waitSerial("new handshakes to get the rotated SVID", nextSerial)
	if err := roundTrip(established, "still there after rotation"); err != nil {
		t.Fatalf("established connection broken by rotation: %v", err)
	}
	if got := serverSerial(established); got.Cmp(first) != 0 {
		t.Errorf("established connection's server certificate changed")
	}

	// A broken replacement keeps the last good SVID.
	writeRename(gw.Cert, "-----BEGIN CERTIFICATE-----\ntruncated")
	eventually(t, "the broken SVID to be reported", func() bool {
		_, ok := rec.find("mtls: keeping last good SVID", nil)
		return ok
	})
	if got := newSerial(); got.Cmp(nextSerial) != 0 {
		t.Errorf("after a broken replacement the server presents serial %v, want the last good %v", got, nextSerial)
	}
	if err := roundTrip(established, "still there after a broken file"); err != nil {
		t.Fatal(err)
	}

	// Issue itself replaces files by rename, so re-issuing in place recovers.
	again := ca.SVID(t, "gateway", "/gateway")
	waitSerial("the re-issued SVID", leafSerial(t, again.Cert))

	// A broken bundle keeps the last good one: clients are still accepted.
	bundle, err := os.ReadFile(ca.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	writeRename(ca.Bundle(), "")
	eventually(t, "the broken bundle to be reported", func() bool {
		_, ok := rec.find("mtls: keeping last good bundle", nil)
		return ok
	})
	newSerial()

	// A new bundle applies to new handshakes: add the imposter CA to it.
	impostor := imposter.SVID(t, "web", "/web")
	if _, err := dial(addr, clientCfg(impostor)); err == nil {
		t.Fatal("client of a CA outside the bundle accepted")
	}
	imposterCA, err := os.ReadFile(imposter.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	writeRename(ca.Bundle(), string(slices.Concat(bundle, imposterCA)))
	eventually(t, "a client of the added CA to be accepted", func() bool {
		c, err := dial(addr, clientCfg(impostor))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err := roundTrip(established, "still there after bundle rotation"); err != nil {
		t.Fatal(err)
	}
}

func leafSerial(t *testing.T, path string) *big.Int {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".pem")+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}
