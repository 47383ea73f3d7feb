package gate

import (
	"context"
	"fmt"
	"log/slog"
)

// Gate runs the protocol-neutral request path: every op of a request is
// authorized (later: mutated, then validated) before the front forwards it.
type Gate struct {
	authz Authorizer
	log   *slog.Logger
}

// New returns a Gate that asks authz about every op.
func New(authz Authorizer, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.Default()
	}
	return &Gate{authz: authz, log: log}
}

// Check authorizes every op for caller and returns the effect for each op in
// effects (which must be at least len(ops) long, or nil when the caller
// needs no per-op effects). Any denial denies the request as a whole: the
// returned error is a *Error of KindDenied naming the first denied op.
func (g *Gate) Check(ctx context.Context, caller Identity, ops []Op, effects []Effect) error {
	if caller.IsZero() {
		return &Error{Kind: KindUnauthenticated, Reason: "no authenticated caller"}
	}
	for i := range ops {
		op := &ops[i]
		d, err := g.authz.Authorize(ctx, caller, op)
		if err != nil {
			g.log.Warn("policy error, denying", "caller", caller.String(), "method", op.Method,
				"resource", op.Resource.String(), "action", op.Action.String(), "err", err)
			return &Error{Kind: KindDenied, Reason: "policy evaluation failed", Op: op, Err: err}
		}
		if d.Shadow {
			g.log.Info("shadow deny", "caller", caller.String(), "method", op.Method,
				"resource", op.Resource.String(), "action", op.Action.String(),
				"key", fmt.Sprintf("%q", op.Keys.Key), "reason", d.Reason)
		}
		if d.Effect == Filter && op.Action != ActionRead && op.Action != ActionWatch {
			// Only reads can be narrowed after the fact; anything else that
			// is not wholly allowed is denied.
			d = Decision{Effect: Deny, Reason: "only part of the range is allowed"}
		}
		if d.Effect == Deny {
			g.log.Info("deny", "caller", caller.String(), "method", op.Method,
				"resource", op.Resource.String(), "action", op.Action.String(),
				"key", fmt.Sprintf("%q", op.Keys.Key), "reason", d.Reason)
			return Denied(op, d.Reason)
		}
		if effects != nil {
			effects[i] = d.Effect
		}
	}
	return nil
}

// Readable reports whether caller may read the single key key: the check a
// front applies to every key and event of a filtered range. Errors deny.
func (g *Gate) Readable(ctx context.Context, caller Identity, proto Protocol, res Resource, method string, key []byte) bool {
	op := Op{Protocol: proto, Resource: res, Action: ActionRead, Method: method, Keys: KeyRange{Key: key}}
	if res == ResourceWatch {
		op.Action = ActionWatch
	}
	d, err := g.authz.Authorize(ctx, caller, &op)
	return err == nil && d.Effect == Allow
}
