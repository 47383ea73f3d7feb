package policy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/gate"
)

// shipped is the policy directory the repository ships.
const shipped = "../policies"

var (
	web   = identity("spiffe://example.org/web")
	admin = identity("spiffe://example.org/admin")
	batch = identity("spiffe://example.org/batch")
)

func identity(s string) gate.Identity {
	return gate.Identity{ID: spiffeid.RequireFromString(s)}
}

// kvOp is an etcd op on one key.
func kvOp(a gate.Action, key string) *gate.Op {
	return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: a, Keys: gate.KeyRange{Key: []byte(key)}}
}

// prefixOp is an etcd op on every key starting with p.
func prefixOp(r gate.Resource, a gate.Action, p string) *gate.Op {
	return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: r, Action: a,
		Keys: gate.KeyRange{Key: []byte(p), End: gate.PrefixEnd([]byte(p))}}
}

// bareOp is an op that names no key.
func bareOp(r gate.Resource, a gate.Action) *gate.Op {
	return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: r, Action: a}
}

// foreignLease is an op on lease 0x7a, which owner holds ("": no owner on
// record).
func foreignLease(a gate.Action, owner string) *gate.Op {
	return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceLease, Action: a, Lease: 0x7a, Foreign: true, Owner: owner}
}

// logBuffer is a concurrency-safe log sink for assertions on log output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// mustLoadTimeout is the evaluation deadline of engines loaded by mustLoad.
// Tests that run decisions in several goroutines (and reloads) on the two
// cores of the reference machine, while other builds run, see single
// decisions of 40µs wait 20 to 110ms for a CPU: the default deadline of
// 100ms would deny them. timeout_test.go tests the deadline itself.
const mustLoadTimeout = 10 * time.Second

// mustLoad loads dir or fails the test.
func mustLoad(tb testing.TB, dir string, mode Mode) *Engine {
	tb.Helper()
	e, err := Load(context.Background(), Config{Dir: dir, Mode: mode, Logger: discardLogger(), EvalTimeout: mustLoadTimeout})
	if err != nil {
		tb.Fatalf("Load(%s): %v", dir, err)
	}
	return e
}

// copyShipped copies the shipped policies (not their tests) into a new
// temporary directory.
func copyShipped(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, name := range []string{"authz.rego", IntentionsFile} {
		b, err := os.ReadFile(filepath.Join(shipped, name))
		if err != nil {
			tb.Fatal(err)
		}
		writeFile(tb, dir, name, string(b))
	}
	return dir
}

func writeFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// scaledPolicy returns a policy directory holding the shipped policies with
// n more intentions appended, of the shapes real deployments grow: one per
// service with its own caller and key space, allow and deny intentions for
// the web caller on keys of their own, and segment globs. None of them
// decides the ops the benchmarks ask, so any cost they add is the index's.
func scaledPolicy(tb testing.TB, n int) string {
	tb.Helper()
	dir := copyShipped(tb)
	var b bytes.Buffer
	src, err := os.ReadFile(filepath.Join(dir, IntentionsFile))
	if err != nil {
		tb.Fatal(err)
	}
	b.Write(src)
	for i := range n {
		b.WriteString("\n")
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, `  - name: svc-%d
    source: "spiffe://example.org/svc-%d"
    resources: [kv, watch]
    actions: [read, write, watch]
    keys: ["/svc/%d/**"]
    effect: allow
`, i, i, i)
		case 1:
			fmt.Fprintf(&b, `  - name: web-tenant-%d
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [read]
    keys: ["/tenant/%d/**", "/tenant/%d-archive/**"]
    effect: allow
`, i, i, i)
		case 2:
			fmt.Fprintf(&b, `  - name: web-tenant-private-%d
    source: "spiffe://example.org/web"
    resources: ["*"]
    actions: ["*"]
    keys: ["/tenant/%d/private/**"]
    effect: deny
`, i, i-1)
		case 3:
			fmt.Fprintf(&b, `  - name: team-%d
    source: "spiffe://example.org/team-%d/*"
    resources: [kv]
    actions: [read]
    keys: ["/team/%d/*/config"]
    effect: allow
`, i, i, i)
		}
	}
	writeFile(tb, dir, IntentionsFile, b.String())
	return dir
}
