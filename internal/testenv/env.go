package testenv

import (
	"github.com/storegate/storegate/config"

	"context"
	"time"
)

// TB is what Env needs of a test (*testing.T and *testing.B have it).
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Failed() bool
	Context() context.Context
}

// Env starts what a test runs against, failing the test when something does
// not start, and stopping it (with its logs, when the test failed) when the
// test ends.
type Env struct{ t TB }

// New is an Env for t.
func New(t TB) *Env { return &Env{t: t} }

func (e *Env) check(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%v", err)
	}
}

// logOnFailure logs p's output when the test has failed.
func (e *Env) logOnFailure(p *Proc) {
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("%s output:\n%s", p.Name, p.Tail(200))
		}
	})
}

// PKI is a dev CA with the gateway's, etcd's and the callers' SVIDs.
func (e *Env) PKI(callers ...string) *PKI {
	e.t.Helper()
	p, err := NewPKI(e.t.TempDir(), callers...)
	e.check(err)
	return p
}

// Etcd starts a cluster (its Dir defaults to a temporary directory).
func (e *Env) Etcd(s EtcdSpec) *Etcd {
	e.t.Helper()
	if s.Dir == "" {
		s.Dir = e.t.TempDir()
	}
	c, err := StartEtcd(e.t.Context(), s)
	e.check(err)
	e.t.Cleanup(c.Close)
	for _, m := range c.Members {
		if m.Proc != nil {
			e.logOnFailure(m.Proc)
		}
	}
	return c
}

// Consul starts an agent.
func (e *Env) Consul(s ConsulSpec) *Consul {
	e.t.Helper()
	c, err := StartConsul(e.t.Context(), s)
	e.check(err)
	e.t.Cleanup(c.Close)
	e.logOnFailure(c.Proc)
	return c
}

// HAProxy starts a balancer (its Dir defaults to a temporary directory).
func (e *Env) HAProxy(s HAProxySpec) *HAProxy {
	e.t.Helper()
	if s.Dir == "" {
		s.Dir = e.t.TempDir()
	}
	h, err := StartHAProxy(e.t.Context(), s)
	e.check(err)
	e.t.Cleanup(h.Close)
	e.logOnFailure(h.Proc)
	return h
}

// Gateway starts a gateway (its Dir defaults to a temporary directory).
func (e *Env) Gateway(s GatewaySpec) *Gateway {
	e.t.Helper()
	if s.Dir == "" {
		s.Dir = e.t.TempDir()
	}
	g, err := StartGateway(e.t.Context(), s)
	e.check(err)
	e.t.Cleanup(g.Close)
	e.logOnFailure(g.Proc)
	return g
}

// Policies is a fresh policy directory with the shipped Rego and
// intentions.
func (e *Env) Policies(intentions string) string {
	e.t.Helper()
	dir := e.t.TempDir()
	e.check(Policies(dir, intentions))
	return dir
}

// GatewayConfig is GatewayConfig, failing the test on error.
func (e *Env) GatewayConfig(p *PKI, policyDir string, etcd []string, consulHTTP string) config.Config {
	e.t.Helper()
	c, err := GatewayConfig(p, policyDir, etcd, consulHTTP)
	e.check(err)
	return c
}

// Eventually waits until cond returns nil, failing the test after timeout.
func (e *Env) Eventually(timeout time.Duration, cond func(context.Context) error) {
	e.t.Helper()
	e.check(Eventually(e.t.Context(), timeout, cond))
}

// Addr is a free loopback address.
func (e *Env) Addr() string {
	e.t.Helper()
	a, err := Addr()
	e.check(err)
	return a
}
