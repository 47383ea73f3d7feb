package policy

import (
	"context"
	"slices"
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

// ownerIntentions exercise owners, for the callers spiffe://example.org/o
// and spiffe://example.org/p.
const ownerIntentions = `intentions:
  - name: own-leases
    source: "spiffe://example.org/o"
    resources: [lease]
    actions: ["*"]
    effect: allow
  - name: team-leases
    source: "spiffe://example.org/o"
    resources: [lease]
    actions: [read, keepalive]
    owners: ["spiffe://example.org/team/*", "spiffe://example.org/lead"]
    effect: allow
  - name: no-keepalive-of-team-x
    source: "spiffe://example.org/o"
    resources: [lease]
    actions: [keepalive]
    owners: ["spiffe://example.org/team/x"]
    effect: deny
  - name: deny-without-owners
    source: "spiffe://example.org/o"
    resources: [lease]
    actions: [revoke]
    effect: deny
  - name: p-any-owner
    source: "spiffe://example.org/p"
    resources: [lease]
    actions: [revoke]
    owners: ["**"]
    effect: allow
  - name: p-keys
    source: "spiffe://example.org/p"
    resources: [kv]
    actions: [write]
    keys: ["/p/**"]
    owners: ["spiffe://example.org/o"]
    effect: allow
`

func TestOwners(t *testing.T) {
	dir := copyShipped(t)
	writeFile(t, dir, IntentionsFile, ownerIntentions)
	uncached := mustLoad(t, dir, ModeEnforce)
	cached := loadCached(t, dir, 1<<20)
	o, p := identity("spiffe://example.org/o"), identity("spiffe://example.org/p")
	own := func(a gate.Action) *gate.Op {
		return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceLease, Action: a, Lease: 0x7a}
	}
	foreignKey := func(owner string) *gate.Op {
		op := kvOp(gate.ActionWrite, "/p/x")
		op.Foreign, op.Owner = true, owner
		return op
	}
	tests := []struct {
		name   string
		caller gate.Identity
		op     *gate.Op
		want   gate.Effect
	}{
		{"own lease", o, own(gate.ActionRead), gate.Allow},
		// Owners narrow nothing: a deny with owners matches the caller's
		// own ops as it would without them.
		{"own lease, a deny with owners", o, own(gate.ActionKeepalive), gate.Deny},
		{"own lease, a deny without owners", o, own(gate.ActionRevoke), gate.Deny},
		{"an intention without owners never matches a foreign op", o, foreignLease(gate.ActionGrant, "spiffe://example.org/team/a"), gate.Deny},
		{"owner matched by a segment glob", o, foreignLease(gate.ActionKeepalive, "spiffe://example.org/team/a"), gate.Allow},
		{"owner matched exactly", o, foreignLease(gate.ActionRead, "spiffe://example.org/lead"), gate.Allow},
		{"owner one segment too deep", o, foreignLease(gate.ActionRead, "spiffe://example.org/team/a/b"), gate.Deny},
		{"owner not listed", o, foreignLease(gate.ActionRead, "spiffe://example.org/other"), gate.Deny},
		{"owner in another trust domain", o, foreignLease(gate.ActionRead, "spiffe://other.org/lead"), gate.Deny},
		{"owner glob needs the whole ID", o, foreignLease(gate.ActionRead, "spiffe://example.org/leader"), gate.Deny},
		{"no owner on record, not listed", o, foreignLease(gate.ActionRead, ""), gate.Deny},
		{"a deny with owners wins", o, foreignLease(gate.ActionKeepalive, "spiffe://example.org/team/x"), gate.Deny},
		{"a deny with owners, another owner", o, foreignLease(gate.ActionRead, "spiffe://example.org/team/x"), gate.Allow},
		// deny-without-owners does not match foreign ops: nothing allows
		// this one either, but the deny is not the reason.
		{"a deny without owners does not match a foreign op", p, foreignLease(gate.ActionRevoke, "spiffe://example.org/o"), gate.Allow},
		{"double star matches any owner", p, foreignLease(gate.ActionRevoke, "spiffe://example.org/a/b/c"), gate.Allow},
		{"double star matches no owner on record", p, foreignLease(gate.ActionRevoke, ""), gate.Allow},
		{"keys and owners", p, foreignKey("spiffe://example.org/o"), gate.Allow},
		{"keys and another owner", p, foreignKey("spiffe://example.org/q"), gate.Deny},
		{"keys, not foreign", p, kvOp(gate.ActionWrite, "/p/x"), gate.Allow},
	}
	for _, e := range []*Engine{uncached, cached} {
		for range 2 {
			for _, tt := range tests {
				d, err := e.Authorize(context.Background(), tt.caller, tt.op)
				if err != nil || d.Effect != tt.want {
					t.Errorf("%s: Authorize = %v %q, %v; want %v", tt.name, d.Effect, d.Reason, err, tt.want)
				}
			}
		}
	}
	ex, err := uncached.Explain(context.Background(), o, foreignLease(gate.ActionKeepalive, "spiffe://example.org/team/x"))
	if err != nil || !slices.Equal(ex.Allowing, []string{"team-leases"}) || !slices.Equal(ex.Denying, []string{"no-keepalive-of-team-x"}) ||
		!strings.Contains(string(ex.Input), `"foreign":true`) || !strings.Contains(string(ex.Input), `"owner":"spiffe://example.org/team/x"`) {
		t.Errorf("Explain = %+v, %v", ex, err)
	}
}

func TestGeneratedOwnerRules(t *testing.T) {
	ins, err := parseIntentions("i.yaml", []byte(ownerIntentions))
	if err != nil {
		t.Fatal(err)
	}
	mod := string(generate("i.yaml", ins))
	for _, want := range []string{
		// Every intention matches ops that are not foreign as before.
		"allow_hits contains \"own-leases\" if {\n\tinput.caller.id == \"spiffe://example.org/o\"\n\tinput.op.resource == \"lease\"\n\tinput.op.foreign == false\n",
		// Intentions with owners also match foreign ops, one rule per
		// owner glob, indexed on the glob's literal part.
		"\tinput.op.foreign == true\n\tstartswith(input.op.owner, \"spiffe://example.org/team/\")\n\tglob.match(\"spiffe://example.org/team/*\", [\"/\"], input.op.owner, true)\n",
		"\tinput.op.foreign == true\n\tinput.op.owner == \"spiffe://example.org/lead\"\n",
		// "**" matches any owner, the empty one included: no test at all.
		"allow_hits contains \"p-any-owner\" if {\n\tinput.caller.id == \"spiffe://example.org/p\"\n\tinput.op.resource == \"lease\"\n\tinput.op.action == \"revoke\"\n\tinput.op.foreign == true\n\tinput.op.range == false\n}\n",
	} {
		if !strings.Contains(mod, want) {
			t.Errorf("generated module lacks\n%s\n---\n%s", want, mod)
		}
	}
	if n := strings.Count(mod, "input.op.foreign == true"); n != 2*2+2+2+3 { // a rule per owner glob and hits, covers, overlaps rule
		t.Errorf("%d rules for foreign ops\n%s", n, mod)
	}
}
