package consul

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync"

	"github.com/storegate/storegate/gate"
)

// forward sends q's request to the agent and answers the caller with what
// comes back, through q's response hooks. It is httputil.ReverseProxy cut to
// what the front needs: the request is built once (no clone and then
// clean-up), the answer's headers are handed over without copying their
// values, hooks are called directly instead of through the request's
// context, and the body is copied without flushes (Consul sends every
// answer, a blocking query's too, at once; none of the routes streams). Not
// carried over, since the agent uses none of them: 1xx answers passed on to
// the caller, protocol upgrades, trailers.
func (s *Server) forward(w http.ResponseWriter, q *request) {
	out := s.outgoing(q)
	if out.Body != nil {
		defer out.Body.Close()
	}
	resp, err := s.agent.RoundTrip(out)
	if err != nil {
		s.upstreamError(w, q.r, err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		s.upstreamError(w, q.r, errors.New("the agent switched protocols"))
		return
	}
	removeHopByHop(resp.Header)
	if q.hooked() {
		if err := q.onResponse(s, resp); err != nil {
			resp.Body.Close()
			s.upstreamError(w, q.r, err)
			return
		}
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, vv := range resp.Header {
		if old, ok := h[k]; ok {
			h[k] = append(old, vv...)
		} else {
			h[k] = vv
		}
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyBody(w, resp.Body); err != nil {
		// The status is out: cut the answer (the caller sees a reset
		// stream or connection) rather than end it as if it were whole.
		s.log.Debug("consul answer cut", "path", q.r.URL.Path, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// hooked reports whether q's answer is worked on before it is sent.
func (q *request) hooked() bool {
	return q.respond != nil || q.filter != nil || q.recheck != nil || q.after != nil
}

// outgoing is q's request as it goes to the agent: the agent's URL and Host,
// no hop-by-hop or forwarding headers (as httputil.ReverseProxy's Rewrite
// mode), the caller's token never (unless ForwardCallerTokens), the
// gateway's when it has one. The query needs no clean-up of ';' pairs: serve
// refused any it could not parse.
func (s *Server) outgoing(q *request) *http.Request {
	in, up := q.r, s.opts.Upstream
	out := new(http.Request)
	*out = *in // the request's context too
	u := *in.URL
	out.URL = &u
	(&httputil.ProxyRequest{Out: out}).SetURL(up)
	out.Host = up.Host
	out.RequestURI, out.Close, out.TLS, out.Trailer = "", false, nil, nil
	if !q.judged || in.ContentLength == 0 {
		// A body the route did not read was never judged: the agent gets
		// none (its handlers for such routes read none either).
		out.Body, out.GetBody, out.ContentLength = nil, nil, 0
	}
	out.Header = make(http.Header, len(in.Header)+2)
	for k, vv := range in.Header {
		if !hopByHop(k) {
			out.Header[k] = vv[:len(vv):len(vv)] // an append must not write into in's values
		}
	}
	for _, c := range in.Header["Connection"] {
		for _, name := range strings.Split(c, ",") {
			delete(out.Header, textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name)))
		}
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = noUserAgent // not Go's own
	}
	// The front read what it judged; the agent need not ask for the body.
	delete(out.Header, "Expect")
	if !s.opts.ForwardCallerTokens {
		// Every place Consul reads a token (agent/http.go,
		// parseTokenInternal): the token parameter as Consul decodes its
		// name (%74oken is token too), X-Consul-Token and Authorization:
		// Bearer in any case of name or scheme.
		delete(out.Header, "X-Consul-Token")
		delete(out.Header, "Authorization")
		if out.URL.RawQuery != "" {
			if v := out.URL.Query(); v.Has("token") {
				v.Del("token")
				out.URL.RawQuery = v.Encode()
			}
		}
	}
	if s.opts.Token != "" && !hasCallerToken(out) {
		out.Header["X-Consul-Token"] = s.token
	}
	if q.hooked() {
		// The answer is decoded here: ask for it uncompressed.
		delete(out.Header, "Accept-Encoding")
	}
	return out
}

// noUserAgent is an empty User-Agent, which keeps Go's client from adding
// its own. Shared by every request: its capacity is its length, so an
// append makes a new slice.
var noUserAgent = []string{""}

// hopByHop reports whether header k (canonical) belongs to one hop only, or
// is a forwarding header a caller could forge (httputil.ReverseProxy's
// Rewrite mode drops the same).
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

// removeHopByHop drops an answer's hop-by-hop headers, those its Connection
// header names included.
func removeHopByHop(h http.Header) {
	for _, c := range h["Connection"] {
		for _, name := range strings.Split(c, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, k := range [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		delete(h, k)
	}
}

// upstreamError answers a request whose forwarding failed.
func (s *Server) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if ge := gate.AsError(err); ge != nil {
		// A response hook refused the answer: nothing of it is sent.
		s.fail(w, err)
		return
	}
	s.log.Warn("consul upstream error", "path", r.URL.Path, "err", err)
	http.Error(w, unreachable(err), http.StatusBadGateway)
}

// unreachable is what a caller is told of a failed forward: whether the
// request reached the agent (a caller may resend one that never did), and
// nothing of the agent's address or the gateway's network, which the log
// has.
func unreachable(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return "storegate: Consul agent unreachable: could not connect, the request was not sent"
	}
	return "storegate: Consul agent unreachable: the connection failed during the request"
}

// copyBuffers recycles the buffers answers are copied through: a 32 KiB
// buffer per request was three quarters of the front's allocation (and most
// of its GC) in a KV GET benchmark.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies an answer's body to the caller, with no flushes: the
// server sends what is buffered when the handler returns.
func copyBody(w io.Writer, body io.Reader) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
