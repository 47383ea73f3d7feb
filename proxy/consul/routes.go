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
	{pattern: "GET /v1/status/leader", name: "GET /v1/status/leader", decode: statusRead},
	{pattern: "GET /v1/status/peers", name: "GET /v1/status/peers", decode: statusRead},
}
