package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/storegate/storegate/gate"
)

// Config configures an Engine.
type Config struct {
	// Dir is the policy directory: the *.rego files directly in it (not
	// *_test.rego, not subdirectories) and intentions.yaml.
	Dir string
	// Bundle, when set instead of Dir, takes the policy from signed OPA
	// bundles served over HTTP(S) (see BundleConfig).
	Bundle *BundleConfig
	// Mode is ModeEnforce unless set.
	Mode Mode
	// Logger receives load, reload and watch events; nil means
	// slog.Default().
	Logger *slog.Logger
	// CacheBytes bounds the memory the decision cache of one policy version
	// holds, in bytes; 0 turns the cache off (unless the deprecated
	// CacheSize is set). Each entry is accounted as the bytes of its strings
	// (the caller's SPIFFE ID, key, range end, method, session, datacenter,
	// owner and reason) plus a fixed overhead of 256 bytes; when an
	// entry would take the total past the budget the cache is emptied
	// first. Ops whose key and range end together, or whose method, session,
	// datacenter and owner together, exceed 512 bytes are never cached, and
	// neither are ops that name a service. Policies that call
	// non-deterministic builtins (time, http.send, rand) are never cached.
	CacheBytes int64
	// CacheSize is the cache's old bound, in entries. When CacheBytes is 0
	// and CacheSize is positive, the budget is CacheSize × 384 bytes (an
	// entry with typical strings), so 65536 entries give 24 MiB.
	//
	// Deprecated: set CacheBytes.
	CacheSize int
	// EvalTimeout bounds the evaluation of every decision (the allow query
	// and, on a deny, filter and reason, together). A decision still
	// running when it expires is stopped and Authorize returns an error
	// wrapping ErrEvalTimeout, which denies. 0 means DefaultEvalTimeout; a
	// negative value means no deadline (the request's context still
	// applies). Decisions answered from the cache are not evaluated.
	EvalTimeout time.Duration
	// DisableFastPath makes OPA decide every op, also when the policy is
	// the shipped intentions engine (authz.rego unmodified and
	// intentions.yaml), which is otherwise decided by a matcher compiled
	// from the intentions, with the same decisions and reasons.
	DisableFastPath bool
	// OnReload, if not nil, is told the outcome of every reload that found
	// a changed directory or fetched a bundle (err nil: the new version is
	// in use), and of every bundle fetch that failed.
	OnReload func(revision string, err error)
}

// DefaultEvalTimeout is the evaluation deadline when Config.EvalTimeout is 0.
const DefaultEvalTimeout = time.Second

// Engine decides ops with the policies of one directory or bundle source.
// It is safe for concurrent use; Reload swaps the prepared policy
// atomically under running evaluations.
type Engine struct {
	dir      string        // the policy directory; "" with a bundle
	bundle   *bundleClient // nil with a directory
	mode     Mode
	log      *slog.Logger
	opts     loadOptions
	onReload func(string, error)

	current   atomic.Pointer[version]
	reloading sync.Mutex // serializes Reload

	mu        sync.Mutex // guards the last failure
	lastErr   error
	lastErrAt time.Time
}

// Interface guard.
var _ gate.Authorizer = (*Engine)(nil)

// Load loads, compiles and prepares the policy directory. A missing or empty
// directory is not an error: the engine then denies every op (and says so in
// a warning). A file that does not parse or compile is, and the error names
// it and the line.
//
// With cfg.Bundle set instead, Load verifies and loads the bundle persisted
// by an earlier run, if there is one; without it the engine starts with no
// policy (denying every op, Active false) until Watch or Reload fetches a
// good bundle. Only a configuration that cannot work (an unreadable key,
// a bad URL) is an error then.
func Load(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Dir == "" && cfg.Bundle == nil {
		return nil, errors.New("policy: no policy directory or bundle configured")
	}
	if cfg.Dir != "" && cfg.Bundle != nil {
		return nil, errors.New("policy: configure a policy directory or a bundle, not both")
	}
	if cfg.Mode != ModeEnforce && cfg.Mode != ModeShadow {
		return nil, fmt.Errorf("policy: unknown mode %v", cfg.Mode)
	}
	e := &Engine{dir: cfg.Dir, mode: cfg.Mode, log: cfg.Logger, opts: cfg.loadOptions(), onReload: cfg.OnReload}
	if e.log == nil {
		e.log = slog.Default()
	}
	if cfg.Bundle != nil {
		return e, e.startBundle(ctx, *cfg.Bundle)
	}
	v, src, err := load(ctx, e.dir, e.opts)
	if err != nil {
		return nil, err
	}
	v.activated = time.Now()
	e.current.Store(v)
	e.warn(v, src)
	e.log.Info("policy loaded", "dir", e.dir, "revision", v.revision, "files", v.files, "mode", e.mode.String())
	return e, nil
}

// loadOptions resolves the defaults and the deprecated fields.
func (cfg *Config) loadOptions() loadOptions {
	o := loadOptions{cacheBytes: cfg.CacheBytes, timeout: cfg.EvalTimeout, noFast: cfg.DisableFastPath}
	if o.cacheBytes == 0 && cfg.CacheSize > 0 {
		o.cacheBytes = int64(cfg.CacheSize) * legacyEntryBytes
	}
	switch {
	case o.timeout == 0:
		o.timeout = DefaultEvalTimeout
	case o.timeout < 0:
		o.timeout = 0
	}
	return o
}

// warn logs why a loaded version denies everything, if it does.
func (e *Engine) warn(v *version, src *source) {
	k, o := e.origin()
	switch {
	case src.missing:
		e.log.Warn("policy directory does not exist: every request is denied", k, o)
	case v.empty && e.bundle != nil:
		e.log.Warn("policy bundle holds no policy (Rego modules, data.intentions): every request is denied", k, o)
	case v.empty:
		e.log.Warn("policy directory holds no policy (*.rego, "+IntentionsFile+"): every request is denied", k, o)
	case v.undefined:
		e.log.Warn("no rule defines "+queryAllow+": every request is denied", k, o)
	}
}

// origin is the log attribute naming where the policy comes from.
func (e *Engine) origin() (key, value string) {
	if e.bundle != nil {
		return "bundle", e.bundle.source
	}
	return "dir", e.dir
}

// Revision identifies the loaded policy: a bundle's manifest revision, or
// else a hash of its files' names and contents ("none" when nothing is
// loaded).
func (e *Engine) Revision() string { return e.current.Load().revision }

// Active reports whether a policy is in use: always with a directory (an
// empty or missing one is a policy that denies everything), and with a
// bundle once a verified one has been loaded. Until then every op is
// denied.
func (e *Engine) Active() bool { return !e.current.Load().inactive }

// Status is what an engine enforces and how its last reload went.
type Status struct {
	// Revision is the policy's revision ("none": nothing loaded).
	Revision string `json:"revision"`
	// Source is the policy directory or the bundle URL (without its
	// query and user information, which may hold credentials).
	Source string `json:"source"`
	// Kind is "dir" or "bundle".
	Kind string `json:"kind"`
	Mode string `json:"mode"`
	// Active: a policy is in use (see Engine.Active).
	Active bool `json:"active"`
	// ActivatedAt is when the policy in use was loaded.
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	// LastError is the last reload's error, when the last reload (or a
	// later poll) did not bring a good policy; the last good one is still
	// in use.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Persisted is where the last good bundle is kept ("": not kept).
	Persisted string `json:"persisted,omitempty"`
	// Evaluator is what decides ops: EvaluatorCompiled when the policy is
	// the shipped intentions engine and the fast path is on (ops that name
	// a service still go to OPA), else EvaluatorOPA.
	Evaluator Evaluator `json:"evaluator"`
}

// Status returns what the engine enforces now.
func (e *Engine) Status() Status {
	v := e.current.Load()
	k, o := e.origin()
	st := Status{Revision: v.revision, Source: o, Kind: k, Mode: e.mode.String(), Active: !v.inactive,
		ActivatedAt: v.activated, Evaluator: v.evaluator()}
	if e.bundle != nil {
		st.Persisted = e.bundle.persistPath
	}
	e.mu.Lock()
	if e.lastErr != nil {
		st.LastError, st.LastErrorAt = e.lastErr.Error(), e.lastErrAt
	}
	e.mu.Unlock()
	return st
}

// failed records a reload that did not bring a good policy.
func (e *Engine) failed(err error) {
	e.mu.Lock()
	e.lastErr, e.lastErrAt = err, time.Now()
	e.mu.Unlock()
}

// succeeded clears the last failure: the source holds the policy in use
// (again). notify says whether OnReload may hear of it: it does when a
// failure is cleared, so that "the last reload failed" ends when the
// source is back to the policy in use, though nothing was reloaded.
func (e *Engine) succeeded(notify bool) {
	e.mu.Lock()
	cleared := e.lastErr != nil
	e.lastErr, e.lastErrAt = nil, time.Time{}
	e.mu.Unlock()
	if cleared && notify && e.onReload != nil {
		e.onReload(e.current.Load().revision, nil)
	}
}

// Evaluator returns what decides ops of the policy in use (see
// Status.Evaluator).
func (e *Engine) Evaluator() Evaluator { return e.current.Load().evaluator() }

// EvaluatorOf returns what decides op with the policy in use: the
// compiled intentions for the ops they handle, else OPA.
func (e *Engine) EvaluatorOf(op *gate.Op) Evaluator { return e.current.Load().evaluatorOf(op) }

// Mode returns the engine's mode.
func (e *Engine) Mode() Mode { return e.mode }

// Authorize decides whether caller may perform op. In ModeEnforce an
// evaluation error is returned (and denies); in ModeShadow nothing is
// denied: a deny, a filter or an error comes back as Allow with Shadow set
// and the reason.
func (e *Engine) Authorize(ctx context.Context, caller gate.Identity, op *gate.Op) (gate.Decision, error) {
	return e.authorize(ctx, e.current.Load(), caller, op)
}

// authorize decides op with the version v, in the engine's mode.
func (e *Engine) authorize(ctx context.Context, v *version, caller gate.Identity, op *gate.Op) (gate.Decision, error) {
	d, err := v.cachedDecide(ctx, caller, op, e.mode == ModeShadow)
	if e.mode != ModeShadow {
		return d, err
	}
	switch {
	case err != nil:
		d.Reason = "policy evaluation failed: " + err.Error()
	case d.Effect == gate.Filter:
		d.Reason = "range would be filtered: " + d.Reason
	case d.Effect == gate.Allow:
		return d, nil
	}
	d.Effect, d.Shadow = gate.Allow, true
	return d, nil
}
