package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"
)

// Reload reads the files now, with no watch running (no file event can
// have done it), and Loaded reports the digest of the module in use: the
// new one, or the last good one after a broken replacement.
func TestReloadAndLoaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "guard.wasm")
	first := guestBytes(t, "continue")
	replace(t, path, first)
	h := newHost(t, []Spec{{Name: "guard", Path: path, Instances: 1}}, Options{})
	digest := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	if l := h.Loaded(); len(l) != 1 || l[0].Name != "guard" || l[0].Path != path || l[0].SHA256 != digest(first) {
		t.Fatalf("Loaded = %+v, want guard at %s, %s", l, path, digest(first))
	}
	next := guestBytes(t, "deny", `DENY_PREFIX="/secret"`)
	replace(t, path, next)
	if err := h.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	denied(t, h.Request(context.Background(), caller, put("/secret/x", "v")), "plugin guard: keys under /secret are not allowed")
	if l := h.Loaded(); l[0].SHA256 != digest(next) {
		t.Errorf("Loaded after Reload: %s, want %s", l[0].SHA256, digest(next))
	}
	replace(t, path, []byte("not wasm"))
	if err := h.Reload(context.Background()); err == nil {
		t.Error("Reload of a broken module succeeded")
	}
	if l := h.Loaded(); l[0].SHA256 != digest(next) {
		t.Errorf("Loaded after a broken replacement: %s, want the last good %s", l[0].SHA256, digest(next))
	}
}
