package consul

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/internal/drain"
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
	// UpstreamSocket, if set, is the unix socket on which a local agent
	// serves its HTTP API (Consul's addresses.http = "unix://..."):
	// requests are sent there, still addressed to Upstream, which must
	// then be http. A unix socket spares both sides the loopback TCP
	// stack, the largest part of the hop's system time.
	UpstreamSocket string
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
	// RequestTimeout bounds a request to the agent that is not a blocking
	// query (default DefaultRequestTimeout; see boundedTransport).
	RequestTimeout time.Duration
	// MaxValueBytes bounds a KV value (default 512 KiB, Consul's default
	// kv_max_value_size); larger bodies are refused before forwarding.
	MaxValueBytes int64
	// Guarded are the addresses no health check may reach unless an
	// intention names them: the stores' and the gateway's own listeners
	// (the agent's own ports are read from it as well).
	Guarded []Guarded
	// Throttle, when set, is charged for every request the front refuses;
	// a caller who owes it is not served (its body not even read) until it
	// has paid (throttle.Debts).
	Throttle Throttle
	Logger   *slog.Logger
}

// Throttle makes callers pay for refusals: Charge records one, Wait
// returns once the caller owes nothing.
type Throttle interface {
	Charge(id gate.Identity, size int)
	Wait(ctx context.Context, id gate.Identity) error
}

// Server is the Consul front.
type Server struct {
	gate *gate.Gate
	auth Authenticator
	opts Options
	log  *slog.Logger
	// agent is the transport to the agent (forward.go sends through it).
	agent http.RoundTripper
	// token is the X-Consul-Token value of Options.Token, shared by every
	// forwarded request (its capacity is its length).
	token []string
	// client makes the gateway's own calls (session owner records).
	client *http.Client
	mux    *http.ServeMux
	// guard classifies health-check targets.
	guard *guard
	// drain ends blocking queries' waits when the gateway stops (drain.go).
	drain drain.Signal
}

// New returns the Consul front.
func New(g *gate.Gate, auth Authenticator, opts Options) (*Server, error) {
	if opts.Upstream == nil || (opts.Upstream.Scheme != "http" && opts.Upstream.Scheme != "https") {
		return nil, errors.New("consul: upstream must be an http:// or https:// URL")
	}
	if !g.Reserved(reservedOpPrefix) {
		// The front keeps its session owner records there: a gate that
		// lets callers reach them lets them take any session over.
		return nil, errors.New("consul: the gate must reserve " + string(reservedOpPrefix) + " (gate.WithReserved)")
	}
	if opts.UpstreamSocket != "" && opts.Upstream.Scheme != "http" {
		return nil, errors.New("consul: an upstream socket carries plain HTTP: the upstream must be an http:// URL")
	}
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = 512 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{gate: g, auth: auth, opts: opts, log: opts.Logger,
		guard: newGuard(context.Background(), append([]Guarded{{Addr: HostPort(opts.Upstream), What: guardConsul}}, opts.Guarded...))}
	s.agent = s.newUpstream()
	s.token = []string{opts.Token}
	s.client = &http.Client{Transport: s.agent, Timeout: 30 * time.Second}
	s.mux = http.NewServeMux()
	for _, rt := range routes {
		s.mux.Handle(rt.pattern, s.handle(rt))
	}
	// Everything else: refused, never forwarded.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.identify(w, r)
		if !ok {
			return
		}
		s.billed(id, w, r, func(w http.ResponseWriter, r *http.Request) {
			deny(w, fmt.Sprintf("%s %s is not a route storegate forwards", r.Method, r.URL.Path))
		})
	})
	return s, nil
}

// HostPort is u's host:port, the scheme's port when the URL names none.
func HostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// Handler serves the front.
func (s *Server) Handler() http.Handler { return s.mux }

// request is one decoded request on its way through the front: the HTTP
// request, and the gate.Request its route fills and handle drives.
type request struct {
	r     *http.Request
	query url.Values
	route string // the route as the gate sees it, e.g. "GET /v1/kv/"
	dc    string // ?dc: every op's datacenter unless it names its own
	req   *gate.Request

	// narrow is the filter of a route that Narrows its op: it runs on the
	// answer when the gate filtered the request.
	narrow responseHook
	// The hooks that run on the upstream's answer, in this order: respond
	// (the plugins' response chain, so that filtering judges keys as the
	// caller knows them), filter (narrow, when the gate filtered), recheck
	// (a blocking query judged again), after (e.g. to record a new
	// session's owner).
	respond, filter, recheck, after responseHook

	// asked is a KV route's op as the caller sent it, when plugins answer it.
	asked *gate.Op
	// tx is a transaction's KV ops as plugins see them (plugins only).
	tx *txnPlugins
	// rollup is the separator of a filtered ?keys listing the gateway rolls
	// up itself (kv.go, unroll).
	rollup string
	// block is a filtered blocking query's state (blocking.go).
	block *blocking
	// judged: the body was read and judged (readBody); only then is one
	// forwarded.
	judged bool
	// session is the session an after hook records or forgets.
	session string
	// body is the canonical body decodeCanonical forwards.
	body []byte
	// err is a plugin's rewrite the front could not write back (write-backs
	// run inside Transform and cannot fail it).
	err error
}

// responseHook works on the upstream's answer to q.
type responseHook func(s *Server, q *request, resp *http.Response) error

// ask adds an op the caller asked for and returns its index.
func (q *request) ask(op gate.Op) int {
	q.fill(&op)
	return q.req.Ask(op)
}

// askUnseen adds an op the caller named by an ID the front resolved (see
// gate.Request.AskUnseen): a denial says nothing of what the ID names.
func (q *request) askUnseen(op gate.Op) int {
	q.fill(&op)
	return q.req.AskUnseen(op)
}

// derive adds an op the front derived from the request, for policy only.
func (q *request) derive(op gate.Op) {
	q.fill(&op)
	q.req.Derive(op)
}

func (q *request) fill(op *gate.Op) {
	op.Protocol = gate.ProtocolConsul
	op.Method = q.route
	if op.Datacenter == "" {
		op.Datacenter = q.dc
	}
}

// carry lets plugins rewrite asked op i, the op of request message msg; wb
// writes the rewritten op back into the request. Without plugins nothing is
// recorded or allocated.
func (s *Server) carry(q *request, i int, msg any, wb func(q *request, op *gate.Op) error) {
	if !s.gate.Plugins() {
		return
	}
	q.req.Carry(i, msg, func(op *gate.Op) {
		if err := wb(q, op); err != nil && q.err == nil {
			q.err = err
		}
	})
}

// route is one entry of the route table: a ServeMux pattern and the
// decoder that fills the request's gate.Request.
type route struct {
	pattern string
	name    string // the route as the gate sees it, e.g. "GET /v1/kv/"
	decode  func(s *Server, q *request) error
}

// handle is the whole request path: authenticate, decode into a
// gate.Request, authorize, transform, forward, then narrow and answer what
// comes back. Every refusal becomes a Consul answer in one place, fail.
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
		s.billed(id, w, r, func(w http.ResponseWriter, r *http.Request) { s.serve(rt, id, w, r) })
	})
}

// billed runs serve for caller id once it owes the Throttle nothing, and
// charges it for the request when the answer refuses it.
func (s *Server) billed(id gate.Identity, w http.ResponseWriter, r *http.Request, serve func(http.ResponseWriter, *http.Request)) {
	t := s.opts.Throttle
	if t == nil {
		serve(w, r)
		return
	}
	if err := t.Wait(r.Context(), id); err != nil {
		return // the caller went away while it owed
	}
	body := &countingBody{ReadCloser: r.Body}
	r.Body = body
	rec := &statusRecorder{ResponseWriter: w}
	serve(rec, r)
	switch rec.status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusMethodNotAllowed,
		http.StatusRequestEntityTooLarge, http.StatusTooManyRequests, http.StatusRequestURITooLong:
		t.Charge(id, len(r.URL.RawPath)+len(r.URL.Path)+len(r.URL.RawQuery)+int(body.n))
	}
}

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// statusRecorder keeps the status of the answer written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes of
// blocking queries, deadlines).
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes on (the reverse proxy flushes streamed answers).
func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// serve is the route's request path for the authenticated caller id.
func (s *Server) serve(rt route, id gate.Identity, w http.ResponseWriter, r *http.Request) {
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		// A pair Go cannot read (a bad escape, a ';') is one Consul drops:
		// the gateway refuses the request rather than judge a different
		// one from the one forwarded.
		http.Error(w, "storegate: malformed query: "+err.Error(), http.StatusBadRequest)
		return
	}
	q := &request{r: r, query: query, route: rt.name}
	if err := rejectRepeated(q.query); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q.dc = q.query.Get("dc")
	q.req = s.gate.Begin(id)
	if err := rt.decode(s, q); err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	if err := q.req.Authorize(ctx); err != nil {
		s.fail(w, err)
		return
	}
	if q.req.Filtered() {
		if q.narrow == nil {
			// The gate filters only what the route said it can narrow.
			deny(w, partlyReadable)
			return
		}
		q.filter = q.narrow
		unroll(q)
	}
	if err := q.req.Transform(ctx); err != nil {
		s.fail(w, err)
		return
	}
	if q.err != nil {
		s.fail(w, q.err)
		return
	}
	if q.tx != nil {
		if err := q.tx.finish(q); err != nil {
			s.fail(w, err)
			return
		}
	}
	if r.Method == http.MethodGet && has(q, "index") {
		q.recheck = recheckHook
	}
	if q.filter != nil {
		if err := s.startBlocking(q); err != nil {
			s.fail(w, err)
			return
		}
	}
	s.forward(w, q)
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

// fail answers a request the front refused, in Consul's terms: the one
// place a boundary error becomes an answer. A *gate.Error tells the caller
// its Reason only, never its Detail (which may name what the caller cannot
// see); the front's own protocol errors (httpError) keep Consul's status and
// words; anything else is a request the front could not read.
func (s *Server) fail(w http.ResponseWriter, err error) {
	if ge := gate.AsError(err); ge != nil {
		reason := ge.Reason
		if reason == "" {
			reason = "request denied"
		}
		switch ge.Kind {
		case gate.KindInvalid:
			http.Error(w, reason, http.StatusBadRequest)
		case gate.KindUnavailable:
			s.log.Warn("consul upstream error", "reason", reason, "err", ge.Err)
			http.Error(w, "storegate: "+reason, http.StatusBadGateway)
		case gate.KindDenied, gate.KindUnauthenticated, gate.KindUnimplemented:
			deny(w, consulReason(reason))
		default:
			deny(w, "request denied") // a kind unknown here fails closed
		}
		return
	}
	var he httpError
	if errors.As(err, &he) {
		http.Error(w, he.msg, he.code)
		return
	}
	http.Error(w, err.Error(), http.StatusBadRequest)
}

// partlyReadable is the denial of a read the route cannot narrow, as the
// front has always said it.
const partlyReadable = "only part of the range is readable"

// The gate's words that Consul callers read otherwise: Consul keys have no
// leading slash, and a read the route cannot narrow is partlyReadable.
var (
	gateReserved   = "keys under " + strconv.Quote("/"+ReservedPrefix) + " are reserved for storegate"
	consulReserved = "keys under " + ReservedPrefix + " are reserved for storegate"
)

const gatePartly = "only part of the range is allowed"

// consulReason is a gate reason in Consul's spelling.
func consulReason(reason string) string {
	switch reason {
	case gateReserved:
		return consulReserved
	case gatePartly:
		return partlyReadable
	}
	return reason
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

// httpError is a request the front refuses with Consul's own status and
// words (a missing key name, a body over Consul's limit...).
type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

// derivedReason is all the gate tells a caller when an op derived from its
// request (a session's owner, the service an ID names) is denied.
const derivedReason = "the request touches what the caller may not use"

// derivedDenial denies op, an op the front derived, as the gate denies
// one: the caller is told nothing of what op names; detail is logged.
func (s *Server) derivedDenial(q *request, op *gate.Op, detail string) error {
	s.log.Info("deny", "caller", q.req.Caller().String(), "method", op.Method,
		"resource", op.Resource.String(), "action", op.Action.String(), "derived", true, "reason", detail)
	return &gate.Error{Kind: gate.KindDenied, Reason: derivedReason, Detail: detail, Op: op}
}

// unavailable is a look-up of the front's own in the agent that failed.
func unavailable(what string, err error) error {
	return &gate.Error{Kind: gate.KindUnavailable, Reason: what, Err: err}
}

// refused is a plugin's rewrite the front will not write back.
func refused(reason string) error {
	return &gate.Error{Kind: gate.KindDenied, Reason: reason}
}

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

// newUpstream is the transport to the agent; blocking queries may last as
// long as Consul holds them.
func (s *Server) newUpstream() http.RoundTripper {
	up := s.opts.Upstream
	var rt http.RoundTripper
	switch {
	case s.opts.UpstreamSocket != "":
		rt = newAgentTransport("unix", s.opts.UpstreamSocket)
	case up.Scheme == "http":
		// A local agent over loopback: the gateway's own HTTP/1.1 client
		// (agentconn.go), without http.Transport's goroutine hand-offs.
		rt = newAgentTransport("tcp", HostPort(up))
	default:
		rt = &http.Transport{
			Proxy:               nil,
			TLSClientConfig:     s.opts.UpstreamTLS,
			MaxIdleConnsPerHost: agentMaxIdle,
			IdleConnTimeout:     agentIdleTimeout,
			// Blocking queries last up to ~10m40s: no response header timeout.
			ResponseHeaderTimeout: 0,
			ForceAttemptHTTP2:     true,
		}
	}
	if s.opts.WrapTransport != nil {
		rt = s.opts.WrapTransport(rt)
	}
	return drainTransport{next: bounded(rt, s.opts.RequestTimeout), s: s}
}

// hasCallerToken reports whether a request carries an ACL token in any of
// the places Consul reads one.
func hasCallerToken(r *http.Request) bool {
	if r.Header.Get("X-Consul-Token") != "" {
		return true
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return true
	}
	return r.URL.RawQuery != "" && r.URL.Query().Get("token") != ""
}

// onResponse runs q's response hooks on the upstream's answer: plugins
// first (so that filtering judges keys as the caller knows them), then the
// filter, then after.
func (q *request) onResponse(s *Server, resp *http.Response) error {
	for _, h := range [...]responseHook{q.respond, q.filter, q.recheck, q.after} {
		if h != nil {
			if err := h(s, q, resp); err != nil {
				return err
			}
		}
	}
	return nil
}

// recheckHook is the recheck of a blocking query: its answer may come
// minutes after the request was allowed, and the policy may have changed
// since. The request is judged again under the policy now in force: a denial
// denies the answer, and a read that became partly readable is narrowed.
func recheckHook(s *Server, q *request, resp *http.Response) error {
	was := q.req.Filtered()
	if err := q.req.Recheck(resp.Request.Context()); err != nil {
		resp.Body.Close()
		return err
	}
	if !q.req.Filtered() || was {
		return nil
	}
	if q.narrow == nil {
		resp.Body.Close()
		return &gate.Error{Kind: gate.KindDenied, Reason: partlyReadable}
	}
	return q.narrow(s, q, resp)
}
