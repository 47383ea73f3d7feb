package gate

import (
	"context"
	"fmt"
	"log/slog"
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

// New returns a Gate that asks authz about every op.
func New(authz Authorizer, log *slog.Logger, opts ...Option) *Gate {
	if log == nil {
		log = slog.Default()
	}
	g := &Gate{authz: authz, log: log}
	for _, o := range opts {
		o(g)
	}
	return g
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
		d, err := g.decide(ctx, caller, op)
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
// request is traced, and tells the observer what was decided.
func (g *Gate) decide(ctx context.Context, caller Identity, op *Op) (Decision, error) {
	var span trace.Span
	parent := trace.SpanFromContext(ctx)
	if g.tracer != nil && parent.IsRecording() {
		ctx, span = g.tracer.Start(ctx, "storegate.policy", trace.WithAttributes(
			attribute.String("storegate.caller", caller.String()),
			attribute.String("storegate.protocol", op.Protocol.String()),
			attribute.String("storegate.resource", op.Resource.String()),
			attribute.String("storegate.action", op.Action.String()),
			attribute.String("storegate.key", string(op.Keys.Key)),
		))
	}
	start := time.Now()
	d, err := g.authz.Authorize(ctx, caller, op)
	took := time.Since(start)
	if err == nil && d.Effect == Filter && op.Action != ActionRead && op.Action != ActionWatch {
		// Only reads can be narrowed after the fact; anything else that is
		// not wholly allowed is denied.
		d = Decision{Effect: Deny, Reason: "only part of the range is allowed", Revision: d.Revision}
	}
	if g.obs != nil {
		rec := Record{Time: start, Caller: caller, Op: op, Decision: d, Err: err, Duration: took}
		g.obs.Observe(ctx, &rec)
	}
	if span != nil {
		result, reason := d.Effect, d.Reason
		if err != nil {
			result, reason = Deny, "policy evaluation failed: "+err.Error()
		}
		span.SetAttributes(attribute.String("storegate.decision", result.String()),
			attribute.String("storegate.policy.revision", d.Revision))
		if reason != "" {
			span.SetAttributes(attribute.String("storegate.reason", reason))
		}
		if d.Shadow {
			span.SetAttributes(attribute.Bool("storegate.shadow", true))
		}
		span.End()
		if result == Deny {
			// The request's own span says why it was refused, too.
			parent.AddEvent("storegate.denied", trace.WithAttributes(
				attribute.String("storegate.reason", reason)))
		}
	}
	return d, err
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
