package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
)

// The hostile Consul suite, class 7 (oracles) here; classes 6 (parser
// differentials) and 10 (fail open) in hostile_consul_parser_test.go.

// hcoFiltered is the header Consul's ACLs (and the gateway) set on an
// answer something was dropped from.
const hcoFiltered = "X-Consul-Results-Filtered-By-ACLs"

// hcoCall is call with the answer's headers.
func hcoCall(t *testing.T, c *http.Client, method, url, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// hcoKV is an entry as Consul's KV answers it.
type hcoKV struct {
	Key     string
	Value   []byte
	Flags   uint64
	Session string
}

// kvAll is every key Consul holds, read directly, with value, flags and
// session.
func (e *hcnEnv) kvAll(t *testing.T) map[string]string {
	t.Helper()
	var l []hcoKV
	e.get(t, "/v1/kv/?recurse", &l)
	m := map[string]string{}
	for _, kv := range l {
		m[kv.Key] = fmt.Sprintf("%q flags=%d session=%s", kv.Value, kv.Flags, kv.Session)
	}
	return m
}

// hcoSession creates a session through the gateway as c and returns its ID.
func (e *hcnEnv) hcoSession(t *testing.T, c *http.Client, name string) string {
	t.Helper()
	code, body := e.as(t, c, "PUT", "/v1/session/create", `{"Name":"`+name+`","TTL":"120s"}`)
	var s struct{ ID string }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil || s.ID == "" {
		t.Fatalf("session create as %s: %d %s", name, code, body)
	}
	return s.ID
}

// hcoNormal replaces each of ids in a body by ID, so that two denials of
// requests naming different IDs can be compared.
func hcoNormal(body string, ids ...string) string {
	for _, id := range ids {
		body = strings.ReplaceAll(body, id, "ID")
	}
	return body
}

// hcoName is the key or name a path (or a bare key) names.
func hcoName(path string) string {
	path, _, _ = strings.Cut(path, "?")
	for _, p := range []string{"/v1/kv/", "/v1/catalog/service/", "/v1/health/service/", "/v1/health/checks/", "/v1/agent/service/"} {
		if n, ok := strings.CutPrefix(path, p); ok {
			return n
		}
	}
	return path
}

func hcoSorted(l []string) []string {
	l = append([]string(nil), l...)
	sort.Strings(l)
	return l
}

// TestHostileConsulOracles: class 7, oracles. Under the shipped intentions
// web reads /app/** but not /app/secret/**, nobody reads /shared/* only,
// and no caller reads the gateway's _storegate/ records. None of these may
// be learnt from an answer: listings (?recurse, ?keys, ?keys with a
// separator in both spellings, which rolls keys up to a prefix that must
// then hold a key the caller can read), the filtered header (set exactly
// when something was dropped), denial bodies for IDs of others' services,
// checks and sessions (the same as for IDs that do not exist, naming no
// owner), existence of a denied key, and every spelling of a reserved read
// (path encodings, listings of the root, a txn tree read). Each outcome is
// also read back in the agent directly.
func TestHostileConsulOracles(t *testing.T) {
	e := hcnStart(t)
	e.p.issue(t, "nobody", "/nobody", false)
	nobody := httpsAs(t, e.p, "nobody")
	secrets := map[string]string{"app/secret/s1": "S3CRET-ONE", "app/secret/deep/s2": "S3CRET-TWO", "other/x": "OTHER-VALUE"}
	for k, v := range map[string]string{"app/a": "va", "app/b/c": "vc", "shared/motd": "hello"} {
		e.put(t, "/v1/kv/"+k, v)
	}
	for k, v := range secrets {
		e.put(t, "/v1/kv/"+k, v)
	}
	// What a denied caller must never see in an answer: the values, and
	// the names of the keys it may not read.
	leaks := func(t *testing.T, what, body string, names ...string) {
		t.Helper()
		for k, v := range secrets {
			for _, s := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
				if strings.Contains(body, s) {
					t.Errorf("%s: the answer holds the value of %s: %s", what, k, body)
				}
			}
		}
		for _, n := range names {
			if strings.Contains(body, n) {
				t.Errorf("%s: the answer names %q: %s", what, n, body)
			}
		}
	}

	// Admin's service db (IDs free of "db"), its check, and admin's
	// session; web's own session too, so that _storegate/ holds records
	// of two owners.
	P := hcnPort(t)
	if code, body := e.as(t, e.admin, "PUT", "/v1/agent/service/register",
		fmt.Sprintf(`{"Name":"db","ID":"svc-k7","Port":%d,"Check":{"CheckID":"chk-k7","Name":"liveness","TTL":"10m"}}`, P)); code != http.StatusOK {
		t.Fatalf("admin registers db: %d %s", code, body)
	}
	e.put(t, "/v1/agent/check/pass/chk-k7?note=ok-k7", "")
	e.settle(t)
	adminSID := e.hcoSession(t, e.admin, "admin-lock")
	webSID := e.hcoSession(t, e.web, "web-lock")
	for sid, owner := range map[string]string{adminSID: "spiffe://example.org/admin", webSID: "spiffe://example.org/web"} {
		code, body := call(t, http.DefaultClient, "GET", e.direct+"/v1/kv/_storegate/sessions/"+sid+"?raw", "")
		if code != http.StatusOK || body != owner {
			t.Fatalf("the owner record of %s in Consul: %d %q, want %q", sid, code, body, owner)
		}
	}
	const randomSID = "5b0c2e44-8f1d-4a7e-b3c9-2d6e7f8a9b01"
	var allKeys []string
	e.get(t, "/v1/kv/?keys", &allKeys)
	shared := func(k string) bool {
		return strings.HasPrefix(k, "shared/") && !strings.Contains(k[len("shared/"):], "/")
	}
	webReadable := func(k string) bool {
		return shared(k) || strings.HasPrefix(k, "app/") && !strings.HasPrefix(k, "app/secret/")
	}

	t.Run("listings", func(t *testing.T) {
		cases := []struct {
			name, path string
			keys       bool // a list of key names, not entries
			want       []string
			filtered   bool
		}{
			{"keys, separator /", "/v1/kv/app/?keys&separator=/", true, []string{"app/a", "app/b/"}, true},
			{"keys, seperator / (historic spelling)", "/v1/kv/app/?keys&seperator=/", true, []string{"app/a", "app/b/"}, true},
			{"keys, both spellings, separator wins", "/v1/kv/app/?keys&seperator=x&separator=/", true, []string{"app/a", "app/b/"}, true},
			{"keys, both spellings, an empty separator wins", "/v1/kv/app/?keys&separator=&seperator=/", true, []string{"app/a", "app/b/c"}, true},
			{"keys, separator %2F", "/v1/kv/app/?keys&separator=%2F", true, []string{"app/a", "app/b/"}, true},
			{"keys, no separator", "/v1/kv/app/?keys", true, []string{"app/a", "app/b/c"}, true},
			{"keys, prefix app", "/v1/kv/app?keys", true, []string{"app/a", "app/b/c"}, true},
			{"recurse", "/v1/kv/app/?recurse", false, []string{"app/a", "app/b/c"}, true},
			{"recurse, prefix ap", "/v1/kv/ap?recurse", false, []string{"app/a", "app/b/c"}, true},
			{"nothing dropped: recurse app/b/", "/v1/kv/app/b/?recurse", false, []string{"app/b/c"}, false},
			{"nothing dropped: keys app/b/", "/v1/kv/app/b/?keys&separator=/", true, []string{"app/b/c"}, false},
			{"nothing dropped: one key", "/v1/kv/app/a", false, []string{"app/a"}, false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				code, h, body := hcoCall(t, e.web, "GET", e.front+c.path, "")
				if code != http.StatusOK {
					t.Fatalf("GET %s as web: %d %s", c.path, code, body)
				}
				leaks(t, c.path, body, "app/secret", "other/")
				var got []string
				if c.keys {
					if err := json.Unmarshal([]byte(body), &got); err != nil {
						t.Fatalf("GET %s: %v\n%s", c.path, err, body)
					}
				} else {
					var l []hcoKV
					if err := json.Unmarshal([]byte(body), &l); err != nil {
						t.Fatalf("GET %s: %v\n%s", c.path, err, body)
					}
					for _, kv := range l {
						got = append(got, kv.Key)
					}
				}
				if strings.Join(hcoSorted(got), " ") != strings.Join(c.want, " ") {
					t.Errorf("GET %s as web lists %q, want %q", c.path, got, c.want)
				}
				if f := h.Get(hcoFiltered); (f == "true") != c.filtered {
					t.Errorf("GET %s as web: %s: %q, want set %v", c.path, hcoFiltered, f, c.filtered)
				}
			})
		}
		// At the root, each caller sees the prefixes it can read a key
		// under, and never _storegate/.
		for _, c := range []struct {
			who  string
			cl   *http.Client
			want []string
		}{
			{"nobody", nobody, []string{"shared/"}},
			{"web", e.web, []string{"app/", "shared/"}},
			{"admin", e.admin, []string{"app/", "other/", "shared/"}},
		} {
			for _, sep := range []string{"separator", "seperator"} {
				t.Run("root keys, "+sep+" /, as "+c.who, func(t *testing.T) {
					code, h, body := hcoCall(t, c.cl, "GET", e.front+"/v1/kv/?keys&"+sep+"=/", "")
					var got []string
					if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
						t.Fatalf("%d %s", code, body)
					}
					if strings.Join(got, " ") != strings.Join(c.want, " ") {
						t.Errorf("as %s: %q, want %q", c.who, got, c.want)
					}
					if h.Get(hcoFiltered) != "true" {
						t.Errorf("as %s: %s not set, yet _storegate/ (at least) was dropped", c.who, hcoFiltered)
					}
				})
			}
		}
	})

	// A separator other than "/" rolls keys up to any prefix ending in
	// it: a rolled-up entry tells that keys with that prefix exist, so it
	// may be shown only if one of those keys is the caller's to read.
	t.Run("rolled-up keys for any separator", func(t *testing.T) {
		defer func() {
			if t.Failed() {
				t.Logf("Consul holds %q", allKeys)
			}
		}()
		for _, c := range []struct {
			who      string
			cl       *http.Client
			readable func(string) bool
		}{
			{"web", e.web, webReadable},
			{"nobody", nobody, shared},
			{"admin", e.admin, func(k string) bool { return !strings.HasPrefix(k, "_storegate/") }},
		} {
			for _, sep := range []string{"t", "s", "e", "c", "ret", "/s", "cret/", "p", "_", "g"} {
				for _, prefix := range []string{"", "app/", "app/se", "_"} {
					path := "/v1/kv/" + prefix + "?keys&separator=" + url.QueryEscape(sep)
					code, _, body := hcoCall(t, c.cl, "GET", e.front+path, "")
					if code == http.StatusForbidden || code == http.StatusNotFound {
						continue
					}
					var got []string
					if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
						t.Errorf("GET %s as %s: %d %s", path, c.who, code, body)
						continue
					}
					for _, k := range got {
						ok := false
						for _, full := range allKeys {
							if strings.HasPrefix(full, k) && c.readable(full) && (full == k || strings.HasSuffix(k, sep)) {
								ok = true
							}
						}
						if !ok {
							t.Errorf("GET %s as %s lists %q: no key under it is %s's to read", path, c.who, k, c.who)
						}
					}
				}
			}
		}
	})

	// A denied key, a denied listing: the same answer whether it exists.
	t.Run("existence of denied keys", func(t *testing.T) {
		pairs := []struct {
			who             string
			cl              *http.Client
			method          string
			exists, missing string // paths
			body            string // a txn body, %s for the key
		}{
			{"web", e.web, "GET", "/v1/kv/app/secret/s1", "/v1/kv/app/secret/s9", ""},
			{"web", e.web, "GET", "/v1/kv/app/secret/s1?raw", "/v1/kv/app/secret/s9?raw", ""},
			{"web", e.web, "GET", "/v1/kv/app/secret/?recurse", "/v1/kv/app/secret/none/?recurse", ""},
			{"web", e.web, "GET", "/v1/kv/app/secret/?keys&separator=/", "/v1/kv/app/secret/none/?keys&separator=/", ""},
			{"web", e.web, "GET", "/v1/kv/other/x", "/v1/kv/other/y", ""},
			{"web", e.web, "GET", "/v1/kv/other/?keys", "/v1/kv/otherz/?keys", ""},
			{"nobody", nobody, "GET", "/v1/kv/app/a", "/v1/kv/app/z", ""},
			{"nobody", nobody, "GET", "/v1/kv/app/?recurse", "/v1/kv/apz/?recurse", ""},
			{"web", e.web, "PUT", "app/secret/s1", "app/secret/s9", `[{"KV":{"Verb":"get","Key":%q}}]`},
			{"web", e.web, "PUT", "app/secret/s1", "app/secret/s9", `[{"KV":{"Verb":"check-not-exists","Key":%q}}]`},
			{"web", e.web, "PUT", "app/secret/s1", "app/secret/s9", `[{"KV":{"Verb":"check-index","Key":%q,"Index":1}}]`},
			{"web", e.web, "PUT", "app/secret/", "app/secret/none/", `[{"KV":{"Verb":"get-tree","Key":%q}}]`},
			{"web", e.web, "PUT", "app/secret/s1", "app/secret/s9", `[{"KV":{"Verb":"get","Key":"app/a"}},{"KV":{"Verb":"get","Key":%q}}]`},
			{"web", e.web, "GET", "/v1/catalog/service/db", "/v1/catalog/service/dz", ""},
			{"web", e.web, "GET", "/v1/health/service/db", "/v1/health/service/dz", ""},
			{"web", e.web, "GET", "/v1/health/checks/db", "/v1/health/checks/dz", ""},
			{"web", e.web, "GET", "/v1/agent/service/svc-k7", "/v1/agent/service/svc-n0", ""},
		}
		for _, pr := range pairs {
			send := func(target string) (int, string) {
				if pr.body != "" {
					return e.as(t, pr.cl, "PUT", "/v1/txn", fmt.Sprintf(pr.body, target))
				}
				return e.as(t, pr.cl, pr.method, target, "")
			}
			c1, b1 := send(pr.exists)
			c2, b2 := send(pr.missing)
			what := pr.who + " " + pr.method + " " + pr.exists
			if pr.body != "" {
				what = pr.who + " txn " + fmt.Sprintf(pr.body, pr.exists)
			}
			if c1 != http.StatusForbidden && c1 != http.StatusNotFound {
				t.Errorf("%s: %d %q, want a denial (403) or nothing (404)", what, c1, b1)
			}
			leaks(t, what, b1)
			// Normalize the names the caller gave itself.
			n1, n2 := hcoNormal(b1, hcoName(pr.exists)), hcoNormal(b2, hcoName(pr.missing))
			if c1 != c2 || n1 != n2 {
				t.Errorf("%s: existing %d %q, missing (%s) %d %q: the answer tells them apart", what, c1, b1, pr.missing, c2, b2)
			}
		}
	})

	// Others' services and checks by ID: a denial names nothing behind the
	// ID and reads exactly as for an ID that does not exist.
	t.Run("IDs of admin's service and check", func(t *testing.T) {
		for _, c := range []struct{ route, own, missing, body string }{
			{"/v1/agent/service/deregister/", "svc-k7", "svc-n0", ""},
			{"/v1/agent/check/pass/", "chk-k7", "chk-n0", ""},
			{"/v1/agent/check/warn/", "chk-k7", "chk-n0", ""},
			{"/v1/agent/check/fail/", "chk-k7", "chk-n0", ""},
			{"/v1/agent/check/update/", "chk-k7", "chk-n0", `{"Status":"critical","Output":"pwned"}`},
			{"/v1/agent/check/deregister/", "chk-k7", "chk-n0", ""},
			{"/v1/agent/check/pass/", "service:svc-k7", "service:svc-n0", ""},
		} {
			for _, who := range []struct {
				name string
				cl   *http.Client
			}{{"web", e.web}, {"nobody", nobody}} {
				c1, b1 := e.as(t, who.cl, "PUT", c.route+c.own+"?note=pwned", c.body)
				c2, b2 := e.as(t, who.cl, "PUT", c.route+c.missing+"?note=pwned", c.body)
				what := who.name + " PUT " + c.route + c.own
				hcnDenied(t, what, c1, b1)
				if strings.Contains(b1, "db") || strings.Contains(b1, "liveness") || strings.Contains(b1, "admin") {
					t.Errorf("%s: the denial names what is behind the ID: %q", what, b1)
				}
				if c1 != c2 || hcoNormal(b1, c.own) != hcoNormal(b2, c.missing) {
					t.Errorf("%s: %d %q; for %s, which does not exist: %d %q", what, c1, b1, c.missing, c2, b2)
				}
			}
		}
		if s, ok := e.agentServices(t)["svc-k7"]; !ok || s.Service != "db" {
			t.Errorf("svc-k7 in the agent: %s (present %v)", s, ok)
		}
		if c, ok := e.agentChecks(t)["chk-k7"]; !ok || c.Status != "passing" || c.Output != "ok-k7" || c.ServiceID != "svc-k7" {
			t.Errorf("chk-k7 in the agent: %+v (present %v)", c, ok)
		}
		if _, ok := e.catalogServices(t, hcnNode)["svc-k7"]; !ok {
			t.Errorf("svc-k7 is gone from the catalog")
		}
	})

	// Another's session: the same plain denial as for a session that does
	// not exist (or is no session ID at all), naming no owner.
	t.Run("admin's session", func(t *testing.T) {
		ops := []struct{ name, method, path string }{
			{"renew", "PUT", "/v1/session/renew/%s"},
			{"acquire", "PUT", "/v1/kv/app/locks/l?acquire=%s"},
			{"release", "PUT", "/v1/kv/app/locks/l?release=%s"},
			{"destroy", "PUT", "/v1/session/destroy/%s"},
		}
		for _, op := range ops {
			var bodies []string
			for _, sid := range []string{adminSID, strings.ToUpper(adminSID), randomSID, "not-a-session"} {
				code, body := e.as(t, e.web, op.method, fmt.Sprintf(op.path, sid), "x")
				what := fmt.Sprintf("web %s with %s", op.name, sid)
				hcnDenied(t, what, code, body)
				for _, s := range []string{"admin", "belongs", "exist", "not created", "owner", strings.ToLower(adminSID)} {
					if strings.Contains(strings.ToLower(body), strings.ToLower(s)) {
						t.Errorf("%s: the denial says %q: %q", what, s, body)
					}
				}
				bodies = append(bodies, hcoNormal(body, sid))
			}
			for i := 1; i < len(bodies); i++ {
				if bodies[i] != bodies[0] {
					t.Errorf("web %s: admin's session answers %q, another ID %q", op.name, bodies[0], bodies[i])
				}
			}
		}
		var info []struct{ ID, Name string }
		if e.get(t, "/v1/session/info/"+adminSID, &info); len(info) != 1 || info[0].ID != adminSID {
			t.Errorf("admin's session in Consul after web's attempts: %+v", info)
		}
		var lock []hcoKV
		if e.get(t, "/v1/kv/app/locks/l", &lock); len(lock) > 0 {
			t.Errorf("app/locks/l in Consul: %+v (web locked with admin's session?)", lock)
		}
		if code, body := call(t, http.DefaultClient, "GET", e.direct+"/v1/kv/_storegate/sessions/"+adminSID+"?raw", ""); code != http.StatusOK || body != "spiffe://example.org/admin" {
			t.Errorf("admin's owner record after web's attempts: %d %q", code, body)
		}
	})

	// Sessions are web's own only: reading the session list or another's
	// session info tells web that admin's exists.
	t.Run("session reads", func(t *testing.T) {
		for _, path := range []string{"/v1/session/list", "/v1/session/node/" + hcnNode} {
			code, body := e.as(t, e.web, "GET", path, "")
			if code == http.StatusOK && strings.Contains(body, adminSID) {
				t.Errorf("GET %s as web lists admin's session: %s", path, body)
			}
		}
		c1, b1 := e.as(t, e.web, "GET", "/v1/session/info/"+adminSID, "")
		c2, b2 := e.as(t, e.web, "GET", "/v1/session/info/"+randomSID, "")
		if c1 != c2 || hcoNormal(b1, adminSID) != hcoNormal(b2, randomSID) {
			t.Errorf("GET /v1/session/info/ as web: admin's session %d %q, an unknown one %d %q", c1, b1, c2, b2)
		}
	})

	// The gateway's records: no spelling of a read shows them, to anyone.
	t.Run("reserved keys", func(t *testing.T) {
		reads := []struct{ method, path, body string }{
			{"GET", "/v1/kv/_storegate/?recurse", ""},
			{"GET", "/v1/kv/_storegate/?keys", ""},
			{"GET", "/v1/kv/_storegate?recurse", ""},
			{"GET", "/v1/kv/_storegate?keys&separator=/", ""},
			{"GET", "/v1/kv/_?keys", ""},
			{"GET", "/v1/kv/_?keys&separator=/", ""},
			{"GET", "/v1/kv/%5Fstoregate/sessions/", ""},
			{"GET", "/v1/kv/%5Fstoregate/sessions/?recurse", ""},
			{"GET", "/v1/kv/%5fstoregate%2Fsessions%2F?keys", ""},
			{"GET", "/v1/kv/_storegate/%73essions/" + adminSID, ""},
			{"GET", "/v1/kv/_storegate/sessions/" + adminSID + "?raw", ""},
			{"GET", "/v1/kv/?recurse", ""},
			{"GET", "/v1/kv/?keys", ""},
			{"GET", "/v1/kv/?keys&separator=/", ""},
			{"GET", "/v1/kv/?keys&seperator=_", ""},
			{"GET", "/v1/kv/?keys&separator=s", ""},
			{"PUT", "/v1/txn", `[{"KV":{"Verb":"get-tree","Key":""}}]`},
			{"PUT", "/v1/txn", `[{"KV":{"Verb":"get-tree","Key":"_"}}]`},
			{"PUT", "/v1/txn", `[{"KV":{"Verb":"get-tree","Key":"_storegate/"}}]`},
			{"PUT", "/v1/txn", `[{"KV":{"Verb":"get","Key":"_storegate/sessions/` + adminSID + `"}}]`},
			{"PUT", "/v1/txn", `[{"KV":{"Verb":"check-not-exists","Key":"_storegate/sessions/` + adminSID + `"}}]`},
		}
		for _, who := range []struct {
			name string
			cl   *http.Client
		}{{"web", e.web}, {"admin", e.admin}} {
			for _, r := range reads {
				code, body := e.as(t, who.cl, r.method, r.path, r.body)
				what := fmt.Sprintf("%s %s %s %s", who.name, r.method, r.path, r.body)
				if code == http.StatusOK {
					for _, s := range []string{"_storegate", adminSID, webSID, base64.StdEncoding.EncodeToString([]byte("spiffe://")), "spiffe://"} {
						if strings.Contains(body, s) {
							t.Errorf("%s: the answer shows %q: %s", what, s, body)
						}
					}
				} else if code != http.StatusForbidden && code != http.StatusNotFound {
					t.Errorf("%s: %d %s, want a 200 without the records, 403 or 404", what, code, body)
				}
				if r.path == "/v1/kv/?recurse" && who.name == "admin" && code != http.StatusOK {
					t.Errorf("%s: %d %s (admin's listing of the root)", what, code, body)
				}
			}
		}
		// Nor may anyone write them: web making itself the owner of
		// admin's session, in several spellings.
		writes := []struct{ method, path, body string }{
			{"PUT", "/v1/kv/_storegate/sessions/" + adminSID, "spiffe://example.org/web"},
			{"PUT", "/v1/kv/%5Fstoregate/sessions/" + adminSID, "spiffe://example.org/web"},
			{"PUT", "/v1/kv/_storegate%2Fsessions%2F" + adminSID, "spiffe://example.org/web"},
			{"DELETE", "/v1/kv/_storegate/sessions/" + adminSID, ""},
			{"DELETE", "/v1/kv/_storegate/?recurse", ""},
			{"DELETE", "/v1/kv/_?recurse", ""},
			{"PUT", "/v1/txn", `[{"KV":{"Verb":"set","Key":"_storegate/sessions/` + adminSID + `","Value":"` + base64.StdEncoding.EncodeToString([]byte("spiffe://example.org/web")) + `"}}]`},
			{"PUT", "/v1/txn", `[{"KV":{"Verb":"delete-tree","Key":"_storegate/"}}]`},
		}
		for _, who := range []struct {
			name string
			cl   *http.Client
		}{{"web", e.web}, {"admin", e.admin}} {
			for _, w := range writes {
				code, body := e.as(t, who.cl, w.method, w.path, w.body)
				hcnDenied(t, fmt.Sprintf("%s %s %s %s", who.name, w.method, w.path, w.body), code, body)
			}
		}
		for sid, owner := range map[string]string{adminSID: "spiffe://example.org/admin", webSID: "spiffe://example.org/web"} {
			code, body := call(t, http.DefaultClient, "GET", e.direct+"/v1/kv/_storegate/sessions/"+sid+"?raw", "")
			if code != http.StatusOK || body != owner {
				t.Errorf("the owner record of %s in Consul: %d %q, want %q", sid, code, body, owner)
			}
		}
		if code, body := e.as(t, e.web, "PUT", "/v1/session/renew/"+adminSID, ""); code != http.StatusForbidden {
			t.Errorf("web renews admin's session after the attempts: %d %s", code, body)
		}
	})

	// The filtered header on a listing nothing is left of says that keys
	// the caller cannot read exist under the prefix: the header is asked
	// for above, so this is logged, not asserted (Consul's own ACLs do the
	// same).
	t.Run("filtered header on an empty listing", func(t *testing.T) {
		c1, h1, _ := hcoCall(t, e.web, "GET", e.front+"/v1/kv/app/secret?keys", "")
		c2, h2, _ := hcoCall(t, e.web, "GET", e.front+"/v1/kv/app/secrez?keys", "")
		if c1 != c2 || h1.Get(hcoFiltered) != h2.Get(hcoFiltered) {
			t.Logf("note: GET /v1/kv/app/secret?keys as web: %d %s=%q; app/secrez?keys (no keys): %d %q",
				c1, hcoFiltered, h1.Get(hcoFiltered), c2, h2.Get(hcoFiltered))
		}
	})

	// Index headers track every key of a prefix, the ones the caller cannot
	// read included: logged, not asserted (Consul's own ACLs do the same).
	t.Run("index header of a filtered listing", func(t *testing.T) {
		_, h1, _ := hcoCall(t, e.web, "GET", e.front+"/v1/kv/app/?recurse", "")
		e.put(t, "/v1/kv/app/secret/s3", "S3CRET-THREE")
		_, h2, _ := hcoCall(t, e.web, "GET", e.front+"/v1/kv/app/?recurse", "")
		if h1.Get("X-Consul-Index") != h2.Get("X-Consul-Index") {
			t.Logf("note: X-Consul-Index of web's filtered app/ listing moved from %s to %s on a write to app/secret/s3",
				h1.Get("X-Consul-Index"), h2.Get("X-Consul-Index"))
		}
	})
}
