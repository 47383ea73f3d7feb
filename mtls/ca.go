package mtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Files of a development CA directory.
const (
	CACertFile = "ca.pem"     // the CA certificate
	CAKeyFile  = "ca-key.pem" // its PKCS#8 private key, mode 0600
	BundleFile = "bundle.pem" // the trust bundle: the CA certificate again
)

// Validity of what the development CA mints.
const (
	CATTL      = 10 * 365 * 24 * time.Hour
	DefaultTTL = 30 * 24 * time.Hour
	// backdate covers clock skew between the minting and the verifying host.
	backdate = 5 * time.Minute
)

// ErrCAExists is returned by InitCA when dir already holds a CA.
var ErrCAExists = errors.New("mtls: CA already exists")

// CAOption adjusts InitCA.
type CAOption func(*caOptions)

type caOptions struct{ overwrite bool }

// WithOverwrite lets InitCA replace an existing CA. Every certificate the
// old CA issued stops being trusted.
func WithOverwrite() CAOption { return func(o *caOptions) { o.overwrite = true } }

// InitCA creates a development CA for td in dir (created if missing):
// dir/ca.pem, dir/ca-key.pem and dir/bundle.pem. The CA is a self-signed
// ECDSA P-256 certificate whose URI SAN is spiffe://<td>. It refuses with
// ErrCAExists when dir already holds a CA, unless WithOverwrite is given.
func InitCA(dir string, td spiffeid.TrustDomain, opts ...CAOption) error {
	var o caOptions
	for _, opt := range opts {
		opt(&o)
	}
	if td.IsZero() {
		return errors.New("mtls: init CA: trust domain required")
	}
	if !o.overwrite {
		for _, f := range []string{CACertFile, CAKeyFile} {
			if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
				return fmt.Errorf("%w in %s (%s)", ErrCAExists, dir, f)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mtls: init CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("mtls: init CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"storegate"}, CommonName: "storegate dev CA " + td.Name()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CATTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("mtls: init CA: %w", err)
	}
	certPEM := pemCert(der)
	keyPEM, err := pemKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, BundleFile), certPEM, 0o644)
}

// IssueRequest describes a certificate for Issue to mint.
type IssueRequest struct {
	// ID is the SPIFFE ID: the certificate's only URI SAN. It must be in the
	// CA's trust domain and have a path.
	ID spiffeid.ID
	// DNS and IPs are further SANs, so that clients which check host names
	// (etcdctl, gRPC, Go's crypto/tls) accept a server using the file.
	DNS []string
	IPs []net.IP
	// CommonName is the subject CN; by default the ID's path without its
	// leading slash. etcd takes the CN as the user name when its client
	// certificate auth is on.
	CommonName string
	// TTL is the validity, DefaultTTL if zero, capped by the CA's own.
	TTL time.Duration
	// NotBefore starts the validity; by default now (less a few minutes for
	// clock skew). Tests set it in the past to mint expired certificates.
	NotBefore time.Time
	// Out names the files: dir/<Out>.pem and dir/<Out>-key.pem. Required; a
	// plain file name, not "ca" or "bundle".
	Out string
	// Modify, if set, edits the certificate template just before signing.
	// It exists for tests that need defective certificates (no URI SAN, a
	// leaf with the CA flag...); the result is not checked.
	Modify func(*x509.Certificate)
}

// Issue mints an X.509-SVID signed by the CA in dir: ECDSA P-256, exactly one
// URI SAN (req.ID), key usage digitalSignature, not a CA, extended key usage
// serverAuth and clientAuth (the same files serve a listener and a client
// such as etcdctl --cert/--key, with --cacert bundle.pem). The files hold the
// leaf alone, and the PKCS#8 key with mode 0600; existing files are replaced
// atomically, so a FileSource watching them sees one change.
func Issue(dir string, req IssueRequest) (certPath, keyPath string, err error) {
	if err := req.check(); err != nil {
		return "", "", err
	}
	caCert, caKey, err := loadCA(dir)
	if err != nil {
		return "", "", err
	}
	if caTD := caCert.URIs[0].Host; caTD != req.ID.TrustDomain().Name() {
		return "", "", fmt.Errorf("mtls: issue %s: the CA in %s is for trust domain %q", req.ID, dir, caTD)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("mtls: issue: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	tmpl := req.template(serial, caCert.NotAfter)
	if req.Modify != nil {
		req.Modify(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return "", "", fmt.Errorf("mtls: issue %s: %w", req.ID, err)
	}
	keyPEM, err := pemKey(key)
	if err != nil {
		return "", "", err
	}
	certPath = filepath.Join(dir, req.Out+".pem")
	keyPath = filepath.Join(dir, req.Out+"-key.pem")
	// Key first: a watcher that reads in between sees a mismatch and keeps
	// the last good pair, then sees the new certificate.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, pemCert(der), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

func (req *IssueRequest) check() error {
	switch {
	case req.ID.IsZero():
		return errors.New("mtls: issue: SPIFFE ID required")
	case req.ID.Path() == "":
		return fmt.Errorf("mtls: issue %s: the SPIFFE ID of a workload needs a path", req.ID)
	case req.Out == "" || req.Out != filepath.Base(req.Out) || strings.HasPrefix(req.Out, "."):
		return fmt.Errorf("mtls: issue %s: output name %q must be a plain file name", req.ID, req.Out)
	case req.Out == "ca" || req.Out == "bundle":
		return fmt.Errorf("mtls: issue %s: output name %q would overwrite the CA", req.ID, req.Out)
	case req.TTL < 0:
		return fmt.Errorf("mtls: issue %s: negative TTL", req.ID)
	}
	return nil
}

func (req *IssueRequest) template(serial *big.Int, caNotAfter time.Time) *x509.Certificate {
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-backdate)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	notAfter := notBefore.Add(ttl)
	if notAfter.After(caNotAfter) {
		notAfter = caNotAfter
	}
	cn := req.CommonName
	if cn == "" {
		cn = strings.TrimPrefix(req.ID.Path(), "/")
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"storegate"}, CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{req.ID.URL()},
		DNSNames:              req.DNS,
		IPAddresses:           req.IPs,
	}
}

func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: CA: %w", err)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: CA %s: %w", filepath.Join(dir, CACertFile), err)
	}
	if !cert.IsCA || len(cert.URIs) != 1 {
		return nil, nil, fmt.Errorf("mtls: CA %s: not a SPIFFE CA certificate", filepath.Join(dir, CACertFile))
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: CA key: %w", err)
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: CA key %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	return cert, key, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("mtls: serial number: %w", err)
	}
	return s, nil
}
