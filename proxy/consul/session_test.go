package consul

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

// TestSessionOwners: a session belongs to the identity that created it
// through the gateway. Acting with another identity's session, or with one
// not created through storegate, is refused as a derived denial that names
// neither the session's owner nor anything else; the owner is looked up only
// once the caller's own ops are allowed; and the owner records are out of
// every caller's reach, the gate's reserved prefix.
func TestSessionOwners(t *testing.T) {
	e := newEnv(t)
	const generic = "Permission denied: " + derivedReason
	create := func(who string) string {
		t.Helper()
		code, out := e.do(t, who, http.MethodPut, "/v1/session/create", []byte(`{"Name":"`+who+`","TTL":"60s"}`))
		var s struct{ ID string }
		if code != http.StatusOK || json.Unmarshal([]byte(out), &s) != nil || s.ID == "" {
			t.Fatalf("session create as %s: %d %s", who, code, out)
		}
		return s.ID
	}
	mine, theirs := create("batch"), create("admin")
	_, direct := e.do(t, "", http.MethodPut, "/v1/session/create", []byte(`{"Name":"direct"}`))
	var d struct{ ID string }
	if err := json.Unmarshal([]byte(direct), &d); err != nil || d.ID == "" {
		t.Fatalf("direct session create: %q %v", direct, err)
	}
	lookup := func(id string) string { return "GET /v1/kv/" + ReservedPrefix + "sessions/" + id }
	lockTxn := func(id string) []byte {
		op := kvOp(api.KVLock, "batch/t", "x")
		op.KV.Session = id
		return txnBody(t, op)
	}

	cases := []struct {
		name, who, method, path string
		body                    []byte
		code                    int
		want                    string // the whole body for a 403
		// lookedUp: whether the request may make the gateway read the
		// session's owner record
		lookedUp bool
		// unwritten: a key that must not exist in the store afterwards
		unwritten string
	}{
		{name: "owner renews", who: "batch", method: "PUT", path: "/v1/session/renew/" + mine, code: 200, want: mine, lookedUp: true},
		{name: "another identity's, renew", who: "batch", method: "PUT", path: "/v1/session/renew/" + theirs, code: 403, want: generic, lookedUp: true},
		{name: "another identity's, destroy", who: "batch", method: "PUT", path: "/v1/session/destroy/" + theirs, code: 403, want: generic, lookedUp: true},
		{name: "another identity's, acquire", who: "batch", method: "PUT", path: "/v1/kv/batch/a?acquire=" + theirs, body: []byte("x"),
			code: 403, want: generic, lookedUp: true, unwritten: "batch/a"},
		{name: "another identity's, release", who: "batch", method: "PUT", path: "/v1/kv/batch/a?release=" + theirs, body: []byte("x"),
			code: 403, want: generic, lookedUp: true, unwritten: "batch/a"},
		{name: "another identity's, txn lock", who: "batch", method: "PUT", path: "/v1/txn", body: lockTxn(theirs),
			code: 403, want: generic, lookedUp: true, unwritten: "batch/t"},
		{name: "owner renews, upper case", who: "batch", method: "PUT", path: "/v1/session/renew/" + strings.ToUpper(mine), code: 200, want: mine, lookedUp: true},
		{name: "another identity's, upper case", who: "batch", method: "PUT", path: "/v1/session/renew/" + strings.ToUpper(theirs), code: 403, want: generic, lookedUp: true},
		{name: "admin with batch's", who: "admin", method: "PUT", path: "/v1/session/renew/" + mine, code: 403, want: generic, lookedUp: true},
		{name: "not created through storegate", who: "batch", method: "PUT", path: "/v1/session/renew/" + d.ID, code: 403, want: generic, lookedUp: true},
		{name: "no such session", who: "batch", method: "PUT", path: "/v1/session/renew/00000000-0000-0000-0000-000000000000", code: 403, want: generic, lookedUp: true},
		// IDs Consul never hands out have no owner: nothing to look up.
		{name: "odd ID", who: "batch", method: "PUT", path: "/v1/session/renew/..%2F..%2Fx%00", code: 403, want: generic},
		{name: "ID with a slash", who: "batch", method: "PUT", path: "/v1/kv/batch/a?acquire=" + url.QueryEscape(theirs+"/x"), body: []byte("x"),
			code: 403, want: generic, unwritten: "batch/a"},
		{name: "empty ID", who: "batch", method: "PUT", path: "/v1/kv/batch/a?acquire=", body: []byte("x"), code: 403, want: generic, unwritten: "batch/a"},
		// web may use no session: nothing is looked up for it.
		{name: "no session rights, renew", who: "web", method: "PUT", path: "/v1/session/renew/" + mine, code: 403,
			want: `Permission denied: no intention allows spiffe://example.org/web to keepalive session`},
		{name: "no session rights, destroy", who: "web", method: "PUT", path: "/v1/session/destroy/" + theirs, code: 403,
			want: `Permission denied: no intention allows spiffe://example.org/web to revoke session`},
		{name: "no lock rights", who: "web", method: "PUT", path: "/v1/kv/app/x?acquire=" + mine, body: []byte("x"), code: 403,
			want: `Permission denied: no intention allows spiffe://example.org/web to acquire lock "/app/x"`, unwritten: "app/x"},
		{name: "no key rights", who: "web", method: "PUT", path: "/v1/txn", body: lockTxn(mine), code: 403,
			want: `Permission denied: no intention allows spiffe://example.org/web to write kv "/batch/t"`, unwritten: "batch/t"},
		{name: "owner locks", who: "batch", method: "PUT", path: "/v1/kv/batch/l?acquire=" + mine, body: []byte("x"), code: 200, want: "true", lookedUp: true},
		{name: "owner unlocks in a txn", who: "batch", method: "PUT", path: "/v1/txn", body: txnBody(t,
			&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVUnlock, Key: "batch/l", Session: mine}}), code: 200, want: "batch/l", lookedUp: true},
		{name: "owner destroys", who: "batch", method: "PUT", path: "/v1/session/destroy/" + mine, code: 200, want: "true", lookedUp: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := c.path[strings.LastIndexAny(c.path, "/=")+1:]
			if c.path == "/v1/txn" {
				var ops api.TxnOps
				_ = json.Unmarshal(c.body, &ops)
				id = ops[0].KV.Session
			}
			if u, err := url.PathUnescape(id); err == nil {
				id = u
			}
			seen := len(e.rec.all())
			code, out := e.do(t, c.who, c.method, c.path, c.body)
			if code != c.code || (code == 403 && !strings.HasPrefix(out, c.want)) || !strings.Contains(out, c.want) {
				t.Errorf("%s %s as %s = %d %q; want %d %q", c.method, c.path, c.who, code, out, c.code, c.want)
			}
			if code == 403 && c.want == generic && out != generic {
				t.Errorf("a derived denial says more than %q: %q", generic, out)
			}
			looked := false
			for _, s := range e.rec.all()[seen:] {
				if strings.HasPrefix(s, "GET /v1/kv/"+ReservedPrefix) {
					looked = true
				}
				if c.code == 403 && !strings.HasPrefix(s, "GET /v1/kv/"+ReservedPrefix) {
					t.Errorf("a refused request reached the agent: %s", s)
				}
			}
			if looked != c.lookedUp {
				t.Errorf("owner looked up: %v, want %v (agent saw %v)", looked, c.lookedUp, e.rec.all()[seen:])
			}
			if looked && e.rec.count(lookup(strings.ToLower(id))) == 0 {
				t.Errorf("the owner of %s was not what was looked up: %v", id, e.rec.all()[seen:])
			}
			if c.unwritten != "" {
				if code, got := e.do(t, "", http.MethodGet, "/v1/kv/"+c.unwritten+"?raw", nil); code != http.StatusNotFound {
					t.Errorf("%s was written: %d %q", c.unwritten, code, got)
				}
			}
		})
	}
	// In the store: admin's session lives on; batch's is gone, and its owner
	// record with it.
	if code, out := e.do(t, "", http.MethodGet, "/v1/session/info/"+theirs, nil); code != 200 || !strings.Contains(out, theirs) {
		t.Errorf("admin's session after the refused destroy: %d %s", code, out)
	}
	if code, _ := e.do(t, "", http.MethodGet, "/v1/kv/"+ReservedPrefix+"sessions/"+mine, nil); code != http.StatusNotFound {
		t.Errorf("batch's owner record after destroy: %d", code)
	}
	if code, out := e.do(t, "", http.MethodGet, "/v1/kv/"+ReservedPrefix+"sessions/"+theirs+"?raw", nil); code != 200 || out != "spiffe://example.org/admin" {
		t.Errorf("admin's owner record: %d %q", code, out)
	}

	// The owner records are the gate's reserved prefix: out of reach of
	// every caller, admin included, and never listed.
	const reserved = "Permission denied: keys under " + ReservedPrefix + " are reserved for storegate"
	for _, c := range []struct {
		name, method, path string
		body               []byte
		code               int
		want               string
	}{
		{"read a record", "GET", "/v1/kv/" + ReservedPrefix + "sessions/" + theirs, nil, 403, reserved},
		{"overwrite a record", "PUT", "/v1/kv/" + ReservedPrefix + "sessions/" + theirs, []byte("spiffe://example.org/batch"), 403, reserved},
		{"delete the records", "DELETE", "/v1/kv/" + ReservedPrefix + "?recurse", nil, 403, reserved},
		{"delete everything", "DELETE", "/v1/kv/?recurse", nil, 403, reserved},
		{"txn read", "PUT", "/v1/txn", txnBody(t, kvOp(api.KVGet, ReservedPrefix+"sessions/"+theirs, "")), 403, reserved},
		{"txn tree", "PUT", "/v1/txn", txnBody(t, kvOp(api.KVGetTree, "_", "")), 403, reserved},
		{"txn set", "PUT", "/v1/txn", txnBody(t, kvOp(api.KVSet, ReservedPrefix+"x", "v")), 403, reserved},
		{"list the records", "GET", "/v1/kv/" + ReservedPrefix + "?recurse", nil, 404, ""},
		{"list their keys", "GET", "/v1/kv/" + ReservedPrefix + "?keys", nil, 404, ""},
		{"list everything", "GET", "/v1/kv/?recurse", nil, 200, "batch/l"},
		{"list every key", "GET", "/v1/kv/?keys", nil, 200, "batch/l"},
	} {
		t.Run("reserved "+c.name, func(t *testing.T) {
			code, out := e.do(t, "admin", c.method, c.path, c.body)
			if code != c.code || !strings.Contains(out, c.want) || code == 403 && !strings.HasPrefix(out, c.want) {
				t.Errorf("%s %s = %d %q; want %d %q", c.method, c.path, code, out, c.code, c.want)
			}
			if strings.Contains(out, ReservedPrefix) && code != 403 {
				t.Errorf("an answer shows the gateway's records: %s", out)
			}
		})
	}
	if code, out := e.do(t, "", http.MethodGet, "/v1/kv/"+ReservedPrefix+"sessions/"+theirs+"?raw", nil); code != 200 || out != "spiffe://example.org/admin" {
		t.Errorf("admin's owner record after the refused writes: %d %q", code, out)
	}
}

// TestNewNeedsReserved: a gate that lets callers reach the owner records
// is refused.
func TestNewNeedsReserved(t *testing.T) {
	up, _ := url.Parse("http://127.0.0.1:1")
	if _, err := New(gate.New(allowAll{}, slog.Default()), nil, Options{Upstream: up}); err == nil {
		t.Error("New accepted a gate without the reserved prefix")
	}
	if _, err := New(gate.New(allowAll{}, slog.Default(), gate.WithReserved([]byte("/_storegate/"))), nil, Options{Upstream: up}); err != nil {
		t.Errorf("New: %v", err)
	}
}

type allowAll struct{}

func (allowAll) Authorize(context.Context, gate.Identity, *gate.Op) (gate.Decision, error) {
	return gate.Decision{Effect: gate.Allow}, nil
}

// TestSessionCreateBodies: a session create is judged on what Consul will
// bind the session to. batch may use sessions but may read no node or check:
// a session on another node, on a node check other than serfHealth, or on a
// service's check is refused, and none is created; the defaults are not.
func TestSessionCreateBodies(t *testing.T) {
	e := newEnv(t)
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/agent/service/register",
		[]byte(`{"Name":"api","ID":"api-1","Port":9001,"Check":{"CheckID":"api-check","TTL":"60s","Status":"passing"}}`)); code != 200 {
		t.Fatalf("admin registers api: %d %s", code, out)
	}
	count := func() int {
		_, out := e.do(t, "", http.MethodGet, "/v1/session/list", nil)
		return strings.Count(out, `"ID"`)
	}
	before := count()
	for _, body := range []string{
		`{"Node":"elsewhere"}`,
		`{"NodeChecks":["serfHealth","maintenance"]}`,
		`{"Checks":["serfHealth","other"]}`,
		`{"ServiceChecks":[{"ID":"api-check"}]}`,
		`{"servicechecks":[{"ID":"api-check"}]}`,
	} {
		code, out := e.do(t, "batch", http.MethodPut, "/v1/session/create", []byte(body))
		if code != 403 || strings.Contains(out, "api") {
			t.Errorf("create %s: %d %s", body, code, out)
		}
	}
	if n := count(); n != before {
		t.Errorf("%d sessions created by refused requests", n-before)
	}
	for _, body := range []string{"", `{"Name":"x","TTL":"15s","Behavior":"delete","LockDelay":"1s"}`, `{"NodeChecks":["serfHealth"]}`, `{"Checks":[]}`} {
		if code, out := e.do(t, "batch", http.MethodPut, "/v1/session/create", []byte(body)); code != 200 {
			t.Errorf("create %q: %d %s", body, code, out)
		}
	}
}
