package mtls_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
)

// TestServerRefusesWithAnExpiredSVID proves that a front whose own SVID
// has expired (and no new one arrived) does not present it: handshakes
// fail, even for a client that would accept any certificate, and the
// server's error says the SVID expired. It first serves while the SVID is
// valid.
func TestServerRefusesWithAnExpiredSVID(t *testing.T) {
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	if err := mtls.InitCA(dir, td); err != nil {
		t.Fatal(err)
	}
	cert, key, err := mtls.Issue(dir, mtls.IssueRequest{ID: spiffeid.RequireFromPath(td, "/storegate"), Out: "gw",
		NotBefore: time.Now(), TTL: 2 * time.Second, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	client, ckey, err := mtls.Issue(dir, mtls.IssueRequest{ID: spiffeid.RequireFromPath(td, "/app"), Out: "app", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	src := newFileSource(t, mtls.FileConfig{Cert: cert, Key: key, Bundle: dir + "/" + mtls.BundleFile}, nil)
	addr := serve(t, mtls.ServerConfig(src, trustDomains("example.org"), nil), nil)
	lax := &tls.Config{InsecureSkipVerify: true, Certificates: clientCert(t, client, ckey), MinVersion: tls.VersionTLS12}
	c, err := dial(addr, lax)
	if err != nil {
		conf, _ := mtls.ServerConfig(src, trustDomains("example.org"), nil).GetConfigForClient(&tls.ClientHelloInfo{})
		_, gerr := conf.GetCertificate(&tls.ClientHelloInfo{})
		t.Fatalf("with a valid SVID: %v (server: %v)", err, gerr)
	}
	c.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	expiry := svid.Certificates[0].NotAfter
	eventually(t, "the SVID to expire", func() bool { return time.Now().After(expiry.Add(100 * time.Millisecond)) })
	if c, err := dial(addr, lax); err == nil {
		c.Close()
		t.Fatal("the front still completed a handshake with an expired SVID")
	}
	cfg := mtls.ServerConfig(src, trustDomains("example.org"), nil)
	conf, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conf.GetCertificate(&tls.ClientHelloInfo{}); err == nil || !contains(err.Error(), "expired") {
		t.Errorf("GetCertificate with an expired SVID: %v, want an error saying it expired", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
