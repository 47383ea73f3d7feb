package decisionlog

import (
	"bytes"
	"fmt"
	"io"
	"time"
)

// maxWrite bounds one Write: the writer hands the output whole lines, as
// many as fit in maxWrite (one line per Write if a line is longer, which
// encoding does not produce). lumberjack fails a Write longer than a file
// may grow, and rotates only between Writes, so a line is never split
// between two files.
const maxWrite = 64 << 10

// maxIdleBuf is the largest buffer the writer keeps once it is mostly
// unused: a burst must not pin megabytes for ever, and a steady load must
// not grow a buffer again for every batch.
const maxIdleBuf = 1 << 20

// run is the writer: it takes what is queued, writes it, and returns once
// the log is closed and the queue empty, or when Close gives up.
func (l *Log) run() {
	defer close(l.done)
	var out []byte
	for {
		l.mu.Lock()
		if len(l.buf) == 0 {
			closed := l.closed
			l.mu.Unlock()
			if closed {
				return
			}
			select {
			case <-l.wake:
			case <-l.stop:
				return
			}
			continue
		}
		out, l.buf = l.buf, out[:0]
		l.mu.Unlock()

		if !l.writeLines(out) {
			return
		}
		if cap(out) > maxIdleBuf && len(out) < cap(out)/4 {
			out = nil // the burst that grew it is over
		}
		if l.written != nil {
			l.written()
		}
	}
}

// writeLines writes b, whole lines, in Writes of at most maxWrite bytes,
// and takes each from the queue's count once written. It returns false if
// Close gave up first.
func (l *Log) writeLines(b []byte) bool {
	for len(b) > 0 {
		n := len(b)
		if n > maxWrite {
			n = bytes.LastIndexByte(b[:maxWrite], '\n') + 1
			if n == 0 {
				n = bytes.IndexByte(b, '\n') + 1
				if n == 0 {
					n = len(b)
				}
			}
		}
		chunk := b[:n]
		if !l.pace(len(chunk)) || !l.writeChunk(chunk) {
			return false
		}
		l.mu.Lock()
		if !l.abandoned {
			l.lines -= bytes.Count(chunk, []byte{'\n'})
			l.bytes -= len(chunk)
		}
		l.mu.Unlock()
		b = b[n:]
	}
	return true
}

// writeChunk writes p, retrying what is left of it after an error (with a
// growing pause) until it is all written: a line the log took is the
// record of a decision that went ahead. While it fails, Audit refuses under
// ErrorDeny. It returns false if Close gave up first.
func (l *Log) writeChunk(p []byte) bool {
	wait := l.retryMin
	for {
		select {
		case <-l.stop:
			return false
		default:
		}
		n, err := l.w.Write(p)
		n = max(0, min(n, len(p)))
		p = p[n:]
		if err == nil && len(p) > 0 {
			err = io.ErrShortWrite
		}
		if err == nil {
			if l.failed.Load() != nil {
				l.failed.Store(nil)
			}
			return true
		}
		e := fmt.Errorf("decisionlog: writing %s: %w", l.name, err)
		l.failed.Store(&e)
		l.report(e)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.stop:
			t.Stop()
			return false
		}
		wait = min(2*wait, l.retryMax)
	}
}

// rotationGap is the least time in which the writer may write a whole
// file's worth (Config.MaxSizeMB) of lines. lumberjack names a rotated file
// after the time of rotation to the millisecond, and a second rotation in
// the same millisecond renames the new file onto the backup just made,
// losing it. A queued burst is written at memory speed, so a small
// MaxSizeMB could rotate twice in a millisecond; pacing the writer to one
// file per rotationGap (500 MB/s for 1 MB files, far above what requests
// produce) keeps two rotations, between which nearly a whole file is
// written, apart.
const rotationGap = 2 * time.Millisecond

// pace waits, when the output rotates, until writing n more bytes keeps
// the writer at or under one file per rotationGap. It returns false if
// Close gave up first.
func (l *Log) pace(n int) bool {
	if l.rotateBytes <= 0 {
		return true
	}
	now := time.Now()
	if wait := l.paceNext.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.stop:
			t.Stop()
			return false
		}
		now = l.paceNext
	}
	if l.paceNext.Before(now) {
		l.paceNext = now
	}
	l.paceNext = l.paceNext.Add(time.Duration(int64(rotationGap) * int64(n) / l.rotateBytes))
	return true
}
