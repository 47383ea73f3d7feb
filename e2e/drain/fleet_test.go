package drain

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
)

// caller is the SVID every client of these tests uses.
const caller = "web"

// fleet is two gateways behind HAProxy (one frontend for the etcd fronts,
// one for the Consul fronts, /readyz health checks) over a 3-member etcd
// and a Consul agent. The second gateway starts only when asked, so that
// every connection made before lands on the first.
type fleet struct {
	env    *testenv.Env
	pki    *testenv.PKI
	etcd   *testenv.Etcd
	consul *testenv.Consul
	cfg    [2]config.Config
	gw     [2]*testenv.Gateway
	lb     *testenv.HAProxy
}

// newFleet starts everything but the second gateway; both gateways drain
// within drainTimeout.
func newFleet(t *testing.T, drainTimeout time.Duration) *fleet {
	t.Helper()
	env := testenv.New(t)
	f := &fleet{env: env, pki: env.PKI(caller)}
	f.etcd = env.Etcd(testenv.EtcdSpec{Members: 3, Binary: true, PKI: f.pki})
	f.consul = env.Consul(testenv.ConsulSpec{})
	policies := env.Policies(testenv.AllowAll)
	for i := range f.cfg {
		f.cfg[i] = env.GatewayConfig(f.pki, policies, f.etcd.Endpoints, f.consul.HTTPAddr)
		f.cfg[i].Drain.Timeout = config.Duration(drainTimeout)
	}
	f.gw[0] = env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: f.cfg[0]})
	f.lb = env.Balancer([]config.ListenConfig{f.cfg[0].Listen, f.cfg[1].Listen}, testenv.EtcdFront, testenv.ConsulFront)
	return f
}

// startSecond starts the second gateway and waits until HAProxy sends new
// connections of both frontends to it.
func (f *fleet) startSecond(t *testing.T) {
	t.Helper()
	f.gw[1] = f.env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: f.cfg[1]})
	for _, proto := range []string{"etcd", "consul"} {
		f.env.Eventually(time.Minute, func(ctx context.Context) error {
			before, err := f.gw[1].Metric(ctx, "storegate_decisions_total", map[string]string{"protocol": proto})
			if err != nil {
				return err
			}
			if err := f.probe(ctx, t, proto); err != nil {
				return err
			}
			after, err := f.gw[1].Metric(ctx, "storegate_decisions_total", map[string]string{"protocol": proto})
			if err != nil {
				return err
			}
			if after == before {
				return fmt.Errorf("a fresh %s connection through HAProxy did not reach the second gateway", proto)
			}
			return nil
		})
	}
}

// probe makes one read through HAProxy on a fresh connection.
func (f *fleet) probe(ctx context.Context, t *testing.T, proto string) error {
	if proto == "etcd" {
		c := f.etcdClient(t)
		defer c.Close()
		_, err := c.Get(ctx, "/probe")
		return err
	}
	c := f.consulClient(t)
	_, _, err := c.KV().Get("probe", (&api.QueryOptions{}).WithContext(ctx))
	return err
}

// etcdClient is a client/v3 client through HAProxy, as applications
// configure one (its own connection).
func (f *fleet) etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	return testenv.New(t).EtcdClient(f.pki, caller, f.lb.Addrs["etcd"])
}

// consulClient is a consul api client through HAProxy (its own
// transport), as applications configure one.
func (f *fleet) consulClient(t *testing.T) *api.Client {
	t.Helper()
	return testenv.New(t).ConsulClient(f.pki, caller, f.lb.Addrs["consul"])
}

// direct is a client straight to etcd, for reading what it holds.
func (f *fleet) direct(t *testing.T) *clientv3.Client {
	t.Helper()
	return testenv.New(t).MembersClient(f.etcd, "etcd")
}
