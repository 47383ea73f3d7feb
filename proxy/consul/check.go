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
// registration: strictly, with Consul's own type, forwarded re-encoded (HTTP
// checks with redirects off). The op names the service the check is
// attached to, read from the agent (name, address and port: the check's
// target is judged against them), and says nothing of it when denied; a
// check with no service is a node check, an op with no service name. A
// check ID that already exists is, once the registration is allowed, an op
// on the check's current service as well.
func (s *Server) agentCheckRegister(q *request) error {
	var reg api.AgentCheckRegistration
	if err := decodeCanonical(q, &reg, "check"); err != nil {
		return err
	}
	if reg.Name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing check name"}
	}
	agent, err := s.agentPorts(q.r.Context())
	if err != nil {
		return unavailable("reading the Consul agent's ports", err)
	}
	if err := noRedirects(q); err != nil {
		return err
	}
	id := reg.ID
	if id == "" {
		id = reg.Name // Consul's default
	}
	svc := &gate.Service{ID: reg.ServiceID}
	if reg.ServiceID != "" {
		cur, err := s.agentServiceByID(q, reg.ServiceID)
		if err != nil {
			return err
		}
		if cur != nil {
			svc.Name, svc.Kind, svc.Tags, svc.Meta, svc.Address, svc.Port = cur.Service, string(cur.Kind), cur.Tags, cur.Meta, cur.Address, cur.Port
			svc.TaggedAddresses = tagged(cur.TaggedAddresses)
		}
	}
	var within *gate.Service // a node check has no service to be its own
	if reg.ServiceID != "" {
		within = svc
	}
	svc.Checks = s.checksOf(&reg.AgentServiceCheck, id, reg.Name, within, true, agent)
	op := gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister, Service: svc,
		Value: q.body, ValueSize: len(q.body)}
	var i int
	if reg.ServiceID != "" {
		i = q.askUnseen(op)
	} else {
		i = q.ask(op)
	}
	if s.gate.Plugins() {
		s.carry(q, i, q.r, registrationRewrite(&api.AgentCheckRegistration{}, false))
	}
	s.checkTakeover(q, []*gate.Service{svc})
	return nil
}

// agentCheckUpdate decodes the routes that act on a registered check by ID:
// pass, warn, fail, update (writes) and deregister. The check's service is
// read from the agent; a denial says nothing of it.
// checkUpdate is the body of PUT /v1/agent/check/update/:id, as Consul's
// agent endpoint reads it.
type checkUpdate struct {
	Status string
	Output string
}

func (s *Server) agentCheckUpdate(q *request) error {
	rest := strings.TrimPrefix(q.r.URL.Path, "/v1/agent/check/")
	verb, id, _ := strings.Cut(rest, "/")
	if id == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing check ID"}
	}
	act := gate.ActionWrite
	switch verb {
	case "deregister":
		act = gate.ActionDeregister
	case "update":
		// The one check route whose body Consul acts on (the new status
		// and output): read whole and strictly, and forwarded as decoded.
		// Without one, none is sent and Consul refuses the update itself.
		if q.r.ContentLength != 0 {
			if err := decodeCanonical(q, &checkUpdate{}, "check update"); err != nil {
				return err
			}
		}
	}
	checks, err := s.agentChecks(q.r.Context())
	if err != nil {
		return err
	}
	svc := &gate.Service{}
	if c, ok := checks[id]; ok {
		svc.Name, svc.ID = c.ServiceName, c.ServiceID
	}
	q.askUnseen(gate.Op{Resource: gate.ResourceCheck, Action: act, Service: svc})
	return nil
}

// agentServiceByID reads a registered service from the agent (nil when the
// agent does not know the ID).
func (s *Server) agentServiceByID(q *request, id string) (*api.AgentService, error) {
	var out bytes.Buffer
	switch err := s.upstream(q.r.Context(), http.MethodGet, "/v1/agent/service/"+url.PathEscape(id), "", nil, &out); {
	case err == errNotFound:
		return nil, nil
	case err != nil:
		return nil, unavailable("looking up a service", err)
	}
	var cur api.AgentService
	if err := json.Unmarshal(out.Bytes(), &cur); err != nil {
		return nil, unavailable("reading a service", err)
	}
	return &cur, nil
}
