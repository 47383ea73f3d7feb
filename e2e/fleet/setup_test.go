package fleet

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
)

// fleetTTL is the replicas' registration lease (fleet.ttl): the minimum.
const fleetTTL = 2 * time.Second

// intentions: web and mallory may do everything, each to its own leases
// and sessions only (no owners:), so that only ownership tells them apart
// — locks included: both may take and release them, and only the lease a
// lock is held under says whose it is.
const intentions = `intentions:
  - name: callers
    source: "spiffe://example.org/*"
    resources: [kv, watch, lease, election, session, cluster, status, maintenance]
    actions: ["*"]
    effect: allow
  - name: callers-lock
    source: "spiffe://example.org/*"
    resources: [lock]
    actions: [acquire, release]
    effect: allow
`

// fleet is three gateways (both fronts) behind HAProxy, in front of a
// 3-member etcd of binaries and a Consul agent.
type fleet struct {
	env *testenv.Env
	pki *testenv.PKI
	ec  *testenv.Etcd
	cs  *testenv.Consul
	gws []*testenv.Gateway
	lb  *testenv.HAProxy
}

// startFleet starts it; every gateway is ready and registered when it
// returns.
func startFleet(t *testing.T) *fleet {
	t.Helper()
	env := testenv.New(t)
	f := &fleet{env: env, pki: env.PKI("web", "mallory")}
	f.ec = env.Etcd(testenv.EtcdSpec{Members: 3, Binary: true, PKI: f.pki})
	f.cs = env.Consul(testenv.ConsulSpec{})
	pol := env.Policies(intentions)
	f.gws = env.Gateways(3, func(int) testenv.GatewaySpec {
		cfg := env.GatewayConfig(f.pki, pol, f.ec.Endpoints, f.cs.HTTPAddr)
		cfg.Fleet.TTL = config.Duration(fleetTTL)
		return testenv.GatewaySpec{Bin: gatewayBin, Config: cfg, LogLevel: "info"}
	})
	f.lb = env.Balancer(testenv.Listeners(f.gws), testenv.EtcdFront, testenv.ConsulFront)
	want := f.urls(0, 1, 2)
	env.Eventually(30*time.Second, func(ctx context.Context) error {
		for i := range f.gws {
			if err := f.wantMembers(ctx, f.gwEndpoint(i), want); err != nil {
				return err
			}
		}
		return nil
	})
	return f
}

// url is gateway i's advertised etcd URL (listen.etcd_advertise's default).
func (f *fleet) url(i int) string { return "https://" + f.gws[i].Etcd }

// urls is the advertised URLs of gateways is, sorted.
func (f *fleet) urls(is ...int) []string {
	var out []string
	for _, i := range is {
		out = append(out, f.url(i))
	}
	slices.Sort(out)
	return out
}

func (f *fleet) gwEndpoint(i int) string { return f.url(i) }

// lbEndpoint is the balancer's etcd frontend.
func (f *fleet) lbEndpoint() string { return "https://" + f.lb.Addrs["etcd"] }

// client is a client/v3 client as who of endpoints.
func (f *fleet) client(t testing.TB, who string, endpoints ...string) *clientv3.Client {
	t.Helper()
	return testenv.New(t).EtcdClient(f.pki, who, endpoints...)
}

// direct is a client straight to etcd with etcd's own SVID, for checking
// state behind the gateways' backs.
func (f *fleet) direct(t testing.TB) *clientv3.Client {
	t.Helper()
	return testenv.New(t).MembersClient(f.ec, "etcd")
}

// memberURLs is every client URL of a MemberList through endpoint, sorted,
// duplicates kept.
func (f *fleet) memberURLs(ctx context.Context, endpoint string) ([]string, error) {
	c, err := testenv.EtcdClient(f.pki, "web", endpoint)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := c.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, m := range r.Members {
		urls = append(urls, m.ClientURLs...)
	}
	slices.Sort(urls)
	return urls, nil
}

// wantMembers checks that MemberList through endpoint lists exactly want
// (each once: three replicas over three members), and no etcd URL.
func (f *fleet) wantMembers(ctx context.Context, endpoint string, want []string) error {
	got, err := f.memberURLs(ctx, endpoint)
	if err != nil {
		return err
	}
	for _, u := range got {
		if slices.Contains(f.ec.Endpoints, u) {
			return &mismatch{what: "MemberList through " + endpoint + " names etcd", got: got, want: want}
		}
	}
	if !slices.Equal(dedup(got), want) {
		return &mismatch{what: "MemberList through " + endpoint, got: got, want: want}
	}
	return nil
}

func dedup(s []string) []string { return slices.Compact(slices.Clone(s)) }

// mismatch is a condition not met yet.
type mismatch struct {
	what      string
	got, want []string
}

func (m *mismatch) Error() string {
	return m.what + ": got " + strings.Join(m.got, ",") + ", want " + strings.Join(m.want, ",")
}

// https is an HTTP client as who, for the Consul front.
func (f *fleet) https(t testing.TB, who string) *http.Client {
	t.Helper()
	tc, err := f.pki.ClientTLS(who)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
}

// call makes one request and returns its status and body.
func call(t testing.TB, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ctx is a bounded context for one step of a test.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
