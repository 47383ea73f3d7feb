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
// # Why it is built this way
//
//   - Configuration is split. The config file says only what is a deployment
//     decision of the gateway: which exporter and how much to sample. Where
//     spans go (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
//     OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_INSECURE, their
//     _TRACES_ forms, OTEL_BSP_*) and what the service is called
//     (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) come from the standard
//     OTEL_* environment variables, as every OTel-instrumented process reads
//     them. The OTLP protocol defaults to http/protobuf, the specification's
//     default.
//   - Sampling is parent-based: a caller that sent a sampled traceparent gets
//     its trace continued whatever the ratio; root spans are kept at the
//     configured ratio (the gateway defaults to 0.01, as etcd calls are many
//     and small).
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
