package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/storegate/storegate/gate"
)

// ReservedPrefix is the Consul KV prefix where the gateway keeps what it
// must remember across requests and replicas — which identity owns which
// session. No caller can read or write it.
const ReservedPrefix = "_storegate/"

var reservedOpPrefix = []byte("/" + ReservedPrefix)

// ownerPath is the KV path of a session's owner record.
func ownerPath(id string) string {
	return "/v1/kv/" + ReservedPrefix + "sessions/" + url.PathEscape(id)
}

const maxSessionBody = 64 << 10

// sessionCreate: the caller becomes the session's owner. The owner is
// recorded in Consul itself after the agent created the session; if that
// fails the session is destroyed again, so no unowned session is handed out.
func (s *Server) sessionCreate(q *request) error {
	if _, err := readBody(q, maxSessionBody, "session"); err != nil {
		return err
	}
	q.ops = append(q.ops, gate.Op{Resource: gate.ResourceSession, Action: gate.ActionGrant})
	dc := q.query.Get("dc")
	q.after = func(resp *http.Response) error {
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
		if err := s.upstream(ctx, http.MethodPut, ownerPath(out.ID), dc, []byte(q.caller.String()), nil); err != nil {
			_ = s.upstream(ctx, http.MethodPut, "/v1/session/destroy/"+url.PathEscape(out.ID), dc, nil, nil)
			return fmt.Errorf("storegate: recording the session's owner: %w", err)
		}
		return nil
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

// ownedSession checks that the caller owns session id.
func (s *Server) ownedSession(q *request, id string) error {
	var owner bytes.Buffer
	err := s.upstream(q.r.Context(), http.MethodGet, ownerPath(id)+"?raw", q.query.Get("dc"), nil, &owner)
	switch {
	case err == errNotFound:
		return denial(fmt.Sprintf("session %s was not created through storegate", id))
	case err != nil:
		return httpError{code: http.StatusBadGateway, msg: "storegate: looking up the session's owner: " + err.Error()}
	case owner.String() != q.caller.String():
		return denial(fmt.Sprintf("session %s belongs to another identity", id))
	}
	return nil
}

func (s *Server) sessionRenew(q *request) error {
	id, err := sessionID(q, "/v1/session/renew/")
	if err != nil {
		return err
	}
	if err := s.ownedSession(q, id); err != nil {
		return err
	}
	q.ops = append(q.ops, gate.Op{Resource: gate.ResourceSession, Action: gate.ActionKeepalive, Session: id})
	return nil
}

func (s *Server) sessionDestroy(q *request) error {
	id, err := sessionID(q, "/v1/session/destroy/")
	if err != nil {
		return err
	}
	if err := s.ownedSession(q, id); err != nil {
		return err
	}
	q.ops = append(q.ops, gate.Op{Resource: gate.ResourceSession, Action: gate.ActionRevoke, Session: id})
	dc := q.query.Get("dc")
	q.after = func(resp *http.Response) error {
		if resp.StatusCode == http.StatusOK {
			_ = s.upstream(context.WithoutCancel(q.r.Context()), http.MethodDelete, ownerPath(id), dc, nil, nil)
		}
		return nil
	}
	return nil
}

func (s *Server) sessionRead(q *request) error {
	op := gate.Op{Resource: gate.ResourceSession, Action: gate.ActionRead}
	if id, ok := strings.CutPrefix(q.r.URL.Path, "/v1/session/info/"); ok {
		if id == "" {
			return httpError{code: http.StatusBadRequest, msg: "Missing session"}
		}
		op.Session = id
	}
	q.ops = append(q.ops, op)
	return nil
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
