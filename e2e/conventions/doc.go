// Package conventions holds the end-to-end tests of the conventions
// operators bring from the tools around the gateway: a real gateway that
// traces with OpenTelemetry's environment alone (no telemetry: section) to
// a real OTLP receiver, and one whose identity and upstream client keys are
// openssl's SEC1 and PKCS#1 files. It has no code outside its tests.
package conventions
