package consul

import (
	"net/http"

	"github.com/storegate/storegate/gate"
)

// healthService decodes GET /v1/health/service/NAME: the instances of one
// service with their nodes and checks.
func healthService(_ *Server, q *request) error {
	name := pathName(q, "/v1/health/service/")
	if name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing service name"}
	}
	q.ask(serviceRead(name))
	return nil
}

// healthChecks decodes GET /v1/health/checks/NAME: the checks of one
// service.
func healthChecks(_ *Server, q *request) error {
	name := pathName(q, "/v1/health/checks/")
	if name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing service name"}
	}
	q.ask(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRead, Service: &gate.Service{Name: name}})
	return nil
}

// healthState decodes GET /v1/health/state/STATE: the checks in one state
// of every node and service.
func healthState(_ *Server, q *request) error {
	q.ask(everyService(gate.ResourceCheck))
	q.ask(nodeRead)
	return nil
}

// healthNode decodes GET /v1/health/node/NODE: the node's checks and those
// of every service on it.
func healthNode(_ *Server, q *request) error {
	q.ask(nodeRead)
	q.ask(everyService(gate.ResourceCheck))
	return nil
}
