package consul

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFilteredBlockingQuery: a blocking query whose answer the gateway
// narrows does not wake for a write the caller cannot see — the gateway
// blocks again (seen here as a third read reaching the agent) — and does
// wake, with the change, for one it can see.
func TestFilteredBlockingQuery(t *testing.T) {
	e := newEnv(t)
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/kv/app/v1", []byte("1")); code != 200 {
		t.Fatalf("seed: %d %s", code, out)
	}
	get := func(path string) (int, string, http.Header) {
		resp, err := e.clients["web"].Get(e.front + path)
		if err != nil {
			t.Error(err)
			return 0, "", nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, out, h := get("/v1/kv/app/?recurse")
	if code != 200 || !strings.Contains(out, `"app/v1"`) {
		t.Fatalf("first read: %d %s", code, out)
	}
	index := h.Get("X-Consul-Index")
	const route = "GET /v1/kv/app/"
	before := e.rec.count(route)

	type result struct {
		code int
		body string
		h    http.Header
	}
	done := make(chan result, 1)
	go func() {
		c, b, h := get("/v1/kv/app/?recurse&index=" + index + "&wait=30s")
		done <- result{c, b, h}
	}()
	reached := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for e.rec.count(route) < before+n {
			if time.Now().After(deadline) {
				t.Fatalf("%d reads reached the agent, want %d", e.rec.count(route)-before, n)
			}
			time.Sleep(10 * time.Millisecond) // polling the recorder
		}
	}
	reached(2) // the gateway's current read, then the blocking one
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/kv/app/secret/hidden", []byte("s")); code != 200 {
		t.Fatalf("hidden write: %d %s", code, out)
	}
	reached(3) // woken by the hidden write, the gateway blocked again
	select {
	case r := <-done:
		t.Fatalf("the query returned on a write the caller cannot see: %d %s", r.code, r.body)
	default:
	}
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/kv/app/v2", []byte("2")); code != 200 {
		t.Fatalf("visible write: %d %s", code, out)
	}
	r := <-done
	if r.code != 200 || !strings.Contains(r.body, `"app/v2"`) || strings.Contains(r.body, "secret") {
		t.Fatalf("blocking answer: %d %s", r.code, r.body)
	}
	if r.h.Get("X-Consul-Results-Filtered-By-ACLs") != "true" {
		t.Errorf("no X-Consul-Results-Filtered-By-ACLs on a narrowed answer: %v", r.h)
	}
	got, _ := strconv.ParseUint(r.h.Get("X-Consul-Index"), 10, 64)
	was, _ := strconv.ParseUint(index, 10, 64)
	if got <= was {
		t.Errorf("index %d after %d", got, was)
	}
}

// TestBlockingQueryAfterRevocation: a blocking query allowed under one
// policy and answered after a reload that revokes the right is judged again:
// the caller gets a denial, not the value.
func TestBlockingQueryAfterRevocation(t *testing.T) {
	e := newEnv(t)
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/kv/app/x", []byte("1")); code != 200 {
		t.Fatalf("seed: %d %s", code, out)
	}
	resp, err := e.clients["web"].Get(e.front + "/v1/kv/app/x")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first read: %v %v", resp, err)
	}
	resp.Body.Close()
	index := resp.Header.Get("X-Consul-Index")
	const route = "GET /v1/kv/app/x"
	before := e.rec.count(route)
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		resp, err := e.clients["web"].Get(e.front + "/v1/kv/app/x?index=" + index + "&wait=20s")
		if err != nil {
			done <- result{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b)}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for e.rec.count(route) < before+1 {
		if time.Now().After(deadline) {
			t.Fatal("the blocking query never reached the agent")
		}
		time.Sleep(10 * time.Millisecond) // polling the recorder
	}
	// Web loses /app/.
	revoked := strings.Replace(testIntentions, `keys: ["/app/**"]`, `keys: ["/elsewhere/**"]`, 1)
	if revoked == testIntentions {
		t.Fatal("the test intentions changed: web's /app/** intention not found")
	}
	if err := os.WriteFile(filepath.Join(e.policyDir, "intentions.yaml"), []byte(revoked), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.policy.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, out := e.do(t, "admin", http.MethodPut, "/v1/kv/app/x", []byte("2")); code != 200 {
		t.Fatalf("write: %d %s", code, out)
	}
	r := <-done
	if r.code != http.StatusForbidden || strings.Contains(r.body, `"Value"`) {
		t.Fatalf("blocking answer after the revocation: %d %s", r.code, r.body)
	}
}
