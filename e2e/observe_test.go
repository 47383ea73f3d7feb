package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/telemetry"
)

// observePolicy lets web do everything except write under /forbidden/ and
// read under /obs/hidden/ (so that a read of /obs/ is filtered).
const observePolicy = `intentions:
  - name: web-all
    source: "spiffe://example.org/web"
    resources: ["*"]
    actions: ["*"]
    effect: allow
  - name: no-forbidden-writes
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [write]
    keys: ["/forbidden/**"]
    effect: deny
  - name: no-hidden-reads
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [read]
    keys: ["/obs/hidden/**"]
    effect: deny
`

// forbiddenReason is the reason authz.rego gives for a write under /forbidden/.
const forbiddenReason = `deny intention "no-forbidden-writes" matches`

const webID = "spiffe://example.org/web"

// traceReceiver is a real OTLP/gRPC trace collector in the test process: it
// keeps every span it is sent, with its resource's service.name.
type traceReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr string

	mu    sync.Mutex
	spans []*span
}

// span is one received span and the service.name of the process that sent it.
type span struct {
	service string
	*tracepb.Span
}

func startReceiver(t *testing.T) *traceReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &traceReceiver{addr: lis.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(lis) }()
	// Registered before etcd and the gateway, so stopped after them: their
	// last spans, flushed on shutdown, still have somewhere to go.
	t.Cleanup(srv.Stop)
	return r
}

// Export implements collectortrace.TraceServiceServer.
func (r *traceReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := attrValue(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, &span{service: service, Span: s})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// all returns the spans received so far.
func (r *traceReceiver) all() []*span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*span(nil), r.spans...)
}

// trace returns the received spans of one trace.
func (r *traceReceiver) trace(id []byte) []*span {
	return filter(r.all(), func(s *span) bool { return bytes.Equal(s.TraceId, id) })
}

// dump lists every span received, for failure messages.
func (r *traceReceiver) dump() string { return describe(r.all()) }

// describe lists spans one a line.
func describe(spans []*span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s %q %v trace=%x span=%x parent=%x", s.service, s.Name, s.Kind, s.TraceId, s.SpanId, s.ParentSpanId)
		for _, a := range s.Attributes {
			v, _ := lookupAttr(s.Attributes, a.Key)
			fmt.Fprintf(&b, " %s=%q", a.Key, v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// attrValue returns an attribute's value as text ("" when it is absent).
func attrValue(attrs []*commonpb.KeyValue, key string) string {
	v, _ := lookupAttr(attrs, key)
	return v
}

func lookupAttr(attrs []*commonpb.KeyValue, key string) (string, bool) {
	for _, kv := range attrs {
		if kv.GetKey() != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue, true
		case *commonpb.AnyValue_BoolValue:
			return strconv.FormatBool(v.BoolValue), true
		case *commonpb.AnyValue_IntValue:
			return strconv.FormatInt(v.IntValue, 10), true
		default:
			return kv.GetValue().String(), true
		}
	}
	return "", false
}

// find returns the first span of spans that ok accepts, or nil.
func find(spans []*span, ok func(*span) bool) *span {
	if f := filter(spans, ok); len(f) > 0 {
		return f[0]
	}
	return nil
}

// filter returns the spans of spans that ok accepts.
func filter(spans []*span, ok func(*span) bool) []*span {
	var out []*span
	for _, s := range spans {
		if ok(s) {
			out = append(out, s)
		}
	}
	return out
}

func named(service, name string, kind tracepb.Span_SpanKind) func(*span) bool {
	return func(s *span) bool { return s.service == service && s.Name == name && s.Kind == kind }
}

// childOf reports whether ancestor is on s's parent chain within spans.
func childOf(spans []*span, s, ancestor *span) bool {
	for hops := 0; s != nil && hops < len(spans); hops++ {
		if bytes.Equal(s.ParentSpanId, ancestor.SpanId) {
			return true
		}
		parent := s.ParentSpanId
		s = find(spans, func(c *span) bool { return bytes.Equal(c.SpanId, parent) })
	}
	return false
}

// eventually polls cond until it holds, or fails the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, detail())
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
}

// waitTrace waits until the receiver holds the trace of the request whose
// storegate.policy span names key: that span, its parent (the request's
// server span, which ends last) and whatever complete also requires.
func waitTrace(t *testing.T, r *traceReceiver, key string, complete func([]*span) bool) []*span {
	t.Helper()
	var spans []*span
	eventually(t, "the trace of the request for "+key, func() bool {
		policy := find(r.all(), func(s *span) bool {
			return s.Name == "storegate.policy" && attrValue(s.Attributes, "storegate.key") == key
		})
		if policy == nil {
			return false
		}
		spans = r.trace(policy.TraceId)
		return find(spans, func(s *span) bool { return bytes.Equal(s.SpanId, policy.ParentSpanId) }) != nil &&
			(complete == nil || complete(spans))
	}, r.dump)
	return spans
}

// tracedEtcd makes an embedded etcd member export its spans (all of them)
// to the receiver, as `etcd --enable-distributed-tracing` would.
func tracedEtcd(r *traceReceiver) func(*embed.Config) {
	return func(cfg *embed.Config) {
		cfg.EnableDistributedTracing = true
		cfg.DistributedTracingAddress = r.addr
		cfg.DistributedTracingServiceName = "etcd"
		cfg.DistributedTracingSamplingRatePerMillion = 1000000
	}
}

// tracing is the gateway config and environment that send every span to r
// over OTLP/gRPC, exported within ~100ms of ending.
func tracing(r *traceReceiver) (config.TelemetryConfig, []string) {
	all := 1.0
	return config.TelemetryConfig{Traces: config.TracesConfig{Exporter: new(telemetry.ExporterOTLP), Sampling: &all}}, []string{
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + r.addr,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
}

var (
	hexIDRe  = regexp.MustCompile(`^[0-9a-f]{32}$`)
	digitsRe = regexp.MustCompile(`^[0-9]+$`)
)

var revisionRe = regexp.MustCompile(`msg="policy (?:loaded|reloaded)" .*?revision=(\S+)`)

// policyRevision is the revision the gateway last logged loading.
func policyRevision(t *testing.T, gw *gateway) string {
	t.Helper()
	m := revisionRe.FindAllStringSubmatch(gw.logs.String(), -1)
	if len(m) == 0 {
		t.Fatalf("the gateway logged no policy revision:\n%s", gw.logs.String())
	}
	return m[len(m)-1][1]
}

// decisionLines reads the decision log, one JSON object per line, numbers
// kept exact.
func decisionLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(mustRead(t, path), "\n"), "\n") {
		if l == "" {
			continue
		}
		d := json.NewDecoder(strings.NewReader(l))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil || d.More() {
			t.Fatalf("decision log line is not one JSON object (%v): %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// lineFor returns the one decision line of key (failing unless exactly one).
func lineFor(t *testing.T, lines []map[string]any, key string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, l := range lines {
		if l["key"] == key {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d decision lines for key %q, want 1: %v", len(found), key, lines)
	}
	return found[0]
}

// checkGatewaySpans checks the spans the gateway made for one request that
// policy decided on: the server span (a root: the clients send no trace
// context) with its storegate.authn and storegate.policy children. It
// returns the server and policy spans.
func checkGatewaySpans(t *testing.T, spans []*span, serverName, resource, action, key, decision, reason, revision string) (server, policy *span) {
	t.Helper()
	authn := find(spans, named("storegate", "storegate.authn", tracepb.Span_SPAN_KIND_INTERNAL))
	policy = find(spans, named("storegate", "storegate.policy", tracepb.Span_SPAN_KIND_INTERNAL))
	if policy != nil {
		server = find(spans, func(s *span) bool { return bytes.Equal(s.SpanId, policy.ParentSpanId) })
	}
	if server == nil || authn == nil || policy == nil {
		t.Fatalf("want a server span, storegate.authn and storegate.policy in the trace; got\n%s", describe(spans))
	}
	// One caller, one op: one authn and one policy span.
	for _, name := range []string{"storegate.authn", "storegate.policy"} {
		if n := len(filter(spans, func(s *span) bool { return s.Name == name })); n != 1 {
			t.Errorf("%d %s spans in the trace, want 1:\n%s", n, name, describe(spans))
		}
	}
	if server.service != "storegate" || server.Kind != tracepb.Span_SPAN_KIND_SERVER || server.Name != serverName {
		t.Errorf("the request's span is %s %q (%v), want storegate %q (SPAN_KIND_SERVER)", server.service, server.Name, server.Kind, serverName)
	}
	if len(server.ParentSpanId) != 0 {
		t.Errorf("server span has parent %x; the client sent no trace context", server.ParentSpanId)
	}
	for _, c := range []*span{authn, policy} {
		if !bytes.Equal(c.ParentSpanId, server.SpanId) {
			t.Errorf("%s: parent %x, want the server span %x", c.Name, c.ParentSpanId, server.SpanId)
		}
	}
	if got := attrValue(authn.Attributes, "storegate.caller"); got != webID {
		t.Errorf("storegate.authn storegate.caller = %q, want %q", got, webID)
	}
	want := map[string]string{
		"storegate.caller": webID, "storegate.resource": resource, "storegate.action": action,
		"storegate.key": key, "storegate.decision": decision, "storegate.policy.revision": revision,
	}
	for k, v := range want {
		if got := attrValue(policy.Attributes, k); got != v {
			t.Errorf("storegate.policy %s = %q, want %q", k, got, v)
		}
	}
	if got, ok := lookupAttr(policy.Attributes, "storegate.reason"); got != reason || (reason == "" && ok) {
		t.Errorf("storegate.policy storegate.reason = %q (set %v), want %q", got, ok, reason)
	}
	// The caller is authenticated, then policy decides.
	if authn.EndTimeUnixNano > policy.StartTimeUnixNano {
		t.Errorf("storegate.authn ends after storegate.policy starts")
	}
	var denied []string
	for _, e := range server.Events {
		if e.Name == "storegate.denied" {
			denied = append(denied, attrValue(e.Attributes, "storegate.reason"))
		}
	}
	switch {
	case decision == "deny" && (len(denied) != 1 || denied[0] != reason):
		t.Errorf("server span's storegate.denied events: reasons %q, want one with %q", denied, reason)
	case decision != "deny" && len(denied) != 0:
		t.Errorf("an allowed request's server span has storegate.denied events: %q", denied)
	}
	return server, policy
}

// TestObserveTraceEtcd: one etcdctl put through the gateway is one trace
// from the gateway's server span through authn and policy to its client
// span and on into etcd's own server span; a denied put's trace says why
// and goes no further than the gateway.
func TestObserveTraceEtcd(t *testing.T) {
	rcv := startReceiver(t)
	// etcd's in-process batcher reads this when it starts: export quickly.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1, tracedEtcd(rcv))
	cfg, env := tracing(rcv)
	dlog := filepath.Join(t.TempDir(), "decisions.log")
	gw := startGateway(t, p, ec, gatewayOpts{policyDir: copyPolicies(t, observePolicy),
		telemetry: cfg, decisionLog: &config.DecisionLogConfig{Output: dlog}, env: env})
	revision := policyRevision(t, gw)
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}

	// tracedPut waits for the trace of an allowed put of key: the
	// gateway's spans and etcd's server span.
	tracedPut := func(key string) []*span {
		t.Helper()
		return waitTrace(t, rcv, key, func(spans []*span) bool {
			return find(spans, named("etcd", "etcdserverpb.KV/Put", tracepb.Span_SPAN_KIND_SERVER)) != nil
		})
	}

	if out := mustRun(t, web, "", "put", "/obs/traced", "s3cr3t-value-1"); out != "OK\n" {
		t.Fatalf("put: %q", out)
	}
	spans := tracedPut("/obs/traced")
	server, policy := checkGatewaySpans(t, spans, "etcdserverpb.KV/Put", "kv", "write", "/obs/traced", "allow", "", revision)
	client := find(spans, named("storegate", "etcdserverpb.KV/Put", tracepb.Span_SPAN_KIND_CLIENT))
	if client == nil {
		t.Fatalf("no client span for the forwarded Put in\n%s", describe(spans))
	}
	if !childOf(spans, client, server) {
		t.Errorf("the client span %x does not descend from the server span %x", client.SpanId, server.SpanId)
	}
	if policy.EndTimeUnixNano > client.StartTimeUnixNano {
		t.Errorf("the Put was forwarded before policy had decided")
	}
	etcdSpan := find(spans, named("etcd", "etcdserverpb.KV/Put", tracepb.Span_SPAN_KIND_SERVER))
	if !childOf(spans, etcdSpan, client) {
		t.Errorf("etcd's server span (parent %x) does not descend from the gateway's client span %x: the traceparent was not sent",
			etcdSpan.ParentSpanId, client.SpanId)
	}
	// The decision log line points at this trace and its policy span.
	line := lineFor(t, decisionLines(t, dlog), "/obs/traced")
	if line["trace_id"] != hex.EncodeToString(server.TraceId) || line["span_id"] != hex.EncodeToString(policy.SpanId) {
		t.Errorf("decision line trace_id=%v span_id=%v, want %x and the policy span's %x", line["trace_id"], line["span_id"], server.TraceId, policy.SpanId)
	}

	// A denied put.
	if _, stderr, err := web.run(t, "", "put", "/forbidden/traced", "s3cr3t-value-2"); err == nil || !strings.Contains(stderr, "permission denied") {
		t.Fatalf("put under /forbidden/: err=%v %s", err, stderr)
	}
	denied := waitTrace(t, rcv, "/forbidden/traced", nil)
	// A later allowed put, traced into etcd: both processes export spans in
	// the order they end, so once this one's are in, any span of the denied
	// put would be too.
	mustRun(t, web, "", "put", "/obs/sentinel", "s3cr3t-value-3")
	tracedPut("/obs/sentinel")
	denied = rcv.trace(denied[0].TraceId)
	server, policy = checkGatewaySpans(t, denied, "etcdserverpb.KV/Put", "kv", "write", "/forbidden/traced", "deny", forbiddenReason, revision)
	for _, s := range denied {
		if s.service != "storegate" || s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("the denied put went on to %s %q (kind %v)", s.service, s.Name, s.Kind)
		}
	}
	if out := mustRun(t, direct, "", "get", "/forbidden/traced"); out != "" {
		t.Errorf("the denied put reached etcd: %q", out)
	}
	line = lineFor(t, decisionLines(t, dlog), "/forbidden/traced")
	if line["result"] != "deny" || line["reason"] != forbiddenReason ||
		line["trace_id"] != hex.EncodeToString(server.TraceId) || line["span_id"] != hex.EncodeToString(policy.SpanId) {
		t.Errorf("decision line of the denied put: %v", line)
	}
}

// recorder is a reverse proxy between the gateway and the Consul agent
// that records the traceparent header of every request it forwards.
type recorder struct {
	url string
	mu  sync.Mutex
	got []recorded
}

type recorded struct{ method, path, traceparent string }

func startRecorder(t *testing.T, agent string) *recorder {
	t.Helper()
	u, err := url.Parse(agent)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.got = append(r.got, recorded{req.Method, req.URL.Path, req.Header.Get("traceparent")})
		r.mu.Unlock()
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// requests returns the recorded requests to one method and path.
func (r *recorder) requests(method, path string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, g := range r.got {
		if g.method == method && g.path == path {
			out = append(out, g)
		}
	}
	return out
}

// consulGateway starts a gateway as o says with a Consul front forwarding
// to upstream, and returns it and the front's https:// address.
func consulGateway(t *testing.T, p *pki, ec *etcdCluster, upstream string, o gatewayOpts) (*gateway, string) {
	t.Helper()
	o.consulListen, o.consulUpstream = freePort(t), upstream
	gw := startGateway(t, p, ec, o)
	return gw, "https://" + o.consulListen
}

// TestObserveTraceConsul: a consul kv put through the gateway is traced
// from the front's server span through authn and policy to the client span
// of the call to the agent, and the agent receives that client span's W3C
// trace context.
func TestObserveTraceConsul(t *testing.T) {
	rcv := startReceiver(t)
	p := newPKI(t, "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	rec := startRecorder(t, "http://"+agent.httpAddr)
	cfg, env := tracing(rcv)
	gw, front := consulGateway(t, p, ec, rec.url, gatewayOpts{policyDir: copyPolicies(t, observePolicy), telemetry: cfg, env: env})
	revision := policyRevision(t, gw)
	web := consulCLI{p: p, addr: front, who: "web"}

	if out, stderr, err := web.run(t, "", "kv", "put", "obs/c1", "s3cr3t-value-1"); err != nil || !strings.Contains(out, "Success!") {
		t.Fatalf("kv put: %v %s%s", err, out, stderr)
	}
	spans := waitTrace(t, rcv, "/obs/c1", nil)
	server, _ := checkGatewaySpans(t, spans, "PUT /v1/kv/", "kv", "write", "/obs/c1", "allow", "", revision)
	if got := attrValue(server.Attributes, "http.route"); got != "/v1/kv/" {
		t.Errorf("server span http.route = %q, want /v1/kv/", got)
	}
	client := find(spans, func(s *span) bool { return s.service == "storegate" && s.Kind == tracepb.Span_SPAN_KIND_CLIENT })
	if client == nil {
		t.Fatalf("no client span for the call to the agent in\n%s", describe(spans))
	}
	if !childOf(spans, client, server) {
		t.Errorf("the client span %x does not descend from the server span %x", client.SpanId, server.SpanId)
	}
	got := rec.requests(http.MethodPut, "/v1/kv/obs/c1")
	want := fmt.Sprintf("00-%x-%x-01", server.TraceId, client.SpanId)
	if len(got) != 1 || got[0].traceparent != want {
		t.Errorf("the agent received %v, want one PUT with traceparent %s", got, want)
	}

	// A denied put reaches neither a client span nor the agent.
	if _, stderr, err := web.run(t, "", "kv", "put", "forbidden/c2", "s3cr3t-value-2"); err == nil || !strings.Contains(stderr, "403") {
		t.Fatalf("kv put under forbidden/: err=%v %s", err, stderr)
	}
	// The server span ends last and the gateway exports spans in the order
	// they end: once it is in, any client span of the request would be too.
	denied := waitTrace(t, rcv, "/forbidden/c2", nil)
	checkGatewaySpans(t, denied, "PUT /v1/kv/", "kv", "write", "/forbidden/c2", "deny", forbiddenReason, revision)
	if c := find(denied, func(s *span) bool { return s.Kind == tracepb.Span_SPAN_KIND_CLIENT }); c != nil {
		t.Errorf("the denied put has a client span %q", c.Name)
	}
	if got := rec.requests(http.MethodPut, "/v1/kv/forbidden/c2"); len(got) != 0 {
		t.Errorf("the denied put reached the agent: %v", got)
	}
}

// sample is one line of the Prometheus text exposition.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	labelRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrape reads the gateway's /metrics.
func scrape(t *testing.T, gw *gateway) []sample {
	t.Helper()
	resp, err := http.Get("http://" + gw.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	var out []sample
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := sampleRe.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unparsable /metrics line %q", l)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", l, err)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, lm := range labelRe.FindAllStringSubmatch(m[2], -1) {
			s.labels[lm[1]] = lm[2]
		}
		out = append(out, s)
	}
	return out
}

// byLabels sums the samples of one metric by the values of the labels
// named (other labels, such as otel_scope_name, are ignored), keyed by
// those values joined with "/".
func byLabels(samples []sample, name string, labels ...string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range samples {
		if s.name != name {
			continue
		}
		var k []string
		for _, l := range labels {
			k = append(k, s.labels[l])
		}
		out[strings.Join(k, "/")] += s.value
	}
	return out
}

// delta is after minus before, per key, dropping keys that did not move.
func delta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			out[k] = -v
		}
	}
	return out
}

func sameCounts(t *testing.T, what string, got, want map[string]float64) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) { // fmt sorts map keys
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// writeAtomically replaces path in one rename, so that the policy watcher
// sees one change and never a half-written file.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestObserveMetricsAndDecisionLog drives a known mix of allowed, denied
// and filtered requests through both fronts with the real clients, then
// checks the decision counters and stage histograms on /metrics, the policy
// reload counter, and the decision log line by line.
func TestObserveMetricsAndDecisionLog(t *testing.T) {
	testStart := time.Now()
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	policyDir := copyPolicies(t, observePolicy)
	dlog := filepath.Join(t.TempDir(), "decisions.log")
	// No tracing configured: no request is traced, so no line may carry a
	// trace_id.
	gw, front := consulGateway(t, p, ec, "http://"+agent.httpAddr, gatewayOpts{policyDir: policyDir, decisionLog: &config.DecisionLogConfig{Output: dlog}})
	revision := policyRevision(t, gw)
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}
	cweb := consulCLI{p: p, addr: front, who: "web"}
	mustRun(t, direct, "", "put", "/obs/hidden/h", "s3cr3t-value-0") // not through the gateway: no decision
	before := scrape(t, gw)
	if d := byLabels(before, "storegate_decisions_total", "protocol"); len(d) != 0 {
		t.Errorf("decisions counted before any request: %v", d)
	}

	// want is one expected decision line; the fields every line has
	// (caller, policy_revision) are added below.
	type want map[string]any
	n := func(i int) json.Number { return json.Number(strconv.Itoa(i)) }
	put := func(key string, size int, result string) want {
		w := want{"protocol": "etcd", "method": "/etcdserverpb.KV/Put", "resource": "kv", "action": "write",
			"key": key, "value_size": n(size), "result": result}
		if result == "deny" {
			w["reason"] = forbiddenReason
		}
		return w
	}
	var wants []want
	value := func(i int) string { return "s3cr3t-value-" + strconv.Itoa(i) }

	// etcdctl put and get each send one RPC (KV/Put, KV/Range) that decodes
	// to one op; txn sends one KV/Txn whose two puts are two ops; a denied
	// RPC is not retried (PermissionDenied).
	for i, k := range []string{"/obs/a", "/obs/b", "/obs/c"} {
		if out := mustRun(t, web, "", "put", k, value(i+1)); out != "OK\n" {
			t.Fatalf("put %s: %q", k, out)
		}
		wants = append(wants, put(k, len(value(i+1)), "allow"))
	}
	for _, k := range []string{"/obs/a", "/obs/b"} {
		mustRun(t, web, "", "get", k)
		wants = append(wants, want{"protocol": "etcd", "method": "/etcdserverpb.KV/Range", "resource": "kv", "action": "read", "key": k, "result": "allow"})
	}
	for i, k := range []string{"/forbidden/a", "/forbidden/b"} {
		if _, stderr, err := web.run(t, "", "put", k, value(i+4)); err == nil || !strings.Contains(stderr, "permission denied") {
			t.Fatalf("put %s: err=%v %s", k, err, stderr)
		}
		wants = append(wants, put(k, len(value(i+4)), "deny"))
	}
	if out := mustRun(t, web, "\nput /obs/t1 "+value(6)+"\nput /obs/t2 "+value(7)+"\n\n\n", "txn"); !strings.HasPrefix(out, "SUCCESS") {
		t.Fatalf("txn: %q", out)
	}
	for i, k := range []string{"/obs/t1", "/obs/t2"} {
		w := put(k, len(value(i+6)), "allow")
		w["method"], w["txn_index"] = "/etcdserverpb.KV/Txn", n(i+1)
		wants = append(wants, w)
	}
	// A read of /obs/ overlaps no-hidden-reads: filtered (one decision; the
	// per-key checks that narrow it are not decisions).
	if out := mustRun(t, web, "", "get", "/obs/", "--prefix", "--keys-only"); strings.Contains(out, "hidden") || !strings.Contains(out, "/obs/t2") {
		t.Errorf("filtered get: %q", out)
	}
	wants = append(wants, want{"protocol": "etcd", "method": "/etcdserverpb.KV/Range", "resource": "kv", "action": "read",
		"key": "/obs/", "range_end": "/obs0", "result": "filter"})

	// consul kv put and kv get each send one request (PUT, GET /v1/kv/<key>)
	// that decodes to one op on the key "/<key>".
	if out, stderr, err := cweb.run(t, "", "kv", "put", "obs/c1", value(8)); err != nil || !strings.Contains(out, "Success!") {
		t.Fatalf("kv put: %v %s%s", err, out, stderr)
	}
	wants = append(wants, want{"protocol": "consul", "method": "PUT /v1/kv/", "resource": "kv", "action": "write",
		"key": "/obs/c1", "value_size": n(len(value(8))), "result": "allow"})
	if out, stderr, err := cweb.run(t, "", "kv", "get", "obs/c1"); err != nil || out != value(8)+"\n" {
		t.Fatalf("kv get: %v %q %s", err, out, stderr)
	}
	wants = append(wants, want{"protocol": "consul", "method": "GET /v1/kv/", "resource": "kv", "action": "read", "key": "/obs/c1", "result": "allow"})
	if _, stderr, err := cweb.run(t, "", "kv", "put", "forbidden/c2", value(9)); err == nil || !strings.Contains(stderr, forbiddenReason) {
		t.Fatalf("kv put under forbidden/: err=%v %s", err, stderr)
	}
	wants = append(wants, want{"protocol": "consul", "method": "PUT /v1/kv/", "resource": "kv", "action": "write",
		"key": "/forbidden/c2", "value_size": n(len(value(9))), "result": "deny", "reason": forbiddenReason})

	after := scrape(t, gw)
	sameCounts(t, "storegate_decisions_total by protocol/resource/action/decision",
		delta(byLabels(before, "storegate_decisions_total", "protocol", "resource", "action", "decision"),
			byLabels(after, "storegate_decisions_total", "protocol", "resource", "action", "decision")),
		map[string]float64{
			"etcd/kv/write/allow":   5, // 3 puts, 2 txn ops
			"etcd/kv/read/allow":    2,
			"etcd/kv/write/deny":    2,
			"etcd/kv/read/filter":   1,
			"consul/kv/write/allow": 1,
			"consul/kv/read/allow":  1,
			"consul/kv/write/deny":  1,
		})
	// Per front: every request is authenticated and timed whole; policy is
	// timed per op (per decision); only the allowed requests go upstream.
	// etcd: 9 RPCs, 10 decisions, 7 forwarded; Consul: 3, 3 and 2.
	sameCounts(t, "storegate_stage_duration_seconds_count by protocol/stage",
		delta(byLabels(before, "storegate_stage_duration_seconds_count", "protocol", "stage"),
			byLabels(after, "storegate_stage_duration_seconds_count", "protocol", "stage")),
		map[string]float64{
			"etcd/authn": 9, "etcd/policy": 10, "etcd/upstream": 7, "etcd/total": 9,
			"consul/authn": 3, "consul/policy": 3, "consul/upstream": 2, "consul/total": 3,
		})
	if got := byLabels(after, "storegate_stage_duration_seconds_sum", "protocol", "stage"); got["etcd/total"] <= 0 || got["consul/total"] <= 0 {
		t.Errorf("stage duration sums: %v", got)
	}
	// A denial is the gateway's answer, not an upstream failure.
	if got := byLabels(after, "storegate_upstream_errors_total", "protocol", "code"); len(got) != 0 {
		t.Errorf("upstream errors: %v", got)
	}
	if got := byLabels(after, "storegate_svid_expiry_timestamp_seconds"); got[""] < float64(time.Now().Unix()) {
		t.Errorf("storegate_svid_expiry_timestamp_seconds = %v, want the SVID's NotAfter (in the future)", got)
	}

	// A policy change is a reload; one that does not compile is a failed
	// reload that keeps the last good version.
	reloads := func() map[string]float64 {
		return byLabels(scrape(t, gw), "storegate_policy_reloads_total", "outcome")
	}
	// Both outcomes' series exist from the start, at 0, so that an alert on
	// their increase sees the first failure.
	if got := reloads(); len(got) != 2 || got["success"] != 0 || got["failure"] != 0 {
		t.Errorf("reloads before any policy change: %v, want success and failure at 0", got)
	}
	intentions := filepath.Join(policyDir, "intentions.yaml")
	writeAtomically(t, intentions, observePolicy+"  - name: no-more-writes\n    source: \"spiffe://example.org/web\"\n    resources: [kv]\n    actions: [write]\n    keys: [\"/frozen/**\"]\n    effect: deny\n")
	eventually(t, "a successful policy reload on /metrics", func() bool { return reloads()["success"] == 1 },
		func() string { return fmt.Sprint(reloads(), "\n", gw.logs.String()) })
	waitLog(t, gw, `msg="policy reloaded"`)
	newRevision := policyRevision(t, gw)
	if newRevision == revision {
		t.Fatalf("the reloaded policy has the old revision %s", revision)
	}
	writeAtomically(t, intentions, "intentions: [this is not an intention\n")
	eventually(t, "a failed policy reload on /metrics", func() bool { return reloads()["failure"] == 1 },
		func() string { return fmt.Sprint(reloads(), "\n", gw.logs.String()) })
	if got := reloads(); got["success"] != 1 {
		t.Errorf("reloads after the failed one: %v", got)
	}
	// Decisions go on under the last good version.
	mustRun(t, web, "", "put", "/obs/after", value(10))
	wants = append(wants, put("/obs/after", len(value(10)), "allow"))

	// The decision log: exactly one line per decision, in order, each with
	// exactly the fields expected (plus its id, time and duration), and no
	// value anywhere.
	lines := decisionLines(t, dlog)
	if len(lines) != len(wants) {
		t.Errorf("%d decision lines, want %d:\n%s", len(lines), len(wants), mustRead(t, dlog))
	}
	ids, prev := map[string]bool{}, testStart
	for i := range min(len(lines), len(wants)) {
		got, w := lines[i], wants[i]
		w["caller"], w["policy_revision"] = webID, revision
		if i == len(wants)-1 {
			w["policy_revision"] = newRevision
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("line %d (%s %v): %s = %#v, want %#v", i+1, w["method"], w["key"], k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := w[k]; !ok && k != "decision_id" && k != "time" && k != "duration_us" {
				t.Errorf("line %d (%s %v): unexpected field %s = %v", i+1, w["method"], w["key"], k, got[k])
			}
		}
		id, _ := got["decision_id"].(string)
		if !hexIDRe.MatchString(id) || ids[id] {
			t.Errorf("line %d: decision_id %q is not a fresh 32-hex id", i+1, id)
		}
		ids[id] = true
		// The requests were sent one after another: times only go forward.
		ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got["time"]))
		if err != nil || ts.Before(prev) || ts.After(time.Now()) {
			t.Errorf("line %d: time %v (%v), want between %v and now", i+1, got["time"], err, prev)
		}
		prev = ts
		if d, ok := got["duration_us"].(json.Number); !ok || !digitsRe.MatchString(string(d)) {
			t.Errorf("line %d: duration_us %v", i+1, got["duration_us"])
		}
	}
	raw := mustRead(t, dlog)
	for i := 0; i <= 10; i++ {
		if strings.Contains(raw, value(i)) {
			t.Errorf("the value %q is in the decision log", value(i))
		}
	}
	if strings.Contains(raw, "s3cr3t") {
		t.Errorf("a value fragment is in the decision log:\n%s", raw)
	}
}

// TestObserveDecisionLogUnsampled: with tracing on but a request not
// sampled (ratio 0, and etcdctl sends no trace context), nothing of the
// request is traced, so its decision line carries no trace_id or span_id
// to look up.
func TestObserveDecisionLogUnsampled(t *testing.T) {
	rcv := startReceiver(t)
	p := newPKI(t, "web")
	ec := startEtcd(t, p, 1)
	_, env := tracing(rcv)
	dlog := filepath.Join(t.TempDir(), "decisions.log")
	gw := startGateway(t, p, ec, gatewayOpts{policyDir: copyPolicies(t, observePolicy),
		telemetry:   config.TelemetryConfig{Traces: config.TracesConfig{Exporter: new(telemetry.ExporterOTLP), Sampling: new(float64)}},
		decisionLog: &config.DecisionLogConfig{Output: dlog}, env: env})
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	mustRun(t, web, "", "put", "/obs/unsampled", "s3cr3t-value-1")
	line := lineFor(t, decisionLines(t, dlog), "/obs/unsampled")
	if line["result"] != "allow" {
		t.Errorf("decision line: %v", line)
	}
	if tid, ok := line["trace_id"]; ok {
		t.Errorf("an unsampled request's decision line has trace_id %v (span_id %v), a trace that was never recorded", tid, line["span_id"])
	}
}
