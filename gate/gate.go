package gate

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Gate runs the protocol-neutral request path: every op of a request is
// authorized (later: mutated, then validated) before the front forwards it.
type Gate struct {
	authz  Authorizer
	log    *slog.Logger
	tracer trace.Tracer // nil: no spans
	obs    Observer     // nil: nobody observes
	// plugins, when set, run over every allowed op and every answer.
	plugins Transformer
	// reserved is the key prefix no caller reaches (the gateway's own
	// records in the stores).
	reserved []byte

	changeMu sync.Mutex
	changed  chan struct{} // closed and replaced on every policy change
}

// Option configures a Gate.
type Option func(*Gate)

// WithTracer makes every policy evaluation of Check a child span of the
// request's span (only when that span is recorded, so an unsampled request
// costs nothing).
func WithTracer(t trace.Tracer) Option { return func(g *Gate) { g.tracer = t } }

// WithPlugins lets fronts run t's request chain over the ops Check allowed
// (Transform) and its response chain over what goes back (Response).
func WithPlugins(t Transformer) Option { return func(g *Gate) { g.plugins = t } }

// WithObserver hands every decision of Check to o (metrics, decision log).
func WithObserver(o Observer) Option { return func(g *Gate) { g.obs = o } }

// WithReserved keeps every caller away from keys starting with prefix, in
// both stores: ops on them are denied, reads and watches over them narrowed.
func WithReserved(prefix []byte) Option {
	return func(g *Gate) { g.reserved = bytes.Clone(prefix) }
}

// New returns a Gate that asks authz about every op.
func New(authz Authorizer, log *slog.Logger, opts ...Option) *Gate {
	if log == nil {
		log = slog.Default()
	}
	g := &Gate{authz: authz, log: log, changed: make(chan struct{})}
	for _, o := range opts {
		o(g)
	}
	return g
}

// PolicyChanged returns a channel closed when the policy next changes: the
// signal for open streams to judge what they carry again.
func (g *Gate) PolicyChanged() <-chan struct{} {
	g.changeMu.Lock()
	defer g.changeMu.Unlock()
	return g.changed
}

// NotifyPolicyChange tells open streams that a new policy version is in use.
func (g *Gate) NotifyPolicyChange() {
	g.changeMu.Lock()
	close(g.changed)
	g.changed = make(chan struct{})
	g.changeMu.Unlock()
}

// Authenticate runs identify, the front's authentication of the caller,
// inside a span of its own when the request is traced, and times it.
func (g *Gate) Authenticate(ctx context.Context, proto Protocol, identify func() (Identity, error)) (Identity, error) {
	var span trace.Span
	if g.tracer != nil && trace.SpanFromContext(ctx).IsRecording() {
		_, span = g.tracer.Start(ctx, "storegate.authn")
	}
	start := time.Now()
	id, err := identify()
	if so, ok := g.obs.(StageObserver); ok {
		so.ObserveStage(ctx, proto, StageAuthn, time.Since(start))
	}
	if span != nil {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(attribute.String("storegate.caller", id.String()))
		}
		span.End()
	}
	return id, err
}

// decide asks policy about one op, inside a span of its own when the
// request is traced, and tells the observer what was decided in rec (the
// request's own, overwritten: observers keep no record past the call).
func (g *Gate) decide(ctx context.Context, caller Identity, rec *Record, op *Op) (Decision, error) {
	var span trace.Span
	parent := trace.SpanFromContext(ctx)
	if g.tracer != nil && parent.IsRecording() {
		ctx, span = g.tracer.Start(ctx, "storegate.policy", trace.WithAttributes(
			attribute.String("storegate.caller", caller.String()),
			attribute.String("storegate.protocol", op.Protocol.String()),
			attribute.String("storegate.resource", op.Resource.String()),
			attribute.String("storegate.action", op.Action.String()),
			attribute.String("storegate.key", spanKey(op.Keys.Key)),
		))
	}
	start := time.Now()
	d, err := g.authz.Authorize(ctx, caller, op)
	took := time.Since(start)
	if g.obs != nil {
		*rec = Record{Time: start, Caller: caller, Op: op, Decision: d, Err: err, Duration: took}
		if a, ok := g.obs.(Auditor); ok {
			if aerr := a.Audit(ctx, rec); aerr != nil && err == nil {
				// A decision that cannot be recorded is not taken.
				err = aerr
			}
		} else {
			g.obs.Observe(ctx, rec)
		}
		*rec = Record{} // nothing of the op stays reachable from the request
	}
	if span != nil {
		result, reason := d.Effect, d.Reason
		if err != nil {
			result, reason = Deny, "policy evaluation failed: "+err.Error()
		}
		span.SetAttributes(attribute.String("storegate.decision", result.String()),
			attribute.String("storegate.policy.revision", d.Revision))
		if reason != "" {
			span.SetAttributes(attribute.String("storegate.reason", Truncate(reason, 4096)))
		}
		if d.Shadow {
			span.SetAttributes(attribute.Bool("storegate.shadow", true))
		}
		span.End()
		if result == Deny {
			// The request's own span says why it was refused, too.
			parent.AddEvent("storegate.denied", trace.WithAttributes(
				attribute.String("storegate.reason", Truncate(reason, 4096))))
		}
	}
	return d, err
}

// Allows reports whether policy allows op for caller outright (Allow, not
// Filter), outside any request: for narrowing answers item by item (e.g.
// the leases a list shows). It is not observed; errors deny.
func (g *Gate) Allows(ctx context.Context, caller Identity, op *Op) bool {
	if g.touchesReserved(op) {
		return false
	}
	d, err := g.authz.Authorize(ctx, caller, op)
	return err == nil && d.Effect == Allow
}

// Readable reports whether caller may read the single key key: the check a
// front applies to every key and event of a filtered range. Errors deny.
func (g *Gate) Readable(ctx context.Context, caller Identity, proto Protocol, res Resource, method string, key []byte) bool {
	if g.Reserved(key) {
		return false
	}
	op := Op{Protocol: proto, Resource: res, Action: ActionRead, Method: method, Keys: KeyRange{Key: key}}
	if res == ResourceWatch {
		op.Action = ActionWatch
	}
	d, err := g.authz.Authorize(ctx, caller, &op)
	return err == nil && d.Effect == Allow
}

// spanKey is a key as a span attribute: cut to a length a trace backend
// keeps (a key may be megabytes long).
func spanKey(k []byte) string {
	const max = 1024
	if len(k) <= max {
		return string(k)
	}
	return string(k[:max])
}
