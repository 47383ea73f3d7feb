package plugins

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

func TestContinue(t *testing.T) {
	var logs logBuffer
	m := &recMetrics{}
	h := newHost(t, []Spec{{Name: "noop", Path: guest(t, "continue"), Instances: 2}},
		Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: m})

	op := put("/app/x", "v")
	key, value := op.Keys.Key, op.Value
	if err := h.Request(context.Background(), caller, op); err != nil {
		t.Fatal(err)
	}
	if &op.Keys.Key[0] != &key[0] || &op.Value[0] != &value[0] {
		t.Error("a continue replaced the op's slices")
	}
	if got := m.stages.Load(); got != 1 {
		t.Errorf("%d plugin stages timed, want 1", got)
	}
	if h.Responds(op) {
		t.Error("Responds is true without a response hook")
	}
	// The guest's storegate.log and stdout reach the log, tagged.
	for _, want := range []string{"msg=\"continue plugin ready\" plugin=noop", "msg=\"hello from stdout\" plugin=noop stream=stdout"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	// Ops with no key and no value are not given to plugins.
	if err := h.Request(context.Background(), caller, &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceLease, Action: gate.ActionGrant}); err != nil {
		t.Fatal(err)
	}
	if got := m.stages.Load(); got != 1 {
		t.Errorf("a keyless op reached the plugin (%d calls)", got)
	}
}

func TestSpecDefaults(t *testing.T) {
	s, err := Spec{Name: "p", Path: "p.wasm", MemoryLimit: 100 << 10}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if s.Timeout != 20*time.Millisecond || s.MemoryLimit != 128<<10 || s.Instances != runtime.GOMAXPROCS(0) ||
		string(s.Config) != "{}" || s.Failure != FailDeny {
		t.Errorf("defaults: %+v", s)
	}
	if s, _ := (Spec{Name: "p", Path: "p.wasm"}).withDefaults(); s.MemoryLimit != 32<<20 {
		t.Errorf("default memory limit %d", s.MemoryLimit)
	}
	for _, bad := range []Spec{{Path: "p.wasm"}, {Name: "p"}, {Name: "p", Path: "p", MemoryLimit: 5 << 30}, {Name: "p", Path: "p", Failure: 7}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestDeny(t *testing.T) {
	h := newHost(t, []Spec{{Name: "guard", Path: guest(t, "deny", `DENY_PREFIX="/secret"`)}}, Options{})
	err := h.Request(context.Background(), caller, put("/secret/x", "v"))
	denied(t, err, "plugin guard: keys under /secret are not allowed")
	if err := h.Request(context.Background(), caller, put("/public/x", "v")); err != nil {
		t.Fatal(err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		config []byte
		want   string
	}{
		{nil, "plugin cfg: {}"},
		{[]byte(`{"mode":"strict"}`), `plugin cfg: {"mode":"strict"}`},
	} {
		h := newHost(t, []Spec{{Name: "cfg", Path: guest(t, "config"), Config: tc.config}}, Options{})
		denied(t, h.Request(context.Background(), caller, put("/a", "v")), tc.want)
	}
	if _, err := New(context.Background(), []Spec{{Name: "cfg", Path: guest(t, "config"), Config: []byte("{")}}, Options{}); err == nil {
		t.Error("New accepted a config that is not JSON")
	}
}

// mutateChain is, in spec order: a validator that requires keys under /t/
// (it runs after the mutators, or it would deny), a mutator that moves
// keys under /t and appends "-a" to values, and a mutator that upper-cases
// values (it sees the first mutator's output: "-A", not "-a").
func mutateChain(t *testing.T) []Spec {
	return []Spec{
		{Name: "charset", Path: guest(t, "charset", `REQUIRE_PREFIX="/t/"`)},
		{Name: "tenant", Path: guest(t, "prefix", `PREFIX="/t"`, `SUFFIX="-a"`, "CAPS=3")},
		{Name: "upper", Path: guest(t, "upper", "CAPS=1")},
	}
}

func TestMutate(t *testing.T) {
	h := newHost(t, mutateChain(t), Options{})
	ctx := context.Background()

	op := put("/x", "v")
	oldKey, oldValue := op.Keys.Key, op.Value
	if err := h.Request(ctx, caller, op); err != nil {
		t.Fatal(err)
	}
	if string(op.Keys.Key) != "/t/x" || string(op.Value) != "V-A" || op.ValueSize != 3 {
		t.Errorf("got key %q value %q (size %d), want /t/x V-A (3)", op.Keys.Key, op.Value, op.ValueSize)
	}
	if string(oldKey) != "/x" || string(oldValue) != "v" {
		t.Errorf("the caller's slices were written to: %q %q", oldKey, oldValue)
	}

	for _, tc := range []struct{ key, end, wantKey, wantEnd string }{
		{"/a", "/b", "/t/a", "/t/b"},
		{"/a", "\x00", "/t/a", "/u"}, // every key >= /a: every key under /t
		{"/a", "", "/t/a", ""},
	} {
		op := get(tc.key, tc.end)
		if err := h.Request(ctx, caller, op); err != nil {
			t.Fatal(err)
		}
		if string(op.Keys.Key) != tc.wantKey || string(op.Keys.End) != tc.wantEnd || op.Value != nil {
			t.Errorf("range [%q, %q): got [%q, %q) value %q, want [%q, %q)", tc.key, tc.end,
				op.Keys.Key, op.Keys.End, op.Value, tc.wantKey, tc.wantEnd)
		}
	}

	// The validator sees the final op: a value outside its charset is
	// denied after the mutators ran.
	denied(t, h.Request(ctx, caller, put("/x", "a*b")), "plugin charset: value outside the charset")
}

func TestResponseReverseOrder(t *testing.T) {
	// Request: /x -> /a/x -> /b/a/x. Response: /b/a/x -> /a/x -> /x. Each
	// response hook denies an item outside its prefix, so the wrong order
	// fails.
	h := newHost(t, []Spec{
		{Name: "a", Path: guest(t, "prefix", `PREFIX="/a"`, `SUFFIX=".a"`, "CAPS=3")},
		{Name: "b", Path: guest(t, "prefix", `PREFIX="/b"`, `SUFFIX=".b"`, "CAPS=3")},
		{Name: "noop", Path: guest(t, "continue"), Match: Match{Keys: []string{"/nothing/**"}}},
	}, Options{})
	ctx := context.Background()

	op := put("/x", "v")
	if err := h.Request(ctx, caller, op); err != nil {
		t.Fatal(err)
	}
	if string(op.Keys.Key) != "/b/a/x" || string(op.Value) != "v.a.b" {
		t.Fatalf("request: got %q = %q", op.Keys.Key, op.Value)
	}
	req := get("/x", "") // the op as the caller sent it
	if !h.Responds(req) {
		t.Fatal("Responds is false")
	}
	key, value, err := h.Response(ctx, caller, req, []byte("/b/a/x"), []byte("v.a.b"))
	if err != nil {
		t.Fatal(err)
	}
	if string(key) != "/x" || string(value) != "v" {
		t.Errorf("response: got %q = %q, want /x = v", key, value)
	}
	// An item with no value stays without one.
	key, value, err = h.Response(ctx, caller, req, []byte("/b/a/y"), nil)
	if err != nil || string(key) != "/y" || value != nil {
		t.Errorf("response without value: got %q = %q, %v", key, value, err)
	}
	// A response hook's deny fails the response.
	_, _, err = h.Response(ctx, caller, req, []byte("/elsewhere"), []byte("v"))
	denied(t, err, "plugin b: item outside /b")
}

func TestMatch(t *testing.T) {
	m := &recMetrics{}
	h := newHost(t, []Spec{{
		Name: "guard", Path: guest(t, "deny", `DENY_PREFIX="/"`),
		Match: Match{
			Protocols: []gate.Protocol{gate.ProtocolEtcd},
			Actions:   []gate.Action{gate.ActionWrite, gate.ActionRead},
			Keys:      []string{"/apps/*/secret", "/db/**"},
		},
	}}, Options{Metrics: m})
	ctx := context.Background()
	for _, tc := range []struct {
		op   *gate.Op
		deny bool
	}{
		{put("/apps/web/secret", "v"), true},
		{put("/apps/web/x/secret", "v"), false}, // "*" stays within a segment
		{put("/db/a/b/c", "v"), true},
		{get("/db/", "/db0"), true}, // a range matches by its start key
		{put("/other", "v"), false},
		{&gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceKV, Action: gate.ActionWrite, Keys: gate.KeyRange{Key: []byte("/db/x")}, Value: []byte{}}, false},
		{&gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionDelete, Keys: gate.KeyRange{Key: []byte("/db/x")}}, false},
	} {
		err := h.Request(ctx, caller, tc.op)
		if (err != nil) != tc.deny {
			t.Errorf("%s %s %q: got %v, want deny=%v", tc.op.Protocol, tc.op.Action, tc.op.Keys.Key, err, tc.deny)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		glob, key string
		want      bool
	}{
		{"/a/b", "/a/b", true},
		{"/a/b", "/a/bc", false},
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/", true},
		{"/a/*", "/a/b/c", false},
		{"/a/**", "/a/b/c", true},
		{"/a/**", "/a", false},
		{"**", "", true},
		{"*", "", true},
		{"*", "/", false},
		{"/a/*/c/**", "/a/b/c/d/e", true},
		{"/a/*/c/**", "/a/b/x/c/d", false},
		{"/a/*.json", "/a/x.json", true},
		{"/a/*.json", "/a/x.json/y", false},
		{"/a/**.json", "/a/x/y.json", true},
		{"**/x/**/y/**/z", "/q/x/a/y/b/z", true},
		{"**/x/**/y/**/z", "/q/x/a/y/b/zz", false},
		{"/a***b", "/a/x/b", true},
		{"a*b*c", strings.Repeat("ab", 5000) + "c", true},
	} {
		g, err := compileGlob(tc.glob)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.match([]byte(tc.key)); got != tc.want {
			t.Errorf("%q ~ %q = %v, want %v", tc.glob, tc.key, got, tc.want)
		}
	}
	if _, err := compileGlob(strings.Repeat("a", maxGlobTokens+1)); err == nil {
		t.Error("an over-long glob compiled")
	}
}

func TestDecodeResult(t *testing.T) {
	header := func(verdict byte, reason, key, end, value uint32) []byte {
		b := make([]byte, resultHeader)
		b[0] = verdict
		le.PutUint32(b[4:], reason)
		le.PutUint32(b[8:], key)
		le.PutUint32(b[12:], end)
		le.PutUint32(b[16:], value)
		return b
	}
	withBody := func(b []byte, body string) []byte { return append(b, body...) }
	reserved := header(0, 0, unchanged, unchanged, unchanged)
	reserved[2] = 1
	for _, tc := range []struct {
		name string
		b    []byte
		want string // "" = valid
	}{
		{"continue", header(0, 0, unchanged, unchanged, unchanged), ""},
		{"continue ignores mutate lengths", header(0, 0, 0, 7, 9), ""},
		{"deny", withBody(header(1, 3, unchanged, unchanged, unchanged), "why"), ""},
		{"mutate", withBody(header(2, 0, 2, unchanged, 1), "/kv"), ""},
		{"short", make([]byte, 19), "shorter than its 20-byte header"},
		{"unknown verdict", header(3, 0, unchanged, unchanged, unchanged), "unknown verdict 3"},
		{"reserved", reserved, "reserved result bytes"},
		{"reason on continue", withBody(header(0, 3, unchanged, unchanged, unchanged), "why"), "carries a 3-byte reason"},
		{"too long", withBody(header(1, 3, unchanged, unchanged, unchanged), "why?"), "adds up to 23"},
		{"too short", withBody(header(2, 0, 5, unchanged, unchanged), "/k"), "adds up to 25"},
		{"overflow", header(2, 0, 0xFFFFFFFE, 0xFFFFFFFE, 0xFFFFFFFE), "adds up to"},
	} {
		r, f := decodeResult(tc.b)
		switch {
		case tc.want == "" && f != nil:
			t.Errorf("%s: %v", tc.name, f)
		case tc.want != "" && (f == nil || f.Kind != FailMalformed || !strings.Contains(f.Detail, tc.want)):
			t.Errorf("%s: got %v, want malformed %q", tc.name, f, tc.want)
		}
		if tc.name == "mutate" && (string(r.key) != "/k" || r.hasEnd || string(r.value) != "v" || !r.hasValue) {
			t.Errorf("mutate decoded as %+v", r)
		}
	}
}

func TestEnvelope(t *testing.T) {
	op := &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: gate.ActionRegister,
		Keys: gate.KeyRange{Key: []byte("/k"), End: []byte("/l")}, Value: []byte("{}"), Lease: -1, TxnIndex: 3,
		Service: &gate.Service{Name: "web"}}
	id := caller.String()
	b := make([]byte, opEnvelopeSize(id, op))
	encodeOp(b, id, op)
	want := []byte{1, 1, 2, 7, 10, flagValue | flagRange | flagTxn, 3, 0}
	if !bytes.Equal(b[:8], want) {
		t.Errorf("header % x, want % x", b[:8], want)
	}
	if le.Uint64(b[8:]) != 0xFFFFFFFFFFFFFFFF || le.Uint32(b[16:]) != uint32(len(id)) || le.Uint32(b[32:]) != 3 || le.Uint32(b[36:]) != 0 {
		t.Errorf("header % x", b[:40])
	}
	if got := string(b[40:]); got != id+"/k/l{}web" {
		t.Errorf("body %q", got)
	}
}

// TestCacheDir: with a cache directory, compiled plugins are kept on disk
// and a second host loads from it.
func TestCacheDir(t *testing.T) {
	dir := t.TempDir()
	for range 2 {
		h, err := New(context.Background(), []Spec{{Name: "noop", Path: guest(t, "continue")}}, Options{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Request(context.Background(), caller, put("/k", "v")); err != nil {
			t.Fatal(err)
		}
		if err := h.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Errorf("cache dir: %v entries, %v", len(entries), err)
	}
}

// TestMatchRefusesUnpluggedResources: a plugin matched to a resource the
// fronts never give to plugins (locks, leases, ...) would never run; it is
// refused at load rather than silently skipped.
func TestMatchRefusesUnpluggedResources(t *testing.T) {
	_, err := Match{Resources: []gate.Resource{gate.ResourceKV, gate.ResourceLock}}.compile()
	if err == nil || !strings.Contains(err.Error(), "resource lock does not go through plugins") {
		t.Fatalf("err = %v", err)
	}
	if _, err := (Match{Resources: []gate.Resource{gate.ResourceKV, gate.ResourceWatch, gate.ResourceService, gate.ResourceCheck}}).compile(); err != nil {
		t.Fatal(err)
	}
}
