package monitoring

import (
	dto "github.com/prometheus/client_model/go"
)

// Exports is what a scrape of /metrics gives Prometheus: for every series
// name, the names of the labels its series carry and the values seen for
// each. Histograms and summaries are split into the series Prometheus
// stores (name_bucket with le, name_sum, name_count; name with quantile).
type Exports map[string]Labels

// Labels maps a label name to the set of its values seen.
type Labels map[string]map[string]bool

// targetLabels are added by Prometheus to every series it scrapes; their
// values come from the scrape configuration, not from /metrics.
var targetLabels = []string{"job", "instance"}

// scrapeSeries are the series Prometheus writes for every target itself
// (https://prometheus.io/docs/concepts/jobs_instances/), with only the
// target labels.
var scrapeSeries = []string{"up", "scrape_duration_seconds", "scrape_samples_scraped",
	"scrape_samples_post_metric_relabeling", "scrape_series_added"}

// ExportsOf is what a scrape of fams gives, the target's own series (up,
// scrape_*) included.
func ExportsOf(fams map[string]*dto.MetricFamily) Exports {
	e := Exports{}
	add := func(name string, m *dto.Metric, extra string, extraValue string) {
		ls := e[name]
		if ls == nil {
			ls = Labels{}
			e[name] = ls
		}
		for _, l := range m.GetLabel() {
			ls.add(l.GetName(), l.GetValue())
		}
		if extra != "" {
			ls.add(extra, extraValue)
		}
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				for _, b := range m.GetHistogram().GetBucket() {
					add(name+"_bucket", m, "le", formatFloat(b.GetUpperBound()))
				}
				add(name+"_bucket", m, "le", "+Inf")
				add(name+"_sum", m, "", "")
				add(name+"_count", m, "", "")
			case dto.MetricType_SUMMARY:
				for _, q := range m.GetSummary().GetQuantile() {
					add(name, m, "quantile", formatFloat(q.GetQuantile()))
				}
				add(name+"_sum", m, "", "")
				add(name+"_count", m, "", "")
			default:
				add(name, m, "", "")
			}
		}
	}
	for _, name := range scrapeSeries {
		e[name] = Labels{}
	}
	return e
}

func (ls Labels) add(name, value string) {
	vs := ls[name]
	if vs == nil {
		vs = map[string]bool{}
		ls[name] = vs
	}
	vs[value] = true
}
