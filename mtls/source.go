package mtls

import (
	"context"
	"fmt"

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
)

// NewWorkloadSource connects to the SPIFFE Workload API at addr (for example
// unix:///run/spire/agent.sock; empty means the SPIFFE_ENDPOINT_SOCKET
// environment variable) and blocks until the first SVID and bundles arrive or
// ctx is done. The source keeps itself up to date; Close it when done.
func NewWorkloadSource(ctx context.Context, addr string) (*workloadapi.X509Source, error) {
	var opts []workloadapi.X509SourceOption
	if addr != "" {
		if err := workloadapi.ValidateAddress(addr); err != nil {
			return nil, fmt.Errorf("mtls: workload API address %q: %w", addr, err)
		}
		opts = append(opts, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	} else if _, ok := workloadapi.GetDefaultAddress(); !ok {
		return nil, fmt.Errorf("mtls: no workload API address given and %s is not set", workloadapi.SocketEnv)
	}
	src, err := workloadapi.NewX509Source(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("mtls: workload API %s: %w", addr, err)
	}
	return src, nil
}
