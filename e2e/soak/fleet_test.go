package soak

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
)

// Callers of the soak's policy: web may do everything under /soak/ but
// /soak/secret/, reader may only read and watch /soak/, nobody has no
// intention at all.
const (
	web    = "web"
	reader = "reader"
	nobody = "nobody"
)

// soakIntentions is the soak's policy.
const soakIntentions = `intentions:
  - name: web-soak
    source: "spiffe://example.org/web"
    resources: ["*"]
    actions: ["*"]
    keys: ["/soak/**"]
    effect: allow
  - name: web-keyless
    description: Leases, sessions and what a session create reads (node, checks).
    source: "spiffe://example.org/web"
    resources: [lease, session, node, check, status]
    actions: ["*"]
    effect: allow
  - name: web-no-secrets
    source: "spiffe://example.org/web"
    resources: ["*"]
    actions: ["*"]
    keys: ["/soak/secret/**"]
    effect: deny
  - name: reader-soak
    source: "spiffe://example.org/reader"
    resources: [kv, watch]
    actions: [read, watch]
    keys: ["/soak/**"]
    effect: allow
`

// Plugin settings: limits holds every KV write to maxValue bytes and a key
// charset; schema wants a JSON object with a name under /soak/config/;
// encrypt stores /soak/private/ encrypted.
const (
	maxValue      = 1024
	configPrefix  = "/soak/config/"
	privatePrefix = "/soak/private/"
)

// fleet is what the soak runs against.
type fleet struct {
	pki      *testenv.PKI
	etcd     *testenv.Etcd
	consul   *testenv.Consul
	gateways []*testenv.Gateway
	lb       *testenv.HAProxy
	// direct is a client of etcd itself, and agent one of the Consul
	// agent itself, around the gateways.
	direct *clientv3.Client
	agent  *api.Client
}

// startFleet starts etcd (3 members, the binary), a Consul agent, two
// gateways with the example plugins and pprof, and HAProxy in front.
func startFleet(t *testing.T) *fleet {
	t.Helper()
	env := testenv.New(t)
	f := &fleet{pki: env.PKI(web, reader, nobody)}
	f.etcd = env.Etcd(testenv.EtcdSpec{Members: 3, Binary: true, PKI: f.pki})
	f.consul = env.Consul(testenv.ConsulSpec{})
	pol := env.Policies(soakIntentions)
	plugins := soakPlugins(t)
	f.gateways = env.Gateways(2, func(int) testenv.GatewaySpec {
		cfg := env.GatewayConfig(f.pki, pol, f.etcd.Endpoints, f.consul.HTTPAddr)
		cfg.Debug.Pprof = true
		cfg.Plugins = plugins
		// The compiled plugins are kept in the test's directory, not the
		// user's cache.
		cfg.PluginCacheDir = t.TempDir()
		return testenv.GatewaySpec{Bin: gatewayBin, Config: cfg, LogLevel: "warn"}
	})
	f.lb = env.Balancer(testenv.Listeners(f.gateways), testenv.EtcdFront, testenv.ConsulFront)
	f.direct = env.MembersClient(f.etcd, "etcd")
	f.agent = f.consulDirect(t)
	return f
}

// soakPlugins configures the example modules, copied into the test's own
// directory, as `gateway dev` does (cmd/gateway/devplugins.go), on the
// soak's prefixes.
func soakPlugins(t *testing.T) []config.PluginConfig {
	t.Helper()
	dir := t.TempDir()
	path := func(name string) string {
		b, err := os.ReadFile(filepath.Join(pluginDir, name+".wasm"))
		if err != nil {
			t.Fatalf("example plugin %s: %v (make plugins)", name, err)
		}
		p := filepath.Join(dir, name+".wasm")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 1)
	}
	// 5s, not the 20ms default: a call can be descheduled that long on two
	// cores shared with other tests.
	timeout := config.Duration(5 * time.Second)
	return []config.PluginConfig{
		{Name: "limits", Path: path("limits"), Timeout: timeout,
			Match:  config.PluginMatch{Resources: []string{"kv"}, Actions: []string{"write"}},
			Config: map[string]any{"max_value_bytes": maxValue, "key_charset": "a-zA-Z0-9/_.-"}},
		{Name: "encrypt", Path: path("encrypt"), Timeout: timeout,
			Match:  config.PluginMatch{Resources: []string{"kv", "watch"}, Keys: []string{privatePrefix + "**"}},
			Config: map[string]any{"key_base64": base64.StdEncoding.EncodeToString(key), "prefixes": []string{privatePrefix}}},
		{Name: "schema", Path: path("schema"), Timeout: timeout,
			Match: config.PluginMatch{Resources: []string{"kv"}, Actions: []string{"write"}, Keys: []string{configPrefix + "**"}},
			Config: map[string]any{"rules": []any{map[string]any{"prefix": configPrefix,
				"schema": map[string]any{"type": "object", "required": []string{"name"},
					"properties": map[string]any{"name": map[string]any{"type": "string"}}}}}}},
		{Name: "registration", Path: path("registration"), Timeout: timeout,
			Match:  config.PluginMatch{Resources: []string{"service"}, Actions: []string{"register"}},
			Config: map[string]any{"name_pattern": "^[a-z][a-z0-9-]*$"}},
	}
}

// etcdClient is a client of the etcd frontend as caller who.
func (f *fleet) etcdClient(t *testing.T, who string) *clientv3.Client {
	t.Helper()
	c, err := testenv.EtcdClient(f.pki, who, "https://"+f.lb.Addrs["etcd"])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// consulClient is a Consul API client of the Consul frontend as caller
// who, and its transport (to close its connections).
func (f *fleet) consulClient(t *testing.T, who string) (*api.Client, *http.Transport) {
	t.Helper()
	tc, err := f.pki.ClientTLS(who)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	c, err := api.NewClient(&api.Config{Address: f.lb.Addrs["consul"], Scheme: "https", HttpClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	return c, tr
}

// consulDirect is a Consul API client of the agent itself.
func (f *fleet) consulDirect(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: f.consul.HTTPAddr, HttpClient: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
