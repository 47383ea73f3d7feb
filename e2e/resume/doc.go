// Package resume holds end-to-end tests of what callers keep across faults
// the tests inject themselves: client/v3 watches that resume from their
// revision, lease keep-alives and concurrency sessions, through HAProxy
// in front of gateway replicas (the real binary) over a 3-member etcd of
// binaries, while a gateway is killed (kill -9) and restarted, the etcd
// leader is killed and restarted, and a member is stopped (SIGSTOP) past
// an election timeout.
package resume
