package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// trustDomain is the SPIFFE trust domain every certificate of a run belongs to.
const trustDomain = "example.org"

// pki is the throwaway certificate authority of one run. Its files live in
// dir: ca.pem (also written as bundle.pem, the trust bundle the gateway
// reads) and, per issued SVID, NAME.pem and NAME-key.pem.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
}

// svid names the files of one issued X.509-SVID.
type svid struct {
	cert, key string
}

// newPKI creates a CA whose certificate carries the trust domain's SPIFFE ID
// (spiffe://example.org) and writes it to dir. The bench makes its own CA so
// that it depends on no gateway subcommand.
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"storegate bench"}, CommonName: "storegate bench CA"},
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &pki{dir: dir, caCert: cert, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(cert)
	for _, name := range []string{"ca.pem", "bundle.pem"} {
		if err := writePEM(filepath.Join(dir, name), "CERTIFICATE", der, 0o644); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// caFile is the CA certificate (the trust bundle) as a file.
func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// issue mints an X.509-SVID for spiffe://example.org/NAME, valid for both
// server and client authentication on localhost / 127.0.0.1, and writes it
// as NAME.pem and NAME-key.pem.
func (p *pki) issue(name string) (svid, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return svid{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"storegate bench"}},
		URIs:         []*url.URL{{Scheme: "spiffe", Host: trustDomain, Path: "/" + name}},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return svid{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return svid{}, err
	}
	s := svid{cert: filepath.Join(p.dir, name+".pem"), key: filepath.Join(p.dir, name+"-key.pem")}
	if err := writePEM(s.cert, "CERTIFICATE", der, 0o644); err != nil {
		return svid{}, err
	}
	if err := writePEM(s.key, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return svid{}, err
	}
	return s, nil
}

// clientTLS is the TLS configuration of a bench client presenting s.
func (p *pki) clientTLS(s svid) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(s.cert, s.key)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", s.cert, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      p.pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
