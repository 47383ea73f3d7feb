package gate

import (
	"context"
	"time"
)

// Record is one policy decision on one op, as the gate took it: what the
// decision log writes and what metrics count. It holds no value, only the
// op's value size.
type Record struct {
	Time     time.Time
	Caller   Identity
	Op       *Op
	Decision Decision
	// Err is the evaluation error, if policy failed (the op is then denied).
	Err error
	// Duration is how long the evaluation took.
	Duration time.Duration
}

// Result is the outcome the gate applied: the policy's effect, or deny
// when policy failed or a partial allow cannot narrow the op.
func (r *Record) Result() Effect {
	if r.Err != nil {
		return Deny
	}
	return r.Decision.Effect
}

// Observer sees every decision the gate takes in Check (not the per-key
// checks of Readable, which narrow an already allowed read). It is called
// synchronously on the request's path and must be fast and safe for
// concurrent use; it may not keep rec or rec.Op after it returns.
type Observer interface {
	Observe(ctx context.Context, rec *Record)
}

// Auditor is an Observer whose record is a condition of the decision: when
// Audit returns an error (e.g. the decision log cannot take the record), the
// op is denied. It must not block: a full queue is an error, not a wait.
type Auditor interface {
	Audit(ctx context.Context, rec *Record) error
}

// Observers calls each of its elements in turn.
type Observers []Observer

// Observe implements Observer.
func (os Observers) Observe(ctx context.Context, rec *Record) {
	for _, o := range os {
		o.Observe(ctx, rec)
	}
}

// Audit implements Auditor: it audits with the elements that are Auditors
// and observes with the others; the first audit error is returned.
func (os Observers) Audit(ctx context.Context, rec *Record) error {
	var first error
	for _, o := range os {
		if a, ok := o.(Auditor); ok {
			if err := a.Audit(ctx, rec); err != nil && first == nil {
				first = err
			}
			continue
		}
		o.Observe(ctx, rec)
	}
	return first
}

// ObserveStage implements StageObserver for the elements that do.
func (os Observers) ObserveStage(ctx context.Context, proto Protocol, stage Stage, d time.Duration) {
	for _, o := range os {
		if so, ok := o.(StageObserver); ok {
			so.ObserveStage(ctx, proto, stage, d)
		}
	}
}

// Stage is a step of the request path whose latency is measured.
type Stage string

// Stages.
const (
	StageAuthn    Stage = "authn"    // the caller's SVID to an identity
	StagePolicy   Stage = "policy"   // one policy evaluation (per op)
	StagePlugin   Stage = "plugin"   // one plugin call
	StageUpstream Stage = "upstream" // the forwarded call to the store
	StageTotal    Stage = "total"    // the whole request, as the front saw it
)

// StageObserver is told how long a stage took; an Observer that also
// implements it gets the gate's authentication timings.
type StageObserver interface {
	ObserveStage(ctx context.Context, proto Protocol, stage Stage, d time.Duration)
}
