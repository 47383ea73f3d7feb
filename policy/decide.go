package policy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/storegate/storegate/gate"
)

// reasonUndefined is the reason given when the policy denies without one.
const reasonUndefined = "denied by policy (it gave no reason)"

// ErrEvalTimeout is the error (wrapped) of an evaluation that ran past the
// engine's Config.EvalTimeout and was stopped. Like every evaluation error it
// denies.
var ErrEvalTimeout = errors.New("evaluation timed out")

// cachedDecide is decide, answered from v's decision cache when it can be.
func (v *version) cachedDecide(ctx context.Context, caller gate.Identity, op *gate.Op, withReason bool) (gate.Decision, error) {
	if v.fast != nil && v.fast.handles(op) {
		// Deciding costs less than a cache lookup, and is as deterministic.
		return v.fastDecide(ctx, caller, op, withReason)
	}
	if v.cache == nil || op.Service != nil || op.Node != nil || op.NewSession != nil || !cacheable(op) {
		return v.decide(ctx, caller, op, withReason)
	}
	k := keyOf(caller, op)
	if c, ok := v.cache.get(&k); ok {
		return gate.Decision{Effect: c.effect, Reason: c.reason, Revision: v.revision}, nil
	}
	d, err := v.decide(ctx, caller, op, withReason)
	if err == nil {
		v.cache.put(&k, d)
	}
	return d, err
}

// decide evaluates op against v: allow first and, only when that is not
// true, filter (for multi-key reads and watches) and the reason. A Filter
// decision carries its reason only when withReason is set.
func (v *version) decide(ctx context.Context, caller gate.Identity, op *gate.Op, withReason bool) (gate.Decision, error) {
	d := gate.Decision{Effect: gate.Deny, Revision: v.revision}
	if v.empty {
		d.Reason = reasonNoPolicy
		return d, nil
	}
	if err := ctx.Err(); err != nil {
		return d, fmt.Errorf("policy: %w", err)
	}
	ev := evaluation{input: rego.EvalParsedInput(Input(caller, op))}
	defer ev.done()
	ev.bind(ctx, v.timeout)

	allow, err := ev.boolean(ctx, &v.allow)
	if err != nil || allow {
		if allow {
			d.Effect = gate.Allow
		}
		return d, err
	}
	if !op.Keys.Single() && (op.Action == gate.ActionRead || op.Action == gate.ActionWatch) {
		filter, err := ev.boolean(ctx, &v.filter)
		if err != nil {
			return d, err
		}
		if filter {
			d.Effect = gate.Filter
			if !withReason {
				return d, nil
			}
		}
	}
	if len(op.Keys.Key)+len(op.Keys.End) > maxQuotedKeyBytes {
		// Reasons quote the key: for a huge key that costs far more than
		// the decision (an attacker's lever), and the caller sees only a
		// cut reason anyway.
		d.Reason = reasonKeyTooLong
		return d, nil
	}
	if d.Reason, err = ev.reason(ctx, &v.reason); err != nil {
		d.Effect = gate.Deny
	}
	return d, err
}

// maxQuotedKeyBytes is the longest key (and range end) a reason is asked
// for; longer ones get reasonKeyTooLong.
const maxQuotedKeyBytes = 4096

const reasonKeyTooLong = "denied by policy (the key is too long to quote in a reason)"

// noMetrics spares every evaluation the metrics OPA would otherwise
// allocate and never be asked for.
var noMetrics = rego.EvalMetrics(metrics.NoOp())

// evaluation holds what the queries about one op share: the input, and the
// cancellation tied to the request's context and to the evaluation deadline.
// One deadline bounds every query about the op (allow, filter, reason).
type evaluation struct {
	input   rego.EvalOption
	cancel  rego.EvalOption
	c       *evalCancel
	stop    func() bool // the context's AfterFunc
	timeout time.Duration
}

// evalCancel is the topdown.Cancel of one evaluation: cancelled when the
// request's context is done, and when the clock reaches its deadline.
type evalCancel struct {
	why      atomic.Uint32
	deadline int64 // on the evaluation clock (deadline.go); 0: none
}

var _ topdown.Cancel = (*evalCancel)(nil)

const (
	cancelledByContext = 1 + iota
	cancelledByDeadline
)

// Cancel stops the evaluation for the request's context.
func (c *evalCancel) Cancel() { c.why.CompareAndSwap(0, cancelledByContext) }

// Cancelled is polled by OPA before every expression it evaluates.
func (c *evalCancel) Cancelled() bool {
	if c.why.Load() != 0 {
		return true
	}
	if c.deadline != 0 && expired(c.deadline) {
		c.why.CompareAndSwap(0, cancelledByDeadline)
		return true
	}
	return false
}

// bind cancels the evaluation when ctx is done, and when timeout (if
// positive) has passed. OPA would otherwise start a goroutine per query to
// watch ctx.
func (ev *evaluation) bind(ctx context.Context, timeout time.Duration) {
	ev.c = &evalCancel{}
	ev.cancel = rego.EvalExternalCancel(ev.c)
	if ctx.Done() != nil {
		ev.stop = context.AfterFunc(ctx, ev.c.Cancel)
	}
	if timeout > 0 {
		ev.timeout = timeout
		ev.c.deadline = startDeadline(timeout)
	}
}

func (ev *evaluation) done() {
	if ev.stop != nil {
		ev.stop()
	}
	if ev.c != nil && ev.c.deadline != 0 {
		endDeadline()
	}
}

// eval evaluates q and returns its value, nil when it is undefined.
func (ev *evaluation) eval(ctx context.Context, q *rego.PreparedEvalQuery) (any, error) {
	rs, err := q.Eval(ctx, ev.input, ev.cancel, noMetrics)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("policy: %w", ctxErr)
		}
		if ev.c != nil && ev.c.why.Load() == cancelledByDeadline {
			return nil, fmt.Errorf("policy: %w after %v", ErrEvalTimeout, ev.timeout)
		}
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil, nil
	}
	return rs[0].Expressions[0].Value, nil
}

// boolean evaluates q; only a boolean true is true.
func (ev *evaluation) boolean(ctx context.Context, q *rego.PreparedEvalQuery) (bool, error) {
	v, err := ev.eval(ctx, q)
	b, ok := v.(bool)
	return ok && b, err
}

// reason evaluates q; a missing or non-string reason gets a stock one.
func (ev *evaluation) reason(ctx context.Context, q *rego.PreparedEvalQuery) (string, error) {
	v, err := ev.eval(ctx, q)
	if s, ok := v.(string); ok && s != "" {
		return s, err
	}
	return reasonUndefined, err
}
