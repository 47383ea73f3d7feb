package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/storegate/storegate/gate"
)

// TestStoregateMetrics: each instrument appears on /metrics under its
// Prometheus name with exactly what was recorded.
func TestStoregateMetrics(t *testing.T) {
	notAfter := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	tel, err := Setup(t.Context(), Config{SVIDExpiry: func() (time.Time, bool) { return notAfter, true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	m, ctx := tel.Metrics(), t.Context()
	web := gate.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web")}
	put := &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionWrite}
	for range 3 {
		m.Observe(ctx, &gate.Record{Caller: web, Op: put, Decision: gate.Decision{Effect: gate.Allow}, Duration: time.Microsecond})
	}
	m.Observe(ctx, &gate.Record{Caller: web, Op: put, Decision: gate.Decision{Effect: gate.Deny, Reason: "no"}})
	m.Observe(ctx, &gate.Record{Caller: web, Op: put, Decision: gate.Decision{Effect: gate.Allow}, Err: errors.New("eval")})
	m.ObserveStage(ctx, gate.ProtocolConsul, StageUpstream, 3*time.Millisecond)
	m.StreamOpened(ctx, gate.ProtocolEtcd, "/etcdserverpb.Watch/Watch")
	m.StreamOpened(ctx, gate.ProtocolEtcd, "/etcdserverpb.Watch/Watch")
	m.StreamClosed(ctx, gate.ProtocolEtcd, "/etcdserverpb.Watch/Watch")
	m.PolicyReloaded(nil)
	m.PolicyReloaded(errors.New("bad rego"))
	m.PolicyReloaded(nil)
	m.UpstreamError(ctx, gate.ProtocolConsul, "unreachable")
	m.PluginFailed(ctx, "schema", "trap")

	srv := httptest.NewServer(tel.MetricsHandler())
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	want := []struct {
		name   string
		labels []string
		value  string
	}{
		{"storegate_decisions_total", []string{`protocol="etcd"`, `resource="kv"`, `action="write"`, `decision="allow"`}, "3"},
		// An evaluation error is a denial.
		{"storegate_decisions_total", []string{`protocol="etcd"`, `resource="kv"`, `action="write"`, `decision="deny"`}, "2"},
		{"storegate_stage_duration_seconds_count", []string{`protocol="etcd"`, `stage="policy"`}, "5"},
		{"storegate_stage_duration_seconds_count", []string{`protocol="consul"`, `stage="upstream"`}, "1"},
		{"storegate_streams_open", []string{`protocol="etcd"`, `method="/etcdserverpb.Watch/Watch"`}, "1"},
		{"storegate_policy_reloads_total", []string{`outcome="success"`}, "2"},
		{"storegate_policy_reloads_total", []string{`outcome="failure"`}, "1"},
		{"storegate_policy_last_reload_successful", nil, "1"}, // the last one succeeded
		{"storegate_upstream_errors_total", []string{`protocol="consul"`, `code="unreachable"`}, "1"},
		{"storegate_plugin_failures_total", []string{`plugin="schema"`, `kind="trap"`}, "1"},
		{"storegate_svid_expiry_timestamp_seconds", nil, "1.798859045e+09"},
	}
	for _, w := range want {
		if got, ok := sample(text, w.name, w.labels); !ok || got != w.value {
			t.Errorf("%s%v = %q (found %v), want %s", w.name, w.labels, got, ok, w.value)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

// sample finds the value of the one sample of name whose labels include
// every one of labels.
func sample(text, name string, labels []string) (string, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(m[1], l)
		}
		if ok {
			return m[2], true
		}
	}
	return "", false
}

// TestCountersStartAtZero: the counters alerts watch for a first failure
// are on /metrics at 0 before anything happened (reload outcomes from the
// start, plugin failures once InitPlugins named the plugins), InitPlugins
// called again after a failure changes no count, and the last-reload gauge
// follows the last outcome.
func TestCountersStartAtZero(t *testing.T) {
	tel, err := Setup(t.Context(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	srv := httptest.NewServer(tel.MetricsHandler())
	t.Cleanup(srv.Close)
	scrape := func() string {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	type want struct {
		name   string
		labels []string
		value  string
	}
	check := func(text string, wants []want) {
		t.Helper()
		for _, w := range wants {
			if got, ok := sample(text, w.name, w.labels); !ok || got != w.value {
				t.Errorf("%s%v = %q (found %v), want %s", w.name, w.labels, got, ok, w.value)
			}
		}
		if t.Failed() {
			t.Fatalf("/metrics:\n%s", text)
		}
	}

	text := scrape()
	check(text, []want{
		{"storegate_policy_reloads_total", []string{`outcome="success"`}, "0"},
		{"storegate_policy_reloads_total", []string{`outcome="failure"`}, "0"},
		{"storegate_policy_last_reload_successful", nil, "1"},
	})
	if _, ok := sample(text, "storegate_plugin_failures_total", nil); ok {
		t.Fatalf("plugin failures on /metrics before InitPlugins named a plugin:\n%s", text)
	}

	m := tel.Metrics()
	kinds := []string{"trap", "timeout", "memory", "malformed", "abi", "busy"}
	m.InitPlugins([]string{"schema", "limits"}, kinds)
	m.PluginFailed(t.Context(), "schema", "timeout")
	m.InitPlugins([]string{"schema", "limits"}, kinds)
	m.PolicyReloaded(errors.New("bad rego"))
	var wants []want
	for _, p := range []string{"schema", "limits"} {
		for _, k := range kinds {
			v := "0"
			if p == "schema" && k == "timeout" {
				v = "1"
			}
			wants = append(wants, want{"storegate_plugin_failures_total", []string{`plugin="` + p + `"`, `kind="` + k + `"`}, v})
		}
	}
	wants = append(wants,
		want{"storegate_policy_reloads_total", []string{`outcome="success"`}, "0"},
		want{"storegate_policy_reloads_total", []string{`outcome="failure"`}, "1"},
		want{"storegate_policy_last_reload_successful", nil, "0"})
	check(scrape(), wants)
	m.PolicyReloaded(nil)
	check(scrape(), []want{{"storegate_policy_last_reload_successful", nil, "1"}})
}

// TestMetricsAllocateNothing: the instruments a request goes through
// allocate nothing once their label set was seen (the doc's promise; each
// request records several).
func TestMetricsAllocateNothing(t *testing.T) {
	m, err := NewMetrics(sdkmetric.NewMeterProvider(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rec := &gate.Record{Op: &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead}}
	for name, f := range map[string]func(){
		"Observe":       func() { m.Observe(ctx, rec) },
		"ObserveStage":  func() { m.ObserveStage(ctx, gate.ProtocolEtcd, StageTotal, time.Millisecond) },
		"UpstreamError": func() { m.UpstreamError(ctx, gate.ProtocolEtcd, "Unavailable") },
		"StreamOpened":  func() { m.StreamOpened(ctx, gate.ProtocolEtcd, "/etcdserverpb.Watch/Watch") },
	} {
		f() // the label set's first use builds its option
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}
