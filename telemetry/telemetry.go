package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
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
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.yaml.in/yaml/v3"
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

// UnmarshalYAML parses an exporter from configuration ("none", "otlp",
// "stdout"); a bad value is reported with its line as a *yaml.TypeError,
// so decoding goes on and every problem of the file is reported at once.
func (e *Exporter) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseExporter(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: exporter %q is not none, otlp or stdout", n.Line, n.Value)}}
	}
	*e = v
	return nil
}

// MarshalText spells the exporter as ParseExporter reads it.
func (e Exporter) MarshalText() ([]byte, error) {
	if e > ExporterStdout {
		return nil, fmt.Errorf("telemetry: invalid %v", e)
	}
	return []byte(e.String()), nil
}

// ValidSampling reports whether r is a sampling ratio, in [0, 1].
func ValidSampling(r float64) bool { return r >= 0 && r <= 1 } // false for NaN

// DefaultSampling is the ratio of root spans kept when neither the
// configuration nor OTEL_TRACES_SAMPLER says: one in a hundred, as etcd
// calls are many and small.
const DefaultSampling = 0.01

// Config says what to export. The zero Config leaves traces to the OTEL_*
// environment (none when it says nothing either) and serves metrics.
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
	Traces     TracesConfig
	// Getenv reads the OTEL_* environment; nil is os.Getenv. (The OTLP
	// exporters read their OTEL_EXPORTER_OTLP_* variables from the process
	// environment whatever it is.)
	Getenv func(string) string
}

// TracesConfig is what the configuration file says about spans. A nil field
// says nothing, and the OTEL_* environment decides (see the package doc for
// the order).
type TracesConfig struct {
	// Exporter is where spans go; nil: OTEL_TRACES_EXPORTER, else none.
	Exporter *Exporter
	// Sampling is the ratio of root spans kept, in [0, 1]; spans whose
	// parent is sampled are always kept (parent-based sampling). Nil:
	// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else
	// DefaultSampling, parent-based.
	Sampling *float64
}

// The OTEL_* variables Setup reads itself, as the OTel SDK environment
// specification defines them.
const (
	envSDKDisabled    = "OTEL_SDK_DISABLED"
	envTracesExporter = "OTEL_TRACES_EXPORTER"
	envSampler        = "OTEL_TRACES_SAMPLER"
	envSamplerArg     = "OTEL_TRACES_SAMPLER_ARG"
)

// tracesPlan is what Setup builds for traces: the exporters (none: no
// spans are recorded) and the sampler.
type tracesPlan struct {
	exporters []Exporter
	sampler   sdktrace.Sampler
}

func (p tracesPlan) String() string {
	if len(p.exporters) == 0 {
		return "none"
	}
	names := make([]string, len(p.exporters))
	for i, e := range p.exporters {
		names[i] = e.String()
	}
	return strings.Join(names, ",") + " sampler " + p.sampler.Description()
}

// resolveTraces decides the exporters and the sampler: OTEL_SDK_DISABLED=true
// turns spans off; otherwise each of the two is the configuration's when it
// says, else the environment's, else none and DefaultSampling parent-based.
// A variable the specification does not define a value for is an error, so
// that a typo cannot silently sample everything (the SDK would fall back to
// parentbased_always_on) or nothing.
func resolveTraces(c TracesConfig, getenv func(string) string) (tracesPlan, error) {
	var p tracesPlan
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	switch v := strings.ToLower(env(envSDKDisabled)); v {
	case "true":
		return p, nil
	case "", "false":
	default:
		return p, fmt.Errorf("telemetry: %s=%q: want true or false", envSDKDisabled, v)
	}

	switch v := env(envTracesExporter); {
	case c.Exporter != nil:
		if *c.Exporter > ExporterStdout {
			return p, fmt.Errorf("telemetry: unknown trace exporter %v", *c.Exporter)
		}
		if *c.Exporter != ExporterNone {
			p.exporters = []Exporter{*c.Exporter}
		}
	case v != "":
		var err error
		if p.exporters, err = parseEnvExporters(v); err != nil {
			return p, err
		}
	}

	switch v := strings.ToLower(env(envSampler)); {
	case c.Sampling != nil:
		if !ValidSampling(*c.Sampling) {
			return p, fmt.Errorf("telemetry: sampling %v is not a ratio in [0, 1]", *c.Sampling)
		}
		p.sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*c.Sampling))
	case v != "":
		var err error
		if p.sampler, err = parseEnvSampler(v, env(envSamplerArg)); err != nil {
			return p, err
		}
	default:
		p.sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(DefaultSampling))
	}
	return p, nil
}

// parseEnvExporters reads OTEL_TRACES_EXPORTER: a comma-separated list of
// otlp and console, or none.
func parseEnvExporters(v string) ([]Exporter, error) {
	var out []Exporter
	none := false
	for _, name := range strings.Split(v, ",") {
		var e Exporter
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "otlp":
			e = ExporterOTLP
		case "console":
			e = ExporterStdout
		case "none":
			none = true
			continue
		default:
			return nil, fmt.Errorf("telemetry: %s=%q: %q is not otlp, console or none "+
				"(set telemetry.traces.exporter in the configuration to override it)", envTracesExporter, v, name)
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	if none && len(out) > 0 {
		return nil, fmt.Errorf("telemetry: %s=%q: none cannot be combined with exporters", envTracesExporter, v)
	}
	return out, nil
}

// parseEnvSampler reads OTEL_TRACES_SAMPLER and its argument, the ratio of
// the traceidratio samplers (default 1.0, as the specification says).
func parseEnvSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || !ValidSampling(r) {
			return 0, fmt.Errorf("telemetry: %s=%q is not a ratio in [0, 1]", envSamplerArg, arg)
		}
		return r, nil
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.TraceIDRatioBased(r), nil
	case "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("telemetry: %s=%q is not always_on, always_off, traceidratio, parentbased_always_on, "+
		"parentbased_always_off or parentbased_traceidratio "+
		"(set telemetry.traces.sampling in the configuration to override it)", envSampler, name)
}

// Telemetry holds the providers Setup made. Shutdown flushes and stops them.
type Telemetry struct {
	tracer     trace.TracerProvider
	sdkTracer  *sdktrace.TracerProvider // nil when no spans are exported
	traces     tracesPlan
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
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	plan, err := resolveTraces(cfg.Traces, getenv)
	if err != nil {
		return nil, err
	}
	res, err := newResource(ctx, cfg.ServiceName)
	if err != nil {
		return nil, err
	}
	t := &Telemetry{
		tracer:     noop.NewTracerProvider(),
		traces:     plan,
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		registry:   prometheus.NewRegistry(),
	}

	if len(plan.exporters) > 0 {
		opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(plan.sampler)}
		for _, e := range plan.exporters {
			exp, err := newSpanExporter(ctx, e, getenv)
			if err != nil {
				return nil, err
			}
			opts = append(opts, sdktrace.WithBatcher(exp))
		}
		t.sdkTracer = sdktrace.NewTracerProvider(opts...)
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

func newSpanExporter(ctx context.Context, e Exporter, getenv func(string) string) (sdktrace.SpanExporter, error) {
	switch e {
	case ExporterStdout:
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
		if err != nil {
			return nil, fmt.Errorf("telemetry: stdout exporter: %w", err)
		}
		return exp, nil
	case ExporterOTLP:
		protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if protocol == "" {
			protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
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

// Traces describes what Setup made of the configuration and the
// environment, for the startup log: "none", or the exporters and the
// sampler ("otlp sampler ParentBased{...}").
func (t *Telemetry) Traces() string { return t.traces.String() }

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
		grpc.StatsHandler(otelgrpc.NewServerHandler(t.handlerOptions(t.meter)...)),
		grpc.ChainUnaryInterceptor(t.metrics.unaryServer),
		grpc.ChainStreamInterceptor(t.metrics.streamServer),
	}
}

// DialOptions trace every RPC a gRPC client sends, and send the current
// trace context with it; unary calls are timed (stage upstream) and
// failures counted as upstream errors. otelgrpc's own client metrics are
// left out: they would time the same calls again (storegate_stage_duration
// with stage upstream, storegate_upstream_errors_total), at a cost the
// profile showed on every forwarded request.
func (t *Telemetry) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.handlerOptions(noopmetric.NewMeterProvider())...)),
		grpc.WithChainUnaryInterceptor(t.metrics.unaryClient),
		grpc.WithChainStreamInterceptor(t.metrics.streamClient),
	}
}

func (t *Telemetry) handlerOptions(meter metric.MeterProvider) []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tracer),
		otelgrpc.WithMeterProvider(meter),
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
