package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

const slowPolicy = "testdata/slow-policy"

// TestEvalTimeoutStopsASlowPolicy: a policy that takes seconds is stopped at
// the evaluation deadline, and the error denies (and is not cached).
func TestEvalTimeoutStopsASlowPolicy(t *testing.T) {
	for _, tt := range []struct {
		name    string
		timeout time.Duration
	}{
		{"50ms", 50 * time.Millisecond},
		{"default", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Load(context.Background(), Config{Dir: slowPolicy, Logger: discardLogger(), EvalTimeout: tt.timeout, CacheBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second time too: a timeout is not cached
				start := time.Now()
				d, err := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/x"))
				took := time.Since(start)
				if !errors.Is(err, ErrEvalTimeout) || d.Effect != gate.Deny {
					t.Fatalf("Authorize = %+v, %v after %v; want deny and ErrEvalTimeout", d, err, took)
				}
				if took > 2*time.Second {
					t.Fatalf("Authorize took %v with a deadline of %v", took, e.opts.timeout)
				}
				t.Logf("%v after %v", err, took)
			}
		})
	}
}

func TestEvalTimeoutInShadowMode(t *testing.T) {
	e, err := Load(context.Background(), Config{Dir: slowPolicy, Mode: ModeShadow, Logger: discardLogger(), EvalTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/x"))
	if err != nil || d.Effect != gate.Allow || !d.Shadow || d.Reason != "policy evaluation failed: policy: evaluation timed out after 20ms" {
		t.Errorf("shadow Authorize = %+v, %v", d, err)
	}
}

// TestEvalTimeoutLeavesFastDecisionsAlone: the deadline bounds a decision,
// not the engine: fast decisions one after another for longer than the
// deadline never trip it, nor does a cancelled request look like a timeout.
// (The deadline is wall time: on a machine loaded enough a fast decision may
// wait longer than a short one for a CPU, hence a second here.)
func TestEvalTimeoutLeavesFastDecisionsAlone(t *testing.T) {
	e, err := Load(context.Background(), Config{Dir: shipped, Logger: discardLogger(), EvalTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if d, err := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/other/x")); err != nil || d.Effect != gate.Deny {
			t.Fatalf("Authorize = %+v, %v", d, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Authorize(ctx, web, kvOp(gate.ActionRead, "/app/x")); !errors.Is(err, context.Canceled) || errors.Is(err, ErrEvalTimeout) {
		t.Errorf("cancelled Authorize = %v", err)
	}
}

func TestEvalTimeoutConfig(t *testing.T) {
	for _, tt := range []struct {
		in, want time.Duration
	}{
		{0, DefaultEvalTimeout},
		{-1, 0},
		{time.Second, time.Second},
	} {
		e, err := Load(context.Background(), Config{Dir: shipped, Logger: discardLogger(), EvalTimeout: tt.in})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.current.Load().timeout; got != tt.want {
			t.Errorf("EvalTimeout %v: the version's deadline is %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestEvalClockStopsAndRestarts: concurrent slow decisions all stop at their
// deadline; the clock that checks deadlines stops when no decision needs it
// and starts again for the next one, which is still stopped in time.
func TestEvalClockStopsAndRestarts(t *testing.T) {
	e, err := Load(context.Background(), Config{Dir: slowPolicy, Logger: discardLogger(), EvalTimeout: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	slow := func() error {
		start := time.Now()
		_, err := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/x"))
		if !errors.Is(err, ErrEvalTimeout) {
			return err
		}
		if took := time.Since(start); took > 2*time.Second {
			return errors.New("stopped after " + took.String())
		}
		return nil
	}
	for round := range 3 {
		errs := make(chan error, 4)
		for range cap(errs) {
			go func() { errs <- slow() }()
		}
		for range cap(errs) {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		stopped := time.Now().Add(5 * time.Second)
		for evalClock.running.Load() {
			if time.Now().After(stopped) {
				t.Fatalf("round %d: the evaluation clock still runs with no evaluation under way", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := evalClock.active.Load(); n != 0 {
			t.Fatalf("round %d: %d evaluations still registered", round, n)
		}
	}
}
