package monitoring

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Query is one PromQL expression and where it is written, for messages:
// `alert StoregateSVIDExpiring` or `panel "SVID time left" target A`.
type Query struct {
	Where string
	Expr  string
}

// promql is the parser every check uses: Prometheus' defaults, no
// experimental functions (a rule file must load in a stock Prometheus).
var promql = parser.NewParser(parser.Options{})

// Check parses q and returns every problem with it against e: a parse
// error; a metric e does not export; a label a selector matches, or an
// aggregation, vector matching or function uses, that the series reaching
// it cannot carry; an equality matcher on a label value no series has (a
// misspelt "denied" for "deny"); the two sides of a one-to-one binary
// operation with different labels (no series would ever match). Each
// error names q.Where.
func (e Exports) Check(q Query) []error {
	expr, err := promql.ParseExpr(q.Expr)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", q.Where, err)}
	}
	c := &checker{exports: e}
	c.labels(expr)
	var errs []error
	for _, msg := range c.problems {
		errs = append(errs, fmt.Errorf("%s: %s", q.Where, msg))
	}
	return errs
}

// Metrics is every metric name q's selectors name (nil if q does not
// parse).
func Metrics(q Query) []string {
	expr, err := promql.ParseExpr(q.Expr)
	if err != nil {
		return nil
	}
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if name := selectorName(vs); name != "" && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
		return nil
	})
	slices.Sort(names)
	return names
}

type checker struct {
	exports  Exports
	problems []string
}

// set is the names of the labels a vector's series may carry; nil for a
// scalar or a string.
type set map[string]bool

func setOf(names ...string) set {
	s := set{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

func (s set) sorted() []string { return slices.Sorted(maps.Keys(s)) }

func (c *checker) fail(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// need reports the names in want that in (the labels of what reaches the
// node described by what) lacks.
func (c *checker) need(in set, want []string, what string) {
	if in == nil {
		return
	}
	for _, l := range want {
		if !in[l] {
			c.fail("%s: the series reaching it have no label %q (they have %s)", what, l, strings.Join(in.sorted(), ", "))
		}
	}
}

func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// labels checks n and returns the labels its result's series may carry.
func (c *checker) labels(n parser.Expr) set {
	switch n := n.(type) {
	case *parser.VectorSelector:
		return c.selector(n)
	case *parser.MatrixSelector:
		return c.labels(n.VectorSelector)
	case *parser.SubqueryExpr:
		return c.labels(n.Expr)
	case *parser.ParenExpr:
		return c.labels(n.Expr)
	case *parser.StepInvariantExpr:
		return c.labels(n.Expr)
	case *parser.UnaryExpr:
		return c.labels(n.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return nil
	case *parser.AggregateExpr:
		return c.aggregate(n)
	case *parser.Call:
		return c.call(n)
	case *parser.BinaryExpr:
		return c.binary(n)
	}
	c.fail("unexpected PromQL node %T in %s", n, n)
	return nil
}

func (c *checker) selector(vs *parser.VectorSelector) set {
	name := selectorName(vs)
	if name == "" {
		c.fail("selector %s names no metric", vs)
		return setOf(targetLabels...)
	}
	have, ok := c.exports[name]
	if !ok {
		c.fail("metric %q is not exported by the gateway's /metrics", name)
		return setOf(targetLabels...)
	}
	out := setOf(targetLabels...)
	for l := range have {
		out[l] = true
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName {
			continue
		}
		if !out[m.Name] {
			c.fail("%s matches label %q, which no series of %s has (they have %s)", vs, m.Name, name, strings.Join(out.sorted(), ", "))
			continue
		}
		if m.Type == labels.MatchEqual && m.Value != "" && have[m.Name] != nil && !have[m.Name][m.Value] {
			c.fail("%s matches %s=%q, a value no series of %s has (seen: %s)", vs, m.Name, m.Value, name,
				strings.Join(slices.Sorted(maps.Keys(have[m.Name])), ", "))
		}
	}
	return out
}

func (c *checker) aggregate(n *parser.AggregateExpr) set {
	in := c.labels(n.Expr)
	if n.Param != nil {
		c.labels(n.Param) // topk's k, quantile's φ, count_values' label
	}
	what := fmt.Sprintf("%s %s (%s)", n.Op, map[bool]string{true: "without", false: "by"}[n.Without], strings.Join(n.Grouping, ", "))
	c.need(in, n.Grouping, what)
	if in == nil {
		c.fail("%s aggregates %s, which is not a vector", n.Op, n.Expr)
		return set{}
	}
	switch n.Op {
	case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO:
		return in
	}
	var out set
	if n.Without {
		out = maps.Clone(in)
		for _, l := range n.Grouping {
			delete(out, l)
		}
	} else {
		out = setOf(n.Grouping...)
	}
	if n.Op == parser.COUNT_VALUES {
		if s, ok := n.Param.(*parser.StringLiteral); ok {
			out[s.Val] = true
		}
	}
	return out
}

func (c *checker) call(n *parser.Call) set {
	args := make([]set, len(n.Args))
	for i, a := range n.Args {
		args[i] = c.labels(a)
	}
	str := func(i int) string {
		if i < len(n.Args) {
			if s, ok := n.Args[i].(*parser.StringLiteral); ok {
				return s.Val
			}
		}
		return ""
	}
	if n.Func.ReturnType != parser.ValueTypeVector {
		return nil // scalar(), time(), ...
	}
	switch n.Func.Name {
	case "vector", "absent", "absent_over_time":
		return set{}
	case "label_replace": // (v, dst, replacement, src, regex)
		out := maps.Clone(args[0])
		if src := str(3); src != "" {
			c.need(args[0], []string{src}, "label_replace source")
		}
		out[str(1)] = true
		return out
	case "label_join": // (v, dst, separator, src...)
		out := maps.Clone(args[0])
		for i := 3; i < len(n.Args); i++ {
			c.need(args[0], []string{str(i)}, "label_join source")
		}
		out[str(1)] = true
		return out
	case "histogram_quantile", "histogram_fraction":
		in := args[len(args)-1]
		c.need(in, []string{"le"}, n.Func.Name)
		out := maps.Clone(in)
		delete(out, "le")
		return out
	}
	for _, a := range args {
		if a != nil {
			return a
		}
	}
	return set{}
}

func (c *checker) binary(n *parser.BinaryExpr) set {
	l, r := c.labels(n.LHS), c.labels(n.RHS)
	if l == nil || r == nil {
		if l == nil {
			return r
		}
		return l
	}
	vm := n.VectorMatching
	if vm == nil {
		vm = &parser.VectorMatching{Card: parser.CardOneToOne}
	}
	what := fmt.Sprintf("%s %s", n.Op, map[bool]string{true: "on", false: "ignoring"}[vm.On])
	if vm.On {
		c.need(l, vm.MatchingLabels, what+" (left side)")
		c.need(r, vm.MatchingLabels, what+" (right side)")
	}
	switch vm.Card {
	case parser.CardManyToMany: // and, or, unless
		if n.Op == parser.LOR {
			out := maps.Clone(l)
			maps.Copy(out, r)
			return out
		}
		return l
	case parser.CardManyToOne:
		c.need(r, vm.Include, "group_left")
		out := maps.Clone(l)
		for _, x := range vm.Include {
			out[x] = true
		}
		return out
	case parser.CardOneToMany:
		c.need(l, vm.Include, "group_right")
		out := maps.Clone(r)
		for _, x := range vm.Include {
			out[x] = true
		}
		return out
	}
	// One-to-one: the result keeps the on() labels, or drops the ignoring()
	// ones; both sides must then carry the same labels to match at all.
	key := func(s set) set {
		if vm.On {
			return setOf(vm.MatchingLabels...)
		}
		out := maps.Clone(s)
		for _, x := range vm.MatchingLabels {
			delete(out, x)
		}
		return out
	}
	kl, kr := key(l), key(r)
	if !vm.On && !maps.Equal(kl, kr) {
		c.fail("the sides of %q carry different labels (%s vs %s): no series would match; aggregate them to the same labels or use on(...)",
			n.Op.String(), strings.Join(kl.sorted(), ", "), strings.Join(kr.sorted(), ", "))
	}
	return kl
}

func formatFloat(f float64) string {
	if math.IsInf(f, +1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
