package consul

import (
	"net/http"
	"strings"
	"testing"
)

func TestReadRoutes(t *testing.T) {
	e := newEnv(t)
	for _, svc := range []string{`{"Name":"web-api","ID":"web-api","Port":8080}`, `{"Name":"db","ID":"db","Port":5432}`} {
		if code, out := e.do(t, "", http.MethodPut, "/v1/agent/service/register", []byte(svc)); code != http.StatusOK {
			t.Fatalf("registering %s: %d %s", svc, code, out)
		}
	}
	const denied = "Permission denied: "
	cases := []struct {
		who, path string
		want      int
		wantBody  string
	}{
		{"web", "/v1/catalog/service/web-api", http.StatusOK, `"ServiceName": "web-api"`},
		{"web", "/v1/catalog/service/db", http.StatusForbidden, denied + `no intention allows spiffe://example.org/web to read service "db"`},
		{"web", "/v1/health/service/web-api", http.StatusOK, `"Service": "web-api"`},
		{"web", "/v1/health/service/db", http.StatusForbidden, denied},
		{"web", "/v1/health/checks/web-api", http.StatusOK, "["},
		{"web", "/v1/health/checks/db", http.StatusForbidden, denied},
		{"web", "/v1/catalog/service/", http.StatusBadRequest, "Missing service name"},
		// Listings of every service, nodes, the agent: only intentions
		// without `services` allow them.
		{"web", "/v1/catalog/services", http.StatusForbidden, denied},
		{"admin", "/v1/catalog/services", http.StatusOK, `"web-api"`},
		{"web", "/v1/agent/services", http.StatusForbidden, denied},
		{"admin", "/v1/agent/services", http.StatusOK, `"db"`},
		{"web", "/v1/agent/service/web-api", http.StatusForbidden, denied}, // an ID, not a name
		{"admin", "/v1/agent/service/web-api", http.StatusOK, `"Service": "web-api"`},
		{"web", "/v1/catalog/nodes", http.StatusForbidden, denied},
		{"admin", "/v1/catalog/nodes", http.StatusOK, testNode},
		{"web", "/v1/catalog/node/" + testNode, http.StatusForbidden, denied},
		{"admin", "/v1/catalog/node/" + testNode, http.StatusOK, `"db"`},
		{"web", "/v1/health/node/" + testNode, http.StatusForbidden, denied},
		{"admin", "/v1/health/node/" + testNode, http.StatusOK, "serfHealth"},
		{"web", "/v1/health/state/any", http.StatusForbidden, denied},
		{"admin", "/v1/health/state/passing", http.StatusOK, "serfHealth"},
		{"web", "/v1/agent/self", http.StatusForbidden, denied},
		{"admin", "/v1/agent/self", http.StatusOK, `"NodeName": "` + testNode + `"`},
		{"web", "/v1/agent/members", http.StatusForbidden, denied},
		{"admin", "/v1/agent/members", http.StatusOK, testNode},
		// Not routes storegate forwards.
		{"admin", "/v1/acl/tokens", http.StatusForbidden, denied + "GET /v1/acl/tokens is not a route storegate forwards"},
		{"admin", "/v1/catalog/datacenters", http.StatusForbidden, denied + "GET /v1/catalog/datacenters is not a route storegate forwards"},
	}
	for _, c := range cases {
		t.Run(c.who+" "+c.path, func(t *testing.T) {
			code, out := e.do(t, c.who, http.MethodGet, c.path, nil)
			if code != c.want || !strings.Contains(out, c.wantBody) {
				t.Errorf("got %d %.300q, want %d containing %q", code, out, c.want, c.wantBody)
			}
		})
	}
	// A route the front does not forward.
	code, out := e.do(t, "admin", http.MethodGet, "/v1/operator/raft/configuration", nil)
	if code != http.StatusForbidden || !strings.HasPrefix(out, denied) {
		t.Errorf("GET /v1/operator/raft/configuration: %d %q, want 403", code, out)
	}
}
