// Package policies holds the policy storegate ships: authz.rego, the
// intentions engine, and an example intentions.yaml. The policy loader reads
// only the directory's *.rego files and intentions.yaml; this Go file gives
// the policy package the shipped authz.rego, byte for byte, so that it can
// tell when the active policy is the shipped engine (and decide it with
// compiled intentions instead of Rego).
package policies

import _ "embed"

//go:embed authz.rego
var authzRego string

// AuthzRego returns the shipped authz.rego.
func AuthzRego() string { return authzRego }
