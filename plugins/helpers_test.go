package plugins

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/gate"
)

// buildDir caches the test guests built from testdata/*.c for the whole
// test binary: one build per source and defines.
var buildDir string

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("clang"); err != nil {
		fmt.Fprintln(os.Stderr, "plugins tests: clang is required to build the test guests from testdata/*.c "+
			"(clang, lld, libclang-rt-dev-wasm32; the WebAssembly target must be available): "+err.Error())
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "storegate-plugins-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var buildMu sync.Mutex

// guest builds testdata/<src>.c with the given -D defines into the build
// cache and returns the path of the .wasm file.
func guest(t testing.TB, src string, defines ...string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	h := sha256.Sum256([]byte(src + "\x00" + strings.Join(defines, "\x00")))
	out := filepath.Join(buildDir, src+"-"+hex.EncodeToString(h[:6])+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	args := []string{"--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-nostdlib", "-fno-builtin",
		"-Wall", "-Wl,--no-entry", "-Itestdata", "-o", out}
	for _, d := range defines {
		args = append(args, "-D"+d)
	}
	args = append(args, filepath.Join("testdata", src+".c"))
	cmd := exec.Command("clang", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("building test guest %s %v: %v\n%s", src, defines, err, stderr.String())
	}
	return out
}

// guestBytes is guest, read.
func guestBytes(t testing.TB, src string, defines ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(guest(t, src, defines...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recMetrics is a Metrics that records: failures by plugin and kind, and
// the number of calls timed. ObserveStage allocates nothing.
type recMetrics struct {
	mu       sync.Mutex
	failures map[string]int // "plugin/kind"
	stages   atomic.Int64
}

func (m *recMetrics) PluginFailed(_ context.Context, plugin, kind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failures == nil {
		m.failures = map[string]int{}
	}
	m.failures[plugin+"/"+kind]++
}

func (m *recMetrics) ObserveStage(_ context.Context, _ gate.Protocol, stage gate.Stage, _ time.Duration) {
	if stage == gate.StagePlugin {
		m.stages.Add(1)
	}
}

// failed returns how many failures of kind were counted for plugin.
func (m *recMetrics) failed(plugin, kind string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failures[plugin+"/"+kind]
}

// total returns how many failures were counted in all.
func (m *recMetrics) total() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.failures {
		n += c
	}
	return n
}

// logBuffer is a slog handler target safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testTimeout replaces the default 20ms call timeout in tests that are not
// about timeouts: under -race on a shared, busy machine a trivial call can
// be descheduled past 20ms of wall-clock time.
const testTimeout = 5 * time.Second

// newHost starts a host over specs, closed when the test ends. Specs
// without a timeout get testTimeout.
func newHost(t testing.TB, specs []Spec, opts Options) *Host {
	t.Helper()
	specs = slices.Clone(specs)
	for i := range specs {
		if specs[i].Timeout == 0 {
			specs[i].Timeout = testTimeout
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := New(context.Background(), specs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

var caller = gate.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web")}

// put returns an etcd Put of key=value.
func put(key, value string) *gate.Op {
	return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionWrite,
		Method: "/etcdserverpb.KV/Put", Keys: gate.KeyRange{Key: []byte(key)}, Value: []byte(value), ValueSize: len(value)}
}

// get returns an etcd Range over [key, end).
func get(key, end string) *gate.Op {
	op := &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead,
		Method: "/etcdserverpb.KV/Range", Keys: gate.KeyRange{Key: []byte(key)}}
	if end != "" {
		op.Keys.End = []byte(end)
	}
	return op
}

// denied checks that err is a gate denial whose reason contains want.
func denied(t testing.TB, err error, want string) {
	t.Helper()
	ge := gate.AsError(err)
	if ge == nil || ge.Kind != gate.KindDenied {
		t.Fatalf("got %v, want a denial containing %q", err, want)
	}
	if !strings.Contains(ge.Reason, want) {
		t.Fatalf("denial reason %q does not contain %q", ge.Reason, want)
	}
}
