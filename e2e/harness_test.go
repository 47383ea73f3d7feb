package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/storegate/storegate/internal/loopback"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/storegate/storegate/mtls"
)

var (
	repoRoot   string
	gatewayBin string
	etcdctlBin string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	tmp, err := os.MkdirTemp("", "storegate-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	// The gateway under test is always built from this tree.
	gatewayBin = filepath.Join(tmp, "gateway")
	args := []string{"build", "-o", gatewayBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/gateway")...)
	build.Dir, build.Stdout, build.Stderr = repoRoot, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the gateway:", err)
		return 1
	}
	// etcdctl is a tool built by `make tools`; build it if it is missing.
	etcdctlBin = filepath.Join(repoRoot, "bin", "etcdctl")
	if _, err := os.Stat(etcdctlBin); err != nil {
		mk := exec.Command("make", "tools")
		mk.Dir, mk.Stdout, mk.Stderr = repoRoot, os.Stderr, os.Stderr
		if err := mk.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building etcdctl with `make tools`:", err)
			return 1
		}
	}
	return m.Run()
}

var trustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// pki is a dev CA with SVIDs for the gateway, etcd and test callers.
type pki struct{ dir string }

func newPKI(t *testing.T, callers ...string) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	if err := mtls.InitCA(p.dir, trustDomain); err != nil {
		t.Fatal(err)
	}
	p.issue(t, "gateway", "/storegate", true)
	p.issue(t, "etcd", "/etcd", true)
	for _, c := range callers {
		p.issue(t, c, "/"+c, false)
	}
	return p
}

func (p *pki) issue(t *testing.T, out, path string, server bool) {
	t.Helper()
	req := mtls.IssueRequest{ID: spiffeid.RequireFromPath(trustDomain, path), Out: out, TTL: time.Hour}
	if server {
		req.DNS = []string{"localhost"}
		req.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	if _, _, err := mtls.Issue(p.dir, req); err != nil {
		t.Fatal(err)
	}
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }
func (p *pki) bundle() string          { return p.path(mtls.BundleFile) }

// freePort returns a loopback address that was free a moment ago, outside
// the ephemeral range (see internal/loopback).
func freePort(t *testing.T) string {
	t.Helper()
	a, err := loopback.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// etcdCluster is a real etcd cluster of n members in this process, serving
// clients over TLS with client certificates required.
type etcdCluster struct {
	members   []*embed.Etcd
	cfgs      []*embed.Config
	endpoints []string
}

// startEtcd starts n members; each option, if any, adjusts every member's
// config before it starts (e.g. to turn on distributed tracing).
func startEtcd(t *testing.T, p *pki, n int, opts ...func(*embed.Config)) *etcdCluster {
	t.Helper()
	c := &etcdCluster{}
	var initial []string
	peers := make([]url.URL, n)
	clients := make([]url.URL, n)
	for i := range n {
		peers[i] = url.URL{Scheme: "http", Host: freePort(t)}
		clients[i] = url.URL{Scheme: "https", Host: freePort(t)}
		initial = append(initial, fmt.Sprintf("m%d=%s", i, peers[i].String()))
		c.endpoints = append(c.endpoints, clients[i].String())
	}
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(t.TempDir(), "data")
		cfg.LogLevel = "error"
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clients[i]}, []url.URL{clients[i]}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peers[i]}, []url.URL{peers[i]}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.ClientTLSInfo.CertFile = p.path("etcd.pem")
		cfg.ClientTLSInfo.KeyFile = p.path("etcd-key.pem")
		cfg.ClientTLSInfo.TrustedCAFile = p.bundle()
		cfg.ClientTLSInfo.ClientCertAuth = true
		for _, o := range opts {
			o(cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	c.members = make([]*embed.Etcd, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := embed.StartEtcd(c.cfgs[i])
			if err != nil {
				errs[i] = err
				return
			}
			c.members[i] = e
			select {
			case <-e.Server.ReadyNotify():
			case <-time.After(60 * time.Second):
				errs[i] = errors.New("etcd member not ready in 60s")
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, m := range c.members {
			if m != nil {
				m.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return c
}

// gateway is the storegate binary running against an etcd cluster.
type gateway struct {
	addr, admin string
	cmd         *exec.Cmd
	logs        *syncBuffer
	policyDir   string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type gatewayOpts struct {
	policyDir string // default: a copy of the repository's policies/
	mode      string
	// consulListen and consulUpstream add the Consul front.
	consulListen, consulUpstream string
	// consulOnly runs the Consul front alone: no etcd listener or upstream.
	consulOnly bool
	// extraConfig is appended to the YAML config as it is (top-level
	// sections such as telemetry: or decision_log:).
	extraConfig string
	// env is added to the gateway process's environment (OTEL_* settings).
	env []string
}

// copyPolicies copies the shipped Rego (not its tests) and writes
// intentions into a fresh policy directory.
func copyPolicies(t *testing.T, intentions string) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join(repoRoot, "policies", "*.rego"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no policies in %s/policies: %v", repoRoot, err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "intentions.yaml"), []byte(intentions), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const allowAll = `intentions:
  - name: everyone-everything
    source: "spiffe://example.org/**"
    resources: ["*"]
    actions: ["*"]
    owners: ["**"]
    effect: allow
`

func startGateway(t *testing.T, p *pki, ec *etcdCluster, o gatewayOpts) *gateway {
	t.Helper()
	if o.policyDir == "" {
		o.policyDir = copyPolicies(t, allowAll)
	}
	if o.mode == "" {
		o.mode = "enforce"
	}
	g := &gateway{addr: freePort(t), admin: freePort(t), logs: &syncBuffer{}, policyDir: o.policyDir}
	consulListen, consulUpstream := "", ""
	if o.consulListen != "" {
		consulListen = "\n  consul: " + o.consulListen
		consulUpstream = "\n  consul: {address: " + o.consulUpstream + "}"
	}
	etcdListen, etcdUpstream := "", ""
	if o.consulOnly {
		g.addr = ""
	} else {
		etcdListen = "\n  etcd: " + g.addr
		etcdUpstream = fmt.Sprintf(`
  etcd:
    endpoints: [%s]
    tls: {cert: %s, key: %s, ca: %s}`, strings.Join(ec.endpoints, ", "), p.path("gateway.pem"), p.path("gateway-key.pem"), p.bundle())
	}
	cfg := fmt.Sprintf(`listen:%s
  admin: %s%s
identity:
  files: {cert: %s, key: %s, bundle: %s}
  trust_domains: [example.org]
upstreams:%s%s
policy: {dir: %s, mode: %s}
%s`, etcdListen, g.admin, consulListen, p.path("gateway.pem"), p.path("gateway-key.pem"), p.bundle(),
		etcdUpstream, consulUpstream, o.policyDir, o.mode, o.extraConfig)
	return launchGateway(t, g, cfg, o.env)
}

// launchGateway writes cfg, starts the gateway binary on it as g (its
// listeners already in cfg) with env added to its environment, stops it
// when the test ends, and returns g once /readyz answers 200.
func launchGateway(t *testing.T, g *gateway, cfg string, env []string) *gateway {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "storegate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	g.cmd = exec.Command(gatewayBin, "serve", "--config", cfgPath, "--log-level", "debug")
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if len(env) > 0 {
		g.cmd.Env = append(os.Environ(), env...)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- g.cmd.Wait() }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = g.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("gateway logs:\n%s", g.logs.String())
		}
	})
	// Up to 3 minutes: a race-built gateway compiles a large Go plugin in
	// about 50 s the first time (later starts read the compilation cache).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get("http://" + g.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("gateway exited before it was ready: %v\n%s", err, g.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready in 3m:\n%s", g.logs.String())
		}
	}
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
	cmd := exec.Command(etcdctlBin, c.args(args...)...)
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
