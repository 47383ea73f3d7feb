package consul

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
)

// Authenticator turns a verified TLS connection into the caller's identity.
type Authenticator interface {
	Identify(state *tls.ConnectionState) (gate.Identity, error)
}

// Options configure the front.
type Options struct {
	// Upstream is the Consul agent's HTTP address, e.g. http://127.0.0.1:8500.
	Upstream *url.URL
	// UpstreamTLS is used when Upstream is https.
	UpstreamTLS *tls.Config
	// Token is the gateway's own ACL token, sent with every forwarded
	// request (empty: the agent's default token).
	Token string
	// ForwardCallerTokens passes a caller's own token on instead of
	// stripping it; the gateway's token is then sent only for callers
	// without one. Policy still judges every request first.
	ForwardCallerTokens bool
	// WrapTransport, if not nil, wraps the transport to the agent (for
	// client spans, trace propagation and upstream metrics).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// MaxValueBytes bounds a KV value (default 512 KiB, Consul's default
	// kv_max_value_size); larger bodies are refused before forwarding.
	MaxValueBytes int64
	Logger        *slog.Logger
}

// Server is the Consul front.
type Server struct {
	gate  *gate.Gate
	auth  Authenticator
	opts  Options
	log   *slog.Logger
	proxy *httputil.ReverseProxy
	// client makes the gateway's own calls (session owner records).
	client *http.Client
	mux    *http.ServeMux
}

// New returns the Consul front.
func New(g *gate.Gate, auth Authenticator, opts Options) (*Server, error) {
	if opts.Upstream == nil || (opts.Upstream.Scheme != "http" && opts.Upstream.Scheme != "https") {
		return nil, errors.New("consul: upstream must be an http:// or https:// URL")
	}
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = 512 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{gate: g, auth: auth, opts: opts, log: opts.Logger}
	s.proxy = s.newProxy()
	s.client = &http.Client{Transport: s.proxy.Transport, Timeout: 30 * time.Second}
	s.mux = http.NewServeMux()
	for _, rt := range routes {
		s.mux.Handle(rt.pattern, s.handle(rt))
	}
	// Everything else: refused, never forwarded.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.identify(w, r); !ok {
			return
		}
		deny(w, fmt.Sprintf("%s %s is not a route storegate forwards", r.Method, r.URL.Path))
	})
	return s, nil
}

// Handler serves the front.
func (s *Server) Handler() http.Handler { return s.mux }

// request is one decoded request on its way through the front.
type request struct {
	r      *http.Request
	query  url.Values
	caller gate.Identity
	ops    []gate.Op
	// filter, when set, narrows the upstream's response to what the caller
	// may read (Filter effect on a multi-key read).
	filter func(*http.Response) error
	// after, when set, runs on the upstream's response (e.g. to record a
	// new session's owner).
	after func(*http.Response) error
	// rewrites are the ops plugins may change; respond, when set, runs the
	// response chain over the answer (before filter).
	rewrites []rewrite
	respond  func(*http.Response) error
	// afterPlugins run once the request chain has run over every op.
	afterPlugins []func(s *Server, q *request) error
	// body is the canonical body decodeCanonical forwards.
	body []byte
}

// route is one entry of the route table: a ServeMux pattern and the
// decoder that turns a matching request into ops.
type route struct {
	pattern string
	name    string // the route as the gate sees it, e.g. "GET /v1/kv/"
	decode  func(s *Server, q *request) error
}

func (s *Server) handle(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
			span.SetName(rt.name)
			span.SetAttributes(attribute.String("http.route", rt.pattern[strings.IndexByte(rt.pattern, ' ')+1:]))
		}
		id, ok := s.identify(w, r)
		if !ok {
			return
		}
		q := &request{r: r, query: r.URL.Query(), caller: id}
		if err := rejectRepeated(q.query); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := rt.decode(s, q); err != nil {
			var dn denialError
			if errors.As(err, &dn) {
				deny(w, string(dn))
				return
			}
			var he httpError
			if errors.As(err, &he) {
				http.Error(w, he.msg, he.code)
				return
			}
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for i := range q.ops {
			q.ops[i].Protocol = gate.ProtocolConsul
			q.ops[i].Method = rt.name
			if q.ops[i].Datacenter == "" {
				q.ops[i].Datacenter = q.query.Get("dc")
			}
		}
		forceFilter := false
		for i := range q.ops {
			op := &q.ops[i]
			if op.Keys.Key == nil || !op.Keys.Overlaps(reservedOpPrefix) {
				continue
			}
			// The gateway's own records: no caller reaches them. A read
			// of a wider range is narrowed; anything else is refused.
			if op.Keys.Single() || op.Action != gate.ActionRead || q.filter == nil {
				deny(w, "keys under "+ReservedPrefix+" are reserved for storegate")
				return
			}
			forceFilter = true
		}
		effects := make([]gate.Effect, len(q.ops))
		if err := s.gate.Check(r.Context(), id, q.ops, effects); err != nil {
			reason := "request denied"
			if ge := gate.AsError(err); ge != nil && ge.Reason != "" {
				reason = ge.Reason
			}
			deny(w, reason)
			return
		}
		if q.filter == nil {
			for _, e := range effects {
				if e == gate.Filter {
					// A route that cannot narrow its answer must not see a
					// partly readable range.
					deny(w, "only part of the range is readable")
					return
				}
			}
		} else if !anyFilter(effects) && !forceFilter {
			q.filter = nil
		}
		if err := s.runPlugins(q); err != nil {
			s.refuse(w, err)
			return
		}
		s.forward(w, q)
	})
}

func anyFilter(eff []gate.Effect) bool {
	for _, e := range eff {
		if e == gate.Filter {
			return true
		}
	}
	return false
}

func (s *Server) identify(w http.ResponseWriter, r *http.Request) (gate.Identity, bool) {
	if r.TLS == nil {
		deny(w, "an X.509-SVID over TLS is required")
		return gate.Identity{}, false
	}
	id, err := s.gate.Authenticate(r.Context(), gate.ProtocolConsul, func() (gate.Identity, error) { return s.auth.Identify(r.TLS) })
	if err != nil {
		deny(w, err.Error())
		return gate.Identity{}, false
	}
	return id, true
}

// deny answers as Consul does when ACLs refuse: 403 and a plain body that
// starts with "Permission denied", which the CLI prints as
// "Unexpected response code: 403 (Permission denied: ...)".
func deny(w http.ResponseWriter, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintf(w, "Permission denied: %s", reason)
}

type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

// denialError is a refusal a decoder decided (e.g. another identity's
// session), answered as a policy denial is.
type denialError string

func (e denialError) Error() string { return string(e) }

func denial(reason string) error { return denialError(reason) }

// singleValued are the query parameters whose repetition the gateway and
// Consul could read differently (Consul takes the first value, or only asks
// whether the parameter is present): a repeated one is refused.
var singleValued = []string{"recurse", "keys", "separator", "seperator", "raw", "cas", "flags",
	"acquire", "release", "dc", "index", "wait", "token", "ns", "partition", "peer", "filter"}

func rejectRepeated(q url.Values) error {
	for _, k := range singleValued {
		if len(q[k]) > 1 {
			return fmt.Errorf("storegate: query parameter %q is repeated", k)
		}
	}
	return nil
}

// newProxy forwards to the agent: the caller's token never goes along, the
// gateway's does; blocking queries may last as long as Consul holds them.
func (s *Server) newProxy() *httputil.ReverseProxy {
	up := s.opts.Upstream
	tr := &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     s.opts.UpstreamTLS,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		// Blocking queries last up to ~10m40s: no response header timeout.
		ResponseHeaderTimeout: 0,
		ForceAttemptHTTP2:     up.Scheme == "https",
	}
	var rt http.RoundTripper = tr
	if s.opts.WrapTransport != nil {
		rt = s.opts.WrapTransport(tr)
	}
	return &httputil.ReverseProxy{
		Transport:  rt,
		BufferPool: copyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Host = up.Host
			if !s.opts.ForwardCallerTokens {
				pr.Out.Header.Del("X-Consul-Token")
				pr.Out.Header.Del("Authorization")
				if strings.Contains(pr.Out.URL.RawQuery, "token") {
					if q := pr.Out.URL.Query(); q.Has("token") {
						q.Del("token")
						pr.Out.URL.RawQuery = q.Encode()
					}
				}
			}
			if s.opts.Token != "" && !hasCallerToken(pr.Out) {
				pr.Out.Header.Set("X-Consul-Token", s.opts.Token)
			}
			if pr.In.Context().Value(filterKey{}) != nil {
				// The answer is decoded here: ask for it uncompressed.
				pr.Out.Header.Del("Accept-Encoding")
			}
		},
		// A route that narrows its answer (a filtered recurse or keys
		// listing) hands its filter down in the request's context.
		ModifyResponse: func(resp *http.Response) error {
			if f, ok := resp.Request.Context().Value(filterKey{}).(func(*http.Response) error); ok {
				return f(resp)
			}
			return nil
		},
		// Answers are copied whole (blocking queries too: Consul sends each
		// answer at once), so no per-write flushing.
		FlushInterval: 0,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if ge := gate.AsError(err); ge != nil {
				// A response plugin refused the answer: nothing of it is sent.
				s.refuse(w, err)
				return
			}
			s.log.Warn("consul upstream error", "path", r.URL.Path, "err", err)
			http.Error(w, "storegate: Consul agent unreachable: "+err.Error(), http.StatusBadGateway)
		},
	}
}

type filterKey struct{}

// hasCallerToken reports whether a request carries an ACL token in any of
// the places Consul reads one.
func hasCallerToken(r *http.Request) bool {
	if r.Header.Get("X-Consul-Token") != "" {
		return true
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return true
	}
	return strings.Contains(r.URL.RawQuery, "token") && r.URL.Query().Get("token") != ""
}

// copyBuffers recycles the buffers answers are copied through: without it
// the reverse proxy allocates 32 KiB per request, three quarters of all the
// front's allocation (and most of its GC) in a KV GET benchmark.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

func (s *Server) forward(w http.ResponseWriter, q *request) {
	r := q.r
	if hook := q.responseHook(); hook != nil {
		r = r.WithContext(context.WithValue(r.Context(), filterKey{}, hook))
	}
	s.proxy.ServeHTTP(w, r)
}

// responseHook chains the request's response hooks — plugins (so that
// filtering judges keys as the caller knows them), filter, after — or nil.
func (q *request) responseHook() func(*http.Response) error {
	var hooks []func(*http.Response) error
	for _, h := range []func(*http.Response) error{q.respond, q.filter, q.after} {
		if h != nil {
			hooks = append(hooks, h)
		}
	}
	switch len(hooks) {
	case 0:
		return nil
	case 1:
		return hooks[0]
	}
	return func(resp *http.Response) error {
		for _, h := range hooks {
			if err := h(resp); err != nil {
				return err
			}
		}
		return nil
	}
}

// refuse answers a request the gate refused after policy (a plugin's
// denial or failure): 403 as a policy denial, other errors as 500.
func (s *Server) refuse(w http.ResponseWriter, err error) {
	var dn denialError
	if errors.As(err, &dn) {
		deny(w, string(dn))
		return
	}
	if ge := gate.AsError(err); ge != nil {
		reason := ge.Reason
		if ge.Err != nil {
			reason += ": " + ge.Err.Error()
		}
		deny(w, reason)
		return
	}
	http.Error(w, "storegate: "+err.Error(), http.StatusInternalServerError)
}
