package monitoring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
)

// gatewayBin is the gateway under test, built from this tree; pluginDir
// holds the example plugins.
var gatewayBin, pluginDir string

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithPlugins(m, raceEnabled, &gatewayBin, &pluginDir))
}

// intentions: web may read, write and watch /app/**, nothing else.
const intentions = `intentions:
  - name: web-app
    source: "spiffe://example.org/web"
    resources: [kv, watch]
    actions: [read, write, watch]
    keys: ["/app/**", "app/**"]
    effect: allow
`

// TestFilesAgainstLiveGateway: every metric and label the dashboard and
// the alerts name is one a real gateway exports. A gateway with both fronts
// and a plugin, on a real etcd and Consul agent, serves an allowed and a
// denied KV op on each front and an open watch; then a plugin file that
// does not load and a stopped Consul agent make the series that only
// failures create. Its /metrics is then the reference: a query that names
// anything else fails the test, named by its panel or alert. Temporary
// copies with a wrong metric name or label show that the check catches
// them.
func TestFilesAgainstLiveGateway(t *testing.T) {
	env := testenv.New(t)
	pki := env.PKI("web")
	ec := env.Etcd(testenv.EtcdSpec{PKI: pki})
	cs := env.Consul(testenv.ConsulSpec{})
	cfg := env.GatewayConfig(pki, env.Policies(intentions), ec.Endpoints, cs.HTTPAddr)
	plugin := filepath.Join(t.TempDir(), "limits.wasm")
	copyFile(t, filepath.Join(pluginDir, "limits.wasm"), plugin)
	cfg.Plugins = []config.PluginConfig{{Name: "limits", Path: plugin,
		Match:  config.PluginMatch{Resources: []string{"kv"}, Actions: []string{"write"}},
		Config: map[string]any{"max_value_bytes": 1024, "key_charset": "a-zA-Z0-9/_.-"}}}
	cfg.PluginCacheDir = t.TempDir()
	gw := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg, LogLevel: "info"})
	ctx := t.Context()

	// etcd front: an allowed put, a denied one, a watch left open.
	tc, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: pki.Cert("web"), Key: pki.Key("web"), CA: pki.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + gw.Etcd}, TLS: tc.Clone(),
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Close() })
	if _, err := etcd.Put(ctx, "/app/greeting", "hello"); err != nil {
		t.Fatalf("allowed put: %v", err)
	}
	if _, err := etcd.Put(ctx, "/secret/token", "x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("put outside the caller's keys: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := etcd.Watch(wctx, "/app/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if wr := <-wch; !wr.Created || wr.Err() != nil {
		t.Fatalf("watch not created: %+v %v", wr, wr.Err())
	}

	// Consul front: the same, over HTTP.
	tr := &http.Transport{TLSClientConfig: tc.Clone(), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	consul := func(method, path string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, method, "https://"+gw.Consul+path, strings.NewReader("v"))
		if err != nil {
			return 0, err
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{{http.MethodPut, "/v1/kv/app/greeting", 200}, {http.MethodGet, "/v1/kv/app/greeting", 200}, {http.MethodPut, "/v1/kv/secret/token", 403}} {
		if code, err := consul(c.method, c.path); err != nil || code != c.want {
			t.Fatalf("consul %s %s: %d %v, want %d", c.method, c.path, code, err, c.want)
		}
	}

	// A plugin file that does not load: counted as the plugin's failure
	// (kind abi); the old version serves on.
	junk := plugin + ".new"
	if err := os.WriteFile(junk, []byte("not a WebAssembly module"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(junk, plugin); err != nil {
		t.Fatal(err)
	}
	// The Consul agent gone: the next Consul call is an upstream error.
	cs.Close()
	if code, err := consul(http.MethodGet, "/v1/kv/app/greeting"); err != nil || code < 500 {
		t.Fatalf("consul GET with the agent stopped: %d %v, want a 5xx", code, err)
	}

	var exports Exports
	env.Eventually(30*time.Second, func(ctx context.Context) error {
		m, err := gw.Metrics(ctx)
		if err != nil {
			return err
		}
		for _, w := range []struct {
			name   string
			labels map[string]string
		}{
			{"storegate_decisions_total", map[string]string{"protocol": "etcd", "decision": "deny"}},
			{"storegate_decisions_total", map[string]string{"protocol": "consul", "decision": "allow"}},
			{"storegate_streams_open", map[string]string{"protocol": "etcd"}},
			{"storegate_plugin_failures_total", map[string]string{"plugin": "limits"}},
			{"storegate_upstream_errors_total", map[string]string{"protocol": "consul"}},
		} {
			if m.Sum(w.name, w.labels) < 1 {
				return fmt.Errorf("%s%v is not yet on /metrics", w.name, w.labels)
			}
		}
		exports = ExportsOf(m)
		return nil
	})
	t.Logf("/metrics exports %d series names", len(exports))

	rules, errs := RuleQueries(alertsFile)
	for _, err := range errs {
		t.Error(err)
	}
	d, err := DecodeDashboard(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	panels, errs := DashboardQueries(d)
	for _, err := range errs {
		t.Error(err)
	}
	used := map[string]bool{}
	for _, q := range append(rules, panels...) {
		for _, err := range exports.Check(q) {
			t.Error(err)
		}
		for _, name := range Metrics(q) {
			used[name] = true
		}
	}
	var unused []string
	for name := range exports {
		if strings.HasPrefix(name, "storegate_") && !used[name] && !used[strings.TrimSuffix(strings.TrimSuffix(name, "_count"), "_sum")+"_bucket"] {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	t.Logf("storegate series neither the dashboard nor an alert shows: %v", unused)

	// The check catches a wrong metric and a wrong label in a copy of each
	// file, and names the alert or panel.
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"metric in an alert", alertsFile, "expr: storegate_svid_expiry_timestamp_seconds - time() < 600",
			"expr: storegate_svid_expiry_seconds - time() < 600", `alert StoregateSVIDExpiring: metric "storegate_svid_expiry_seconds" is not exported`},
		{"label in an alert", alertsFile, "sum by (job, instance, plugin, kind) (rate(storegate_plugin_failures_total[5m]))",
			"sum by (job, instance, plugin, reason) (rate(storegate_plugin_failures_total[5m]))", `alert StoregatePluginFailures: sum by (job, instance, plugin, reason): the series reaching it have no label "reason"`},
		{"label value in an alert", alertsFile, `storegate_policy_reloads_total{outcome="failure"}`,
			`storegate_policy_reloads_total{outcome="failed"}`, `alert StoregatePolicyReloadFailures: storegate_policy_reloads_total{outcome="failed"} matches outcome="failed"`},
		{"metric in a panel", dashboardFile, "sum by (protocol, method) (storegate_streams_open{",
			"sum by (protocol, method) (storegate_open_streams{", `panel "Open streams by method" target A: metric "storegate_open_streams" is not exported`},
		{"label in a panel", dashboardFile, "sum by (protocol, code) (rate(storegate_upstream_errors_total{",
			"sum by (protocol, status) (rate(storegate_upstream_errors_total{", `panel "Upstream errors by protocol and code" target A: sum by (protocol, status): the series reaching it have no label "status"`},
		{"label in a variable", dashboardFile, `label_values(storegate_policy_reloads_total{job=~\"$job\"}, instance)`,
			`label_values(storegate_policy_reloads_total{job=~\"$job\"}, pod)`, `variable "instance": count by (pod): the series reaching it have no label "pod"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tc.old) {
				t.Fatalf("%s no longer contains %q: update the test", tc.file, tc.old)
			}
			path := filepath.Join(t.TempDir(), filepath.Base(tc.file))
			if err := os.WriteFile(path, []byte(strings.Replace(string(b), tc.old, tc.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			var qs []Query
			if tc.file == alertsFile {
				qs, errs = RuleQueries(path)
			} else {
				d, err := DecodeDashboard(path)
				if err != nil {
					t.Fatal(err)
				}
				qs, errs = DashboardQueries(d)
			}
			for _, q := range qs {
				errs = append(errs, exports.Check(q)...)
			}
			var msgs []string
			for _, err := range errs {
				msgs = append(msgs, err.Error())
			}
			if all := strings.Join(msgs, "\n"); !strings.Contains(all, tc.want) {
				t.Errorf("errors %q do not contain %q", all, tc.want)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatalf("%v (make plugins)", err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
