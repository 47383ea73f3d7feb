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

	"github.com/storegate/storegate/gate"
)

// ReservedPrefix is the Consul KV prefix where the gateway keeps what it
// must remember across requests and replicas — which identity owns which
// session. No caller can read or write it: the gate reserves the op keys
// under reservedOpPrefix (gate.WithReserved), for both fronts.
const ReservedPrefix = "_storegate/"

// reservedOpPrefix is ReservedPrefix as an op key.
var reservedOpPrefix = []byte("/" + ReservedPrefix)

// ownerPath is the KV path of a session's owner record. Consul reads a
// session ID as hex, in either case, and hands IDs out in lower case: the
// records are kept under that spelling.
func ownerPath(id string) string {
	return "/v1/kv/" + ReservedPrefix + "sessions/" + url.PathEscape(strings.ToLower(id))
}

const maxSessionBody = 64 << 10

// sessionCreate: the caller becomes the session's owner. The owner is
// recorded in Consul itself after the agent created the session; if that
// fails the session is destroyed again, so no unowned session is handed out.
//
// The body is read as Consul reads it (agent/session_endpoint.go: Consul's
// defaults, then the body over them, then fixupEmptySessionChecks) and shown
// to policy whole: the node the session is bound to and the checks whose
// failure ends it. A session on another node is a read of that node; a node
// check other than Consul's default serfHealth is a read of the node's
// checks; a service check is, once the rest is allowed, a read of the checks
// of the service that holds it (derived: its denial names nothing) — a
// session tied to a check tells its holder when that check fails.
func (s *Server) sessionCreate(q *request) error {
	body, err := readBody(q, maxSessionBody, "session")
	if err != nil {
		return err
	}
	if _, err := s.agentPorts(q.r.Context()); err != nil { // the agent's node name
		return unavailable("reading the Consul agent's node", err)
	}
	ns, err := decodeSession(body, s.agentNode())
	if err != nil {
		return httpError{code: http.StatusBadRequest, msg: "Request decode failed: " + err.Error()}
	}
	q.ask(gate.Op{Resource: gate.ResourceSession, Action: gate.ActionGrant, NewSession: ns})
	if ns.Node != s.agentNode() {
		q.ask(gate.Op{Resource: gate.ResourceNode, Action: gate.ActionRead, Node: &gate.Node{Name: ns.Node}})
	}
	for _, c := range ns.NodeChecks {
		if c != serfCheck {
			q.ask(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRead, Node: &gate.Node{Name: ns.Node},
				Service: &gate.Service{Node: ns.Node, Checks: []gate.Check{{ID: c}}}})
		}
	}
	if len(ns.ServiceChecks) > 0 {
		q.req.DeriveAfter(func(ctx context.Context, _ *gate.Request) error {
			checks, err := s.nodeChecks(ctx, ns.Node, q.dc)
			if err != nil {
				return err
			}
			for _, id := range ns.ServiceChecks {
				owner := &gate.Service{Node: ns.Node, Checks: []gate.Check{{ID: id}}}
				for _, h := range checks {
					if h.CheckID == id && h.ServiceID != "" {
						owner.Name, owner.ID = h.ServiceName, h.ServiceID
					}
				}
				q.derive(gate.Op{Resource: gate.ResourceCheck, Action: gate.ActionRead, Service: owner})
			}
			return nil
		})
	}
	q.after = sessionCreated
	return nil
}

// serfCheck is the node check Consul binds a session to by default.
const serfCheck = "serfHealth"

// decodeSession reads a session create body as Consul 1.14.11 does: its
// defaults (the agent's node, serfHealth, release), the first JSON value of
// the body over them (encoding/json, names in any case), then
// fixupEmptySessionChecks. The deprecated Checks are node checks too.
func decodeSession(body []byte, agentNode string) (*gate.NewSession, error) {
	in := struct {
		Node          string
		LockDelay     any
		Behavior      string
		TTL           string
		NodeChecks    []string
		ServiceChecks []struct{ ID, Namespace string }
		Checks        []string
	}{Node: agentNode, NodeChecks: []string{serfCheck}, Checks: []string{serfCheck}, Behavior: "release"}
	if len(body) > 0 {
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&in); err != nil {
			return nil, err
		}
	}
	switch {
	case len(in.Checks) == 0:
		in.NodeChecks = nil
	case len(in.Checks) == 1 && in.Checks[0] == serfCheck:
		in.Checks = nil
	case len(in.NodeChecks) == 0:
		in.Checks = nil
	}
	ns := &gate.NewSession{Node: in.Node, Behavior: in.Behavior, TTL: in.TTL}
	for _, c := range append(in.NodeChecks, in.Checks...) {
		if !slices.Contains(ns.NodeChecks, c) {
			ns.NodeChecks = append(ns.NodeChecks, c)
		}
	}
	for _, c := range in.ServiceChecks {
		ns.ServiceChecks = append(ns.ServiceChecks, c.ID)
	}
	return ns, nil
}

// sessionCreated records the owner of the session the agent just created.
func sessionCreated(s *Server, q *request, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var out struct{ ID string }
	if err := json.Unmarshal(b, &out); err != nil || out.ID == "" {
		return fmt.Errorf("storegate: session create answer without an ID: %s", b)
	}
	ctx := context.WithoutCancel(q.r.Context())
	if err := s.upstream(ctx, http.MethodPut, ownerPath(out.ID), q.dc, []byte(q.req.Caller().String()), nil); err != nil {
		_ = s.upstream(ctx, http.MethodPut, "/v1/session/destroy/"+url.PathEscape(out.ID), q.dc, nil, nil)
		return fmt.Errorf("storegate: recording the session's owner: %w", err)
	}
	return nil
}

// sessionID is the session ID after prefix in the path, as Consul reads it.
func sessionID(q *request, prefix string) (string, error) {
	id := strings.TrimPrefix(q.r.URL.Path, prefix)
	if id == "" {
		return "", httpError{code: http.StatusBadRequest, msg: "Missing session"}
	}
	return id, nil
}

// useSession makes acting with session id (act: keepalive, revoke,
// acquire, release) part of q. Once the caller's own ops are allowed — not
// before: the look-up is upstream work the caller must have earned — the
// session's owner is looked up; a session that is not the caller's own (or
// has no owner on record: it was not created through storegate) adds a
// foreign op, which policy judges, and is then refused whatever policy
// said, as a derived denial that names neither the session nor its owner.
//
// The refusal after policy stays until intentions can name owners: every
// shipped intention that allows sessions would otherwise allow another
// identity's.
func (s *Server) useSession(q *request, act gate.Action, id string) {
	q.req.DeriveAfter(func(ctx context.Context, r *gate.Request) error {
		var owner string
		known := false
		if isUUID(id) { // Consul's own session IDs: anything else has no owner on record
			var err error
			if owner, known, err = s.sessionOwner(ctx, q, id); err != nil {
				return err
			}
		}
		if known && owner == r.Caller().String() {
			return nil
		}
		i := r.Len()
		q.derive(gate.Op{Resource: gate.ResourceSession, Action: act, Session: id, Foreign: true, Owner: owner})
		r.DeriveAfter(func(context.Context, *gate.Request) error {
			detail := fmt.Sprintf("session %s belongs to %s", id, owner)
			if !known {
				detail = fmt.Sprintf("session %s was not created through storegate", id)
			}
			return s.derivedDenial(q, r.Op(i), detail)
		})
		return nil
	})
}

// isUUID reports whether id is spelled as the session IDs Consul hands out.
func isUUID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// sessionOwner reads the identity that created session id through a
// gateway (known false: none on record).
func (s *Server) sessionOwner(ctx context.Context, q *request, id string) (owner string, known bool, err error) {
	var out bytes.Buffer
	switch err := s.upstream(ctx, http.MethodGet, ownerPath(id)+"?raw", q.dc, nil, &out); {
	case err == errNotFound:
		return "", false, nil
	case err != nil:
		return "", false, unavailable("looking up the session's owner", err)
	}
	return out.String(), true, nil
}

func (s *Server) sessionRenew(q *request) error {
	id, err := sessionID(q, "/v1/session/renew/")
	if err != nil {
		return err
	}
	q.ask(gate.Op{Resource: gate.ResourceSession, Action: gate.ActionKeepalive, Session: id})
	s.useSession(q, gate.ActionKeepalive, id)
	return nil
}

func (s *Server) sessionDestroy(q *request) error {
	id, err := sessionID(q, "/v1/session/destroy/")
	if err != nil {
		return err
	}
	q.ask(gate.Op{Resource: gate.ResourceSession, Action: gate.ActionRevoke, Session: id})
	s.useSession(q, gate.ActionRevoke, id)
	q.session, q.after = id, sessionDestroyed
	return nil
}

// sessionDestroyed forgets the owner of the session the agent destroyed.
func sessionDestroyed(s *Server, q *request, resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		_ = s.upstream(context.WithoutCancel(q.r.Context()), http.MethodDelete, ownerPath(q.session), q.dc, nil, nil)
	}
	return nil
}

// sessionRead decodes the session reads: info of one, the sessions of a
// node, every session. Each session stays its creator's: the answer is
// narrowed to the caller's own sessions and those policy lets it read as
// another identity's (a foreign read, judged by owner), so another's session
// looks exactly like one that does not exist.
func (s *Server) sessionRead(q *request) error {
	op := gate.Op{Resource: gate.ResourceSession, Action: gate.ActionRead}
	if id, ok := strings.CutPrefix(q.r.URL.Path, "/v1/session/info/"); ok {
		if id == "" {
			return httpError{code: http.StatusBadRequest, msg: "Missing session"}
		}
		op.Session = id
	}
	q.ask(op)
	q.after = filterSessions
	return nil
}

// filterSessions narrows a session list to what the caller may read.
func filterSessions(s *Server, q *request, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var list []json.RawMessage
	if err := readJSON(resp, &list); err != nil {
		return err
	}
	owners, err := s.sessionOwners(resp.Request.Context(), q)
	if err != nil {
		return err
	}
	caller := q.req.Caller().String()
	kept := list[:0]
	for _, raw := range list {
		var se struct{ ID string }
		if err := json.Unmarshal(raw, &se); err != nil {
			return fmt.Errorf("storegate: decoding a session: %w", err)
		}
		owner, known := owners[strings.ToLower(se.ID)]
		if known && owner == caller || q.req.Allows(resp.Request.Context(),
			&gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceSession, Action: gate.ActionRead,
				Method: q.route, Session: se.ID, Foreign: true, Owner: owner}) {
			kept = append(kept, raw)
		}
	}
	markFiltered(resp, len(kept) < len(list))
	if kept == nil {
		kept = []json.RawMessage{}
	}
	return writeJSON(resp, kept, false)
}

// sessionOwners reads every session owner record (lower-case ID → owner).
func (s *Server) sessionOwners(ctx context.Context, q *request) (map[string]string, error) {
	var out bytes.Buffer
	switch err := s.upstream(ctx, http.MethodGet, "/v1/kv/"+ReservedPrefix+"sessions/?recurse", q.dc, nil, &out); {
	case err == errNotFound:
		return map[string]string{}, nil
	case err != nil:
		return nil, unavailable("looking up session owners", err)
	}
	var entries []struct {
		Key   string
		Value []byte
	}
	if err := json.Unmarshal(out.Bytes(), &entries); err != nil {
		return nil, unavailable("reading session owners", err)
	}
	m := make(map[string]string, len(entries))
	for _, e := range entries {
		m[strings.TrimPrefix(e.Key, ReservedPrefix+"sessions/")] = string(e.Value)
	}
	return m, nil
}

var errNotFound = fmt.Errorf("not found")

// upstream makes one request of the gateway's own to the agent, with the
// gateway's token; out, if set, receives the body of a 200.
func (s *Server) upstream(ctx context.Context, method, path, dc string, body []byte, out io.Writer) error {
	u := *s.opts.Upstream
	p, rawQuery, _ := strings.Cut(path, "?")
	u.Path, u.RawPath = "", ""
	ref, err := url.Parse(p)
	if err != nil {
		return err
	}
	u.Path, u.RawPath = ref.Path, ref.RawPath
	q := url.Values{}
	if rawQuery != "" {
		q, _ = url.ParseQuery(rawQuery)
	}
	if dc != "" {
		q.Set("dc", dc)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	if s.opts.Token != "" {
		req.Header.Set("X-Consul-Token", s.opts.Token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return errNotFound
	case resp.StatusCode != http.StatusOK:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", method, p, resp.Status, b)
	case out != nil:
		_, err = io.Copy(out, resp.Body)
		return err
	}
	return nil
}
