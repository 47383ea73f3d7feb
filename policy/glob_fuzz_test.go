package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// refGlob is the obviously correct matcher FuzzGlob checks the generated
// Rego against, on bytes: "**" matches any run of bytes, "*" any run without
// '/', every other byte itself. m[i][j] says whether g[i:] matches s[j:].
func refGlob(g, s string) bool {
	m := make([][]bool, len(g)+1)
	for i := range m {
		m[i] = make([]bool, len(s)+1)
	}
	m[len(g)][len(s)] = true
	for i := len(g) - 1; i >= 0; i-- {
		for j := len(s); j >= 0; j-- {
			switch {
			case strings.HasPrefix(g[i:], "**"):
				// Skip the "**", or let it take one more byte.
				m[i][j] = m[i+2][j] || j < len(s) && m[i][j+1]
			case g[i] == '*' && (i == 0 || g[i-1] != '*'):
				m[i][j] = m[i+1][j] || j < len(s) && s[j] != '/' && m[i][j+1]
			case g[i] == '*':
				// The second star of a "**", matched from i-1.
				m[i][j] = false
			default:
				m[i][j] = j < len(s) && s[j] == g[i] && m[i+1][j+1]
			}
		}
	}
	return m[0][0]
}

// globProbe is a module of rules that ask, with the generator's own tests,
// what the generated intentions would ask of a glob: whether it matches
// input.key as a key (hit: not empty) and as an owner (empty allowed),
// and which of the covers in input.covers it covers or may overlap.
func globProbe(g glob) string {
	var b strings.Builder
	b.WriteString("package probe\n\n")
	rule := func(head string, tests []string) {
		b.WriteString(head + " if {\n")
		if strings.Contains(head, " contains ") {
			b.WriteString("\tsome i, c in input.covers\n")
		}
		n := 0
		for _, t := range tests {
			if t != "" {
				b.WriteString("\t" + t + "\n")
				n++
			}
		}
		if n == 0 {
			b.WriteString("\ttrue\n")
		}
		b.WriteString("}\n\n")
	}
	rule("hit", globTests("input.key", g, true))
	rule("owner", globTests("input.key", g, false))
	if g.open {
		rule("covers contains i", globTests("c", g, false))
	}
	for _, t := range overlapTests("c", g) {
		rule("overlaps contains i", []string{t})
	}
	return b.String()
}

// probeGlob evaluates the probe of g on key and the prefixes of key (as
// covers of ranges that hold key).
func probeGlob(t *testing.T, g glob, key string) (hit, owner bool, covers, overlaps map[int]bool) {
	t.Helper()
	src := globProbe(g)
	covs := make([]*ast.Term, len(key)+1)
	for i := range covs {
		covs[i] = ast.StringTerm(key[:i])
	}
	input := ast.NewObject(
		ast.Item(ast.StringTerm("key"), ast.StringTerm(key)),
		ast.Item(ast.StringTerm("covers"), ast.ArrayTerm(covs...)),
	)
	rs, err := rego.New(rego.Query("data.probe"), rego.Module("probe.rego", src),
		rego.ParsedInput(input), rego.SetRegoVersion(ast.RegoV1)).Eval(context.Background())
	if err != nil {
		t.Fatalf("glob %q: %v\n%s", g.raw, err, src)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		t.Fatalf("glob %q: result %v", g.raw, rs)
	}
	doc := rs[0].Expressions[0].Value.(map[string]any)
	set := func(name string) map[int]bool {
		out := map[int]bool{}
		list, _ := doc[name].([]any)
		for _, v := range list {
			var i int
			if _, err := fmt.Sscan(fmt.Sprint(v), &i); err != nil {
				t.Fatalf("%s holds %v", name, v)
			}
			out[i] = true
		}
		return out
	}
	hit, _ = doc["hit"].(bool)
	owner, _ = doc["owner"].(bool)
	return hit, owner, set("covers"), set("overlaps")
}

// coverSuffixes are what FuzzGlob appends to a cover the generated rules
// say a glob covers: every key of such a range must match.
var coverSuffixes = []string{"", "/", "x", "*", "/x/y", "\x00", "\xff", "/\xff/", "a/b/c/"}

// FuzzGlob checks the globs of intentions as the generated Rego matches
// them at decision time (a literal prefix by startswith, the rest by OPA's
// glob.match, ranges by the covers and overlaps tests) against refGlob:
//
//   - a key glob matches exactly the non-empty keys refGlob matches, and an
//     owner glob exactly the strings it matches, the empty one included;
//   - a range every key of which starts with cover, and that the covers
//     test says the glob covers, holds only keys the glob matches;
//   - a range that holds a key the glob matches is covered or overlapped
//     (else a deny intention could miss a key of a range it should deny).
func FuzzGlob(f *testing.F) {
	for _, s := range []struct{ glob, key string }{
		{"/app/**", "/app"}, {"/app/**", "/app/"}, {"/app/**", "/app/x/y"}, {"/app/**", "/application"},
		{"/app/*/secret", "/app/x/secret"}, {"/app/*/secret", `/app/x\/secret`}, {"/app/*/secret", "/app/x/y/secret"},
		{"/app/*/secret", "/app//secret"}, {"*/*/secret", "a/b/secret"}, {"*/*/secret", "/a/secret"},
		{"/a**/b", "/a/b"}, {"/a**/b", "/ax/y/b"}, {"/mid/**/conf", "/mid/a/b/conf"}, {"/mid/**/conf", "/mid/conf"},
		{"**", ""}, {"**", "x"}, {"*", ""}, {"*", "/"}, {"*", "abc"}, {"/x", "/x"}, {"/x", "/x/"},
		{"/u/ü/**", "/u/\xc3"}, {"/u/ü/**", "/u/ü/x"}, {"/u/*", "/u/\xff"}, {"/u/*/x", "/u/\xff\xfe/x"},
		{"/x/*", "/x/\x00"}, {"/x/*/**", "/x/\x00/\x00"}, {"/a*b*c", "/aXbYc"}, {"/a*b*c", "/a/b/c"}, {"/a*b*c", "/abc"},
		{"/a*b*c", "/abbc"}, {"/a*b**c", "/ab/c"}, {"/[a]?{b}\\c/*", `/[a]?{b}\c/x`}, {"/[a]?{b}\\c/*", `/a?b\c/x`},
		{"/{a,b}/*", "/a/x"}, {"/!x/*", "/!x/y"}, {"/a/**/", "/a//"}, {"/a/*/*", "/a//"}, {"//**", "//"},
		{"spiffe://example.org/*", "spiffe://example.org/web"}, {"spiffe://example.org/*", "spiffe://example.org/ns/web"},
		{"spiffe://example.org/**", "spiffe://example.org/"}, {"spiffe://*/web", "spiffe://x.org/web"},
		{"*x*", "x"}, {"*x*", "ax/xb"}, {"**x**", "/x/"}, {"*/**", "/"}, {"**/*", "/"}, {"a*", "a\xffb"},
		{"*\xc3\xbc", "\xc3\xbc"}, {"*ü*", "\xff\xc3\xbc\xff"}, {"/*ü", "/\xc3\xc3\xbc"},
	} {
		f.Add(s.glob, s.key)
	}
	f.Fuzz(checkGlobRules)
}

// checkGlobRules is FuzzGlob's check of one glob and key.
func checkGlobRules(t *testing.T, raw, key string) {
	if raw == "" || len(raw) > 32 || len(key) > 48 || checkGlob(raw) != nil {
		return
	}
	g := parseGlob(raw)
	hit, owner, covers, overlaps := probeGlob(t, g, key)
	want := refGlob(raw, key)
	if owner != want {
		t.Errorf("glob %q on %q: the owner test says %v, want %v", raw, key, owner, want)
	}
	if hit != (want && key != "") {
		t.Errorf("glob %q on key %q: the key test says %v, want %v", raw, key, hit, want && key != "")
	}
	for i := 0; i <= len(key); i++ {
		cover := key[:i]
		if covers[i] {
			for _, s := range append(coverSuffixes, key[i:]) {
				if !refGlob(raw, cover+s) {
					t.Errorf("glob %q covers the range of keys starting with %q, but not %q", raw, cover, cover+s)
				}
			}
		}
		if want && !covers[i] && !overlaps[i] {
			t.Errorf("glob %q matches %q, but neither covers nor overlaps the range of keys starting with %q", raw, key, cover)
		}
	}
}

func TestRefGlob(t *testing.T) {
	for _, tt := range []struct {
		glob, s string
		want    bool
	}{
		{"**", "", true}, {"*", "", true}, {"*", "/", false}, {"**", "/a/b", true},
		{"/app/**", "/app", false}, {"/app/**", "/app/", true}, {"/app/*", "/app/a/b", false},
		{"/a*b", "/ab", true}, {"/a*b", "/a/b", false}, {"/a**b", "/a/b", true}, {"/a/**/b", "/a/b", false},
		{"*/*", "/", true}, {"*/*", "a", false}, {"x", "x", true}, {"x", "xx", false}, {"**/*", "a/b/c", true},
		{"*b*", "abc", true}, {"*b*", "a/b/c", false}, {"**b*", "a/b/c", false}, {"**b*", "a/bc", true},
	} {
		if got := refGlob(tt.glob, tt.s); got != tt.want {
			t.Errorf("refGlob(%q, %q) = %v", tt.glob, tt.s, got)
		}
	}
}
