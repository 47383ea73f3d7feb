// Package bundle holds end-to-end tests of policy from signed OPA bundles
// across gateway replicas: a real HTTP bundle server on loopback (ETags,
// counted requests), three real gateway binaries in front of a real etcd,
// bundles built and signed by `gateway policy build`'s code. A revision
// rolls out to every replica (their /status and storegate_policy_info
// agree, and a write only the new revision allows flips on each), a
// tampered bundle and one signed with another key are refused by all, a
// replica restarted while the server is down serves its persisted bundle,
// and a fresh one with nothing persisted stays unready and denies. SIGHUP
// reloads a directory policy and identity files where no file event
// arrives.
package bundle
