// Package telemetry owns the gateway's OpenTelemetry setup: the tracer
// provider and its exporter (none, OTLP or stdout), the meter provider and
// the Prometheus registry behind /metrics, the W3C propagators, and the gRPC
// stats handlers that trace and count every RPC the gateway serves and every
// RPC it sends upstream.
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
//   - RPC spans and metrics come from otelgrpc's stats handlers, which follow
//     the OTel RPC semantic conventions (span name and rpc.method
//     "package.Service/Method", rpc.server.call.duration in seconds); the
//     gateway adds no interceptor of its own for them.
//   - Setup also installs its providers and propagator as the otel globals,
//     so code that uses only the otel API (otel.Tracer, otel.Meter) reports
//     through them; the stats handlers are given the providers explicitly.
package telemetry
