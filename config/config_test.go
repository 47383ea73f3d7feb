package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/decisionlog"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/plugins"
	"github.com/storegate/storegate/policy"
	"github.com/storegate/storegate/telemetry"
)

const goodConfig = `listen:
  etcd: 127.0.0.1:23790
  admin: 127.0.0.1:9901
identity:
  files: {cert: certs/gateway.pem, key: certs/gateway-key.pem, bundle: certs/bundle.pem}
  trust_domains: [example.org]
upstreams:
  etcd:
    endpoints: [https://127.0.0.1:2379]
    tls: {cert: certs/gateway.pem, key: certs/gateway-key.pem, ca: certs/bundle.pem}
    dial_timeout: 5s
    max_request_bytes: 2MiB
policy: {dir: policies, mode: shadow, cache_size: 0}
telemetry: {traces: {exporter: otlp, sampling: 0.25}}
`

func TestParse(t *testing.T) {
	cfg, err := Parse([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstreams.Etcd.MaxRequest != 2<<20 || cfg.Policy.Mode != policy.ModeShadow || *cfg.Policy.CacheSize != 0 {
		t.Errorf("decoded %+v", cfg)
	}
	if tc := cfg.TelemetryConfig(nil); *tc.Traces.Exporter != telemetry.ExporterOTLP || *tc.Traces.Sampling != 0.25 {
		t.Errorf("telemetry = %+v", tc)
	}
	if got := cfg.Listen.EtcdAdvertise; len(got) != 1 || got[0] != "https://127.0.0.1:23790" {
		t.Errorf("default advertise URLs = %v", got)
	}
	cfg.Resolve("/etc/storegate")
	if cfg.Identity.Files.Cert != "/etc/storegate/certs/gateway.pem" || cfg.Policy.Dir != "/etc/storegate/policies" {
		t.Errorf("relative paths not resolved against the config's directory: %+v", cfg.Identity.Files)
	}
}

// TestParseConfigDefaultsTelemetry: what the file does not say about
// traces stays unsaid (nil), for the OTEL_* environment to decide in
// telemetry.Setup; what it says is kept, zero included.
func TestParseConfigDefaultsTelemetry(t *testing.T) {
	tests := []struct {
		name, section string
		exporter      *telemetry.Exporter
		sampling      *float64
	}{
		{"no section", "", nil, nil},
		{"exporter only", "telemetry: {traces: {exporter: stdout}}\n", new(telemetry.ExporterStdout), nil},
		{"none said", "telemetry: {traces: {exporter: none}}\n", new(telemetry.ExporterNone), nil},
		{"sampling zero", "telemetry: {traces: {exporter: otlp, sampling: 0}}\n", new(telemetry.ExporterOTLP), new(0.0)},
		{"sampling only", "telemetry: {traces: {sampling: 0.5}}\n", nil, new(0.5)},
	}
	base := goodConfig[:strings.Index(goodConfig, "telemetry:")]
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(base + tt.section))
			if err != nil {
				t.Fatal(err)
			}
			tc := cfg.TelemetryConfig(nil)
			if !reflect.DeepEqual(tc.Traces.Exporter, tt.exporter) || !reflect.DeepEqual(tc.Traces.Sampling, tt.sampling) {
				t.Errorf("telemetry = %v, %v; want %v, %v", tc.Traces.Exporter, tc.Traces.Sampling, tt.exporter, tt.sampling)
			}
		})
	}
}

func TestParseConfigDefaultsCache(t *testing.T) {
	cfg, err := Parse([]byte(strings.Replace(goodConfig, ", cache_size: 0", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if *cfg.Policy.CacheSize != defaultDecisionCache {
		t.Errorf("cache_size default = %d", *cfg.Policy.CacheSize)
	}
}

// TestParseConfigListsEveryProblem: unknown keys are errors, and
// validation reports every problem at once.
func TestParseConfigListsEveryProblem(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown keys", "listen: {etcd: 127.0.0.1:1, port: 2}\npolicy: {dri: x}\n",
			[]string{"field port not found", "field dri not found"}},
		{"every invalid field", `listen: {etcd: nohost, admin: 127.0.0.1:1, etcd_advertise: [http://x]}
identity: {files: {cert: a}, trust_domains: ["Not A Domain!"]}
upstreams: {etcd: {endpoints: [ftp://x], tls: {cert: c}, username: u, max_txn_ops: -1}}
policy: {mode: loud, cache_size: -1}
telemetry: {traces: {exporter: jaeger, sampling: 1.5}}
`, []string{
			"listen.etcd", "listen.etcd_advertise", "identity.files: cert, key and bundle",
			"identity.trust_domains", "upstreams.etcd.endpoints", "cert and key go together",
			"username and password_file go together", "max_txn_ops", `line 4: mode "loud" is not enforce or shadow`,
			"policy.cache_size", `line 5: exporter "jaeger" is not none, otlp or stdout`, "telemetry.traces.sampling",
		}},
		{"unknown telemetry keys", "telemetry: {traces: {exporter: otlp, ratio: 0.1}, decision_log: stdout}\n",
			[]string{"field ratio not found", "field decision_log not found"}},
		{"nothing", "{}\n", []string{"identity: set files or workload_api", "identity.trust_domains", "upstreams: set etcd, consul or both"}},
		{"both identities", "identity: {files: {cert: a, key: b, bundle: c}, workload_api: unix:///x, trust_domains: [example.org]}\n",
			[]string{"set only one of files and workload_api"}},
		{"bad duration", "upstreams: {etcd: {endpoints: [https://x:1], dial_timeout: soon}}\n", []string{`line 1: "soon" is not a duration`}},
		{"bad size", "limits: {refused_burst_bytes: lots}\n", []string{`line 1: "lots" is not a size`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestEitherFrontAlone: a gateway may run only the Consul front or only the
// etcd front; a listener without its upstream is an error.
func TestEitherFrontAlone(t *testing.T) {
	const identity = "identity: {files: {cert: a, key: b, bundle: c}, trust_domains: [example.org]}\n"
	consulOnly, err := Parse([]byte(identity + "listen: {consul: 127.0.0.1:8501}\nupstreams: {consul: {address: http://127.0.0.1:8500}}\n"))
	if err != nil {
		t.Fatalf("a Consul-only gateway: %v", err)
	}
	if consulOnly.Listen.Etcd != "" || consulOnly.Upstreams.Etcd != nil || consulOnly.Fronts() != "consul" {
		t.Fatalf("a Consul-only gateway runs %q (listen.etcd %q)", consulOnly.Fronts(), consulOnly.Listen.Etcd)
	}
	etcdOnly, err := Parse([]byte(identity + "upstreams: {etcd: {endpoints: [https://127.0.0.1:2379]}}\n"))
	if err != nil {
		t.Fatalf("an etcd-only gateway: %v", err)
	}
	if etcdOnly.Listen.Etcd == "" || etcdOnly.Fronts() != "etcd" {
		t.Fatalf("an etcd-only gateway runs %q (listen.etcd %q)", etcdOnly.Fronts(), etcdOnly.Listen.Etcd)
	}
	_, err = Parse([]byte(identity + "listen: {etcd: 127.0.0.1:23790, consul: 127.0.0.1:8501}\nupstreams: {consul: {address: http://127.0.0.1:8500}}\n"))
	if err == nil || !strings.Contains(err.Error(), "listen.etcd and upstreams.etcd go together") {
		t.Fatalf("an etcd listener without an etcd upstream: %v", err)
	}
}

// TestConsulSocket: the agent's unix socket goes with an http:// address
// only (the socket carries no TLS).
func TestConsulSocket(t *testing.T) {
	const identity = "identity: {files: {cert: a, key: b, bundle: c}, trust_domains: [example.org]}\n"
	cfg, err := Parse([]byte(identity + "listen: {consul: 127.0.0.1:8501}\nupstreams: {consul: {address: http://127.0.0.1:8500, socket: /run/consul/http.sock}}\n"))
	if err != nil || cfg.Upstreams.Consul.Socket != "/run/consul/http.sock" {
		t.Fatalf("socket with http://: %v, %+v", err, cfg)
	}
	_, err = Parse([]byte(identity + "listen: {consul: 127.0.0.1:8501}\nupstreams: {consul: {address: https://127.0.0.1:8501, socket: /run/consul/http.sock}}\n"))
	if err == nil || !strings.Contains(err.Error(), "upstreams.consul.socket: only with an http:// address") {
		t.Fatalf("socket with https://: %v", err)
	}
}

// TestMarshalRoundTrip: a configuration built as a value and marshalled
// parses back to the same value (tests and the bench build configs so).
func TestMarshalRoundTrip(t *testing.T) {
	cfg, err := Parse([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Plugins = []PluginConfig{
		{Name: "p", Path: "/p.wasm", Timeout: Duration(25 * time.Millisecond), MemoryLimit: 3 << 20},
		{Name: "q", Path: "/q.wasm", Failure: PluginFailure(plugins.FailAllow), Match: PluginMatch{
			Protocols: []string{"consul"}, Resources: []string{"kv"}, Actions: []string{"write"}, Keys: []string{"/app/**"}}},
	}
	cfg.DecisionLog = &DecisionLogConfig{Output: "stdout", OnError: decisionlog.ErrorDrop, QueueBytes: 1 << 20}
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(cfg, back) {
		t.Errorf("round trip differs:\n%+v\n%+v\n%s", cfg, back, b)
	}
}

// TestEnumsReportedWithTheirLines: every typed enum of the file is parsed
// at decoding, and bad values are reported with their lines together with
// unknown keys and validation problems, not one at a time.
func TestEnumsReportedWithTheirLines(t *testing.T) {
	const file = `identity: {files: {cert: a, key: b, bundle: c}, trust_domains: [example.org]}
upstreams: {etcd: {endpoints: [https://127.0.0.1:2379]}}
policy: {mode: loud}
telemetry: {traces: {exporter: jaeger}}
listen: {prot: 2}
decision_log: {output: stdout, on_error: panic}
plugins:
  - {name: a, path: /a.wasm, failure: maybe, match: {protocols: [redis], resources: [bogus], actions: [fly]}}
fleet: {ttl: 1s}
`
	_, err := Parse([]byte(file))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		`line 3: mode "loud" is not enforce or shadow`,
		`line 4: exporter "jaeger" is not none, otlp or stdout`,
		`line 5: field prot not found`,
		`line 6: on_error "panic" is not deny or drop`,
		`line 8: failure "maybe" is not deny or allow`,
		"fleet.ttl: 1s is under 2s", // validation still runs
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	// The minimal case of the issue: two bad enums and an unknown key.
	_, err = Parse([]byte("policy: {mode: loud}\ntelemetry: {traces: {exporter: jaeger}}\nlisten: {prot: 2}\n"))
	if n := strings.Count(err.Error(), "line "); n != 3 {
		t.Errorf("%d problems with lines reported, want 3:\n%v", n, err)
	}
}

// TestEnumsParsed: each enum's spellings decode to its typed value.
func TestEnumsParsed(t *testing.T) {
	cfg, err := Parse([]byte(goodConfig + `decision_log: {output: stdout, on_error: drop}
plugins: [{name: a, path: /a.wasm, failure: allow, match: {protocols: [etcd, consul], resources: [kv], actions: [read]}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	specs, errs := cfg.PluginSpecs()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if cfg.Policy.Mode != policy.ModeShadow || *cfg.Telemetry.Traces.Exporter != telemetry.ExporterOTLP ||
		cfg.DecisionLog.OnError != decisionlog.ErrorDrop || specs[0].Failure != plugins.FailAllow ||
		!reflect.DeepEqual(specs[0].Match.Protocols, []gate.Protocol{gate.ProtocolEtcd, gate.ProtocolConsul}) {
		t.Errorf("decoded %+v, plugins %+v", cfg, specs)
	}
}

// TestMarshalRoundTripOfValue: a configuration built as a value, as tests
// and the bench build them, with no telemetry said, survives Marshal and
// Parse, unsaid fields still unsaid.
func TestMarshalRoundTripOfValue(t *testing.T) {
	cfg := Config{
		Identity:  IdentityConfig{Files: &IdentityFiles{Cert: "/c", Key: "/k", Bundle: "/b"}, TrustDomains: []string{"example.org"}},
		Upstreams: UpstreamsConfig{Etcd: &EtcdUpstream{Endpoints: []string{"https://127.0.0.1:2379"}}},
		Policy:    PolicyConfig{Dir: "/p", Mode: policy.ModeShadow},
	}
	cfg.Defaults()
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(&cfg, back) {
		t.Errorf("round trip differs:\n%+v\n%+v\n%s", cfg, back, b)
	}
	if back.Telemetry.Traces.Exporter != nil || back.Telemetry.Traces.Sampling != nil {
		t.Errorf("unsaid telemetry came back said: %s", b)
	}
}

// TestPolicyDirAndBundleExclusive: a config naming both a policy directory
// and a bundle is refused, rather than one of them silently ignored.
func TestPolicyDirAndBundleExclusive(t *testing.T) {
	_, err := Parse([]byte(`
listen: {etcd: 127.0.0.1:1}
identity: {files: {cert: c, key: k, bundle: b}, trust_domains: [example.org]}
upstreams: {etcd: {endpoints: [https://127.0.0.1:2]}}
policy:
  dir: policies
  bundle: {url: https://bundles.example/b.tar.gz, verification: {public_key: k.pub}}
`))
	if err == nil || !strings.Contains(err.Error(), "set dir or bundle, not both") {
		t.Fatalf("Parse: %v, want the dir/bundle conflict reported", err)
	}
}
