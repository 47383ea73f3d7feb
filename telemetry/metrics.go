package telemetry

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/storegate/storegate/gate"
)

// The stages a front times besides those the gate times itself.
const (
	StageAuthn    = gate.StageAuthn
	StagePolicy   = gate.StagePolicy
	StagePlugin   = gate.StagePlugin
	StageUpstream = gate.StageUpstream
	StageTotal    = gate.StageTotal
)

// Metrics are the gateway's own instruments, on the meter provider whose
// metrics /metrics serves. Prometheus names (the OTel exporter adds the
// unit and _total suffixes):
//
//	storegate_decisions_total{protocol,resource,action,decision}
//	storegate_stage_duration_seconds{protocol,stage}            histogram
//	storegate_streams_open{protocol,method}                      watch, keep-alive, ... streams now open
//	storegate_policy_reloads_total{outcome="success"|"failure"}
//	storegate_policy_last_reload_successful                      1 unless the last reload failed (then 0)
//	storegate_upstream_errors_total{protocol,code}
//	storegate_plugin_failures_total{plugin,kind}
//	storegate_svid_expiry_timestamp_seconds                      the gateway's SVID's NotAfter
//
// The counters alerts watch for a first failure start at 0 for their known
// label values: both reload outcomes from NewMetrics, and every plugin and
// failure kind from InitPlugins. A series that first appears at 1 has no
// increase for rate() and increase(), so without its 0 the first failure
// of a replica would never alert (deploy/prometheus/alerts.yaml).
// Upstream error codes are not known in advance; their alert waits for a
// sustained rate instead.
//
// Every method is safe for concurrent use and allocates nothing once the
// label combination has been seen.
type Metrics struct {
	decisions      metric.Int64Counter
	stages         metric.Float64Histogram
	streams        metric.Int64UpDownCounter
	reloads        metric.Int64Counter
	lastReload     metric.Int64Gauge
	upstreamErrors metric.Int64Counter
	pluginFailures metric.Int64Counter

	// The measurement option of each label set, built once per kind of
	// label set: every request looks up several, so the look-up takes no
	// lock and boxes no key.
	decisionOpts options[decisionKey]
	stageOpts    options[stageKey]
	streamOpts   options[streamKey]
	reloadOpts   options[reloadKey]
	upstreamOpts options[upstreamKey]
	pluginOpts   options[pluginKey]
}

// options maps label sets to their measurement option: an immutable map
// read without a lock, replaced by a copy with one more entry when a label
// set is first seen (the sets are few and known early).
type options[K labelSet] struct {
	m  atomic.Pointer[map[K]measurement]
	mu sync.Mutex // serializes the copies
}

// labelSet is a key of options: the labels of one series.
type labelSet interface {
	comparable
	attrs() []attribute.KeyValue
}

// measurement is the option of one label set as the instruments' variadic
// arguments: passing these slices allocates nothing, where a slice made at
// each call would escape into the SDK.
type measurement struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

// get returns the options for key, built the first time it is asked for.
func (o *options[K]) get(key K) measurement {
	if m := o.m.Load(); m != nil {
		if opt, ok := (*m)[key]; ok {
			return opt
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	old := o.m.Load()
	if old != nil {
		if opt, ok := (*old)[key]; ok {
			return opt
		}
	}
	mo := metric.WithAttributeSet(attribute.NewSet(key.attrs()...))
	opt := measurement{add: []metric.AddOption{mo}, rec: []metric.RecordOption{mo}}
	m := make(map[K]measurement, 1+lenOf(old))
	if old != nil {
		maps.Copy(m, *old)
	}
	m[key] = opt
	o.m.Store(&m)
	return opt
}

func lenOf[M ~map[K]V, K comparable, V any](m *M) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// stageBuckets span a cached decision (~1µs) to a slow upstream (10s).
var stageBuckets = []float64{0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
	0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewMetrics creates the instruments on mp. expiry, if not nil, reports
// the current SVID's NotAfter for the certificate expiry gauge.
func NewMetrics(mp metric.MeterProvider, expiry func() (time.Time, bool)) (*Metrics, error) {
	m := &Metrics{}
	meter := mp.Meter("github.com/storegate/storegate")
	var err error
	if m.decisions, err = meter.Int64Counter("storegate.decisions",
		metric.WithDescription("Policy decisions on requested operations, by protocol, resource, action and decision.")); err != nil {
		return nil, err
	}
	if m.stages, err = meter.Float64Histogram("storegate.stage.duration", metric.WithUnit("s"),
		metric.WithDescription("Latency of each stage of the request path: authn, policy (per op), plugin, upstream, total."),
		metric.WithExplicitBucketBoundaries(stageBuckets...)); err != nil {
		return nil, err
	}
	if m.streams, err = meter.Int64UpDownCounter("storegate.streams.open",
		metric.WithDescription("Long-lived streams (watch, lease keep-alive, snapshot, ...) open now, by method.")); err != nil {
		return nil, err
	}
	if m.reloads, err = meter.Int64Counter("storegate.policy.reloads",
		metric.WithDescription("Policy reloads, by outcome (a failed reload keeps the last good policy).")); err != nil {
		return nil, err
	}
	if m.lastReload, err = meter.Int64Gauge("storegate.policy.last_reload_successful",
		metric.WithDescription("1 unless the last policy reload failed, 0 while it has: the replica enforces an older policy than its source holds.")); err != nil {
		return nil, err
	}
	if m.upstreamErrors, err = meter.Int64Counter("storegate.upstream.errors",
		metric.WithDescription("Forwarded calls that failed in the upstream or on the way to it, by protocol and code.")); err != nil {
		return nil, err
	}
	if m.pluginFailures, err = meter.Int64Counter("storegate.plugin.failures",
		metric.WithDescription("Plugin calls that failed, by plugin and kind (trap, timeout, memory, malformed, abi, busy).")); err != nil {
		return nil, err
	}
	for _, ok := range []reloadKey{true, false} {
		m.reloads.Add(context.Background(), 0, m.reloadOption(ok)...)
	}
	m.lastReload.Record(context.Background(), 1)
	if expiry != nil {
		if _, err = meter.Int64ObservableGauge("storegate.svid.expiry_timestamp", metric.WithUnit("s"),
			metric.WithDescription("When the gateway's own X.509-SVID expires, as a Unix time."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				if t, ok := expiry(); ok {
					o.Observe(t.Unix())
				}
				return nil
			})); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type decisionKey struct {
	proto    gate.Protocol
	resource gate.Resource
	action   gate.Action
	result   gate.Effect
}

// Observe counts one decision and times its evaluation (gate.Observer).
func (m *Metrics) Observe(ctx context.Context, rec *gate.Record) {
	k := decisionKey{rec.Op.Protocol, rec.Op.Resource, rec.Op.Action, rec.Result()}
	m.decisions.Add(ctx, 1, m.decisionOpts.get(k).add...)
	m.ObserveStage(ctx, rec.Op.Protocol, StagePolicy, rec.Duration)
}

func (k decisionKey) attrs() []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("protocol", k.proto.String()), attribute.String("resource", k.resource.String()),
		attribute.String("action", k.action.String()), attribute.String("decision", k.result.String())}
}

type stageKey struct {
	proto gate.Protocol
	stage gate.Stage
}

// ObserveStage records how long one stage took.
func (m *Metrics) ObserveStage(ctx context.Context, proto gate.Protocol, stage gate.Stage, d time.Duration) {
	m.stages.Record(ctx, d.Seconds(), m.stageOpts.get(stageKey{proto, stage}).rec...)
}

func (k stageKey) attrs() []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("protocol", k.proto.String()), attribute.String("stage", string(k.stage))}
}

type streamKey struct {
	proto  gate.Protocol
	method string
}

// StreamOpened counts a long-lived stream as open until StreamClosed.
func (m *Metrics) StreamOpened(ctx context.Context, proto gate.Protocol, method string) {
	m.streams.Add(ctx, 1, m.streamOption(proto, method)...)
}

// StreamClosed ends what StreamOpened counted.
func (m *Metrics) StreamClosed(ctx context.Context, proto gate.Protocol, method string) {
	m.streams.Add(ctx, -1, m.streamOption(proto, method)...)
}

func (m *Metrics) streamOption(proto gate.Protocol, method string) []metric.AddOption {
	return m.streamOpts.get(streamKey{proto, method}).add
}

func (k streamKey) attrs() []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("protocol", k.proto.String()), attribute.String("method", k.method)}
}

type reloadKey bool

// PolicyReloaded counts a policy reload and its outcome, and sets
// storegate_policy_last_reload_successful to it: a counter tells that a
// reload failed in a window, the gauge that the policy is still stale
// (a bad file fails once and stays bad; Prometheus' own
// prometheus_config_last_reload_successful is the model).
func (m *Metrics) PolicyReloaded(err error) {
	m.reloads.Add(context.Background(), 1, m.reloadOption(err == nil)...)
	var ok int64
	if err == nil {
		ok = 1
	}
	m.lastReload.Record(context.Background(), ok)
}

func (m *Metrics) reloadOption(ok reloadKey) []metric.AddOption {
	return m.reloadOpts.get(ok).add
}

func (ok reloadKey) attrs() []attribute.KeyValue {
	if ok {
		return []attribute.KeyValue{attribute.String("outcome", "success")}
	}
	return []attribute.KeyValue{attribute.String("outcome", "failure")}
}

type upstreamKey struct {
	proto gate.Protocol
	code  string
}

// UpstreamError counts a forwarded call that failed: code is the gRPC code
// name or the HTTP status, or "unreachable".
func (m *Metrics) UpstreamError(ctx context.Context, proto gate.Protocol, code string) {
	m.upstreamErrors.Add(ctx, 1, m.upstreamOpts.get(upstreamKey{proto, code}).add...)
}

func (k upstreamKey) attrs() []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("protocol", k.proto.String()), attribute.String("code", k.code)}
}

type pluginKey struct{ plugin, kind string }

// PluginFailed counts a failed plugin call by plugin and kind.
func (m *Metrics) PluginFailed(ctx context.Context, plugin, kind string) {
	m.pluginFailures.Add(ctx, 1, m.pluginOption(plugin, kind)...)
}

// InitPlugins starts storegate_plugin_failures_total at 0 for each of the
// configured plugins and each failure kind (the String of every
// plugins.FailureKind), so that a plugin's first failure is an increase.
// The gateway calls it once its plugins are configured; calling it again
// changes no count.
func (m *Metrics) InitPlugins(names, kinds []string) {
	for _, p := range names {
		for _, k := range kinds {
			m.pluginFailures.Add(context.Background(), 0, m.pluginOption(p, k)...)
		}
	}
}

func (m *Metrics) pluginOption(plugin, kind string) []metric.AddOption {
	return m.pluginOpts.get(pluginKey{plugin, kind}).add
}

func (k pluginKey) attrs() []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("plugin", k.plugin), attribute.String("kind", k.kind)}
}
