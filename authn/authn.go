// Package authn turns a verified TLS connection into the caller's
// gate.Identity: the SPIFFE ID of the client's X.509-SVID, accepted only from
// a configured trust domain. It is the cheap per-request step; the chain
// itself is verified once per connection by the handshake (mtls.ServerConfig).
package authn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/storegate/storegate/gate"
)

// Errors Identify returns, possibly wrapped with detail.
var (
	ErrNoTLS         = errors.New("authn: not a completed TLS connection")
	ErrNoCertificate = errors.New("authn: no client certificate")
	ErrNoSPIFFEID    = errors.New("authn: client certificate has no SPIFFE ID")
	ErrUntrusted     = errors.New("authn: trust domain not accepted")
)

// Authenticator identifies callers from the trust domains it was given.
type Authenticator struct {
	trust []spiffeid.TrustDomain
}

// New returns an Authenticator accepting callers from the trust domains in
// trust; with none, it accepts no one.
func New(trust []spiffeid.TrustDomain) *Authenticator {
	return &Authenticator{trust: slices.Clone(trust)}
}

// Identify returns the caller of a connection: the SPIFFE ID of its leaf
// certificate. It does not verify the chain: state must come from a
// handshake that did (mtls.ServerConfig). Errors are prefixed "authn: " and
// wrap one of the Err values above.
func (a *Authenticator) Identify(state *tls.ConnectionState) (gate.Identity, error) {
	if state == nil || !state.HandshakeComplete {
		return gate.Identity{}, ErrNoTLS
	}
	if len(state.PeerCertificates) == 0 {
		return gate.Identity{}, ErrNoCertificate
	}
	id, err := x509svid.IDFromCert(state.PeerCertificates[0])
	if err != nil {
		return gate.Identity{}, fmt.Errorf("%w: %w", ErrNoSPIFFEID, err)
	}
	if !slices.Contains(a.trust, id.TrustDomain()) {
		return gate.Identity{}, fmt.Errorf("%w: %s is from %q", ErrUntrusted, id, id.TrustDomain().Name())
	}
	return gate.Identity{ID: id}, nil
}
