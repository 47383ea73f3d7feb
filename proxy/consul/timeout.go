package consul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultRequestTimeout bounds a request to the agent that is not a
// blocking query when Options.RequestTimeout is zero.
const DefaultRequestTimeout = 30 * time.Second

// Consul's blocking-query bounds (agent/http.go, parseWait): the default
// and the longest wait, and the jitter of up to wait/16 it adds on top.
const (
	consulDefaultWait = 5 * time.Minute
	consulMaxWait     = 10 * time.Minute
)

// boundedTransport ends every request to the agent that takes longer than
// it may: a plain request after d, a blocking query (?index=) after its
// wait (Consul's default 5m, at most 10m) plus Consul's jitter plus d. An
// agent that hangs (SIGSTOP: its sockets stay open, nothing answers) would
// otherwise hold the caller, and the goroutines serving it, for good: the
// transport has no response header timeout, since blocking queries are
// answered late by design. The deadline covers the body too: it is
// released when the body is closed.
type boundedTransport struct {
	next http.RoundTripper
	d    time.Duration
}

// bounded wraps next (d 0: DefaultRequestTimeout).
func bounded(next http.RoundTripper, d time.Duration) http.RoundTripper {
	if d <= 0 {
		d = DefaultRequestTimeout
	}
	return &boundedTransport{next: next, d: d}
}

// ErrAgentTimeout is what a request the agent did not answer in time fails
// with (wrapped; the front answers 502 with its text).
var ErrAgentTimeout = errors.New("no answer from the Consul agent in time")

// RoundTrip forwards r under its bound.
func (b *boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	limit := b.limit(r)
	ctx, cancel := context.WithTimeoutCause(r.Context(), limit, ErrAgentTimeout)
	resp, err := b.next.RoundTrip(r.WithContext(ctx))
	if err != nil {
		cause := context.Cause(ctx)
		cancel()
		if errors.Is(cause, ErrAgentTimeout) && r.Context().Err() == nil {
			return nil, fmt.Errorf("storegate: %w (%v): %v", ErrAgentTimeout, limit, err)
		}
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// limit is how long r may take.
func (b *boundedTransport) limit(r *http.Request) time.Duration {
	if r.URL.RawQuery == "" {
		return b.d // most requests: nothing to parse
	}
	q := r.URL.Query()
	if !q.Has("index") {
		return b.d
	}
	wait := consulDefaultWait
	if w, err := time.ParseDuration(q.Get("wait")); err == nil && w > 0 {
		wait = min(w, consulMaxWait)
	}
	return wait + wait/16 + b.d
}

// cancelBody releases a request's deadline when its answer is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

// Close closes the body and releases the deadline.
func (c *cancelBody) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
