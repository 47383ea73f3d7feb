package consul

import "github.com/storegate/storegate/gate"

// statusRead decodes /v1/status/leader and /v1/status/peers.
func statusRead(_ *Server, q *request) error {
	q.ops = append(q.ops, gate.Op{Resource: gate.ResourceStatus, Action: gate.ActionRead})
	return nil
}
