package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var gatewayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "testenv")
	if err != nil {
		panic(err)
	}
	gatewayBin = filepath.Join(dir, "gateway")
	if err := BuildGateway(gatewayBin, false); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestFleet starts the whole environment — a 3-member etcd of binaries, two
// gateways behind HAProxy — and goes through the balancer; then the leader
// is killed and restarted, and a gateway paused and resumed.
func TestFleet(t *testing.T) {
	env := New(t)
	p := env.PKI("admin")
	ec := env.Etcd(EtcdSpec{Members: 3, Binary: true, PKI: p})
	pol := env.Policies(AllowAll)
	var servers []Backend
	for i := range 2 {
		cfg := env.GatewayConfig(p, pol, ec.Endpoints, "")
		g := env.Gateway(GatewaySpec{Bin: gatewayBin, Config: cfg})
		servers = append(servers, Backend{Name: "g" + string(rune('0'+i)), Addr: g.Etcd, CheckAddr: g.Admin})
	}
	lb := env.HAProxy(HAProxySpec{Frontends: []Frontend{{Name: "etcd", Servers: servers}}})
	c, err := (&Etcd{Spec: EtcdSpec{PKI: p}, Endpoints: []string{"https://" + lb.Addrs["etcd"]}}).Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	leader, err := ec.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ec.Kill(leader)
	env.Eventually(30*time.Second, func(ctx context.Context) error {
		_, err := c.Put(ctx, "/k", "v2")
		return err
	})
	if err := ec.Restart(ctx, leader); err != nil {
		t.Fatal(err)
	}
	r, err := c.Get(ctx, "/k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v2" {
		t.Fatalf("get = %v, %v", r, err)
	}
}
