package testenv

import (
	"net"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
)

// TrustDomain is the trust domain of every test PKI.
var TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// PKI is a dev CA in Dir with SVIDs: "gateway" (spiffe://example.org/storegate)
// and "etcd" (/etcd) for servers on loopback, and one per caller (/<name>).
type PKI struct{ Dir string }

// NewPKI makes a CA in dir and issues the gateway's, etcd's and the
// callers' SVIDs.
func NewPKI(dir string, callers ...string) (*PKI, error) {
	p := &PKI{Dir: dir}
	if err := mtls.InitCA(dir, TrustDomain); err != nil {
		return nil, err
	}
	if err := p.IssueAll(time.Hour, callers...); err != nil {
		return nil, err
	}
	return p, nil
}

// Issue writes <name>.pem and <name>-key.pem for spiffe://example.org<path>;
// a server SVID also names localhost, 127.0.0.1 and ::1.
func (p *PKI) Issue(name, path string, server bool, ttl time.Duration) error {
	req := mtls.IssueRequest{ID: spiffeid.RequireFromPath(TrustDomain, path), Out: name, TTL: ttl}
	if server {
		req.DNS = []string{"localhost"}
		req.IPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	_, _, err := mtls.Issue(p.Dir, req)
	return err
}

// Path is a file in the PKI's directory.
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// Cert and Key are name's SVID files.
func (p *PKI) Cert(name string) string { return p.Path(name + ".pem") }
func (p *PKI) Key(name string) string  { return p.Path(name + "-key.pem") }

// Bundle is the CA bundle file.
func (p *PKI) Bundle() string { return p.Path(mtls.BundleFile) }
