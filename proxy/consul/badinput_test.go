package consul

import (
	"strings"
	"testing"
)

// TestBadInput: malformed and odd requests get a clear error in Consul's
// terms and never reach the agent, or reach it exactly as the gateway read
// them; nothing crashes.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("x", 512<<10+1)
	cases := []struct {
		name, who, method, path, body string
		code                          int
		want                          string
		reaches                       string // "METHOD /path" the agent must see once, or "" for nothing
	}{
		{"malformed registration JSON", "web", "PUT", "/v1/agent/service/register", `{"Name":"web-a",`, 400, "Request decode failed", ""},
		{"registration with an unknown field", "web", "PUT", "/v1/agent/service/register", `{"Name":"web-a","Bogus":1}`, 400, "Request decode failed", ""},
		// encoding/json matches names without case and keeps the last, as
		// Consul's decoder does: both read "db", and policy judges "db". (The
		// ID is looked up for a takeover only once the registration itself
		// is allowed: nothing reaches the agent.)
		{"registration naming the service twice", "web", "PUT", "/v1/agent/service/register", `{"Name":"web-a","name":"db"}`, 403,
			`register service "db"`, ""},
		{"malformed txn JSON", "web", "PUT", "/v1/txn", `[{"KV":`, 400, "Failed to parse body", ""},
		{"value over Consul's limit", "web", "PUT", "/v1/kv/app/big", big, 413, "Request body too large", ""},
		{"cas with acquire", "web", "PUT", "/v1/kv/app/x?cas=0&acquire=abc", "v", 400, "Conflicting flags", ""},
		{"repeated recurse", "web", "GET", "/v1/kv/app/?recurse&recurse", "", 400, "is repeated", ""},
		{"repeated cas", "web", "PUT", "/v1/kv/app/x?cas=0&cas=5", "v", 400, "is repeated", ""},
		{"bad flags", "web", "PUT", "/v1/kv/app/x?flags=-1", "v", 400, "invalid flags", ""},
		{"empty key", "web", "GET", "/v1/kv/", "", 400, "Missing key name", ""},
		{"empty key put", "admin", "PUT", "/v1/kv/", "v", 400, "Missing key name", ""},
		// An empty key with recurse is the whole store, which web may read
		// only in part: it is forwarded and the answer narrowed to what web
		// may read (nothing yet: Consul's own 404).
		{"empty key with recurse, narrowed", "web", "GET", "/v1/kv/?recurse", "", 404, "", "GET /v1/kv/"},
		// %2F is a slash to Consul (it reads the decoded path): policy sees
		// the same key, /app/a/b, and allows it.
		{"encoded slash", "web", "PUT", "/v1/kv/app%2Fenc", "v", 200, "true", "PUT /v1/kv/app/enc"},
		{"encoded slash outside /app", "web", "PUT", "/v1/kv/other%2Fx", "v", 403, "Permission denied", ""},
		// The mux cleans .. out of the path before the front reads the key:
		// policy judges /other/x, and that is the key forwarded.
		{"dot-dot escaping /app", "web", "PUT", "/v1/kv/app/../other/x", "v", 403, `write kv "/other/x"`, ""},
		{"dot-dot, allowed", "admin", "PUT", "/v1/kv/app/../other/y", "v", 200, "true", "PUT /v1/kv/other/y"},
		{"unknown route", "web", "GET", "/v1/acl/tokens", "", 403, "is not a route storegate forwards", ""},
		{"unknown method on a route", "web", "POST", "/v1/kv/app/x", "v", 403, "is not a route storegate forwards", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := 0
			if c.reaches != "" {
				before = e.rec.count(c.reaches)
			}
			seen := len(e.rec.all())
			code, out := e.do(t, c.who, c.method, c.path, []byte(c.body))
			if code != c.code || !strings.Contains(out, c.want) {
				t.Errorf("%s %s = %d %.200q; want %d %q", c.method, c.path, code, out, c.code, c.want)
			}
			switch {
			case c.reaches != "" && e.rec.count(c.reaches) != before+1:
				t.Errorf("the agent did not see %s once: %v", c.reaches, e.rec.all()[seen:])
			case c.reaches == "" && len(e.rec.all()) != seen:
				t.Errorf("forwarded: %v", e.rec.all()[seen:])
			}
		})
	}
}
