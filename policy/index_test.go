package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/storegate/storegate/gate"
)

// ruleCounter counts the rule bodies of the generated module that an
// evaluation enters: the rules OPA's index did not rule out.
type ruleCounter struct {
	file    string
	entered int
}

func (c *ruleCounter) Enabled() bool               { return true }
func (c *ruleCounter) Config() topdown.TraceConfig { return topdown.TraceConfig{} }
func (c *ruleCounter) TraceEvent(ev topdown.Event) {
	if ev.Op == topdown.EnterOp && ev.HasRule() && ev.Location != nil && ev.Location.File == c.file {
		c.entered++
	}
}

// TestIntentionsAreIndexed checks that, with a thousand intentions, deciding
// an op enters only the handful of generated rules that can match it.
func TestIntentionsAreIndexed(t *testing.T) {
	const n = 1000
	dir := scaledPolicy(t, n)
	e := mustLoad(t, dir, ModeEnforce)
	v := e.current.Load()
	file := generatedName(dir + "/" + IntentionsFile)

	tests := []struct {
		name   string
		caller gate.Identity
		op     *gate.Op
		want   gate.Effect
		// max is the most rules the decision may enter, over every query
		// it makes (allow, then filter and reason on a deny).
		max int
	}{
		{"single key allowed", web, kvOp(gate.ActionRead, "/app/config/db"), gate.Allow, 4},
		{"single key denied", web, kvOp(gate.ActionWrite, "/other/x"), gate.Deny, 4},
		{"deny wins", web, kvOp(gate.ActionRead, "/app/secret/x"), gate.Deny, 6},
		{"tenant key", web, kvOp(gate.ActionRead, "/tenant/501/x"), gate.Allow, 4},
		{"tenant private key", web, kvOp(gate.ActionRead, "/tenant/501/private/x"), gate.Deny, 8},
		{"prefix range allowed", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/config/"), gate.Allow, 4},
		{"prefix range filtered", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"), gate.Filter, 16},
		{"segment glob", identity("spiffe://example.org/team-503/api"), kvOp(gate.ActionRead, "/team/503/api/config"), gate.Allow, 4},
		{"other service", identity("spiffe://example.org/svc-500"), kvOp(gate.ActionWrite, "/svc/500/a"), gate.Allow, 4},
		{"foreign lease denied", web, foreignLease(gate.ActionKeepalive, "spiffe://example.org/admin"), gate.Deny, 4},
		{"foreign lease allowed", admin, foreignLease(gate.ActionKeepalive, "spiffe://example.org/web"), gate.Allow, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &ruleCounter{file: file}
			d, err := v.decide(context.Background(), tt.caller, tt.op, true)
			if err != nil || d.Effect != tt.want {
				t.Fatalf("decide = %v, %v; want %v", d, err, tt.want)
			}
			input := rego.EvalParsedInput(Input(tt.caller, tt.op))
			for _, q := range []*rego.PreparedEvalQuery{&v.allow, &v.filter, &v.reason} {
				if _, err := q.Eval(context.Background(), input, rego.EvalQueryTracer(c)); err != nil {
					t.Fatal(err)
				}
				if q == &v.allow && d.Effect == gate.Allow {
					break
				}
			}
			t.Logf("entered %d generated rules", c.entered)
			if c.entered > tt.max {
				t.Errorf("entered %d generated rules of %d intentions, want at most %d", c.entered, n, tt.max)
			}
		})
	}

	// And without the index the same decisions enter thousands of them.
	c := &ruleCounter{file: file}
	input := rego.EvalParsedInput(Input(web, kvOp(gate.ActionRead, "/app/config/db")))
	if _, err := v.allow.Eval(context.Background(), input, rego.EvalQueryTracer(c), rego.EvalRuleIndexing(false)); err != nil {
		t.Fatal(err)
	}
	if c.entered < n {
		t.Errorf("without indexing entered %d rules, want at least %d: is the counter counting?", c.entered, n)
	}
	if !strings.HasSuffix(file, ".rego") {
		t.Fatalf("generated module name %q", file)
	}
}
