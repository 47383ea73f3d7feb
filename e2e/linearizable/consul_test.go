package linearizable

import (
	"context"
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
	gws := env.Gateways(3, func(int) testenv.GatewaySpec {
		return testenv.GatewaySpec{Bin: gatewayBin, Config: env.GatewayConfig(f.pki, pol, nil, f.agent.HTTPAddr), LogLevel: "info"}
	})
	f.front = env.Balancer(testenv.Listeners(gws), testenv.ConsulFront).Addrs["consul"]
	return f
}

// client is a consul/api client of the balancer as the caller "lin",
// configured as applications configure it, with a transport of its own.
func (f *consulFleet) client(t *testing.T) store {
	t.Helper()
	return consulStore{testenv.New(t).ConsulClient(f.pki, "lin", f.front).KV()}
}

// direct is a client of the agent itself, not the gateways.
func (f *consulFleet) direct(t *testing.T) store {
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
	tg := target{name: "consul", prefix: "lin/", client: f.client, direct: f.direct, classify: classifyConsul}
	checkRuns(t, tg, "restarts", 6, f.inject)
}

// inject restarts the agent of TestConsulLinearizableUnderRestarts.
func (f *consulFleet) inject(ctx context.Context, t *testing.T, h *history, step func(string, error), faults *faultLog) {
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
}
