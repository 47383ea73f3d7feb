package telemetry

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// receiver is a real OTLP trace receiver: it keeps every span exported to
// it, over gRPC or over HTTP (http/protobuf).
type receiver struct {
	collectortracepb.UnimplementedTraceServiceServer

	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string // resource service.name of each span
	changed  chan struct{}
}

func newReceiver() *receiver { return &receiver{changed: make(chan struct{}, 1)} }

func (r *receiver) Export(_ context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	for _, rs := range req.ResourceSpans {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, s)
				r.services = append(r.services, service)
			}
		}
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

// ServeHTTP is the OTLP/HTTP binary-protobuf endpoint, /v1/traces.
func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var in collectortracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := r.Export(req.Context(), &in)
	ob, _ := proto.Marshal(out)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(ob)
}

// startGRPC serves the receiver over OTLP/gRPC on loopback and returns its
// endpoint URL.
func (r *receiver) startGRPC(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(gs, r)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return "http://" + lis.Addr().String()
}

// startHTTP serves the receiver over OTLP/HTTP on loopback and returns its
// endpoint URL.
func (r *receiver) startHTTP(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv.URL
}

// find returns the first span matching ok, and its resource's service.name.
func (r *receiver) find(ok func(*tracepb.Span) bool) (*tracepb.Span, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.spans {
		if ok(s) {
			return s, r.services[i]
		}
	}
	return nil, ""
}

// waitSpan waits until a span matching ok has arrived, or fails the test.
func (r *receiver) waitSpan(t *testing.T, what string, ok func(*tracepb.Span) bool) (*tracepb.Span, string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		if s, service := r.find(ok); s != nil {
			return s, service
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("no %s span arrived in 15s", what)
		}
	}
}

// healthServer starts a real gRPC server with the health service,
// instrumented with tel, and returns a client connection to it that is
// instrumented too.
func healthServer(t *testing.T, tel *Telemetry) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(tel.ServerOptions()...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(),
		append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, tel.DialOptions()...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

const checkMethod = "grpc.health.v1.Health/Check"

// TestOTLPTraces: with the otlp exporter, the server and client spans of a
// gRPC call reach a real OTLP receiver at OTEL_EXPORTER_OTLP_ENDPOINT, over
// either protocol, and the server span continues the client's trace (the
// traceparent the client handler sent).
func TestOTLPTraces(t *testing.T) {
	tests := []struct {
		protocol string
		start    func(*receiver, *testing.T) string
	}{
		{"grpc", (*receiver).startGRPC},
		{"http/protobuf", (*receiver).startHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.protocol, func(t *testing.T) {
			rcv := newReceiver()
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tt.start(rcv, t))
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tt.protocol)
			t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10") // ms: export promptly
			var cfg Config
			cfg.ServiceName = "storegate-test"
			cfg.Traces.Exporter = new(ExporterOTLP)
			cfg.Traces.Sampling = new(1.0)
			tel, err := Setup(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := tel.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			})

			client := healthServer(t, tel)
			if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}

			srv, service := rcv.waitSpan(t, "server", func(s *tracepb.Span) bool {
				return s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.Name == checkMethod
			})
			if got := attr(srv, "rpc.method"); got != checkMethod {
				t.Errorf("server span rpc.method = %q, want %q", got, checkMethod)
			}
			if service != "storegate-test" {
				t.Errorf("service.name = %q, want storegate-test", service)
			}
			cli, _ := rcv.waitSpan(t, "client", func(s *tracepb.Span) bool {
				return s.Kind == tracepb.Span_SPAN_KIND_CLIENT && s.Name == checkMethod
			})
			if !bytes.Equal(srv.TraceId, cli.TraceId) || !bytes.Equal(srv.ParentSpanId, cli.SpanId) {
				t.Errorf("server span (trace %s, parent %s) does not continue the client span (trace %s, span %s)",
					hex.EncodeToString(srv.TraceId), hex.EncodeToString(srv.ParentSpanId),
					hex.EncodeToString(cli.TraceId), hex.EncodeToString(cli.SpanId))
			}
		})
	}
}

// TestMetricsHandler: whatever the trace exporter, /metrics serves the
// Prometheus text format with the RPC durations of calls served, and the
// upstream's as storegate's upstream stage (otelgrpc's client metrics,
// which would time the same calls again, are left out).
func TestMetricsHandler(t *testing.T) {
	tel, err := Setup(t.Context(), Config{Getenv: noEnv}) // no spans exported
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	metrics := httptest.NewServer(tel.MetricsHandler())
	t.Cleanup(metrics.Close)

	client := healthServer(t, tel)
	if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	// The server records the duration after the client has its answer, so
	// scrape until it is there.
	want := []string{
		`rpc_server_call_duration_seconds_count{`,
		`stage="upstream"`,
		`rpc_method="` + checkMethod + `"`,
		"go_goroutines ",
	}
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(metrics.URL)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("Content-Type = %q, want the Prometheus text format", ct)
		}
		var missing []string
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			if strings.Contains(string(b), "rpc_client_") {
				t.Fatalf("/metrics has otelgrpc's client metrics:\n%s", b)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q after 15s:\n%s", missing, b)
		}
		<-tick.C
	}
}

// TestSetupRejects: configuration errors surface from Setup.
func TestSetupRejects(t *testing.T) {
	tests := []struct {
		name     string
		protocol string
		sampling float64
		want     string
	}{
		{"sampling above 1", "grpc", 1.5, "not a ratio"},
		{"negative sampling", "grpc", -0.1, "not a ratio"},
		{"http/json", "http/json", 0.5, `OTLP protocol "http/json" is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tt.protocol)
			var cfg Config
			cfg.Traces.Exporter = new(ExporterOTLP)
			cfg.Traces.Sampling = new(tt.sampling)
			tel, err := Setup(t.Context(), cfg)
			if err == nil {
				tel.Shutdown(context.Background())
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestParseExporter(t *testing.T) {
	for s, want := range map[string]Exporter{"": ExporterNone, "none": ExporterNone, "otlp": ExporterOTLP, "stdout": ExporterStdout} {
		if got, err := ParseExporter(s); err != nil || got != want {
			t.Errorf("ParseExporter(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := ParseExporter("jaeger"); err == nil {
		t.Error(`ParseExporter("jaeger") accepted`)
	}
}

// noEnv is an environment without OTEL_* variables.
func noEnv(string) string { return "" }

// TestResolveTraces is the precedence table: OTEL_SDK_DISABLED=true turns
// spans off whatever else is said; otherwise the configuration wins where
// it says something (a non-nil field), the environment decides the rest,
// and with neither no spans are exported and roots are sampled at 1%,
// parent-based. Values the specification does not define are errors.
func TestResolveTraces(t *testing.T) {
	const (
		pb1pct = "ParentBased{root:TraceIDRatioBased{0.01},"
		pbOn   = "ParentBased{root:AlwaysOnSampler,"
	)
	tests := []struct {
		name      string
		exporter  *Exporter
		sampling  *float64
		env       map[string]string
		exporters []Exporter
		sampler   string // prefix of the sampler's description
		err       string
	}{
		{name: "nothing said", sampler: pb1pct},
		{name: "environment alone", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_on"},
			exporters: []Exporter{ExporterOTLP}, sampler: "AlwaysOnSampler"},
		{name: "environment exporter, default sampler", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			exporters: []Exporter{ExporterOTLP}, sampler: pb1pct},
		{name: "console is stdout, lists", env: map[string]string{"OTEL_TRACES_EXPORTER": " otlp, console,otlp"},
			exporters: []Exporter{ExporterOTLP, ExporterStdout}, sampler: pb1pct},
		{name: "environment none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}, sampler: pb1pct},
		{name: "config exporter wins", exporter: new(ExporterStdout), env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			exporters: []Exporter{ExporterStdout}, sampler: pb1pct},
		{name: "config none wins", exporter: new(ExporterNone), env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			sampler: pb1pct},
		{name: "config sampling wins", sampling: new(0.25), exporter: new(ExporterOTLP),
			env:       map[string]string{"OTEL_TRACES_SAMPLER": "always_off"},
			exporters: []Exporter{ExporterOTLP}, sampler: "ParentBased{root:TraceIDRatioBased{0.25},"},
		{name: "config exporter, environment sampler", exporter: new(ExporterOTLP),
			env:       map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
			exporters: []Exporter{ExporterOTLP}, sampler: "ParentBased{root:TraceIDRatioBased{0.5},"},
		{name: "always_off", env: map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, sampler: "AlwaysOffSampler"},
		{name: "parentbased_always_on", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, sampler: pbOn},
		{name: "parentbased_always_off", env: map[string]string{"OTEL_TRACES_SAMPLER": "ParentBased_Always_Off"},
			sampler: "ParentBased{root:AlwaysOffSampler,"},
		{name: "traceidratio", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.125"},
			sampler: "TraceIDRatioBased{0.125}"},
		{name: "traceidratio defaults to 1", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio"},
			sampler: "TraceIDRatioBased{1}"},
		{name: "sdk disabled beats the config", exporter: new(ExporterOTLP), sampling: new(1.0),
			env: map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}},
		{name: "sdk not disabled", env: map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"},
			exporters: []Exporter{ExporterStdout}, sampler: pb1pct},
		{name: "bad exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, err: `"jaeger" is not otlp, console or none`},
		{name: "none with others", env: map[string]string{"OTEL_TRACES_EXPORTER": "none,otlp"}, err: "none cannot be combined"},
		{name: "bad exporter overridden by config", exporter: new(ExporterOTLP), env: map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"},
			exporters: []Exporter{ExporterOTLP}, sampler: pb1pct},
		{name: "bad sampler", env: map[string]string{"OTEL_TRACES_SAMPLER": "xray"}, err: `OTEL_TRACES_SAMPLER="xray" is not always_on`},
		{name: "bad ratio", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
			err: `OTEL_TRACES_SAMPLER_ARG="2" is not a ratio`},
		{name: "unparsable ratio", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
			err: `OTEL_TRACES_SAMPLER_ARG="half" is not a ratio`},
		{name: "bad disabled", env: map[string]string{"OTEL_SDK_DISABLED": "yes"}, err: `OTEL_SDK_DISABLED="yes": want true or false`},
		{name: "bad config sampling", sampling: new(1.5), err: "not a ratio in [0, 1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := resolveTraces(TracesConfig{Exporter: tt.exporter, Sampling: tt.sampling}, func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.exporters, tt.exporters) {
				t.Errorf("exporters = %v, want %v", p.exporters, tt.exporters)
			}
			if len(tt.exporters) == 0 {
				if p.String() != "none" {
					t.Errorf("plan = %s, want none", p)
				}
				return
			}
			if d := p.sampler.Description(); !strings.HasPrefix(d, tt.sampler) {
				t.Errorf("sampler = %s, want %s...", d, tt.sampler)
			}
		})
	}
}

// TestEnvironmentAlone: with nothing configured, OTEL_TRACES_EXPORTER=otlp,
// OTEL_TRACES_SAMPLER=always_on and OTEL_SERVICE_NAME make Setup export
// every span to the OTLP endpoint of the environment under that service
// name; OTEL_SDK_DISABLED=true then turns it off again.
func TestEnvironmentAlone(t *testing.T) {
	rcv := newReceiver()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.startHTTP(t))
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	t.Setenv("OTEL_SDK_DISABLED", "")
	tel, err := Setup(t.Context(), Config{ServiceName: "storegate"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	if got := tel.Traces(); got != "otlp sampler AlwaysOnSampler" {
		t.Errorf("Traces() = %q", got)
	}
	client := healthServer(t, tel)
	if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	_, service := rcv.waitSpan(t, "server", func(s *tracepb.Span) bool {
		return s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.Name == checkMethod
	})
	if service != "from-env" {
		t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's from-env", service)
	}

	t.Setenv("OTEL_SDK_DISABLED", "true")
	off, err := Setup(t.Context(), Config{ServiceName: "storegate"})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Shutdown(context.Background())
	if off.Traces() != "none" || off.sdkTracer != nil {
		t.Errorf("OTEL_SDK_DISABLED=true: traces %s", off.Traces())
	}
}
