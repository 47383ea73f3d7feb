package resume

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/storegate/storegate/internal/testenv"
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
	f := &fleet{env: env, pki: p, etcd: ec}
	f.gateways = env.Gateways(n, func(int) testenv.GatewaySpec {
		return testenv.GatewaySpec{Bin: gatewayBin, Config: env.GatewayConfig(p, pol, ec.Endpoints, "")}
	})
	h := env.Balancer(testenv.Listeners(f.gateways), testenv.EtcdFront)
	f.lb = h.Addrs["etcd"]
	return f
}

// balanced is a client/v3 client of the balancer, as the caller "app".
func (f *fleet) balanced(t *testing.T) *clientv3.Client {
	t.Helper()
	return testenv.New(t).EtcdClient(f.pki, "app", "https://"+f.lb)
}

// direct is a client/v3 client of every etcd member, bypassing the
// gateways: what the store itself holds is read through it.
func (f *fleet) direct(t *testing.T) *clientv3.Client {
	t.Helper()
	return testenv.New(t).MembersClient(f.etcd, "etcd")
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
	tc, err := f.pki.ClientTLS("etcd")
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.etcd.Members[i].ClientURL+"/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("etcd member %d: %w", i, err)
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

// watchMember waits until etcd's members hold more watchers than the
// gateways' fleet-registry watches (one per gateway;
// etcd_debugging_mvcc_watcher_total), and returns the member holding the
// most: one that serves the gateway's upstream watches of a caller's
// watches. A caller's watches need not be one etcd watcher each, nor on one
// member: watches of the same range share one upstream watch (a resume
// joins the watch from now when it has not yet passed its start), and they
// travel on the gateway's shared stream or, for older history, on the
// caller's own.
func (f *fleet) watchMember(t *testing.T) int {
	t.Helper()
	found := -1
	f.env.Eventually(time.Minute, func(ctx context.Context) error {
		found = -1
		var counts []float64
		total := 0.0
		for i := range f.etcd.Members {
			v, err := f.etcdGauge(ctx, i, "etcd_debugging_mvcc_watcher_total")
			if err != nil {
				return err
			}
			counts = append(counts, v)
			total += v
			if found < 0 || v > counts[found] {
				found = i
			}
		}
		if total <= float64(len(f.gateways)) {
			return fmt.Errorf("watchers per etcd member: %v: no more than the %d registry watches", counts, len(f.gateways))
		}
		return nil
	})
	return found
}
