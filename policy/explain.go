package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/storegate/storegate/gate"
)

// Explanation is a decision with the evidence behind it, for
// `gateway policy eval` and for debugging policies.
type Explanation struct {
	// Decision is what Authorize returns for the op, shadow mode included.
	Decision gate.Decision `json:"decision"`
	// Reason is the policy's reason when it did not allow the op, even
	// when the decision was Filter or shadowed.
	Reason string `json:"reason,omitempty"`
	// Allowing names the allow intentions that match the op: for a
	// multi-key range, those that match every key of it.
	Allowing []string `json:"allowing"`
	// Denying names the deny intentions that match the op: for a multi-key
	// range, those that may match a key of it.
	Denying []string `json:"denying"`
	// Overlapping names, for a multi-key range, the allow intentions that
	// may match some key of it (what makes a read or watch filterable).
	Overlapping []string `json:"overlapping,omitempty"`
	// Input is the input document the policy saw, as JSON.
	Input json.RawMessage `json:"input"`
	// Revision identifies the policy version that decided.
	Revision string `json:"revision"`
	// Evaluator is what decided the op: the compiled intentions or OPA.
	// When it is the compiled intentions, Explain has OPA decide the op as
	// well and fails if the two disagree.
	Evaluator Evaluator `json:"evaluator"`
}

// Explain decides op as Authorize does and says why. Intentions are listed
// only when the policy directory has an intentions file.
func (e *Engine) Explain(ctx context.Context, caller gate.Identity, op *gate.Op) (Explanation, error) {
	v := e.current.Load()
	x := Explanation{Revision: v.revision, Evaluator: v.evaluatorOf(op)}
	input := Input(caller, op)
	raw, err := ast.JSON(input)
	if err != nil {
		return x, fmt.Errorf("policy: %w", err)
	}
	if x.Input, err = json.Marshal(raw); err != nil {
		return x, fmt.Errorf("policy: %w", err)
	}
	if x.Decision, err = e.authorize(ctx, v, caller, op); err != nil {
		return x, err
	}
	if v.empty {
		x.Reason = reasonNoPolicy
		return x, nil
	}
	policy, err := v.decide(ctx, caller, op, true)
	if err != nil {
		return x, err
	}
	x.Reason = policy.Reason
	if x.Evaluator == EvaluatorCompiled {
		fast, err := v.fastDecide(ctx, caller, op, true)
		if err != nil {
			return x, err
		}
		if fast.Effect != policy.Effect || fast.Reason != policy.Reason {
			return x, fmt.Errorf("policy: the compiled intentions and OPA disagree on this op: compiled %s (%q), OPA %s (%q); "+
				"set policy.fast_path: false and report it", fast.Effect, fast.Reason, policy.Effect, policy.Reason)
		}
	}

	ev := evaluation{input: rego.EvalParsedInput(input)}
	defer ev.done()
	ev.bind(ctx, v.timeout)
	hits, err := ev.eval(ctx, &v.intentions)
	if err != nil {
		return x, err
	}
	sets, _ := hits.(map[string]any)
	if op.Keys.Single() {
		x.Allowing, x.Denying = names(sets[setAllowHits]), names(sets[setDenyHits])
	} else {
		x.Allowing = names(sets[setAllowCovers])
		x.Denying = names(sets[setDenyCovers], sets[setDenyOverlaps])
		x.Overlapping = names(sets[setAllowCovers], sets[setAllowOverlaps])
	}
	return x, nil
}

// names returns the sorted, distinct strings of sets (each a []any once
// converted to Go).
func names(sets ...any) []string {
	out := []string{}
	for _, set := range sets {
		list, _ := set.([]any)
		for _, n := range list {
			if s, ok := n.(string); ok {
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
