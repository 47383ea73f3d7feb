package consul

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

// agentCheckRegister decodes PUT /v1/agent/check/register like a service
// registration: strictly, with Consul's own type, forwarded re-encoded. The
// op names the service the check is attached to (read from the agent), so
// intentions scoped by service name apply, and the check's kind (the
// shipped policy refuses script checks).
func (s *Server) agentCheckRegister(q *request) error {
	var reg api.AgentCheckRegistration
	if err := decodeCanonical(q, &reg, "check"); err != nil {
		return err
	}
	if reg.Name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing check name"}
	}

	svc := &gate.Service{ID: reg.ServiceID, Checks: []string{agentCheckKind(&reg.AgentServiceCheck)}}
	if reg.ServiceID != "" {
		name, err := s.serviceName(q, reg.ServiceID)
		if err != nil {
			return err
		}
		svc.Name = name
	}
	i := q.ask(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister, Service: svc,
		Value: q.body, ValueSize: len(q.body)})
	if s.gate.Plugins() {
		s.carry(q, i, q.r, registrationRewrite(&api.AgentCheckRegistration{}, false))
	}
	return nil
}

// agentCheckUpdate decodes the routes that act on a registered check by ID:
// pass, warn, fail, update (writes) and deregister.
func (s *Server) agentCheckUpdate(q *request) error {
	rest := strings.TrimPrefix(q.r.URL.Path, "/v1/agent/check/")
	verb, id, _ := strings.Cut(rest, "/")
	if id == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing check ID"}
	}
	act := gate.ActionWrite
	if verb == "deregister" {
		act = gate.ActionDeregister
	}
	var checks map[string]api.AgentCheck
	var out bytes.Buffer
	if err := s.upstream(q.r.Context(), http.MethodGet, "/v1/agent/checks", "", nil, &out); err != nil {
		return unavailable("listing the agent's checks", err)
	}
	if err := json.Unmarshal(out.Bytes(), &checks); err != nil {
		return unavailable("reading the agent's checks", err)
	}
	svc := &gate.Service{}
	if c, ok := checks[id]; ok {
		svc.Name, svc.ID = c.ServiceName, c.ServiceID
	}
	q.ask(gate.Op{Resource: gate.ResourceCheck, Action: act, Service: svc})
	return nil
}

// serviceName reads a registered service's name from the agent ("" when
// the agent does not know the ID).
func (s *Server) serviceName(q *request, id string) (string, error) {
	var out bytes.Buffer
	switch err := s.upstream(q.r.Context(), http.MethodGet, "/v1/agent/service/"+url.PathEscape(id), "", nil, &out); {
	case err == errNotFound:
		return "", nil
	case err != nil:
		return "", unavailable("looking up service "+id, err)
	}
	var cur api.AgentService
	if err := json.Unmarshal(out.Bytes(), &cur); err != nil {
		return "", unavailable("reading service "+id, err)
	}
	return cur.Service, nil
}
