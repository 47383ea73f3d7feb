package consul

import (
	"net/http"
	"strings"
	"testing"
)

// TestCatalogRegistration: catalog register/deregister are judged by node
// and by service name; bodies Consul would read differently are refused.
func TestCatalogRegistration(t *testing.T) {
	e := newEnv(t)
	const denied = "Permission denied: "
	cases := []struct {
		name, who, method, path, body string
		code                          int
		want                          string
	}{
		{"admin registers a node and service", "admin", http.MethodPut, "/v1/catalog/register",
			`{"Node":"ext-1","Address":"10.0.0.1","Service":{"Service":"web-ext","ID":"web-ext-1","Port":80}}`, 200, "true"},
		{"web may not register nodes", "web", http.MethodPut, "/v1/catalog/register",
			`{"Node":"ext-2","Address":"10.0.0.2","Service":{"Service":"web-ext","Port":80}}`, 403, denied},
		{"unknown field refused", "admin", http.MethodPut, "/v1/catalog/register",
			`{"Node":"ext-3","Address":"10.0.0.3","node_meta":{"a":"b"}}`, 400, "Request decode failed"},
		{"missing address", "admin", http.MethodPut, "/v1/catalog/register", `{"Node":"ext-3"}`, 400, "Must provide node and address"},
		{"web deregisters a web service by ID", "web", http.MethodPut, "/v1/catalog/deregister",
			`{"Node":"ext-1","ServiceID":"web-ext-1"}`, 200, "true"},
		{"web may not deregister a node", "web", http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-1"}`, 403, denied},
		{"admin deregisters the node", "admin", http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-1"}`, 200, "true"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := e.do(t, c.who, c.method, c.path, []byte(c.body))
			if code != c.code || !strings.Contains(out, c.want) {
				t.Errorf("%s %s %s = %d %q; want %d %q", c.method, c.path, c.body, code, out, c.code, c.want)
			}
		})
	}
	// The service web deregistered is gone from the catalog.
	if code, out := e.do(t, "", http.MethodGet, "/v1/catalog/service/web-ext", nil); code != 200 || strings.Contains(out, "web-ext-1") {
		t.Errorf("catalog after deregister: %d %s", code, out)
	}
}
