// Package mtlstest mints development-CA certificates for tests: valid
// X.509-SVIDs for loopback servers and clients, and fixtures named after
// their defect (no URI SAN, expired, a leaf with the CA flag). Every file is
// written to the test's temporary directory.
package mtlstest

import (
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
)

// CA is a development CA in a temporary directory.
type CA struct {
	Dir         string
	TrustDomain spiffeid.TrustDomain
}

// Files are a certificate and its key on disk.
type Files struct {
	Cert, Key string
}

// NewCA creates a CA for the trust domain td (e.g. "example.org").
func NewCA(tb testing.TB, td string) *CA {
	tb.Helper()
	ca := &CA{Dir: tb.TempDir(), TrustDomain: spiffeid.RequireTrustDomainFromString(td)}
	if err := mtls.InitCA(ca.Dir, ca.TrustDomain); err != nil {
		tb.Fatal(err)
	}
	return ca
}

// Bundle is the path of the CA's trust bundle.
func (ca *CA) Bundle() string { return filepath.Join(ca.Dir, mtls.BundleFile) }

// ID is the SPIFFE ID with path in the CA's trust domain; it panics if
// path is not a valid SPIFFE ID path.
func (ca *CA) ID(path string) spiffeid.ID {
	return spiffeid.RequireFromPath(ca.TrustDomain, path)
}

// Issue mints req, failing the test on error.
func (ca *CA) Issue(tb testing.TB, req mtls.IssueRequest) Files {
	tb.Helper()
	cert, key, err := mtls.Issue(ca.Dir, req)
	if err != nil {
		tb.Fatal(err)
	}
	return Files{Cert: cert, Key: key}
}

// SVID issues a valid X.509-SVID for the ID with path, written to
// <name>.pem and <name>-key.pem, with the loopback SANs (localhost,
// 127.0.0.1, ::1) so it also serves a loopback listener.
func (ca *CA) SVID(tb testing.TB, name, path string) Files {
	tb.Helper()
	return ca.Issue(tb, Loopback(mtls.IssueRequest{ID: ca.ID(path), Out: name}))
}

// NoURISAN issues no-uri-san.pem: a certificate with the loopback SANs but
// no SPIFFE ID, so not an X.509-SVID.
func (ca *CA) NoURISAN(tb testing.TB) Files {
	tb.Helper()
	return ca.Issue(tb, Loopback(mtls.IssueRequest{ID: ca.ID("/no-uri-san"), Out: "no-uri-san",
		Modify: func(c *x509.Certificate) { c.URIs = nil }}))
}

// Expired issues expired.pem: an X.509-SVID for path that expired an hour ago.
func (ca *CA) Expired(tb testing.TB, path string) Files {
	tb.Helper()
	return ca.Issue(tb, Loopback(mtls.IssueRequest{ID: ca.ID(path), Out: "expired",
		NotBefore: time.Now().Add(-2 * time.Hour), TTL: time.Hour}))
}

// LeafCATrue issues leaf-ca-true.pem: an otherwise valid X.509-SVID for path
// whose leaf has the CA flag, which the SPIFFE spec forbids.
func (ca *CA) LeafCATrue(tb testing.TB, path string) Files {
	tb.Helper()
	return ca.Issue(tb, Loopback(mtls.IssueRequest{ID: ca.ID(path), Out: "leaf-ca-true",
		Modify: func(c *x509.Certificate) { c.IsCA = true }}))
}

// Loopback adds the loopback SANs to req.
func Loopback(req mtls.IssueRequest) mtls.IssueRequest {
	req.DNS = append(req.DNS, "localhost")
	req.IPs = append(req.IPs, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	return req
}
