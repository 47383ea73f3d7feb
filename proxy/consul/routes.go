package consul

// routes is the route table: what the front forwards, and how each route
// decodes into ops. Anything else is refused. Each decoder lives in the
// file of its Consul endpoint family (kv.go, status.go, ...).
var routes = []route{
	{pattern: "GET /v1/kv/", name: "GET /v1/kv/", decode: (*Server).kvGet},
	{pattern: "PUT /v1/kv/", name: "PUT /v1/kv/", decode: (*Server).kvPut},
	{pattern: "DELETE /v1/kv/", name: "DELETE /v1/kv/", decode: (*Server).kvDelete},
	{pattern: "PUT /v1/session/create", name: "PUT /v1/session/create", decode: (*Server).sessionCreate},
	{pattern: "PUT /v1/session/renew/", name: "PUT /v1/session/renew/", decode: (*Server).sessionRenew},
	{pattern: "PUT /v1/session/destroy/", name: "PUT /v1/session/destroy/", decode: (*Server).sessionDestroy},
	{pattern: "GET /v1/session/info/", name: "GET /v1/session/info/", decode: (*Server).sessionRead},
	{pattern: "GET /v1/session/node/", name: "GET /v1/session/node/", decode: (*Server).sessionRead},
	{pattern: "GET /v1/session/list", name: "GET /v1/session/list", decode: (*Server).sessionRead},
	{pattern: "PUT /v1/txn", name: "PUT /v1/txn", decode: (*Server).txn},
	{pattern: "GET /v1/catalog/services", name: "GET /v1/catalog/services", decode: catalogServices},
	{pattern: "GET /v1/catalog/service/", name: "GET /v1/catalog/service/", decode: catalogService},
	{pattern: "GET /v1/catalog/nodes", name: "GET /v1/catalog/nodes", decode: catalogNodes},
	{pattern: "GET /v1/catalog/node/", name: "GET /v1/catalog/node/", decode: catalogNode},
	{pattern: "GET /v1/health/service/", name: "GET /v1/health/service/", decode: healthService},
	{pattern: "GET /v1/health/checks/", name: "GET /v1/health/checks/", decode: healthChecks},
	{pattern: "GET /v1/health/state/", name: "GET /v1/health/state/", decode: healthState},
	{pattern: "GET /v1/health/node/", name: "GET /v1/health/node/", decode: healthNode},
	{pattern: "GET /v1/agent/self", name: "GET /v1/agent/self", decode: agentSelf},
	{pattern: "GET /v1/agent/members", name: "GET /v1/agent/members", decode: agentMembers},
	{pattern: "GET /v1/agent/services", name: "GET /v1/agent/services", decode: agentServices},
	{pattern: "GET /v1/agent/service/", name: "GET /v1/agent/service/", decode: agentService},
	{pattern: "PUT /v1/agent/service/register", name: "PUT /v1/agent/service/register", decode: (*Server).agentServiceRegister},
	{pattern: "PUT /v1/agent/service/deregister/", name: "PUT /v1/agent/service/deregister/", decode: (*Server).agentServiceDeregister},
	{pattern: "PUT /v1/agent/check/register", name: "PUT /v1/agent/check/register", decode: (*Server).agentCheckRegister},
	{pattern: "PUT /v1/agent/check/deregister/", name: "PUT /v1/agent/check/deregister/", decode: (*Server).agentCheckUpdate},
	{pattern: "PUT /v1/agent/check/pass/", name: "PUT /v1/agent/check/pass/", decode: (*Server).agentCheckUpdate},
	{pattern: "PUT /v1/agent/check/warn/", name: "PUT /v1/agent/check/warn/", decode: (*Server).agentCheckUpdate},
	{pattern: "PUT /v1/agent/check/fail/", name: "PUT /v1/agent/check/fail/", decode: (*Server).agentCheckUpdate},
	{pattern: "PUT /v1/agent/check/update/", name: "PUT /v1/agent/check/update/", decode: (*Server).agentCheckUpdate},
	{pattern: "GET /v1/status/leader", name: "GET /v1/status/leader", decode: statusRead},
	{pattern: "GET /v1/status/peers", name: "GET /v1/status/peers", decode: statusRead},
}
