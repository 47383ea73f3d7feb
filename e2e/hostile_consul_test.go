package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The hostile Consul suite: callers with SVIDs minted for the test speak raw
// HTTP to the gateway's Consul front (combined gateway: etcd and Consul
// fronts, shipped intentions), and every outcome is read back from the agent
// directly, not only from the gateway's status code.

// hcnNode is the node name startConsul gives the dev agent.
const hcnNode = "storegate-e2e"

// hcnEnv is one agent, one combined gateway under the shipped intentions,
// and the callers web and admin.
type hcnEnv struct {
	p          *pki
	ec         *etcdCluster
	agent      *consulAgent
	gw         *gateway
	front      string // https://host:port of the gateway's Consul front
	direct     string // http://host:port of the agent
	web, admin *http.Client
}

func hcnStart(t *testing.T, consulArgs ...string) *hcnEnv {
	t.Helper()
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t, consulArgs...)
	// A combined gateway (etcd and Consul fronts), so that it knows etcd's
	// address and its own listeners as well as the agent's.
	consulAddr := freePort(t)
	gw := startGateway(t, p, ec, gatewayOpts{
		policyDir:    copyPolicies(t, mustRead(t, repoRoot+"/policies/intentions.yaml")),
		consulListen: consulAddr, consulUpstream: "http://" + agent.httpAddr,
	})
	return &hcnEnv{p: p, ec: ec, agent: agent, gw: gw, front: "https://" + consulAddr, direct: "http://" + agent.httpAddr,
		web: httpsAs(t, p, "web"), admin: httpsAs(t, p, "admin")}
}

// as sends a request through the gateway as caller c.
func (e *hcnEnv) as(t *testing.T, c *http.Client, method, path, body string) (int, string) {
	t.Helper()
	return call(t, c, method, e.front+path, body)
}

// put writes to the agent directly (test setup); anything but 200 is fatal.
func (e *hcnEnv) put(t *testing.T, path, body string) {
	t.Helper()
	if code, out := call(t, http.DefaultClient, "PUT", e.direct+path, body); code != http.StatusOK {
		t.Fatalf("direct PUT %s %s: %d %s", path, body, code, out)
	}
}

// get reads path from the agent directly into v; a 404 leaves v as it is.
func (e *hcnEnv) get(t *testing.T, path string, v any) {
	t.Helper()
	code, body := call(t, http.DefaultClient, "GET", e.direct+path, "")
	if code == http.StatusNotFound {
		return
	}
	if code != http.StatusOK {
		t.Fatalf("direct GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("direct GET %s: %v\n%s", path, err, body)
	}
}

type hcnSvc struct {
	ID, Service, Kind, Address string
	Port                       int
	Proxy                      *struct{ DestinationServiceName, DestinationServiceID string }
}

func (s hcnSvc) String() string {
	d := ""
	if s.Proxy != nil {
		d = s.Proxy.DestinationServiceName
	}
	return fmt.Sprintf("name=%s kind=%s dest=%s at %s:%d", s.Service, s.Kind, d, s.Address, s.Port)
}

// hcnCatSvc is an instance as /v1/catalog/service/NAME lists it.
type hcnCatSvc struct{ Node, ServiceID, ServiceName string }

type hcnCheck struct {
	Node, CheckID, Name, Status, Output, ServiceID, ServiceName, Type string
}

func (e *hcnEnv) agentServices(t *testing.T) map[string]hcnSvc {
	t.Helper()
	m := map[string]hcnSvc{}
	e.get(t, "/v1/agent/services", &m)
	return m
}

func (e *hcnEnv) agentChecks(t *testing.T) map[string]hcnCheck {
	t.Helper()
	m := map[string]hcnCheck{}
	e.get(t, "/v1/agent/checks", &m)
	return m
}

// catalogServices is the catalog's view of node's services, by ID.
func (e *hcnEnv) catalogServices(t *testing.T, node string) map[string]hcnSvc {
	t.Helper()
	var n struct{ Services map[string]hcnSvc }
	e.get(t, "/v1/catalog/node/"+url.PathEscape(node), &n)
	if n.Services == nil {
		n.Services = map[string]hcnSvc{}
	}
	return n.Services
}

// catalogChecks is the catalog's view of node's checks, by ID.
func (e *hcnEnv) catalogChecks(t *testing.T, node string) map[string]hcnCheck {
	t.Helper()
	var l []hcnCheck
	e.get(t, "/v1/health/node/"+url.PathEscape(node), &l)
	m := map[string]hcnCheck{}
	for _, c := range l {
		m[c.CheckID] = c
	}
	return m
}

// hcnSnap is what Consul holds that an attack could add to or change:
// the agent's services and checks, the catalog's services and checks on
// the agent's node, and the catalog's nodes.
type hcnSnap map[string]string

func (e *hcnEnv) snap(t *testing.T) hcnSnap {
	t.Helper()
	s := hcnSnap{}
	for id, v := range e.agentServices(t) {
		s["agent service "+id] = v.String()
	}
	for id, c := range e.agentChecks(t) {
		s["agent check "+id] = "service=" + c.ServiceID + " type=" + c.Type
	}
	for id, v := range e.catalogServices(t, hcnNode) {
		s["catalog service "+id] = v.String()
	}
	for id, c := range e.catalogChecks(t, hcnNode) {
		s["catalog check "+id] = "service=" + c.ServiceID + " type=" + c.Type
	}
	var nodes []struct{ Node, Address string }
	e.get(t, "/v1/catalog/nodes", &nodes)
	for _, n := range nodes {
		s["node "+n.Node] = n.Address
	}
	return s
}

// nothingNew fails if Consul now holds something that was not in before,
// or holds it differently. (Removals are not reported: the agent's
// anti-entropy may remove catalog entries it does not know of; what must
// stay is asserted where it matters, on the victims.)
func (e *hcnEnv) nothingNew(t *testing.T, what string, before hcnSnap) {
	t.Helper()
	var diffs []string
	for k, v := range e.snap(t) {
		switch old, ok := before[k]; {
		case !ok:
			diffs = append(diffs, "+ "+k+": "+v)
		case old != v:
			diffs = append(diffs, "~ "+k+": "+old+" -> "+v)
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Errorf("%s changed Consul:\n%s", what, strings.Join(diffs, "\n"))
	}
}

// settle waits until everything the agent holds is in the catalog (the
// agent syncs its registrations asynchronously). A readiness wait, bounded;
// a timeout is fatal since later comparisons would be meaningless.
func (e *hcnEnv) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var missing []string
		cs, cc := e.catalogServices(t, hcnNode), e.catalogChecks(t, hcnNode)
		for id := range e.agentServices(t) {
			if _, ok := cs[id]; !ok {
				missing = append(missing, "service "+id)
			}
		}
		for id := range e.agentChecks(t) {
			if _, ok := cc[id]; !ok {
				missing = append(missing, "check "+id)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's catalog sync did not complete in 15s; missing %v", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// undo removes, directly, what Consul holds now and did not in base, runs
// setup (if any) again and waits for the catalog to sync: after a case that
// failed, so that the next one starts from the same state and reports its
// own outcome, not the previous one's.
func (e *hcnEnv) undo(t *testing.T, base hcnSnap, setup func(*testing.T)) {
	t.Helper()
	do := func(path, body string) { call(t, http.DefaultClient, "PUT", e.direct+path, body) }
	now := e.snap(t)
	for _, pass := range []string{"agent service ", "agent check ", "catalog service ", "catalog check ", "node "} {
		for k := range now {
			id, ok := strings.CutPrefix(k, pass)
			if _, kept := base[k]; !ok || kept {
				continue
			}
			switch pass {
			case "agent service ":
				do("/v1/agent/service/deregister/"+url.PathEscape(id), "")
			case "agent check ":
				do("/v1/agent/check/deregister/"+url.PathEscape(id), "")
			case "catalog service ":
				do("/v1/catalog/deregister", hcnJSON(t, map[string]string{"Node": hcnNode, "ServiceID": id}))
			case "catalog check ":
				do("/v1/catalog/deregister", hcnJSON(t, map[string]string{"Node": hcnNode, "CheckID": id}))
			case "node ":
				do("/v1/catalog/deregister", hcnJSON(t, map[string]string{"Node": id}))
			}
		}
	}
	if setup != nil {
		setup(t)
	}
	e.settle(t)
}

// hcnDenied: the gateway's denial, HTTP 403 with a body starting
// "Permission denied".
func hcnDenied(t *testing.T, what string, code int, body string) {
	t.Helper()
	if code != http.StatusForbidden || !strings.HasPrefix(body, "Permission denied") {
		t.Errorf("%s: %d %q, want 403 \"Permission denied...\"", what, code, body)
	}
}

// hcnRefused: anything but success (a body the gateway refuses to read,
// 400, or a denial, 403), for spellings Consul reads but the gateway's
// strict decoding may reject before policy.
func hcnRefused(t *testing.T, what string, code int, body string) {
	t.Helper()
	if code < 400 || code >= 500 {
		t.Errorf("%s: %d %q, want 400 or 403", what, code, body)
	}
}

func hcnJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func hcnPort(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(port(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHostileConsulNestedRegistration: class 2, nested and hidden parts of a
// body. A registration creates more than its top-level service: a sidecar
// (whose name the caller may give, and whose proxy destination it may set),
// a connect-proxy for a destination, several services in one txn. Each is
// judged as its own op under the shipped intentions (web registers web-*
// only, has no node rights), a denial leaves nothing in Consul, and the
// allowed shapes (a web-* service with its checks and a default sidecar, a
// proxy for web-1, deregistering its own) keep working.
func TestHostileConsulNestedRegistration(t *testing.T) {
	e := hcnStart(t)
	setup := func(t *testing.T) {
		e.put(t, "/v1/agent/service/register", `{"Name":"api","ID":"svc-api","Port":7001,"Check":{"TTL":"10m"}}`)
		e.put(t, "/v1/agent/service/register", `{"Name":"web-base","Port":7002}`)
	}
	setup(t)
	e.settle(t)
	base := e.snap(t)
	P := hcnPort(t)

	denied := []struct {
		name, method, path, body string
		strict                   bool // a 403 denial, not merely a refusal
	}{
		{"sidecar named db", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n1","Port":%d,"Connect":{"SidecarService":{"Name":"db"}}}`, P), true},
		{"sidecar named api-sidecar-proxy", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n2","Port":%d,"Connect":{"SidecarService":{"Name":"api-sidecar-proxy"}}}`, P), true},
		{"sidecar with an ID, named api", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n3","Port":%d,"Connect":{"SidecarService":{"ID":"web-n3-sc","Name":"api","Port":%d}}}`, P, P+1), true},
		{"default-named sidecar proxying for api", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n4","Port":%d,"Connect":{"SidecarService":{"Proxy":{"DestinationServiceName":"api"}}}}`, P), true},
		{"web-* sidecar proxying for db", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n5","Port":%d,"Connect":{"SidecarService":{"Name":"web-n5-envoy","Proxy":{"DestinationServiceName":"db","DestinationServiceID":"db"}}}}`, P), true},
		{"connect-proxy for api", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n6","Kind":"connect-proxy","Port":%d,"Proxy":{"DestinationServiceName":"api"}}`, P), true},
		{"connect-proxy for db, with an ID", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n7","ID":"web-n7-1","Kind":"connect-proxy","Port":%d,"Proxy":{"DestinationServiceName":"db"}}`, P), true},
		{"connect-proxy for api, destination ID web's", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n8","Kind":"connect-proxy","Port":%d,"Proxy":{"DestinationServiceName":"api","DestinationServiceID":"web-base"}}`, P), true},
		{"connect-proxy for api, with a default sidecar too", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n9","Port":%d,"Connect":{"SidecarService":{}},"Checks":[{"TTL":"30s"}],"Kind":"connect-proxy","Proxy":{"DestinationServiceName":"api"}}`, P), false},
		{"a sidecar's own sidecar named db", "PUT", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-n10","Port":%d,"Connect":{"SidecarService":{"Name":"web-n10-sc","Connect":{"SidecarService":{"Name":"db"}}}}}`, P), false},
		{"catalog: connect-proxy for api", "PUT", "/v1/catalog/register",
			fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Service":{"ID":"web-n11","Service":"web-n11","Kind":"connect-proxy","Port":%d,"Proxy":{"DestinationServiceName":"api"}}}`, hcnNode, P), true},
		{"catalog: service db", "PUT", "/v1/catalog/register",
			fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Service":{"ID":"web-n12","Service":"db","Port":%d}}`, hcnNode, P), true},
		{"txn: connect-proxy for api", "PUT", "/v1/txn",
			fmt.Sprintf(`[{"Service":{"Verb":"set","Node":%q,"Service":{"ID":"web-n13","Service":"web-n13","Kind":"connect-proxy","Port":%d,"Proxy":{"DestinationServiceName":"api"}}}}]`, hcnNode, P), true},
		{"txn: web-* service, then db", "PUT", "/v1/txn",
			fmt.Sprintf(`[{"Service":{"Verb":"set","Node":%q,"Service":{"ID":"web-n14","Service":"web-n14","Port":%d}}},`+
				`{"Service":{"Verb":"set","Node":%q,"Service":{"ID":"web-n14-db","Service":"db","Port":%d}}}]`, hcnNode, P, hcnNode, P+1), true},
		{"txn: web-* service, then a check on api's service", "PUT", "/v1/txn",
			fmt.Sprintf(`[{"Service":{"Verb":"set","Node":%q,"Service":{"ID":"web-n15","Service":"web-n15","Port":%d}}},`+
				`{"Check":{"Verb":"set","Check":{"Node":%q,"CheckID":"web-n15-chk","Name":"web-n15-chk","ServiceID":"svc-api","Status":"critical"}}}]`, hcnNode, P, hcnNode), true},
		{"txn: KV under /app/, then a node", "PUT", "/v1/txn",
			`[{"KV":{"Verb":"set","Key":"app/web-n16","Value":"eA=="}},{"Node":{"Verb":"set","Node":{"Node":"web-n16-node","Address":"127.0.0.16"}}}]`, true},
	}
	for _, c := range denied {
		t.Run("denied/"+c.name, func(t *testing.T) {
			before := e.snap(t)
			code, body := e.as(t, e.web, c.method, c.path, c.body)
			if c.strict {
				hcnDenied(t, c.body, code, body)
			} else {
				hcnRefused(t, c.body, code, body)
			}
			e.nothingNew(t, "the refused request", before)
			for _, name := range []string{"db", "api-sidecar-proxy", "web-n5-envoy"} {
				var l []hcnCatSvc
				e.get(t, "/v1/catalog/service/"+name, &l)
				if len(l) > 0 {
					t.Errorf("service %s is in the catalog: %+v", name, l)
				}
			}
			var api []hcnCatSvc
			if e.get(t, "/v1/catalog/service/api", &api); len(api) != 1 || api[0].ServiceID != "svc-api" {
				t.Errorf("the catalog's api instances: %+v", api)
			}
			if t.Failed() {
				e.undo(t, base, setup)
			}
		})
	}
	var kv []any
	if e.get(t, "/v1/kv/app/web-n16", &kv); len(kv) > 0 {
		t.Errorf("a refused txn wrote app/web-n16: %v", kv)
	}

	// What the spec keeps allowed.
	t.Run("allowed/web-1 with TTL, HTTP and TCP checks and a default sidecar", func(t *testing.T) {
		body := fmt.Sprintf(`{"Name":"web-1","Address":"127.0.0.1","Port":%d,"Check":{"TTL":"30s"},`+
			`"Checks":[{"HTTP":"http://127.0.0.1:%d/health","Interval":"10s"},{"TCP":"127.0.0.1:%d","Interval":"10s"}],`+
			`"Connect":{"SidecarService":{}}}`, P, P, P)
		if code, out := e.as(t, e.web, "PUT", "/v1/agent/service/register", body); code != http.StatusOK {
			t.Fatalf("register web-1: %d %s", code, out)
		}
		svcs := e.agentServices(t)
		if s, ok := svcs["web-1"]; !ok || s.Service != "web-1" || s.Port != P {
			t.Errorf("web-1 in the agent: %+v (present %v)", s, ok)
		}
		sc, ok := svcs["web-1-sidecar-proxy"]
		if !ok || sc.Service != "web-1-sidecar-proxy" || sc.Kind != "connect-proxy" || sc.Proxy == nil || sc.Proxy.DestinationServiceName != "web-1" {
			t.Errorf("web-1's sidecar in the agent: %s (present %v)", sc, ok)
		}
		kinds := map[string]bool{}
		for _, c := range e.agentChecks(t) {
			if c.ServiceID == "web-1" {
				kinds[c.Type] = true
			}
		}
		if !kinds["ttl"] || !kinds["http"] || !kinds["tcp"] || len(kinds) != 3 {
			t.Errorf("web-1's checks in the agent are of types %v, want ttl, http, tcp", kinds)
		}
		e.settle(t)
		var l []hcnCatSvc
		if e.get(t, "/v1/catalog/service/web-1", &l); len(l) != 1 || l[0].ServiceID != "web-1" {
			t.Errorf("web-1 in the catalog: %+v", l)
		}
		var hc []hcnCheck
		if e.get(t, "/v1/health/checks/web-1", &hc); len(hc) != 3 {
			t.Errorf("web-1's checks in the catalog: %+v", hc)
		}
	})
	t.Run("allowed/connect-proxy for web-1", func(t *testing.T) {
		body := fmt.Sprintf(`{"Name":"web-1-proxy","Kind":"connect-proxy","Address":"127.0.0.1","Port":%d,"Proxy":{"DestinationServiceName":"web-1"}}`, P+2)
		if code, out := e.as(t, e.web, "PUT", "/v1/agent/service/register", body); code != http.StatusOK {
			t.Fatalf("register web-1-proxy: %d %s", code, out)
		}
		s, ok := e.agentServices(t)["web-1-proxy"]
		if !ok || s.Kind != "connect-proxy" || s.Proxy == nil || s.Proxy.DestinationServiceName != "web-1" {
			t.Errorf("web-1-proxy in the agent: %s (present %v)", s, ok)
		}
	})
	t.Run("allowed/sidecar named web-2-envoy", func(t *testing.T) {
		body := fmt.Sprintf(`{"Name":"web-2","Port":%d,"Connect":{"SidecarService":{"Name":"web-2-envoy"}}}`, P+3)
		if code, out := e.as(t, e.web, "PUT", "/v1/agent/service/register", body); code != http.StatusOK {
			t.Fatalf("register web-2: %d %s", code, out)
		}
		s, ok := e.agentServices(t)["web-2-sidecar-proxy"]
		if !ok || s.Service != "web-2-envoy" || s.Kind != "connect-proxy" {
			t.Errorf("web-2's sidecar in the agent: %s (present %v)", s, ok)
		}
	})
	t.Run("allowed/deregister its own", func(t *testing.T) {
		for _, id := range []string{"web-1-proxy", "web-2", "web-1"} {
			if code, out := e.as(t, e.web, "PUT", "/v1/agent/service/deregister/"+id, ""); code != http.StatusOK {
				t.Errorf("deregister %s: %d %s", id, code, out)
			}
		}
		svcs := e.agentServices(t)
		for _, id := range []string{"web-1-proxy", "web-2", "web-2-sidecar-proxy", "web-1", "web-1-sidecar-proxy"} {
			if _, ok := svcs[id]; ok {
				t.Errorf("%s is still in the agent", id)
			}
		}
		if _, ok := svcs["svc-api"]; !ok {
			t.Errorf("api's instance went too")
		}
	})
}

// TestHostileConsulIDs: class 4, identity of things, and class 7, the
// oracle behind an ID. An ID names what exists today: a check ID of api's,
// a service ID whose name is api (given, defaulted from the name, implied
// for a sidecar, or differing only in case, which the catalog folds),
// set, cas, delete and deregister by ID in txn and the catalog, and the
// pass/warn/fail/update/deregister routes (plain and percent-encoded).
// Each is denied for web, the victim is read back unchanged (owner, name,
// status, output), node ops need node rights, and no denial says "api",
// the name behind the ID (the victims' IDs and check names never contain
// it). Admin, which may do everything, does some of the same.
func TestHostileConsulIDs(t *testing.T) {
	e := hcnStart(t)
	// The victims: api's instances and checks, a node check, and a second
	// node with an api instance, all with IDs and check names free of "api".
	victimChecks := map[string]string{"chk-a1": "svc-a1", "service:svc-a2": "svc-a2", "chk-node": ""}
	setup := func(t *testing.T) {
		// Out with the old first: the agent syncs a registration to the
		// catalog only when it differs from what the agent holds, and
		// undo needs the catalog rewritten.
		for _, id := range []string{"svc-a1", "svc-a2", "web-hijack", "web-sc-sidecar-proxy", "web-own"} {
			call(t, http.DefaultClient, "PUT", e.direct+"/v1/agent/service/deregister/"+id, "")
		}
		call(t, http.DefaultClient, "PUT", e.direct+"/v1/agent/check/deregister/chk-node", "")
		e.put(t, "/v1/agent/service/register", `{"Name":"api","ID":"svc-a1","Port":7001,"Checks":[{"CheckID":"chk-a1","Name":"liveness","TTL":"10m"}]}`)
		e.put(t, "/v1/agent/service/register", `{"Name":"api","ID":"svc-a2","Port":7002,"Check":{"TTL":"10m"}}`)
		e.put(t, "/v1/agent/service/register", `{"Name":"api","ID":"web-hijack","Port":7003}`)
		e.put(t, "/v1/agent/service/register", `{"Name":"api","ID":"web-sc-sidecar-proxy","Port":7004}`)
		e.put(t, "/v1/agent/check/register", `{"ID":"chk-node","Name":"node-health","TTL":"10m"}`)
		e.put(t, "/v1/agent/service/register", `{"Name":"web-own","Port":7005,"Checks":[{"CheckID":"chk-w1","Name":"web-own-ttl","TTL":"10m"}]}`)
		for id := range victimChecks {
			// warn, then pass: a change of status makes the agent sync the
			// check to the catalog again (undo relies on it).
			e.put(t, "/v1/agent/check/warn/"+url.PathEscape(id), "")
			e.put(t, "/v1/agent/check/pass/"+url.PathEscape(id)+"?note=ok-"+url.QueryEscape(id), "")
		}
		e.put(t, "/v1/catalog/register", `{"Node":"other-node","Address":"127.0.0.50","Service":{"ID":"svc-r1","Service":"api","Port":7010},`+
			`"Check":{"CheckID":"chk-r1","Name":"remote","Status":"passing","ServiceID":"svc-r1"}}`)
	}
	setup(t)
	e.settle(t)
	base := e.snap(t)
	victimServices := map[string]bool{"svc-a1": true, "svc-a2": true, "web-hijack": true, "web-sc-sidecar-proxy": true}

	victimsIntact := func(t *testing.T) {
		t.Helper()
		svcs := e.agentServices(t)
		for id := range victimServices {
			if s, ok := svcs[id]; !ok || s.Service != "api" {
				t.Errorf("agent: service %s is now %s (present %v), want api's", id, s, ok)
			}
		}
		checks := e.agentChecks(t)
		for id, owner := range victimChecks {
			c, ok := checks[id]
			if !ok || c.ServiceID != owner || c.Status != "passing" || c.Output != "ok-"+id {
				t.Errorf("agent: check %s is now %+v (present %v), want service %q, passing, output ok-%s", id, c, ok, owner, id)
			}
		}
		cs := e.catalogServices(t, hcnNode)
		for id := range victimServices {
			if s, ok := cs[id]; !ok || s.Service != "api" || s.ID != id {
				t.Errorf("catalog: service %s is now %s (present %v), want api's", id, s, ok)
			}
		}
		var api []hcnCatSvc
		e.get(t, "/v1/catalog/service/api", &api)
		if len(api) != len(victimServices)+1 {
			t.Errorf("catalog: api's instances are %+v", api)
		}
		cc := e.catalogChecks(t, hcnNode)
		for id, owner := range victimChecks {
			if c, ok := cc[id]; !ok || c.ServiceID != owner || c.Status != "passing" {
				t.Errorf("catalog: check %s is now %+v (present %v)", id, c, ok)
			}
		}
		var nodes []struct{ Node, Address string }
		e.get(t, "/v1/catalog/nodes", &nodes)
		addrs := map[string]string{}
		for _, n := range nodes {
			addrs[n.Node] = n.Address
		}
		if addrs[hcnNode] != "127.0.0.1" || addrs["other-node"] != "127.0.0.50" || len(addrs) != 2 {
			t.Errorf("catalog: nodes are %v", addrs)
		}
		if s, ok := e.catalogServices(t, "other-node")["svc-r1"]; !ok || s.Service != "api" {
			t.Errorf("catalog: svc-r1 on other-node is now %s (present %v)", s, ok)
		}
		if c, ok := e.catalogChecks(t, "other-node")["chk-r1"]; !ok || c.ServiceID != "svc-r1" || c.Status != "passing" {
			t.Errorf("catalog: chk-r1 on other-node is now %+v (present %v)", c, ok)
		}
	}
	victimsIntact(t)

	var a1 []struct{ ModifyIndex uint64 }
	e.get(t, "/v1/catalog/service/api?filter="+url.QueryEscape(`ServiceID == "svc-a1"`), &a1)
	if len(a1) != 1 {
		t.Fatalf("svc-a1 in the catalog: %+v", a1)
	}
	a1Index := a1[0].ModifyIndex

	type tc struct{ name, method, path, body string }
	reg := func(name, body string) tc { return tc{name, "PUT", "/v1/agent/service/register", body} }
	chk := func(name, body string) tc { return tc{name, "PUT", "/v1/agent/check/register", body} }
	txn := func(name string, ops ...string) tc {
		return tc{name, "PUT", "/v1/txn", "[" + strings.Join(ops, ",") + "]"}
	}
	cat := func(name, body string) tc { return tc{name, "PUT", "/v1/catalog/register", body} }
	dereg := func(name, body string) tc { return tc{name, "PUT", "/v1/catalog/deregister", body} }
	svcOp := func(verb, svc string, extra ...string) string {
		return fmt.Sprintf(`{"Service":{"Verb":%q,"Node":%q,"Service":%s%s}}`, verb, hcnNode, svc, strings.Join(extra, ""))
	}
	chkOp := func(verb, check string) string {
		return fmt.Sprintf(`{"Check":{"Verb":%q,"Check":%s}}`, verb, check)
	}
	cases := []tc{
		// Registering a service whose ID is api's.
		reg("service ID svc-a1", `{"Name":"web-x1","ID":"svc-a1","Port":7101}`),
		reg("service ID svc-a2, with a check", `{"Name":"web-x2","ID":"svc-a2","Port":7102,"Check":{"TTL":"30s"}}`),
		reg("service ID defaulted from the name", `{"Name":"web-hijack","Port":7103}`),
		reg("sidecar ID implied by the parent's", `{"Name":"web-sc","Port":7104,"Connect":{"SidecarService":{}}}`),
		reg("service ID SVC-A1, the catalog's svc-a1", `{"Name":"web-x5","ID":"SVC-A1","Port":7105}`),
		// Registering a check whose ID is another's.
		reg("service check with CheckID chk-a1", `{"Name":"web-x6","Port":7106,"Check":{"CheckID":"chk-a1","TTL":"30s"}}`),
		reg("service Checks[1] with CheckID service:svc-a2", `{"Name":"web-x7","Port":7107,"Checks":[{"TTL":"30s"},{"CheckID":"service:svc-a2","TTL":"30s"}]}`),
		reg("sidecar check with CheckID chk-node", `{"Name":"web-x8","Port":7108,"Connect":{"SidecarService":{"Port":7109,"Check":{"CheckID":"chk-node","TTL":"30s"}}}}`),
		chk("check ID chk-a1", `{"ID":"chk-a1","Name":"web-c1","ServiceID":"web-own","TTL":"30s"}`),
		chk("check ID defaulted from the name chk-a1", `{"Name":"chk-a1","ServiceID":"web-own","TTL":"30s"}`),
		chk("check ID service:svc-a2", `{"ID":"service:svc-a2","Name":"web-c3","ServiceID":"web-own","TTL":"30s"}`),
		chk("check ID chk-node", `{"ID":"chk-node","Name":"web-c4","ServiceID":"web-own","TTL":"30s"}`),
		chk("check ID CHK-A1, the catalog's chk-a1", `{"ID":"CHK-A1","Name":"web-c5","ServiceID":"web-own","TTL":"30s"}`),
		chk("check ID chk-a1, no service", `{"ID":"chk-a1","Name":"web-c6","TTL":"30s"}`),
		// txn.
		txn("txn service set on svc-a1", svcOp("set", `{"ID":"svc-a1","Service":"web-t1","Port":7201}`)),
		txn("txn service cas on svc-a1", svcOp("cas", fmt.Sprintf(`{"ID":"svc-a1","Service":"web-t2","Port":7202,"ModifyIndex":%d}`, a1Index))),
		txn("txn service set on SVC-A1", svcOp("set", `{"ID":"SVC-A1","Service":"web-t3","Port":7203}`)),
		txn("txn service set on web-hijack, ID defaulted", svcOp("set", `{"Service":"web-hijack","Port":7204}`)),
		txn("txn service delete svc-a1", svcOp("delete", `{"ID":"svc-a1"}`)),
		txn("txn service delete-cas svc-a1", svcOp("delete-cas", fmt.Sprintf(`{"ID":"svc-a1","ModifyIndex":%d}`, a1Index))),
		txn("txn service delete svc-a2 after a set of web's own", svcOp("set", `{"ID":"web-t7","Service":"web-t7","Port":7207}`), svcOp("delete", `{"ID":"svc-a2"}`)),
		txn("txn check set on chk-a1", chkOp("set", fmt.Sprintf(`{"Node":%q,"CheckID":"chk-a1","Name":"web-t8","ServiceID":"web-own","Status":"critical"}`, hcnNode))),
		txn("txn check set on CHK-A1", chkOp("set", fmt.Sprintf(`{"Node":%q,"CheckID":"CHK-A1","Name":"web-t9","ServiceID":"web-own","Status":"critical"}`, hcnNode))),
		txn("txn check set attached to svc-a1", chkOp("set", fmt.Sprintf(`{"Node":%q,"CheckID":"web-t10","Name":"web-t10","ServiceID":"svc-a1","Status":"critical"}`, hcnNode))),
		txn("txn check delete chk-a1", chkOp("delete", fmt.Sprintf(`{"Node":%q,"CheckID":"chk-a1"}`, hcnNode))),
		txn("txn check delete chk-node", chkOp("delete", fmt.Sprintf(`{"Node":%q,"CheckID":"chk-node"}`, hcnNode))),
		txn("txn node set, a new node", `{"Node":{"Verb":"set","Node":{"Node":"web-evil-node","Address":"127.0.0.9"}}}`),
		txn("txn node set, the agent's node re-addressed", fmt.Sprintf(`{"Node":{"Verb":"set","Node":{"Node":%q,"Address":"127.0.0.99"}}}`, hcnNode)),
		txn("txn node delete other-node", `{"Node":{"Verb":"delete","Node":{"Node":"other-node"}}}`),
		txn("txn node delete OTHER-NODE", `{"Node":{"Verb":"delete","Node":{"Node":"OTHER-NODE"}}}`),
		// catalog register and deregister.
		cat("catalog service ID svc-a1", fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","Service":{"ID":"svc-a1","Service":"web-k1","Port":7301}}`, hcnNode)),
		cat("catalog service ID svc-a1, node not updated", fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Service":{"ID":"svc-a1","Service":"web-k2","Port":7302}}`, hcnNode)),
		cat("catalog service ID Svc-A1, node not updated", fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Service":{"ID":"Svc-A1","Service":"web-k3","Port":7303}}`, hcnNode)),
		cat("catalog service on other-node, ID svc-r1", `{"Node":"other-node","Address":"127.0.0.50","SkipNodeUpdate":true,"Service":{"ID":"svc-r1","Service":"web-k4","Port":7304}}`),
		cat("catalog check ID chk-a1", fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Check":{"Node":%q,"CheckID":"chk-a1","Name":"web-k5","ServiceID":"web-own","Status":"critical"}}`, hcnNode, hcnNode)),
		cat("catalog Checks[1] attached to svc-a1", fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Checks":[`+
			`{"Node":%q,"CheckID":"web-k6a","Name":"web-k6a","ServiceID":"web-own","Status":"passing"},`+
			`{"Node":%q,"CheckID":"web-k6b","Name":"web-k6b","ServiceID":"svc-a1","Status":"critical"}]}`, hcnNode, hcnNode, hcnNode)),
		cat("catalog a new node", `{"Node":"web-evil-node","Address":"127.0.0.9"}`),
		cat("catalog other-node re-addressed", `{"Node":"other-node","Address":"127.0.0.66"}`),
		cat("catalog OTHER-NODE re-addressed", `{"Node":"OTHER-NODE","Address":"127.0.0.67"}`),
		dereg("catalog deregister other-node", `{"Node":"other-node"}`),
		dereg("catalog deregister service svc-a1", fmt.Sprintf(`{"Node":%q,"ServiceID":"svc-a1"}`, hcnNode)),
		dereg("catalog deregister service SVC-A1", fmt.Sprintf(`{"Node":%q,"ServiceID":"SVC-A1"}`, hcnNode)),
		dereg("catalog deregister check chk-a1", fmt.Sprintf(`{"Node":%q,"CheckID":"chk-a1"}`, hcnNode)),
		dereg("catalog deregister check chk-node", fmt.Sprintf(`{"Node":%q,"CheckID":"chk-node"}`, hcnNode)),
		dereg("catalog deregister service svc-r1 on other-node", `{"Node":"other-node","ServiceID":"svc-r1"}`),
		dereg("catalog deregister check chk-r1 on other-node", `{"Node":"other-node","CheckID":"chk-r1"}`),
	}
	// The agent's routes that act on a check or service by ID, plain and
	// percent-encoded.
	for _, id := range []string{"chk-a1", "service:svc-a2", "chk-node", "chk%2Da1", "service%3Asvc-a2", "%63hk-node"} {
		for _, verb := range []string{"pass", "warn", "fail"} {
			cases = append(cases, tc{"check " + verb + " " + id, "PUT", "/v1/agent/check/" + verb + "/" + id + "?note=pwned", ""})
		}
		cases = append(cases,
			tc{"check update " + id, "PUT", "/v1/agent/check/update/" + id, `{"Status":"critical","Output":"pwned"}`},
			tc{"check deregister " + id, "PUT", "/v1/agent/check/deregister/" + id, ""})
	}
	for _, id := range []string{"svc-a1", "svc-a2", "web-hijack", "web-sc-sidecar-proxy", "svc%2Da1", "%73vc-a2"} {
		cases = append(cases, tc{"service deregister " + id, "PUT", "/v1/agent/service/deregister/" + id, ""})
	}

	for _, c := range cases {
		t.Run("web/"+c.name, func(t *testing.T) {
			before := e.snap(t)
			code, body := e.as(t, e.web, c.method, c.path, c.body)
			hcnDenied(t, c.method+" "+c.path+" "+c.body, code, body)
			if strings.Contains(body, "api") {
				t.Errorf("the denial names the service behind the ID: %q", body)
			}
			e.nothingNew(t, "the denied request", before)
			victimsIntact(t)
			if t.Failed() {
				e.undo(t, base, setup)
			}
		})
	}

	// Admin may do all of it; each outcome read back from Consul.
	t.Run("admin/warn chk-a1", func(t *testing.T) {
		if code, out := e.as(t, e.admin, "PUT", "/v1/agent/check/warn/chk-a1?note=by-admin", ""); code != http.StatusOK {
			t.Fatalf("%d %s", code, out)
		}
		if c := e.agentChecks(t)["chk-a1"]; c.Status != "warning" || c.Output != "by-admin" || c.ServiceID != "svc-a1" {
			t.Errorf("chk-a1 after admin's warn: %+v", c)
		}
	})
	t.Run("admin/check register with ID chk-node on web-own", func(t *testing.T) {
		if code, out := e.as(t, e.admin, "PUT", "/v1/agent/check/register", `{"ID":"chk-node","Name":"adm","ServiceID":"web-own","TTL":"30s"}`); code != http.StatusOK {
			t.Fatalf("%d %s", code, out)
		}
		if c := e.agentChecks(t)["chk-node"]; c.ServiceID != "web-own" || c.Name != "adm" {
			t.Errorf("chk-node after admin's register: %+v", c)
		}
	})
	t.Run("admin/service register with ID svc-a2", func(t *testing.T) {
		if code, out := e.as(t, e.admin, "PUT", "/v1/agent/service/register", `{"Name":"web-adm","ID":"svc-a2","Port":7402}`); code != http.StatusOK {
			t.Fatalf("%d %s", code, out)
		}
		if s := e.agentServices(t)["svc-a2"]; s.Service != "web-adm" {
			t.Errorf("svc-a2 after admin's register: %s", s)
		}
	})
	t.Run("admin/deregister web-hijack", func(t *testing.T) {
		if code, out := e.as(t, e.admin, "PUT", "/v1/agent/service/deregister/web-hijack", ""); code != http.StatusOK {
			t.Fatalf("%d %s", code, out)
		}
		if s, ok := e.agentServices(t)["web-hijack"]; ok {
			t.Errorf("web-hijack is still in the agent: %s", s)
		}
	})
	t.Run("admin/catalog register a node, txn re-address it, deregister it", func(t *testing.T) {
		if code, out := e.as(t, e.admin, "PUT", "/v1/catalog/register", `{"Node":"admin-node","Address":"127.0.0.77"}`); code != http.StatusOK {
			t.Fatalf("catalog register: %d %s", code, out)
		}
		var n struct{ Node struct{ Address string } }
		if e.get(t, "/v1/catalog/node/admin-node", &n); n.Node.Address != "127.0.0.77" {
			t.Errorf("admin-node: %+v", n)
		}
		if code, out := e.as(t, e.admin, "PUT", "/v1/txn", `[{"Node":{"Verb":"set","Node":{"Node":"admin-node","Address":"127.0.0.78"}}}]`); code != http.StatusOK {
			t.Fatalf("txn node set: %d %s", code, out)
		}
		if e.get(t, "/v1/catalog/node/admin-node", &n); n.Node.Address != "127.0.0.78" {
			t.Errorf("admin-node after the txn: %+v", n)
		}
		if code, out := e.as(t, e.admin, "PUT", "/v1/catalog/deregister", `{"Node":"admin-node"}`); code != http.StatusOK {
			t.Fatalf("catalog deregister: %d %s", code, out)
		}
		var gone *struct{ Node any }
		if e.get(t, "/v1/catalog/node/admin-node", &gone); gone != nil {
			t.Errorf("admin-node is still in the catalog: %+v", gone)
		}
	})
}
