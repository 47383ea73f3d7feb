package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"pgregory.net/rapid"

	"github.com/storegate/storegate/gate"
)

// both decides op with the fast path and with OPA on the same version,
// with and without the reason a filter carries in shadow mode, and fails
// the test when they differ in anything.
func both(t interface {
	Helper()
	Fatalf(string, ...any)
}, v *version, caller gate.Identity, op *gate.Op) gate.Decision {
	t.Helper()
	ctx := context.Background()
	if v.fast == nil || !v.fast.handles(op) {
		t.Fatalf("the fast path does not handle %+v", op)
	}
	var out gate.Decision
	for _, withReason := range []bool{true, false} {
		fast, ferr := v.fastDecide(ctx, caller, op, withReason)
		opa, oerr := v.decide(ctx, caller, op, withReason)
		if ferr != nil || oerr != nil {
			t.Fatalf("errors: fast %v, OPA %v", ferr, oerr)
		}
		if fast != opa {
			in, _ := json.Marshal(mustJSON(Input(caller, op)))
			t.Fatalf("withReason=%v: fast path %v %q, OPA %v %q\ninput: %s", withReason, fast.Effect, fast.Reason, opa.Effect, opa.Reason, in)
		}
		if withReason {
			out = fast
		}
	}
	return out
}

// TestFastPathShipped checks the fast path on the shipped policy: it is the
// evaluator, and it agrees with OPA (and with TestShippedDecisions'
// expectations, which it now answers) on the cases of authz_test.rego.
func TestFastPathShipped(t *testing.T) {
	e := mustLoad(t, shipped, ModeEnforce)
	if got := e.Status().Evaluator; got != EvaluatorCompiled {
		t.Fatalf("Status().Evaluator = %q, want %q", got, EvaluatorCompiled)
	}
	v := e.current.Load()
	span := func(a gate.Action, key, end string) *gate.Op {
		return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: a, Keys: gate.KeyRange{Key: []byte(key), End: []byte(end)}}
	}
	tests := []struct {
		name   string
		caller gate.Identity
		op     *gate.Op
		want   gate.Effect
		reason string
	}{
		{"web reads its keys", web, kvOp(gate.ActionRead, "/app/config"), gate.Allow, ""},
		{"web writes elsewhere", web, kvOp(gate.ActionWrite, "/other/x"), gate.Deny,
			`no intention allows spiffe://example.org/web to write kv "/other/x"`},
		{"double star needs the slash", web, kvOp(gate.ActionRead, "/app"), gate.Deny,
			`no intention allows spiffe://example.org/web to read kv "/app"`},
		{"deny wins", web, kvOp(gate.ActionRead, "/app/secret/x"), gate.Deny, `deny intention "web-no-secrets" matches`},
		{"shared is one segment", batch, kvOp(gate.ActionRead, "/shared/a/b"), gate.Deny,
			`no intention allows spiffe://example.org/batch to read kv "/shared/a/b"`},
		{"shared top level", batch, kvOp(gate.ActionRead, "/shared/motd"), gate.Allow, ""},
		{"prefix inside", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/config/"), gate.Allow, ""},
		{"prefix filtered", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"), gate.Filter,
			`deny intention "web-no-secrets" may match keys in kv prefix "/app/"`},
		{"every key filtered", web, &gate.Op{Resource: gate.ResourceKV, Action: gate.ActionRead, Keys: gate.KeyRange{Key: []byte{}, End: []byte{0}}}, gate.Filter,
			`no intention allows spiffe://example.org/web to read every kv key`},
		{"prefix delete", web, prefixOp(gate.ResourceKV, gate.ActionDelete, "/app/"), gate.Deny,
			`deny intention "web-no-secrets" may match keys in kv prefix "/app/"`},
		{"prefix inside a deny", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/secret/"), gate.Deny,
			`deny intention "web-no-secrets" matches every key in kv prefix "/app/secret/"`},
		{"open-ended range", web, span(gate.ActionRead, "/app/x", "\x00"), gate.Filter,
			`no intention allows spiffe://example.org/web to read kv keys from "/app/x" on`},
		{"span", web, span(gate.ActionRead, "/app/config/a", "/app/config/c"), gate.Allow, ""},
		{"span across", batch, span(gate.ActionDelete, "/shared/a", "/shared/c"), gate.Deny,
			`no intention allows spiffe://example.org/batch to delete kv range ["/shared/a", "/shared/c")`},
		{"admin everything", admin, span(gate.ActionDelete, "\x00", "\x00"), gate.Allow, ""},
		{"status one segment", identity("spiffe://example.org/ns/batch"), bareOp(gate.ResourceStatus, gate.ActionRead), gate.Deny,
			"no intention allows spiffe://example.org/ns/batch to read status"},
		{"keyed intentions need a key", web, bareOp(gate.ResourceKV, gate.ActionRead), gate.Deny,
			"no intention allows spiffe://example.org/web to read kv"},
		{"foreign lease", web, foreignLease(gate.ActionKeepalive, admin.String()), gate.Deny,
			"no intention allows spiffe://example.org/web to keepalive lease"},
		{"admin on web's lease", admin, foreignLease(gate.ActionRevoke, web.String()), gate.Allow, ""},
		{"gateway's lease", admin, foreignLease(gate.ActionWrite, "spiffe://example.org/storegate/r1"), gate.Deny,
			`deny intention "gateway-leases" matches`},
		{"own lease write denied by gateway-leases' own-op rule", admin, bareOp(gate.ResourceLease, gate.ActionWrite), gate.Deny,
			`deny intention "gateway-leases" matches`},
		{"binary key", web, kvOp(gate.ActionRead, "/app/\xff\x00"), gate.Allow, ""},
		{"binary key denied", batch, kvOp(gate.ActionRead, "/x/\xff"), gate.Deny,
			`no intention allows spiffe://example.org/batch to read kv "/x/\xff"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := both(t, v, tt.caller, tt.op)
			if d.Effect != tt.want || d.Reason != tt.reason {
				t.Errorf("decision %v %q; want %v %q", d.Effect, d.Reason, tt.want, tt.reason)
			}
			if got := e.EvaluatorOf(tt.op); got != EvaluatorCompiled {
				t.Errorf("EvaluatorOf = %q", got)
			}
		})
	}
	t.Run("service ops go to OPA", func(t *testing.T) {
		op := &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: gate.ActionRegister, Service: &gate.Service{Name: "web-a"}}
		if got := e.EvaluatorOf(op); got != EvaluatorOPA {
			t.Errorf("EvaluatorOf(service op) = %q, want %q", got, EvaluatorOPA)
		}
		if d, err := e.Authorize(context.Background(), web, op); err != nil || d.Effect != gate.Allow {
			t.Errorf("Authorize = %v, %v", d, err)
		}
	})
}

// TestFastPathOnlyForTheShippedEngine checks that any other policy is
// decided by OPA: authz.rego changed by one byte, another module beside it,
// no intentions, and the fast path turned off.
func TestFastPathOnlyForTheShippedEngine(t *testing.T) {
	changed := copyShipped(t)
	b, err := os.ReadFile(filepath.Join(changed, "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, changed, "authz.rego", string(b)+"\n")
	extra := copyShipped(t)
	writeFile(t, extra, "extra.rego", "package storegate.extra\n\nx := 1\n")
	noIntentions := copyShipped(t)
	if err := os.Remove(filepath.Join(noIntentions, IntentionsFile)); err != nil {
		t.Fatal(err)
	}
	off, err := Load(context.Background(), Config{Dir: shipped, Logger: discardLogger(), EvalTimeout: mustLoadTimeout, DisableFastPath: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]*Engine{
		"authz.rego changed": mustLoad(t, changed, ModeEnforce),
		"another module":     mustLoad(t, extra, ModeEnforce),
		"no intentions":      mustLoad(t, noIntentions, ModeEnforce),
		"turned off":         off,
	} {
		if got := e.Status().Evaluator; got != EvaluatorOPA {
			t.Errorf("%s: Evaluator %q, want %q", name, got, EvaluatorOPA)
		}
		if e.current.Load().fast != nil {
			t.Errorf("%s: a fast path was built", name)
		}
	}
	if got := mustLoad(t, copyShipped(t), ModeEnforce).Status().Evaluator; got != EvaluatorCompiled {
		t.Errorf("a copy of the shipped policy: Evaluator %q, want %q", got, EvaluatorCompiled)
	}
}

// TestFastPathShadowMode checks that shadow mode wraps fast decisions as it
// wraps OPA's.
func TestFastPathShadowMode(t *testing.T) {
	fast := mustLoad(t, shipped, ModeShadow)
	opa, err := Load(context.Background(), Config{Dir: shipped, Mode: ModeShadow, Logger: discardLogger(), EvalTimeout: mustLoadTimeout, DisableFastPath: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []*gate.Op{
		kvOp(gate.ActionRead, "/app/secret/x"), prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"), kvOp(gate.ActionRead, "/app/x"),
	} {
		a, aerr := fast.Authorize(context.Background(), web, op)
		b, berr := opa.Authorize(context.Background(), web, op)
		a.Revision, b.Revision = "", ""
		if aerr != nil || berr != nil || a != b {
			t.Errorf("%q: fast %v %v, OPA %v %v", op.Keys.Key, a, aerr, b, berr)
		}
	}
}

// TestFastPathAllowAllocatesNothing: an allowed op costs no allocation,
// single key and range.
func TestFastPathAllowAllocatesNothing(t *testing.T) {
	e := mustLoad(t, scaledPolicy(t, 1000), ModeEnforce)
	ctx := context.Background()
	for _, op := range []*gate.Op{kvOp(gate.ActionRead, "/app/config/db"), prefixOp(gate.ResourceKV, gate.ActionRead, "/app/config/")} {
		n := testing.AllocsPerRun(1000, func() {
			if d, err := e.Authorize(ctx, web, op); err != nil || d.Effect != gate.Allow {
				t.Fatalf("Authorize = %v, %v", d, err)
			}
		})
		if n != 0 {
			t.Errorf("%q: %v allocations per allowed decision, want 0", op.Keys.Key, n)
		}
	}
}

// TestFastPathAgreesWithOPA is the differential test: random intentions
// files and random ops, decided by the fast path and by OPA over the same
// loaded version, must get the same effect and the same reason, and a
// filtered range the same decisions for the keys in it.
// -rapid.checks sets the number of files (2000 unless given); each is
// asked opsPerFile ops.
func TestFastPathAgreesWithOPA(t *testing.T) {
	if f := flag.Lookup("rapid.checks"); f != nil && !flagSet("rapid.checks") {
		_ = f.Value.Set("2000")
		t.Cleanup(func() { _ = f.Value.Set(f.DefValue) })
	}
	dir := t.TempDir()
	authz, err := os.ReadFile(filepath.Join(shipped, "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "authz.rego", string(authz))
	rapid.Check(t, func(rt *rapid.T) {
		ins := rapid.SliceOfN(genIntention(), 1, 8).Draw(rt, "intentions")
		src := intentionsYAML(ins)
		s := &source{dir: dir, rego: map[string][]byte{filepath.Join(dir, "authz.rego"): authz},
			intentions: filepath.Join(dir, IntentionsFile), intentionsSrc: src}
		v, err := prepare(context.Background(), s, loadOptions{timeout: mustLoadTimeout})
		if err != nil {
			rt.Fatalf("prepare: %v\n%s", err, src)
		}
		if v.fast == nil {
			rt.Fatalf("no fast path for\n%s", src)
		}
		for i := range opsPerFile {
			caller := genCaller().Draw(rt, fmt.Sprintf("caller%d", i))
			op := genOp().Draw(rt, fmt.Sprintf("op%d", i))
			d := both(rt, v, caller, op)
			if d.Effect == gate.Filter {
				// The front re-checks the keys of a filtered range one by
				// one, as single-key reads: they must agree too.
				for j := range 4 {
					suffix := rapid.SampledFrom([]string{"", "a", "/a", "/a/b", "é", "\xff", "x/"}).Draw(rt, fmt.Sprintf("suffix%d.%d", i, j))
					cover, _ := op.Keys.Prefix()
					key := append(bytes.Clone(cover), suffix...)
					if !op.Keys.Contains(key) {
						continue
					}
					one := *op
					one.Keys = gate.KeyRange{Key: key}
					both(rt, v, caller, &one)
				}
			}
		}
	})
}

const opsPerFile = 25

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// randIntention is a generated intention, written as YAML by intentionsYAML.
type randIntention struct {
	Name                          string
	Source                        string
	Resources, Actions            []string
	Keys, Services, Owners, Addrs []string
	Deny                          bool
}

// segments are what generated globs and keys are made of: literals that
// collide often, characters glob.match would read as meta characters, a
// non-ASCII letter, and wildcards.
var (
	keySegments  = []string{"a", "b", "ab", "é", "x?", "[c]", `\`, "{d}", ""}
	globSegments = append(cloneStrings(keySegments), "*", "**", "a*", "*b", "a**", "**b", "*é*")
	pathSegments = []string{"web", "batch", "ns", "a", "w1"}
	someRes      = []string{"kv", "watch", "lease", "lock", "status"}
	someAct      = []string{"read", "write", "delete", "watch", "grant", "keepalive", "acquire"}
	allResources = func() (out []gate.Resource) {
		for r := gate.ResourceKV; r <= gate.ResourceStatus; r++ {
			out = append(out, r)
		}
		return out
	}()
	allActions = func() (out []gate.Action) {
		for a := gate.ActionRead; a <= gate.ActionAdmin; a++ {
			out = append(out, a)
		}
		return out
	}()
)

func cloneStrings(s []string) []string { return append([]string(nil), s...) }

// genGlob draws a '/'-delimited glob of up to four segments, with or
// without a leading '/'.
func genGlob(segs []string) *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		parts := rapid.SliceOfN(rapid.SampledFrom(segs), 1, 4).Draw(t, "segments")
		g := strings.Join(parts, "/")
		if rapid.Bool().Draw(t, "rooted") {
			g = "/" + g
		}
		for strings.Contains(g, "***") {
			g = strings.ReplaceAll(g, "***", "**")
		}
		if g == "" {
			g = "/"
		}
		return g
	})
}

// genIDGlob draws a SPIFFE ID glob (sources, owners) or "**".
func genIDGlob() *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		if rapid.IntRange(0, 5).Draw(t, "any") == 0 {
			return "**"
		}
		td := rapid.SampledFrom([]string{"example.org", "other.org", "*", "example.*"}).Draw(t, "td")
		path := rapid.SliceOfN(rapid.SampledFrom(append(cloneStrings(pathSegments), "*", "**", "w*")), 0, 3).Draw(t, "path")
		g := "spiffe://" + td
		if len(path) > 0 {
			g += "/" + strings.Join(path, "/")
		}
		for strings.Contains(g, "***") {
			g = strings.ReplaceAll(g, "***", "**")
		}
		return g
	})
}

func genNames(pool []string) *rapid.Generator[[]string] {
	return rapid.Custom(func(t *rapid.T) []string {
		if rapid.IntRange(0, 3).Draw(t, "star") == 0 {
			return []string{"*"}
		}
		return rapid.SliceOfNDistinct(rapid.SampledFrom(pool), 1, 3, rapid.ID[string]).Draw(t, "names")
	})
}

func genIntention() *rapid.Generator[randIntention] {
	return rapid.Custom(func(t *rapid.T) randIntention {
		in := randIntention{
			Source:    genIDGlob().Draw(t, "source"),
			Resources: genNames(someRes).Draw(t, "resources"),
			Actions:   genNames(someAct).Draw(t, "actions"),
			Deny:      rapid.Bool().Draw(t, "deny"),
		}
		switch rapid.IntRange(0, 5).Draw(t, "targets") {
		case 0, 1, 2:
			in.Keys = rapid.SliceOfN(genGlob(globSegments), 1, 3).Draw(t, "keys")
		case 3:
			in.Services = rapid.SliceOfN(genGlob(globSegments), 1, 2).Draw(t, "services")
		case 4:
			in.Addrs = []string{"10.0.0.0/8:*"}
		}
		if rapid.IntRange(0, 3).Draw(t, "owned") == 0 {
			in.Owners = rapid.SliceOfN(genIDGlob(), 1, 2).Draw(t, "owners")
		}
		return in
	})
}

// intentionsYAML writes generated intentions as an intentions file; their
// names are numbered so that they are unique and sort as they come.
func intentionsYAML(ins []randIntention) []byte {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	list := func(ss []string) string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = q(s)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	var b bytes.Buffer
	b.WriteString("intentions:\n")
	for i, in := range ins {
		fmt.Fprintf(&b, "  - name: i%d\n    source: %s\n    resources: %s\n    actions: %s\n", i, q(in.Source), list(in.Resources), list(in.Actions))
		for _, f := range []struct {
			name string
			v    []string
		}{{"keys", in.Keys}, {"services", in.Services}, {"owners", in.Owners}, {"addresses", in.Addrs}} {
			if f.v != nil {
				fmt.Fprintf(&b, "    %s: %s\n", f.name, list(f.v))
			}
		}
		effect := "allow"
		if in.Deny {
			effect = "deny"
		}
		fmt.Fprintf(&b, "    effect: %s\n", effect)
	}
	return b.Bytes()
}

func genCaller() *rapid.Generator[gate.Identity] {
	return rapid.Custom(func(t *rapid.T) gate.Identity {
		td := rapid.SampledFrom([]string{"example.org", "other.org"}).Draw(t, "td")
		path := rapid.SliceOfN(rapid.SampledFrom(pathSegments), 0, 3).Draw(t, "path")
		id := "spiffe://" + td
		if len(path) > 0 {
			id += "/" + strings.Join(path, "/")
		}
		return identity(id)
	})
}

// genKey draws a key of generated segments, sometimes with bytes that are
// not UTF-8 or a NUL.
func genKey() *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		segs := append(cloneStrings(keySegments), "\xff", "\x00", "\xc3")
		parts := rapid.SliceOfN(rapid.SampledFrom(segs), 0, 4).Draw(t, "segments")
		k := strings.Join(parts, "/")
		if rapid.Bool().Draw(t, "rooted") {
			k = "/" + k
		}
		if rapid.Bool().Draw(t, "trailing") {
			k += "/"
		}
		return []byte(k)
	})
}

func genOp() *rapid.Generator[*gate.Op] {
	return rapid.Custom(func(t *rapid.T) *gate.Op {
		op := &gate.Op{Protocol: gate.ProtocolEtcd}
		if rapid.Bool().Draw(t, "common") {
			r, _ := gate.ParseResource(rapid.SampledFrom(someRes).Draw(t, "resource"))
			a, _ := gate.ParseAction(rapid.SampledFrom(someAct).Draw(t, "action"))
			op.Resource, op.Action = r, a
		} else {
			op.Resource = rapid.SampledFrom(allResources).Draw(t, "resource")
			op.Action = rapid.SampledFrom(allActions).Draw(t, "action")
		}
		op.Keys.Key = genKey().Draw(t, "key")
		switch rapid.IntRange(0, 5).Draw(t, "range") {
		case 0:
			op.Keys.End = gate.PrefixEnd(op.Keys.Key)
		case 1:
			op.Keys.End = []byte{0}
		case 2:
			op.Keys.End = genKey().Draw(t, "end")
		case 3:
			op.Keys.Key = nil // an op that names no key
		}
		if rapid.IntRange(0, 3).Draw(t, "foreign") == 0 {
			op.Foreign = true
			op.Owner = rapid.SampledFrom([]string{"", "spiffe://example.org/web", "spiffe://example.org/ns/a",
				"spiffe://other.org/batch", "spiffe://example.org"}).Draw(t, "owner")
		}
		op.Lease = rapid.Int64Range(0, 3).Draw(t, "lease")
		return op
	})
}

func mustJSON(v ast.Value) any {
	x, err := ast.JSON(v)
	if err != nil {
		return err.Error()
	}
	return x
}
