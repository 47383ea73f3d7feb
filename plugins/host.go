package plugins

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
)

// Host runs the configured plugins: it implements gate.Transformer, and
// Watch reloads a plugin whose file changes. It is safe for concurrent
// use.
type Host struct {
	plugins  []*plugin // in spec order
	chain    atomic.Pointer[chain]
	log      *slog.Logger
	metrics  Metrics // may be nil
	tracer   trace.Tracer
	onReload func(plugin string, err error)
	cache    wazero.CompilationCache

	mu       sync.Mutex // guards closed and chain rebuilds
	closed   bool
	retiring sync.WaitGroup // versions being drained and closed
}

var _ gate.Transformer = (*Host)(nil)

// chain is the order plugins run in, rebuilt whenever a reload changes a
// plugin's capabilities and swapped atomically, so a call reads it once.
type chain struct {
	// request: mutators in spec order, then validators in spec order
	// (Kubernetes' admission order: each mutator sees the previous one's
	// result, validators see the final op).
	request []*plugin
	// response: responders in the reverse of the request order, so what a
	// mutator added first is stripped last.
	response []*plugin
}

// New loads every plugin of specs: compiles it, checks that it implements
// ABI version 1, and starts its pool of initialized instances. Any failure
// closes what was loaded and returns an error naming the plugin and its
// file. The host then serves until Close.
func New(ctx context.Context, specs []Spec, opts Options) (*Host, error) {
	h := &Host{
		log:      opts.Logger,
		metrics:  opts.Metrics,
		tracer:   opts.Tracer,
		onReload: opts.OnReload,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if opts.CacheDir != "" {
		if h.cache, err = wazero.NewCompilationCacheWithDir(opts.CacheDir); err != nil {
			return nil, fmt.Errorf("plugins: compilation cache %s: %w", opts.CacheDir, err)
		}
	} else {
		h.cache = wazero.NewCompilationCache()
	}
	names := map[string]bool{}
	for _, s := range specs {
		pl, err := h.newPlugin(ctx, s)
		if err == nil && names[pl.spec.Name] {
			err = fmt.Errorf("plugins: two plugins are named %q", pl.spec.Name)
		}
		if err != nil {
			_ = h.Close(context.Background())
			return nil, err
		}
		names[pl.spec.Name] = true
		h.plugins = append(h.plugins, pl)
	}
	h.rebuildChain()
	return h, nil
}

// newPlugin checks spec, creates the plugin's runtime and loads its file.
func (h *Host) newPlugin(ctx context.Context, spec Spec) (*plugin, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := spec.Match.compile()
	if err != nil {
		return nil, loadError(spec.Name, spec.Path, err)
	}
	log := h.log.With("plugin", spec.Name)
	rt, err := newRuntime(ctx, spec.memoryPages(), h.cache, log)
	if err != nil {
		return nil, loadError(spec.Name, spec.Path, err)
	}
	pl := &plugin{host: h, spec: spec, match: m, log: log, rt: rt, modConfig: moduleConfig(log)}
	wasm, err := os.ReadFile(spec.Path)
	if err != nil {
		_ = rt.Close(ctx)
		return nil, loadError(spec.Name, spec.Path, err)
	}
	v, err := pl.loadVersion(ctx, wasm, sha256.Sum256(wasm))
	if err != nil {
		h.countLoadFailure(ctx, spec.Name, err)
		_ = rt.Close(ctx)
		return nil, loadError(spec.Name, spec.Path, err)
	}
	pl.current.Store(v)
	log.Info("plugin loaded", "path", spec.Path, "capabilities", v.caps.String(), "instances", v.size,
		"memory_limit", spec.MemoryLimit, "timeout", spec.Timeout, "failure", spec.Failure.String())
	return pl, nil
}

// rebuildChain recomputes the call order from the plugins' current
// versions and publishes it.
func (h *Host) rebuildChain() {
	c := &chain{}
	var validators []*plugin
	responder := map[*plugin]bool{}
	for _, pl := range h.plugins {
		v := pl.current.Load()
		if v == nil {
			continue
		}
		responder[pl] = v.caps.Responder()
		if v.caps.Mutator() {
			c.request = append(c.request, pl)
		} else {
			validators = append(validators, pl)
		}
	}
	c.request = append(c.request, validators...)
	for i := len(c.request) - 1; i >= 0; i-- {
		if pl := c.request[i]; responder[pl] {
			c.response = append(c.response, pl)
		}
	}
	h.chain.Store(c)
}

// carries reports whether op has a key, a range or a value: the only ops
// plugins see.
func carries(op *gate.Op) bool {
	return len(op.Keys.Key) > 0 || len(op.Keys.End) > 0 || op.Value != nil
}

// Request runs the request chain over op (see gate.Transformer): every
// plugin whose Match selects op, mutators first. It stops at the first
// denial. When nothing is rewritten and nothing fails, it allocates
// nothing.
func (h *Host) Request(ctx context.Context, caller gate.Identity, op *gate.Op) error {
	if !carries(op) {
		return nil
	}
	c := h.chain.Load()
	if c == nil {
		return nil
	}
	id := caller.String()
	for _, pl := range c.request {
		if !pl.match.selects(op) {
			continue
		}
		if err := pl.request(ctx, id, op); err != nil {
			return err
		}
	}
	return nil
}

// Response runs the response chain over one item answering op (see
// gate.Transformer) and returns the item to send.
func (h *Host) Response(ctx context.Context, caller gate.Identity, op *gate.Op, key, value []byte) ([]byte, []byte, error) {
	c := h.chain.Load()
	if c == nil {
		return key, value, nil
	}
	id := caller.String()
	for _, pl := range c.response {
		if !pl.match.selects(op) {
			continue
		}
		var err error
		if key, value, err = pl.respond(ctx, id, op, key, value); err != nil {
			return nil, nil, err
		}
	}
	return key, value, nil
}

// Responds reports whether a response hook would see items answering op.
func (h *Host) Responds(op *gate.Op) bool {
	c := h.chain.Load()
	if c == nil {
		return false
	}
	for _, pl := range c.response {
		if pl.match.selects(op) {
			return true
		}
	}
	return false
}

// Close stops every plugin: new calls are denied, calls in flight finish,
// then instances, modules and runtimes are closed. It returns ctx's error
// if ctx ends first (the rest is then closed in the background).
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	for _, pl := range h.plugins {
		if v := pl.current.Swap(nil); v != nil {
			h.retire(v)
		}
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.retiring.Wait()
		for _, pl := range h.plugins {
			_ = pl.rt.Close(context.Background())
		}
		if h.cache != nil {
			_ = h.cache.Close(context.Background())
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("plugins: close: %w", ctx.Err())
	}
}

// retire drains and closes v in the background.
func (h *Host) retire(v *version) {
	h.retiring.Add(1)
	v.retire(h.retiring.Done)
}

// observe times one plugin call.
func (h *Host) observe(ctx context.Context, proto gate.Protocol, d time.Duration) {
	if h.metrics != nil {
		h.metrics.ObserveStage(ctx, proto, gate.StagePlugin, d)
	}
}

// countFailure counts one failed call.
func (h *Host) countFailure(ctx context.Context, plugin string, kind FailureKind) {
	if h.metrics != nil {
		h.metrics.PluginFailed(ctx, plugin, kind.String())
	}
}

// countLoadFailure counts a version that failed to load: by the kind of
// the call that failed, or abi (the module does not implement the ABI).
func (h *Host) countLoadFailure(ctx context.Context, plugin string, err error) {
	kind := FailABI
	var f *Failure
	if errors.As(err, &f) {
		kind = f.Kind
	}
	h.countFailure(ctx, plugin, kind)
}
