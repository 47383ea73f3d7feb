package mtls_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/storegate/storegate/mtls"
)

var exampleOrg = spiffeid.RequireTrustDomainFromString("example.org")

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: more than one PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

func TestInitCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if err := mtls.InitCA(dir, exampleOrg); err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(dir, mtls.CAKeyFile), 0o600)
	ca := readCert(t, filepath.Join(dir, mtls.CACertFile))
	switch {
	case !ca.IsCA || !ca.BasicConstraintsValid:
		t.Error("CA certificate is not a CA")
	case ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
		t.Errorf("CA key usage = %v, want keyCertSign|cRLSign", ca.KeyUsage)
	case len(ca.URIs) != 1 || ca.URIs[0].String() != "spiffe://example.org":
		t.Errorf("CA URI SANs = %v, want spiffe://example.org", ca.URIs)
	case ca.PublicKeyAlgorithm != x509.ECDSA || ca.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256():
		t.Error("CA key is not ECDSA P-256")
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, mtls.CACertFile))
	bundlePEM, _ := os.ReadFile(filepath.Join(dir, mtls.BundleFile))
	if !bytes.Equal(certPEM, bundlePEM) {
		t.Error("bundle.pem differs from ca.pem")
	}
	if _, err := x509bundle.Load(exampleOrg, filepath.Join(dir, mtls.BundleFile)); err != nil {
		t.Error(err)
	}

	err := mtls.InitCA(dir, exampleOrg)
	if !errors.Is(err, mtls.ErrCAExists) {
		t.Fatalf("second InitCA: %v, want ErrCAExists", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, mtls.CACertFile)); !bytes.Equal(after, certPEM) {
		t.Fatal("refused InitCA changed the CA")
	}
	if err := mtls.InitCA(dir, exampleOrg, mtls.WithOverwrite()); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, mtls.CACertFile)); bytes.Equal(after, certPEM) {
		t.Fatal("InitCA WithOverwrite kept the old CA")
	}
}

func TestIssue(t *testing.T) {
	dir := t.TempDir()
	if err := mtls.InitCA(dir, exampleOrg); err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(exampleOrg, "/ns/prod/gateway")
	certPath, keyPath, err := mtls.Issue(dir, mtls.IssueRequest{
		ID:  id,
		DNS: []string{"localhost", "gw.example.test"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Out: "gateway",
	})
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, "gateway.pem") || keyPath != filepath.Join(dir, "gateway-key.pem") {
		t.Errorf("paths = %s, %s", certPath, keyPath)
	}
	checkMode(t, keyPath, 0o600)
	keyPEM, _ := os.ReadFile(keyPath)
	if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "PRIVATE KEY" {
		t.Error("key is not a PEM PKCS#8 private key")
	}

	leaf := readCert(t, certPath)
	switch {
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String():
		t.Errorf("URI SANs = %v, want exactly %s", leaf.URIs, id)
	case leaf.IsCA || !leaf.BasicConstraintsValid:
		t.Error("leaf is a CA")
	case leaf.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("key usage = %v, want digitalSignature", leaf.KeyUsage)
	case !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}):
		t.Errorf("extended key usage = %v, want serverAuth, clientAuth", leaf.ExtKeyUsage)
	case leaf.Subject.CommonName != "ns/prod/gateway":
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	case leaf.NotAfter.Sub(leaf.NotBefore) < mtls.DefaultTTL || leaf.NotAfter.After(time.Now().Add(mtls.DefaultTTL)):
		t.Errorf("validity %v – %v, want the default TTL", leaf.NotBefore, leaf.NotAfter)
	}

	// Go's ordinary verification, as gRPC and etcdctl do it: host names and IPs.
	pool := roots(t, filepath.Join(dir, mtls.BundleFile))
	for _, host := range []string{"localhost", "gw.example.test", "127.0.0.1", "::1", "evil.example", "10.0.0.1"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}})
			wantOK := !strings.HasPrefix(host, "evil") && host != "10.0.0.1"
			if (err == nil) != wantOK {
				t.Errorf("verify for %s (usage %v): %v, want ok=%v", host, usage, err, wantOK)
			}
		}
	}
	if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
		t.Errorf("crypto/tls cannot load the pair: %v", err)
	}

	// The SPIFFE view.
	svid, err := x509svid.Load(certPath, keyPath)
	if err != nil {
		t.Fatalf("not an X.509-SVID: %v", err)
	}
	bundle, err := x509bundle.Load(exampleOrg, filepath.Join(dir, mtls.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil || got != id {
		t.Errorf("x509svid.Verify = %v, %v; want %s", got, err, id)
	}
}

func TestIssueValidity(t *testing.T) {
	dir := t.TempDir()
	if err := mtls.InitCA(dir, exampleOrg); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, filepath.Join(dir, mtls.CACertFile))
	id := spiffeid.RequireFromPath(exampleOrg, "/web")
	past := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	tests := []struct {
		name                string
		req                 mtls.IssueRequest
		notBefore, notAfter time.Time // zero: not checked
	}{
		{"expired", mtls.IssueRequest{ID: id, Out: "expired", NotBefore: past, TTL: time.Hour}, past, past.Add(time.Hour)},
		{"capped by the CA", mtls.IssueRequest{ID: id, Out: "long", TTL: 100 * 365 * 24 * time.Hour}, time.Time{}, ca.NotAfter},
		{"common name", mtls.IssueRequest{ID: id, Out: "root", CommonName: "root"}, time.Time{}, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPath, _, err := mtls.Issue(dir, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			leaf := readCert(t, certPath)
			if !tt.notBefore.IsZero() && !leaf.NotBefore.Equal(tt.notBefore) {
				t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, tt.notBefore)
			}
			if !tt.notAfter.IsZero() && !leaf.NotAfter.Equal(tt.notAfter) {
				t.Errorf("NotAfter = %v, want %v", leaf.NotAfter, tt.notAfter)
			}
			if tt.req.CommonName != "" && leaf.Subject.CommonName != tt.req.CommonName {
				t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, tt.req.CommonName)
			}
		})
	}
}

func TestIssueErrors(t *testing.T) {
	dir := t.TempDir()
	if err := mtls.InitCA(dir, exampleOrg); err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(exampleOrg, "/web")
	tests := []struct {
		name string
		dir  string
		req  mtls.IssueRequest
	}{
		{"no ID", dir, mtls.IssueRequest{Out: "x"}},
		{"ID without path", dir, mtls.IssueRequest{ID: exampleOrg.ID(), Out: "x"}},
		{"ID of another trust domain", dir, mtls.IssueRequest{ID: spiffeid.RequireFromString("spiffe://other.org/web"), Out: "x"}},
		{"no output name", dir, mtls.IssueRequest{ID: id}},
		{"output path", dir, mtls.IssueRequest{ID: id, Out: "../x"}},
		{"output over the CA", dir, mtls.IssueRequest{ID: id, Out: "ca"}},
		{"output over the bundle", dir, mtls.IssueRequest{ID: id, Out: "bundle"}},
		{"negative TTL", dir, mtls.IssueRequest{ID: id, Out: "x", TTL: -time.Hour}},
		{"no CA", t.TempDir(), mtls.IssueRequest{ID: id, Out: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := mtls.Issue(tt.dir, tt.req)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "mtls: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			t.Log(err)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "x.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused request wrote files")
	}
}
