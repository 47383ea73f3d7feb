package linearizable

import (
	"fmt"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// record is one finished operation: when it was called and returned (ns
// since the run began), and its output. Served, when set, is what a broken
// client handed its caller instead of Output (see staleStore).
type record struct {
	Client       int
	In           input
	Out          output
	Served       *output
	Call, Return int64
}

// history collects the operations of every client of one run.
type history struct {
	start time.Time
	mu    sync.Mutex
	recs  []record
}

func newHistory() *history { return &history{start: time.Now()} }

// now is the time since the run began, from the monotonic clock.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(r record) {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
}

func (h *history) records() []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]record(nil), h.recs...)
}

// operations is the history for porcupine. An operation with an unknown
// outcome returns at the horizon, after everything else: it may have taken
// effect at any time after its call, or never (linearized last). served
// picks the outputs broken clients handed out instead of the store's.
func (h *history) operations(served bool) []porcupine.Operation {
	recs := h.records()
	var last int64
	for _, r := range recs {
		last = max(last, r.Call, r.Return)
	}
	horizon := last + int64(time.Hour)
	ops := make([]porcupine.Operation, 0, len(recs))
	for _, r := range recs {
		out := r.Out
		if served && r.Served != nil {
			out = *r.Served
		}
		ret := r.Return
		if out.Unknown {
			ret = horizon
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Client, Input: r.In, Call: r.Call, Output: out, Return: ret})
	}
	return ops
}

// revisions indexes the revision → value of every write a history shows,
// and fails when one revision shows two values or one value two revisions
// (values are unique per write, so either is a wrong answer).
func revisions(ops []porcupine.Operation) (revIndex, error) {
	revs := revIndex{}
	seen := map[string]int64{} // key + value → revision
	note := func(key, value string, rev int64) error {
		if rev == 0 {
			return nil
		}
		if revs[key] == nil {
			revs[key] = map[int64]string{}
		}
		if v, ok := revs[key][rev]; ok && v != value {
			return fmt.Errorf("key %s: revision %d showed both %q and %q", key, rev, v, value)
		}
		if r, ok := seen[key+"\x00"+value]; ok && r != rev {
			return fmt.Errorf("key %s: value %q showed revisions %d and %d", key, value, r, rev)
		}
		revs[key][rev], seen[key+"\x00"+value] = value, rev
		return nil
	}
	for _, op := range ops {
		in, out := op.Input.(input), op.Output.(output)
		if out.Unknown {
			continue
		}
		if (in.Kind == opGet || out.Read) && out.Found {
			if err := note(in.Key, out.Value, out.Rev); err != nil {
				return nil, err
			}
		}
		if out.WriteRev != 0 {
			if err := note(in.Key, in.Value, out.WriteRev); err != nil {
				return nil, err
			}
		}
	}
	return revs, nil
}
