package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
)

// Exporter says where spans go.
type Exporter uint8

const (
	// ExporterNone records no spans; incoming trace context still
	// propagates upstream.
	ExporterNone Exporter = iota
	// ExporterOTLP sends spans over OTLP; protocol, endpoint, headers and
	// TLS come from the OTEL_EXPORTER_OTLP_* environment variables.
	ExporterOTLP
	// ExporterStdout writes spans as JSON to standard output (development).
	ExporterStdout
)

func (e Exporter) String() string {
	switch e {
	case ExporterNone:
		return "none"
	case ExporterOTLP:
		return "otlp"
	case ExporterStdout:
		return "stdout"
	}
	return fmt.Sprintf("exporter(%d)", uint8(e))
}

// ParseExporter parses "none" (or "", the default), "otlp" or "stdout".
func ParseExporter(s string) (Exporter, error) {
	switch s {
	case "", "none":
		return ExporterNone, nil
	case "otlp":
		return ExporterOTLP, nil
	case "stdout":
		return ExporterStdout, nil
	}
	return 0, fmt.Errorf("telemetry: unknown trace exporter %q (want none, otlp or stdout)", s)
}

// ValidSampling reports whether r is a sampling ratio, in [0, 1].
func ValidSampling(r float64) bool { return r >= 0 && r <= 1 } // false for NaN

// Config says what to export. The zero Config exports no spans and serves
// metrics.
type Config struct {
	// ServiceName is the resource's service.name; OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES override it.
	ServiceName string
	// Logger, if not nil, receives the errors OTel cannot return to a
	// caller (failed exports, dropped spans).
	Logger *slog.Logger
	// SVIDExpiry, if not nil, reports the gateway's current SVID's NotAfter
	// (storegate_svid_expiry_timestamp_seconds).
	SVIDExpiry func() (time.Time, bool)
	Traces     struct {
		Exporter Exporter
		// Sampling is the ratio of root spans kept, in [0, 1]; spans whose
		// parent is sampled are always kept (parent-based sampling).
		Sampling float64
	}
}

// Telemetry holds the providers Setup made. Shutdown flushes and stops them.
type Telemetry struct {
	tracer     trace.TracerProvider
	sdkTracer  *sdktrace.TracerProvider // nil for ExporterNone
	meter      *sdkmetric.MeterProvider
	propagator propagation.TextMapPropagator
	registry   *prometheus.Registry
	metrics    *Metrics
}

// Setup builds the tracer and meter providers described by cfg and the
// environment's OTEL_* variables, and installs them and the W3C
// tracecontext and baggage propagators (and cfg.Logger as the error
// handler) as the otel globals.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	if !ValidSampling(cfg.Traces.Sampling) {
		return nil, fmt.Errorf("telemetry: sampling %v is not a ratio in [0, 1]", cfg.Traces.Sampling)
	}
	res, err := newResource(ctx, cfg.ServiceName)
	if err != nil {
		return nil, err
	}
	t := &Telemetry{
		tracer:     noop.NewTracerProvider(),
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		registry:   prometheus.NewRegistry(),
	}

	if cfg.Traces.Exporter != ExporterNone {
		exp, err := newSpanExporter(ctx, cfg.Traces.Exporter)
		if err != nil {
			return nil, err
		}
		t.sdkTracer = sdktrace.NewTracerProvider(
			sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Traces.Sampling))),
			sdktrace.WithBatcher(exp),
		)
		t.tracer = t.sdkTracer
	}

	t.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reader, err := otelprom.New(otelprom.WithRegisterer(t.registry))
	if err != nil {
		t.shutdownTracer(ctx)
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	t.meter = sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
	if t.metrics, err = NewMetrics(t.meter, cfg.SVIDExpiry); err != nil {
		t.shutdownTracer(ctx)
		return nil, fmt.Errorf("telemetry: metrics: %w", err)
	}

	otel.SetTracerProvider(t.tracer)
	otel.SetMeterProvider(t.meter)
	otel.SetTextMapPropagator(t.propagator)
	if log := cfg.Logger; log != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("telemetry", "err", err) }))
	}
	return t, nil
}

func newResource(ctx context.Context, service string) (*resource.Resource, error) {
	opts := []resource.Option{resource.WithTelemetrySDK()}
	if service != "" {
		opts = append(opts, resource.WithAttributes(semconv.ServiceName(service)))
	}
	// Later options win: the environment overrides the configured name.
	opts = append(opts, resource.WithFromEnv())
	res, err := resource.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

func newSpanExporter(ctx context.Context, e Exporter) (sdktrace.SpanExporter, error) {
	switch e {
	case ExporterStdout:
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
		if err != nil {
			return nil, fmt.Errorf("telemetry: stdout exporter: %w", err)
		}
		return exp, nil
	case ExporterOTLP:
		protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if protocol == "" {
			protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		var (
			exp sdktrace.SpanExporter
			err error
		)
		switch protocol {
		case "", "http/protobuf":
			exp, err = otlptracehttp.New(ctx)
		case "grpc":
			exp, err = otlptracegrpc.New(ctx)
		default:
			return nil, fmt.Errorf("telemetry: OTLP protocol %q is not supported (want grpc or http/protobuf)", protocol)
		}
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("telemetry: unknown trace exporter %v", e)
}

// TracerProvider returns the tracer provider (a no-op one when no spans are
// exported).
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tracer }

// MeterProvider returns the meter provider whose metrics /metrics serves.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meter }

// Metrics returns the gateway's own instruments.
func (t *Telemetry) Metrics() *Metrics { return t.metrics }

// Tracer returns the tracer the gateway's own spans (authn, policy,
// plugins) are made with.
func (t *Telemetry) Tracer() trace.Tracer { return t.tracer.Tracer("github.com/storegate/storegate") }

// ServerOptions trace and count every RPC a gRPC server serves, continuing
// the caller's trace context, time unary calls (stage total) and count
// open streams.
func (t *Telemetry) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(t.handlerOptions()...)),
		grpc.ChainUnaryInterceptor(t.metrics.unaryServer),
		grpc.ChainStreamInterceptor(t.metrics.streamServer),
	}
}

// DialOptions trace and count every RPC a gRPC client sends, and send the
// current trace context with it; unary calls are timed (stage upstream)
// and failures counted as upstream errors.
func (t *Telemetry) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.handlerOptions()...)),
		grpc.WithChainUnaryInterceptor(t.metrics.unaryClient),
		grpc.WithChainStreamInterceptor(t.metrics.streamClient),
	}
}

func (t *Telemetry) handlerOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tracer),
		otelgrpc.WithMeterProvider(t.meter),
		otelgrpc.WithPropagators(t.propagator),
	}
}

// MetricsHandler serves the metrics in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown exports the spans still buffered and stops the providers. It
// waits until ctx is done at most.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	err := t.shutdownTracer(ctx)
	if merr := t.meter.Shutdown(ctx); merr != nil {
		err = errors.Join(err, fmt.Errorf("telemetry: metrics: %w", merr))
	}
	return err
}

func (t *Telemetry) shutdownTracer(ctx context.Context) error {
	if t.sdkTracer == nil {
		return nil
	}
	if err := t.sdkTracer.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: traces: %w", err)
	}
	return nil
}
