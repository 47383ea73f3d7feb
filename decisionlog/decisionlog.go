package decisionlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/storegate/storegate/gate"
)

// Config says where the log goes and what happens when it cannot keep up.
type Config struct {
	// Output is "stdout", "stderr" or a file path (created 0600 with parent
	// dirs if missing, appended to). A file literally named stdout is
	// "./stdout".
	Output string
	// Rotation, for a file only (ignored for stdout/stderr): MaxSizeMB
	// (default 100), MaxBackups (0 = keep all), MaxAgeDays (0 = no age
	// limit), Compress (gzip rotated files).
	MaxSizeMB, MaxBackups, MaxAgeDays int
	Compress                          bool

	// ErrorMode says what Audit does when a line cannot be taken: the
	// queue is full, the writer's last write failed, or the log is closed.
	// The zero value is ErrorDeny (see ErrorMode for why).
	ErrorMode ErrorMode
	// QueueSize bounds the lines waiting for the writer, and QueueBytes
	// their total size (0: DefaultQueueSize, DefaultQueueBytes). A line is
	// counted until it has been written, so the bounds include the batch
	// being written. QueueBytes, when set, must be at least MaxLineBytes.
	QueueSize, QueueBytes int
	// CloseTimeout bounds how long Close waits for the queue to drain
	// (0: DefaultCloseTimeout).
	CloseTimeout time.Duration

	// OnError, if not nil, is told why lines are not being written: a
	// write error, a full queue, a line after Close. It is rate-limited
	// (the first report at once, then at most one per ReportInterval) and
	// the error it gets says how many lines were dropped and decisions
	// refused so far. It is called on the writer's goroutine (write
	// errors) or on the goroutine of a request refused a line (a full
	// queue, a closed log), and must not block. When nil, the reports go
	// to slog.Default() as warnings.
	OnError func(error)
}

// Defaults.
const (
	// DefaultMaxSizeMB is the size at which a log file rotates when
	// Config.MaxSizeMB is 0.
	DefaultMaxSizeMB = 100
	// DefaultQueueSize is the number of lines that may wait for the writer
	// when Config.QueueSize is 0.
	DefaultQueueSize = 4096
	// DefaultQueueBytes is their total size when Config.QueueBytes is 0.
	DefaultQueueBytes = 8 << 20
	// DefaultCloseTimeout is how long Close waits for the writer when
	// Config.CloseTimeout is 0.
	DefaultCloseTimeout = 5 * time.Second
	// ReportInterval is the least time between two reports to
	// Config.OnError (or to slog) after the first.
	ReportInterval = 10 * time.Second
)

// ErrorMode is what Audit does when a line cannot be taken.
//
// The default, ErrorDeny, makes the log a condition of every decision: an
// op whose line the log cannot take is denied. An audit log that loses
// lines silently is worth little in an incident, and the lines it loses are
// the ones an attacker would choose: one who can fill the queue or the disk
// (every denied request writes a line too) could otherwise act unlogged
// while it lasts. The price is availability: while the output is stuck or
// failing, every op through the gateway is denied. ErrorDrop chooses the
// other side: ops proceed, unwritten lines are counted (Log.Dropped) and
// reported, and the decisions taken meanwhile are not audited.
type ErrorMode uint8

// Error modes.
const (
	ErrorDeny ErrorMode = iota // deny the op whose line cannot be taken (default)
	ErrorDrop                  // drop the line, count it, let the op proceed
)

// ParseErrorMode parses "deny" or "drop"; "" is ErrorDeny, the default.
func ParseErrorMode(s string) (ErrorMode, error) {
	switch s {
	case "", "deny":
		return ErrorDeny, nil
	case "drop":
		return ErrorDrop, nil
	}
	return 0, fmt.Errorf("decisionlog: on_error %q: want deny or drop", s)
}

// String returns "deny" or "drop".
func (m ErrorMode) String() string {
	switch m {
	case ErrorDeny:
		return "deny"
	case ErrorDrop:
		return "drop"
	}
	return fmt.Sprintf("ErrorMode(%d)", uint8(m))
}

// MarshalText implements encoding.TextMarshaler.
func (m ErrorMode) MarshalText() ([]byte, error) {
	if m > ErrorDrop {
		return nil, fmt.Errorf("decisionlog: invalid %v", m)
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (so a YAML or JSON
// config can hold an ErrorMode directly), with ParseErrorMode.
func (m *ErrorMode) UnmarshalText(b []byte) error {
	v, err := ParseErrorMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// UnmarshalYAML parses on_error from configuration; a bad value is
// reported with its line as a *yaml.TypeError, so decoding goes on and
// every problem of the file is reported at once.
func (m *ErrorMode) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseErrorMode(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: on_error %q is not deny or drop", n.Line, n.Value)}}
	}
	*m = v
	return nil
}

var (
	// ErrClosed is the error for a line audited after Close.
	ErrClosed = errors.New("decisionlog: log is closed")
	// ErrQueueFull is the error for a line that finds the queue full (the
	// writer is slower than the requests, or stuck).
	ErrQueueFull = errors.New("decisionlog: queue full")
)

// Log writes one JSON line per decision. It implements gate.Auditor and
// gate.Observer and is safe for concurrent use. Lines are encoded on the
// caller's goroutine and written by one writer goroutine, started by Open
// and ended by Close.
type Log struct {
	name         string // the output, for error messages
	mode         ErrorMode
	onError      func(error)
	maxLines     int
	maxBytes     int
	closeTimeout time.Duration
	retryMin     time.Duration // first wait before retrying a failed write
	retryMax     time.Duration
	reportEvery  time.Duration

	w      io.Writer
	closer io.Closer // nil: not ours to close (stdout, stderr)

	mu sync.Mutex
	// buf holds the queued lines the writer has not taken yet, one after
	// the other; lines and bytes count those and the ones the writer is
	// writing.
	buf          []byte
	lines, bytes int
	closed       bool
	abandoned    bool // Close gave up on the lines still queued

	wake chan struct{} // cap 1: buf became non-empty, or Close was called
	stop chan struct{} // closed when Close gives up waiting
	done chan struct{} // closed when the writer has returned

	failed  atomic.Pointer[error] // the last write's error while it is not retried successfully
	dropped atomic.Uint64
	refused atomic.Uint64
	// nextReport is when (UnixNano) the next report may be made.
	nextReport atomic.Int64

	closeOnce sync.Once
	closeErr  error

	// rotateBytes is the size at which the output rotates (0: it does
	// not); paceNext is the writer's, for pace.
	rotateBytes int64
	paceNext    time.Time

	written func() // test hook: the writer finished a batch
}

var (
	_ gate.Observer = (*Log)(nil)
	_ gate.Auditor  = (*Log)(nil)
)

// Open opens the log cfg describes and starts its writer. For a file it
// creates the parent directories and the file now, so that an unusable
// path is an error at startup rather than a lost line per request.
func Open(cfg Config) (*Log, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	switch cfg.Output {
	case "":
		return nil, errors.New("decisionlog: no output (want stdout, stderr or a file path)")
	case "stdout":
		return newLog("stdout", os.Stdout, nil, cfg), nil
	case "stderr":
		return newLog("stderr", os.Stderr, nil, cfg), nil
	}
	if cfg.MaxSizeMB < 0 || cfg.MaxBackups < 0 || cfg.MaxAgeDays < 0 {
		return nil, fmt.Errorf("decisionlog: %s: negative rotation setting (max size %d MB, %d backups, %d days)",
			cfg.Output, cfg.MaxSizeMB, cfg.MaxBackups, cfg.MaxAgeDays)
	}
	size := cfg.MaxSizeMB
	if size == 0 {
		size = DefaultMaxSizeMB
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Output), 0o700); err != nil {
		return nil, fmt.Errorf("decisionlog: %w", err)
	}
	f, err := os.OpenFile(cfg.Output, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("decisionlog: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("decisionlog: %w", err)
	}
	// lumberjack opens the file again on the first Write, appending to it
	// (or rotating it first when it is already full); new files it creates
	// on rotation keep the current file's mode.
	lj := &lumberjack.Logger{
		Filename:   cfg.Output,
		MaxSize:    size, // megabytes
		MaxBackups: cfg.MaxBackups,
		MaxAge:     cfg.MaxAgeDays,
		Compress:   cfg.Compress,
	}
	l := makeLog(cfg.Output, lj, lj, cfg)
	l.rotateBytes = int64(size) << 20
	go l.run()
	return l, nil
}

// check validates the settings Open does not default.
func (cfg *Config) check() error {
	switch {
	case cfg.ErrorMode > ErrorDrop:
		return fmt.Errorf("decisionlog: invalid error mode %v", cfg.ErrorMode)
	case cfg.QueueSize < 0:
		return fmt.Errorf("decisionlog: negative queue size %d", cfg.QueueSize)
	case cfg.QueueBytes < 0 || cfg.QueueBytes > 0 && cfg.QueueBytes < MaxLineBytes:
		return fmt.Errorf("decisionlog: queue bytes %d: want 0 (default) or at least %d", cfg.QueueBytes, MaxLineBytes)
	case cfg.CloseTimeout < 0:
		return fmt.Errorf("decisionlog: negative close timeout %v", cfg.CloseTimeout)
	}
	return nil
}

// newLog returns a Log writing to w and starts its writer; Close closes c
// unless it is nil. cfg's output and rotation settings are not used.
func newLog(name string, w io.Writer, c io.Closer, cfg Config) *Log {
	l := makeLog(name, w, c, cfg)
	go l.run()
	return l
}

// makeLog is newLog without starting the writer.
func makeLog(name string, w io.Writer, c io.Closer, cfg Config) *Log {
	l := &Log{
		name: name, mode: cfg.ErrorMode, onError: cfg.OnError,
		maxLines: cfg.QueueSize, maxBytes: cfg.QueueBytes, closeTimeout: cfg.CloseTimeout,
		retryMin: 10 * time.Millisecond, retryMax: time.Second, reportEvery: ReportInterval,
		w: w, closer: c,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if l.maxLines == 0 {
		l.maxLines = DefaultQueueSize
	}
	if l.maxBytes == 0 {
		l.maxBytes = DefaultQueueBytes
	}
	if l.closeTimeout == 0 {
		l.closeTimeout = DefaultCloseTimeout
	}
	return l
}

// maxPooled is the largest buffer put back in the pool.
const maxPooled = 64 << 10

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// Audit implements gate.Auditor: it encodes rec as one line and queues it
// for the writer, without waiting for the write. It never blocks. Under
// ErrorDeny it returns an error, and the gate denies the op, when the line
// cannot be queued (ErrQueueFull, ErrClosed) or while the writer's last
// write failed (that error); under ErrorDrop it always returns nil and
// counts the lines it could not queue in Dropped. rec is not kept.
func (l *Log) Audit(ctx context.Context, rec *gate.Record) error {
	return l.record(ctx, rec, l.mode == ErrorDeny)
}

// Observe implements gate.Observer: Audit, but it cannot fail the request,
// so a line that cannot be queued is dropped (and counted) whatever the
// error mode.
func (l *Log) Observe(ctx context.Context, rec *gate.Record) {
	_ = l.record(ctx, rec, false)
}

// Dropped is the number of lines of decisions that went ahead unlogged:
// refused by a full queue or a closed log under ErrorDrop (or through
// Observe), or still queued when Close gave up.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Refused is the number of Audit calls that returned an error, each a
// decision the gate then denied.
func (l *Log) Refused() uint64 { return l.refused.Load() }

// record queues rec's line; refuse says whether it may return an error.
func (l *Log) record(ctx context.Context, rec *gate.Record, refuse bool) error {
	if refuse {
		// A failing writer refuses at once: there is no point encoding.
		if e := l.failed.Load(); e != nil {
			return l.refuseLine(*e)
		}
	}
	bp := bufPool.Get().(*[]byte)
	line := appendRecord((*bp)[:0], ctx, rec)
	err := l.enqueue(line)
	if cap(line) <= maxPooled {
		*bp = line[:0]
		bufPool.Put(bp)
	}
	switch {
	case err == nil:
		return nil
	case refuse:
		return l.refuseLine(err)
	}
	l.dropped.Add(1)
	l.report(err)
	return nil
}

func (l *Log) refuseLine(err error) error {
	l.refused.Add(1)
	l.report(err)
	return err
}

// enqueue copies line to the queue, or says why it cannot.
func (l *Log) enqueue(line []byte) error {
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return ErrClosed
	case l.lines >= l.maxLines || l.bytes+len(line) > l.maxBytes:
		l.mu.Unlock()
		return ErrQueueFull
	}
	wasEmpty := len(l.buf) == 0
	l.buf = append(l.buf, line...)
	l.lines++
	l.bytes += len(line)
	l.mu.Unlock()
	if wasEmpty {
		// The writer waits only when it found buf empty; whoever makes it
		// non-empty wakes it.
		l.signal()
	}
	return nil
}

func (l *Log) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// report tells OnError (or slog) about err, at most once per reportEvery
// after the first.
func (l *Log) report(err error) {
	now := time.Now().UnixNano()
	next := l.nextReport.Load()
	if now < next || !l.nextReport.CompareAndSwap(next, now+int64(l.reportEvery)) {
		return
	}
	state := ""
	if e := l.failed.Load(); e != nil && !errors.Is(err, *e) {
		state = fmt.Sprintf("; the writer is failing: %v", *e)
	}
	err = fmt.Errorf("%w (%s, on_error %v: %d lines dropped, %d decisions refused so far%s)",
		err, l.name, l.mode, l.dropped.Load(), l.refused.Load(), state)
	if l.onError != nil {
		l.onError(err)
		return
	}
	slog.Warn("decision log: lines are not being written", "err", err)
}

// Close stops taking lines, waits (up to Config.CloseTimeout) for the
// writer to write those queued, and closes the file (never stdout or
// stderr). If the writer does not finish in time, the lines left are
// counted in Dropped and Close returns an error; the file is then left open
// if the writer is stuck in a Write. Lines audited after Close are refused
// (ErrClosed) under ErrorDeny and dropped under ErrorDrop. Closing twice is
// harmless: the second Close returns nil.
func (l *Log) Close() error {
	first := false
	l.closeOnce.Do(func() {
		first = true
		l.closeErr = l.close()
	})
	if !first {
		return nil
	}
	return l.closeErr
}

func (l *Log) close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.signal()

	t := time.NewTimer(l.closeTimeout)
	defer t.Stop()
	select {
	case <-l.done:
	case <-t.C:
		close(l.stop)
		n := l.abandon()
		// A writer waiting to retry returns at once; one stuck in Write
		// may never, and the file is then not ours to close under it.
		grace := time.NewTimer(closeGrace)
		defer grace.Stop()
		select {
		case <-l.done:
			l.closeOutput()
		case <-grace.C:
		}
		return fmt.Errorf("decisionlog: closing %s: %d lines not written after %v", l.name, n, l.closeTimeout)
	}
	return l.closeOutput()
}

// closeGrace is how long Close waits, after giving up, for the writer to
// return before it leaves the file open.
const closeGrace = 100 * time.Millisecond

// abandon counts the lines still queued as dropped, once, and returns how
// many there were.
func (l *Log) abandon() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.abandoned {
		return 0
	}
	l.abandoned = true
	n := l.lines
	l.dropped.Add(uint64(n))
	l.lines, l.bytes, l.buf = 0, 0, nil
	return n
}

func (l *Log) closeOutput() error {
	if l.closer == nil {
		return nil
	}
	if err := l.closer.Close(); err != nil {
		return fmt.Errorf("decisionlog: closing %s: %w", l.name, err)
	}
	return nil
}
