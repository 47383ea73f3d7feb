package consul

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRegistrationsJudgedWhole: every service a registration creates and
// every check it carries, wherever nested, is judged with its target; IDs
// that exist are ops on what holds them; and the agent (read directly) holds
// nothing of a refused registration.
func TestRegistrationsJudgedWhole(t *testing.T) {
	e := newEnv(t)
	up, _ := url.Parse(e.consul)
	agentPort := up.Port()
	agentHTTP := "http://127.0.0.1:" + agentPort
	// The victim: admin's api service with a check of its own.
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/agent/service/register",
		[]byte(`{"Name":"api","ID":"api-1","Port":9001,"Check":{"CheckID":"api-check","TTL":"60s"}}`)); code != 200 {
		t.Fatalf("admin registers api: %d %s", code, out)
	}

	reg := func(body string) string { return body }
	cases := []struct {
		name, who, path, body string
		code                  int
		gone                  []string // service IDs that must not be in the agent afterwards
	}{
		{"own checks", "web", "/v1/agent/service/register", reg(`{"Name":"web-1","Port":8081,"Checks":[` +
			`{"TTL":"30s"},{"HTTP":"http://127.0.0.1:8081/health","Interval":"30s"},{"TCP":"localhost:8081","Interval":"30s"}]}`), 200, nil},
		{"default sidecar", "web", "/v1/agent/service/register", `{"Name":"web-2","Port":8082,"Connect":{"SidecarService":{}}}`, 200, nil},
		{"proxy for its own service", "web", "/v1/agent/service/register",
			`{"Name":"web-1-proxy","Kind":"connect-proxy","Port":21999,"Proxy":{"DestinationServiceName":"web-1"}}`, 200, nil},
		{"sidecar named as another service", "web", "/v1/agent/service/register",
			`{"Name":"web-3","Port":8083,"Connect":{"SidecarService":{"Name":"api"}}}`, 403, []string{"web-3", "web-3-sidecar-proxy"}},
		{"proxy in another service's place", "web", "/v1/agent/service/register",
			`{"Name":"web-evil","Kind":"connect-proxy","Port":21998,"Proxy":{"DestinationServiceName":"api"}}`, 403, []string{"web-evil"}},
		{"alias of another service's health", "web", "/v1/agent/service/register",
			`{"Name":"web-al","Port":8094,"Check":{"AliasService":"api-1"}}`, 403, []string{"web-al"}},
		{"alias of its own", "web", "/v1/agent/service/register",
			`{"Name":"web-al2","Port":8095,"Checks":[{"TTL":"30s"},{"AliasService":"web-al2"}]}`, 200, nil},
		{"proxy forwarding into the agent", "web", "/v1/agent/service/register",
			`{"Name":"web-p2","Kind":"connect-proxy","Port":21997,"Proxy":{"DestinationServiceName":"web-1","LocalServicePort":` + agentPort + `}}`, 403, []string{"web-p2"}},
		{"sidecar exposing the agent", "web", "/v1/agent/service/register",
			`{"Name":"web-p3","Port":8093,"Connect":{"SidecarService":{"Proxy":{"Expose":{"Paths":[{"Path":"/v1/kv","LocalPathPort":` + agentPort + `,"ListenerPort":21500}]}}}}}`, 403, []string{"web-p3", "web-p3-sidecar-proxy"}},
		{"check on the agent's API", "web", "/v1/agent/service/register",
			`{"Name":"web-4","Port":8084,"Check":{"HTTP":"` + agentHTTP + `/v1/kv/x?raw","Interval":"1s"}}`, 403, []string{"web-4"}},
		{"claiming the agent's port", "web", "/v1/agent/service/register",
			`{"Name":"web-5","Address":"127.0.0.1","Port":` + agentPort + `,"Check":{"HTTP":"http://localhost:` + agentPort + `/v1/agent/self","Interval":"1s"}}`, 403, []string{"web-5"}},
		{"check elsewhere", "web", "/v1/agent/service/register",
			`{"Name":"web-6","Port":8086,"Checks":[{"TTL":"5s"},{"TCP":"127.0.0.1:8087","Interval":"1s"}]}`, 403, []string{"web-6"}},
		{"metadata", "web", "/v1/agent/service/register",
			`{"Name":"web-7","Address":"169.254.169.254","Port":80,"Check":{"HTTP":"http://169.254.169.254/latest/meta-data/","Interval":"1s"}}`, 403, []string{"web-7"}},
		{"script in a sidecar", "web", "/v1/agent/service/register",
			`{"Name":"web-8","Port":8088,"Connect":{"SidecarService":{"Checks":[{"ScriptArgs":["touch","/tmp/x"],"Interval":"1s"}]}}}`, 403, []string{"web-8", "web-8-sidecar-proxy"}},
		{"docker", "web", "/v1/agent/service/register",
			`{"Name":"web-9","Port":8089,"Check":{"DockerContainerID":"abc","Shell":"/bin/sh","ScriptArgs":["id"],"Interval":"1s"}}`, 403, []string{"web-9"}},
		{"another service's check ID", "web", "/v1/agent/service/register",
			`{"Name":"web-10","Port":8090,"Check":{"CheckID":"api-check","TTL":"5s"}}`, 403, []string{"web-10"}},
		{"another service's check ID, by check registration", "web", "/v1/agent/check/register",
			`{"ID":"api-check","Name":"x","ServiceID":"web-1","TTL":"5s"}`, 403, nil},
		{"a node check", "web", "/v1/agent/check/register", `{"Name":"node-x","TTL":"5s"}`, 403, nil},
		{"admin too: a check on the agent", "admin", "/v1/agent/service/register",
			`{"Name":"ops","Port":7000,"Check":{"HTTP":"http://[::ffff:127.0.0.1]:` + agentPort + `/v1/agent/self","Interval":"1s"}}`, 403, []string{"ops"}},
		{"catalog node needs node rights", "web", "/v1/catalog/register",
			`{"Node":"n1","Address":"10.0.0.1","Service":{"Service":"web-c","Port":80}}`, 403, nil},
	}
	for _, c := range cases {
		code, out := e.do(t, c.who, http.MethodPut, c.path, []byte(c.body))
		if code != c.code {
			t.Errorf("%s: %d %s; want %d", c.name, code, out, c.code)
		}
		if c.code == 403 && strings.Contains(out, "api") && !strings.Contains(c.body, `"api"`) {
			t.Errorf("%s: the denial names what the caller cannot see: %s", c.name, out)
		}
		for _, id := range c.gone {
			if code, _ := e.do(t, "", http.MethodGet, "/v1/agent/service/"+id, nil); code != 404 {
				t.Errorf("%s: service %s is in the agent (%d)", c.name, id, code)
			}
		}
	}

	// api's check is still api's, and passing to web stays refused.
	checks := readAgentChecks(t, e)
	if c, ok := checks["api-check"]; !ok || c.ServiceID != "api-1" {
		t.Errorf("api-check after the refused takeovers: %+v", c)
	}
	for _, verb := range []string{"pass", "fail", "warn", "update", "deregister"} {
		code, out := e.do(t, "web", http.MethodPut, "/v1/agent/check/"+verb+"/api-check", nil)
		if code != 403 || strings.Contains(out, "api") {
			t.Errorf("web %s api-check: %d %s", verb, code, out)
		}
	}
	if code, out := e.do(t, "web", http.MethodPut, "/v1/agent/service/deregister/api-1", nil); code != 403 || strings.Contains(out, "api") {
		t.Errorf("web deregisters api-1: %d %s", code, out)
	}
	if _, ok := readAgentChecks(t, e)["api-check"]; !ok {
		t.Error("api-check is gone")
	}
	// The sidecar web registered is there, a connect-proxy for web-2.
	code, out := e.do(t, "", http.MethodGet, "/v1/agent/service/web-2-sidecar-proxy", nil)
	var side struct {
		Kind  string
		Proxy struct{ DestinationServiceName string }
	}
	if err := json.Unmarshal([]byte(out), &side); code != 200 || err != nil || side.Kind != "connect-proxy" || side.Proxy.DestinationServiceName != "web-2" {
		t.Errorf("web-2's sidecar: %d %s", code, out)
	}
}

type agentCheck struct{ ServiceID, Status string }

func readAgentChecks(t *testing.T, e *env) map[string]agentCheck {
	t.Helper()
	code, out := e.do(t, "", http.MethodGet, "/v1/agent/checks", nil)
	var m map[string]agentCheck
	if err := json.Unmarshal([]byte(out), &m); code != 200 || err != nil {
		t.Fatal(fmt.Sprint(code, out, err))
	}
	return m
}

// TestHTTPChecksDoNotFollowRedirects: the agent fetches only the URL policy
// judged. A service's own endpoint that redirects elsewhere (here to a
// second server, standing for the agent's API) does not take the check
// there: the gateway forwards every HTTP check with redirects off.
func TestHTTPChecksDoNotFollowRedirects(t *testing.T) {
	e := newEnv(t)
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		fmt.Fprint(w, "secret")
	}))
	defer target.Close()
	var asked atomic.Int32
	own := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Redirect(w, r, target.URL+"/v1/kv/secret?raw", http.StatusTemporaryRedirect)
	}))
	defer own.Close()
	ou, _ := url.Parse(own.URL)
	body := `{"Name":"web-r","Address":"127.0.0.1","Port":` + ou.Port() + `,"Check":{"CheckID":"web-r-http","HTTP":"` + own.URL +
		`/health","Interval":"1s"}}`
	if code, out := e.do(t, "web", http.MethodPut, "/v1/agent/service/register", []byte(body)); code != 200 {
		t.Fatalf("register: %d %s", code, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for asked.Load() < 2 { // the check ran twice
		if time.Now().After(deadline) {
			t.Fatal("the check never ran")
		}
		time.Sleep(50 * time.Millisecond) // polling for the agent's check runs
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the check followed the redirect %d times", n)
	}
}

// TestGatewayKindsNeedAdmin: a mesh, terminating or ingress gateway carries
// traffic for other services; web, which may register web-* services, may
// not register one, as a service or as its sidecar's kind; admin may.
func TestGatewayKindsNeedAdmin(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ who, body string }{
		{"web", `{"Name":"web-gw","Kind":"mesh-gateway","Port":8443}`},
		{"web", `{"Name":"web-tgw","Kind":"terminating-gateway","Port":8444}`},
		{"web", `{"Name":"web-9","Port":8090,"Connect":{"SidecarService":{"Kind":"ingress-gateway"}}}`},
	} {
		if code, out := e.do(t, c.who, http.MethodPut, "/v1/agent/service/register", []byte(c.body)); code != 403 {
			t.Errorf("%s %s: %d %s", c.who, c.body, code, out)
		}
	}
	for _, id := range []string{"web-gw", "web-tgw", "web-9", "web-9-sidecar-proxy"} {
		if code, _ := e.do(t, "", http.MethodGet, "/v1/agent/service/"+id, nil); code != 404 {
			t.Errorf("%s is in the agent (%d)", id, code)
		}
	}
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/agent/service/register", []byte(`{"Name":"mgw","Kind":"mesh-gateway","Port":8443}`)); code != 200 {
		t.Errorf("admin registers a mesh gateway: %d %s", code, out)
	}
}

// TestLookupsBeforeDecisionAreBounded: the service a check names must be
// read before policy can judge the check. A transaction makes the gateway
// read at most txnMaxCheckNodes nodes, however many checks it holds; a
// catalog registration, nothing before its node op is allowed.
func TestLookupsBeforeDecisionAreBounded(t *testing.T) {
	e := newEnv(t)
	var ops []string
	for i := range txnMaxCheckNodes + 1 {
		ops = append(ops, fmt.Sprintf(`{"Check":{"Verb":"set","Check":{"Node":"n%d","CheckID":"c","Name":"c","ServiceID":"s","Status":"passing"}}}`, i))
	}
	before := len(e.rec.all())
	code, out := e.do(t, "batch", http.MethodPut, "/v1/txn", []byte("["+strings.Join(ops, ",")+"]"))
	if code != 400 || !strings.Contains(out, "at most") {
		t.Errorf("txn with checks on %d nodes: %d %s", txnMaxCheckNodes+1, code, out)
	}
	if n := len(e.rec.all()) - before; n > txnMaxCheckNodes {
		t.Errorf("%d reads reached the agent", n)
	}
	var checks []string
	for i := range 50 {
		checks = append(checks, fmt.Sprintf(`{"CheckID":"c%d","Name":"c","ServiceID":"s%d","Status":"passing"}`, i, i))
	}
	before = len(e.rec.all())
	code, out = e.do(t, "batch", http.MethodPut, "/v1/catalog/register",
		[]byte(`{"Node":"n1","Address":"10.0.0.1","Checks":[`+strings.Join(checks, ",")+`]}`))
	if code != 403 {
		t.Errorf("catalog register as batch: %d %s", code, out)
	}
	if seen := e.rec.all()[before:]; len(seen) > 0 {
		t.Errorf("reads before the decision: %v", seen)
	}
}
