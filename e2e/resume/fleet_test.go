package resume

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
)

// Stream methods whose open count a gateway's /metrics reports.
const (
	methodWatch     = "/etcdserverpb.Watch/Watch"
	methodKeepAlive = "/etcdserverpb.Lease/LeaseKeepAlive"
)

// fleet is a 3-member etcd of binaries, gateway replicas over it and
// HAProxy (TCP, round-robin, /readyz checks) in front of them.
type fleet struct {
	env      *testenv.Env
	pki      *testenv.PKI
	etcd     *testenv.Etcd
	gateways []*testenv.Gateway
	lb       string // the balancer's etcd frontend, host:port
}

// newFleet starts the fleet with n gateways (started side by side: a
// race-built gateway takes long to become ready the first time).
func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	env := testenv.New(t)
	p := env.PKI("app")
	ec := env.Etcd(testenv.EtcdSpec{Members: 3, Binary: true, PKI: p})
	pol := env.Policies(testenv.AllowAll)
	f := &fleet{env: env, pki: p, etcd: ec, gateways: make([]*testenv.Gateway, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		spec := testenv.GatewaySpec{Bin: gatewayBin, Config: env.GatewayConfig(p, pol, ec.Endpoints, ""), Dir: t.TempDir()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.gateways[i], errs[i] = testenv.StartGateway(t.Context(), spec)
		}()
	}
	wg.Wait()
	for _, g := range f.gateways {
		if g != nil {
			t.Cleanup(func() {
				g.Close()
				if t.Failed() {
					t.Logf("%s output:\n%s", g.Proc.Name, g.Proc.Tail(80))
				}
			})
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var servers []testenv.Backend
	for i, g := range f.gateways {
		servers = append(servers, testenv.Backend{Name: "g" + strconv.Itoa(i), Addr: g.Etcd, CheckAddr: g.Admin})
	}
	h := env.HAProxy(testenv.HAProxySpec{Frontends: []testenv.Frontend{{Name: "etcd", Servers: servers}}})
	f.lb = h.Addrs["etcd"]
	return f
}

// balanced is a client/v3 client of the balancer, as the caller "app".
func (f *fleet) balanced(t *testing.T) *clientv3.Client {
	t.Helper()
	tc, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: f.pki.Cert("app"), Key: f.pki.Key("app"), CA: f.pki.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + f.lb}, TLS: tc,
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// direct is a client/v3 client of every etcd member, bypassing the
// gateways: what the store itself holds is read through it.
func (f *fleet) direct(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := f.etcd.Client("etcd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openStreams is the number of caller streams of method gateway g holds
// open now, from its /metrics (storegate_streams_open).
func openStreams(ctx context.Context, g *testenv.Gateway, method string) (int, error) {
	n, err := g.Metric(ctx, "storegate_streams_open", map[string]string{"method": method})
	return int(n), err
}

// holder waits until exactly one running gateway reports at least want
// open streams of method and the others none, and returns its index: the
// replica the balancer sent the caller's connection to.
func (f *fleet) holder(t *testing.T, method string, want int) int {
	t.Helper()
	found := -1
	f.env.Eventually(60*time.Second, func(ctx context.Context) error {
		found = -1
		var counts []int
		for i, g := range f.gateways {
			if gone, _ := g.Proc.Exited(); gone {
				counts = append(counts, 0)
				continue
			}
			n, err := openStreams(ctx, g, method)
			if err != nil {
				return err
			}
			counts = append(counts, n)
			if n > 0 {
				if found >= 0 {
					return fmt.Errorf("%s streams open on several gateways: %v", method, counts)
				}
				found = i
			}
		}
		if found < 0 || counts[found] < want {
			return fmt.Errorf("%s streams open per gateway: %v, want %d on one", method, counts, want)
		}
		return nil
	})
	return found
}

// etcdGauge is the value of an unlabelled metric on etcd member i's own
// /metrics (its client URL, with etcd's client certificate).
func (f *fleet) etcdGauge(ctx context.Context, i int, name string) (float64, error) {
	tc, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: f.pki.Cert("etcd"), Key: f.pki.Key("etcd"), CA: f.pki.Bundle()})
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.etcd.Members[i].ClientURL+"/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("etcd member %d /metrics: %s", i, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == name {
			return strconv.ParseFloat(fields[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("etcd member %d /metrics: no %s", i, name)
}

// watchMember waits until exactly one etcd member counts at least n
// watchers (etcd_debugging_mvcc_watcher_total) and returns it: the member
// serving the gateway's upstream stream of a caller's n watches. Each
// gateway's own fleet-registry watch adds one watcher where it runs, so n
// must exceed the number of gateways.
func (f *fleet) watchMember(t *testing.T, n int) int {
	t.Helper()
	found := -1
	f.env.Eventually(time.Minute, func(ctx context.Context) error {
		found = -1
		var counts []float64
		for i := range f.etcd.Members {
			v, err := f.etcdGauge(ctx, i, "etcd_debugging_mvcc_watcher_total")
			if err != nil {
				return err
			}
			counts = append(counts, v)
			if v >= float64(n) {
				if found >= 0 {
					return fmt.Errorf("watchers per etcd member: %v: several hold %d", counts, n)
				}
				found = i
			}
		}
		if found < 0 {
			return fmt.Errorf("watchers per etcd member: %v: none holds %d", counts, n)
		}
		return nil
	})
	return found
}
