package policy

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/storegate/storegate/gate"
)

func BenchmarkScratchVariants(b *testing.B) {
	orig, _ := os.ReadFile("../policies/authz.rego")
	ysrc, _ := os.ReadFile("../policies/intentions.yaml")
	ins, _ := parseIntentions("i.yaml", ysrc)
	gen := string(generate("i.yaml", ins))
	minimal := `package storegate.authz
import data.storegate.intentions
default allow := false
allow if {
	input.op.range == false
	intentions.allow_hits[_]
	not intentions.deny_hits[_]
}
allow if {
	input.op.range == true
	intentions.allow_covers[_]
	not intentions.deny_overlaps[_]
}
`
	variants := []struct{ name, authz string }{
		{"A", string(orig)},
		{"B", strings.ReplaceAll(string(orig), "\tnot input.op.range\n", "\tinput.op.range == false\n")},
		{"M", minimal},
	}
	for _, vv := range variants {
		mods := map[string]*ast.Module{
			"a.rego": ast.MustParseModuleWithOpts(vv.authz, ast.ParserOptions{RegoVersion: ast.RegoV1}),
			"g.rego": ast.MustParseModuleWithOpts(gen, ast.ParserOptions{RegoVersion: ast.RegoV1}),
		}
		c, err := compile(mods)
		if err != nil {
			b.Fatal(err)
		}
		pq, err := rego.New(rego.Query(queryAllow), rego.Compiler(c)).PrepareForEval(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		v := &version{allow: pq}
		op := kvOp(gate.ActionRead, "/app/config/x")
		b.Run(vv.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				d, _ := v.decide(context.Background(), web, op, false)
				if d.Effect != gate.Allow {
					b.Fatal(d)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
