package main

import (
	"testing"

	"github.com/storegate/storegate/plugins/sdk"
)

// web is the test caller; its tenant is "web".
const web = "spiffe://example.org/ns/prod/web"

// mapped is what a request result says: verdict, reason and the new key
// and range end ("<unchanged>" when not set).
type mapped struct {
	verdict  sdk.Verdict
	reason   string
	key, end string
}

// describe reads a result into a mapped.
func describe(r sdk.Result) mapped {
	m := mapped{verdict: r.Verdict(), reason: r.Reason(), key: "<unchanged>", end: "<unchanged>"}
	if k, ok := r.Key(); ok {
		m.key = string(k)
	}
	if e, ok := r.RangeEnd(); ok {
		m.end = string(e)
	}
	return m
}

// kvOp is a KV op of the test caller.
func kvOp(a sdk.Action, key, end string) *sdk.Op {
	op := &sdk.Op{Protocol: sdk.ProtocolEtcd, Resource: sdk.ResourceKV, Action: a, Caller: []byte(web), Key: []byte(key)}
	if end != "" {
		op.Flags |= sdk.FlagRange
		op.RangeEnd = []byte(end)
	}
	return op
}

// TestRequestMapping checks keys and range ends, including etcd's special
// range ends and bounds outside the caller's space.
func TestRequestMapping(t *testing.T) {
	if err := configure([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	const P = "/tenants/web"
	mut := sdk.VerdictMutate
	cases := []struct {
		name string
		op   *sdk.Op
		want mapped
	}{
		{"single key", kvOp(sdk.ActionWrite, "/app/x", ""), mapped{mut, "", P + "/app/x", "<unchanged>"}},
		{"root key", kvOp(sdk.ActionRead, "/", ""), mapped{mut, "", P + "/", "<unchanged>"}},
		{"prefix range", kvOp(sdk.ActionRead, "/app/", "/app0"), mapped{mut, "", P + "/app/", P + "/app0"}},
		{"from key", kvOp(sdk.ActionRead, "/app/", "\x00"), mapped{mut, "", P + "/app/", P + "0"}},
		{"everything", kvOp(sdk.ActionDelete, "\x00", "\x00"), mapped{mut, "", P + "/", P + "0"}},
		{"empty key, from key", kvOp(sdk.ActionRead, "", "\x00"), mapped{mut, "", P + "/", P + "0"}},
		{"prefix of /", kvOp(sdk.ActionRead, "/", "0"), mapped{mut, "", P + "/", P + "0"}},
		{"end above the space", kvOp(sdk.ActionRead, "/a", "zzz"), mapped{mut, "", P + "/a", P + "0"}},
		{"range above the space", kvOp(sdk.ActionRead, "a", "b"), mapped{mut, "", P + "0", P + "0"}},
		{"range below /", kvOp(sdk.ActionRead, "\x01", "/m"), mapped{mut, "", P + "/", P + "/m"}},
		{"key without /", kvOp(sdk.ActionWrite, "foo", ""), mapped{sdk.VerdictDeny, reasonSlash, "<unchanged>", "<unchanged>"}},
		{"empty key", kvOp(sdk.ActionRead, "", ""), mapped{sdk.VerdictDeny, reasonSlash, "<unchanged>", "<unchanged>"}},
		{"range flag, empty end", &sdk.Op{Resource: sdk.ResourceKV, Flags: sdk.FlagRange, Caller: []byte(web), Key: []byte("/k")},
			mapped{mut, "", P + "/k", "<unchanged>"}},
		{"watch", &sdk.Op{Resource: sdk.ResourceWatch, Action: sdk.ActionWatch, Flags: sdk.FlagRange, Caller: []byte(web),
			Key: []byte("/w/"), RangeEnd: []byte("/w0")}, mapped{mut, "", P + "/w/", P + "/w0"}},
		{"lease", &sdk.Op{Resource: sdk.ResourceLease, Action: sdk.ActionGrant, Caller: []byte(web)},
			mapped{sdk.VerdictContinue, "", "<unchanged>", "<unchanged>"}},
		{"lock", &sdk.Op{Resource: sdk.ResourceLock, Action: sdk.ActionAcquire, Caller: []byte(web), Key: []byte("/l")},
			mapped{sdk.VerdictDeny, reasonUnmapped + "lock", "<unchanged>", "<unchanged>"}},
		{"no tenant", &sdk.Op{Resource: sdk.ResourceKV, Caller: []byte("spiffe://example.org"), Key: []byte("/k")},
			mapped{sdk.VerdictDeny, reasonNoTenant + "spiffe://example.org", "<unchanged>", "<unchanged>"}},
	}
	for _, c := range cases {
		if got := describe(onRequest(c.op)); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestConsulKeys checks that a Consul key keeps its leading "/" and that a
// custom root applies.
func TestConsulKeys(t *testing.T) {
	if err := configure([]byte(`{"root":"/ns/"}`)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root = []byte(defaultRoot) })
	op := &sdk.Op{Protocol: sdk.ProtocolConsul, Resource: sdk.ResourceKV, Action: sdk.ActionWrite, Flags: sdk.FlagValue,
		Caller: []byte("spiffe://example.org/api"), Key: []byte("/app/x"), Value: []byte("v")}
	if got := describe(onRequest(op)); got.key != "/ns/api/app/x" || got.end != "<unchanged>" {
		t.Errorf("got %+v", got)
	}
	if err := configure([]byte(`{"root":""}`)); err != nil {
		t.Fatal(err)
	}
	if got := describe(onRequest(op)); got.key != "/api/app/x" {
		t.Errorf("empty root: got %+v", got)
	}
}

// TestResponse checks prefix stripping and the denial of foreign keys,
// including a tenant whose name extends the caller's.
func TestResponse(t *testing.T) {
	root = []byte(defaultRoot)
	for key, want := range map[string]string{
		"/tenants/web/app/x": "/app/x",
		"/tenants/web/":      "/",
		"/tenants/web2/x":    "",
		"/tenants/web":       "",
		"/tenants/we/b/x":    "",
		"/other":             "",
		"":                   "",
	} {
		r := onResponse(&sdk.Item{Resource: sdk.ResourceKV, Action: sdk.ActionRead, Caller: []byte(web), Key: []byte(key)})
		got := describe(r)
		if want == "" {
			if got.verdict != sdk.VerdictDeny || got.reason != reasonOutside {
				t.Errorf("%q: got %+v, want a denial", key, got)
			}
		} else if got.verdict != sdk.VerdictMutate || got.key != want {
			t.Errorf("%q: got %+v, want key %q", key, got, want)
		}
	}
	r := onResponse(&sdk.Item{Resource: sdk.ResourceService, Caller: []byte(web), Key: []byte("x")})
	if r.Verdict() != sdk.VerdictContinue {
		t.Errorf("service item: %+v", describe(r))
	}
}

// TestRoundTrip checks that stripping undoes mapping for every key shape.
func TestRoundTrip(t *testing.T) {
	root = []byte(defaultRoot)
	for _, key := range []string{"/", "/a", "/a/b/c", "/\x00bin", "//double"} {
		k, _ := onRequest(kvOp(sdk.ActionWrite, key, "")).Key()
		back, _ := onResponse(&sdk.Item{Resource: sdk.ResourceKV, Caller: []byte(web), Key: append([]byte(nil), k...)}).Key()
		if string(back) != key {
			t.Errorf("%q: mapped to %q, back to %q", key, k, back)
		}
	}
}

// TestConfigErrors checks that a bad root refuses the plugin.
func TestConfigErrors(t *testing.T) {
	t.Cleanup(func() { root = []byte(defaultRoot) })
	for _, cfg := range []string{`{"root":"tenants"}`, `{"prefix":"/x"}`, `[`} {
		if err := configure([]byte(cfg)); err == nil {
			t.Errorf("%s: accepted", cfg)
		}
	}
}

// TestNoAllocs checks that mapping a key and stripping it allocate
// nothing once warm, through the path the wasm exports take.
func TestNoAllocs(t *testing.T) {
	root = []byte(defaultRoot)
	env := sdk.AppendOpEnvelope(nil, kvOp(sdk.ActionRead, "/app/", "\x00"))
	item := sdk.AppendItemEnvelope(nil, &sdk.Item{Resource: sdk.ResourceKV, Caller: []byte(web), Key: []byte("/tenants/web/app/x")})
	if n := testing.AllocsPerRun(1000, func() {
		if sdk.HandleRequest(env) == nil || sdk.HandleResponse(item) == nil {
			t.Fatal("continue, want mutations")
		}
	}); n != 0 {
		t.Errorf("%v allocations per call", n)
	}
}
