package consul

import (
	"github.com/storegate/storegate/gate"
)

// agentSelf decodes GET /v1/agent/self and agentMembers GET
// /v1/agent/members. Both describe nodes: the agent's own configuration,
// member and coordinates (Consul asks agent:read), or every member of the
// cluster with its address and tags. Neither names a node policy could
// match, so both are a node read with no target.
func agentSelf(_ *Server, q *request) error {
	q.ask(nodeRead)
	return nil
}

func agentMembers(_ *Server, q *request) error {
	q.ask(nodeRead)
	return nil
}

// agentServices decodes GET /v1/agent/services: every service registered on
// the agent.
func agentServices(_ *Server, q *request) error {
	q.ask(everyService(gate.ResourceService))
	return nil
}

// agentService decodes GET /v1/agent/service/ID. The path names the
// service's ID, not its name, and the name is only known after Consul
// answers: the op carries the ID alone, which only intentions without
// `services` match.
func agentService(_ *Server, q *request) error {
	q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionRead,
		Service: &gate.Service{ID: pathName(q, "/v1/agent/service/")}})
	return nil
}
