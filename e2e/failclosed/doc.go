// Package failclosed holds end-to-end tests of the gateway binary under
// faults (storegate issue 12, part 6): the policy directory broken or
// removed at run time, a plugin file truncated, an upstream that hangs
// (SIGSTOP). Each fault must give a clear error within a bounded time, and
// never a pass-through, a hang or leaked goroutines.
package failclosed
