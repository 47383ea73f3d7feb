// Package policy owns storegate's OPA engine: it loads a policy directory
// (Rego modules and the intentions in intentions.yaml, which it compiles into
// a generated Rego module), prepares the queries once per loaded version,
// evaluates them per op, swaps versions atomically when the files change
// (keeping the last good version when a reload fails), and runs in enforce or
// shadow mode. It also runs the directory's _test.rego files with OPA's own
// test runner.
//
// Instead of a directory the policy may come from signed OPA bundles served
// over HTTP(S) (BundleConfig): fetched with OPA's downloader (ETag polling),
// verified with OPA's bundle reader against the configured key, turned into
// the same source a directory gives (Rego modules and data.intentions), and
// persisted so that a restart with the bundle server down starts from the
// last good one. Build writes such bundles as `opa build --signing-key`
// does.
//
// The contract with the Rego side is small: the engine queries
// data.storegate.authz.allow for every op and, only when that is not true,
// data.storegate.authz.reason and (for multi-key reads and watches)
// data.storegate.authz.filter. The input document is built by [Input].
// Anything but a boolean true denies, and so does every evaluation error.
//
// See RATIONALE.md for why intentions are compiled into rules instead of
// being iterated over as data.
package policy
