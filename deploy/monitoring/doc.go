// Package monitoring checks what deploy/ ships for watching storegate: the
// Grafana dashboard (deploy/grafana/storegate.json) and the Prometheus
// alerting rules (deploy/prometheus/alerts.yaml).
//
// Each file is read by a real parser: the rules by Prometheus' own rule
// loader (model/rulefmt, which parses every expression with the PromQL
// parser), the dashboard strictly by the Grafana Foundation SDK's dashboard
// model (unknown fields and missing required ones are errors) and each of
// its queries, once Grafana's variables are substituted, by the PromQL
// parser. Then every metric and label a query names is checked against
// what a gateway's /metrics exports (Exports.Check): a query that names a
// metric the gateway does not export, or groups or matches by a label the
// metric does not carry, never shows anything and never fires, so it is
// refused with the panel or alert that holds it.
//
// The module is separate from the gateway's so that Prometheus and the
// SDK, with their dependencies, stay out of the gateway's go.mod; it may
// import the gateway's internal/testenv because its path lies under the
// gateway's.
package monitoring
