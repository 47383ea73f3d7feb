package decisionlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/storegate/storegate/gate"
)

// Config says where the log goes.
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
	// OnError, if not nil, is called when a line cannot be written (the
	// request is not failed by it). It is called synchronously on the
	// request's path, outside the log's lock, possibly concurrently.
	OnError func(error)
}

// DefaultMaxSizeMB is the size at which a log file rotates when
// Config.MaxSizeMB is 0.
const DefaultMaxSizeMB = 100

// ErrClosed is reported to OnError for a line observed after Close.
var ErrClosed = errors.New("decisionlog: log is closed")

// Log writes one JSON line per decision. It implements gate.Observer and
// is safe for concurrent use.
type Log struct {
	name    string // the output, for error messages
	onError func(error)

	mu     sync.Mutex
	w      io.Writer
	closer io.Closer // nil: not ours to close (stdout, stderr)
	closed bool
}

var _ gate.Observer = (*Log)(nil)

// Open opens the log cfg describes. For a file it creates the parent
// directories and the file now, so that an unusable path is an error at
// startup rather than a lost line per request.
func Open(cfg Config) (*Log, error) {
	switch cfg.Output {
	case "":
		return nil, errors.New("decisionlog: no output (want stdout, stderr or a file path)")
	case "stdout":
		return newLog("stdout", os.Stdout, nil, cfg.OnError), nil
	case "stderr":
		return newLog("stderr", os.Stderr, nil, cfg.OnError), nil
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
	return newLog(cfg.Output, lj, lj, cfg.OnError), nil
}

// newLog returns a Log writing to w; Close closes c unless it is nil.
func newLog(name string, w io.Writer, c io.Closer, onError func(error)) *Log {
	return &Log{name: name, onError: onError, w: w, closer: c}
}

// maxPooled is the largest buffer put back in the pool: a line with a huge
// key must not pin its buffer for ever.
const maxPooled = 64 << 10

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// Observe writes rec as one line. It implements gate.Observer: it never
// fails the request; a write error goes to Config.OnError.
func (l *Log) Observe(ctx context.Context, rec *gate.Record) {
	bp := bufPool.Get().(*[]byte)
	b := appendRecord((*bp)[:0], ctx, rec)
	err := l.write(b)
	if cap(b) <= maxPooled {
		*bp = b[:0]
		bufPool.Put(bp)
	}
	if err != nil && l.onError != nil {
		l.onError(err)
	}
}

// write hands line to the output in one Write call.
func (l *Log) write(line []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	n, err := l.w.Write(line)
	if err == nil && n < len(line) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("decisionlog: writing %s: %w", l.name, err)
	}
	return nil
}

// Close closes the file (never stdout or stderr). Lines observed after
// Close are dropped and reported to OnError as ErrClosed. Closing twice is
// harmless.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.closer == nil {
		return nil
	}
	if err := l.closer.Close(); err != nil {
		return fmt.Errorf("decisionlog: closing %s: %w", l.name, err)
	}
	return nil
}
