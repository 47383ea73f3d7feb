package consul

import (
	"encoding/json"
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

// TestAgentRegistrationTakeover: re-registering an ID that belongs to a
// service of another name replaces that instance, so it needs deregister
// on the existing service too; re-registering one's own ID does not.
func TestAgentRegistrationTakeover(t *testing.T) {
	e := newEnv(t)
	steps := []struct {
		name, who, body string
		code            int
		want            string
	}{
		{"admin registers api with ID shared-1", "admin", `{"Name":"api","ID":"shared-1","Port":81}`, 200, ""},
		{"web may not take shared-1 over", "web", `{"Name":"web-a","ID":"shared-1","Port":82}`, 403, "Permission denied: "},
		{"web registers web-a", "web", `{"Name":"web-a","ID":"web-a-1","Port":83}`, 200, ""},
		{"web re-registers its own ID", "web", `{"Name":"web-a","ID":"web-a-1","Port":84,"Tags":["v2"]}`, 200, ""},
		{"admin may take web-a-1 over", "admin", `{"Name":"api","ID":"web-a-1","Port":85}`, 200, ""},
	}
	for _, st := range steps {
		code, out := e.do(t, st.who, http.MethodPut, "/v1/agent/service/register", []byte(st.body))
		if code != st.code || !strings.Contains(out, st.want) {
			t.Fatalf("%s: %d %q; want %d %q", st.name, code, out, st.code, st.want)
		}
	}
	// shared-1 is still api's, on its own port.
	code, out := e.do(t, "admin", http.MethodGet, "/v1/agent/service/shared-1", nil)
	var cur struct {
		Service string
		Port    int
	}
	if err := json.Unmarshal([]byte(out), &cur); code != 200 || err != nil || cur.Service != "api" || cur.Port != 81 {
		t.Errorf("shared-1 after the refused takeover: %d %s (%v)", code, out, err)
	}
}
