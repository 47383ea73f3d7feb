package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/storegate/storegate/gate"
)

// globIntentions exercise the corners of glob compilation, for the caller
// spiffe://example.org/t.
const globIntentions = `intentions:
  - name: app
    source: "spiffe://example.org/t"
    resources: [kv]
    actions: [read, delete]
    keys: ["/app/**"]
    effect: allow
  - name: app-secrets
    source: "spiffe://example.org/t"
    resources: [kv]
    actions: ["*"]
    keys: ["/app/*/secret"]
    effect: deny
  - name: literal-meta
    source: "spiffe://example.org/t"
    resources: [kv]
    actions: [read]
    keys: ["/lit/[a]?{b}\\c/*"]
    effect: allow
  - name: middle
    source: "spiffe://example.org/t"
    resources: [kv]
    actions: [read]
    keys: ["/mid/**/conf"]
    effect: allow
  - name: exact
    source: "spiffe://example.org/t"
    resources: [kv]
    actions: [read]
    keys: ["/exact"]
    effect: allow
  - name: unicode
    source: "spiffe://example.org/t"
    resources: [kv]
    actions: [read]
    keys: ["/u/**"]
    effect: allow
  - name: unicode-deny
    source: "spiffe://example.org/t"
    resources: [kv]
    actions: [read]
    keys: ["/u/ü/**"]
    effect: deny
  - name: partial-segment
    source: "spiffe://example.org/t*"
    resources: [status]
    actions: [read]
    effect: allow
  - name: any-key
    source: "spiffe://example.org/k"
    resources: [kv]
    actions: [read]
    keys: ["**"]
    effect: allow
  - name: k-secrets
    source: "spiffe://example.org/k"
    resources: [kv]
    actions: [read]
    keys: ["*/*/secret"]
    effect: deny
  - name: any-caller
    source: "**"
    resources: [kv]
    actions: [read]
    keys: ["/public/**"]
    effect: allow
`

func TestGlobCompilation(t *testing.T) {
	dir := copyShipped(t)
	writeFile(t, dir, IntentionsFile, globIntentions)
	e := mustLoad(t, dir, ModeEnforce)
	caller := identity("spiffe://example.org/t")
	rangeOp := func(a gate.Action, key, end string) *gate.Op {
		return &gate.Op{Resource: gate.ResourceKV, Action: a, Keys: gate.KeyRange{Key: []byte(key), End: []byte(end)}}
	}
	tests := []struct {
		name   string
		caller gate.Identity
		op     *gate.Op
		want   gate.Effect
	}{
		{"prefix glob", caller, kvOp(gate.ActionRead, "/app/a/b/c"), gate.Allow},
		{"segment deny", caller, kvOp(gate.ActionRead, "/app/x/secret"), gate.Deny},
		{"segment deny, deeper key", caller, kvOp(gate.ActionRead, "/app/x/y/secret"), gate.Allow},
		// OPA's indexer would split this key at the escaped '/', glob.match does not.
		{"segment deny, backslash in key", caller, kvOp(gate.ActionRead, `/app/x\/secret`), gate.Deny},
		{"glob meta characters are literal", caller, kvOp(gate.ActionRead, `/lit/[a]?{b}\c/x`), gate.Allow},
		{"glob meta characters are not meta", caller, kvOp(gate.ActionRead, `/lit/a?b\c/x`), gate.Deny},
		{"single star after meta characters", caller, kvOp(gate.ActionRead, `/lit/[a]?{b}\c/x/y`), gate.Deny},
		{"double star in the middle", caller, kvOp(gate.ActionRead, "/mid/a/b/conf"), gate.Allow},
		{"double star in the middle, suffix", caller, kvOp(gate.ActionRead, "/mid/a/confx"), gate.Deny},
		{"exact key", caller, kvOp(gate.ActionRead, "/exact"), gate.Allow},
		{"exact key, longer", caller, kvOp(gate.ActionRead, "/exact/x"), gate.Deny},
		{"range holding an exact key is filtered", caller, prefixOp(gate.ResourceKV, gate.ActionRead, "/ex"), gate.Filter},
		{"range past an exact key", caller, prefixOp(gate.ResourceKV, gate.ActionRead, "/exact/"), gate.Deny},
		{"range under a segment deny is filtered", caller, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/x/"), gate.Filter},
		{"range clear of a segment deny", caller, rangeOp(gate.ActionRead, "/app/x/a", "/app/x/b"), gate.Filter},
		{"range delete near a segment deny", caller, prefixOp(gate.ResourceKV, gate.ActionDelete, "/app/x/"), gate.Deny},
		{"range cut inside a character", caller, rangeOp(gate.ActionRead, "/u/\xc3\xa0", "/u/\xc3\xbf"), gate.Filter},
		{"range clear of a unicode deny", caller, rangeOp(gate.ActionRead, "/u/a", "/u/b"), gate.Allow},
		{"unicode deny", caller, kvOp(gate.ActionRead, "/u/ü/x"), gate.Deny},
		{"partial segment source", identity("spiffe://example.org/team"), bareOp(gate.ResourceStatus, gate.ActionRead), gate.Allow},
		{"partial segment source, deeper", identity("spiffe://example.org/t/x"), bareOp(gate.ResourceStatus, gate.ActionRead), gate.Deny},
		{"any key", identity("spiffe://example.org/k"), kvOp(gate.ActionRead, "/whatever"), gate.Allow},
		{"any key, but a deny without a literal may match any range", identity("spiffe://example.org/k"), prefixOp(gate.ResourceKV, gate.ActionRead, ""), gate.Filter},
		{"segment deny without a literal", identity("spiffe://example.org/k"), kvOp(gate.ActionRead, "a/b/secret"), gate.Deny},
		// Were glob.match indexed, OPA's indexer would split this key in two
		// (it reads '\' as escaping the '/') and rule the deny out.
		{"segment deny without a literal, backslash in key", identity("spiffe://example.org/k"), kvOp(gate.ActionRead, `a\/b/secret`), gate.Deny},
		{"segment deny without a literal, shorter key", identity("spiffe://example.org/k"), kvOp(gate.ActionRead, "a/secret"), gate.Allow},
		{"any key needs a key", identity("spiffe://example.org/k"), bareOp(gate.ResourceKV, gate.ActionRead), gate.Deny},
		{"any caller", identity("spiffe://elsewhere.org/x"), kvOp(gate.ActionRead, "/public/x"), gate.Allow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Authorize(context.Background(), tt.caller, tt.op)
			if err != nil || d.Effect != tt.want {
				t.Errorf("Authorize = %v %q, %v; want %v", d.Effect, d.Reason, err, tt.want)
			}
		})
	}
}

func TestGeneratedModule(t *testing.T) {
	ins, err := parseIntentions("i.yaml", []byte(globIntentions))
	if err != nil {
		t.Fatal(err)
	}
	mod := string(generate("i.yaml", ins))
	for _, want := range []string{
		"# Code generated by storegate from i.yaml; DO NOT EDIT.\npackage storegate.intentions\n",
		"# app-secrets (i.yaml:8)\n",
		// Segment globs: indexed on their literal part, matched by the
		// four-operand glob.match the indexer leaves alone.
		"\tstartswith(input.op.key, \"/app/\")\n\tglob.match(\"/app/*/secret\", [\"/\"], input.op.key, true)\n",
		// Meta characters are escaped for glob.match.
		`glob.match("/lit/\\[a\\]\\?\\{b\\}\\\\c/*", ["/"], input.op.key, true)`,
		// Exact keys are equalities, and their prefixes are listed.
		"\tinput.op.key == \"/exact\"\n",
		"\tinput.op.cover in {\"\", \"/\", \"/e\", \"/ex\", \"/exa\", \"/exac\", \"/exact\"}\n",
		// A literal that is not ASCII cannot be listed byte by byte.
		"\tstartswith(\"/u/ü/\", input.op.cover)\n",
		"allow_hits contains \"any-caller\" if {\n\tinput.op.resource == \"kv\"\n",
	} {
		if !strings.Contains(mod, want) {
			t.Errorf("generated module lacks\n%s\n---\n%s", want, mod)
		}
	}
}
