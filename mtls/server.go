package mtls

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// ServerConfig returns the mutual-TLS config every front listens with.
//
// The server presents src's current SVID on every handshake (so a rotated
// SVID applies to new connections and established ones are not dropped) and
// offers ALPN h2 and http/1.1. A client must present an X.509-SVID from one of
// the trust domains in trust that chains to src's bundle for that trust
// domain; an empty trust list refuses every client. Each refusal is logged
// once on log at Warn with the client's address, a short reason ("no
// certificate", "no SPIFFE ID", "untrusted trust domain", "expired", "not yet
// valid", "no trust bundle", "unknown authority", "invalid SVID") and the
// detail; the client sees a bad_certificate alert.
//
// The chain is verified in VerifyConnection, which also runs on resumed
// sessions, against the bundle current at that moment. authn.Identify relies
// on this config having verified the chain.
func ServerConfig(src Source, trust []spiffeid.TrustDomain, log *slog.Logger) *tls.Config {
	if log == nil {
		log = slog.Default()
	}
	s := &server{src: src, getCert: unexpired(src, tlsconfig.GetCertificate(src)), trust: slices.Clone(trust), log: log}
	if s.trust == nil {
		s.trust = []spiffeid.TrustDomain{} // nil would mean "any" to verifyPeer
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: s.configForClient,
	}
}

type server struct {
	src     Source
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	trust   []spiffeid.TrustDomain
	log     *slog.Logger
}

// configForClient builds the config for one handshake, so that its
// VerifyConnection knows the client's address for the refusal log.
func (s *server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	remote := "unknown"
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr().String()
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		// Request, not require: a client without a certificate then reaches
		// VerifyConnection, so its refusal is logged like any other.
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: s.getCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return s.verify(remote, cs)
		},
	}, nil
}

func (s *server) verify(remote string, cs tls.ConnectionState) error {
	_, _, perr := verifyPeer("client", cs.PeerCertificates, s.src, s.trust, time.Now())
	if perr != nil {
		s.log.Warn("mtls: refused client", "remote", remote, "reason", perr.reason, "err", perr.err.Error())
		return perr
	}
	return nil
}

// unexpired presents src's SVID only while it is valid: once it has
// expired (a Workload API gone for longer than the SVID lives, files not
// renewed) handshakes fail with an error saying so, instead of presenting a
// certificate a lax client might accept. A new SVID is served as soon as
// the source has one; /readyz reports the expiry meanwhile.
func unexpired(src Source, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		svid, err := src.GetX509SVID()
		if err != nil {
			return nil, fmt.Errorf("mtls: no SVID to serve with: %w", err)
		}
		if len(svid.Certificates) > 0 {
			if na := svid.Certificates[0].NotAfter; time.Now().After(na) {
				return nil, fmt.Errorf("mtls: the gateway's SVID %s expired at %s: not serving until a new one arrives", svid.ID, na.UTC().Format(time.RFC3339))
			}
		}
		return getCert(hello)
	}
}
