package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// PolicySource is what a replica enforces: the policy's revision and where
// it comes from (the policy directory or the bundle URL).
type PolicySource func() (revision, source string)

// RegisterPolicyInfo adds storegate_policy_info{revision,source} to mp's
// metrics: 1, labelled with what current returns when /metrics is
// scraped. It is always exactly one series (an observable gauge reports
// only what its callback observed), so that a dashboard counts replicas
// per revision and an alert sees a fleet on more than one — the "info"
// metric pattern of Prometheus' own build_info.
func RegisterPolicyInfo(mp metric.MeterProvider, current PolicySource) error {
	meter := mp.Meter("github.com/storegate/storegate")
	_, err := meter.Int64ObservableGauge("storegate.policy.info",
		metric.WithDescription("The policy this replica enforces: 1, labelled with its revision and source (policy directory or bundle URL); revision \"none\" while no policy is loaded."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			rev, src := current()
			o.Observe(1, metric.WithAttributes(attribute.String("revision", rev), attribute.String("source", src)))
			return nil
		}))
	return err
}
