package sdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
)

// decodedResult is a result as the host reads it back, for assertions.
type decodedResult struct {
	verdict              Verdict
	reason               string
	key, rangeEnd, value []byte
	keySet, endSet       bool
	valueSet             bool
}

// parseResult decodes the ABI's result format the way a host does,
// failing the test on anything malformed.
func parseResult(t *testing.T, b []byte) decodedResult {
	t.Helper()
	if len(b) < resultHeaderSize {
		t.Fatalf("result of %d bytes, shorter than its header", len(b))
	}
	if b[1] != 0 || b[2] != 0 || b[3] != 0 {
		t.Fatalf("reserved bytes not zero: % x", b[1:4])
	}
	d := decodedResult{verdict: Verdict(b[0])}
	rest := b[resultHeaderSize:]
	take := func(n uint32) []byte {
		if uint64(n) > uint64(len(rest)) {
			t.Fatalf("result part of %d bytes overruns the result", n)
		}
		p := rest[:n]
		rest = rest[n:]
		return p
	}
	d.reason = string(take(binary.LittleEndian.Uint32(b[4:])))
	parts := []*[]byte{&d.key, &d.rangeEnd, &d.value}
	sets := []*bool{&d.keySet, &d.endSet, &d.valueSet}
	for i := range parts {
		n := binary.LittleEndian.Uint32(b[8+4*i:])
		if n != unchangedLen {
			*parts[i], *sets[i] = take(n), true
		}
	}
	if len(rest) != 0 {
		t.Fatalf("%d trailing bytes after the result", len(rest))
	}
	return d
}

// sampleOp is an op with every field set, so that a field decoded from the
// wrong offset shows.
func sampleOp() Op {
	return Op{
		Protocol: ProtocolEtcd, Resource: ResourceKV, Action: ActionWrite,
		Flags: FlagValue | FlagRange | FlagTxn, TxnIndex: 7, Lease: 0x1122334455667788,
		Caller: []byte("spiffe://example.org/web"), Key: []byte("/config/a"),
		RangeEnd: []byte("/config/b"), Value: []byte(`{"port":80}`), Service: []byte("svc"),
	}
}

// withPlugin registers p for the duration of the test.
func withPlugin(t *testing.T, p Plugin) {
	t.Helper()
	saved := registered
	registered.plugin, registered.ok = p, true
	t.Cleanup(func() { registered = saved })
}

// TestDecodeOpRoundTrip checks that an op encoded as the host does decodes
// to the same fields, with each slice's capacity clipped.
func TestDecodeOpRoundTrip(t *testing.T) {
	want := sampleOp()
	env := AppendOpEnvelope(nil, &want)
	if len(env) != headerSize+len("spiffe://example.org/web/config/a/config/b{\"port\":80}svc") {
		t.Fatalf("envelope of %d bytes", len(env))
	}
	var got Op
	if err := DecodeOp(env, &got); err != nil {
		t.Fatal(err)
	}
	if got.Protocol != want.Protocol || got.Resource != want.Resource || got.Action != want.Action ||
		got.Flags != want.Flags || got.TxnIndex != want.TxnIndex || got.Lease != want.Lease {
		t.Errorf("header fields: got %+v", got)
	}
	for _, c := range []struct {
		name      string
		got, want []byte
	}{{"caller", got.Caller, want.Caller}, {"key", got.Key, want.Key}, {"range end", got.RangeEnd, want.RangeEnd},
		{"value", got.Value, want.Value}, {"service", got.Service, want.Service}} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
		if cap(c.got) != len(c.got) {
			t.Errorf("%s: capacity %d beyond length %d", c.name, cap(c.got), len(c.got))
		}
	}
	if !got.HasValue() || !got.IsRange() || !got.InTxn() {
		t.Errorf("flag helpers: value %v range %v txn %v", got.HasValue(), got.IsRange(), got.InTxn())
	}
}

// TestDecodeItem checks the item envelope, including that a stray range
// end or service part is skipped rather than misread as the value.
func TestDecodeItem(t *testing.T) {
	want := Item{Protocol: ProtocolConsul, Resource: ResourceKV, Action: ActionRead, Flags: FlagValue,
		Caller: []byte("spiffe://example.org/web"), Key: []byte("/app/x"), Value: []byte("v")}
	var got Item
	if err := DecodeItem(AppendItemEnvelope(nil, &want), &got); err != nil {
		t.Fatal(err)
	}
	if got.Protocol != ProtocolConsul || got.Resource != ResourceKV || got.Action != ActionRead || !got.HasValue() ||
		string(got.Caller) != string(want.Caller) || string(got.Key) != "/app/x" || string(got.Value) != "v" {
		t.Errorf("got %+v", got)
	}
	op := Op{Key: []byte("/k"), RangeEnd: []byte("E"), Value: []byte("v"), Service: []byte("S")}
	env := AppendOpEnvelope(nil, &op)
	env[1] = phaseResponse
	if err := DecodeItem(env, &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Key) != "/k" || string(got.Value) != "v" {
		t.Errorf("with stray parts: key %q value %q", got.Key, got.Value)
	}
}

// TestDecodeErrors checks every way an envelope can break the ABI.
func TestDecodeErrors(t *testing.T) {
	op := sampleOp()
	good := AppendOpEnvelope(nil, &op)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		env  []byte
		want error
	}{
		{"empty", nil, ErrShortEnvelope},
		{"short", good[:39], ErrShortEnvelope},
		{"version", mod(func(b []byte) []byte { b[0] = 2; return b }), ErrEnvelopeVersion},
		{"phase", mod(func(b []byte) []byte { b[1] = phaseResponse; return b }), ErrEnvelopePhase},
		{"truncated", good[:len(good)-1], ErrEnvelopeLengths},
		{"huge length", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[28:], 0xFFFFFFFF); return b }),
			ErrEnvelopeLengths},
	}
	for _, c := range cases {
		var got Op
		if err := DecodeOp(c.env, &got); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	var it Item
	if err := DecodeItem(good, &it); !errors.Is(err, ErrEnvelopePhase) {
		t.Errorf("op envelope as item: got %v", err)
	}
	if err := DecodeOp(append(good, "trailing"...), &Op{}); err != nil {
		t.Errorf("trailing bytes: %v", err)
	}
}

// TestAppendResult checks the encoding of each verdict byte for byte.
func TestAppendResult(t *testing.T) {
	scratch = scratch[:0]
	cont := AppendResult(nil, Continue())
	if want := []byte{0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255}; !bytes.Equal(cont, want) {
		t.Errorf("continue: % x", cont)
	}
	d := parseResult(t, AppendResult(nil, Deny("no")))
	if d.verdict != VerdictDeny || d.reason != "no" || d.keySet || d.endSet || d.valueSet {
		t.Errorf("deny: %+v", d)
	}
	r := Mutate().SetValue([]byte("V")).SetKey([]byte("/p"), []byte("/k")).SetRangeEnd([]byte("/p0"))
	d = parseResult(t, AppendResult(nil, r))
	if d.verdict != VerdictMutate || d.reason != "" || string(d.key) != "/p/k" || string(d.rangeEnd) != "/p0" ||
		string(d.value) != "V" {
		t.Errorf("mutate: %+v", d)
	}
	d = parseResult(t, AppendResult(nil, Mutate().SetValue(nil)))
	if !d.valueSet || len(d.value) != 0 || d.keySet {
		t.Errorf("empty value: %+v", d)
	}
}

// TestResultSetters checks setter semantics: Continue becomes a mutation,
// a denial stands, AppendValue appends in place.
func TestResultSetters(t *testing.T) {
	scratch = scratch[:0]
	if r := Continue().SetKey([]byte("/k")); r.Verdict() != VerdictMutate {
		t.Errorf("Continue().SetKey: verdict %d", r.Verdict())
	}
	if r := Deny("x").SetKey([]byte("/k")).AppendValue(func(b []byte) []byte { return append(b, 'v') }); r.Verdict() != VerdictDeny || r.Reason() != "x" {
		t.Errorf("setters on a denial: %+v", r)
	} else if _, set := r.Key(); set {
		t.Error("a denial got a key")
	}
	r := Mutate().AppendValue(func(dst []byte) []byte { return append(dst, "sealed"...) })
	if v, set := r.Value(); !set || string(v) != "sealed" {
		t.Errorf("AppendValue: %q %v", v, set)
	}
	if _, set := r.Key(); set {
		t.Error("AppendValue set the key")
	}
	defer func() {
		if recover() == nil {
			t.Error("AppendValue with a replacing function did not panic")
		}
	}()
	Mutate().AppendValue(func([]byte) []byte { return nil })
}

// TestFinish checks the ABI rules the SDK enforces before sending a result.
func TestFinish(t *testing.T) {
	scratch = scratch[:0]
	withPlugin(t, Plugin{})
	cases := []struct {
		name   string
		r      Result
		ph     phase
		reason string // "" : want nil (continue)
	}{
		{"continue", Continue(), phaseOnRequest, ""},
		{"empty mutation", Mutate(), phaseOnRequest, ""},
		{"validator mutation", Mutate().SetValue([]byte("x")), phaseOnRequest, reasonValidatorMut},
		{"response range end", Mutate().SetRangeEnd([]byte("x")), phaseOnResponse, reasonResponseEnd},
		{"empty key", Mutate().SetKey(), phaseOnResponse, reasonEmptyKey},
	}
	for _, c := range cases {
		res := finish(c.r, c.ph)
		if c.reason == "" {
			if res != nil {
				t.Errorf("%s: got % x, want continue", c.name, res)
			}
			continue
		}
		if d := parseResult(t, res); d.verdict != VerdictDeny || d.reason != c.reason {
			t.Errorf("%s: got %+v", c.name, d)
		}
	}
}

// TestHandleInit checks init: no plugin, no Init, a failing Init.
func TestHandleInit(t *testing.T) {
	saved := registered
	registered.ok = false
	if d := parseResult(t, HandleInit([]byte("{}"))); d.reason != reasonNoPlugin {
		t.Errorf("no plugin: %+v", d)
	}
	registered = saved
	withPlugin(t, Plugin{})
	if res := HandleInit([]byte("{}")); res != nil {
		t.Errorf("nil Init: % x", res)
	}
	var seen string
	withPlugin(t, Plugin{Init: func(c []byte) error { seen = string(c); return errors.New("bad config") }})
	if d := parseResult(t, HandleInit([]byte(`{"a":1}`))); d.verdict != VerdictDeny || d.reason != "bad config" {
		t.Errorf("failing Init: %+v", d)
	}
	if seen != `{"a":1}` {
		t.Errorf("Init saw %q", seen)
	}
}

// TestHandleMalformed checks that a malformed envelope is denied with the
// decoder's reason.
func TestHandleMalformed(t *testing.T) {
	withPlugin(t, Plugin{OnRequest: func(*Op) Result { t.Error("hook ran"); return Continue() }})
	d := parseResult(t, HandleRequest([]byte{1, 1}))
	if d.verdict != VerdictDeny || d.reason != reasonBadEnvelope+ErrShortEnvelope.Error() {
		t.Errorf("got %+v", d)
	}
}

// TestCapabilities checks the bits derived from the registration.
func TestCapabilities(t *testing.T) {
	for _, c := range []struct {
		p    Plugin
		want int32
	}{
		{Plugin{}, 0},
		{Plugin{Mutates: true}, 1},
		{Plugin{OnResponse: func(*Item) Result { return Continue() }}, 2},
		{Plugin{Mutates: true, OnResponse: func(*Item) Result { return Continue() }}, 3},
	} {
		withPlugin(t, c.p)
		if got := Capabilities(); got != c.want {
			t.Errorf("%+v: got %d, want %d", c.p, got, c.want)
		}
	}
}

// prefixPlugin is a mutator that moves every key under /t and strips it on
// the way back: the shape of a real mutator, for the allocation tests.
var prefixPlugin = Plugin{
	Mutates: true,
	OnRequest: func(op *Op) Result {
		if op.Action == ActionRead {
			return Continue()
		}
		return Mutate().SetKey(tPrefix, op.Key).SetValue(op.Value, op.Value)
	},
	OnResponse: func(it *Item) Result {
		return Mutate().SetKey(it.Key[len(tPrefix):])
	},
}

// tPrefix is prefixPlugin's prefix.
var tPrefix = []byte("/t")

// TestHooks drives the request and response paths end to end.
func TestHooks(t *testing.T) {
	withPlugin(t, prefixPlugin)
	op := sampleOp()
	d := parseResult(t, HandleRequest(AppendOpEnvelope(nil, &op)))
	if d.verdict != VerdictMutate || string(d.key) != "/t/config/a" || d.endSet || string(d.value) != `{"port":80}{"port":80}` {
		t.Errorf("request: %+v", d)
	}
	op.Action = ActionRead
	if res := HandleRequest(AppendOpEnvelope(nil, &op)); res != nil {
		t.Errorf("read: % x", res)
	}
	it := Item{Resource: ResourceKV, Action: ActionRead, Key: []byte("/t/x"), Value: []byte("v"), Flags: FlagValue}
	d = parseResult(t, HandleResponse(AppendItemEnvelope(nil, &it)))
	if d.verdict != VerdictMutate || string(d.key) != "/x" || d.valueSet {
		t.Errorf("response: %+v", d)
	}
}

// TestNoAllocs checks that decoding an envelope and encoding a continue or
// a mutate result allocates nothing once warm, both through the exported
// codec and through the hook path the wasm glue calls.
func TestNoAllocs(t *testing.T) {
	withPlugin(t, prefixPlugin)
	op := sampleOp()
	write := AppendOpEnvelope(nil, &op)
	op.Action = ActionRead
	read := AppendOpEnvelope(nil, &op)
	it := Item{Key: []byte("/t/x"), Value: []byte("v"), Flags: FlagValue}
	item := AppendItemEnvelope(nil, &it)
	var dec Op
	var buf []byte
	cases := map[string]func(){
		"codec continue": func() {
			if err := DecodeOp(read, &dec); err != nil {
				t.Fatal(err)
			}
			buf = AppendResult(buf[:0], Continue())
		},
		"codec mutate": func() {
			scratch = scratch[:0]
			if err := DecodeOp(write, &dec); err != nil {
				t.Fatal(err)
			}
			buf = AppendResult(buf[:0], Mutate().SetKey(tPrefix, dec.Key).SetValue(dec.Value))
		},
		"codec deny": func() {
			if err := DecodeOp(write, &dec); err != nil {
				t.Fatal(err)
			}
			buf = AppendResult(buf[:0], Deny("constant reason"))
		},
		"hook continue":  func() { HandleRequest(read) },
		"hook mutate":    func() { HandleRequest(write) },
		"hook response":  func() { HandleResponse(item) },
		"hook malformed": func() { HandleRequest(write[:10]) },
	}
	for name, f := range cases {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per call", name, n)
		}
	}
}

// TestMillionCallsFlat runs a million request and response calls and checks
// that the heap saw no allocation at all: guest memory stays flat.
func TestMillionCallsFlat(t *testing.T) {
	withPlugin(t, prefixPlugin)
	op := sampleOp()
	write := AppendOpEnvelope(nil, &op)
	it := Item{Key: []byte("/t/x"), Value: []byte("v"), Flags: FlagValue}
	item := AppendItemEnvelope(nil, &it)
	HandleRequest(write)
	HandleResponse(item)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 500_000 {
		HandleRequest(write)
		HandleResponse(item)
	}
	runtime.ReadMemStats(&after)
	if n := after.Mallocs - before.Mallocs; n > 10 { // ReadMemStats itself may allocate a little
		t.Errorf("%d allocations over a million calls", n)
	}
}

// TestLastPathSegment checks tenant extraction from SPIFFE IDs.
func TestLastPathSegment(t *testing.T) {
	for id, want := range map[string]string{
		"spiffe://example.org/web":         "web",
		"spiffe://example.org/ns/prod/web": "web",
		"spiffe://example.org/a/b-c_d.e":   "b-c_d.e",
		"spiffe://example.org":             "",
		"spiffe://example.org/":            "",
		"spiffe://example.org/web/":        "",
		"spiffe:///web":                    "",
		"spiffe://example.org/a/..":        "",
		"spiffe://example.org/.":           "",
		"https://example.org/web":          "",
		"":                                 "",
	} {
		seg, ok := LastPathSegment([]byte(id))
		if ok != (want != "") || string(seg) != want {
			t.Errorf("%q: got %q %v, want %q", id, seg, ok, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { LastPathSegment([]byte("spiffe://example.org/web")) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// TestNames checks the ABI.md names of a few protocols, resources and
// actions, and the fallback for numbers the SDK predates.
func TestNames(t *testing.T) {
	if ProtocolConsul.String() != "consul" || ResourceStatus.String() != "status" || ResourceKV.String() != "kv" ||
		ActionAdmin.String() != "admin" || ActionRegister.String() != "register" ||
		Resource(99).String() != "unknown" || Action(0).String() != "unknown" || Protocol(3).String() != "unknown" {
		t.Error("names do not match ABI.md")
	}
}
