package mtls

import (
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Source is what the gateway needs from an identity provider: its own
// X.509-SVID and the trust bundles it verifies peers with. Both methods are
// called on every handshake and must be cheap and safe for concurrent use.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// Interface guards.
var (
	_ Source = (*FileSource)(nil)
	_ Source = (*workloadapi.X509Source)(nil)
	_ Source = (*WorkloadSource)(nil)
)
