package conventions

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/storegate/storegate/internal/testenv"
)

// otlpReceiver is a real OTLP/HTTP trace receiver: POST /v1/traces with an
// ExportTraceServiceRequest in protobuf, as the http/protobuf exporter
// sends it.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []receivedSpan
	got   chan struct{}
}

type receivedSpan struct {
	span     *tracepb.Span
	resource map[string]string
}

func startReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	r := &otlpReceiver{got: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.export)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r, "http://" + ln.Addr().String()
}

func (r *otlpReceiver) export(w http.ResponseWriter, req *http.Request) {
	b, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ex collectortracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &ex); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range ex.ResourceSpans {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, receivedSpan{span: s, resource: res})
			}
		}
	}
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
	out, _ := proto.Marshal(&collectortracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.Key] = kv.GetValue().GetStringValue()
	}
	return m
}

// wait returns the first span that match accepts, waiting for exports.
func (r *otlpReceiver) wait(t *testing.T, timeout time.Duration, match func(receivedSpan) bool) receivedSpan {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		for _, s := range r.spans {
			if match(s) {
				r.mu.Unlock()
				return s
			}
		}
		n := len(r.spans)
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("no matching span after %v (%d spans received)", timeout, n)
		}
	}
}

// TestOTelEnvironmentAlone: a gateway whose configuration has no
// telemetry: section, started with only OpenTelemetry's standard variables
// (exporter, endpoint, protocol, sampler, service name, resource
// attributes) and no other OTEL_* in its environment, exports the server
// span of an etcd request through it to a real OTLP receiver, under the
// service name and resource the environment gave.
func TestOTelEnvironmentAlone(t *testing.T) {
	env := testenv.New(t)
	pki := env.PKI("web")
	etcd := env.Etcd(testenv.EtcdSpec{PKI: pki})
	rcv, endpoint := startReceiver(t)
	cfg := env.GatewayConfig(pki, env.Policies(testenv.AllowAll), etcd.Endpoints, "")
	if cfg.Telemetry.Traces.Exporter != nil || cfg.Telemetry.Traces.Sampling != nil {
		t.Fatalf("the configuration says something about traces: %+v", cfg.Telemetry)
	}
	gw := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg, Environ: environWithoutOTel(), Env: []string{
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_TRACES_SAMPLER=always_on",
		"OTEL_SERVICE_NAME=sg-test",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=conventions",
	}})
	b, err := os.ReadFile(gw.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "telemetry:") {
		t.Fatalf("the written configuration has a telemetry section:\n%s", b)
	}

	putGet(t, etcdThrough(t, pki, gw, "web"), "/app/otel", "spans")

	// The batch span processor exports within its default 5s delay.
	const put = "etcdserverpb.KV/Put"
	s := rcv.wait(t, 30*time.Second, func(s receivedSpan) bool {
		return s.span.Kind == tracepb.Span_SPAN_KIND_SERVER && s.span.Name == put
	})
	if got := s.resource["service.name"]; got != "sg-test" {
		t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's sg-test", got)
	}
	if got := s.resource["deployment.environment.name"]; got != "conventions" {
		t.Errorf("deployment.environment.name = %q, want OTEL_RESOURCE_ATTRIBUTES' conventions", got)
	}
	if got := attrs(s.span.Attributes)["rpc.method"]; got != put {
		t.Errorf("server span rpc.method = %q, want %q", got, put)
	}
	// The upstream call is a client span of the same trace.
	rcv.wait(t, 30*time.Second, func(c receivedSpan) bool {
		return c.span.Kind == tracepb.Span_SPAN_KIND_CLIENT && c.span.Name == put &&
			string(c.span.TraceId) == string(s.span.TraceId)
	})
}
