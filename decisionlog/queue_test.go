package decisionlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/storegate/storegate/gate"
)

// failAfter bounds how long a test waits for something that should happen
// at once; reaching it is a failure, never a readiness check.
const failAfter = 10 * time.Second

func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(failAfter):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// blockWriter blocks every Write until release is closed, and says on
// entered that a Write has started.
type blockWriter struct {
	entered chan struct{} // cap 1
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newBlockWriter(t *testing.T) *blockWriter {
	w := &blockWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(w.unblock)
	return w
}

// unblock lets every Write through, from now on.
func (w *blockWriter) unblock() { w.once.Do(func() { close(w.release) }) }

func (w *blockWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *blockWriter) lines(t *testing.T) []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return splitLines(t, w.buf.Bytes())
}

// splitLines decodes b, which must be whole lines of JSON.
func splitLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("output does not end with a whole line: %q", b[max(0, len(b)-100):])
	}
	var out []map[string]any
	for _, line := range bytes.Split(b[:len(b)-1], []byte("\n")) {
		out = append(out, decode(t, line))
	}
	return out
}

// testRec returns a record whose key names i.
func testRec(i int) *gate.Record {
	return &gate.Record{Time: time.Now(), Caller: web, Op: &gate.Op{
		Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead,
		Method: "/etcdserverpb.KV/Range", Keys: gate.KeyRange{Key: fmt.Appendf(nil, "/k/%d", i)},
	}, Decision: gate.Decision{Effect: gate.Allow, Revision: "r1"}}
}

// reports collects what OnError is told, and signals each on a channel.
type reports struct {
	mu   sync.Mutex
	errs []error
	c    chan error
}

func newReports() *reports { return &reports{c: make(chan error, 100)} }

func (r *reports) onError(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	select {
	case r.c <- err:
	default:
	}
}

func (r *reports) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs)
}

// auditAll audits n records from a goroutine and fails the test if that
// does not finish: Audit must never wait for the writer.
func auditAll(t *testing.T, l *Log, from, n int, audit func(*Log, *gate.Record) error) []error {
	t.Helper()
	done := make(chan []error, 1)
	go func() {
		var errs []error
		for i := range n {
			errs = append(errs, audit(l, testRec(from+i)))
		}
		done <- errs
	}()
	return recv(t, done, "Audit calls to return (they block)")
}

func audit(l *Log, r *gate.Record) error { return l.Audit(context.Background(), r) }

func observeOnly(l *Log, r *gate.Record) error {
	l.Observe(context.Background(), r)
	return nil
}

// TestConcurrentAuditToFile: many goroutines audit to a real file at once;
// every line arrives, whole, as one JSON object, and nothing is refused.
func TestConcurrentAuditToFile(t *testing.T) {
	const goroutines, per = 16, 400
	path := filepath.Join(t.TempDir(), "decisions.log")
	rep := newReports()
	l, err := Open(Config{Output: path, QueueSize: goroutines * per, QueueBytes: 64 << 20, OnError: rep.onError})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range per {
				// Some keys are cut, some are binary, some need escaping.
				key := fmt.Appendf(nil, "/g%02d/%04d/", g, i)
				switch i % 4 {
				case 1:
					key = append(key, strings.Repeat("x", 1100)...)
				case 2:
					key = append(key, "\xff\x00"...)
				case 3:
					key = append(key, "\n\"\\\x01é"...)
				}
				rec := testRec(0)
				rec.Op.Keys.Key = key
				if err := l.Audit(context.Background(), rec); err != nil {
					t.Errorf("Audit: %v", err)
					return
				}
				// The record may be reused as soon as Audit returns.
				clear(key)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range splitLines(t, b) {
		k, _ := m["key"].(string)
		if k == "" {
			kb, err := base64.StdEncoding.DecodeString(m["key_base64"].(string))
			if err != nil {
				t.Fatal(err)
			}
			k = string(kb)
		}
		if len(k) < 10 || seen[k[:10]] {
			t.Fatalf("bad or repeated key %q", k)
		}
		seen[k[:10]] = true
	}
	if len(seen) != goroutines*per {
		t.Fatalf("%d lines, want %d", len(seen), goroutines*per)
	}
	if l.Dropped() != 0 || l.Refused() != 0 || rep.count() != 0 {
		t.Fatalf("dropped %d, refused %d, reports %v", l.Dropped(), l.Refused(), rep.errs)
	}
}

// TestBlockedWriter: a writer stuck in Write fills the queue; Audit then
// refuses at once under deny, drops under drop, and never waits. The
// bound counts the line being written.
func TestBlockedWriter(t *testing.T) {
	const size, extra = 8, 100
	for _, tt := range []struct {
		name    string
		mode    ErrorMode
		audit   func(*Log, *gate.Record) error
		refused bool
	}{
		{"deny", ErrorDeny, audit, true},
		{"drop", ErrorDrop, audit, false},
		{"observe under deny", ErrorDeny, observeOnly, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newBlockWriter(t)
			rep := newReports()
			l := newLog("test", w, nil, Config{ErrorMode: tt.mode, QueueSize: size, OnError: rep.onError})
			for i, err := range auditAll(t, l, 0, size, tt.audit) {
				if err != nil {
					t.Fatalf("line %d: %v", i, err)
				}
			}
			recv(t, w.entered, "the writer to start writing")
			errs := auditAll(t, l, size, extra, tt.audit)
			refused := tt.refused
			for i, err := range errs {
				if refused != (err != nil) || err != nil && !errors.Is(err, ErrQueueFull) {
					t.Fatalf("extra line %d: Audit = %v, want refused %v", i, err, refused)
				}
			}
			if refused {
				if l.Refused() != extra || l.Dropped() != 0 {
					t.Fatalf("refused %d, dropped %d, want %d, 0", l.Refused(), l.Dropped(), extra)
				}
			} else if l.Dropped() != extra || l.Refused() != 0 {
				t.Fatalf("dropped %d, refused %d, want %d, 0", l.Dropped(), l.Refused(), extra)
			}
			// One report, not one per line.
			err := recv(t, rep.c, "a report")
			if !errors.Is(err, ErrQueueFull) {
				t.Errorf("report %v", err)
			}
			if n := rep.count(); n != 1 {
				t.Errorf("%d reports, want 1 (rate-limited): %v", n, rep.errs)
			}

			w.unblock()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got := w.lines(t)
			if len(got) != size {
				t.Fatalf("%d lines written, want %d", len(got), size)
			}
			for i, m := range got {
				if m["key"] != fmt.Sprintf("/k/%d", i) {
					t.Fatalf("line %d has key %v", i, m["key"])
				}
			}
		})
	}
}

// TestQueueBytes: the queue is bounded by bytes as well as lines.
func TestQueueBytes(t *testing.T) {
	w := newBlockWriter(t)
	l := newLog("test", w, nil, Config{QueueSize: 1000, QueueBytes: MaxLineBytes})
	rec := testRec(0)
	rec.Op.Keys.Key = bytes.Repeat([]byte("k"), 5000) // cut to 1 KiB
	lineLen := len(appendRecord(nil, context.Background(), rec))
	done := make(chan int, 1)
	go func() {
		n := 0
		for n < 1000 && l.Audit(context.Background(), rec) == nil {
			n++
		}
		done <- n
	}()
	n := recv(t, done, "Audit to refuse")
	if want := MaxLineBytes / lineLen; n != want {
		t.Fatalf("%d lines of %d bytes queued in %d bytes, want %d", n, lineLen, MaxLineBytes, want)
	}
	w.unblock()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(w.lines(t)); got != n {
		t.Fatalf("%d lines written, want %d", got, n)
	}
}

// flakyWriter fails every Write while failing is set, and signals each
// Write on calls.
type flakyWriter struct {
	failing atomic.Bool
	mu      sync.Mutex
	buf     bytes.Buffer
}

var errDiskFull = errors.New("no space left on device")

func (w *flakyWriter) Write(p []byte) (int, error) {
	if w.failing.Load() {
		return 0, errDiskFull
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestFailingWriter: while the writer's writes fail, Audit refuses under
// deny (and drops nothing it took: the failed line is retried), and once
// a write succeeds it takes lines again.
func TestFailingWriter(t *testing.T) {
	w := &flakyWriter{}
	w.failing.Store(true)
	rep := newReports()
	l := makeLog("test", w, nil, Config{OnError: rep.onError})
	l.retryMin, l.retryMax = time.Millisecond, 5*time.Millisecond
	written := make(chan struct{}, 100)
	l.written = func() { written <- struct{}{} }
	go l.run()

	if err := l.Audit(context.Background(), testRec(0)); err != nil {
		t.Fatal(err) // taken: the writer has not failed yet
	}
	if err := recv(t, rep.c, "the write error's report"); !errors.Is(err, errDiskFull) {
		t.Fatalf("report %v", err)
	}
	for i := 1; i <= 3; i++ {
		if err := l.Audit(context.Background(), testRec(i)); !errors.Is(err, errDiskFull) {
			t.Fatalf("Audit while failing = %v, want the write error", err)
		}
	}
	l.Observe(context.Background(), testRec(4)) // queued, not refused
	if l.Refused() != 3 || l.Dropped() != 0 {
		t.Fatalf("refused %d, dropped %d", l.Refused(), l.Dropped())
	}

	w.failing.Store(false)
	recv(t, written, "the retried write")
	if err := l.Audit(context.Background(), testRec(5)); err != nil {
		t.Fatalf("Audit after recovery: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var keys []any
	for _, m := range splitLines(t, w.buf.Bytes()) {
		keys = append(keys, m["key"])
	}
	if fmt.Sprint(keys) != "[/k/0 /k/4 /k/5]" {
		t.Fatalf("keys written %v, want /k/0 /k/4 /k/5", keys)
	}
}

// TestFailingWriterDrop: under drop, a failing writer never fails Audit;
// the queue fills and the rest is counted.
func TestFailingWriterDrop(t *testing.T) {
	w := &flakyWriter{}
	w.failing.Store(true)
	rep := newReports()
	l := makeLog("test", w, nil, Config{ErrorMode: ErrorDrop, QueueSize: 4, OnError: rep.onError, CloseTimeout: time.Millisecond})
	l.retryMin, l.retryMax = time.Millisecond, 5*time.Millisecond
	go l.run()
	for i, err := range auditAll(t, l, 0, 20, audit) {
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
	}
	if l.Dropped() != 16 || l.Refused() != 0 {
		t.Fatalf("dropped %d, refused %d, want 16, 0", l.Dropped(), l.Refused())
	}
	recv(t, rep.c, "a report")
	// Close gives up on the four queued lines and counts them.
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "4 lines not written") {
		t.Fatalf("Close = %v", err)
	}
	if l.Dropped() != 20 {
		t.Fatalf("dropped %d after Close, want 20", l.Dropped())
	}
}

// shortWriter writes at most 7 bytes per call and says nothing of it.
type shortWriter struct{ buf bytes.Buffer }

func (w *shortWriter) Write(p []byte) (int, error) {
	return w.buf.Write(p[:min(len(p), 7)])
}

// TestShortWrites: a writer that writes less than asked gets the rest,
// not the line again.
func TestShortWrites(t *testing.T) {
	w := &shortWriter{}
	rep := newReports()
	l := makeLog("test", w, nil, Config{ErrorMode: ErrorDrop, OnError: rep.onError})
	l.retryMin, l.retryMax = time.Microsecond, time.Microsecond
	go l.run()
	for i := range 3 {
		l.Observe(context.Background(), testRec(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := splitLines(t, w.buf.Bytes()); len(got) != 3 {
		t.Fatalf("%d lines, want 3", len(got))
	}
	if err := recv(t, rep.c, "a report"); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("report %v", err)
	}
}

// TestCloseDrains: Close waits for the lines queued behind a slow write.
func TestCloseDrains(t *testing.T) {
	w := newBlockWriter(t)
	l := newLog("test", w, nil, Config{})
	const n = 500
	for i, err := range auditAll(t, l, 0, n, audit) {
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
	}
	go func() {
		<-w.entered
		w.unblock()
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(w.lines(t)); got != n {
		t.Fatalf("%d lines after Close, want %d", got, n)
	}
	if err := l.Audit(context.Background(), testRec(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Audit after Close = %v, want ErrClosed", err)
	}
	l.Observe(context.Background(), testRec(0))
	if l.Refused() != 1 || l.Dropped() != 1 {
		t.Fatalf("refused %d, dropped %d, want 1, 1", l.Refused(), l.Dropped())
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// closeCounter counts Close calls.
type closeCounter struct{ n atomic.Int32 }

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

// TestCloseTimeout: a writer stuck for good does not hold Close past its
// timeout; the file is not closed under the stuck Write.
func TestCloseTimeout(t *testing.T) {
	w := newBlockWriter(t)
	c := &closeCounter{}
	l := newLog("test", w, c, Config{CloseTimeout: 20 * time.Millisecond})
	for i, err := range auditAll(t, l, 0, 5, audit) {
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
	}
	recv(t, w.entered, "the writer to start writing")
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	if err := recv(t, done, "Close"); err == nil || !strings.Contains(err.Error(), "5 lines not written") {
		t.Fatalf("Close = %v", err)
	}
	if l.Dropped() != 5 || c.n.Load() != 0 {
		t.Fatalf("dropped %d, closed %d times, want 5, 0", l.Dropped(), c.n.Load())
	}
	w.unblock()
	recv(t, l.done, "the writer to return once released")
}

// TestHugeFields: a 1.5 MB key (and range end, reason, error) makes a
// line of a few KiB that says how long each was.
func TestHugeFields(t *testing.T) {
	const huge = 1536 << 10
	text := strings.Repeat("a", huge)
	multi := strings.Repeat("é", huge/2) // cut between characters?
	ctrl := strings.Repeat("\x01", huge) // 6 bytes each when escaped
	bin := strings.Repeat("\xff", huge)

	for _, tt := range []struct {
		name, key string
		wantLen   int // of the line, at most
	}{
		{"text", text, 2048},
		{"multibyte", multi, 2048},
		{"control", ctrl, 2048},
		{"binary", bin, 2048},
		{"valid prefix then binary", text[:2000] + bin, 2048},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := testRec(0)
			rec.Op.Keys.Key = []byte(tt.key)
			line := observe(t, context.Background(), rec)
			if len(line) > tt.wantLen {
				t.Fatalf("line of %d bytes, want at most %d", len(line), tt.wantLen)
			}
			m := decode(t, line)
			if m["key_truncated"] != json.Number(fmt.Sprint(len(tt.key))) {
				t.Fatalf("key_truncated = %v, want %d", m["key_truncated"], len(tt.key))
			}
			var got string
			if s, ok := m["key"].(string); ok {
				got = s
			} else {
				b, err := base64.StdEncoding.DecodeString(m["key_base64"].(string))
				if err != nil {
					t.Fatal(err)
				}
				got = string(b)
			}
			if len(got) < 128 || !strings.HasPrefix(tt.key, got) {
				t.Fatalf("logged key (%d bytes) is not a prefix of the key: %q", len(got), got[:min(len(got), 40)])
			}
		})
	}

	t.Run("every field", func(t *testing.T) {
		worst := ctrl[:100000] + bin[:100000]
		op := &gate.Op{
			Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: gate.ActionRegister,
			Method: worst, Keys: gate.KeyRange{Key: []byte(ctrl), End: []byte(bin)},
			ValueSize: 1 << 30, Lease: -1 << 63, PrevKV: true, TxnIndex: 1 << 30,
			Service: &gate.Service{Name: worst, ID: bin}, Session: worst, Datacenter: worst,
		}
		for _, rec := range []*gate.Record{
			{Time: when, Caller: web, Op: op, Err: errors.New(worst),
				Decision: gate.Decision{Shadow: true, Reason: worst, Revision: worst}},
			{Time: when, Caller: web, Op: op, Decision: gate.Decision{Effect: gate.Deny, Reason: worst, Revision: worst}},
		} {
			line := observe(t, traced(context.Background()), rec)
			if len(line) > MaxLineBytes {
				t.Fatalf("line of %d bytes, more than MaxLineBytes", len(line))
			}
			m := decode(t, line)
			for _, f := range []string{"key", "range_end", "method", "session", "datacenter", "policy_revision"} {
				if _, ok := m[f+"_truncated"]; !ok {
					t.Errorf("no %s_truncated in %s", f, line)
				}
			}
			svc := m["service"].(map[string]any)
			if svc["name_truncated"] == nil || svc["id_truncated"] == nil {
				t.Errorf("service %v not marked truncated", svc)
			}
		}
	})
}

// TestAppendStringN: a cut string is valid JSON, within its limit, and
// the prefix of what the whole string would decode to.
func TestAppendStringN(t *testing.T) {
	cases := append([]string{strings.Repeat("é", 20), strings.Repeat("\x01a\xff", 20), "🙂🙂🙂🙂"}, stringCases...)
	for _, s := range cases {
		var whole string
		if err := json.Unmarshal(appendString(nil, s), &whole); err != nil {
			t.Fatal(err)
		}
		for limit := range 60 {
			enc, n := appendStringN(nil, s, limit)
			if len(enc)-2 > limit || n > len(s) || n == len(s) && len(enc) != len(appendString(nil, s)) {
				t.Fatalf("appendStringN(%q, %d) = %q, %d: over the limit", s, limit, enc, n)
			}
			var got string
			if err := json.Unmarshal(enc, &got); err != nil || !strings.HasPrefix(whole, got) {
				t.Fatalf("appendStringN(%q, %d) = %q (%v): not a prefix of %q", s, limit, enc, err, whole)
			}
			if utf8.ValidString(s) && n < len(s) && !utf8.RuneStart(s[n]) {
				t.Fatalf("appendStringN(%q, %d) cut inside a character at %d", s, limit, n)
			}
			// Cut only when the next character would not fit.
			if n < len(s) {
				next, _ := appendStringN(nil, s, limit+6)
				if len(next) == len(enc) {
					t.Fatalf("appendStringN(%q, %d) stopped early at %d", s, limit, n)
				}
			}
		}
	}
}

func TestErrorMode(t *testing.T) {
	for s, want := range map[string]ErrorMode{"": ErrorDeny, "deny": ErrorDeny, "drop": ErrorDrop} {
		got, err := ParseErrorMode(s)
		if err != nil || got != want {
			t.Errorf("ParseErrorMode(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"Deny", "allow", "drop ", "ignore"} {
		if _, err := ParseErrorMode(s); err == nil {
			t.Errorf("ParseErrorMode(%q) succeeded", s)
		}
	}
	var cfg struct{ OnError ErrorMode }
	if err := json.Unmarshal([]byte(`{"OnError":"drop"}`), &cfg); err != nil || cfg.OnError != ErrorDrop {
		t.Fatalf("UnmarshalText: %v, %v", cfg.OnError, err)
	}
	if b, err := json.Marshal(cfg); err != nil || string(b) != `{"OnError":"drop"}` {
		t.Fatalf("MarshalText: %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"OnError":"open"}`), &cfg); err == nil {
		t.Fatal("UnmarshalText of open succeeded")
	}

	path := filepath.Join(t.TempDir(), "x.log")
	for _, cfg := range []Config{
		{Output: path, ErrorMode: 2},
		{Output: path, QueueSize: -1},
		{Output: path, QueueBytes: MaxLineBytes - 1},
		{Output: path, QueueBytes: -1},
		{Output: path, CloseTimeout: -time.Second},
	} {
		if l, err := Open(cfg); err == nil {
			l.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
}

// TestRotationUnderLoad: concurrent audits to a small rotating file; every
// file holds whole lines and none is lost.
func TestRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.log")
	l, err := Open(Config{Output: path, MaxSizeMB: 1, QueueSize: 1 << 16, QueueBytes: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, per = 4, 1000 // about 1.3 KiB a line: five files
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range per {
				rec := testRec(g*per + i)
				rec.Op.Keys.Key = append(rec.Op.Keys.Key, strings.Repeat("/", 1100)...)
				if err := l.Audit(context.Background(), rec); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < 3 {
		t.Fatalf("want rotated files, got %v", ents)
	}
	total := 0
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			decode(t, sc.Bytes())
			total++
		}
		f.Close()
		if fi, _ := e.Info(); fi.Size() > 1<<20 {
			t.Errorf("%s is %d bytes", e.Name(), fi.Size())
		}
	}
	if total != goroutines*per {
		t.Fatalf("%d lines, want %d", total, goroutines*per)
	}
}

// TestRotationBurst: a full queue written at once to 1 MB files rotates
// several times in a few milliseconds; no rotated file may replace
// another (lumberjack names them to the millisecond).
func TestRotationBurst(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.log")
	lj := &lumberjack.Logger{Filename: path, MaxSize: 1}
	l := makeLog(path, lj, lj, Config{QueueSize: 1 << 16, QueueBytes: 6 << 20, OnError: func(error) {}})
	l.rotateBytes = 1 << 20
	rec := testRec(0)
	rec.Op.Keys.Key = bytes.Repeat([]byte("/"), 1100)
	n := 0
	for l.Audit(context.Background(), rec) == nil {
		n++
	}
	go l.run() // only now: the whole queue is one burst
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		total += len(splitLines(t, b))
	}
	if len(ents) < 6 || total != n {
		t.Fatalf("%d lines in %d files, want %d", total, len(ents), n)
	}
}
