package drain

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
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
	servers := func(listen func(config.Config) string) []testenv.Backend {
		var out []testenv.Backend
		for i, c := range f.cfg {
			out = append(out, testenv.Backend{Name: "g" + strconv.Itoa(i), Addr: listen(c), CheckAddr: c.Listen.Admin})
		}
		return out
	}
	f.lb = env.HAProxy(testenv.HAProxySpec{Frontends: []testenv.Frontend{
		{Name: "etcd", Servers: servers(func(c config.Config) string { return c.Listen.Etcd })},
		{Name: "consul", Servers: servers(func(c config.Config) string { return c.Listen.Consul })},
	}})
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

func (f *fleet) callerTLS(t *testing.T) *tls.Config {
	t.Helper()
	tc, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: f.pki.Cert(caller), Key: f.pki.Key(caller), CA: f.pki.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// etcdClient is a client/v3 client through HAProxy, as applications
// configure one (its own connection).
func (f *fleet) etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{f.lb.Addrs["etcd"]}, TLS: f.callerTLS(t),
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// consulClient is a consul api client through HAProxy (its own
// transport), as applications configure one.
func (f *fleet) consulClient(t *testing.T) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = f.lb.Addrs["consul"], "https"
	cfg.TLSConfig = api.TLSConfig{CAFile: f.pki.Bundle(), CertFile: f.pki.Cert(caller), KeyFile: f.pki.Key(caller)}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cfg.Transport.CloseIdleConnections)
	return c
}

// direct is a client straight to etcd, for reading what it holds.
func (f *fleet) direct(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := f.etcd.Client("etcd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
