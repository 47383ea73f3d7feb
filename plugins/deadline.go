package plugins

import (
	"context"
	"math"
	"sync/atomic"
	"time"
)

// deadline is the context.Context every call into one instance runs
// under: the per-call deadline without context.WithTimeout's allocations
// (a context, a timer and a cancel func per call).
//
// wazero, built WithCloseOnContextDone, watches the call's ctx.Done() and
// closes the module when it fires, which is how a guest stuck in a loop
// is interrupted. A Done channel cannot be reopened, but it does not need
// to be: once the deadline fires, the instance is closed and replaced, so
// each instance owns one channel and one timer for its whole life, re-armed
// for each call.
//
// Value is delegated to the caller's context (host functions and wazero
// read values from it). Done, Err and Deadline read only fields that the
// timer or atomics guard, because wazero's watcher goroutine may call them
// after the call returned.
type deadline struct {
	parent   context.Context // the caller's context during a call, else nil
	done     chan struct{}   // closed when the deadline fires
	timer    *time.Timer     // fires fire(); stopped between calls
	fired    atomic.Bool
	when     atomic.Int64 // the armed deadline, Unix nanoseconds
	byParent bool         // the armed deadline is the caller's, not the plugin's
}

// newDeadline returns an unarmed deadline.
func newDeadline() *deadline {
	d := &deadline{done: make(chan struct{})}
	d.timer = time.AfterFunc(math.MaxInt64, d.fire)
	d.timer.Stop()
	return d
}

// fire closes Done, once.
func (d *deadline) fire() {
	if d.fired.CompareAndSwap(false, true) {
		close(d.done)
	}
}

// arm starts a call under parent, bounded by timeout or by parent's own
// deadline if it is sooner. It returns false, arming nothing, when parent
// is already done or its deadline has passed.
func (d *deadline) arm(parent context.Context, timeout time.Duration) bool {
	if parent.Err() != nil || d.fired.Load() {
		return false
	}
	t, byParent := timeout, false
	if pd, ok := parent.Deadline(); ok {
		if left := time.Until(pd); left < t {
			t, byParent = left, true
		}
	}
	if t <= 0 {
		return false
	}
	d.parent, d.byParent = parent, byParent
	d.when.Store(time.Now().Add(t).UnixNano())
	d.timer.Reset(t)
	return true
}

// disarm ends a call. It reports whether the deadline fired (or is firing
// now): the instance is then unusable, even if the call itself succeeded.
func (d *deadline) disarm() (expired bool) {
	d.parent = nil
	return !d.timer.Stop() || d.fired.Load()
}

// stop releases the timer when the instance is closed.
func (d *deadline) stop() { d.timer.Stop() }

// Deadline implements context.Context.
func (d *deadline) Deadline() (time.Time, bool) {
	if w := d.when.Load(); w != 0 {
		return time.Unix(0, w), true
	}
	return time.Time{}, false
}

// Done implements context.Context.
func (d *deadline) Done() <-chan struct{} { return d.done }

// Err implements context.Context.
func (d *deadline) Err() error {
	if d.fired.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// Value implements context.Context: the caller's values, during a call.
func (d *deadline) Value(key any) any {
	if p := d.parent; p != nil {
		return p.Value(key)
	}
	return nil
}
