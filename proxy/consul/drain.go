package consul

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
)

// Draining. A stopping gateway cannot wait out its blocking queries (Consul
// holds one up to ~10m40s), nor cut them with an error: the consul api
// client does not retry a failed read itself, `consul lock` gives up on a
// 503 (api.IsRetryableError retries only a transport error or a 500, and
// only while monitoring a held lock), and watch plans back off 5 s and
// more. So a blocking query in flight when draining begins is answered as
// Consul answers one whose wait ran out: with the current answer and its
// X-Consul-Index. Every client reads that as "nothing yet, ask again" (or,
// if the index moved, as the change it is) and re-issues the query at
// once; with keep-alives off on the draining server the answer closes the
// connection, so the query is re-issued through the balancer to another
// replica. Filtered queries (blocking.go) keep the answer in hand.

// Drain begins draining: every blocking query in flight is answered now,
// as if its wait had run out, and every one from now on is answered
// without blocking. Other requests are not touched (http.Server.Shutdown
// waits for them). Drain returns at once and may be called more than once.
func (s *Server) Drain() { s.drain.Begin() }

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.drain.Began() }

// drainTransport is the transport to the agent: a blocking query through
// it blocks only until draining begins.
type drainTransport struct {
	next http.RoundTripper
	s    *Server
}

// blockingQuery reports whether req asks the agent to block: a GET with a
// non-zero index (agent/http.go, parseWait: index 0 never blocks).
func blockingQuery(req *http.Request) bool {
	if req.Method != http.MethodGet || req.URL.RawQuery == "" {
		return false
	}
	n, err := strconv.ParseUint(req.URL.Query().Get("index"), 10, 64)
	return err == nil && n > 0
}

func (t drainTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !blockingQuery(req) {
		return t.next.RoundTrip(req)
	}
	if t.s.Draining() {
		return t.unblocked(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	stop := context.AfterFunc(t.s.drain.Done(), func() { cancel(errDrained) })
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if stop() {
		// The answer came before draining began: the body is read under
		// ctx, which its Close ends.
		if err != nil {
			cancel(nil)
			return nil, err
		}
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
		// The hooks (recheck, narrowing) read the request's context after
		// the body is closed: they get the caller's, not ctx.
		resp.Request = req
		return resp, nil
	}
	// Draining began while the query blocked (or just as its answer
	// came, which ctx's end may have cut): ask again without blocking.
	if err == nil {
		resp.Body.Close()
	}
	cancel(nil)
	if req.Context().Err() != nil {
		return nil, errors.Join(req.Context().Err(), err)
	}
	return t.unblocked(req)
}

// unblocked asks req again without blocking; the answer is req's.
func (t drainTransport) unblocked(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(unblocked(req))
	if err != nil {
		return nil, err
	}
	resp.Request = req
	return resp, nil
}

// errDrained is what ends a blocking query's wait upstream when draining
// begins.
var errDrained = errors.New("consul: the gateway is draining")

// unblocked is req without index and wait: the agent answers it at once,
// with the current answer and index.
func unblocked(req *http.Request) *http.Request {
	out := req.Clone(req.Context())
	q := out.URL.Query()
	q.Del("index")
	q.Del("wait")
	out.URL.RawQuery = q.Encode()
	return out
}

// cancelOnClose ends a response's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}
