package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/storegate/storegate/plugins/sdk"
)

// testConfig has a fixed 32-byte key ("0123…" repeated).
const testConfig = `{"key_base64":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=","prefixes":["/secret/","/vault/"]}`

// setup configures the plugin for a test.
func setup(t *testing.T) {
	t.Helper()
	if err := configure([]byte(testConfig)); err != nil {
		t.Fatal(err)
	}
}

// put is a KV write of value at key.
func put(key, value string) *sdk.Op {
	return &sdk.Op{Protocol: sdk.ProtocolConsul, Resource: sdk.ResourceKV, Action: sdk.ActionWrite, Flags: sdk.FlagValue,
		Key: []byte(key), Value: []byte(value)}
}

// stored runs the request hook over a write and returns the stored value.
func stored(t *testing.T, key, value string) []byte {
	t.Helper()
	r := onRequest(put(key, value))
	v, ok := r.Value()
	if r.Verdict() != sdk.VerdictMutate || !ok {
		t.Fatalf("%s: verdict %d %q, want a new value", key, r.Verdict(), r.Reason())
	}
	if _, ok := r.Key(); ok {
		t.Fatal("the key changed")
	}
	return append([]byte(nil), v...)
}

// read runs the response hook over a stored value.
func read(key string, value []byte) sdk.Result {
	return onResponse(&sdk.Item{Resource: sdk.ResourceKV, Action: sdk.ActionRead, Flags: sdk.FlagValue,
		Key: []byte(key), Value: value})
}

// TestRoundTrip checks that a sealed value has the documented format and
// opens to the plaintext, and that two seals differ (random nonces).
func TestRoundTrip(t *testing.T) {
	setup(t)
	for _, plain := range []string{"hunter2", "", strings.Repeat("x", 10000)} {
		s := stored(t, "/secret/db", plain)
		if len(s) != 1+12+len(plain)+16 || s[0] != formatV1 {
			t.Fatalf("stored %d bytes, version %d", len(s), s[0])
		}
		if plain != "" && bytes.Contains(s, []byte(plain)) {
			t.Fatal("plaintext visible in the stored value")
		}
		r := read("/secret/db", s)
		if v, ok := r.Value(); r.Verdict() != sdk.VerdictMutate || !ok || string(v) != plain {
			t.Fatalf("read back %q (verdict %d %q)", v, r.Verdict(), r.Reason())
		}
	}
	if bytes.Equal(stored(t, "/secret/a", "same"), stored(t, "/secret/a", "same")) {
		t.Error("two seals of one value are equal: nonce reused")
	}
}

// TestTamper checks that every kind of damage is denied, never passed on.
func TestTamper(t *testing.T) {
	setup(t)
	good := stored(t, "/secret/db", "hunter2")
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 1; return b }
	for name, v := range map[string][]byte{
		"flipped ciphertext": flip(14),
		"flipped nonce":      flip(3),
		"flipped tag":        flip(len(good) - 1),
		"unknown version":    flip(0),
		"truncated":          good[:len(good)-1],
		"plaintext":          []byte("hunter2"),
		"empty":              {},
	} {
		r := read("/secret/db", v)
		if r.Verdict() != sdk.VerdictDeny || r.Reason() != "cannot decrypt value of /secret/db" {
			t.Errorf("%s: verdict %d %q, want a denial", name, r.Verdict(), r.Reason())
		}
	}
	if r := read("/secret/other", good); r.Verdict() != sdk.VerdictDeny {
		t.Error("a value moved to another key decrypted")
	}
}

// TestScope checks what the plugin leaves alone and what it refuses.
func TestScope(t *testing.T) {
	setup(t)
	if r := onRequest(put("/public/x", "v")); r.Verdict() != sdk.VerdictContinue {
		t.Errorf("write outside the prefixes: verdict %d", r.Verdict())
	}
	if r := read("/public/x", []byte("v")); r.Verdict() != sdk.VerdictContinue {
		t.Errorf("read outside the prefixes: verdict %d", r.Verdict())
	}
	if r := onResponse(&sdk.Item{Resource: sdk.ResourceKV, Key: []byte("/secret/x")}); r.Verdict() != sdk.VerdictContinue {
		t.Errorf("item without a value: verdict %d", r.Verdict())
	}
	del := &sdk.Op{Resource: sdk.ResourceKV, Action: sdk.ActionDelete, Key: []byte("/secret/x")}
	if r := onRequest(del); r.Verdict() != sdk.VerdictContinue {
		t.Errorf("delete: verdict %d", r.Verdict())
	}
	cmp := &sdk.Op{Resource: sdk.ResourceKV, Action: sdk.ActionRead, Flags: sdk.FlagValue | sdk.FlagTxn,
		Key: []byte("/vault/x"), Value: []byte("v")}
	if r := onRequest(cmp); r.Verdict() != sdk.VerdictDeny {
		t.Errorf("value compare under a prefix: verdict %d", r.Verdict())
	}
}

// TestConfigErrors checks that a bad configuration refuses the plugin.
func TestConfigErrors(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"key_base64":"c2hvcnQ=","prefixes":["/s/"]}`:                                  "want 32",
		`{"key_base64":"!!","prefixes":["/s/"]}`:                                        "key_base64",
		`{"key_base64":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="}`:                 "no prefixes",
		`{"key_base64":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=","prefixes":[""]}`: "empty",
		`{"key":"x"}`: "unknown field",
	} {
		if err := configure([]byte(cfg)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", cfg, err, want)
		}
	}
}

// TestNoAllocs checks that sealing and opening allocate nothing once warm,
// through the path the wasm exports take.
func TestNoAllocs(t *testing.T) {
	setup(t)
	env := sdk.AppendOpEnvelope(nil, put("/secret/db", "hunter2"))
	item := sdk.AppendItemEnvelope(nil, &sdk.Item{Resource: sdk.ResourceKV, Flags: sdk.FlagValue,
		Key: []byte("/secret/db"), Value: stored(t, "/secret/db", "hunter2")})
	if n := testing.AllocsPerRun(1000, func() {
		if sdk.HandleRequest(env) == nil || sdk.HandleResponse(item) == nil {
			t.Fatal("continue, want mutations")
		}
	}); n != 0 {
		t.Errorf("%v allocations per call", n)
	}
}
