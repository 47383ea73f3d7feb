package gate

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Identity is an authenticated caller. It can only be built from a parsed
// SPIFFE ID, so an invalid identity cannot travel down the pipeline.
type Identity struct {
	ID spiffeid.ID
}

// TrustDomain is the trust domain of the caller's SPIFFE ID.
func (i Identity) TrustDomain() spiffeid.TrustDomain { return i.ID.TrustDomain() }

// String is the SPIFFE ID, e.g. spiffe://example.org/web.
func (i Identity) String() string { return i.ID.String() }

// IsZero reports whether no caller was authenticated.
func (i Identity) IsZero() bool { return i.ID.IsZero() }

type identityKey struct{}

// WithIdentity returns a context carrying the authenticated caller.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the caller stored by WithIdentity.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok && !id.IsZero()
}
