package monitoring

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The files under test, relative to this package.
var (
	alertsFile    = filepath.Join("..", "prometheus", "alerts.yaml")
	dashboardFile = filepath.Join("..", "grafana", "storegate.json")
)

// TestAlertsParse: Prometheus' rule loader accepts alerts.yaml (every
// expression and annotation template parses), every alert keeps the
// conventions, and the alerts the issue asks for are there.
func TestAlertsParse(t *testing.T) {
	qs, errs := RuleQueries(alertsFile)
	for _, err := range errs {
		t.Error(err)
	}
	have := map[string]bool{}
	for _, q := range qs {
		have[strings.TrimPrefix(q.Where, "alert ")] = true
	}
	for _, want := range []string{"StoregateReplicaDown", "StoregateFleetDown", "StoregateSVIDNotRenewed", "StoregateSVIDExpiring",
		"StoregatePolicyStale", "StoregatePolicyReloadFailures", "StoregatePolicyRevisionSkew", "StoregateDenialSpike",
		"StoregateUpstreamErrors", "StoregateUpstreamUnreachable", "StoregatePluginFailures"} {
		if !have[want] {
			t.Errorf("alerts.yaml has no alert %s", want)
		}
	}
}

// TestDashboardDecodes: the dashboard decodes strictly into Grafana's
// model, defines the variables it promises, has the panels the issue asks
// for, and every query parses once the variables are substituted.
func TestDashboardDecodes(t *testing.T) {
	d, err := DecodeDashboard(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if d.SchemaVersion < 41 {
		t.Errorf("schemaVersion %d is older than Grafana 12's", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = string(v.Type)
	}
	for name, typ := range map[string]string{"datasource": "datasource", "job": "query", "instance": "query"} {
		if vars[name] != typ {
			t.Errorf("variable %s is %q, want a %s variable", name, vars[name], typ)
		}
	}
	qs, errs := DashboardQueries(d)
	for _, err := range errs {
		t.Error(err)
	}
	panels := map[string]bool{}
	for _, q := range qs {
		if _, err := promql.ParseExpr(q.Expr); err != nil {
			t.Errorf("%s: %v", q.Where, err)
		}
		if title, ok := strings.CutPrefix(q.Where, "panel "); ok {
			panels[title[:strings.LastIndex(title, " target ")]] = true
		}
	}
	for _, want := range []string{"Decisions by result", "Denials by resource and action", "Stage latency p50 / p99",
		"Open streams by method", "Policy revision per replica", "Policy reload failures", "Plugin failures by plugin and kind",
		"SVID time left", "Upstream errors by protocol and code"} {
		if !panels[`"`+want+`"`] {
			t.Errorf("the dashboard has no panel %q with a query (have %v)", want, panels)
		}
	}
}

// TestBrokenFilesAreRefused: a temporary copy of each file with one defect
// is refused, with a message that names the defect's place.
func TestBrokenFilesAreRefused(t *testing.T) {
	alerts, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"promql syntax in an alert", "alerts", "storegate_svid_expiry_timestamp_seconds - time() < 600",
			"storegate_svid_expiry_timestamp_seconds - time() < < 600", "unexpected"},
		{"unknown rule field", "alerts", "        for: 10m\n", "        for: 10m\n        fro: 10m\n", "field fro not found"},
		{"alert without for", "alerts", "        for: 2m\n", "", "alert StoregateReplicaDown: for: is 0s"},
		{"alert without severity", "alerts", "          severity: info\n", "          sevrity: info\n", "alert StoregatePolicyReloadFailures: severity label"},
		{"alert without runbook", "alerts", "          runbook: >-\n            Check the pod", "          runbok: >-\n            Check the pod", "alert StoregateReplicaDown: no runbook annotation"},
		{"bad annotation template", "alerts", "{{ $labels.instance }} is not scraped", "{{ $labels.instance is not scraped", "StoregateReplicaDown"},
		{"unknown panel field", "dashboard", `"title": "SVID time left"`, `"titel": "x", "title": "SVID time left"`, "unexpected field 'titel'"},
		{"unknown query field", "dashboard", `"legendFormat": "{{decision}}"`, `"legendFormat": "{{decision}}", "exprr": "up"`, "unexpected field 'exprr'"},
		{"unknown stat option", "dashboard", `"graphMode": "none"`, `"graphMode": "none", "grapMode": "none"`, "grapMode"},
		{"unknown dashboard field", "dashboard", `"refresh": "30s"`, `"refresh": "30s", "refrsh": "30s"`, "unexpected field 'refrsh'"},
		{"undefined variable", "dashboard", `(decision) (rate(storegate_decisions_total{job=~\"$job\"`, `(decision) (rate(storegate_decisions_total{job=~\"$jbo\"`,
			`panel "Decisions by result" target A: `},
		{"promql syntax in a panel", "dashboard", `histogram_quantile(0.5, sum by (stage, le)`, `histogram_quantile(0.5, sum by (stage, le`,
			`panel "Stage latency p50 / p99" target A`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := alerts
			if tc.file == "dashboard" {
				src = dash
			}
			if !strings.Contains(string(src), tc.old) {
				t.Fatalf("the %s file no longer contains %q: update the test", tc.file, tc.old)
			}
			broken := strings.Replace(string(src), tc.old, tc.new, 1)
			path := filepath.Join(t.TempDir(), filepath.Base(map[string]string{"alerts": alertsFile, "dashboard": dashboardFile}[tc.file]))
			if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
				t.Fatal(err)
			}
			var msgs []string
			if tc.file == "alerts" {
				_, errs := RuleQueries(path)
				for _, err := range errs {
					msgs = append(msgs, err.Error())
				}
			} else if d, err := DecodeDashboard(path); err != nil {
				msgs = append(msgs, err.Error())
			} else {
				qs, errs := DashboardQueries(d)
				for _, err := range errs {
					msgs = append(msgs, err.Error())
				}
				for _, q := range qs {
					if _, err := promql.ParseExpr(q.Expr); err != nil {
						msgs = append(msgs, q.Where+": "+err.Error())
					}
				}
			}
			all := strings.Join(msgs, "\n")
			if !strings.Contains(all, tc.want) {
				t.Errorf("errors %q do not contain %q", all, tc.want)
			}
		})
	}
}
