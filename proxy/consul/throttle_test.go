package consul

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/throttle"
)

// TestRefusalThrottle: a refused request is charged to its caller (its
// path, query and the body read); while it owes, its next request is not
// served, another caller's is; an allowed request is never charged.
func TestRefusalThrottle(t *testing.T) {
	debts := throttle.New(64<<10, 64<<10)
	e := newEnvOptions(t, Options{Throttle: debts})
	web := gate.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web")}
	admin := gate.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/admin")}

	// Allowed writes, 400 KiB in all: free.
	for range 20 {
		if code, body := e.do(t, "web", http.MethodPut, "/v1/kv/app/throttle", bytes.Repeat([]byte("v"), 20<<10)); code != http.StatusOK {
			t.Fatalf("allowed PUT: %d %s", code, body)
		}
	}
	if w := debts.Owes(web); w != 0 {
		t.Fatalf("web owes %v after allowed PUTs", w)
	}

	// A refused 100 KiB PUT: over the burst, about half a second owed.
	if code, _ := e.do(t, "web", http.MethodPut, "/v1/kv/app/secret/throttle", bytes.Repeat([]byte("s"), 100<<10)); code != http.StatusForbidden {
		t.Fatalf("PUT app/secret/throttle: %d, want 403", code)
	}
	owed := debts.Owes(web)
	if owed < 300*time.Millisecond {
		t.Fatalf("web owes %v after a refused 100 KiB PUT over a 64 KiB burst, want about 0.6s", owed)
	}
	if n := e.rec.count("PUT /v1/kv/app/secret/throttle"); n != 0 {
		t.Fatalf("the refused PUT reached the agent %d times", n)
	}

	// web's next request waits for the debt; admin's does not.
	start := time.Now()
	webDone := make(chan time.Duration, 1)
	go func() {
		e.do(t, "web", http.MethodGet, "/v1/kv/app/throttle", nil)
		webDone <- time.Since(start)
	}()
	if code, body := e.do(t, "admin", http.MethodGet, "/v1/kv/app/throttle", nil); code != http.StatusOK {
		t.Fatalf("admin GET: %d %s", code, body)
	}
	adminTook := time.Since(start)
	webTook := <-webDone
	if webTook < owed-100*time.Millisecond {
		t.Errorf("web's request, owing %v, was answered after %v", owed, webTook)
	}
	if adminTook >= webTook {
		t.Errorf("admin's request (%v) waited for web's debt (%v)", adminTook, webTook)
	}
	if w := debts.Owes(admin); w != 0 {
		t.Errorf("admin owes %v", w)
	}
}
