package linearizable

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/storegate/storegate/internal/testenv"
)

// etcdFleet is three gateways behind HAProxy over a 3-member etcd of
// binaries; the third gateway reaches etcd through an HAProxy of its own
// (cut), whose kill -9 cuts every connection it has upstream.
type etcdFleet struct {
	env      *testenv.Env
	pki      *testenv.PKI
	etcd     *testenv.Etcd
	gateways []*testenv.Gateway
	cut      *testenv.HAProxy
	front    string // the balancer's address
}

func startEtcdFleet(t *testing.T) *etcdFleet {
	env := testenv.New(t)
	f := &etcdFleet{env: env, pki: env.PKI("lin")}
	f.etcd = env.Etcd(testenv.EtcdSpec{Members: 3, Binary: true, PKI: f.pki})
	var members []testenv.Backend
	for i, ep := range f.etcd.Endpoints {
		u, err := url.Parse(ep)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, testenv.Backend{Name: fmt.Sprintf("m%d", i), Addr: u.Host})
	}
	f.cut = env.HAProxy(testenv.HAProxySpec{Frontends: []testenv.Frontend{{Name: "etcd", Servers: members}}})
	pol := env.Policies(testenv.AllowAll)
	f.gateways = env.Gateways(3, func(i int) testenv.GatewaySpec {
		eps := f.etcd.Endpoints
		if i == 2 {
			eps = []string{"https://" + f.cut.Addrs["etcd"]}
		}
		return testenv.GatewaySpec{Bin: gatewayBin, Config: env.GatewayConfig(f.pki, pol, eps, ""), LogLevel: "info"}
	})
	f.front = env.Balancer(testenv.Listeners(f.gateways), testenv.EtcdFront).Addrs["etcd"]
	return f
}

// leaderAmong is the member the members other than skip (one killed or
// paused) agree leads, itself not skip: a new leader was elected without
// it. Each member is asked with a deadline of its own.
func leaderAmong(ctx context.Context, ec *testenv.Etcd, skip int) (int, error) {
	ids, leaders := map[uint64]int{}, map[uint64]bool{}
	for i, m := range ec.Members {
		if i == skip {
			continue
		}
		c, err := ec.Client("etcd", i)
		if err != nil {
			return -1, err
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Status(sctx, m.ClientURL)
		cancel()
		c.Close()
		if err != nil {
			return -1, fmt.Errorf("m%d: %w", i, err)
		}
		ids[st.Header.MemberId], leaders[st.Leader] = i, true
	}
	if len(leaders) != 1 {
		return -1, fmt.Errorf("the members disagree on the leader: %v", leaders)
	}
	for l := range leaders {
		if i, ok := ids[l]; ok {
			return i, nil
		}
		return -1, fmt.Errorf("leader %x is not among the members asked", l)
	}
	return -1, fmt.Errorf("no members asked")
}

// TestEtcdLinearizableUnderFaults proves that the etcd front keeps etcd's
// linearizability through replica and upstream faults: seven client/v3
// clients, each on its own connection through HAProxy to three gateways,
// issue Put, Get, Delete and Txn compare-and-swap (on the value and on the
// mod revision) on four keys while the test kills -9 and restarts a
// gateway, kills -9 and restarts the etcd leader, SIGSTOPs the leader until
// the others have elected a new one (past the election timeout), and cuts
// a gateway's upstream (kill -9 of the HAProxy it reaches etcd through).
// Every error a client sees must be Unavailable, DeadlineExceeded, Canceled
// or one of etcd's retryable errors, and porcupine must find the history,
// closed by reads of etcd itself, linearizable. Then, on the same cluster,
// a client whose reads come from a cache of its earlier reads is shown to
// be caught: the same history with the true answers is linearizable, with
// the cached ones it is not.
func TestEtcdLinearizableUnderFaults(t *testing.T) {
	f := startEtcdFleet(t)
	tg := target{name: "etcd", prefix: "/lin/", classify: classifyEtcd}
	// A client of the balancer as the caller "lin", on a connection of its
	// own; one of the etcd members themselves.
	tg.client = func(t *testing.T) store {
		return etcdStore{testenv.New(t).EtcdClient(f.pki, "lin", "https://"+f.front)}
	}
	tg.direct = func(t *testing.T) store { return etcdStore{testenv.New(t).MembersClient(f.etcd, "etcd")} }
	checkRuns(t, tg, "faults", 7, f.inject)
}

// inject injects the faults of TestEtcdLinearizableUnderFaults, twice each.
func (f *etcdFleet) inject(ctx context.Context, t *testing.T, h *history, step func(string, error), faults *faultLog) {
	for round := range 2 {
		// 1. kill -9 of a gateway, and its restart on the same listeners.
		start, g := time.Now(), f.gateways[round]
		pid := g.Proc.Pid()
		g.Proc.Kill()
		step("restarting the gateway", g.Start(ctx))
		faults.add(t, start, "round %d: kill -9 of gateway g%d (pid %d), restarted and ready", round+1, round, pid)
		step("progress after fault 1", progressed(ctx, h, 100, 30*time.Second))

		// 2. kill -9 of the etcd leader; the others elect one; it restarts.
		start = time.Now()
		leader, err := f.etcd.Leader(ctx)
		step("finding the leader", err)
		f.etcd.Kill(leader)
		step("electing a new leader", testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			_, err := leaderAmong(ctx, f.etcd, leader)
			return err
		}))
		step("restarting the old leader", f.etcd.Restart(ctx, leader))
		faults.add(t, start, "round %d: kill -9 of the etcd leader m%d, a new leader elected, m%d restarted", round+1, leader, leader)
		step("progress after fault 2", progressed(ctx, h, 100, 30*time.Second))

		// 3. SIGSTOP of the leader until the others elected a new one (so past
		// the election timeout), then SIGCONT.
		start = time.Now()
		leader, err = f.etcd.Leader(ctx)
		step("finding the leader", err)
		step("SIGSTOP", f.etcd.Members[leader].Proc.Pause())
		var next int
		step("electing a leader without the paused one", testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			i, err := leaderAmong(ctx, f.etcd, leader)
			next = i
			return err
		}))
		paused := time.Since(start)
		step("SIGCONT", f.etcd.Members[leader].Proc.Resume())
		step("the paused member back", f.etcd.WaitReady(ctx, 30*time.Second))
		faults.add(t, start, "round %d: SIGSTOP of the etcd leader m%d for %v, until m%d was elected; SIGCONT", round+1, leader, paused.Round(time.Millisecond), next)
		step("progress after fault 3", progressed(ctx, h, 100, 30*time.Second))

		// 4. The upstream connection cut: kill -9 of the HAProxy between
		// gateway g2 and etcd drops every g2 → etcd connection at once; it is
		// started again on the same port.
		start, g = time.Now(), f.gateways[2]
		pid = f.cut.Proc.Pid()
		f.cut.Proc.Kill()
		noticed := testenv.Eventually(ctx, 10*time.Second, func(ctx context.Context) error {
			if g.Ready(ctx) == nil {
				return fmt.Errorf("g2 still ready")
			}
			return nil
		}) == nil
		step("restarting the cut HAProxy", f.cut.Proc.Start())
		step("the cut HAProxy back", testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.cut.Addrs["etcd"])
			if err == nil {
				c.Close()
			}
			return err
		}))
		step("g2 ready again", testenv.Eventually(ctx, 60*time.Second, g.Ready))
		faults.add(t, start, "round %d: upstream cut: kill -9 of the HAProxy (pid %d) between gateway g2 and etcd (g2 went unready: %v), restarted; g2 ready again", round+1, pid, noticed)
		step("progress after fault 4", progressed(ctx, h, 150, 30*time.Second))
	}

}

// report checks h with porcupine and prints the run: operations checked,
// errors clients saw, faults injected, and the verdict; a history that is
// not linearizable fails the test with its visualization written out.
func report(t *testing.T, name string, h *history, errs *tally, faults *faultLog) {
	t.Helper()
	v := check(h.operations(false))
	t.Logf("%s: errors clients saw: %s", name, errs)
	t.Logf("%s: %d faults injected:%s", name, faults.len(), faults)
	t.Logf("%s: %s", name, v)
	if len(errs.bad) > 0 {
		t.Errorf("%s: errors a client cannot act on:\n  %s", name, joinLines(errs.bad))
	}
	if v.Result != porcupine.Ok {
		visualize(t, name, v)
		t.Fatalf("%s: history is not linearizable: %s", name, v)
	}
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}

// caught checks the history of a run with a stale-read client twice: with
// the store's true answers it must be linearizable, with what the cache
// served it must not.
func caught(t *testing.T, name string, h *history, errs *tally, broken *staleStore) {
	t.Helper()
	honest, served := check(h.operations(false)), check(h.operations(true))
	t.Logf("%s: errors clients saw: %s", name, errs)
	t.Logf("%s: the broken client served %d stale reads from its cache", name, broken.staleReads())
	t.Logf("%s: with the store's answers: %s", name, honest)
	t.Logf("%s: with the cached answers: %s", name, served)
	if len(errs.bad) > 0 {
		t.Errorf("%s: errors a client cannot act on:\n  %s", name, joinLines(errs.bad))
	}
	if honest.Result != porcupine.Ok {
		visualize(t, name+"-honest", honest)
		t.Errorf("%s: the history with the store's own answers is not linearizable", name)
	}
	if served.Result != porcupine.Illegal {
		t.Errorf("%s: the stale reads were not caught: %s", name, served)
		return
	}
	if artifacts() {
		visualize(t, name+"-caught", served)
	}
	t.Logf("%s: stale reads caught: the checker says NOT linearizable", name)
}
