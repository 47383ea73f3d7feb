package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Refusal reasons: short, stable words logged with every refused peer (the
// "reason" attribute), so operators and alerts can group refusals without
// parsing messages.
const (
	reasonNoCertificate    = "no certificate"
	reasonNoSPIFFEID       = "no SPIFFE ID"
	reasonUntrustedDomain  = "untrusted trust domain"
	reasonExpired          = "expired"
	reasonNotYetValid      = "not yet valid"
	reasonNoBundle         = "no trust bundle"
	reasonUnknownAuthority = "unknown authority"
	reasonInvalidSVID      = "invalid SVID"
	reasonUnauthorized     = "unauthorized"
)

// peerError is a refused peer certificate: a reason* constant and the detail.
type peerError struct {
	reason string
	err    error
}

func (e *peerError) Error() string { return "mtls: " + e.err.Error() }
func (e *peerError) Unwrap() error { return e.err }

func refuse(reason, format string, args ...any) *peerError {
	return &peerError{reason: reason, err: fmt.Errorf(format, args...)}
}

// verifyPeer checks that certs (leaf first) form an X.509-SVID that chains
// to the bundle of its own trust domain. When trust is not nil, that trust
// domain must be in it. role names the peer in messages ("client", "server").
func verifyPeer(role string, certs []*x509.Certificate, bundles x509bundle.Source, trust []spiffeid.TrustDomain, now time.Time) (spiffeid.ID, [][]*x509.Certificate, *peerError) {
	if len(certs) == 0 {
		return spiffeid.ID{}, nil, refuse(reasonNoCertificate, "%s sent no certificate", role)
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, nil, refuse(reasonNoSPIFFEID, "%s certificate %q has no SPIFFE ID: %w", role, leaf.Subject.String(), err)
	}
	td := id.TrustDomain()
	if trust != nil && !slices.Contains(trust, td) {
		return id, nil, refuse(reasonUntrustedDomain, "%s %s: trust domain %q is not accepted", role, id, td.Name())
	}
	switch {
	case now.After(leaf.NotAfter):
		return id, nil, refuse(reasonExpired, "%s certificate %s expired at %s", role, id, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return id, nil, refuse(reasonNotYetValid, "%s certificate %s is not valid before %s", role, id, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	bundle, err := bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		return id, nil, refuse(reasonNoBundle, "%s %s: %w", role, id, err)
	}
	_, chains, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now))
	if err != nil {
		var unknown x509.UnknownAuthorityError
		var invalid x509.CertificateInvalidError
		switch {
		case errors.As(err, &unknown):
			return id, nil, refuse(reasonUnknownAuthority, "%s certificate %s is not signed by the trust bundle of %q", role, id, td.Name())
		case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
			return id, nil, refuse(reasonExpired, "%s certificate chain of %s: %w", role, id, err)
		default:
			return id, nil, refuse(reasonInvalidSVID, "%s certificate %s is not a valid X.509-SVID: %w", role, id, err)
		}
	}
	return id, chains, nil
}
