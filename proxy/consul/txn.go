package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

// Consul's transaction limits (agent/txn_endpoint.go, Consul 1.14.11).
const (
	// txnMaxOps is Consul's maxTxnOps.
	txnMaxOps = 128
	// txnMaxReqLen is the default of Consul's limits.txn_max_req_len
	// (raft.SuggestedMaxDataSize). Consul raises the limit to
	// kv_max_value_size when that is larger; so does txnLimit.
	txnMaxReqLen = 512 << 10
)

// txnMaxCheckNodes bounds the nodes whose services one transaction's checks
// make the gateway read before deciding (one read per node).
const txnMaxCheckNodes = 8

const txnLimitDoc = "https://www.consul.io/docs/agent/config/config-files#txn_max_req_len"

// txnLimit is the largest transaction body Consul accepts.
func (s *Server) txnLimit() int64 {
	return max(int64(txnMaxReqLen), s.opts.MaxValueBytes)
}

// txn decodes PUT /v1/txn: every op of the transaction becomes one or more
// asked ops, and the request is denied as a whole if any is.
//
// The body is read once, within Consul's limit, decoded exactly as Consul
// 1.14.11 decodes it (convertOps: encoding/json into api.TxnOps with
// DisallowUnknownFields, first JSON value only), and the very bytes decoded
// are forwarded. KV values are []byte, which encoding/json reads as standard
// base64 on both sides; Consul's decodeValue fix-up is dead code in 1.14.11.
// api v1.34.5's request types are a superset of those of Consul 1.14.11 (same
// fields and types, plus newer optional ones), so every body Consul accepts
// decodes here to the same values; a body using only the newer fields passes
// here and is refused by Consul itself.
//
// A tree read in a transaction cannot be narrowed (its results cannot be
// told from those of the other ops): it is not Narrowed, so the gate denies
// it when policy would filter it.
func (s *Server) txn(q *request) error {
	limit := s.txnLimit()
	if q.r.ContentLength > limit {
		return httpError{code: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("Request body(%d bytes) too large, max size: %d bytes. See %s.", q.r.ContentLength, limit, txnLimitDoc)}
	}
	body, err := io.ReadAll(io.LimitReader(q.r.Body, limit+1))
	if err != nil {
		return httpError{code: http.StatusBadRequest, msg: "storegate: reading the transaction: " + err.Error()}
	}
	if int64(len(body)) > limit {
		return httpError{code: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("Request body too large, max size: %d bytes. See %s.", limit, txnLimitDoc)}
	}
	setBody(q, body)

	ops, err := decodeTxn(body)
	if err != nil {
		return httpError{code: http.StatusBadRequest, msg: fmt.Sprintf("Failed to parse body: %v", err)}
	}
	if s.gate.Plugins() {
		q.tx = &txnPlugins{ops: ops} // plugins' view of the KV ops
	}
	if len(ops) > txnMaxOps {
		return httpError{code: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("Transaction contains too many operations (%d > %d)", len(ops), txnMaxOps)}
	}
	var sessions []txnSession                 // sessions locked with, each looked up once
	var agent []guardedAddr                   // the agent's ports, read for the first check op
	nodes := map[string][]*api.AgentService{} // node services, read once per node
	for i, in := range ops {
		var op gate.Op
		var err error
		switch {
		case in == nil:
			err = fmt.Errorf("storegate: transaction op %d is null", i)
		case in.KV != nil:
			if size := int64(len(in.KV.Value)); size > s.opts.MaxValueBytes {
				return httpError{code: http.StatusRequestEntityTooLarge,
					msg: fmt.Sprintf("Value for key %q is too large (%d > %d bytes)", in.KV.Key, size, s.opts.MaxValueBytes)}
			}
			var lock gate.Op
			if op, lock, err = txnKV(in.KV); err != nil {
				break
			}
			// TxnIndex is the Consul op's position, from 1; a lock op
			// shares its KV op's.
			op.TxnIndex = i + 1
			j := q.ask(op)
			if q.tx != nil {
				q.tx.kv(s, q, j, in.KV)
			}
			if lock.Resource != 0 {
				lock.TxnIndex = i + 1
				q.ask(lock)
				// As with ?acquire and ?release: the session must be the
				// caller's own.
				if ts := (txnSession{lock.Action, lock.Session}); !slices.Contains(sessions, ts) {
					sessions = append(sessions, ts)
					s.useSession(q, lock.Action, lock.Session)
				}
			}
			continue
		// The cases take KV, Node, Service, Check in Consul's order when an
		// op sets several.
		case in.Node != nil:
			op, err = txnNode(in.Node)
		case in.Service != nil:
			if agent == nil {
				if agent, err = s.agentPorts(q.r.Context()); err != nil {
					return unavailable("reading the Consul agent's ports", err)
				}
			}
			if op, err = s.txnService(in.Service, agent); err == nil && op.Action == gate.ActionRegister {
				s.askDestination(q, op.Service, "")
				node, svc := in.Service.Node, op.Service
				s.takeover(q, svc, "", func(ctx context.Context, out *bytes.Buffer) ([]*api.AgentService, error) {
					return s.nodeServices(ctx, node, svc.ID, q.dc, out)
				})
			}
		case in.Check != nil:
			if agent == nil {
				if agent, err = s.agentPorts(q.r.Context()); err != nil {
					return unavailable("reading the Consul agent's ports", err)
				}
			}
			var unseen bool
			op, unseen, err = s.txnCheck(q, in.Check, agent, nodes)
			if err == nil && op.Action == gate.ActionRegister {
				// A check ID the node holds for another service (in any
				// case: the catalog's IDs ignore it) is that service's.
				hc := &in.Check.Check
				q.req.DeriveAfter(func(ctx context.Context, _ *gate.Request) error {
					return s.nodeCheckTakeover(ctx, q, hc.Node, q.dc, []*api.HealthCheck{hc})
				})
			}
			if err == nil && unseen {
				op.TxnIndex = i + 1
				q.askUnseen(op)
				continue
			}
		default:
			// Consul skips an op it cannot convert; the gateway does not
			// forward what it has not examined.
			err = fmt.Errorf("storegate: transaction op %d has no KV, Node, Service or Check", i)
		}
		if err != nil {
			return err
		}
		op.TxnIndex = i + 1
		q.ask(op)
	}
	return nil
}

// txnSession is a session a transaction locks or unlocks with.
type txnSession struct {
	act gate.Action
	id  string
}

// decodeTxn is Consul's decodeBody (lib.DecodeJSON) on api.TxnOps.
func decodeTxn(body []byte) (api.TxnOps, error) {
	var ops api.TxnOps
	var out any = &ops
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return ops, nil
}

// txnKV is a KV op of a transaction and, for lock and unlock, the lock op
// it implies (lock.Resource is 0 for the other verbs).
func txnKV(kv *api.KVTxnOp) (op, lock gate.Op, err error) {
	key := []byte("/" + kv.Key)
	one := gate.KeyRange{Key: key}
	tree := gate.KeyRange{Key: key, End: gate.PrefixEnd(key)}
	// Consul keeps a key's session on set and cas and reads it only for
	// lock, unlock and check-session.
	op = gate.Op{Resource: gate.ResourceKV, Keys: one, ValueSize: len(kv.Value), Value: kv.Value}
	switch kv.Verb {
	case api.KVGet, api.KVGetOrEmpty, api.KVCheckIndex, api.KVCheckSession, api.KVCheckNotExists:
		// The checks reveal whether the key exists, its index or its
		// session: reads.
		op.Action = gate.ActionRead
		if kv.Verb == api.KVCheckSession {
			op.Session = kv.Session
		}
	case api.KVGetTree:
		op.Action, op.Keys = gate.ActionRead, tree
	case api.KVSet, api.KVCAS:
		op.Action = gate.ActionWrite
	case api.KVLock, api.KVUnlock:
		op.Action, op.Session = gate.ActionWrite, kv.Session
		lock = gate.Op{Resource: gate.ResourceLock, Action: gate.ActionAcquire, Keys: one, Session: kv.Session}
		if kv.Verb == api.KVUnlock {
			lock.Action = gate.ActionRelease
		}
	case api.KVDelete, api.KVDeleteCAS:
		op.Action = gate.ActionDelete
	case api.KVDeleteTree:
		op.Action, op.Keys = gate.ActionDelete, tree
	default:
		return op, lock, fmt.Errorf("storegate: unknown KV verb %q", kv.Verb)
	}
	return op, lock, nil
}

// catalogAction maps the node, service and check verbs, which Consul spells
// alike ("get", "set", "cas", "delete", "delete-cas").
func catalogAction(kind, verb string) (gate.Action, error) {
	switch verb {
	case "get":
		return gate.ActionRead, nil
	case "set", "cas":
		return gate.ActionRegister, nil
	case "delete", "delete-cas":
		return gate.ActionDeregister, nil
	}
	return 0, fmt.Errorf("storegate: unknown %s verb %q", kind, verb)
}

// txnNode: a node op, with the node as the body gives it.
func txnNode(n *api.NodeTxnOp) (gate.Op, error) {
	a, err := catalogAction("Node", string(n.Verb))
	if err != nil {
		return gate.Op{}, err
	}
	nd := &n.Node
	return gate.Op{Resource: gate.ResourceNode, Action: a, Datacenter: nd.Datacenter,
		Node: &gate.Node{Name: nd.Node, ID: nd.ID, Address: nd.Address, TaggedAddresses: nd.TaggedAddresses, Meta: nd.Meta}}, nil
}

// txnService: a service op. Consul gets and deletes a service by node and ID
// and never checks the name the body gives, so only a set or cas (which
// registers the service given, whole) names its service; a get or delete
// carries the node and ID alone, which only intentions without `services`
// match. A set or cas on an ID the node already holds under another name is
// also an op on that service (takeover).
func (srv *Server) txnService(s *api.ServiceTxnOp, agent []guardedAddr) (gate.Op, error) {
	a, err := catalogAction("Service", string(s.Verb))
	if err != nil {
		return gate.Op{}, err
	}
	sv := &s.Service
	target := &gate.Service{ID: sv.ID, Node: s.Node}
	if target.ID == "" {
		target.ID = sv.Service // Consul's servicePreApply default
	}
	if a == gate.ActionRegister {
		target = srv.catalogServiceOf(sv, s.Node, agent)
	}
	return gate.Op{Resource: gate.ResourceService, Action: a, Service: target}, nil
}

// txnCheck: a check op. Consul overwrites a check's ServiceName with that of
// the service registered under its ServiceID, so the name in the body is not
// trusted: the service is read from the node's services in the catalog
// (once per node), and the op then says nothing of it when denied (unseen).
func (s *Server) txnCheck(q *request, c *api.CheckTxnOp, agent []guardedAddr, nodes map[string][]*api.AgentService) (op gate.Op, unseen bool, err error) {
	a, err := catalogAction("Check", string(c.Verb))
	if err != nil {
		return gate.Op{}, false, err
	}
	hc := &c.Check
	owner := &gate.Service{ID: hc.ServiceID, Node: hc.Node}
	if hc.ServiceID != "" {
		svcs, ok := nodes[hc.Node]
		if !ok && len(nodes) >= txnMaxCheckNodes {
			return gate.Op{}, false, httpError{code: http.StatusBadRequest,
				msg: fmt.Sprintf("storegate: a transaction's checks may name services on at most %d nodes", txnMaxCheckNodes)}
		}
		if !ok {
			var out bytes.Buffer
			switch err := s.upstream(q.r.Context(), http.MethodGet, "/v1/catalog/node-services/"+url.PathEscape(hc.Node), q.dc, nil, &out); {
			case err == nil:
				var ns struct{ Services []*api.AgentService }
				if err := json.Unmarshal(out.Bytes(), &ns); err != nil {
					return gate.Op{}, false, unavailable("reading a node's services", err)
				}
				svcs = ns.Services
			case err != errNotFound:
				return gate.Op{}, false, unavailable("looking up a node's services", err)
			}
			nodes[hc.Node] = svcs
		}
		for _, sv := range svcs {
			if sv != nil && strings.EqualFold(sv.ID, hc.ServiceID) {
				owner.Name, owner.Kind, owner.Address, owner.Port = sv.Service, string(sv.Kind), sv.Address, sv.Port
				owner.TaggedAddresses = tagged(sv.TaggedAddresses)
			}
		}
		unseen = true
	}
	var within *gate.Service
	if hc.ServiceID != "" {
		within = owner
	}
	owner.Checks = s.healthCheckOf(hc, within, agent)
	return gate.Op{Resource: gate.ResourceCheck, Action: a, Service: owner}, unseen, nil
}
