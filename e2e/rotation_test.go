package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
)

// servedSerial handshakes with the gateway as caller who and returns the
// serial number of the certificate the gateway presented.
func servedSerial(t *testing.T, p *pki, addr, who string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.path(who+".pem"), p.path(who+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(mustRead(t, p.bundle())))
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func fileSerial(t *testing.T, path string) string {
	t.Helper()
	b, _ := pem.Decode([]byte(mustRead(t, path)))
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// TestSVIDRotation replaces the gateway's SVID files under a running
// gateway: new handshakes get the new certificate, and an open watch keeps
// delivering events.
func TestSVIDRotation(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{})
	c := ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}

	before := servedSerial(t, p, gw.addr, "admin")
	if before != fileSerial(t, p.path("gateway.pem")) {
		t.Fatal("the gateway does not serve its SVID file")
	}
	o := mustRun(t, c, "", "put", "/rot/0", "before", "-w", "json")
	w := c.start(t, "watch", "/rot/", "--prefix", "--rev="+revRe.FindStringSubmatch(o)[1])
	w.waitFor(t, "before")

	// Rotate: the dev CA replaces both files atomically.
	if _, _, err := mtls.Issue(p.dir, mtls.IssueRequest{ID: spiffeid.RequireFromPath(trustDomain, "/storegate"),
		Out: "gateway", TTL: time.Hour, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
		t.Fatal(err)
	}
	after := fileSerial(t, p.path("gateway.pem"))
	if after == before {
		t.Fatal("reissued certificate has the same serial")
	}
	waitFor(t, 20*time.Second, func() bool { return servedSerial(t, p, gw.addr, "admin") == after })

	mustRun(t, c, "", "put", "/rot/1", "after")
	w.waitFor(t, "after")
	if strings.Contains(w.errb.String(), "canceled") {
		t.Errorf("watch broke across rotation: %s", w.errb.String())
	}
}
