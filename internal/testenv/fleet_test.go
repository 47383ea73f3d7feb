package testenv

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/storegate/storegate/config"
)

func TestBackends(t *testing.T) {
	ls := []config.ListenConfig{
		{Etcd: "127.0.0.1:1", Consul: "127.0.0.1:2", Admin: "127.0.0.1:3"},
		{Etcd: "127.0.0.1:4", Consul: "127.0.0.1:5", Admin: "127.0.0.1:6"},
	}
	for _, tc := range []struct {
		front Front
		want  []Backend
	}{
		{EtcdFront, []Backend{{Name: "g0", Addr: "127.0.0.1:1", CheckAddr: "127.0.0.1:3"}, {Name: "g1", Addr: "127.0.0.1:4", CheckAddr: "127.0.0.1:6"}}},
		{ConsulFront, []Backend{{Name: "g0", Addr: "127.0.0.1:2", CheckAddr: "127.0.0.1:3"}, {Name: "g1", Addr: "127.0.0.1:5", CheckAddr: "127.0.0.1:6"}}},
	} {
		if got := backends(tc.front, ls); !slices.Equal(got, tc.want) {
			t.Errorf("backends(%s) = %v, want %v", tc.front, got, tc.want)
		}
	}
}

// TestGatewaysBehindBalancer starts two gateways side by side over one
// embedded etcd member, HAProxy in front of them, and writes through the
// balancer what a client of etcd itself then reads.
func TestGatewaysBehindBalancer(t *testing.T) {
	env := New(t)
	p := env.PKI("admin")
	ec := env.Etcd(EtcdSpec{PKI: p})
	pol := env.Policies(AllowAll)
	gws := env.Gateways(2, func(int) GatewaySpec {
		return GatewaySpec{Bin: gatewayBin, Config: env.GatewayConfig(p, pol, ec.Endpoints, "")}
	})
	for i, g := range gws {
		if err := g.Ready(t.Context()); err != nil {
			t.Fatalf("gateway %d: %v", i, err)
		}
	}
	lb := env.Balancer(Listeners(gws), EtcdFront)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := env.EtcdClient(p, "admin", "https://"+lb.Addrs["etcd"]).Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	r, err := env.MembersClient(ec, "etcd").Get(ctx, "/k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get = %v, %v", r, err)
	}
}
