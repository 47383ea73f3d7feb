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
