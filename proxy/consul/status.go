package consul

import (
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/storegate/storegate/gate"
)

// statusRead decodes /v1/status/leader and /v1/status/peers.
func statusRead(_ *Server, q *request) error {
	q.ask(gate.Op{Resource: gate.ResourceStatus, Action: gate.ActionRead})
	return nil
}

// Ready reports whether the agent answers and knows a leader (its
// /v1/status/leader is not ""), for the gateway's /readyz.
func (s *Server) Ready(ctx context.Context) error {
	var out bytes.Buffer
	if err := s.upstream(ctx, http.MethodGet, "/v1/status/leader", "", nil, &out); err != nil {
		return err
	}
	if l := bytes.TrimSpace(out.Bytes()); len(l) == 0 || bytes.Equal(l, []byte(`""`)) {
		return errors.New("the agent knows no leader")
	}
	return nil
}
