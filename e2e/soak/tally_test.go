package soak

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error classes: the two expected ones, and the rest by the client's own
// terms (a gRPC code, an HTTP status, or the transport).
const (
	classDenied  = "denied"  // policy refused, as expected
	classRefused = "refused" // bad input refused (gateway or plugin), as expected
)

// tally counts what the load did: ops by kind, errors by class, and every
// wrong answer (a value no write produced, a denial that did not happen).
type tally struct {
	mu     sync.Mutex
	ops    map[string]int
	errs   map[string]int
	wrong  []string
	nWrong int
	// firstErrs are the first unexpected errors of each class.
	firstErrs []string
}

func newTally() *tally { return &tally{ops: map[string]int{}, errs: map[string]int{}} }

// op counts one op of kind.
func (t *tally) op(kind string) {
	t.mu.Lock()
	t.ops[kind]++
	t.mu.Unlock()
}

// fail counts an unexpected error of op kind, classed in the client's terms.
func (t *tally) fail(kind string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs[classOf(err)]++
	if t.errs[classOf(err)] <= 3 {
		t.firstErrs = append(t.firstErrs, fmt.Sprintf("%s: %v", kind, err))
	}
}

// expected counts an expected error of class.
func (t *tally) expected(class string) {
	t.mu.Lock()
	t.errs[class]++
	t.mu.Unlock()
}

// wrongf records a wrong answer.
func (t *tally) wrongf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nWrong++
	if len(t.wrong) < 20 {
		t.wrong = append(t.wrong, fmt.Sprintf(format, args...))
	}
}

// classOf is err's class: its gRPC code, its HTTP status, or "transport".
func classOf(err error) string {
	var se api.StatusError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("consul %d", se.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	if c, ok := etcdCode(err); ok {
		return "etcd " + c.String()
	}
	return "transport"
}

// etcdCode is err's gRPC code: a client/v3 error carries it as an
// rpctypes.EtcdError, a raw gRPC client's as a status.
func etcdCode(err error) (codes.Code, bool) {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code(), true
	}
	if s, ok := status.FromError(err); ok {
		return s.Code(), true
	}
	return codes.Unknown, false
}

// totals are the counts so far.
func (t *tally) totals() (ops int, unexpected int, summary string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.ops {
		ops += n
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(t.errs)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, t.errs[k]))
		if k != classDenied && k != classRefused {
			unexpected += t.errs[k]
		}
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	return ops, unexpected, strings.Join(parts, " ")
}

// opsSummary is the op counts by kind.
func (t *tally) opsSummary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(t.ops)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, t.ops[k]))
	}
	return strings.Join(parts, " ")
}

// workers run paced loops until stopped.
type workers struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func newWorkers() *workers { return &workers{stop: make(chan struct{})} }

// every runs fn(ctx, i) for i = 0, 1, ... once per period until Stop; each
// call gets 30s, and is never cut short by Stop (an op in flight ends as
// it would).
func (w *workers) every(period time.Duration, fn func(ctx context.Context, i int)) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			fn(ctx, i)
			cancel()
		}
	}()
}

// Stop stops the loops and waits for the calls in flight.
func (w *workers) Stop() {
	close(w.stop)
	w.wg.Wait()
}
