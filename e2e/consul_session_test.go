package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// httpsAs is an HTTP client presenting who's SVID.
func httpsAs(t *testing.T, p *pki, who string) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.path(who+".pem"), p.path(who+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(mustRead(t, p.bundle())))
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots}}}
}

// call is hcoCall without the answer's headers.
func call(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	code, _, b := hcoCall(t, c, method, url, body)
	return code, b
}

// TestConsulSessionsBelongToTheirCreator: a session created through the
// gateway is its creator's; another identity can neither renew nor destroy
// it nor lock with it; the owner records are out of every caller's reach.
func TestConsulSessionsBelongToTheirCreator(t *testing.T) {
	p := newPKI(t, "admin", "web", "batch")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	dir := copyPolicies(t, mustRead(t, repoRoot+"/policies/intentions.yaml")+`
  - name: batch-sessions
    source: "spiffe://example.org/batch"
    resources: [session, lock, kv]
    actions: ["*"]
    effect: allow
`)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, dir)
	web, batch, admin := httpsAs(t, p, "web"), httpsAs(t, p, "batch"), httpsAs(t, p, "admin")

	code, body := call(t, web, "PUT", gwAddr+"/v1/session/create", `{"Name":"web-lock","TTL":"30s"}`)
	if code != http.StatusOK {
		t.Fatalf("session create: %d %s", code, body)
	}
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.ID == "" {
		t.Fatalf("session create answer %q: %v", body, err)
	}
	sid := created.ID

	cases := []struct {
		name   string
		c      *http.Client
		method string
		path   string
		code   int
		body   string
	}{
		{"owner renews", web, "PUT", "/v1/session/renew/" + sid, 200, sid},
		{"other identity renews", batch, "PUT", "/v1/session/renew/" + sid, 403, "Permission denied: the request touches what the caller may not use"},
		{"other identity destroys", batch, "PUT", "/v1/session/destroy/" + sid, 403, "Permission denied: the request touches what the caller may not use"},
		{"other identity locks with it", batch, "PUT", "/v1/kv/batch/lock?acquire=" + sid, 403, "Permission denied: the request touches what the caller may not use"},
		{"owner locks with it", web, "PUT", "/v1/kv/app/locks/l1?acquire=" + sid, 200, "true"},
		{"owner may not lock outside its locks", web, "PUT", "/v1/kv/app/x?acquire=" + sid, 403, "Permission denied"},
		{"owner releases", web, "PUT", "/v1/kv/app/locks/l1?release=" + sid, 200, "true"},
		{"unknown session", web, "PUT", "/v1/session/renew/00000000-0000-0000-0000-000000000000", 403, "Permission denied: the request touches what the caller may not use"},
		{"owner records are reserved", admin, "GET", "/v1/kv/_storegate/sessions/" + sid, 403, "reserved for storegate"},
		{"reserved keys never listed", admin, "GET", "/v1/kv/?recurse", 200, ""},
		{"reserved keys never deleted", admin, "DELETE", "/v1/kv/?recurse", 403, "reserved for storegate"},
		{"conflicting flags", web, "PUT", "/v1/kv/app/locks/l1?cas=0&acquire=" + sid, 400, "Conflicting flags"},
		{"repeated parameter", web, "GET", "/v1/kv/app/?recurse&recurse", 400, "repeated"},
		{"owner destroys", web, "PUT", "/v1/session/destroy/" + sid, 200, "true"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := call(t, c.c, c.method, gwAddr+c.path, "")
			if code != c.code || !strings.Contains(body, c.body) {
				t.Errorf("%s %s = %d %q; want %d containing %q", c.method, c.path, code, body, c.code, c.body)
			}
			if c.name == "reserved keys never listed" && strings.Contains(body, "_storegate") {
				t.Errorf("a recurse read listed the gateway's records: %s", body)
			}
		})
	}
	// The owner record went with the session.
	resp, err := http.Get("http://" + agent.httpAddr + "/v1/kv/_storegate/sessions/" + sid)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("owner record after destroy: %d", resp.StatusCode)
	}
}

// TestConsulLockCLI runs `consul lock` (a mutex, and a semaphore with -n 2)
// through the gateway: sessions, blocking reads, acquire and release, and
// the child command run while holding.
func TestConsulLockCLI(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	dir := copyPolicies(t, mustRead(t, repoRoot+"/policies/intentions.yaml")+`
  - name: web-node-read
    description: consul lock reads /v1/agent/self first.
    source: "spiffe://example.org/web"
    resources: [node]
    actions: [read]
    effect: allow
`)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, dir)
	web := consulCLI{p: p, addr: gwAddr, who: "web"}
	for _, args := range [][]string{
		{"lock", "app/locks/mutex", "echo", "held-the-mutex"},
		{"lock", "-n", "2", "app/locks/sem", "echo", "held-the-semaphore"},
	} {
		out, stderr, err := web.run(t, "", args...)
		if err != nil || !strings.Contains(out, "held-the-") {
			t.Errorf("consul %v: err=%v\nstdout: %s\nstderr: %s", args, err, out, stderr)
		}
	}
	// A lock outside web's locks is refused.
	out, stderr, err := web.run(t, "", "lock", "other/mutex", "echo", "should-not-run")
	if err == nil || strings.Contains(out, "should-not-run") || !strings.Contains(stderr+out, "403") {
		t.Errorf("lock on other/: err=%v\nstdout: %s\nstderr: %s", err, out, stderr)
	}
}

// TestConsulServiceRegistration: `consul services register|deregister`
// through the gateway under the shipped intentions (web may register web-*
// services, never script checks).
func TestConsulServiceRegistration(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, restrictivePolicy(t))
	web := consulCLI{p: p, addr: gwAddr, who: "web"}
	const denied = "Unexpected response code: 403 (Permission denied: "

	out, stderr, err := web.run(t, "", "services", "register", "-name=web-frontend", "-port=8080", "-tag=v1")
	if err != nil || !strings.Contains(out, "Registered service: web-frontend") {
		t.Fatalf("register web-frontend: %v\n%s%s", err, out, stderr)
	}
	direct := consulCLI{addr: "http://" + agent.httpAddr}
	if out, _, _ := direct.run(t, "", "catalog", "services", "-tags"); !strings.Contains(out, "web-frontend") || !strings.Contains(out, "v1") {
		t.Errorf("web-frontend not in the catalog: %s", out)
	}
	if _, stderr, err := web.run(t, "", "services", "register", "-name=db", "-port=5432"); err == nil || !strings.Contains(stderr, denied) {
		t.Errorf("registering db: err=%v %s", err, stderr)
	}
	// A script check is refused whatever the name.
	c := httpsAs(t, p, "web")
	code, body := call(t, c, "PUT", gwAddr+"/v1/agent/service/register",
		`{"Name":"web-batch","Check":{"ScriptArgs":["/bin/true"],"Interval":"10s"}}`)
	if code != http.StatusForbidden || !strings.Contains(body, "script checks are not allowed") {
		t.Errorf("script check: %d %s", code, body)
	}
	// A body Consul would read differently (snake_case alias) is refused.
	code, body = call(t, c, "PUT", gwAddr+"/v1/agent/service/register", `{"Name":"web-x","enable_tag_override":true}`)
	if code != http.StatusBadRequest {
		t.Errorf("unknown field: %d %s", code, body)
	}
	// Malformed JSON.
	if code, _ := call(t, c, "PUT", gwAddr+"/v1/agent/service/register", `{"Name":`); code != http.StatusBadRequest {
		t.Errorf("malformed JSON: %d", code)
	}
	// Checks: on its own service web registers and updates TTL checks; not
	// on another's, and never a script check.
	dc := &http.Client{}
	for _, body := range []string{`{"Name":"db","Port":5432,"Check":{"TTL":"60s"}}`} {
		if code, out := call(t, dc, "PUT", "http://"+agent.httpAddr+"/v1/agent/service/register", body); code != 200 {
			t.Fatalf("direct register db: %d %s", code, out)
		}
	}
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/v1/agent/check/register", `{"Name":"web-ttl","ServiceID":"web-frontend","TTL":"30s"}`, 200, ""},
		{"PUT", "/v1/agent/check/pass/web-ttl", "", 200, ""},
		{"PUT", "/v1/agent/check/register", `{"Name":"web-run","ServiceID":"web-frontend","ScriptArgs":["/bin/true"],"Interval":"10s"}`, 403, "script checks are not allowed"},
		// db is not web's to read: the denial does not name it.
		{"PUT", "/v1/agent/check/register", `{"Name":"db-extra","ServiceID":"db","TTL":"30s"}`, 403, "Permission denied: the request touches what the caller may not use"},
		{"PUT", "/v1/agent/check/fail/service:db", "", 403, "Permission denied"},
	} {
		code, body := call(t, c, tc.method, gwAddr+tc.path, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s %s = %d %q; want %d %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.want)
		}
	}
	// A check update's body is what Consul acts on: it is judged whole and
	// strictly, as every body the gateway forwards, and read back from the
	// agent itself.
	inAgent := func(status, output string) {
		t.Helper()
		code, out := call(t, dc, "GET", "http://"+agent.httpAddr+"/v1/agent/checks?filter="+url.QueryEscape(`CheckID == "web-ttl"`), "")
		var checks map[string]api.AgentCheck
		if err := json.Unmarshal([]byte(out), &checks); code != 200 || err != nil ||
			checks["web-ttl"].Status != status || checks["web-ttl"].Output != output {
			t.Errorf("web-ttl in the agent: %d %s; want %s with output %q", code, out, status, output)
		}
	}
	if code, body := call(t, c, "PUT", gwAddr+"/v1/agent/check/update/web-ttl", `{"Status":"warning","Output":"slow"}`); code != 200 {
		t.Errorf("check update: %d %q", code, body)
	}
	inAgent("warning", "slow")
	if code, body := call(t, c, "PUT", gwAddr+"/v1/agent/check/update/web-ttl", `{"Status":"critical","Output":"x","Notes":"smuggled"}`); code != 400 || !strings.Contains(body, "Request decode failed") {
		t.Errorf("check update with a field Consul does not read: %d %q, want 400", code, body)
	}
	inAgent("warning", "slow")
	if code, body := call(t, c, "PUT", gwAddr+"/v1/agent/check/deregister/web-ttl", ""); code != 200 {
		t.Errorf("deregister web-ttl: %d %q", code, body)
	}
	if out, stderr, err := web.run(t, "", "services", "deregister", "-id=web-frontend"); err != nil || !strings.Contains(out, "Deregistered service: web-frontend") {
		t.Errorf("deregister: %v %s%s", err, out, stderr)
	}
}

// TestConsulBlockingQuery: a blocking KV read through the gateway is held
// until the key changes, with Consul's index headers passed through; a
// missing key answers 404 with its index (lock and watch block on those).
func TestConsulBlockingQuery(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, "")
	c := httpsAs(t, p, "admin")

	resp, err := c.Get(gwAddr + "/v1/kv/block/missing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Consul-Index") == "" ||
		resp.Header.Get("X-Consul-Knownleader") != "true" || resp.Header.Get("X-Consul-Lastcontact") == "" {
		t.Fatalf("missing key: %d %v", resp.StatusCode, resp.Header)
	}
	if code, body := call(t, c, "PUT", gwAddr+"/v1/kv/block/k", "one"); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	resp, err = c.Get(gwAddr + "/v1/kv/block/k")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	index := resp.Header.Get("X-Consul-Index")

	type result struct {
		body, index string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get(gwAddr + "/v1/kv/block/k?raw&wait=60s&index=" + index)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{body: string(b), index: resp.Header.Get("X-Consul-Index"), err: err}
	}()
	// The query is held: nothing arrives until the write below.
	select {
	case r := <-done:
		t.Fatalf("blocking query returned before the key changed: %+v", r)
	case <-time.After(time.Second): // a bounded check that it blocks, not a readiness wait
	}
	if code, body := call(t, c, "PUT", gwAddr+"/v1/kv/block/k", "two"); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	select {
	case r := <-done:
		if r.err != nil || r.body != "two" || r.index == index {
			t.Errorf("blocking query answered %+v (old index %s)", r, index)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("blocking query not answered 30s after the write")
	}
}

// TestConsulWatchCLI runs `consul watch` (key, keyprefix, services) through
// the gateway: each prints the current state as JSON and keeps watching.
func TestConsulWatchCLI(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, "")
	through := consulCLI{p: p, addr: gwAddr, who: "admin"}
	if _, stderr, err := through.run(t, "", "kv", "put", "watched/k", "v1"); err != nil {
		t.Fatal(stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"watch", "-type=key", "-key=watched/k"}, `"Key": "watched/k"`},
		{[]string{"watch", "-type=keyprefix", "-prefix=watched/"}, `"Key": "watched/k"`},
		{[]string{"watch", "-type=services"}, `"consul": []`},
	} {
		w := through.start(t, tc.args...)
		w.waitFor(t, tc.want)
		w.stop()
	}
}

// start runs the consul CLI in the background.
func (c consulCLI) start(t *testing.T, args ...string) *bgCmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "bin", "consul"), args...)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+c.addr, "CONSUL_CACERT="+c.p.bundle(),
		"CONSUL_CLIENT_CERT="+c.p.path(c.who+".pem"), "CONSUL_CLIENT_KEY="+c.p.path(c.who+"-key.pem"))
	return startBg(t, cmd)
}

// TestConsulMembersAndLockFlagsCLI: `consul members` prints through the
// gateway what it prints direct to the agent, and `kv put -acquire` /
// `-release` with a session the caller created through the gateway take and
// give back the lock (another caller's session is refused).
func TestConsulMembersAndLockFlagsCLI(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, "")
	direct := consulCLI{addr: "http://" + agent.httpAddr}
	admin := consulCLI{p: p, addr: gwAddr, who: "admin"}
	want, stderr, err := direct.run(t, "", "members")
	if err != nil {
		t.Fatalf("members direct: %v %s", err, stderr)
	}
	if got, stderr, err := admin.run(t, "", "members"); err != nil || got != want {
		t.Errorf("members through the gateway:\n%s%s\nwant:\n%s", got, stderr, want)
	}

	code, body := call(t, httpsAs(t, p, "admin"), "PUT", gwAddr+"/v1/session/create", `{"Name":"cli-lock","TTL":"30s"}`)
	var created struct{ ID string }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &created) != nil || created.ID == "" {
		t.Fatalf("session create: %d %s", code, body)
	}
	steps := []struct {
		who  consulCLI
		args []string
		want string
		fail bool
	}{
		{admin, []string{"kv", "put", "-acquire", "-session=" + created.ID, "locks/cli", "held"}, "Success! Lock acquired on: locks/cli", false},
		// The CLI prints no body for a failed release; the lock staying
		// held (checked below) shows the gateway refused it.
		{consulCLI{p: p, addr: gwAddr, who: "web"}, []string{"kv", "put", "-release", "-session=" + created.ID, "locks/cli"},
			"Failed writing data: locks/cli", true},
		{admin, []string{"kv", "put", "-release", "-session=" + created.ID, "locks/cli"}, "Success! Lock released on: locks/cli", false},
	}
	held := func() bool {
		resp, err := http.Get("http://" + agent.httpAddr + "/v1/kv/locks/cli")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), created.ID)
	}
	for i, st := range steps {
		out, stderr, err := st.who.run(t, "", st.args...)
		if (err != nil) != st.fail || !strings.Contains(out+stderr, st.want) {
			t.Errorf("consul %s as %s: err=%v\n%s%s\nwant %q", strings.Join(st.args, " "), st.who.who, err, out, stderr, st.want)
		}
		// Held after the acquire and after the refused release; free at the end.
		if want := i < len(steps)-1; held() != want {
			t.Errorf("after step %d the lock is held=%v, want %v", i, !want, want)
		}
	}
}
