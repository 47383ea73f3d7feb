package consul

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// agentTransport is the transport to a local agent over plain HTTP: HTTP/1.1
// keep-alive connections, each request written and its answer read on the
// goroutine that sends it. http.Transport gives every connection a reader
// and a writer goroutine and hands each request and answer between them and
// the caller over channels; on a busy gateway those hand-offs (and their
// wake-ups) were most of the upstream hop's cost. A local agent needs none
// of what they buy (HTTP/2, proxies, TLS, transparent gzip).
//
// A connection goes back to the pool only once its answer was read to the
// end; a request whose context ends has its connection closed. An idle
// connection the agent closed is dropped when it is taken from the pool
// (unusable). A request on a reused connection that fails anyway is sent
// again on a new one when that is safe, as http.Transport does: when nothing
// of it was written, or when it can be replayed (a GET or HEAD) and no
// answer had begun.
type agentTransport struct {
	network, addr string // tcp host:port, or a unix socket's path
	dialer        net.Dialer

	mu   sync.Mutex
	idle []*agentConn // most recently used last
}

// Idle connection bounds, as the http.Transport before this one had them.
const (
	agentMaxIdle     = 256
	agentIdleTimeout = 90 * time.Second
)

func newAgentTransport(network, addr string) *agentTransport {
	return &agentTransport{network: network, addr: addr, dialer: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}}
}

// agentConn is one connection to the agent.
type agentConn struct {
	c       net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	written int64     // bytes the connection took for the request in progress
	since   time.Time // when it went idle
}

// Write counts what the connection takes (for the retry rule).
func (pc *agentConn) Write(p []byte) (int, error) {
	n, err := pc.c.Write(p)
	pc.written += int64(n)
	return n, err
}

// RoundTrip sends req to the agent and returns its answer.
func (t *agentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for {
		pc, reused, err := t.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, retry, err := t.send(ctx, pc, req, reused)
		if err == nil {
			return resp, nil
		}
		if !retry || ctx.Err() != nil {
			return nil, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			b, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(ctx)
			req.Body = b
		}
	}
}

// send writes req on pc and reads the answer's head. retry says that the
// request may be sent again on another connection.
func (t *agentTransport) send(ctx context.Context, pc *agentConn, req *http.Request, reused bool) (resp *http.Response, retry bool, err error) {
	// The request's context bounds the connection's use, the answer's body
	// included: its end makes every read and write on it fail at once.
	stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error, retry bool) (*http.Response, bool, error) {
		stop()
		pc.c.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, false, cerr
		}
		return nil, reused && retry, fmt.Errorf("consul agent %s: %w", t.addr, err)
	}
	pc.written = 0
	if err := req.Write(pc.bw); err != nil {
		return fail(err, pc.written == 0)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err, pc.written == 0)
	}
	// Nothing of an answer yet: a connection the agent closed while idle.
	if _, err := pc.br.Peek(1); err != nil {
		return fail(err, pc.written == 0 || replayable(req))
	}
	for {
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			return fail(err, false)
		}
		// 1xx answers (100 Continue) precede the real one; 101 is refused
		// below, since nothing the front forwards switches protocols.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("unexpected 101 Switching Protocols"), false)
	}
	b := &agentBody{body: resp.Body, t: t, pc: pc, stop: stop, keep: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		b.eof = true
	}
	resp.Body = b
	return resp, false, nil
}

// replayable reports whether req may be sent twice: a GET or HEAD whose body,
// if any, can be had again.
func replayable(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// get returns an idle connection (reused) or a new one.
func (t *agentTransport) get(ctx context.Context) (pc *agentConn, reused bool, err error) {
	now := time.Now()
	t.mu.Lock()
	for len(t.idle) > 0 {
		pc = t.idle[len(t.idle)-1]
		t.idle[len(t.idle)-1] = nil
		t.idle = t.idle[:len(t.idle)-1]
		if now.Sub(pc.since) < agentIdleTimeout && pc.br.Buffered() == 0 && !unusable(pc.c) {
			t.mu.Unlock()
			return pc, true, nil
		}
		pc.c.Close()
	}
	t.mu.Unlock()
	c, err := t.dialer.DialContext(ctx, t.network, t.addr)
	if err != nil {
		return nil, false, err
	}
	pc = &agentConn{c: c, br: bufio.NewReaderSize(c, 8<<10)}
	pc.bw = bufio.NewWriterSize(pc, 4<<10)
	return pc, false, nil
}

// put returns pc to the pool, dropping the longest idle when it is full.
func (t *agentTransport) put(pc *agentConn) {
	pc.since = time.Now()
	t.mu.Lock()
	if len(t.idle) >= agentMaxIdle {
		old := t.idle[0]
		copy(t.idle, t.idle[1:])
		t.idle[len(t.idle)-1] = pc
		t.mu.Unlock()
		old.c.Close()
		return
	}
	t.idle = append(t.idle, pc)
	t.mu.Unlock()
}

// CloseIdleConnections closes the pool's connections (http.Client calls it).
func (t *agentTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, pc := range idle {
		pc.c.Close()
	}
}

// agentBody is an answer's body; its Close gives the connection back when
// the answer was read to its end, and closes it otherwise.
type agentBody struct {
	body   io.ReadCloser
	t      *agentTransport
	pc     *agentConn
	stop   func() bool
	keep   bool // neither side asked to close the connection
	eof    bool
	closed atomic.Bool
}

var errBodyClosed = errors.New("consul: read on a closed answer body")

func (b *agentBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *agentBody) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	// stop reports false when the request's context ended: the connection
	// then carries a deadline in the past.
	if b.stop() && b.eof && b.keep {
		b.t.put(b.pc)
		return nil
	}
	return b.pc.c.Close()
}
