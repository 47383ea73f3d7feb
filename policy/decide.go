package policy

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/storegate/storegate/gate"
)

// reasonUndefined is the reason given when the policy denies without one.
const reasonUndefined = "denied by policy (it gave no reason)"

// cachedDecide is decide, answered from v's decision cache when it can be.
func (v *version) cachedDecide(ctx context.Context, caller gate.Identity, op *gate.Op, withReason bool) (gate.Decision, error) {
	if v.cache == nil || op.Service != nil {
		return v.decide(ctx, caller, op, withReason)
	}
	k := keyOf(caller, op)
	if d, ok := v.cache.get(&k); ok {
		return d, nil
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
	ev.bind(ctx)

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
	if d.Reason, err = ev.reason(ctx, &v.reason); err != nil {
		d.Effect = gate.Deny
	}
	return d, err
}

// noMetrics spares every evaluation the metrics OPA would otherwise
// allocate and never be asked for.
var noMetrics = rego.EvalMetrics(metrics.NoOp())

// evaluation holds what the queries about one op share: the input and the
// cancellation tied to the request's context.
type evaluation struct {
	input  rego.EvalOption
	cancel rego.EvalOption
	stop   func() bool
}

// bind cancels the evaluation when ctx is done. OPA would otherwise start a
// goroutine per query to watch ctx.
func (ev *evaluation) bind(ctx context.Context) {
	c := topdown.NewCancel()
	ev.cancel = rego.EvalExternalCancel(c)
	if ctx.Done() != nil {
		ev.stop = context.AfterFunc(ctx, c.Cancel)
	}
}

func (ev *evaluation) done() {
	if ev.stop != nil {
		ev.stop()
	}
}

// eval evaluates q and returns its value, nil when it is undefined.
func (ev *evaluation) eval(ctx context.Context, q *rego.PreparedEvalQuery) (any, error) {
	rs, err := q.Eval(ctx, ev.input, ev.cancel, noMetrics)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("policy: %w", ctxErr)
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
