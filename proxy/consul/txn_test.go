package consul

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func txnBody(t *testing.T, ops ...*api.TxnOp) []byte {
	t.Helper()
	b, err := json.Marshal(api.TxnOps(ops))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func kvOp(verb api.KVOp, key, value string) *api.TxnOp {
	op := &api.TxnOp{KV: &api.KVTxnOp{Verb: verb, Key: key}}
	if value != "" {
		op.KV.Value = []byte(value)
	}
	return op
}

func TestTxn(t *testing.T) {
	e := newEnv(t)
	// A session created behind the gateway's back: no caller owns it.
	code, out := e.do(t, "", http.MethodPut, "/v1/session/create", []byte(`{"Name":"direct"}`))
	if code != http.StatusOK {
		t.Fatalf("creating a session directly: %d %s", code, out)
	}
	var sess struct{ ID string }
	if err := json.Unmarshal([]byte(out), &sess); err != nil {
		t.Fatal(err)
	}
	if code, out := e.do(t, "", http.MethodPut, "/v1/kv/app/secret/x", []byte("s")); code != http.StatusOK {
		t.Fatalf("seeding: %d %s", code, out)
	}

	tooMany := make([]*api.TxnOp, txnMaxOps+1)
	for i := range tooMany {
		tooMany[i] = kvOp(api.KVSet, fmt.Sprintf("app/many/%d", i), "x")
	}
	lock := kvOp(api.KVLock, "app/locks/l", "me")
	lock.KV.Session = sess.ID

	const denied = "Permission denied: "
	cases := []struct {
		name     string
		who      string
		body     []byte
		want     int
		wantBody string
		// written: keys the request must have written (value "v"), or not
		// (value "")
		written map[string]string
		// forwarded: whether the txn must reach Consul
		forwarded bool
	}{
		{name: "allowed", who: "web", want: http.StatusOK, forwarded: true,
			body:    txnBody(t, kvOp(api.KVSet, "app/t1", "v"), kvOp(api.KVGet, "app/t1", ""), kvOp(api.KVCheckNotExists, "app/none", "")),
			written: map[string]string{"app/t1": "v"}},
		{name: "one forbidden op denies all", who: "web", want: http.StatusForbidden, wantBody: denied + `no intention allows spiffe://example.org/web to write kv "/other/x"`,
			body:    txnBody(t, kvOp(api.KVSet, "app/t2", "v"), kvOp(api.KVSet, "other/x", "v")),
			written: map[string]string{"app/t2": "", "other/x": ""}},
		{name: "denied key read", who: "web", want: http.StatusForbidden, wantBody: denied + `deny intention "web-no-secrets" matches`,
			body: txnBody(t, kvOp(api.KVGet, "app/secret/x", ""))},
		{name: "check-index is a read", who: "web", want: http.StatusForbidden, wantBody: denied,
			body: txnBody(t, kvOp(api.KVCheckIndex, "app/secret/x", ""))},
		{name: "partly readable tree", who: "web", want: http.StatusForbidden, wantBody: denied + "only part of the range is readable",
			body: txnBody(t, kvOp(api.KVGetTree, "app/", ""))},
		{name: "partly deletable tree", who: "web", want: http.StatusForbidden, wantBody: denied,
			body: txnBody(t, kvOp(api.KVDeleteTree, "app/", ""))},
		{name: "reserved prefix", who: "admin", want: http.StatusForbidden, wantBody: denied + "keys under _storegate/ are reserved",
			body: txnBody(t, kvOp(api.KVGetTree, "", ""))},
		// The session is derived from the request: its denial says nothing
		// of it (nor of who owns it).
		{name: "lock with a session not created through storegate", who: "web", want: http.StatusForbidden,
			wantBody: denied + "the request touches what the caller may not use",
			body:     txnBody(t, lock), written: map[string]string{"app/locks/l": ""}},
		{name: "tree allowed to admin", who: "admin", want: http.StatusOK, forwarded: true,
			body: txnBody(t, kvOp(api.KVGetTree, "app/", ""))},
		{name: "over the op limit", who: "admin", want: http.StatusRequestEntityTooLarge,
			wantBody: "Transaction contains too many operations (129 > 128)",
			body:     txnBody(t, tooMany...), written: map[string]string{"app/many/0": ""}},
		{name: "malformed JSON", who: "admin", want: http.StatusBadRequest, wantBody: "Failed to parse body: ",
			body: []byte(`[{"KV":{"Verb":"set","Key":"app/m","Value":"dg=="}}, {"KV":`), written: map[string]string{"app/m": ""}},
		{name: "unknown field, as Consul", who: "admin", want: http.StatusBadRequest, wantBody: `Failed to parse body: json: unknown field "Bogus"`,
			body: []byte(`[{"KV":{"Verb":"set","Key":"app/u","Value":"dg==","Bogus":1}}]`), written: map[string]string{"app/u": ""}},
		{name: "value not base64", who: "admin", want: http.StatusBadRequest, wantBody: "Failed to parse body: illegal base64",
			body: []byte(`[{"KV":{"Verb":"set","Key":"app/b","Value":"v!"}}]`), written: map[string]string{"app/b": ""}},
		{name: "empty body", who: "admin", want: http.StatusBadRequest, wantBody: "Failed to parse body: EOF"},
		{name: "unknown verb", who: "admin", want: http.StatusBadRequest, wantBody: `unknown KV verb "frob"`,
			body: []byte(`[{"KV":{"Verb":"frob","Key":"app/f"}}]`)},
		{name: "op with nothing in it", who: "admin", want: http.StatusBadRequest, wantBody: "has no KV, Node, Service or Check",
			body: []byte(`[{}]`)},
		{name: "body over the size limit", who: "admin", want: http.StatusRequestEntityTooLarge, wantBody: "too large, max size: 524288 bytes",
			body: txnBody(t, kvOp(api.KVSet, "app/big", strings.Repeat("x", 512<<10)))},
		{name: "node op", who: "web", want: http.StatusForbidden, wantBody: denied,
			body: txnBody(t, &api.TxnOp{Node: &api.NodeTxnOp{Verb: api.NodeGet, Node: api.Node{Node: testNode}}})},
		{name: "service set by name", who: "web", want: http.StatusOK, forwarded: true,
			body: txnBody(t, &api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: testNode,
				Service: api.AgentService{ID: "web-t1", Service: "web-t1", Port: 80}}})},
		{name: "service of another name", who: "web", want: http.StatusForbidden, wantBody: denied + `no intention allows spiffe://example.org/web to register service "db"`,
			body: txnBody(t, &api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: testNode,
				Service: api.AgentService{ID: "db", Service: "db"}}})},
		{name: "service delete names an ID only", who: "web", want: http.StatusForbidden, wantBody: denied,
			body: txnBody(t, &api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceDelete, Node: testNode,
				Service: api.AgentService{ID: "consul", Service: "web-lie"}}})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.rec.count("PUT /v1/txn")
			code, out := e.do(t, c.who, http.MethodPut, "/v1/txn", c.body)
			if code != c.want || !strings.Contains(out, c.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", code, out, c.want, c.wantBody)
			}
			if got := e.rec.count("PUT /v1/txn") - before; (got > 0) != c.forwarded {
				t.Errorf("forwarded %d times, want forwarded %v", got, c.forwarded)
			}
			for k, want := range c.written {
				code, got := e.do(t, "", http.MethodGet, "/v1/kv/"+k+"?raw", nil)
				if want == "" && code != http.StatusNotFound || want != "" && got != want {
					t.Errorf("direct GET %s: %d %q, want %q", k, code, got, want)
				}
			}
		})
	}

	// Where Consul itself refuses a body, the gateway answers as Consul
	// does.
	for _, body := range []string{`[{"KV":{"Verb":"set","Key":"app/m","Value":"dg=="}}, {"KV":`,
		`[{"KV":{"Verb":"set","Key":"app/u","Value":"dg==","Bogus":1}}]`, string(txnBody(t, tooMany...))} {
		direct, dOut := e.do(t, "", http.MethodPut, "/v1/txn", []byte(body))
		through, gOut := e.do(t, "admin", http.MethodPut, "/v1/txn", []byte(body))
		if direct != through || strings.TrimSpace(dOut) != strings.TrimSpace(gOut) {
			t.Errorf("Consul answers %d %q, the gateway %d %q", direct, dOut, through, gOut)
		}
	}
}
