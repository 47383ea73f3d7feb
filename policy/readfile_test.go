package policy

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

// TestReloadRefusesAFIFOInsteadOfHanging proves that a policy file
// replaced at run time by a symbolic link to a FIFO (which nothing writes)
// makes Reload fail at once, naming the file, instead of blocking on the
// read; the last good version stays and still decides as before.
func TestReloadRefusesAFIFOInsteadOfHanging(t *testing.T) {
	dir := copyShipped(t)
	e := mustLoad(t, dir, ModeEnforce)
	before := e.Revision()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	authz := filepath.Join(dir, "authz.rego")
	if err := os.Remove(authz); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fifo, authz); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Reload(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Reload with authz.rego a FIFO: nil error")
		}
		t.Logf("Reload: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Reload blocked on a FIFO for 10s")
	}
	if got := e.Revision(); got != before {
		t.Errorf("revision after a failed reload: %s, want the last good %s", got, before)
	}
	d, err := e.Authorize(context.Background(), identity("spiffe://example.org/nobody"), kvOp(gate.ActionWrite, "/x"))
	if err != nil || d.Effect != gate.Deny {
		t.Errorf("a write no intention allows, after the failed reload: %+v, %v; want denied", d, err)
	}
}
