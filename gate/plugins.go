package gate

import "context"

// Transformer runs the plugins: after policy allowed every op of a request,
// the request chain (mutators, then validators) over each op; and for every
// key/value going back, the response chain. plugins.Host implements it.
type Transformer interface {
	// Request runs the request chain over op, which policy allowed. It may
	// replace op.Keys.Key, op.Keys.End and op.Value (with new slices; the
	// old ones are not written to). A denial, or a failure under a deny
	// failure policy, returns a *Error of KindDenied naming the plugin.
	Request(ctx context.Context, caller Identity, op *Op) error
	// Response runs the response chain over one item going back for op
	// (the request op it answers, as the caller sent it) and returns the
	// key and value to send, which may be key and value themselves.
	Response(ctx context.Context, caller Identity, op *Op, key, value []byte) (newKey, newValue []byte, err error)
	// Responds reports whether any plugin's response hook would see items
	// for op, so that a front can skip decoding an answer no one changes.
	Responds(op *Op) bool
}

// Plugins reports whether plugins run at all (fronts skip their work when
// none do).
func (g *Gate) Plugins() bool { return g.plugins != nil }

// Transform runs the request chain over op, after Check allowed the
// request: op is one the request carries (not one derived for policy, such
// as a prev_kv read), and the front writes back what the chain changed.
func (g *Gate) Transform(ctx context.Context, caller Identity, op *Op) error {
	if g.plugins == nil {
		return nil
	}
	if err := g.plugins.Request(ctx, caller, op); err != nil {
		if AsError(err) == nil {
			err = &Error{Kind: KindDenied, Reason: "plugin failed", Op: op, Err: err}
		}
		return err
	}
	return nil
}

// Responds reports whether items answering op go through a plugin.
func (g *Gate) Responds(op *Op) bool { return g.plugins != nil && g.plugins.Responds(op) }

// Response runs the response chain over one item answering op; without
// plugins it returns key and value unchanged.
func (g *Gate) Response(ctx context.Context, caller Identity, op *Op, key, value []byte) ([]byte, []byte, error) {
	if g.plugins == nil {
		return key, value, nil
	}
	k, v, err := g.plugins.Response(ctx, caller, op, key, value)
	if err != nil && AsError(err) == nil {
		err = &Error{Kind: KindDenied, Reason: "plugin failed on the response", Op: op, Err: err}
	}
	return k, v, err
}
