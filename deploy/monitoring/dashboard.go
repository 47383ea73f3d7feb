package monitoring

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// registerPlugins makes the SDK decode panel options, field configs and
// queries by their panel and data source types; without it they decode
// into untyped bags that accept anything.
var registerPlugins = sync.OnceFunc(plugins.RegisterDefaultPlugins)

// DecodeDashboard decodes a dashboard JSON file strictly into the Grafana
// Foundation SDK's dashboard model (schema v1): an unknown or misspelt
// field, a missing required one or a value of the wrong type is an error,
// in the dashboard, its variables, its panels' options and field
// configuration, and its Prometheus queries.
//
// The SDK's strict decoders return their error list (cog.BuildErrors) even
// when it is empty, a nil slice in a non-nil error; their callers take
// that for a failure and drop the value, so that Dashboard's own strict
// decoder silently loses every panel, and Panel's every query. So the
// dashboard is decoded by the SDK, then each panel and each of its queries
// again, one by one, with the empty list taken for success.
func DecodeDashboard(path string) (*dashboard.Dashboard, error) {
	registerPlugins()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d dashboard.Dashboard
	if err := d.UnmarshalJSONStrict(b); failed(err) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var raw struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d.Panels = nil
	var errs []error
	for i, rp := range raw.Panels {
		p, err := decodePanelOrRow(rp)
		if err != nil {
			errs = append(errs, fmt.Errorf("panels[%d]: %w", i, err))
			continue
		}
		d.Panels = append(d.Panels, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

func decodePanelOrRow(raw json.RawMessage) (dashboard.PanelOrRowPanel, error) {
	var head struct {
		Type   string            `json:"type"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return dashboard.PanelOrRowPanel{}, err
	}
	if head.Type != "row" {
		p, err := decodePanel(raw)
		return dashboard.PanelOrRowPanel{Panel: p}, err
	}
	var row dashboard.RowPanel
	if err := row.UnmarshalJSONStrict(raw); failed(err) {
		return dashboard.PanelOrRowPanel{}, err
	}
	row.Panels = nil
	for i, rp := range head.Panels {
		p, err := decodePanel(rp)
		if err != nil {
			return dashboard.PanelOrRowPanel{}, fmt.Errorf("panels[%d]: %w", i, err)
		}
		row.Panels = append(row.Panels, *p)
	}
	return dashboard.PanelOrRowPanel{RowPanel: &row}, nil
}

// decodePanel decodes a panel strictly, and each of its targets as a
// Prometheus query.
func decodePanel(raw json.RawMessage) (*dashboard.Panel, error) {
	var p dashboard.Panel
	if err := p.UnmarshalJSONStrict(raw); failed(err) {
		return nil, err
	}
	var rt struct {
		Targets []json.RawMessage `json:"targets"`
	}
	if err := json.Unmarshal(raw, &rt); err != nil {
		return nil, err
	}
	p.Targets = nil
	for i, t := range rt.Targets {
		var q prometheus.Dataquery
		if err := q.UnmarshalJSONStrict(t); failed(err) {
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		p.Targets = append(p.Targets, &q)
	}
	return &p, nil
}

// failed reports whether err from one of the SDK's strict decoders is an
// error (see DecodeDashboard).
func failed(err error) bool {
	var list cog.BuildErrors
	if errors.As(err, &list) {
		return len(list) > 0
	}
	return err != nil
}

// DashboardQueries is every PromQL expression of d, Grafana's variables
// substituted: each panel target's expr and each query variable's
// label_values(...) selector. A panel with no query, a target that is not
// a Prometheus query, or a variable the dashboard does not define is an
// error.
func DashboardQueries(d *dashboard.Dashboard) ([]Query, []error) {
	vars := map[string]string{}
	for name, v := range grafanaBuiltins {
		vars[name] = v
	}
	var qs []Query
	var errs []error
	for _, v := range d.Templating.List {
		switch v.Type {
		case dashboard.VariableTypeInterval:
			vars[v.Name] = "5m"
		case dashboard.VariableTypeDatasource:
			vars[v.Name] = "" // only ever a panel's or query's datasource uid
		default:
			vars[v.Name] = ".+" // a label value, or (multi-valued) a regex of them
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != dashboard.VariableTypeQuery {
			continue
		}
		where := fmt.Sprintf("variable %q", v.Name)
		if v.Query == nil || v.Query.String == nil {
			errs = append(errs, fmt.Errorf("%s: no query string", where))
			continue
		}
		q, err := variableQuery(*v.Query.String, vars)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		qs = append(qs, Query{Where: where, Expr: q})
	}
	var panels []dashboard.Panel
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			panels = append(panels, *p.Panel)
		case p.RowPanel != nil:
			panels = append(panels, p.RowPanel.Panels...)
		}
	}
	for _, p := range panels {
		title := ""
		if p.Title != nil {
			title = *p.Title
		}
		if len(p.Targets) == 0 {
			errs = append(errs, fmt.Errorf("panel %q: no queries", title))
		}
		for i, t := range p.Targets {
			pq, ok := t.(*prometheus.Dataquery)
			if !ok {
				errs = append(errs, fmt.Errorf("panel %q target %d: a %s query, not Prometheus", title, i, t.DataqueryType()))
				continue
			}
			ref := fmt.Sprint(i)
			if pq.RefId != nil {
				ref = *pq.RefId
			}
			where := fmt.Sprintf("panel %q target %s", title, ref)
			expr, err := substitute(pq.Expr, vars)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			qs = append(qs, Query{Where: where, Expr: expr})
		}
	}
	return qs, errs
}

// grafanaBuiltins are the global variables a Prometheus query may use
// (https://grafana.com/docs/grafana/latest/dashboards/variables/add-template-variables/#global-variables),
// with values of their kind.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "4m", "__interval": "1m", "__interval_ms": "60000",
	"__range": "6h", "__range_s": "21600", "__range_ms": "21600000",
}

// variableRef is $name, ${name}, ${name:format} or [[name]].
var variableRef = regexp.MustCompile(`\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// substitute replaces Grafana's variables in expr; one the dashboard does
// not define is an error (Grafana would send it to Prometheus as it is).
func substitute(expr string, vars map[string]string) (string, error) {
	var unknown []string
	out := variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		v, ok := vars[name]
		if !ok {
			unknown = append(unknown, "$"+name)
			return ref
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("%s uses undefined variables %s", expr, strings.Join(slices.Compact(unknown), ", "))
	}
	return out, nil
}

// labelValues is the Prometheus data source's label_values(selector,
// label) variable query.
var labelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\s*\)\s*$`)

// variableQuery turns label_values(sel, label) into a query that checks
// sel and that its series carry label: count by (label) (sel).
func variableQuery(q string, vars map[string]string) (string, error) {
	m := labelValues.FindStringSubmatch(q)
	if m == nil {
		return "", errors.New("not a label_values(selector, label) query: " + q)
	}
	sel, err := substitute(m[1], vars)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("count by (%s) (%s)", m[2], sel), nil
}
