package consul

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Filtered blocking queries. Consul wakes a blocking query (?index=N) on any
// write under what it reads; when the gateway narrows the answer, a write to
// a key the caller cannot read would wake it with an answer it has already
// seen — telling it, by the timing, that something it may not see changed.
// The gateway blocks again instead, while the visible answer is what it was
// when the query came in, until the caller's wait runs out.
//
// What the caller saw at index N is known only when nothing changed since
// N: the gateway reads the current answer first (without blocking), and if
// Consul's index is still N that answer is the caller's. If the index moved
// on already, Consul answers at once, and so does the gateway (the caller
// then blocks on the new index).

// Consul's blocking query defaults (agent/http.go, parseWait).
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

// blocking is the state of a filtered blocking query.
type blocking struct {
	index    uint64    // the index the caller blocks on
	deadline time.Time // when the caller's wait runs out
	seen     *answer   // the visible answer at index, nil when not known
}

// answer is a narrowed answer as the caller gets it.
type answer struct {
	status int
	body   []byte
}

// startBlocking, for a filtered query that blocks, reads the current answer
// without blocking and narrows it; the query is then re-blocked while the
// visible answer stays that one. It runs after the request is allowed.
func (s *Server) startBlocking(q *request) error {
	if !has(q, "index") {
		return nil
	}
	n, err := strconv.ParseUint(q.query.Get("index"), 10, 64)
	if err != nil || n == 0 {
		return nil // Consul does not block: nothing to hide
	}
	wait := defaultWait
	if has(q, "wait") {
		if d, err := time.ParseDuration(q.query.Get("wait")); err == nil && d > 0 {
			wait = d
		}
	}
	wait = min(wait, maxWait)
	b := &blocking{index: n, deadline: time.Now().Add(wait)}
	resp, err := s.refetch(q.r.Context(), q, 0, 0)
	if err != nil {
		return unavailable("reading the current answer", err)
	}
	idx, _ := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	if idx <= n {
		a, err := q.narrowed(s, resp)
		if err != nil {
			return err
		}
		b.seen = a
	} else {
		resp.Body.Close()
	}
	q.block = b
	q.filter = reblock
	return nil
}

// reblock is the filter of a filtered blocking query: it narrows the
// answer and, while the visible answer is what the caller saw and its wait
// has not run out, blocks again on the answer's index.
func reblock(s *Server, q *request, resp *http.Response) error {
	if err := q.narrow(s, q, resp); err != nil {
		return err
	}
	b := q.block
	if b.seen == nil {
		return nil
	}
	for {
		cur, err := bodyOf(resp)
		if err != nil {
			return err
		}
		if resp.StatusCode != b.seen.status || !bytes.Equal(cur, b.seen.body) {
			return nil // the caller can see the change
		}
		left := time.Until(b.deadline)
		idx, _ := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
		if left < time.Millisecond || idx == 0 || s.Draining() {
			// The wait ran out, or the gateway is draining (drain.go): the
			// answer as Consul gives it then.
			return nil
		}
		next, err := s.refetch(q.r.Context(), q, idx, left)
		if err != nil {
			return nil // keep the answer in hand
		}
		a, err := q.narrowed(s, next)
		if err != nil {
			return err
		}
		resp.StatusCode, resp.Status, resp.Header = next.StatusCode, next.Status, next.Header
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(a.body)), int64(len(a.body))
	}
}

// narrowed runs the response hooks that shape what the caller sees (the
// plugins' chain, then the narrowing) on resp and returns the result.
func (q *request) narrowed(s *Server, resp *http.Response) (*answer, error) {
	if q.respond != nil {
		if err := q.respond(s, q, resp); err != nil {
			return nil, err
		}
	}
	if err := q.narrow(s, q, resp); err != nil {
		return nil, err
	}
	b, err := bodyOf(resp)
	if err != nil {
		return nil, err
	}
	return &answer{status: resp.StatusCode, body: b}, nil
}

// bodyOf reads resp's body and puts the same bytes back.
func bodyOf(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// refetch asks the agent the caller's query again, as the gateway forwards
// it (the gateway's token, the caller's only when configured), blocking on
// index for up to wait (not blocking when index is 0). The answer comes back
// uncompressed, for narrowing.
func (s *Server) refetch(ctx context.Context, q *request, index uint64, wait time.Duration) (*http.Response, error) {
	vals := url.Values{}
	for k, v := range q.query {
		vals[k] = v
	}
	vals.Del("index")
	vals.Del("wait")
	if !s.opts.ForwardCallerTokens {
		vals.Del("token")
	}
	if index > 0 {
		vals.Set("index", strconv.FormatUint(index, 10))
		vals.Set("wait", strconv.FormatInt(wait.Milliseconds(), 10)+"ms")
	}
	u := *s.opts.Upstream
	u.Path, u.RawPath, u.RawQuery = q.r.URL.Path, q.r.URL.RawPath, vals.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if s.opts.ForwardCallerTokens {
		for _, h := range []string{"X-Consul-Token", "Authorization"} {
			if v := q.r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
	}
	if s.opts.Token != "" && !hasCallerToken(req) {
		req.Header.Set("X-Consul-Token", s.opts.Token)
	}
	// The client's own timeout is 30 s; a blocking read may last longer.
	c := &http.Client{Transport: s.agent}
	return c.Do(req)
}
