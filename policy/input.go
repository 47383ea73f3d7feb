package policy

import (
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/storegate/storegate/gate"
)

// Input returns the input document policies see for caller doing op:
//
//	{"caller": {"id", "trust_domain", "path"},
//	 "op": {"protocol", "resource", "action", "method",
//	        "key", "range_end", "range", "prefix", "cover",
//	        "lease", "value_size", "prev_kv", "txn_index",
//	        "service": {"name", "id", "kind", "node", "tags", "meta",
//	                    "address", "port", "tagged_addresses", "sidecar_of",
//	                    "proxy": {"destination_name", "destination_id", "upstreams",
//	                              "local_service": {"address", "port"}, "expose_ports",
//	                              "local_guarded"},
//	                    "checks": [{"kind", "id", "name", "alias_service",
//	                                "alias_node", "os_service",
//	                                "target": {"url", "method", "headers", "body",
//	                                           "host", "port", "own", "guarded"}}]},
//	        "node": {"name", "id", "address", "tagged_addresses", "meta"},
//	        "new_session": {"node", "node_checks", "service_checks", "behavior", "ttl"},
//	        "session", "datacenter", "foreign", "owner"}}
//
// Keys are bytes and go in as strings, unchanged. "range" is true for a
// multi-key range; "cover" is the longest prefix every key of the range
// starts with (the key itself for a single key) and "prefix" is true when
// the range is exactly "every key starting with cover". "service" is present
// only when the op names a service ("proxy" only for a connect-proxy), "node"
// only when it names a catalog node, "new_session" only for a
// session create. A check's "kind" is one of ttl, http,
// tcp, udp, grpc, h2ping, alias, os_service, script, docker, unknown; its
// "target" is where the agent connects when it runs it (host "" for kinds
// that connect nowhere): "own" is true when that is the service's own address
// and port, "guarded" names what the gateway knows it to be — "consul",
// "etcd", "gateway", "link_local", "metadata" — or is "".
//
// "foreign" (always present) is true when the op acts on a thing another
// identity owns, such as a lease the gateway recorded as granted by another
// caller; "owner" is present only then, and is that identity's SPIFFE ID, or
// "" when no owner is on record. The shipped intentions engine allows a
// foreign op only through an intention whose owners match "owner".
//
// The document is built as an ast.Value directly, with no JSON round trip.
func Input(caller gate.Identity, op *gate.Op) ast.Value {
	return ast.NewObject(
		ast.Item(termCaller, callerTerm(caller)),
		ast.Item(termOp, opTerm(op)),
	)
}

// callers caches the caller half of input documents: a gateway sees few
// callers, each many times. It stops growing at maxCachedCallers.
var callers struct {
	m sync.Map // SPIFFE ID → *ast.Term
	n atomic.Int32
}

const maxCachedCallers = 4096

func callerTerm(caller gate.Identity) *ast.Term {
	id := caller.String()
	if t, ok := callers.m.Load(id); ok {
		return t.(*ast.Term)
	}
	var td, path string
	if !caller.IsZero() {
		td, path = caller.TrustDomain().Name(), caller.ID.Path()
	}
	t := ast.ObjectTerm(
		ast.Item(termID, ast.StringTerm(id)),
		ast.Item(termTrustDomain, ast.StringTerm(td)),
		ast.Item(termPath, ast.StringTerm(path)),
	)
	if callers.n.Load() < maxCachedCallers {
		if _, loaded := callers.m.LoadOrStore(id, t); !loaded {
			callers.n.Add(1)
		}
	}
	return t
}

func opTerm(op *gate.Op) *ast.Term {
	cover, exact := op.Keys.Prefix()
	var items [20][2]*ast.Term
	items[0] = ast.Item(termProtocol, nameTerm(protocolTerms[:], int(op.Protocol), op.Protocol.String))
	items[1] = ast.Item(termResource, nameTerm(resourceTerms[:], int(op.Resource), op.Resource.String))
	items[2] = ast.Item(termAction, nameTerm(actionTerms[:], int(op.Action), op.Action.String))
	items[3] = ast.Item(termMethod, stringTerm(op.Method))
	items[4] = ast.Item(termKey, bytesTerm(op.Keys.Key))
	items[5] = ast.Item(termRangeEnd, bytesTerm(op.Keys.End))
	items[6] = ast.Item(termRange, ast.InternedTerm(!op.Keys.Single()))
	items[7] = ast.Item(termPrefix, ast.InternedTerm(exact))
	if op.Keys.Single() {
		items[8] = ast.Item(termCover, items[4][1])
	} else {
		items[8] = ast.Item(termCover, bytesTerm(cover))
	}
	items[9] = ast.Item(termLease, intTerm(op.Lease))
	items[10] = ast.Item(termValueSize, intTerm(int64(op.ValueSize)))
	items[11] = ast.Item(termPrevKV, ast.InternedTerm(op.PrevKV))
	items[12] = ast.Item(termTxnIndex, intTerm(int64(op.TxnIndex)))
	items[13] = ast.Item(termSession, stringTerm(op.Session))
	items[14] = ast.Item(termDatacenter, stringTerm(op.Datacenter))
	items[15] = ast.Item(termForeign, ast.InternedTerm(op.Foreign))
	n := 16
	if op.Foreign {
		items[n] = ast.Item(termOwner, stringTerm(op.Owner))
		n++
	}
	if op.Service != nil {
		items[n] = ast.Item(termService, serviceTerm(op.Service))
		n++
	}
	if op.Node != nil {
		items[n] = ast.Item(ast.StringTerm("node"), nodeTerm(op.Node))
		n++
	}
	if ns := op.NewSession; ns != nil {
		items[n] = ast.Item(ast.StringTerm("new_session"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("node"), stringTerm(ns.Node)),
			ast.Item(ast.StringTerm("node_checks"), stringsTerm(ns.NodeChecks)),
			ast.Item(ast.StringTerm("service_checks"), stringsTerm(ns.ServiceChecks)),
			ast.Item(ast.StringTerm("behavior"), stringTerm(ns.Behavior)),
			ast.Item(ast.StringTerm("ttl"), stringTerm(ns.TTL)),
		))
		n++
	}
	return ast.ObjectTerm(items[:n]...)
}

// serviceTerm is a registration's service. Registrations are rare next to
// KV ops: its terms are built plainly.
func serviceTerm(s *gate.Service) *ast.Term {
	tagged := ast.NewObjectWithCapacity(len(s.TaggedAddresses))
	for k, e := range s.TaggedAddresses {
		tagged.Insert(stringTerm(k), endpointTerm(e.Address, e.Port))
	}
	checks := make([]*ast.Term, len(s.Checks))
	for i := range s.Checks {
		checks[i] = checkTerm(&s.Checks[i])
	}
	items := [][2]*ast.Term{
		ast.Item(termName, stringTerm(s.Name)),
		ast.Item(termID, stringTerm(s.ID)),
		ast.Item(ast.StringTerm("kind"), stringTerm(s.Kind)),
		ast.Item(ast.StringTerm("node"), stringTerm(s.Node)),
		ast.Item(termTags, stringsTerm(s.Tags)),
		ast.Item(termMeta, mapTerm(s.Meta)),
		ast.Item(termAddress, stringTerm(s.Address)),
		ast.Item(termPort, ast.InternedTerm(s.Port)),
		ast.Item(ast.StringTerm("tagged_addresses"), ast.NewTerm(tagged)),
		ast.Item(ast.StringTerm("sidecar_of"), stringTerm(s.SidecarOf)),
		ast.Item(termChecks, ast.ArrayTerm(checks...)),
	}
	if p := s.Proxy; p != nil {
		items = append(items, ast.Item(ast.StringTerm("proxy"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("destination_name"), stringTerm(p.DestinationName)),
			ast.Item(ast.StringTerm("destination_id"), stringTerm(p.DestinationID)),
			ast.Item(ast.StringTerm("upstreams"), stringsTerm(p.Upstreams)),
			ast.Item(ast.StringTerm("local_service"), endpointTerm(p.LocalService.Address, p.LocalService.Port)),
			ast.Item(ast.StringTerm("expose_ports"), intsTerm(p.ExposePorts)),
			ast.Item(ast.StringTerm("local_guarded"), stringTerm(p.LocalGuarded)),
		)))
	}
	return ast.ObjectTerm(items...)
}

func checkTerm(c *gate.Check) *ast.Term {
	t := &c.Target
	return ast.ObjectTerm(
		ast.Item(ast.StringTerm("kind"), ast.StringTerm(c.Kind.String())),
		ast.Item(termID, stringTerm(c.ID)),
		ast.Item(termName, stringTerm(c.Name)),
		ast.Item(ast.StringTerm("alias_service"), stringTerm(c.AliasService)),
		ast.Item(ast.StringTerm("alias_node"), stringTerm(c.AliasNode)),
		ast.Item(ast.StringTerm("os_service"), stringTerm(c.OSService)),
		ast.Item(ast.StringTerm("target"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("url"), stringTerm(t.URL)),
			ast.Item(ast.StringTerm("method"), stringTerm(t.Method)),
			ast.Item(ast.StringTerm("headers"), stringsTerm(t.Headers)),
			ast.Item(ast.StringTerm("body"), ast.InternedTerm(t.Body)),
			ast.Item(ast.StringTerm("host"), stringTerm(t.Host)),
			ast.Item(termPort, ast.InternedTerm(t.Port)),
			ast.Item(ast.StringTerm("own"), ast.InternedTerm(t.Own)),
			ast.Item(ast.StringTerm("guarded"), stringTerm(t.Guarded)),
		)),
	)
}

func nodeTerm(n *gate.Node) *ast.Term {
	return ast.ObjectTerm(
		ast.Item(termName, stringTerm(n.Name)),
		ast.Item(termID, stringTerm(n.ID)),
		ast.Item(termAddress, stringTerm(n.Address)),
		ast.Item(ast.StringTerm("tagged_addresses"), mapTerm(n.TaggedAddresses)),
		ast.Item(termMeta, mapTerm(n.Meta)),
	)
}

func endpointTerm(addr string, port int) *ast.Term {
	return ast.ObjectTerm(ast.Item(termAddress, stringTerm(addr)), ast.Item(termPort, ast.InternedTerm(port)))
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, v := range ss {
		ts[i] = stringTerm(v)
	}
	return ast.ArrayTerm(ts...)
}

func intsTerm(ns []int) *ast.Term {
	ts := make([]*ast.Term, len(ns))
	for i, n := range ns {
		ts[i] = ast.InternedTerm(n)
	}
	return ast.ArrayTerm(ts...)
}

func mapTerm(m map[string]string) *ast.Term {
	o := ast.NewObjectWithCapacity(len(m))
	for k, v := range m {
		o.Insert(stringTerm(k), stringTerm(v))
	}
	return ast.NewTerm(o)
}

func stringTerm(s string) *ast.Term {
	if s == "" {
		return termEmpty
	}
	return ast.StringTerm(s)
}

func bytesTerm(b []byte) *ast.Term {
	if len(b) == 0 {
		return termEmpty
	}
	return ast.StringTerm(string(b))
}

func intTerm(i int64) *ast.Term {
	if i == 0 {
		return termZero
	}
	return ast.InternedTerm(i)
}

// nameTerm returns the prebuilt term of a gate enum's name.
func nameTerm(terms []*ast.Term, i int, name func() string) *ast.Term {
	if i > 0 && i < len(terms) && terms[i] != nil {
		return terms[i]
	}
	return ast.StringTerm(name())
}

// Terms shared by every input document. OPA never mutates input terms, so
// the same term may sit in many documents at once.
var (
	termCaller      = ast.StringTerm("caller")
	termOp          = ast.StringTerm("op")
	termID          = ast.StringTerm("id")
	termTrustDomain = ast.StringTerm("trust_domain")
	termPath        = ast.StringTerm("path")
	termProtocol    = ast.StringTerm("protocol")
	termResource    = ast.StringTerm("resource")
	termAction      = ast.StringTerm("action")
	termMethod      = ast.StringTerm("method")
	termKey         = ast.StringTerm("key")
	termRangeEnd    = ast.StringTerm("range_end")
	termRange       = ast.StringTerm("range")
	termPrefix      = ast.StringTerm("prefix")
	termCover       = ast.StringTerm("cover")
	termLease       = ast.StringTerm("lease")
	termValueSize   = ast.StringTerm("value_size")
	termPrevKV      = ast.StringTerm("prev_kv")
	termTxnIndex    = ast.StringTerm("txn_index")
	termService     = ast.StringTerm("service")
	termSession     = ast.StringTerm("session")
	termDatacenter  = ast.StringTerm("datacenter")
	termForeign     = ast.StringTerm("foreign")
	termOwner       = ast.StringTerm("owner")
	termName        = ast.StringTerm("name")
	termTags        = ast.StringTerm("tags")
	termMeta        = ast.StringTerm("meta")
	termAddress     = ast.StringTerm("address")
	termPort        = ast.StringTerm("port")
	termChecks      = ast.StringTerm("checks")

	termEmpty = ast.StringTerm("")
	termZero  = ast.InternedTerm(0)

	protocolTerms = enumTerms(gate.ProtocolConsul, gate.Protocol.String)
	resourceTerms = enumTerms(gate.ResourceStatus, gate.Resource.String)
	actionTerms   = enumTerms(gate.ActionAdmin, gate.Action.String)
)

// enumTerms returns the name terms of a gate enum's values 1..last.
func enumTerms[E ~uint8](last E, name func(E) string) []*ast.Term {
	out := make([]*ast.Term, int(last)+1)
	for e := E(1); e <= last; e++ {
		out[e] = ast.StringTerm(name(e))
	}
	return out
}
