package consul

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

const maxRegistrationBody = 512 << 10

// agentServiceRegister decodes PUT /v1/agent/service/register. The body is
// decoded with Consul's own type and forwarded re-encoded, so that Consul
// reads exactly what policy judged: fields the gateway does not know
// (Consul's snake_case aliases included) are refused rather than passed on
// for Consul to read differently. What a caller may register — name, tags,
// meta, address, port, check kinds (script checks!) — is a policy question.
func (s *Server) agentServiceRegister(q *request) error {
	body, err := io.ReadAll(io.LimitReader(q.r.Body, maxRegistrationBody+1))
	if err != nil || len(body) > maxRegistrationBody {
		return httpError{code: http.StatusRequestEntityTooLarge, msg: "storegate: registration body unreadable or over 512 KiB"}
	}
	var reg api.AgentServiceRegistration
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reg); err != nil {
		return httpError{code: http.StatusBadRequest, msg: "Request decode failed: " + err.Error()}
	}
	if reg.Name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing service name"}
	}
	canonical, err := json.Marshal(&reg)
	if err != nil {
		return err
	}
	q.r.Body, q.r.ContentLength = io.NopCloser(bytes.NewReader(canonical)), int64(len(canonical))
	q.r.Header.Set("Content-Type", "application/json")

	svc := &gate.Service{Name: reg.Name, ID: reg.ID, Tags: reg.Tags, Meta: reg.Meta, Address: reg.Address, Port: reg.Port}
	if svc.ID == "" {
		svc.ID = reg.Name // Consul's own default
	}
	for _, c := range append(api.AgentServiceChecks{reg.Check}, reg.Checks...) {
		if c != nil {
			svc.Checks = append(svc.Checks, agentCheckKind(c))
		}
	}
	q.ops = append(q.ops, gate.Op{Resource: gate.ResourceService, Action: gate.ActionRegister, Service: svc})
	return nil
}

// agentCheckKind names a registration check's kind as policy sees it.
func agentCheckKind(c *api.AgentServiceCheck) string {
	switch {
	case len(c.Args) > 0:
		return "script"
	case c.DockerContainerID != "":
		return "docker"
	case c.HTTP != "":
		return "http"
	case c.TCP != "":
		return "tcp"
	case c.UDP != "":
		return "udp"
	case c.GRPC != "":
		return "grpc"
	case c.H2PING != "":
		return "h2ping"
	case c.AliasService != "" || c.AliasNode != "":
		return "alias"
	case c.TTL != "":
		return "ttl"
	}
	return "unknown"
}

// agentServiceDeregister decodes PUT /v1/agent/service/deregister/ID. The
// path names only the ID; the service's name, which policy judges, is read
// from the agent first. An unknown ID keeps only its ID, which only
// intentions without `services` match.
func (s *Server) agentServiceDeregister(q *request) error {
	id := pathName(q, "/v1/agent/service/deregister/")
	if id == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing service ID"}
	}
	svc := &gate.Service{ID: id}
	var out bytes.Buffer
	switch err := s.upstream(q.r.Context(), http.MethodGet, "/v1/agent/service/"+url.PathEscape(id), "", nil, &out); {
	case err == nil:
		var cur api.AgentService
		if err := json.Unmarshal(out.Bytes(), &cur); err != nil {
			return fmt.Errorf("storegate: reading service %s: %w", id, err)
		}
		svc.Name, svc.Tags, svc.Meta, svc.Address, svc.Port = cur.Service, cur.Tags, cur.Meta, cur.Address, cur.Port
	case err != errNotFound:
		return httpError{code: http.StatusBadGateway, msg: "storegate: looking up service " + id + ": " + err.Error()}
	}
	q.ops = append(q.ops, gate.Op{Resource: gate.ResourceService, Action: gate.ActionDeregister, Service: svc})
	return nil
}
