package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

const maxRegistrationBody = 512 << 10

// agentServiceRegister decodes PUT /v1/agent/service/register. The body is
// decoded with Consul's own type and forwarded re-encoded, so that Consul
// reads exactly what policy judged: fields the gateway does not know
// (Consul's snake_case aliases included) are refused rather than passed on
// for Consul to read differently.
//
// Every service the registration creates is an op of its own, with
// everything Consul will store for it: the service, and the Connect sidecar
// the agent derives from Connect.SidecarService (with Consul's defaults:
// name, ID, kind, proxy destination, address, default checks). A
// connect-proxy also asks to register its destination, as Consul's ACLs ask
// write on it: a proxy puts itself in its destination's place in the mesh.
// Every check, wherever it is nested, is in its service's op with its kind
// and target. HTTP checks are forwarded with redirects off, so that the
// agent fetches only the URL policy judged.
func (s *Server) agentServiceRegister(q *request) error {
	var reg api.AgentServiceRegistration
	if err := decodeCanonical(q, &reg, "registration"); err != nil {
		return err
	}
	if reg.Name == "" {
		return httpError{code: http.StatusBadRequest, msg: "Missing service name"}
	}
	agent, err := s.agentPorts(q.r.Context())
	if err != nil {
		return unavailable("reading the Consul agent's ports", err)
	}
	if err := noRedirects(q); err != nil {
		return err
	}

	svc := s.agentService(&reg, agent)
	i := q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionRegister, Service: svc,
		Value: q.body, ValueSize: len(q.body)})
	if s.gate.Plugins() {
		s.carry(q, i, q.r, registrationRewrite(&api.AgentServiceRegistration{}, true))
	}
	s.askDestination(q, svc, "")
	services := []*gate.Service{svc}
	if reg.Connect != nil && reg.Connect.SidecarService != nil {
		sc := reg.Connect.SidecarService
		if sc.Connect != nil && sc.Connect.SidecarService != nil {
			return httpError{code: http.StatusBadRequest, msg: "Invalid SidecarService: SidecarService cannot have a nested SidecarService"}
		}
		side := s.sidecarService(svc, sc, agent)
		q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionRegister, Service: side})
		if side.Proxy.DestinationName != svc.Name || side.Kind != string(api.ServiceKindConnectProxy) {
			s.askDestination(q, side, "")
		}
		services = append(services, side)
	}
	for _, sv := range services {
		s.takeover(q, sv, "", func(ctx context.Context, out *bytes.Buffer) ([]*api.AgentService, error) {
			var holders []*api.AgentService
			switch err := s.upstream(ctx, http.MethodGet, "/v1/agent/service/"+url.PathEscape(sv.ID), "", nil, out); {
			case err == nil:
				var cur api.AgentService
				if err := json.Unmarshal(out.Bytes(), &cur); err != nil {
					return nil, err
				}
				holders = append(holders, &cur)
			case err != errNotFound:
				return nil, err
			}
			// The agent syncs its services into the catalog, whose IDs
			// ignore case: an ID another service holds there in any case
			// is that service's.
			out.Reset()
			cat, err := s.nodeServices(ctx, s.agentNode(), sv.ID, "", out)
			return append(holders, cat...), err
		})
	}
	s.checkTakeover(q, services)
	return nil
}

// agentService is the policy view of an agent registration's own service.
func (s *Server) agentService(reg *api.AgentServiceRegistration, agent []guardedAddr) *gate.Service {
	svc := &gate.Service{Name: reg.Name, ID: reg.ID, Kind: string(reg.Kind), Tags: reg.Tags, Meta: reg.Meta,
		Address: reg.Address, Port: reg.Port, TaggedAddresses: tagged(reg.TaggedAddresses), Proxy: s.proxyOf(reg.Proxy, agent)}
	if svc.ID == "" {
		svc.ID = reg.Name // Consul's own default
	}
	checks := agentChecks(reg.Check, reg.Checks)
	for n, c := range checks {
		svc.Checks = append(svc.Checks, s.checksOf(c, defaultCheckID(c, svc.ID, n, len(checks)), "", svc, true, agent)...)
	}
	return svc
}

// sidecarService is the service the agent derives from a Connect sidecar
// registration (agent/sidecar_service.go, Consul 1.14.11): its ID is always
// the parent's with "-sidecar-proxy" (an ID in the body is ignored); name,
// address, tags and meta are the parent's when not given; the kind is
// connect-proxy and the proxy's destination the parent only when the body
// says none; without checks of its own the agent gives it a TCP check on its
// own address and port and an alias of the parent.
func (s *Server) sidecarService(parent *gate.Service, sc *api.AgentServiceRegistration, agent []guardedAddr) *gate.Service {
	side := &gate.Service{Name: sc.Name, ID: parent.ID + "-sidecar-proxy", Kind: string(sc.Kind), Tags: sc.Tags, Meta: sc.Meta,
		Address: sc.Address, Port: sc.Port, TaggedAddresses: tagged(sc.TaggedAddresses), SidecarOf: parent.Name,
		Proxy: s.proxyOf(sc.Proxy, agent)}
	if side.Kind == "" {
		side.Kind = string(api.ServiceKindConnectProxy)
	}
	if side.Name == "" {
		side.Name = parent.Name + "-sidecar-proxy"
	}
	if side.Address == "" {
		side.Address = parent.Address
	}
	if len(side.Tags) == 0 {
		side.Tags = parent.Tags
	}
	if len(side.Meta) == 0 {
		side.Meta = parent.Meta
	}
	if side.Proxy == nil {
		side.Proxy = &gate.Proxy{}
	}
	if side.Proxy.DestinationName == "" {
		side.Proxy.DestinationName = parent.Name
	}
	if side.Proxy.DestinationID == "" {
		side.Proxy.DestinationID = parent.ID
	}
	checks := agentChecks(sc.Check, sc.Checks)
	for n, c := range checks {
		side.Checks = append(side.Checks, s.checksOf(c, defaultCheckID(c, side.ID, n, len(checks)), "", side, true, agent)...)
	}
	if len(checks) == 0 {
		side.Checks = []gate.Check{
			{Kind: gate.CheckTCP, ID: "service:" + side.ID + ":1", Target: gate.CheckTarget{Own: true}},
			{Kind: gate.CheckAlias, ID: "service:" + side.ID + ":2", AliasService: parent.ID},
		}
	}
	return side
}

// askDestination asks, for a proxy, to register its destination (the proxy
// takes that service's place in the mesh), and for a gateway kind, admin on
// the gateway.
func (s *Server) askDestination(q *request, svc *gate.Service, dc string) {
	switch api.ServiceKind(svc.Kind) {
	case "", api.ServiceKindConnectProxy:
	default:
		// A gateway (mesh, terminating, ingress, api) carries traffic for
		// services other than its own, as Consul's ACLs ask operator or mesh
		// rights for it: registering one is also an admin op on it.
		q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionAdmin, Datacenter: dc,
			Service: &gate.Service{Name: svc.Name, ID: svc.ID, Kind: svc.Kind, Node: svc.Node}})
	}
	if svc.Proxy == nil || svc.Proxy.DestinationName == "" {
		return
	}
	q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionRegister, Datacenter: dc,
		Service: &gate.Service{Name: svc.Proxy.DestinationName, ID: svc.Proxy.DestinationID, Node: svc.Node}})
}

func agentChecks(one *api.AgentServiceCheck, many api.AgentServiceChecks) []*api.AgentServiceCheck {
	var out []*api.AgentServiceCheck
	if one != nil {
		out = append(out, one)
	}
	for _, c := range many {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// defaultCheckID is the ID the agent gives check n of a service's checks
// (agent.go, AddService): its own CheckID, else "service:ID" for a lone check
// and "service:ID:n" (from 1) for several.
func defaultCheckID(c *api.AgentServiceCheck, serviceID string, n, of int) string {
	if c.CheckID != "" {
		return c.CheckID
	}
	if of == 1 {
		return "service:" + serviceID
	}
	return "service:" + serviceID + ":" + strconv.Itoa(n+1)
}

func tagged(m map[string]api.ServiceAddress) map[string]gate.Endpoint {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]gate.Endpoint, len(m))
	for k, a := range m {
		out[k] = gate.Endpoint{Address: a.Address, Port: a.Port}
	}
	return out
}

func (s *Server) proxyOf(p *api.AgentServiceConnectProxyConfig, agent []guardedAddr) *gate.Proxy {
	if p == nil {
		return nil
	}
	out := &gate.Proxy{DestinationName: p.DestinationServiceName, DestinationID: p.DestinationServiceID,
		LocalService: gate.Endpoint{Address: p.LocalServiceAddress, Port: p.LocalServicePort}}
	for _, u := range p.Upstreams {
		out.Upstreams = append(out.Upstreams, u.DestinationName)
	}
	for _, e := range p.Expose.Paths {
		out.ExposePorts = append(out.ExposePorts, e.LocalPathPort)
	}
	s.classifyProxy(out, agent)
	return out
}

// classifyProxy names what the proxy's local service (127.0.0.1 when not
// given, as Consul defaults it) or an exposed local port is, when the gateway
// guards it: a proxy forwards the mesh's traffic there.
func (s *Server) classifyProxy(p *gate.Proxy, agent []guardedAddr) {
	host := p.LocalService.Address
	if host == "" {
		host = "127.0.0.1"
	}
	if p.LocalService.Port > 0 {
		p.LocalGuarded = s.guard.guarded(host, p.LocalService.Port, agent)
	}
	for _, port := range p.ExposePorts {
		if p.LocalGuarded == "" && port > 0 {
			p.LocalGuarded = s.guard.guarded("127.0.0.1", port, agent)
		}
	}
}

// noRedirects turns redirects off in every HTTP check of the canonical body
// (the service's, its checks', its sidecar's): Consul's HTTP checks follow
// redirects unless told not to, and a redirect would make the agent fetch a
// URL policy never saw. api v1.34.5 has no field for it, so the body is
// patched as JSON.
func noRedirects(q *request) error {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(q.body))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	if !patchChecks(doc) {
		return nil
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	// Only the forwarded body: q.body stays the canonical registration
	// plugins see (and may rewrite) in Consul's own type, which has no
	// field for it.
	setBody(q, b)
	return nil
}

// patchChecks sets DisableRedirects on the HTTP checks of a registration
// object (an agent service or check registration) and of its sidecar; it
// reports whether it changed anything.
func patchChecks(doc map[string]any) bool {
	changed := false
	mark := func(c any) {
		if m, ok := c.(map[string]any); ok {
			if h, _ := m["HTTP"].(string); h != "" {
				m["DisableRedirects"] = true
				changed = true
			}
		}
	}
	mark(doc) // an agent check registration is itself a check
	mark(doc["Check"])
	if cs, ok := doc["Checks"].([]any); ok {
		for _, c := range cs {
			mark(c)
		}
	}
	if conn, ok := doc["Connect"].(map[string]any); ok {
		if sc, ok := conn["SidecarService"].(map[string]any); ok && patchChecks(sc) {
			changed = true
		}
	}
	return changed
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
		q.body = b
		setBody(q, b)
		return noRedirects(q)
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
func (s *Server) takeover(q *request, svc *gate.Service, dc string, lookup func(context.Context, *bytes.Buffer) ([]*api.AgentService, error)) {
	q.req.DeriveAfter(func(ctx context.Context, _ *gate.Request) error {
		var out bytes.Buffer
		holders, err := lookup(ctx, &out)
		if err != nil && err != errNotFound {
			return unavailable("looking up a service", err)
		}
		for _, cur := range holders {
			if cur == nil || cur.Service == svc.Name {
				continue
			}
			q.derive(gate.Op{Resource: gate.ResourceService, Action: gate.ActionDeregister, Datacenter: dc,
				Service: &gate.Service{Name: cur.Service, ID: cur.ID, Node: svc.Node, Tags: cur.Tags, Meta: cur.Meta,
					Address: cur.Address, Port: cur.Port}})
		}
		return nil
	})
}

// checkTakeover derives, once the registration is allowed, an op on every
// check whose ID the registration reuses while it belongs to another service
// (or to the node): registering it replaces that check, so the caller needs
// the right to register checks of its current service.
func (s *Server) checkTakeover(q *request, services []*gate.Service) {
	q.req.DeriveAfter(func(ctx context.Context, _ *gate.Request) error {
		checks, err := s.agentChecks(ctx)
		if err != nil {
			return err
		}
		catalog, err := s.nodeChecks(ctx, s.agentNode(), "")
		if err != nil {
			return err
		}
		for _, sv := range services {
			for _, c := range sv.Checks {
				if cur, ok := checks[c.ID]; ok && cur.ServiceID != sv.ID {
					q.derive(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister,
						Service: &gate.Service{Name: cur.ServiceName, ID: cur.ServiceID}})
				}
				// The catalog's check IDs ignore case (see takeover).
				for _, h := range catalog {
					if strings.EqualFold(h.CheckID, c.ID) && !strings.EqualFold(h.ServiceID, sv.ID) {
						q.derive(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister,
							Service: &gate.Service{Name: h.ServiceName, ID: h.ServiceID}})
					}
				}
			}
		}
		return nil
	})
}

// agentChecks reads every check registered on the agent, by ID.
func (s *Server) agentChecks(ctx context.Context) (map[string]api.AgentCheck, error) {
	var out bytes.Buffer
	if err := s.upstream(ctx, http.MethodGet, "/v1/agent/checks", "", nil, &out); err != nil {
		return nil, unavailable("listing the agent's checks", err)
	}
	var checks map[string]api.AgentCheck
	if err := json.Unmarshal(out.Bytes(), &checks); err != nil {
		return nil, unavailable("reading the agent's checks", err)
	}
	return checks, nil
}

// agentServiceDeregister decodes PUT /v1/agent/service/deregister/ID. The
// path names only the ID; the service's name, which policy judges, is read
// from the agent first, and a denial says nothing of it (AskUnseen). An
// unknown ID keeps only its ID, which only intentions without `services`
// match.
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
			return unavailable("reading a service", err)
		}
		svc.Name, svc.Kind, svc.Tags, svc.Meta, svc.Address, svc.Port = cur.Service, string(cur.Kind), cur.Tags, cur.Meta, cur.Address, cur.Port
	case err != errNotFound:
		return unavailable("looking up a service", err)
	}
	q.askUnseen(gate.Op{Resource: gate.ResourceService, Action: gate.ActionDeregister, Service: svc})
	return nil
}

// catalogRegister decodes PUT /v1/catalog/register: a node, and optionally
// a service and checks on it, decoded strictly with Consul's type and
// forwarded re-encoded. Registering the node is a node register (with the
// node's name, address, tagged addresses and meta); the service, if any, a
// service register judged like an agent registration; every check is in the
// op of the service it belongs to (a node check in an op of its own with no
// service name).
func (s *Server) catalogRegister(q *request) error {
	var reg api.CatalogRegistration
	if err := decodeCanonical(q, &reg, "registration"); err != nil {
		return err
	}
	if reg.Node == "" || reg.Address == "" {
		return httpError{code: http.StatusBadRequest, msg: "Must provide node and address"}
	}
	agent, err := s.agentPorts(q.r.Context())
	if err != nil {
		return unavailable("reading the Consul agent's ports", err)
	}
	// Consul's catalog endpoints read the datacenter from the body alone
	// (no ?dc): so does policy.
	q.dc = ""
	dc := reg.Datacenter
	q.ask(gate.Op{Resource: gate.ResourceNode, Action: gate.ActionRegister, Datacenter: dc,
		Node: &gate.Node{Name: reg.Node, ID: reg.ID, Address: reg.Address, TaggedAddresses: reg.TaggedAddresses, Meta: reg.NodeMeta}})

	var svc *gate.Service
	svcOp := -1
	if sv := reg.Service; sv != nil {
		if sv.Connect != nil && sv.Connect.SidecarService != nil {
			return httpError{code: http.StatusBadRequest, msg: "storegate: a catalog registration cannot carry Connect.SidecarService (agents expand sidecars)"}
		}
		svc = s.catalogServiceOf(sv, reg.Node, agent)
		svcOp = q.ask(gate.Op{Resource: gate.ResourceService, Action: gate.ActionRegister, Service: svc, Datacenter: dc,
			Value: q.body, ValueSize: len(q.body)})
		if s.gate.Plugins() {
			// A plugin sees the whole registration (the node's too) as the
			// service op's value, and may not change the service's name.
			s.carry(q, svcOp, q.r, func(q *request, op *gate.Op) error {
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
		s.askDestination(q, svc, dc)
		node := reg.Node
		s.takeover(q, svc, dc, func(ctx context.Context, out *bytes.Buffer) ([]*api.AgentService, error) {
			return s.nodeServices(ctx, node, svc.ID, dc, out)
		})
	}

	var checks []*api.HealthCheck
	if c := reg.Check; c != nil {
		checks = append(checks, &api.HealthCheck{Node: c.Node, CheckID: c.CheckID, Name: c.Name, ServiceID: c.ServiceID,
			Type: c.Type, Definition: c.Definition})
	}
	for _, c := range reg.Checks {
		if c != nil {
			checks = append(checks, c)
		}
	}
	var others []*api.HealthCheck // checks of services not in this registration
	for _, c := range checks {
		switch {
		case svc != nil && c.ServiceID == svc.ID:
			svc.Checks = append(svc.Checks, s.healthCheckOf(c, svc, agent)...)
		case c.ServiceID == "":
			owner := &gate.Service{Node: reg.Node}
			owner.Checks = s.healthCheckOf(c, nil, agent)
			q.ask(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister, Datacenter: dc, Service: owner})
		default:
			others = append(others, c)
		}
	}
	if len(others) > 0 {
		// Checks of other services already on the node: once the node op
		// (and the rest) is allowed, the node's services are read, once,
		// and each check is an op on its service as the catalog knows it,
		// whose denial says nothing of that service.
		node := reg.Node
		q.req.DeriveAfter(func(ctx context.Context, _ *gate.Request) error {
			var out bytes.Buffer
			onNode, err := s.nodeServices(ctx, node, "", dc, &out)
			if err != nil && err != errNotFound {
				return unavailable("looking up a node's services", err)
			}
			for _, c := range others {
				owner := &gate.Service{ID: c.ServiceID, Node: node}
				for _, cur := range onNode {
					if strings.EqualFold(cur.ID, c.ServiceID) {
						owner.Name, owner.Kind, owner.Address, owner.Port = cur.Service, string(cur.Kind), cur.Address, cur.Port
					}
				}
				owner.Checks = s.healthCheckOf(c, owner, agent)
				q.derive(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister, Datacenter: dc, Service: owner})
			}
			return nil
		})
	}
	if len(checks) > 0 {
		node := reg.Node
		q.req.DeriveAfter(func(ctx context.Context, _ *gate.Request) error {
			return s.nodeCheckTakeover(ctx, q, node, dc, checks)
		})
	}
	return nil
}

// catalogServiceOf is the policy view of a catalog registration's service.
func (s *Server) catalogServiceOf(sv *api.AgentService, node string, agent []guardedAddr) *gate.Service {
	svc := &gate.Service{Name: sv.Service, ID: sv.ID, Kind: string(sv.Kind), Node: node, Tags: sv.Tags, Meta: sv.Meta,
		Address: sv.Address, Port: sv.Port, TaggedAddresses: tagged(sv.TaggedAddresses), Proxy: s.proxyOf(sv.Proxy, agent)}
	if svc.ID == "" {
		svc.ID = sv.Service
	}
	return svc
}

// nodeCheckTakeover derives an op on every check of the node whose ID a
// catalog registration reuses while it belongs to another service.
func (s *Server) nodeCheckTakeover(ctx context.Context, q *request, node, dc string, checks []*api.HealthCheck) error {
	cur, err := s.nodeChecks(ctx, node, dc)
	if err != nil {
		return err
	}
	for _, c := range checks {
		for _, h := range cur {
			if strings.EqualFold(h.CheckID, c.CheckID) && !strings.EqualFold(h.ServiceID, c.ServiceID) {
				q.derive(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRegister, Datacenter: dc,
					Service: &gate.Service{Name: h.ServiceName, ID: h.ServiceID, Node: node}})
			}
		}
	}
	return nil
}

// nodeChecks reads the checks of a node from the catalog (none when there is
// no such node).
func (s *Server) nodeChecks(ctx context.Context, node, dc string) ([]api.HealthCheck, error) {
	if node == "" {
		return nil, nil
	}
	var out bytes.Buffer
	switch err := s.upstream(ctx, http.MethodGet, "/v1/health/node/"+url.PathEscape(node), dc, nil, &out); {
	case err == errNotFound:
		return nil, nil
	case err != nil:
		return nil, unavailable("looking up a node's checks", err)
	}
	var cur []api.HealthCheck
	if err := json.Unmarshal(out.Bytes(), &cur); err != nil {
		return nil, unavailable("reading a node's checks", err)
	}
	return cur, nil
}

// healthCheckOf is the policy view of a catalog or transaction check.
// Consul stores these as status records and does not run them, but they are
// judged as if an agent would.
func (s *Server) healthCheckOf(c *api.HealthCheck, svc *gate.Service, agent []guardedAddr) []gate.Check {
	d := &c.Definition
	ac := &api.AgentServiceCheck{HTTP: d.HTTP, Header: d.Header, Method: d.Method, Body: d.Body,
		TCP: d.TCP, UDP: d.UDP, GRPC: d.GRPC}
	out := s.checksOf(ac, c.CheckID, c.Name, svc, false, agent)
	if d.OSService != "" {
		out = append(out, gate.Check{Kind: gate.CheckOSService, ID: c.CheckID, Name: c.Name, OSService: d.OSService})
	}
	// The Type the body gives is what Consul records: a kind the definition
	// does not already show is judged too (a networked one with no target
	// reaches nowhere policy could allow).
	k := checkKindOf(c.Type)
	if len(out) == 1 && out[0].Kind == gate.CheckUnknown {
		out[0].Kind = k
		return out
	}
	if k != gate.CheckUnknown && !slices.ContainsFunc(out, func(x gate.Check) bool { return x.Kind == k }) {
		out = append(out, gate.Check{Kind: k, ID: c.CheckID, Name: c.Name})
	}
	return out
}

// checkKindOf reads a check's Type as Consul spells it.
func checkKindOf(t string) gate.CheckKind {
	for k := gate.CheckTTL; k <= gate.CheckDocker; k++ {
		if k.String() == t {
			return k
		}
	}
	switch t {
	case "":
		return gate.CheckUnknown
	case "os-service", "osservice":
		return gate.CheckOSService
	}
	return gate.CheckUnknown
}

// catalogDeregister decodes PUT /v1/catalog/deregister: a whole node, or one
// service or check of it. A service or check is named by its ID only; what
// it belongs to is read from the catalog, so that intentions scoped by
// service name apply, and a denial says nothing of it (AskUnseen).
func (s *Server) catalogDeregister(q *request) error {
	var dr api.CatalogDeregistration
	if err := decodeCanonical(q, &dr, "deregistration"); err != nil {
		return err
	}
	if dr.Node == "" {
		return httpError{code: http.StatusBadRequest, msg: "Must provide node"}
	}
	ctx := q.r.Context()
	q.dc = "" // as in catalogRegister
	op := gate.Op{Datacenter: dr.Datacenter}
	switch {
	case dr.ServiceID != "":
		svc := &gate.Service{ID: dr.ServiceID, Node: dr.Node}
		var out bytes.Buffer
		switch cur, err := s.nodeService(ctx, dr.Node, dr.ServiceID, dr.Datacenter, &out); {
		case err == nil && cur != nil:
			svc.Name, svc.Kind, svc.Address, svc.Port = cur.Service, string(cur.Kind), cur.Address, cur.Port
		case err != nil && err != errNotFound:
			return unavailable("looking up a node's services", err)
		}
		op.Resource, op.Action, op.Service = gate.ResourceService, gate.ActionDeregister, svc
	case dr.CheckID != "":
		svc := &gate.Service{Node: dr.Node}
		var out bytes.Buffer
		switch err := s.upstream(ctx, http.MethodGet, "/v1/health/node/"+url.PathEscape(dr.Node), dr.Datacenter, nil, &out); {
		case err == nil:
			var cur []api.HealthCheck
			if err := json.Unmarshal(out.Bytes(), &cur); err != nil {
				return unavailable("reading a node's checks", err)
			}
			for _, h := range cur {
				if strings.EqualFold(h.CheckID, dr.CheckID) {
					svc.Name, svc.ID = h.ServiceName, h.ServiceID
				}
			}
		case err != errNotFound:
			return unavailable("looking up a node's checks", err)
		}
		op.Resource, op.Action, op.Service = gate.ResourceCheck, gate.ActionDeregister, svc
	default:
		op.Resource, op.Action, op.Node = gate.ResourceNode, gate.ActionDeregister, &gate.Node{Name: dr.Node}
		q.ask(op)
		return nil
	}
	q.askUnseen(op)
	return nil
}

// nodeService reads service id of a node from the catalog, whose IDs
// ignore case: nil if the node has no such service, errNotFound if there is
// no such node.
func (s *Server) nodeService(ctx context.Context, node, id, dc string, out *bytes.Buffer) (*api.AgentService, error) {
	all, err := s.nodeServices(ctx, node, id, dc, out)
	if err != nil || len(all) == 0 {
		return nil, err
	}
	for _, sv := range all {
		if sv.ID == id {
			return sv, nil
		}
	}
	return all[0], nil
}

// nodeServices reads every service of a node whose ID is id in any case
// (every service of the node when id is "").
func (s *Server) nodeServices(ctx context.Context, node, id, dc string, out *bytes.Buffer) ([]*api.AgentService, error) {
	if node == "" {
		return nil, nil
	}
	if err := s.upstream(ctx, http.MethodGet, "/v1/catalog/node-services/"+url.PathEscape(node), dc, nil, out); err != nil {
		return nil, err
	}
	var ns struct{ Services []*api.AgentService }
	if err := json.Unmarshal(out.Bytes(), &ns); err != nil {
		return nil, fmt.Errorf("reading node %s: %w", node, err)
	}
	var match []*api.AgentService
	for _, sv := range ns.Services {
		if sv != nil && (id == "" || strings.EqualFold(sv.ID, id)) {
			match = append(match, sv)
		}
	}
	return match, nil
}
