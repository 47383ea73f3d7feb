// Package helm holds the tests of the storegate Helm chart in ./storegate:
// `helm lint --strict` and `helm template` over the value sets in testdata,
// strict decoding of every rendered object into its k8s.io/api type, and the
// properties a release must have (probes, drain timing, disruption budget,
// autoscaling, the Workload API socket, the security context, a config file
// the gateway accepts, a policy the gateway loads). See chart_test.go.
package helm
