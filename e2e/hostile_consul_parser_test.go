package e2e

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

// hcoNoRedirect is c, not following redirects: a redirect is an answer of
// its own (nothing forwarded), not a second request.
func hcoNoRedirect(c *http.Client) *http.Client {
	n := *c
	n.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &n
}

// TestHostileConsulParser: class 6, parser differentials. The gateway and
// Consul must read a request alike: duplicate JSON fields (the last wins in
// Go), field names in another case or Unicode-folded (ſ, K) or
// \u-escaped, trailing data after the body, unknown fields and Consul's
// snake_case aliases, %2F and %252F and dot segments in KV paths,
// percent-encoded parameter names, repeated parameters, queries Go cannot
// parse. Each request, sent as web under the shipped intentions, is either
// refused (400 or 403, nothing changed in Consul; required where a reading
// could differ: repeated parameters, unreadable queries, a name that folds
// to db), redirected by path cleaning (nothing forwarded, nothing changed),
// or forwarded as judged: then Consul holds
// no new, changed or deleted key outside app/ (or under app/secret/), no
// service not named web-*, the key or service the request names where
// Consul reads it, and a read shows no value web may not read.
func TestHostileConsulParser(t *testing.T) {
	e := hcnStart(t)
	web := hcoNoRedirect(e.web)
	secrets := map[string]string{"app/secret/s1": "S3CRET-ONE", "other/x": "OTHER-VALUE"}
	for k, v := range secrets {
		e.put(t, "/v1/kv/"+k, v)
	}
	e.put(t, "/v1/kv/app/a", "va")
	e.settle(t)
	P := hcnPort(t)
	writable := func(k string) bool { return strings.HasPrefix(k, "app/") && !strings.HasPrefix(k, "app/secret/") }
	services := func(t *testing.T) map[string]bool {
		t.Helper()
		names := map[string]bool{}
		for _, s := range e.agentServices(t) {
			names[s.Service] = true
		}
		for _, s := range e.catalogServices(t, hcnNode) {
			names[s.Service] = true
		}
		var cat map[string][]string
		e.get(t, "/v1/catalog/services", &cat)
		for n := range cat {
			names[n] = true
		}
		return names
	}

	type pc struct {
		name, method, path, body string
		refuse                   bool   // must be refused (400 or 403)
		key                      string // if forwarded, the key Consul now holds
		svc                      string // if forwarded, the service ID the agent now holds
	}
	reg := func(name, body string, refuse bool, svc string) pc {
		return pc{name: "register/" + name, method: "PUT", path: "/v1/agent/service/register", body: fmt.Sprintf(body, P), refuse: refuse, svc: svc}
	}
	txn := func(name, body string, refuse bool, key string) pc {
		return pc{name: "txn/" + name, method: "PUT", path: "/v1/txn", body: body, refuse: refuse, key: key}
	}
	kv := func(name, method, path string, refuse bool, key string) pc {
		body := ""
		if method == "PUT" {
			body = "v-" + strings.ReplaceAll(name, " ", "-")
		}
		return pc{name: "kv/" + name, method: method, path: path, body: body, refuse: refuse, key: key}
	}
	x := `"Value":"eA=="`
	cases := []pc{
		// Registrations: decoded as Go decodes, the last of duplicates
		// winning, names matched without regard to case (Unicode folding
		// included), then forwarded re-encoded.
		reg("duplicate Name, db last", `{"Name":"web-p1","Name":"db","Port":%d}`, true, ""),
		reg("duplicate Name, web-p2 last", `{"Name":"db","Name":"web-p2","Port":%d}`, false, "web-p2"),
		reg("name in lower case", `{"name":"db","Port":%d}`, true, ""),
		reg("NAME in upper case", `{"NAME":"db","Port":%d}`, true, ""),
		reg("Name, then name", `{"Name":"web-p5","name":"db","Port":%d}`, true, ""),
		reg("name, then Name", `{"name":"web-p6","Name":"db","Port":%d}`, true, ""),
		reg(`\u-escaped field name`, `{"\u004eame":"db","Port":%d}`, true, ""),
		reg("ſ-folded SidecarService", `{"Name":"web-p8","Port":%d,"Connect":{"`+"\u017f"+`idecar`+"\u017f"+`ervice":{"Name":"db"}}}`, true, ""),
		reg("K-folded Kind, proxy for db", `{"Name":"web-p9","Port":%d,"`+"\u212a"+`ind":"connect-proxy","Proxy":{"DestinationServiceName":"db"}}`, true, ""),
		reg("trailing JSON value", `{"Name":"web-p10","Port":%d}{"Name":"db","Port":1}`, false, "web-p10"),
		reg("trailing garbage", `{"Name":"web-p11","Port":%d} ]]] {"Name":"db"`, false, "web-p11"),
		reg("unknown field", `{"Name":"web-p12","Port":%d,"Bogus":1}`, false, ""),
		reg("snake_case sidecar_service named db", `{"Name":"web-p13","Port":%d,"Connect":{"sidecar_service":{"Name":"db"}}}`, false, ""),
		reg("snake_case destination_service_name db", `{"Name":"web-p14","Kind":"connect-proxy","Port":%d,"Proxy":{"destination_service_name":"db"}}`, false, ""),
		reg("sidecar Name, then name db", `{"Name":"web-p15","Port":%d,"Connect":{"SidecarService":{"Name":"web-ok","name":"db"}}}`, true, ""),
		reg("two SidecarServices, db first", `{"Name":"web-p16","Port":%d,"Connect":{"SidecarService":{"Name":"db"},"SidecarService":{}}}`, false, "web-p16"),
		reg("two Connects, db last", `{"Name":"web-p17","Port":%d,"Connect":{"SidecarService":{}},"Connect":{"SidecarService":{"Name":"db"}}}`, true, ""),
		reg("Tags then tags", `{"Name":"web-p18","Port":%d,"Tags":["a"],"tags":["b"]}`, false, "web-p18"),
		{name: "catalog/duplicate Service, db last", method: "PUT", path: "/v1/catalog/register", refuse: true,
			body: fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Service":{"ID":"web-c1","Service":"web-c1","Service":"db","Port":%d}}`, hcnNode, P)},
		{name: "catalog/service in lower case", method: "PUT", path: "/v1/catalog/register", refuse: true,
			body: fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"service":{"ID":"web-c2","service":"db","Port":%d}}`, hcnNode, P)},
		{name: "check/duplicate ServiceID", method: "PUT", path: "/v1/agent/check/register", refuse: true,
			body: `{"Name":"web-k1","ServiceID":"web-p2","ServiceID":"consul","TTL":"30s"}`},

		// Transactions: the body forwarded as sent, so decoded exactly as
		// Consul decodes it.
		txn("duplicate Key, other last", `[{"KV":{"Verb":"set","Key":"app/t1","Key":"other/t1",`+x+`}}]`, true, ""),
		txn("duplicate Key, app last", `[{"KV":{"Verb":"set","Key":"other/t2","Key":"app/t2",`+x+`}}]`, false, "app/t2"),
		txn("field names in lower case", `[{"kv":{"verb":"set","key":"other/t3","value":"eA=="}}]`, true, ""),
		txn("K-folded Key first", `[{"KV":{"Verb":"set","`+"\u212a"+`ey":"other/t4","Key":"app/t4",`+x+`}}]`, false, "app/t4"),
		txn("K-folded Key last", `[{"KV":{"Verb":"set","Key":"app/t5","`+"\u212a"+`ey":"other/t5",`+x+`}}]`, true, ""),
		txn(`\u-escaped KV`, `[{"\u004bV":{"Verb":"set","Key":"other/t6",`+x+`}}]`, true, ""),
		txn("trailing array", `[{"KV":{"Verb":"set","Key":"app/t7",`+x+`}}][{"KV":{"Verb":"set","Key":"other/t7",`+x+`}}]`, false, "app/t7"),
		txn("trailing garbage", `[{"KV":{"Verb":"set","Key":"app/t8",`+x+`}}] {"KV":`, false, "app/t8"),
		txn("unknown field", `[{"KV":{"Verb":"set","Key":"app/t9",`+x+`,"Bogus":1}}]`, false, ""),
		txn("KV and a Service db in one op", fmt.Sprintf(`[{"KV":{"Verb":"set","Key":"app/t10",`+x+`},"Service":{"Verb":"set","Node":%q,"Service":{"ID":"web-t10","Service":"db","Port":%d}}}]`, hcnNode, P), false, "app/t10"),
		txn("Service db, then a KV in one op", fmt.Sprintf(`[{"Service":{"Verb":"set","Node":%q,"Service":{"ID":"web-t11","Service":"db","Port":%d}},"KV":{"Verb":"set","Key":"app/t11",`+x+`}}]`, hcnNode, P), false, "app/t11"),
		txn("verb in upper case", `[{"KV":{"Verb":"SET","Key":"other/t12",`+x+`}}]`, true, ""),
		txn("delete-tree app", `[{"KV":{"Verb":"delete-tree","Key":"app"}}]`, true, ""),
		txn("delete-tree ap", `[{"KV":{"Verb":"delete-tree","Key":"ap"}}]`, true, ""),
		txn("delete-tree of the root", `[{"KV":{"Verb":"delete-tree","Key":""}}]`, true, ""),
		txn("dot segments in a key", `[{"KV":{"Verb":"set","Key":"app/../other/t13",`+x+`}}]`, false, "app/../other/t13"),
		txn("a leading slash", `[{"KV":{"Verb":"set","Key":"/other/t14",`+x+`}}]`, true, ""),

		// KV paths: Consul reads the decoded path.
		kv("%2F", "PUT", "/v1/kv/app%2Fenc1", false, "app/enc1"),
		kv("%2F outside app", "PUT", "/v1/kv/other%2Fenc2", true, ""),
		kv("%61pp", "PUT", "/v1/kv/%61pp/enc3", false, "app/enc3"),
		kv("%6Fther", "PUT", "/v1/kv/%6Fther/enc4", true, ""),
		kv("dot segments", "PUT", "/v1/kv/app/../other/enc5", false, ""),
		kv("%2E%2E segments", "PUT", "/v1/kv/app/%2E%2E/other/enc6", false, "app/../other/enc6"),
		kv("..%2F", "PUT", "/v1/kv/app/..%2Fother%2Fenc7", false, "app/../other/enc7"),
		kv("%2F..%2F", "PUT", "/v1/kv/app%2F..%2Fother%2Fenc8", false, "app/../other/enc8"),
		kv("%252E%252E", "PUT", "/v1/kv/app/%252E%252E/enc9", false, "app/%2E%2E/enc9"),
		kv("%252F", "PUT", "/v1/kv/app%252Fenc10", true, ""),
		kv("%252F under app/", "PUT", "/v1/kv/app/a%252Fenc11", false, "app/a%2Fenc11"),
		kv("secret%2F", "PUT", "/v1/kv/app/secret%2Fs1", true, ""),
		kv("secret%252F..", "PUT", "/v1/kv/app/secret%252F..%252F..%252Fother", false, "app/secret%2F..%2F..%2Fother"),
		kv("double slash", "PUT", "/v1/kv/app//enc13", false, "app//enc13"),
		kv("dot segment", "PUT", "/v1/kv/app/./enc14", false, "app/enc14"),
		kv("%3F in the key", "PUT", "/v1/kv/app/enc15%3Fraw", false, "app/enc15?raw"),
		kv("%23 in the key", "PUT", "/v1/kv/app/enc16%23x", false, "app/enc16#x"),
		kv("recurse delete app%2F", "DELETE", "/v1/kv/app%2F?recurse", true, ""),
		kv("recurse delete ap", "DELETE", "/v1/kv/ap?recurse", true, ""),
		kv("recurse delete app", "DELETE", "/v1/kv/app?recurse", true, ""),
		kv("recurse delete app/secre", "DELETE", "/v1/kv/app/secre?recurse", true, ""),
		kv("recurse delete app/%73ecret/", "DELETE", "/v1/kv/app/%73ecret/?recurse", true, ""),
		kv("read app%2Fsecret%2Fs1", "GET", "/v1/kv/app%2Fsecret%2Fs1", true, ""),
		kv("read app/%73ecret/s1", "GET", "/v1/kv/app/%73ecret/s1?raw", true, ""),
		kv("read app/./secret/s1", "GET", "/v1/kv/app/./secret/s1?raw", false, ""),
		kv("read app/x/../secret/s1", "GET", "/v1/kv/app/x/../secret/s1?raw", false, ""),
		kv("read app/x/..%2Fsecret%2Fs1", "GET", "/v1/kv/app/x/..%2Fsecret%2Fs1?raw", false, ""),
		kv("read app/x/%2E%2E/secret/s1", "GET", "/v1/kv/app/x/%2E%2E/secret/s1?raw", false, ""),
		kv("read app/secret%252F..%252F..%252Fother%252Fx", "GET", "/v1/kv/app/secret%252F..%252F..%252Fother%252Fx?raw", false, ""),

		// Query parameters.
		kv("recurse twice", "GET", "/v1/kv/app/?recurse&recurse", true, ""),
		kv("recurse=1&recurse=2", "GET", "/v1/kv/app/?recurse=1&recurse=2", true, ""),
		kv("recurse, then %72ecurse", "GET", "/v1/kv/app/?recurse&%72ecurse", true, ""),
		kv("dc twice", "GET", "/v1/kv/app/?dc=a&dc=b", true, ""),
		kv("dc twice, same value", "PUT", "/v1/kv/app/q1?dc=dc1&dc=dc1", true, ""),
		kv("dc twice on a secret", "GET", "/v1/kv/app/secret/s1?dc=dc1&dc=x", true, ""),
		kv("cas twice", "PUT", "/v1/kv/app/q2?cas=0&cas=0", true, ""),
		kv("flags twice", "PUT", "/v1/kv/app/q3?flags=1&flags=2", true, ""),
		kv("token twice", "PUT", "/v1/kv/app/q4?token=a&token=b", true, ""),
		kv("separator twice", "GET", "/v1/kv/app/?keys&separator=/&separator=x", true, ""),
		kv("separator, then %73eparator", "GET", "/v1/kv/app/?keys&separator=/&%73eparator=/", true, ""),
		kv("seperator twice", "GET", "/v1/kv/app/?keys&seperator=/&seperator=x", true, ""),
		kv("recurse delete twice", "DELETE", "/v1/kv/app/?recurse&recurse", true, ""),
		kv("%72ecurse delete of app/", "DELETE", "/v1/kv/app/?%72ecurse", true, ""),
		kv("cas and recurse delete", "DELETE", "/v1/kv/app/secret?cas=0&recurse", true, ""),
		kv("acquire and release", "PUT", "/v1/kv/app/q5?acquire=x&release=y", true, ""),
		kv("cas and %61cquire", "PUT", "/v1/kv/app/q6?cas=0&%61cquire=x", true, ""),
		kv("%zz", "PUT", "/v1/kv/other/q7?a=%zz", true, ""),
		kv("%zz on a read", "GET", "/v1/kv/app/?a=%zz&recurse", true, ""),
		kv("%zz in a name", "DELETE", "/v1/kv/app/?%zz&recurse", true, ""),
		kv("semicolon", "PUT", "/v1/kv/app/q8?a;b", true, ""),
		kv("semicolon between recurse and keys", "GET", "/v1/kv/app/?recurse;keys", true, ""),
		kv("%72ecurse read", "GET", "/v1/kv/app/?%72ecurse", false, ""),
		kv("recurse=false", "GET", "/v1/kv/app/?recurse=false", false, ""),
		kv("Recurse", "GET", "/v1/kv/app/?Recurse", false, ""),
		kv("%6Beys&separator", "GET", "/v1/kv/app/?%6Beys&separator=/", false, ""),
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kvBefore, svcBefore, before := e.kvAll(t), services(t), e.snap(t)
			code, h, body := hcoCall(t, web, c.method, e.front+c.path, c.body)
			what := fmt.Sprintf("%s %s %s: %d %q", c.method, c.path, c.body, code, body)
			refused := code == http.StatusBadRequest || code == http.StatusForbidden
			redirected := code >= 300 && code < 400
			if c.refuse && !refused {
				t.Errorf("%s: want refused (400 or 403)", what)
			}
			if redirected {
				t.Logf("redirected to %s", h.Get("Location"))
			}
			for k, v := range secrets {
				if strings.Contains(body, v) {
					t.Errorf("%s: the answer holds the value of %s", what, k)
				}
			}
			// What changed in Consul's KV.
			kvAfter := e.kvAll(t)
			var diffs []string
			for _, m := range []map[string]string{kvBefore, kvAfter} {
				for k := range m {
					if kvBefore[k] != kvAfter[k] && (refused || redirected || !writable(k)) {
						diffs = append(diffs, fmt.Sprintf("%q: %s -> %s", k, kvBefore[k], kvAfter[k]))
					}
				}
			}
			for k := range kvAfter {
				if kvBefore[k] != kvAfter[k] {
					t.Logf("Consul now holds %q = %s", k, kvAfter[k])
				}
			}
			if len(diffs) > 0 {
				sort.Strings(diffs)
				t.Errorf("%s: Consul's KV changed:\n%s", what, strings.Join(diffs, "\n"))
			}
			// What changed in Consul's services.
			for n := range services(t) {
				if !svcBefore[n] && !strings.HasPrefix(n, "web-") {
					t.Errorf("%s: Consul now holds service %q", what, n)
				}
			}
			if refused || redirected {
				e.nothingNew(t, "the refused request", before)
				return
			}
			if c.key != "" {
				if _, ok := kvAfter[c.key]; !ok && code == http.StatusOK {
					t.Errorf("%s: Consul does not hold %q, the key judged", what, c.key)
				}
			}
			if c.svc != "" && code == http.StatusOK {
				if s, ok := e.agentServices(t)[c.svc]; !ok || s.Service != c.svc {
					t.Errorf("%s: the agent holds %s (present %v), want %s", what, s, ok, c.svc)
				}
			}
			e.settle(t)
		})
	}
	if v := e.kvAll(t); v["app/secret/s1"] != kvSecretWant(secrets["app/secret/s1"]) || v["other/x"] != kvSecretWant(secrets["other/x"]) {
		t.Errorf("the secrets in Consul at the end: app/secret/s1 %s, other/x %s", v["app/secret/s1"], v["other/x"])
	}
}

// kvSecretWant is how kvAll renders a value put with e.put.
func kvSecretWant(v string) string { return fmt.Sprintf("%q flags=0 session=", []byte(v)) }

// TestHostileConsulFailClosed: class 10, fail open. A route the gateway
// does not know (ACLs, agent tokens, metrics, operator, Connect CA, events,
// prepared queries, config entries, snapshots, maintenance, leave, a KV
// POST, a txn route spelled with a slash...) is refused with 403 for every
// caller, admin included, and never reaches the agent: the agent logs every
// request it serves (debug), and none of these appears there; where the
// agent's state tells, it is unchanged. A transaction with an op the
// gateway cannot examine (no KV, Node, Service or Check; null; an unknown
// verb or field) is refused whole, not forwarded, and its other ops are not
// applied. With the agent stopped the gateway answers a clear 502, never a
// 200.
func TestHostileConsulFailClosed(t *testing.T) {
	e := hcnStart(t, "-log-level=debug")
	e.p.issue(t, "nobody", "/nobody", false)
	callers := []struct {
		name string
		cl   *http.Client
	}{{"admin", hcoNoRedirect(e.admin)}, {"web", hcoNoRedirect(e.web)}, {"nobody", hcoNoRedirect(httpsAs(t, e.p, "nobody"))}}
	e.put(t, "/v1/agent/service/register", `{"Name":"web-m1","Port":7501}`)
	e.settle(t)

	// reachedSince: the agent's log of the requests it served since the
	// log was at offset from, once a probe sent through the gateway after
	// them has been logged too (the agent logs each request as it
	// finishes, at about the time it answers); mark: the offset after
	// everything sent so far.
	n := 0
	var probe func(t *testing.T, from int) (string, int)
	reachedSince := func(t *testing.T, from int) string {
		t.Helper()
		logs, _ := probe(t, from)
		return logs
	}
	mark := func(t *testing.T) int {
		t.Helper()
		_, end := probe(t, 0)
		return end
	}
	probe = func(t *testing.T, from int) (string, int) {
		t.Helper()
		n++
		probe := fmt.Sprintf("/v1/kv/app/failclosed-probe-%d", n)
		if code, body := e.as(t, e.web, "GET", probe, ""); code != http.StatusNotFound {
			t.Fatalf("probe %s: %d %s", probe, code, body)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			all := e.agent.logs.String()
			logs := all[from:]
			if i := strings.Index(logs, "url="+probe); i >= 0 {
				return logs[:i], len(all)
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent did not log the probe %s in 10s (is it logging requests at debug level?):\n%s", probe, logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	direct := func(t *testing.T, path string) string {
		t.Helper()
		code, body := call(t, http.DefaultClient, "GET", e.direct+path, "")
		return fmt.Sprintf("%d %s", code, body)
	}
	agentState := func(t *testing.T) map[string]string {
		t.Helper()
		s := map[string]string{}
		for _, p := range []string{"/v1/kv/app/x", "/v1/kv/app/t0", "/v1/operator/autopilot/configuration", "/v1/query",
			"/v1/config/service-defaults", "/v1/connect/intentions", "/v1/status/leader", "/v1/agent/members"} {
			s[p] = direct(t, p)
		}
		var events []struct{ Name string }
		e.get(t, "/v1/event/list", &events)
		for _, ev := range events {
			s["event "+ev.Name] = "fired"
		}
		for id := range e.agentChecks(t) {
			s["check "+id] = "present"
		}
		return s
	}

	t.Run("unknown routes", func(t *testing.T) {
		routes := []struct{ method, path, body string }{
			{"GET", "/v1/acl/tokens", ""},
			{"PUT", "/v1/acl/bootstrap", ""},
			{"PUT", "/v1/agent/token/default", `{"Token":"00000000-0000-0000-0000-000000000001"}`},
			{"GET", "/v1/agent/metrics", ""},
			{"GET", "/v1/agent/metrics?format=prometheus", ""},
			{"GET", "/v1/agent/checks", ""},
			{"GET", "/v1/agent/host", ""},
			{"PUT", "/v1/agent/maintenance?enable=true&reason=pwned", ""},
			{"PUT", "/v1/agent/service/maintenance/web-m1?enable=true&reason=pwned", ""},
			{"PUT", "/v1/agent/reload", ""},
			{"PUT", "/v1/agent/leave", ""},
			{"PUT", "/v1/agent/force-leave/" + hcnNode, ""},
			{"PUT", "/v1/agent/join/127.0.0.1:1", ""},
			{"PUT", "/v1/operator/autopilot/configuration", `{"CleanupDeadServers":false,"LastContactThreshold":"9s","MaxTrailingLogs":77,"ServerStabilizationTime":"11s"}`},
			{"GET", "/v1/operator/raft/configuration", ""},
			{"DELETE", "/v1/operator/raft/peer?address=127.0.0.1:1", ""},
			{"PUT", "/v1/operator/keyring", `{"Key":"pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="}`},
			{"GET", "/v1/connect/ca/roots", ""},
			{"PUT", "/v1/connect/ca/configuration", `{"Provider":"consul","Config":{}}`},
			{"PUT", "/v1/connect/intentions/exact?source=web-a&destination=db", `{"Action":"allow"}`},
			{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web-cfg","Protocol":"http"}`},
			{"POST", "/v1/query", `{"Name":"pwn","Service":{"Service":"db"}}`},
			{"PUT", "/v1/event/fire/pwned", "payload"},
			{"GET", "/v1/snapshot", ""},
			{"PUT", "/v1/snapshot", "not a snapshot"},
			{"GET", "/v1/internal/ui/services", ""},
			{"GET", "/v1/coordinate/nodes", ""},
			{"POST", "/v1/kv/app/x", "posted"},
			{"PATCH", "/v1/kv/app/x", "patched"},
			{"OPTIONS", "/v1/kv/app/a", ""},
			{"get", "/v1/kv/app/a", ""},
			{"put", "/v1/kv/app/x", "lower-case method"},
			{"POST", "/v1/txn", `[{"KV":{"Verb":"set","Key":"app/x","Value":"eA=="}}]`},
			{"PUT", "/v1/txn/", `[{"KV":{"Verb":"set","Key":"app/x","Value":"eA=="}}]`},
			{"POST", "/v1/session/create", `{"Name":"posted"}`},
			{"GET", "/v1/catalog/services/", ""},
			{"PUT", "/v1/agent/service/register/", `{"Name":"web-slash","Port":7502}`},
		}
		before := agentState(t)
		from := mark(t)
		for _, c := range callers {
			for _, r := range routes {
				code, body := e.as(t, c.cl, r.method, r.path, r.body)
				hcnDenied(t, fmt.Sprintf("%s %s %s", c.name, r.method, r.path), code, body)
			}
		}
		logs := reachedSince(t, from)
		for _, r := range routes {
			p, _, _ := strings.Cut(r.path, "?")
			if strings.Contains(logs, "url="+p) {
				t.Errorf("%s %s reached the agent:\n%s", r.method, r.path, logs)
			}
		}
		after := agentState(t)
		for k, v := range after {
			if before[k] != v {
				t.Errorf("the agent's %s changed: %q -> %q", k, before[k], v)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				t.Errorf("the agent's %s is gone", k)
			}
		}
		if s, ok := e.agentServices(t)["web-slash"]; ok {
			t.Errorf("web-slash was registered: %s", s)
		}
	})

	t.Run("txn ops the gateway cannot examine", func(t *testing.T) {
		set := `{"KV":{"Verb":"set","Key":"app/t0","Value":"eA=="}}`
		bodies := []string{
			`[{}]`,
			`[null]`,
			`[{"KV":null}]`,
			`[{"KV":null,"Node":null,"Service":null,"Check":null}]`,
			`[` + set + `,{}]`,
			`[{},` + set + `]`,
			`[` + set + `,null]`,
			`[` + set + `,{"Bogus":{}}]`,
			`[{"KV":{"Verb":"frob","Key":"app/t0"}}]`,
			`[{"KV":{"Key":"app/t0","Value":"eA=="}}]`,
			`[` + set + `,{"Node":{"Verb":"frob","Node":{"Node":"web-n1","Address":"127.0.0.1"}}}]`,
			`[` + set + fmt.Sprintf(`,{"Service":{"Verb":"frob","Node":%q,"Service":{"ID":"web-x","Service":"web-x"}}}]`, hcnNode),
			`[` + set + fmt.Sprintf(`,{"Check":{"Verb":"frob","Check":{"Node":%q,"CheckID":"web-c","Name":"web-c"}}}]`, hcnNode),
			`{"KV":{"Verb":"set","Key":"app/t0","Value":"eA=="}}`,
		}
		before := e.snap(t)
		from := mark(t)
		for _, c := range callers[:2] {
			for _, b := range bodies {
				code, body := e.as(t, c.cl, "PUT", "/v1/txn", b)
				if code != http.StatusBadRequest && code != http.StatusForbidden {
					t.Errorf("%s txn %s: %d %q, want 400 or 403", c.name, b, code, body)
				}
			}
		}
		if logs := reachedSince(t, from); strings.Contains(logs, "url=/v1/txn") {
			t.Errorf("a refused transaction reached the agent:\n%s", logs)
		}
		if v := direct(t, "/v1/kv/app/t0"); !strings.HasPrefix(v, "404") {
			t.Errorf("app/t0 in Consul: %s", v)
		}
		e.nothingNew(t, "the refused transactions", before)
	})

	// Last: the agent goes away under the gateway.
	t.Run("agent stopped", func(t *testing.T) {
		e.agent.stop()
		web, admin := callers[1].cl, callers[0].cl
		sid := "5b0c2e44-8f1d-4a7e-b3c9-2d6e7f8a9b01"
		reqs := []struct {
			who          string
			cl           *http.Client
			method, path string
			body         string
		}{
			{"web", web, "GET", "/v1/kv/app/a", ""},
			{"web", web, "GET", "/v1/kv/app/a?raw", ""},
			{"web", web, "GET", "/v1/kv/app/?recurse", ""},
			{"web", web, "GET", "/v1/kv/app/?keys&separator=/", ""},
			{"web", web, "PUT", "/v1/kv/app/a", "v"},
			{"web", web, "DELETE", "/v1/kv/app/a", ""},
			{"web", web, "PUT", "/v1/txn", `[{"KV":{"Verb":"set","Key":"app/a","Value":"eA=="}}]`},
			{"web", web, "PUT", "/v1/agent/service/register", `{"Name":"web-z","Port":7503}`},
			{"web", web, "PUT", "/v1/agent/service/deregister/web-m1", ""},
			{"web", web, "PUT", "/v1/agent/check/pass/service:web-m1", ""},
			{"web", web, "PUT", "/v1/agent/check/register", `{"Name":"web-zc","ServiceID":"web-m1","TTL":"30s"}`},
			{"web", web, "PUT", "/v1/session/create", `{"TTL":"30s"}`},
			{"web", web, "PUT", "/v1/session/renew/" + sid, ""},
			{"web", web, "PUT", "/v1/session/destroy/" + sid, ""},
			{"web", web, "PUT", "/v1/kv/app/locks/l?acquire=" + sid, ""},
			{"web", web, "GET", "/v1/status/leader", ""},
			{"admin", admin, "GET", "/v1/kv/other/x", ""},
			{"admin", admin, "GET", "/v1/catalog/services", ""},
			{"admin", admin, "PUT", "/v1/catalog/register", `{"Node":"n1","Address":"127.0.0.1"}`},
			{"admin", admin, "GET", "/v1/agent/services", ""},
		}
		for _, r := range reqs {
			code, body := e.as(t, r.cl, r.method, r.path, r.body)
			if code != http.StatusBadGateway || !strings.HasPrefix(body, "storegate:") {
				t.Errorf("%s %s %s with the agent stopped: %d %q, want 502 \"storegate: ...\"", r.who, r.method, r.path, code, body)
			}
			if strings.Contains(body, "127.0.0.1") || strings.Contains(body, "dial") {
				t.Errorf("%s %s %s with the agent stopped: %q tells the caller of the gateway's network", r.who, r.method, r.path, body)
			}
		}
		// What policy refuses is still refused, without the agent.
		code, body := e.as(t, web, "GET", "/v1/kv/other/x", "")
		hcnDenied(t, "web GET /v1/kv/other/x with the agent stopped", code, body)
	})
}
