package monitoring

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// exposition is a small /metrics in the text format, as the gateway's
// Prometheus handler writes it.
const exposition = `# TYPE storegate_decisions_total counter
storegate_decisions_total{action="write",decision="allow",protocol="etcd",resource="kv"} 3
storegate_decisions_total{action="write",decision="deny",protocol="etcd",resource="kv"} 1
# TYPE storegate_stage_duration_seconds histogram
storegate_stage_duration_seconds_bucket{protocol="etcd",stage="policy",le="0.001"} 2
storegate_stage_duration_seconds_bucket{protocol="etcd",stage="policy",le="+Inf"} 2
storegate_stage_duration_seconds_sum{protocol="etcd",stage="policy"} 0.0001
storegate_stage_duration_seconds_count{protocol="etcd",stage="policy"} 2
# TYPE storegate_policy_info gauge
storegate_policy_info{revision="abc",source="dir"} 1
`

func testExports(t *testing.T) Exports {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	return ExportsOf(fams)
}

// TestCheck: each kind of mistake a query can make against what /metrics
// exports is found, named after the query's place; correct queries pass.
func TestCheck(t *testing.T) {
	e := testExports(t)
	for _, tc := range []struct {
		expr string
		want string // "" for no error
	}{
		{`sum by (decision) (rate(storegate_decisions_total{job=~".+", instance=~".+"}[5m]))`, ""},
		{`histogram_quantile(0.99, sum by (stage, le) (rate(storegate_stage_duration_seconds_bucket[5m])))`, ""},
		{`count by (job) (count by (job, revision) (storegate_policy_info))`, ""},
		{`up == 0`, ""},
		{`sum by (job) (rate(storegate_decisions_total{decision="deny"}[5m])) / sum by (job) (rate(storegate_decisions_total[5m])) > 0.1`, ""},
		{`count(storegate_policy_info == 0) or vector(0)`, ""},
		{`storegate_stage_duration_seconds_count * on (job, instance) group_left (revision) storegate_policy_info`, ""},
		{`storegate_policy_info * on (revision) group_left (stage) storegate_stage_duration_seconds_count`,
			`* on (right side): the series reaching it have no label "revision"`},
		{`storegate_stage_duration_seconds_count * on (job) group_left (revison) storegate_policy_info`,
			`group_left: the series reaching it have no label "revison"`},
		{`sum(rate(storegate_decisons_total[5m]))`, `metric "storegate_decisons_total" is not exported`},
		{`sum by (decison) (rate(storegate_decisions_total[5m]))`, `sum by (decison): the series reaching it have no label "decison"`},
		{`rate(storegate_decisions_total{outcome="failure"}[5m])`, `matches label "outcome"`},
		{`rate(storegate_decisions_total{decision="denied"}[5m])`, `matches decision="denied", a value no series`},
		{`sum by (stage) (storegate_stage_duration_seconds_count) / sum by (protocol) (storegate_stage_duration_seconds_count)`, `carry different labels`},
		{`histogram_quantile(0.5, sum by (stage) (rate(storegate_stage_duration_seconds_bucket[5m])))`, `histogram_quantile: the series reaching it have no label "le"`},
		{`sum by (pod) (storegate_policy_info)`, `no label "pod"`},
		{`sum(rate(storegate_stage_duration_seconds[5m]))`, `metric "storegate_stage_duration_seconds" is not exported`},
		{`sum(rate(storegate_decisions_total[5m]`, `parse error`},
	} {
		errs := e.Check(Query{Where: "alert X", Expr: tc.expr})
		var msgs []string
		for _, err := range errs {
			msgs = append(msgs, err.Error())
		}
		all := strings.Join(msgs, "\n")
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%s: unexpected errors:\n%s", tc.expr, all)
		case tc.want != "" && !strings.Contains(all, tc.want):
			t.Errorf("%s: errors %q do not contain %q", tc.expr, all, tc.want)
		case tc.want != "" && !strings.HasPrefix(all, "alert X: "):
			t.Errorf("%s: error %q does not name the alert", tc.expr, all)
		}
	}
}
