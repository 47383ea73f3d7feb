package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/telemetry"
)

// gatewayProc writes a policy directory with n intentions and a config file
// for storegate (testenv's typed configuration, marshalled), then starts
// `gateway serve` with its etcd front on etcdPort and its admin endpoint on
// adminPort.
func gatewayProc(bin, dir string, g gatewayVariant, policies string, etcdPort, adminPort int, etcdEndpoint string, pk *pki, cert svid) (*proc, string, string, error) {
	policyDir := filepath.Join(dir, g.name+"-policy")
	if err := writePolicyDir(policyDir, policies, g.intentions); err != nil {
		return nil, "", "", err
	}
	cfg, err := testenv.GatewayConfig(pk.PKI, policyDir, []string{etcdEndpoint}, strings.TrimPrefix(g.consulUpstream, "http://"))
	if err != nil {
		return nil, "", "", err
	}
	// The bench's own SVID for the gateway (spiffe://example.org/gateway)
	// and its own ports.
	cfg.Identity.Files.Cert, cfg.Identity.Files.Key = cert.cert, cert.key
	cfg.Upstreams.Etcd.TLS.Cert, cfg.Upstreams.Etcd.TLS.Key = cert.cert, cert.key
	cfg.Listen.Etcd, cfg.Listen.Admin = fmt.Sprintf("127.0.0.1:%d", etcdPort), fmt.Sprintf("127.0.0.1:%d", adminPort)
	if g.consulListen != "" {
		cfg.Listen.Consul = g.consulListen
		cfg.Upstreams.Consul.Socket = g.consulSocket
	}
	if !g.cache {
		cfg.Policy.CacheSize = new(int)
	}
	cfg.Policy.FastPath = g.fastPath
	cfg.Debug.Pprof = g.pprof
	if t := g.traces; t != nil {
		sampling := t.sampling
		exporter, err := telemetry.ParseExporter(t.exporter)
		if err != nil {
			return nil, "", "", err
		}
		cfg.Telemetry.Traces = config.TracesConfig{Exporter: &exporter, Sampling: &sampling}
	}
	cfg.Plugins, cfg.Limits = g.plugins, g.limits
	b, err := cfg.Marshal()
	if err != nil {
		return nil, "", "", err
	}
	configFile := filepath.Join(dir, g.name+".yaml")
	if err := os.WriteFile(configFile, b, 0o644); err != nil {
		return nil, "", "", err
	}
	p, err := startProc(g.name, filepath.Join(dir, g.name+".log"), bin, g.env, "serve", "--config", configFile)
	return p, "https://" + cfg.Listen.Etcd, "http://" + cfg.Listen.Admin, err
}

// startGateway starts the gateway variant g (see gatewayProc), waits until
// it is ready, connects conns clients to its etcd front and checks that a
// Range as the bench passes: from then on a failed request is the
// gateway's or the policy's, not a race with its start. On error it has
// closed and stopped what it started; otherwise the caller closes the
// target, then stops the process.
func startGateway(ctx context.Context, bin, dir string, g gatewayVariant, policies string, etcdPort, adminPort int,
	etcdEndpoint string, pk *pki, cert svid, conns int, clientTLS *tls.Config) (*proc, *target, error) {
	p, endpoint, admin, err := gatewayProc(bin, dir, g, policies, etcdPort, adminPort, etcdEndpoint, pk, cert)
	if err != nil {
		return nil, nil, err
	}
	if err := p.waitReady(ctx, 60*time.Second, readyz(admin)); err != nil {
		p.stop()
		return nil, nil, err
	}
	t := &target{name: g.name, endpoint: endpoint, hop: p, admin: admin}
	if err := t.connect(conns, clientTLS); err != nil {
		t.close()
		p.stop()
		return nil, nil, err
	}
	if err := probe(t.clients[0])(ctx); err != nil {
		t.close()
		p.stop()
		return nil, nil, p.failure(fmt.Errorf("ready, but a Range of %s as spiffe://%s/bench failed: %w", rangeKey, trustDomain, err))
	}
	return p, t, nil
}

// readyz checks the gateway's admin readiness endpoint.
func readyz(admin string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		return nil
	}
}

// regoModules lists the Rego modules of src, without their tests.
func regoModules(src string) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(src, "*.rego"))
	if err != nil {
		return nil, err
	}
	mods := slices.DeleteFunc(all, func(m string) bool { return strings.HasSuffix(m, "_test.rego") })
	if len(mods) == 0 {
		return nil, fmt.Errorf("no Rego modules (*.rego, not _test.rego) in %s: the gateway's policy is missing (see -policies)", src)
	}
	return mods, nil
}

// checkPolicies fails early when src holds no policy to copy.
func checkPolicies(src string) error {
	_, err := regoModules(src)
	return err
}

// writePolicyDir fills dir with the shipped Rego modules from src (not their
// _test.rego files) and an intentions.yaml of n intentions.
func writePolicyDir(dir, src string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	mods, err := regoModules(src)
	if err != nil {
		return err
	}
	for _, m := range mods {
		b, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(m)), b, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "intentions.yaml"), []byte(intentions(n)), 0o644)
}

// baseIntentions are plausible rules of a shared cluster, none of which
// applies to the bench caller's keys but the deny of /bench/secret/**.
// These 19 and benchIntention make the 20-intention policy of the goal.
const baseIntentions = `  - name: web-config-read
    source: "spiffe://example.org/ns/prod/sa/web"
    resources: [kv, watch]
    actions: [read, watch]
    keys: ["/config/web/**"]
    effect: allow
  - name: web-sessions-rw
    source: "spiffe://example.org/ns/prod/sa/web"
    resources: [kv]
    actions: [read, write, delete]
    keys: ["/sessions/web/**"]
    effect: allow
  - name: api-config-read
    source: "spiffe://example.org/ns/prod/sa/api"
    resources: [kv, watch]
    actions: [read, watch]
    keys: ["/config/api/**"]
    effect: allow
  - name: api-cache-rw
    source: "spiffe://example.org/ns/prod/sa/api"
    resources: [kv]
    actions: [read, write, delete]
    keys: ["/cache/api/**"]
    effect: allow
  - name: api-leases
    source: "spiffe://example.org/ns/prod/sa/api"
    resources: [lease]
    actions: [grant, revoke, keepalive]
    effect: allow
  - name: scheduler-locks
    source: "spiffe://example.org/ns/prod/sa/scheduler"
    resources: [lock]
    actions: [acquire, release]
    keys: ["/locks/scheduler/**"]
    effect: allow
  - name: scheduler-election
    source: "spiffe://example.org/ns/prod/sa/scheduler"
    resources: [election]
    actions: [campaign, proclaim, resign]
    keys: ["/elections/scheduler/**"]
    effect: allow
  - name: scheduler-jobs-rw
    source: "spiffe://example.org/ns/prod/sa/scheduler"
    resources: [kv, watch]
    actions: [read, write, delete, watch]
    keys: ["/jobs/**"]
    effect: allow
  - name: worker-jobs-read
    source: "spiffe://example.org/ns/prod/sa/worker"
    resources: [kv, watch]
    actions: [read, watch]
    keys: ["/jobs/**"]
    effect: allow
  - name: worker-results-write
    source: "spiffe://example.org/ns/prod/sa/worker"
    resources: [kv]
    actions: [write]
    keys: ["/results/*/**"]
    effect: allow
  - name: ops-admin
    source: "spiffe://example.org/ops/**"
    resources: [maintenance, cluster, status]
    actions: ["*"]
    effect: allow
  - name: ops-read-all
    source: "spiffe://example.org/ops/**"
    resources: [kv, watch]
    actions: [read, watch]
    keys: ["/**"]
    effect: allow
  - name: monitoring-status
    source: "spiffe://example.org/ns/monitoring/sa/prometheus"
    resources: [status]
    actions: [read]
    effect: allow
  - name: ci-deploy-config
    source: "spiffe://example.org/ci/deployer"
    resources: [kv]
    actions: [read, write]
    keys: ["/config/**"]
    effect: allow
  - name: ci-no-secrets
    source: "spiffe://example.org/ci/**"
    resources: [kv, watch]
    actions: ["*"]
    keys: ["/config/*/secrets/**"]
    effect: deny
  - name: billing-rw
    source: "spiffe://example.org/ns/billing/sa/billing"
    resources: [kv]
    actions: [read, write, delete]
    keys: ["/billing/**"]
    effect: allow
  - name: audit-billing-read
    source: "spiffe://example.org/ns/audit/sa/auditor"
    resources: [kv]
    actions: [read]
    keys: ["/billing/**"]
    effect: allow
  - name: nobody-touches-storegate
    source: "**"
    resources: ["*"]
    actions: ["*"]
    keys: ["/_storegate/**"]
    effect: deny
  - name: bench-no-secrets
    source: "**"
    resources: [kv, watch]
    actions: ["*"]
    keys: ["/bench/secret/**"]
    effect: deny
`

// benchIntention lets the bench caller read, write and watch its keys. It comes
// last, after any generated filler.
const benchIntention = `  - name: bench-rw
    source: "spiffe://example.org/bench"
    resources: [kv, watch]
    actions: [read, write, watch]
    keys: ["/bench/**"]
    effect: allow
`

// intentions returns an intentions.yaml of n intentions, bench-rw last.
// Up to 20 they are the first n-1 of baseIntentions (all 19 make the goal's
// 20-intention policy); beyond 20 come per-team rules that resemble them
// (each team reads and writes its own prefix, its CI deploys config there,
// and the team's secrets prefix is denied to every caller).
func intentions(n int) string {
	const sep = "  - name:"
	base := strings.Split(strings.TrimPrefix(baseIntentions, sep), "\n"+sep)
	var b strings.Builder
	b.WriteString("intentions:\n")
	for _, e := range base[:min(n-1, len(base))] {
		b.WriteString(sep + strings.TrimSuffix(e, "\n") + "\n")
	}
	for i := range max(n-1-len(base), 0) {
		team := i / 3
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "  - name: team-%d-rw\n    source: \"spiffe://example.org/ns/team-%d/sa/*\"\n    resources: [kv, watch]\n    actions: [read, write, delete, watch]\n    keys: [\"/teams/team-%d/**\"]\n    effect: allow\n", team, team, team)
		case 1:
			fmt.Fprintf(&b, "  - name: team-%d-ci\n    source: \"spiffe://example.org/ci/team-%d\"\n    resources: [kv]\n    actions: [read, write]\n    keys: [\"/teams/team-%d/config/**\"]\n    effect: allow\n", team, team, team)
		case 2:
			fmt.Fprintf(&b, "  - name: team-%d-secrets\n    source: \"**\"\n    resources: [kv, watch]\n    actions: [\"*\"]\n    keys: [\"/teams/team-%d/secrets/**\"]\n    effect: deny\n", team, team)
		}
	}
	b.WriteString(benchIntention)
	return b.String()
}
