package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	var reg api.AgentServiceRegistration
	if err := decodeCanonical(q, &reg, "registration"); err != nil {
		return err
	}
	if reg.Name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing service name"}
	}

	svc := &gate.Service{Name: reg.Name, ID: reg.ID, Tags: reg.Tags, Meta: reg.Meta, Address: reg.Address, Port: reg.Port}
	if svc.ID == "" {
		svc.ID = reg.Name // Consul's own default
	}
	for _, c := range append(api.AgentServiceChecks{reg.Check}, reg.Checks...) {
		if c != nil {
			svc.Checks = append(svc.Checks, agentCheckKind(c))
		}
	}
	i := q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionRegister, Service: svc,
		Value: q.body, ValueSize: len(q.body)})
	if s.gate.Plugins() {
		s.carry(q, i, q.r, registrationRewrite(&api.AgentServiceRegistration{}, true))
	}
	s.takeover(q, svc, "", func(ctx context.Context, out *bytes.Buffer) (*api.AgentService, error) {
		err := s.upstream(ctx, http.MethodGet, "/v1/agent/service/"+url.PathEscape(svc.ID), "", nil, out)
		if err != nil {
			return nil, err
		}
		var cur api.AgentService
		return &cur, json.Unmarshal(out.Bytes(), &cur)
	})
	return nil
}

// registrationRewrite writes back a registration a plugin rewrote: the new
// JSON is decoded as strictly as the caller's was, into Consul's own type,
// and forwarded re-encoded. (The name policy judged cannot change: a plugin
// that renames the service is refused.)
func registrationRewrite(into any, sameName bool) func(q *request, op *gate.Op) error {
	return func(q *request, op *gate.Op) error {
		if bytes.Equal(op.Value, q.body) {
			return nil
		}
		dec := json.NewDecoder(bytes.NewReader(op.Value))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			return refused("a plugin's rewritten registration does not decode: " + err.Error())
		}
		if sameName {
			var name struct{ Name string }
			if json.Unmarshal(op.Value, &name) != nil || name.Name != op.Service.Name {
				return refused("a plugin may not rename the service it registers")
			}
		}
		b, err := json.Marshal(into)
		if err != nil {
			return err
		}
		setBody(q, b)
		return nil
	}
}

// takeover derives the op a registration implies when its ID is already
// taken by a service of another name: Consul replaces that instance, so the
// caller must also be allowed to deregister it (Consul's own ACLs likewise
// ask for write on the existing service). Without this a caller allowed to
// register "api" could replace "web"'s instance by reusing its ID.
//
// What the ID names is looked up only once the registration itself is
// allowed, and a denial of the derived op says nothing of that service.
func (s *Server) takeover(q *request, svc *gate.Service, dc string, lookup func(context.Context, *bytes.Buffer) (*api.AgentService, error)) {
	q.req.DeriveAfter(func(ctx context.Context, _ *gate.Request) error {
		var out bytes.Buffer
		cur, err := lookup(ctx, &out)
		switch {
		case err == errNotFound || (err == nil && cur == nil):
			return nil
		case err != nil:
			return unavailable("looking up service "+svc.ID, err)
		case cur.Service == svc.Name:
			return nil
		}
		q.derive(gate.Op{Resource: gate.ResourceService, Action: gate.ActionDeregister, Datacenter: dc,
			Service: &gate.Service{Name: cur.Service, ID: cur.ID, Tags: cur.Tags, Meta: cur.Meta, Address: cur.Address, Port: cur.Port}})
		return nil
	})
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
			return unavailable("reading service "+id, err)
		}
		svc.Name, svc.Tags, svc.Meta, svc.Address, svc.Port = cur.Service, cur.Tags, cur.Meta, cur.Address, cur.Port
	case err != errNotFound:
		return unavailable("looking up service "+id, err)
	}
	q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionDeregister, Service: svc})
	return nil
}

// catalogRegister decodes PUT /v1/catalog/register: a node, and optionally
// a service and checks on it, decoded strictly with Consul's type and
// forwarded re-encoded. Registering the node is a node register; the
// service, if any, a service register judged like an agent registration.
func (s *Server) catalogRegister(q *request) error {
	var reg api.CatalogRegistration
	if err := decodeCanonical(q, &reg, "registration"); err != nil {
		return err
	}
	if reg.Node == "" || reg.Address == "" {
		return httpError{code: http.StatusBadRequest, msg: "Must provide node and address"}
	}

	q.ask(gate.Op{Resource: gate.ResourceNode, Action: gate.ActionRegister, Datacenter: reg.Datacenter})
	if sv := reg.Service; sv != nil {
		svc := &gate.Service{Name: sv.Service, ID: sv.ID, Tags: sv.Tags, Meta: sv.Meta, Address: sv.Address, Port: sv.Port}
		if svc.ID == "" {
			svc.ID = svc.Name
		}
		i := q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionRegister, Service: svc, Datacenter: reg.Datacenter,
			Value: q.body, ValueSize: len(q.body)})
		if s.gate.Plugins() {
			// A plugin sees the whole registration (the node's too) as the
			// service op's value, and may not change the service's name.
			s.carry(q, i, q.r, func(q *request, op *gate.Op) error {
				var in api.CatalogRegistration
				if err := registrationRewrite(&in, false)(q, op); err != nil {
					return err
				}
				if !bytes.Equal(op.Value, q.body) && (in.Service == nil || in.Service.Service != svc.Name) {
					return refused("a plugin may not rename the service it registers")
				}
				return nil
			})
		}
		node := reg.Node
		s.takeover(q, svc, reg.Datacenter, func(ctx context.Context, out *bytes.Buffer) (*api.AgentService, error) {
			return s.nodeService(ctx, node, svc.ID, reg.Datacenter, out)
		})
	}
	if reg.Check != nil || len(reg.Checks) > 0 {
		// Catalog checks are status records, not checks the agent runs.
		q.ask(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister, Datacenter: reg.Datacenter,
			Service: &gate.Service{Name: serviceNameOf(reg.Service)}})
	}
	return nil
}

func serviceNameOf(sv *api.AgentService) string {
	if sv == nil {
		return ""
	}
	return sv.Service
}

// catalogDeregister decodes PUT /v1/catalog/deregister: a whole node, or one
// service or check of it. A service is named by its ID only; its name is
// read from the catalog, so that intentions scoped by service name apply.
func (s *Server) catalogDeregister(q *request) error {
	var dr api.CatalogDeregistration
	if err := decodeCanonical(q, &dr, "deregistration"); err != nil {
		return err
	}
	if dr.Node == "" {
		return httpError{code: http.StatusBadRequest, msg: "Must provide node"}
	}
	switch {
	case dr.ServiceID != "":
		svc := &gate.Service{ID: dr.ServiceID}
		var out bytes.Buffer
		switch cur, err := s.nodeService(q.r.Context(), dr.Node, dr.ServiceID, dr.Datacenter, &out); {
		case err == nil && cur != nil:
			svc.Name = cur.Service
		case err != nil && err != errNotFound:
			return unavailable("looking up node "+dr.Node, err)
		}
		q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionDeregister, Service: svc, Datacenter: dr.Datacenter})
	case dr.CheckID != "":
		q.ask(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionDeregister, Service: &gate.Service{}, Datacenter: dr.Datacenter})
	default:
		q.ask(gate.Op{Resource: gate.ResourceNode, Action: gate.ActionDeregister, Datacenter: dr.Datacenter})
	}
	return nil
}

// nodeService reads service id of a node from the catalog: nil if the node
// has no such service, errNotFound if there is no such node.
func (s *Server) nodeService(ctx context.Context, node, id, dc string, out *bytes.Buffer) (*api.AgentService, error) {
	if err := s.upstream(ctx, http.MethodGet, "/v1/catalog/node-services/"+url.PathEscape(node), dc, nil, out); err != nil {
		return nil, err
	}
	var ns struct{ Services []*api.AgentService }
	if err := json.Unmarshal(out.Bytes(), &ns); err != nil {
		return nil, fmt.Errorf("reading node %s: %w", node, err)
	}
	for _, sv := range ns.Services {
		if sv != nil && sv.ID == id {
			return sv, nil
		}
	}
	return nil, nil
}
