package policy

import (
	"sync/atomic"
	"time"
)

// Evaluation deadlines are checked against a coarse clock rather than armed
// as a timer each: OPA polls its topdown.Cancel before every expression it
// evaluates, and comparing a deadline with an atomically loaded clock there
// costs a nanosecond, where arming and stopping a runtime timer per decision
// costs half a microsecond to a microsecond and three allocations on the
// reference machine. The clock is a goroutine that ticks every clockTick
// while some evaluation with a deadline is running and stops when none has
// been for clockIdle; an evaluation therefore stops at most a tick (plus
// scheduling) after its deadline.
const (
	clockTick = 5 * time.Millisecond
	clockIdle = 200 * time.Millisecond
)

var (
	clockEpoch = time.Now()
	evalClock  struct {
		now     atomic.Int64 // nanoseconds since clockEpoch at the last tick
		active  atomic.Int64 // evaluations with a deadline under way
		running atomic.Bool  // a tickClock goroutine is running
	}
)

// startDeadline registers an evaluation that must end timeout from now and
// returns its deadline on the clock. Every call must be paired with one of
// endDeadline.
func startDeadline(timeout time.Duration) int64 {
	evalClock.active.Add(1)
	now := int64(time.Since(clockEpoch))
	if !evalClock.running.Load() && evalClock.running.CompareAndSwap(false, true) {
		evalClock.now.Store(now)
		go tickClock()
	}
	return now + int64(timeout)
}

func endDeadline() { evalClock.active.Add(-1) }

// expired reports whether the clock has reached deadline.
func expired(deadline int64) bool { return evalClock.now.Load() >= deadline }

// tickClock advances the clock until no evaluation has needed it for
// clockIdle.
func tickClock() {
	t := time.NewTicker(clockTick)
	defer t.Stop()
	idle := time.Duration(0)
	for range t.C {
		evalClock.now.Store(int64(time.Since(clockEpoch)))
		if evalClock.active.Load() > 0 {
			idle = 0
			continue
		}
		if idle += clockTick; idle < clockIdle {
			continue
		}
		// Stop, unless an evaluation started after the check above and saw
		// the clock still running: then it is ours to keep (or a new
		// tickClock's, if that evaluation started one).
		evalClock.running.Store(false)
		if evalClock.active.Load() == 0 || !evalClock.running.CompareAndSwap(false, true) {
			return
		}
		idle = 0
	}
}
