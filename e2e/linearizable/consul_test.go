package linearizable

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/internal/testenv"
)

// consulFleet is three gateways (Consul front) behind HAProxy over one
// Consul server that keeps its data across restarts.
type consulFleet struct {
	pki   *testenv.PKI
	agent *testenv.Consul
	front string
}

func startConsulFleet(t *testing.T) *consulFleet {
	env := testenv.New(t)
	f := &consulFleet{pki: env.PKI("lin")}
	f.agent = env.Consul(testenv.ConsulSpec{DataDir: t.TempDir()})
	pol := env.Policies(testenv.AllowAll)
	var servers []testenv.Backend
	for i := range 3 {
		cfg := env.GatewayConfig(f.pki, pol, nil, f.agent.HTTPAddr)
		g := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg, LogLevel: "info"})
		servers = append(servers, testenv.Backend{Name: fmt.Sprintf("g%d", i), Addr: g.Consul, CheckAddr: g.Admin})
	}
	f.front = env.HAProxy(testenv.HAProxySpec{Frontends: []testenv.Frontend{{Name: "consul", Servers: servers}}}).Addrs["consul"]
	return f
}

// client is a consul/api client of the balancer as the caller "lin",
// configured as applications configure it, with a transport of its own.
func (f *consulFleet) client(t *testing.T) consulStore {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = f.front, "https"
	cfg.TLSConfig = api.TLSConfig{CAFile: f.pki.Bundle(), CertFile: f.pki.Cert("lin"), KeyFile: f.pki.Key("lin")}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return consulStore{c.KV()}
}

// direct is a client of the agent itself, not the gateways.
func (f *consulFleet) direct(t *testing.T) consulStore {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: f.agent.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	return consulStore{c.KV()}
}

// TestConsulLinearizableUnderRestarts proves that the Consul front keeps
// Consul KV linearizable while the agent restarts: six consul/api clients,
// each on its own connection through HAProxy to three gateways, issue Get
// (?consistent), Put, Delete and Put ?cas=<ModifyIndex> on four keys while
// the test restarts the agent (a single server on a data directory) twice
// with SIGTERM and twice with kill -9. Every error a client sees must be
// one it can act on (its timeout, a 502/503/504, the agent's "No cluster
// leader" 500, a refused or closed connection); porcupine must find the
// history, closed by reads of the agent itself, linearizable — so no
// acknowledged write was lost by a restart. Then, on the same agent, a
// client reading from a cache of its earlier reads is caught.
func TestConsulLinearizableUnderRestarts(t *testing.T) {
	f := startConsulFleet(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	t.Run("restarts", func(t *testing.T) { consulRestarts(ctx, t, f) })
	t.Run("stale-read-caught", func(t *testing.T) { consulStale(ctx, t, f) })
}

const consulClients = 6

func consulRestarts(ctx context.Context, t *testing.T, f *consulFleet) {
	keys := keysUnder("lin/restarts/", 4)
	h, errs := newHistory(), newTally()
	var cs []*client
	for i := range consulClients {
		cs = append(cs, newClient(i, f.client(t), keys, h, errs, classifyConsul))
	}
	stop := make(chan struct{})
	wait := runClients(ctx, cs, stop)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wait()
		}
	}()
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	var faults faultLog
	step("warm-up", progressed(ctx, h, 100, 30*time.Second))
	for round := range 2 {
		start := time.Now()
		pid := f.agent.Proc.Pid()
		step("SIGTERM restart", f.agent.Restart(ctx))
		faults.add(t, start, "round %d: SIGTERM of the Consul agent (pid %d), restarted, leader again", round+1, pid)
		step("progress after the SIGTERM restart", progressed(ctx, h, 150, 30*time.Second))

		start, pid = time.Now(), f.agent.Proc.Pid()
		f.agent.Proc.Kill()
		step("starting the agent", f.agent.Proc.Start())
		step("agent ready", f.agent.WaitReady(ctx, 60*time.Second))
		faults.add(t, start, "round %d: kill -9 of the Consul agent (pid %d), restarted, leader again", round+1, pid)
		step("progress after the kill -9 restart", progressed(ctx, h, 150, 30*time.Second))
	}
	close(stop)
	wait()
	stopped = true
	if err := readBack(ctx, consulClients, f.direct(t), keys, h); err != nil {
		t.Fatal(err)
	}
	report(t, "consul-restarts", h, errs, &faults)
}

func consulStale(ctx context.Context, t *testing.T, f *consulFleet) {
	keys := keysUnder("lin/stale/", 3)
	h, errs := newHistory(), newTally()
	var cs []*client
	for i := range 3 {
		cs = append(cs, newClient(i, f.client(t), keys, h, errs, classifyConsul))
	}
	broken := newStaleStore(f.client(t))
	cs = append(cs, newClient(3, broken, keys, h, errs, classifyConsul))
	stop := make(chan struct{})
	wait := runClients(ctx, cs, stop)
	err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if n := broken.staleReads(); n < 10 {
			return fmt.Errorf("%d stale reads served", n)
		}
		return nil
	})
	close(stop)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := readBack(ctx, len(cs), f.direct(t), keys, h); err != nil {
		t.Fatal(err)
	}
	caught(t, "consul-stale", h, errs, broken)
}
