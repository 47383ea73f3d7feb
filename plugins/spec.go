package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
)

// FailurePolicy says what happens to an op when its plugin fails (trap,
// timeout, memory, malformed result, ABI error).
type FailurePolicy uint8

// Failure policies. The zero value denies, so a forgotten field fails
// closed.
const (
	// FailDeny denies the op, with a reason naming the plugin and the
	// failure.
	FailDeny FailurePolicy = iota
	// FailAllow lets the op through untouched and logs a warning. Not
	// for mutators (refused at load), and not for the failures that deny
	// whatever the policy (Failure.FailsClosed).
	FailAllow
)

// String is the policy's configuration spelling: "deny" or "allow".
func (p FailurePolicy) String() string {
	switch p {
	case FailDeny:
		return "deny"
	case FailAllow:
		return "allow"
	}
	return fmt.Sprintf("failure(%d)", uint8(p))
}

// forbids says why a module with caps may not run under policy p, if it
// may not: a mutator (capability 1) under FailAllow. A mutator that did
// not run lets through an op that is not what the caller's policy
// expects (a key outside its namespace, a value stored in plaintext).
// Checked at every load, so a reload cannot turn a validator configured
// with failure: allow into a mutator either.
func (p FailurePolicy) forbids(caps Capabilities) *Failure {
	if p == FailAllow && caps.Mutator() {
		return fail(FailABI, "%s returned %s: a mutator cannot run under failure: allow "+
			"(an op it did not rewrite is not what the callers' policy expects); configure failure: deny",
			exportCapabilities, caps)
	}
	return nil
}

// ParseFailurePolicy parses "deny" (or "") and "allow".
func ParseFailurePolicy(s string) (FailurePolicy, error) {
	switch s {
	case "", "deny":
		return FailDeny, nil
	case "allow":
		return FailAllow, nil
	}
	return 0, fmt.Errorf("plugins: unknown failure policy %q (want deny or allow)", s)
}

// Defaults of a Spec's zero fields.
const (
	DefaultTimeout     = 20 * time.Millisecond
	DefaultMemoryLimit = 32 << 20
	// maxMemoryLimit is what a 32-bit WebAssembly memory can address.
	maxMemoryLimit = 1 << 32
)

// Spec configures one plugin.
type Spec struct {
	// Name identifies the plugin in reasons, logs, spans and metrics.
	Name string
	// Path is the .wasm file; Watch reloads it when it changes.
	Path string
	// Match selects the ops the plugin sees.
	Match Match
	// Timeout bounds one call (default 20ms); a guest still running is
	// interrupted and the call fails.
	Timeout time.Duration
	// MemoryLimit bounds one instance's memory, in bytes (default 32 MiB,
	// rounded up to whole 64 KiB pages).
	MemoryLimit uint64
	// Failure is what a failed call does to the op (default deny).
	// FailAllow is refused at load for a mutator (a module whose
	// storegate_capabilities has bit 1), and never lets through an op
	// that found no instance free in time or that a validator tried to
	// mutate.
	Failure FailurePolicy
	// Config is the JSON given to storegate_init; nil means "{}".
	Config []byte
	// Instances is the pool size (default runtime.GOMAXPROCS(0)): at most
	// this many calls into the plugin run at once.
	Instances int
}

// withDefaults returns s with its zero fields set and checks the rest.
func (s Spec) withDefaults() (Spec, error) {
	if s.Name == "" {
		return s, errors.New("plugins: a plugin needs a name")
	}
	if s.Path == "" {
		return s, fmt.Errorf("plugins: plugin %q: no path to its .wasm file", s.Name)
	}
	if s.Timeout < 0 || s.Instances < 0 {
		return s, fmt.Errorf("plugins: plugin %q: negative timeout or instances", s.Name)
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.MemoryLimit == 0 {
		s.MemoryLimit = DefaultMemoryLimit
	}
	s.MemoryLimit = (s.MemoryLimit + pageSize - 1) / pageSize * pageSize
	if s.MemoryLimit > maxMemoryLimit {
		return s, fmt.Errorf("plugins: plugin %q: memory limit %d over the 4 GiB a 32-bit memory can address", s.Name, s.MemoryLimit)
	}
	if s.Failure != FailDeny && s.Failure != FailAllow {
		return s, fmt.Errorf("plugins: plugin %q: unknown failure policy %d", s.Name, s.Failure)
	}
	if len(s.Config) == 0 {
		s.Config = []byte("{}")
	}
	if !json.Valid(s.Config) {
		return s, fmt.Errorf("plugins: plugin %q: config is not valid JSON", s.Name)
	}
	if s.Instances == 0 {
		s.Instances = runtime.GOMAXPROCS(0)
	}
	return s, nil
}

// memoryPages is the limit in 64 KiB pages, as wazero takes it.
func (s Spec) memoryPages() uint32 { return uint32(s.MemoryLimit / pageSize) }

// Metrics is what the host reports to: failed calls by plugin and kind,
// and the duration of every call (stage "plugin"). telemetry.Metrics
// implements it. Both methods are called on the request path and must not
// block.
type Metrics interface {
	PluginFailed(ctx context.Context, plugin, kind string)
	ObserveStage(ctx context.Context, proto gate.Protocol, stage gate.Stage, d time.Duration)
}

// Options are the host's collaborators; every field may be left zero.
type Options struct {
	// Logger gets plugin failures, reloads and the guests' own output
	// (storegate.log, stdout, stderr). Nil: discarded.
	Logger *slog.Logger
	// Metrics counts failures and times calls. Nil: not reported.
	Metrics Metrics
	// Tracer, when the request's span is recording, makes each plugin
	// call a child span "storegate.plugin". Nil: no spans.
	Tracer trace.Tracer
	// CacheDir keeps compiled plugins across restarts (wazero's
	// compilation cache); "" keeps them in memory only.
	CacheDir string
	// OnReload, if set, is told of every reload Watch attempts of a
	// plugin whose file changed: err is nil when the new version is
	// serving, else why the old one stays.
	OnReload func(plugin string, err error)
}
