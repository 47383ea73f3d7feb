package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/storegate/storegate/config"
)

// GatewaySpec is the gateway binary serving a typed configuration.
type GatewaySpec struct {
	// Bin is the gateway binary (see BuildGateway).
	Bin string
	// Dir receives the marshalled configuration.
	Dir    string
	Config config.Config
	// Env is added to the environment; Environ, when non-nil, replaces
	// the inherited one before Env is added.
	Env     []string
	Environ []string
	// LogLevel is --log-level (default debug).
	LogLevel string
	Echo     io.Writer
	// ReadyTimeout bounds the wait for /readyz (default 3m: a race-built
	// gateway compiles a large Go plugin in about 50 s the first time).
	ReadyTimeout time.Duration
}

// Gateway is a running gateway.
type Gateway struct {
	Spec GatewaySpec
	Proc *Proc
	// Etcd, Consul and Admin are the listeners ("" when not served).
	Etcd, Consul, Admin string
	ConfigPath          string
}

// GatewayConfig is a gateway configuration on fresh loopback ports with
// the PKI's gateway SVID: an etcd front when etcd endpoints are given (the
// gateway's SVID as etcd client certificate), a Consul front when
// consulHTTP (the agent's host:port) is.
func GatewayConfig(p *PKI, policyDir string, etcd []string, consulHTTP string) (config.Config, error) {
	var c config.Config
	admin, err := Addr()
	if err != nil {
		return c, err
	}
	c.Listen.Admin = admin
	c.Identity = config.IdentityConfig{
		Files:        &config.IdentityFiles{Cert: p.Cert("gateway"), Key: p.Key("gateway"), Bundle: p.Bundle()},
		TrustDomains: []string{TrustDomain.Name()},
	}
	if len(etcd) > 0 {
		if c.Listen.Etcd, err = Addr(); err != nil {
			return c, err
		}
		c.Upstreams.Etcd = &config.EtcdUpstream{Endpoints: etcd,
			TLS: config.TLSFiles{Cert: p.Cert("gateway"), Key: p.Key("gateway"), CA: p.Bundle()}}
	}
	if consulHTTP != "" {
		if c.Listen.Consul, err = Addr(); err != nil {
			return c, err
		}
		c.Upstreams.Consul = &config.ConsulUpstream{Address: "http://" + consulHTTP}
	}
	c.Policy = config.PolicyConfig{Dir: policyDir} // mode enforce, the zero value
	return c, nil
}

// StartGateway writes the configuration and starts the gateway on it; it
// returns once /readyz answers 200.
func StartGateway(ctx context.Context, s GatewaySpec) (*Gateway, error) {
	g, err := LaunchGateway(s)
	if err != nil {
		return nil, err
	}
	if err := g.WaitReady(ctx); err != nil {
		g.Proc.Kill()
		return nil, err
	}
	return g, nil
}

// Ready reports whether /readyz answers 200.
func (g *Gateway) Ready(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.Admin+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// WaitReady waits until /readyz answers 200, failing early if the gateway
// exits.
func (g *Gateway) WaitReady(ctx context.Context) error {
	return Eventually(ctx, g.Spec.ReadyTimeout, func(ctx context.Context) error {
		if gone, err := g.Proc.Exited(); gone {
			return Permanent(g.Proc.Failure(fmt.Errorf("exited before it was ready: %v", err)))
		}
		return g.Ready(ctx)
	})
}

// Restart stops the gateway (SIGTERM: it drains) and starts it again on the
// same listeners; it returns once the new one is ready.
func (g *Gateway) Restart(ctx context.Context) error {
	if err := g.Proc.Restart(30 * time.Second); err != nil {
		return err
	}
	return g.WaitReady(ctx)
}

// Start starts a stopped or killed gateway again and waits until it is
// ready.
func (g *Gateway) Start(ctx context.Context) error {
	if err := g.Proc.Start(); err != nil {
		return err
	}
	return g.WaitReady(ctx)
}

// Close stops the gateway (SIGTERM, SIGKILL after 30s).
func (g *Gateway) Close() { g.Proc.Stop(30 * time.Second) }

// Policies writes a policy directory in dir: the repository's shipped Rego
// modules (not their tests) and intentions as intentions.yaml.
func Policies(dir, intentions string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(root, "policies", "*.rego"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("testenv: no policies in %s/policies: %v", root, err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "intentions.yaml"), []byte(intentions), 0o644)
}

// AllowAll is an intentions file that lets every caller do everything.
const AllowAll = `intentions:
  - name: everyone-everything
    source: "spiffe://example.org/**"
    resources: ["*"]
    actions: ["*"]
    owners: ["**"]
    effect: allow
`
