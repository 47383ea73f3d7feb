package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// ClientConfig returns a config for dialing an upstream that presents an
// X.509-SVID: the client presents src's current SVID, and the server's
// certificate must chain to src's bundle for the server's trust domain and be
// allowed by authorize (tlsconfig.AuthorizeID, AuthorizeMemberOf, ...). A nil
// authorize refuses every server. Host names are not checked: the SPIFFE ID
// is the server's identity.
func ClientConfig(src Source, authorize tlsconfig.Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: tlsconfig.GetClientCertificate(src),
		// The chain is verified against the SPIFFE bundle in VerifyConnection,
		// which runs whatever InsecureSkipVerify says.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, chains, perr := verifyPeer("server", cs.PeerCertificates, src, nil, time.Now())
			if perr != nil {
				return perr
			}
			if authorize == nil {
				return refuse(reasonUnauthorized, "server %s: no authorizer configured", id)
			}
			if err := authorize(id, chains); err != nil {
				return refuse(reasonUnauthorized, "server %s is not authorized: %w", id, err)
			}
			return nil
		},
	}
}

// ClientFiles are the conventional (non-SPIFFE) PEM files for dialing an
// upstream such as etcd whose server certificate is an ordinary one.
type ClientFiles struct {
	// Cert and Key are the client certificate chain and its private key.
	// Both empty means no client certificate (e.g. etcd user/password auth).
	// They are re-read when they change on disk, before a handshake.
	Cert, Key string
	// CA holds the roots that sign the server's certificate; empty means the
	// system roots.
	CA string
	// ServerName overrides the name checked against the server's
	// certificate. Leave it empty for gRPC, which uses each endpoint's host.
	ServerName string
}

// FileClientConfig returns a client config from f, with normal host name
// verification. It fails if a file cannot be read or parsed now; a later
// broken replacement of Cert or Key keeps the last good pair.
func FileClientConfig(f ClientFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("mtls: upstream CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mtls: upstream CA %s: no PEM certificates", f.CA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.Cert == "" && f.Key == "":
	case f.Cert == "" || f.Key == "":
		return nil, errors.New("mtls: upstream client certificate needs both cert and key")
	default:
		kp := &keyPair{cert: f.Cert, key: f.Key}
		if err := kp.reload(); err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = kp.get
	}
	return cfg, nil
}

// keyPair is a certificate and key on disk, re-read when either file's size
// or modification time changes.
type keyPair struct {
	cert, key string

	mu      sync.Mutex
	current *tls.Certificate
	stamp   [2]fileStamp
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: fi.Size(), mod: fi.ModTime()}, nil
}

func (kp *keyPair) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	_ = kp.reloadLocked() // on error the last good pair stays
	return kp.current, nil
}

func (kp *keyPair) reload() error {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	return kp.reloadLocked()
}

func (kp *keyPair) reloadLocked() error {
	var stamp [2]fileStamp
	var err error
	if stamp[0], err = stampOf(kp.cert); err != nil {
		return fmt.Errorf("mtls: upstream client certificate: %w", err)
	}
	if stamp[1], err = stampOf(kp.key); err != nil {
		return fmt.Errorf("mtls: upstream client key: %w", err)
	}
	if kp.current != nil && stamp == kp.stamp {
		return nil
	}
	pair, err := LoadKeyPair(kp.cert, kp.key)
	if err != nil {
		return err
	}
	kp.current, kp.stamp = &pair, stamp
	return nil
}

// SourceClientConfig is the client side of an upstream that trusts the
// gateway's own trust domain: the gateway presents its current SVID (from
// src, so rotations apply to the next handshake) and accepts the upstream
// when its SVID verifies against src's bundles and names peer — a SPIFFE ID,
// or a trust domain (spiffe://example.org) to accept any of its members.
func SourceClientConfig(src Source, peer string) (*tls.Config, error) {
	var authz tlsconfig.Authorizer
	if id, err := spiffeid.FromString(peer); err == nil && id.Path() != "" {
		authz = tlsconfig.AuthorizeID(id)
	} else if td, err := spiffeid.TrustDomainFromString(peer); err == nil {
		authz = tlsconfig.AuthorizeMemberOf(td)
	} else {
		return nil, fmt.Errorf("mtls: %q is neither a SPIFFE ID nor a trust domain", peer)
	}
	return ClientConfig(src, authz), nil
}
