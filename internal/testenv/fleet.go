package testenv

import (
	"errors"
	"strconv"
	"sync"

	"github.com/storegate/storegate/config"
)

// This file holds what the fleet suites start: gateways side by side and
// HAProxy in front of them.

// Gateways starts n gateways side by side, the i-th on spec(i) (its Dir
// defaulting to a temporary directory), and returns once all are ready: a
// race-built gateway takes long to become ready the first time, and n of
// them one after the other take n times as long. Each is stopped, with its
// log when the test failed, when the test ends.
func (e *Env) Gateways(n int, spec func(i int) GatewaySpec) []*Gateway {
	e.t.Helper()
	specs := make([]GatewaySpec, n)
	for i := range specs {
		specs[i] = spec(i)
		if specs[i].Dir == "" {
			specs[i].Dir = e.t.TempDir()
		}
	}
	gws, errs := make([]*Gateway, n), make([]error, n)
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() { gws[i], errs[i] = StartGateway(e.t.Context(), s) })
	}
	wg.Wait()
	for _, g := range gws {
		if g != nil {
			e.t.Cleanup(g.Close)
			e.logOnFailure(g.Proc)
		}
	}
	e.check(errors.Join(errs...))
	return gws
}

// Front is one of a gateway's client listeners, and the name of the
// HAProxy frontend balancing it.
type Front string

const (
	EtcdFront   Front = "etcd"
	ConsulFront Front = "consul"
)

// addr is the front's listen address in l.
func (f Front) addr(l config.ListenConfig) string {
	switch f {
	case EtcdFront:
		return l.Etcd
	case ConsulFront:
		return l.Consul
	}
	return ""
}

// Listeners is the gateways' listeners, in order.
func Listeners(gws []*Gateway) []config.ListenConfig {
	var ls []config.ListenConfig
	for _, g := range gws {
		ls = append(ls, g.Spec.Config.Listen)
	}
	return ls
}

// backends are the gateways listening on ls as the servers g0, g1, … of
// front, each health-checked by its /readyz on its admin listener so that
// a draining or dead replica leaves the rotation.
func backends(front Front, ls []config.ListenConfig) []Backend {
	var out []Backend
	for i, l := range ls {
		out = append(out, Backend{Name: "g" + strconv.Itoa(i), Addr: front.addr(l), CheckAddr: l.Admin})
	}
	return out
}

// Balancer starts HAProxy with a frontend named for each of fronts, over
// the gateways listening on ls (which need not have started yet: a server
// is in the rotation once its /readyz answers).
func (e *Env) Balancer(ls []config.ListenConfig, fronts ...Front) *HAProxy {
	e.t.Helper()
	var s HAProxySpec
	for _, f := range fronts {
		if f != EtcdFront && f != ConsulFront {
			e.t.Fatalf("testenv: a gateway has no %q front", f)
		}
		s.Frontends = append(s.Frontends, Frontend{Name: string(f), Servers: backends(f, ls)})
	}
	return e.HAProxy(s)
}
