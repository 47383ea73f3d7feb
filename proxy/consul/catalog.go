package consul

import (
	"net/http"
	"strings"

	"github.com/storegate/storegate/gate"
)

// pathName is what Consul reads as the name in a prefix route: the decoded
// path after prefix (slashes included), as in catalog_endpoint.go.
func pathName(q *request, prefix string) string {
	return strings.TrimPrefix(q.r.URL.Path, prefix)
}

func serviceRead(name string) gate.Op {
	return gate.Op{Resource: gate.ResourceService, Action: gate.ActionRead, Service: &gate.Service{Name: name}}
}

// everyService is a read of services of any name: no service is named, so
// only intentions without `services` match it.
func everyService(r gate.Resource) gate.Op {
	return gate.Op{Resource: r, Action: gate.ActionRead}
}

var nodeRead = gate.Op{Resource: gate.ResourceNode, Action: gate.ActionRead}

// catalogServices decodes GET /v1/catalog/services: the names and tags of
// every service.
func catalogServices(_ *Server, q *request) error {
	q.ask(everyService(gate.ResourceService))
	return nil
}

// catalogService decodes GET /v1/catalog/service/NAME: the instances of one
// service (with the addresses of their nodes).
func catalogService(_ *Server, q *request) error {
	name := pathName(q, "/v1/catalog/service/")
	if name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing service name"}
	}
	q.ask(serviceRead(name))
	return nil
}

// catalogNodes decodes GET /v1/catalog/nodes.
func catalogNodes(_ *Server, q *request) error {
	q.ask(nodeRead)
	return nil
}

// catalogNode decodes GET /v1/catalog/node/NODE: the node and every service
// on it, whatever its name.
func catalogNode(_ *Server, q *request) error {
	q.ask(nodeRead)
	q.ask(everyService(gate.ResourceService))
	return nil
}
