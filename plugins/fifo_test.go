package plugins

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReloadRefusesAFIFOInsteadOfHanging proves that a plugin file
// replaced at run time by a symbolic link to a FIFO (which nothing writes)
// makes the reload fail at once instead of blocking on the read, and the
// loaded version keeps judging the ops: its denial still comes.
func TestReloadRefusesAFIFOInsteadOfHanging(t *testing.T) {
	path := filepath.Join(t.TempDir(), "guard.wasm")
	replace(t, path, guestBytes(t, "deny", `DENY_PREFIX="/secret"`))
	h := newHost(t, []Spec{{Name: "guard", Path: path, Instances: 1}}, Options{})
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fifo, path); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.reload(context.Background(), h.plugins[0]) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("reload of a FIFO: nil error")
		}
		t.Logf("reload: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("reload blocked on a FIFO for 10s")
	}
	denied(t, h.Request(context.Background(), caller, put("/secret/x", "v")), "plugin guard: keys under /secret are not allowed")
}
