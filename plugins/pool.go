package plugins

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
)

// version is one loaded version of a plugin's module: the compiled module
// and a fixed pool of its instances. A reload makes a new version and
// retires the old one.
//
// The pool is a buffered channel holding exactly size slots: an instance
// is either in the channel, serving one call, or being replaced, and
// whatever happens to it, one value per slot goes back into the channel
// (a fresh instance, or nil once the version is retired). So the channel
// never blocks on send, a receive is a fair FIFO wait that a select can
// bound by the caller's context, and retiring is counting size values out.
// sync.Pool would be wrong here: it may drop instances at any GC and create
// new ones unboundedly, so neither the number of instances (memory) nor the
// number of concurrent calls would be bounded.
type version struct {
	pl       *plugin
	compiled wazero.CompiledModule
	hash     [32]byte // of the .wasm file, to skip reloads of unchanged files
	caps     Capabilities
	size     int
	free     chan *instance
	retired  chan struct{} // closed when the version stops serving new calls
	refills  sync.WaitGroup
}

// refillBackoff bounds the wait between attempts to replace an instance
// when instantiating fails (it should not: the module loaded once).
const (
	refillBackoffMin = 10 * time.Millisecond
	refillBackoffMax = 5 * time.Second
)

// loadVersion compiles wasm, checks its exports and fills a pool of
// spec.Instances instances, each initialized with the spec's config.
// Anything wrong is a *Failure (of kind abi unless a call failed),
// including a mutator configured with failure: allow.
func (pl *plugin) loadVersion(ctx context.Context, wasm []byte, hash [32]byte) (*version, error) {
	compiled, err := pl.rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fail(FailABI, "not a valid WebAssembly module: %v", firstLine(err.Error()))
	}
	if problems := exportProblems(compiled); len(problems) > 0 {
		_ = compiled.Close(ctx)
		return nil, fail(FailABI, "%s", strings.Join(problems, "; "))
	}
	v := &version{
		pl:       pl,
		compiled: compiled,
		hash:     hash,
		size:     pl.spec.Instances,
		free:     make(chan *instance, pl.spec.Instances),
		retired:  make(chan struct{}),
	}
	for i := 0; i < v.size; i++ {
		in, caps, err := v.spawn(ctx)
		if err == nil && i > 0 && caps != v.caps {
			in.close()
			err = fail(FailABI, "%s returned %s, then %s", exportCapabilities, v.caps, caps)
		}
		if err != nil {
			v.discard()
			return nil, err
		}
		if i == 0 {
			if err := pl.spec.Failure.forbids(caps); err != nil {
				in.close()
				v.discard()
				return nil, err
			}
			v.caps = caps
			if in.memSize() > pl.spec.MemoryLimit/2 {
				pl.log.Warn("plugin starts with more than half of its memory limit: every instance will be replaced after each call",
					"memory", in.memSize(), "memory_limit", pl.spec.MemoryLimit)
			}
		}
		v.free <- in
	}
	return v, nil
}

// spawn creates and sets up one instance of the version.
func (v *version) spawn(ctx context.Context) (*instance, Capabilities, error) {
	in, err := instantiate(ctx, v.pl.rt, v.compiled, v.pl.modConfig, v.pl.spec.MemoryLimit)
	if err != nil {
		return nil, 0, err
	}
	caps, err := in.setup(ctx, v.pl.spec.Config)
	if err != nil {
		in.close()
		return nil, 0, err
	}
	return in, caps, nil
}

// discard closes a version that never served: its instances and module.
func (v *version) discard() {
	for {
		select {
		case in := <-v.free:
			in.close()
		default:
			_ = v.compiled.Close(context.Background())
			return
		}
	}
}

// errHostClosed is returned for calls after Close.
var errHostClosed = errors.New("the plugin host is closed")

// acquire takes an instance of the plugin's current version, waiting for
// one while all serve calls, until ctx is done or the plugin's timeout
// passed. A version retired while waiting sends the wait to its
// successor (within the same bound), so a reload drops no call. The fast
// path allocates nothing.
//
// A wait that runs out is a busy failure, which denies the op whatever the
// failure policy: filling the pool with slow calls is within any caller's
// reach, and must not turn a plugin off for everyone else. The wait is
// bounded by the timeout, not by a share of it taken from the call: a call
// that gets an instance late still has its whole timeout to run, so
// waiting cannot make it time out either.
func (pl *plugin) acquire(ctx context.Context) (*instance, *version, error) {
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	for {
		v := pl.current.Load()
		if v == nil {
			return nil, nil, errHostClosed
		}
		select {
		case in := <-v.free:
			if in != nil {
				return in, v, nil
			}
			v.free <- nil // a retired version's empty slot: give it back
			continue
		default:
		}
		if wait == nil {
			if err := ctx.Err(); err != nil {
				return nil, nil, errCallerDone{err}
			}
			wait = time.NewTimer(pl.spec.Timeout)
		}
		select {
		case in := <-v.free:
			if in != nil {
				return in, v, nil
			}
			v.free <- nil
		case <-v.retired:
		case <-ctx.Done():
			return nil, nil, errCallerDone{ctx.Err()}
		case <-wait.C:
			return nil, nil, failClosed(FailBusy, "no instance free within %s (all %d busy)", pl.spec.Timeout, v.size)
		}
	}
}

// release gives an instance back after a call. A broken one (its call
// failed, or its deadline fired) is replaced, and so is one whose memory
// grew past half of the limit: a guest that leaks keeps working, on fresh
// instances, instead of failing a call at the limit.
func (v *version) release(in *instance) {
	if in.broken || in.memSize() > v.pl.spec.MemoryLimit/2 {
		v.replace(in)
		return
	}
	v.free <- in
}

// replace closes in and fills its slot again, in the background: the call
// that broke it does not wait for an instantiation, and waiters take the
// next free instance meanwhile.
func (v *version) replace(in *instance) {
	in.close()
	v.refills.Add(1)
	go v.refill()
}

// refill puts a fresh instance into a slot, retrying with backoff if
// instantiation fails, or a nil once the version is retired.
func (v *version) refill() {
	defer v.refills.Done()
	backoff := refillBackoffMin
	for {
		select {
		case <-v.retired:
			v.free <- nil
			return
		default:
		}
		in, caps, err := v.spawn(context.Background())
		if err == nil && caps != v.caps {
			in.close()
			err = fail(FailABI, "%s returned %s, then %s", exportCapabilities, v.caps, caps)
		}
		if err == nil {
			v.free <- in
			return
		}
		v.pl.log.Error("plugin instance could not be replaced; retrying", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-v.retired:
			t.Stop()
			v.free <- nil
			return
		case <-t.C:
		}
		backoff = min(2*backoff, refillBackoffMax)
	}
}

// retire stops the version from taking new calls and closes it once every
// slot is back: calls in flight finish on their instances first. It
// returns at once; done is called when the version is closed.
func (v *version) retire(done func()) {
	close(v.retired)
	go func() {
		defer done()
		for range v.size {
			if in := <-v.free; in != nil {
				in.close()
			}
		}
		v.refills.Wait()
		_ = v.compiled.Close(context.Background())
	}()
}
