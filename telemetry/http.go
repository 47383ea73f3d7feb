package telemetry

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	noopmetric "go.opentelemetry.io/otel/metric/noop"

	"github.com/storegate/storegate/gate"
)

// HTTPHandler serves h with a server span per request that follows the
// OTel HTTP semantic conventions and continues the caller's W3C trace
// context, and times each request (stage total). Blocking queries (an
// index parameter) are not timed: how long Consul holds them is not a
// latency.
func (t *Telemetry) HTTPHandler(h http.Handler, proto gate.Protocol) http.Handler {
	timed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if blocking(r) {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		h.ServeHTTP(w, r)
		t.metrics.ObserveStage(r.Context(), proto, StageTotal, time.Since(start))
	})
	return otelhttp.NewHandler(timed, proto.String(),
		otelhttp.WithTracerProvider(t.tracer),
		otelhttp.WithMeterProvider(t.meter),
		otelhttp.WithPropagators(t.propagator),
		// Named "METHOD /route" once the front's mux has matched a route
		// (otelhttp renames the span after the handler with this), the
		// method alone before that or for an unknown route.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.Pattern != "" && r.Pattern != "/" {
				return r.Pattern
			}
			return r.Method
		}),
	)
}

// HTTPTransport wraps a transport to an upstream: a client span per call,
// the W3C trace context sent along (traceparent), the call timed (stage
// upstream) and failures counted as upstream errors (unreachable, or a 5xx
// answer). otelhttp's own client metrics are left out, as for gRPC
// (DialOptions).
func (t *Telemetry) HTTPTransport(rt http.RoundTripper, proto gate.Protocol) http.RoundTripper {
	traced := otelhttp.NewTransport(rt,
		otelhttp.WithTracerProvider(t.tracer),
		otelhttp.WithMeterProvider(noopmetric.NewMeterProvider()),
		otelhttp.WithPropagators(t.propagator),
	)
	return &upstreamTransport{rt: traced, m: t.metrics, proto: proto}
}

// blocking reports whether r is a Consul blocking query.
func blocking(r *http.Request) bool {
	return strings.Contains(r.URL.RawQuery, "index=") && r.URL.Query().Has("index")
}

type upstreamTransport struct {
	rt    http.RoundTripper
	m     *Metrics
	proto gate.Protocol
}

func (u *upstreamTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := u.rt.RoundTrip(r)
	ctx := r.Context()
	if !blocking(r) {
		u.m.ObserveStage(ctx, u.proto, StageUpstream, time.Since(start))
	}
	switch {
	case err != nil && ctx.Err() == nil:
		u.m.UpstreamError(ctx, u.proto, "unreachable")
	case err == nil && resp.StatusCode >= 500:
		u.m.UpstreamError(ctx, u.proto, strconv.Itoa(resp.StatusCode))
	}
	return resp, err
}
