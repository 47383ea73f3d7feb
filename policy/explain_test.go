package policy

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/storegate/storegate/gate"
)

func TestExplain(t *testing.T) {
	e := mustLoad(t, shipped, ModeEnforce)
	tests := []struct {
		name                           string
		op                             *gate.Op
		effect                         gate.Effect
		reason                         string
		allowing, denying, overlapping []string
	}{
		{"allowed", kvOp(gate.ActionRead, "/app/x"), gate.Allow, "",
			[]string{"web-app-kv"}, []string{}, nil},
		{"deny wins", kvOp(gate.ActionRead, "/app/secret/x"), gate.Deny, `deny intention "web-no-secrets" matches`,
			[]string{"web-app-kv"}, []string{"web-no-secrets"}, nil},
		{"filtered", prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"), gate.Filter,
			`deny intention "web-no-secrets" may match keys in kv prefix "/app/"`,
			[]string{"web-app-kv"}, []string{"web-no-secrets"}, []string{"web-app-kv"}},
		{"nothing matches", kvOp(gate.ActionRead, "/other"), gate.Deny,
			`no intention allows spiffe://example.org/web to read kv "/other"`, []string{}, []string{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := e.Explain(context.Background(), web, tt.op)
			if err != nil {
				t.Fatal(err)
			}
			if x.Decision.Effect != tt.effect || x.Reason != tt.reason || x.Revision != e.Revision() {
				t.Errorf("Explain = %v %q rev %s", x.Decision.Effect, x.Reason, x.Revision)
			}
			if !equalNames(x.Allowing, tt.allowing) || !equalNames(x.Denying, tt.denying) || !equalNames(x.Overlapping, tt.overlapping) {
				t.Errorf("allowing %v denying %v overlapping %v; want %v %v %v",
					x.Allowing, x.Denying, x.Overlapping, tt.allowing, tt.denying, tt.overlapping)
			}
			var in struct {
				Caller struct{ ID string }  `json:"caller"`
				Op     struct{ Key string } `json:"op"`
			}
			if err := json.Unmarshal(x.Input, &in); err != nil || in.Caller.ID != web.String() || in.Op.Key != string(tt.op.Keys.Key) {
				t.Errorf("input %s: %v", x.Input, err)
			}
		})
	}
}

func equalNames(a, b []string) bool { return len(a) == 0 && len(b) == 0 || slices.Equal(a, b) }

func TestExplainWithoutPolicy(t *testing.T) {
	e := mustLoad(t, t.TempDir(), ModeShadow)
	x, err := e.Explain(context.Background(), web, kvOp(gate.ActionRead, "/x"))
	if err != nil || x.Reason != reasonNoPolicy || !x.Decision.Shadow || x.Decision.Effect != gate.Allow {
		t.Errorf("Explain = %+v, %v", x, err)
	}
}
