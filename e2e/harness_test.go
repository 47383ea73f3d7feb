package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
)

var (
	repoRoot   string
	gatewayBin string
	etcdctlBin string
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(e2eMain{m}, raceEnabled, &gatewayBin))
}

// e2eMain runs the package's tests once repoRoot and etcdctlBin are set
// (etcdctl is built by `make tools` when it is missing).
type e2eMain struct{ m *testing.M }

func (e e2eMain) Run() int {
	var err error
	if repoRoot, err = testenv.RepoRoot(); err == nil {
		etcdctlBin, err = testenv.Tool("etcdctl")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return e.m.Run()
}

var trustDomain = testenv.TrustDomain

// pki is testenv's dev CA with SVIDs for the gateway, etcd and test
// callers; dir is its directory.
type pki struct {
	*testenv.PKI
	dir string
}

func newPKI(t *testing.T, callers ...string) *pki {
	t.Helper()
	p := testenv.New(t).PKI(callers...)
	return &pki{PKI: p, dir: p.Dir}
}

func (p *pki) issue(t *testing.T, out, path string, server bool) {
	t.Helper()
	if err := p.Issue(out, path, server, time.Hour); err != nil {
		t.Fatal(err)
	}
}

func (p *pki) path(name string) string { return p.Path(name) }
func (p *pki) bundle() string          { return p.Bundle() }

// freePort returns a loopback address that was free a moment ago, outside
// the ephemeral range (testenv, internal/loopback).
func freePort(t *testing.T) string {
	t.Helper()
	return testenv.New(t).Addr()
}

// etcdCluster is a real etcd cluster (testenv) in this process, serving
// clients over TLS with client certificates required.
type etcdCluster struct {
	*testenv.Etcd
	endpoints []string
}

// startEtcd starts n embedded members; each option, if any, adjusts every
// member's config before it starts (e.g. to turn on distributed tracing).
func startEtcd(t *testing.T, p *pki, n int, opts ...func(*embed.Config)) *etcdCluster {
	t.Helper()
	ec := testenv.New(t).Etcd(testenv.EtcdSpec{Members: n, PKI: p.PKI, Embed: func(cfg *embed.Config) {
		for _, o := range opts {
			o(cfg)
		}
	}})
	return &etcdCluster{Etcd: ec, endpoints: ec.Endpoints}
}

// gateway is the storegate binary (testenv) running against an etcd
// cluster; addr is its etcd front ("" without one), admin its admin
// listener.
type gateway struct {
	*testenv.Gateway
	addr, admin string
	logs        procLogs
	policyDir   string
}

// procLogs is a process's output so far, as String.
type procLogs struct{ p *testenv.Proc }

func (l procLogs) String() string { return l.p.Logs() }

// syncBuffer collects the output of a command a test runs itself.
type syncBuffer = testenv.Buffer

// gatewayOpts are what startGateway changes in testenv's gateway
// configuration; the zero value is an etcd front, allow-all, enforcing.
type gatewayOpts struct {
	policyDir string // default: a copy of the repository's policies/
	mode      string
	// consulListen and consulUpstream (the agent's http:// URL) add the
	// Consul front, with consulTokenFile as its token_file and
	// consulForwardTokens as its forward_caller_tokens.
	consulListen, consulUpstream, consulTokenFile string
	consulForwardTokens                           bool
	// consulOnly runs the Consul front alone: no etcd listener or upstream.
	consulOnly bool
	// The configuration's sections of the same names.
	limits      config.LimitsConfig
	debug       config.DebugConfig
	telemetry   config.TelemetryConfig
	decisionLog *config.DecisionLogConfig
	plugins     []config.PluginConfig
	// env is added to the gateway process's environment (OTEL_* settings).
	env []string
}

// copyPolicies is a fresh policy directory with the shipped Rego (not its
// tests) and intentions.
func copyPolicies(t *testing.T, intentions string) string {
	t.Helper()
	return testenv.New(t).Policies(intentions)
}

const allowAll = testenv.AllowAll

// gatewayConfig is testenv's gateway configuration (fresh ports, the PKI's
// gateway SVID) against ec with o's changes.
func (o gatewayOpts) config(t *testing.T, p *pki, ec *etcdCluster) config.Config {
	t.Helper()
	if o.policyDir == "" {
		o.policyDir = copyPolicies(t, allowAll)
	}
	var endpoints []string
	if !o.consulOnly {
		endpoints = ec.endpoints
	}
	cfg := testenv.New(t).GatewayConfig(p.PKI, o.policyDir, endpoints, "")
	if o.consulListen != "" {
		cfg.Listen.Consul = o.consulListen
		cfg.Upstreams.Consul = &config.ConsulUpstream{Address: o.consulUpstream, TokenFile: o.consulTokenFile,
			ForwardCallerTokens: o.consulForwardTokens}
	}
	if o.mode != "" {
		if err := cfg.Policy.Mode.UnmarshalText([]byte(o.mode)); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Limits, cfg.Debug, cfg.Telemetry = o.limits, o.debug, o.telemetry
	cfg.DecisionLog, cfg.Plugins = o.decisionLog, o.plugins
	return cfg
}

func startGateway(t *testing.T, p *pki, ec *etcdCluster, o gatewayOpts) *gateway {
	t.Helper()
	return launchGateway(t, o.config(t, p, ec), o.env)
}

// launchGateway starts the gateway binary on cfg with env added to its
// environment, stops it when the test ends, and returns it once /readyz
// answers 200.
func launchGateway(t *testing.T, cfg config.Config, env []string) *gateway {
	t.Helper()
	return asGateway(testenv.New(t).Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg, Env: env}))
}

func asGateway(g *testenv.Gateway) *gateway {
	return &gateway{Gateway: g, addr: g.Etcd, admin: g.Admin, logs: procLogs{g.Proc}, policyDir: g.Spec.Config.Policy.Dir}
}

// ctl runs etcdctl against endpoint as the caller whose SVID is name.
type ctl struct {
	p        *pki
	endpoint string
	who      string // SVID name in p; "" for no client certificate
	certDir  string // where who's files are, if not in p
	timeout  string // --command-timeout, default 30s
}

func (c ctl) args(args ...string) []string {
	dir, timeout := c.p.dir, c.timeout
	if c.certDir != "" {
		dir = c.certDir
	}
	if timeout == "" {
		timeout = "30s"
	}
	base := []string{"--endpoints=" + c.endpoint, "--cacert=" + c.p.bundle(),
		"--dial-timeout=10s", "--command-timeout=" + timeout}
	if c.who != "" {
		base = append(base, "--cert="+filepath.Join(dir, c.who+".pem"), "--key="+filepath.Join(dir, c.who+"-key.pem"))
	}
	return append(base, args...)
}

// run runs etcdctl to completion with stdin and returns stdout, stderr.
func (c ctl) run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, etcdctlBin, c.args(args...)...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// start runs etcdctl in the background (watch, elect); its stdout is
// readable line by line.
func (c ctl) start(t *testing.T, args ...string) *bgCmd {
	t.Helper()
	return startBg(t, exec.Command(etcdctlBin, c.args(args...)...))
}

// startBg starts cmd in the background with its stdout and stderr kept
// apart, and interrupts it when the test ends.
func startBg(t *testing.T, cmd *exec.Cmd) *bgCmd {
	t.Helper()
	b := &bgCmd{cmd: cmd, out: &syncBuffer{}, errb: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = b.out, b.errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.done = make(chan error, 1)
	go func() { b.done <- cmd.Wait() }()
	t.Cleanup(func() { b.stop() })
	return b
}

type bgCmd struct {
	cmd       *exec.Cmd
	out, errb *syncBuffer
	done      chan error
	stopOnce  sync.Once
}

// waitFor waits until stdout contains want, or fails after a deadline.
func (b *bgCmd) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(b.out.String(), want) {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %q; stdout:\n%s\nstderr:\n%s", want, b.out.String(), b.errb.String())
		case err := <-b.done:
			b.done <- err
			if !strings.Contains(b.out.String(), want) {
				t.Fatalf("exited (%v) before printing %q; stdout:\n%s\nstderr:\n%s", err, want, b.out.String(), b.errb.String())
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop interrupts the command (as Ctrl-C would) and waits for it.
func (b *bgCmd) stop() {
	b.stopOnce.Do(func() {
		_ = b.cmd.Process.Signal(os.Interrupt)
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	})
}

// waitExit waits for the command to exit on its own.
func (b *bgCmd) waitExit(t *testing.T) {
	t.Helper()
	select {
	case err := <-b.done:
		b.done <- err
	case <-time.After(30 * time.Second):
		t.Fatalf("still running after 30s; stdout:\n%s\nstderr:\n%s", b.out.String(), b.errb.String())
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
