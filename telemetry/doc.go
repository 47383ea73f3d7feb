// Package telemetry owns the gateway's OpenTelemetry setup: the tracer
// provider and its exporter (none, OTLP or stdout), the meter provider and
// the Prometheus registry behind /metrics, the W3C propagators, the gRPC
// stats handlers and the HTTP handler and transport (otelhttp) that trace
// every request the gateway serves and every call it sends upstream, and
// the gateway's own instruments (Metrics: decisions, stage latencies, open
// streams, policy reloads, upstream errors, plugin failures, SVID expiry).
//
// The spans of the gateway's own stages — storegate.authn and one
// storegate.policy per op — are made by the gate (gate.WithTracer) as
// children of the request's server span, and only when that span is
// recorded: an unsampled request pays for no span and no attribute. The
// gate hands every decision to Metrics (and to the decision log) through
// gate.Observer; Metrics caches one attribute set per label combination, so
// counting a decision allocates nothing.
//
// # Precedence
//
// For each of the two trace settings, the exporter and the sampler, the
// first of these that says something decides:
//
//  1. OTEL_SDK_DISABLED=true: no spans at all, whatever the file says (the
//     switch an operator flips without editing the file). /metrics is still
//     served: it belongs to the admin listener and is scraped, not exported.
//  2. The configuration file: telemetry.traces.exporter (none, otlp, stdout)
//     and telemetry.traces.sampling (a ratio, parent-based), each when set
//     (TracesConfig's non-nil fields).
//  3. The environment: OTEL_TRACES_EXPORTER (otlp, console, none, or a comma
//     list such as otlp,console) and OTEL_TRACES_SAMPLER (always_on,
//     always_off, traceidratio, parentbased_always_on,
//     parentbased_always_off, parentbased_traceidratio) with
//     OTEL_TRACES_SAMPLER_ARG (the ratio, default 1).
//  4. Neither: no spans exported, and roots sampled at DefaultSampling (1%),
//     parent-based.
//
// The resource comes from the SDK's own detectors: OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES (resource.WithFromEnv) override the configured
// service name "storegate". Where spans go (OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_INSECURE, their _TRACES_
// forms, OTEL_BSP_*) is read by the otlptrace exporters themselves; Setup
// reads only OTEL_EXPORTER_OTLP_PROTOCOL (or its _TRACES_ form) to choose
// the gRPC or the http/protobuf exporter (http/protobuf, the
// specification's default, when unset).
//
// # Why it is built this way
//
//   - OpenTelemetry's environment works alone (see Precedence), and the
//     file wins where it says something: an OTel-instrumented fleet is
//     configured by OTEL_* variables, and a gateway started with only those
//     must trace as every other process does. A value the specification does
//     not define (OTEL_TRACES_SAMPLER=xray, a ratio of 2,
//     OTEL_SDK_DISABLED=yes) stops Setup with an error naming the variable,
//     where the SDK would log and fall back to parentbased_always_on: on a
//     gateway a typo must not turn 1% into 100%. The SDK's own sampler
//     parser is unexported, so Setup parses the six names itself and builds
//     the samplers with the SDK's constructors.
//   - Sampling is parent-based: a caller that sent a sampled traceparent gets
//     its trace continued whatever the ratio; root spans are kept at the
//     configured ratio (the gateway defaults to 0.01, as etcd calls are many
//     and small). OTEL_TRACES_SAMPLER may choose another sampler when the
//     file sets no ratio.
//   - With the "none" exporter the tracer provider is a no-op, not an SDK
//     without exporters: no span is recorded, yet a caller's traceparent
//     still reaches etcd unchanged, because the no-op tracer carries the
//     parent's span context.
//   - Metrics always exist, whatever the trace exporter: an OTel meter
//     provider whose only reader is the Prometheus exporter, on a registry
//     of its own (with the Go and process collectors) rather than
//     prometheus.DefaultRegisterer, so nothing a dependency registers
//     globally appears on /metrics, and tests can run several Telemetry side
//     by side.
//   - Stage latencies are one histogram, storegate_stage_duration_seconds,
//     with a stage label, and buckets from 5µs (a cached decision) to 10s.
//     Streams (watch, keep-alive) and Consul blocking queries are not timed
//     as "total" or "upstream": how long a client holds them open is not a
//     latency; open streams are a gauge instead.
//   - RPC spans and metrics come from otelgrpc's stats handlers, which follow
//     the OTel RPC semantic conventions (span name and rpc.method
//     "package.Service/Method", rpc.server.call.duration in seconds); the
//     gateway adds no interceptor of its own for them.
//   - Setup also installs its providers and propagator as the otel globals,
//     so code that uses only the otel API (otel.Tracer, otel.Meter) reports
//     through them; the stats handlers are given the providers explicitly.
package telemetry
