package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
)

// trustDomain is the SPIFFE trust domain every certificate of a run belongs to.
const trustDomain = "example.org"

// pki is the throwaway certificate authority of one run (testenv's dev CA
// in dir, trust domain example.org): its bundle and, per issued SVID,
// NAME.pem and NAME-key.pem.
type pki struct {
	*testenv.PKI
	pool *x509.CertPool
}

// svid names the files of one issued X.509-SVID.
type svid struct {
	cert, key string
}

// newPKI creates the CA in dir.
func newPKI(dir string) (*pki, error) {
	tp, err := testenv.NewPKI(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(tp.Bundle())
	if err != nil {
		return nil, err
	}
	p := &pki{PKI: tp, pool: x509.NewCertPool()}
	if !p.pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no CA certificate in %s", tp.Bundle())
	}
	return p, nil
}

// caFile is the CA certificate (the trust bundle) as a file.
func (p *pki) caFile() string { return p.Bundle() }

// issue mints an X.509-SVID for spiffe://example.org/NAME, valid for a day
// for both server and client authentication on localhost / 127.0.0.1, and
// writes it as NAME.pem and NAME-key.pem. It has no Common Name: etcd's
// gRPC proxy refuses a client certificate with one.
func (p *pki) issue(name string) (svid, error) {
	_, _, err := mtls.Issue(p.Dir, mtls.IssueRequest{ID: spiffeid.RequireFromPath(testenv.TrustDomain, "/"+name), Out: name,
		TTL: 24 * time.Hour, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		Modify: func(c *x509.Certificate) { c.Subject.CommonName = "" }})
	if err != nil {
		return svid{}, err
	}
	return svid{cert: p.Cert(name), key: p.Key(name)}, nil
}

// clientTLS is the TLS configuration of a bench client presenting s.
func (p *pki) clientTLS(s svid) (*tls.Config, error) {
	cert, err := mtls.LoadKeyPair(s.cert, s.key)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", s.cert, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      p.pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}
