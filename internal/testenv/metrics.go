package testenv

import (
	"context"
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is a gateway's /metrics, parsed by Prometheus' own text parser.
type Metrics map[string]*dto.MetricFamily

// Metrics reads and parses the gateway's /metrics.
func (g *Gateway) Metrics(ctx context.Context) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.Admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", g.Admin, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s/metrics: %w", g.Admin, err)
	}
	return Metrics(fams), nil
}

// Sum is the sum of name's samples (counters, gauges, untyped) whose labels
// include every one of labels; 0 when there are none.
func (m Metrics) Sum(name string, labels map[string]string) float64 {
	fam := m[name]
	if fam == nil {
		return 0
	}
	var sum float64
next:
	for _, s := range fam.GetMetric() {
		have := map[string]string{}
		for _, l := range s.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case s.Counter != nil:
			sum += s.GetCounter().GetValue()
		case s.Gauge != nil:
			sum += s.GetGauge().GetValue()
		case s.Untyped != nil:
			sum += s.GetUntyped().GetValue()
		}
	}
	return sum
}

// Metric is the sum of name's samples matching labels in the gateway's
// /metrics now.
func (g *Gateway) Metric(ctx context.Context, name string, labels map[string]string) (float64, error) {
	m, err := g.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	return m.Sum(name, labels), nil
}
