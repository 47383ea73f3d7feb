package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileConsulTokenSpellings: class 8, credentials, against an agent
// with ACLs on (default deny). A caller's token in every spelling Consul
// reads (agent/http.go parseTokenInternal: the token parameter by its
// decoded name, X-Consul-Token, Authorization with a Bearer scheme in any
// case) is stripped: a bogus one reaching Consul would get "ACL not found",
// a management token would let the caller act as it. The gateway's own
// token is used instead, and a query Go cannot read is refused, not
// forwarded with the unreadable part dropped.
func TestHostileConsulTokenSpellings(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	const root = "3e1b2f7c-0d5a-4b8e-9c41-6f2a8d9e0b17"
	agent := startConsul(t, "-hcl", `acl { enabled = true default_policy = "deny" tokens { initial_management = "`+root+`" } }`)
	tokenFile := filepath.Join(t.TempDir(), "consul-token")
	if err := os.WriteFile(tokenFile, []byte(root+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, gw := gatewayWithConsul(t, p, ec, agent, "", consulTokens{file: tokenFile})
	c := httpsAs(t, p, "admin")
	direct := "http://" + agent.httpAddr

	// The agent itself: a bogus token in each spelling is refused.
	const bogus = "00000000-0000-0000-0000-000000000000"
	if code, body := hctDo(t, http.DefaultClient, "GET", direct+"/v1/kv/acl?token="+bogus, nil); code != http.StatusForbidden || !strings.Contains(body, "ACL not found") {
		t.Fatalf("the agent with a bogus token: %d %s", code, body)
	}
	if code, body := call(t, c, "PUT", gw+"/v1/kv/acl/x", "1"); code != http.StatusOK {
		t.Fatalf("PUT through the gateway: %d %s", code, body)
	}

	spellings := []struct {
		name   string
		query  string
		header [2]string
	}{
		{"query token", "token=" + bogus, [2]string{}},
		{"query %74oken", "%74oken=" + bogus, [2]string{}},
		{"query %74%6F%6B%65%6E", "%74%6F%6B%65%6E=" + bogus, [2]string{}},
		{"query t%6fken, after another", "recurse=&t%6fken=" + bogus, [2]string{}},
		{"X-Consul-Token", "", [2]string{"X-Consul-Token", bogus}},
		{"x-consul-token", "", [2]string{"x-consul-token", bogus}},
		{"X-CONSUL-TOKEN", "", [2]string{"X-CONSUL-TOKEN", bogus}},
		{"Authorization: Bearer", "", [2]string{"Authorization", "Bearer " + bogus}},
		{"authorization: bearer", "", [2]string{"authorization", "bearer " + bogus}},
		{"Authorization: BEARER, two spaces", "", [2]string{"Authorization", "BEARER  " + bogus}},
		{"Authorization: Bearer, a second word", "", [2]string{"Authorization", "Bearer " + bogus + " extra"}},
	}
	for _, sp := range spellings {
		for _, m := range []struct{ method, path, body string }{
			{"GET", "/v1/kv/acl/x", ""},
			{"PUT", "/v1/kv/acl/y", "2"},
			{"GET", "/v1/catalog/services", ""},
		} {
			url := gw + m.path
			if sp.query != "" {
				url += "?" + sp.query
			}
			var h http.Header
			if sp.header[0] != "" {
				h = http.Header{}
				h[sp.header[0]] = []string{sp.header[1]} // as sent, not canonicalized
			}
			code, body := hctDo(t, c, m.method, url, h, m.body)
			if code != http.StatusOK || strings.Contains(body, "ACL not found") {
				t.Errorf("%s, %s %s: %d %s (the caller's token reached Consul?)", sp.name, m.method, m.path, code, body)
			}
		}
	}
	// What the PUTs wrote, read in Consul with the root token: the
	// gateway's identity acted, not the caller's token.
	if code, body := hctDo(t, http.DefaultClient, "GET", direct+"/v1/kv/acl/y?raw&token="+root, nil); code != http.StatusOK || body != "2" {
		t.Errorf("acl/y in Consul: %d %q", code, body)
	}

	// Malformed queries are refused before anything reaches Consul.
	for _, q := range []string{"token=%zz", "%7=1", "a=1;token=" + bogus, "recurse;x"} {
		code, body := hctDo(t, c, "PUT", gw+"/v1/kv/acl/bad?"+q, nil, "x")
		if code != http.StatusBadRequest {
			t.Errorf("PUT with query %q: %d %s, want 400", q, code, body)
		}
	}
	if code, _ := hctDo(t, http.DefaultClient, "GET", direct+"/v1/kv/acl/bad?token="+root, nil); code != http.StatusNotFound {
		t.Errorf("acl/bad in Consul: %d, want 404 (a refused PUT wrote it)", code)
	}
}

// hctDo sends a request with headers set exactly as given.
func hctDo(t *testing.T, c *http.Client, method, url string, h http.Header, body ...string) (int, string) {
	t.Helper()
	var b string
	if len(body) > 0 {
		b = body[0]
	}
	req, err := http.NewRequest(method, url, strings.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := new(strings.Builder)
	_, _ = io.Copy(out, resp.Body)
	return resp.StatusCode, out.String()
}
