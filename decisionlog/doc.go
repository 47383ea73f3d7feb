// Package decisionlog is the gateway's audit log of policy decisions: one
// JSON object per line for every decision the gate takes in Check, written
// to stdout, stderr or a size-rotated file. A *Log is a gate.Observer.
//
// # What a line holds
//
// Every line has time (the decision's start, UTC, RFC 3339 with nine
// fractional digits, so lines sort as text), decision_id (32 lowercase hex
// characters, random, unique per line), caller (the SPIFFE ID), protocol,
// method, resource, action, result ("allow", "deny" or "filter") and
// duration_us (the policy evaluation time in whole microseconds). The other
// fields appear only when they say something:
//
//   - key, range_end: the op's key range, as text when it is valid UTF-8,
//     otherwise as key_base64, range_end_base64 (standard base64);
//   - value_size, lease, prev_kv, txn_index, session, datacenter;
//   - service: {"name", "id"} of a Consul service op;
//   - reason: why the op was denied; on an evaluation error it is "policy
//     evaluation failed" and error holds the error's text;
//   - shadow, shadow_reason: the policy denied (or would have filtered) but
//     runs in shadow mode, so the op proceeded and result is "allow"; the
//     policy's reason is in shadow_reason, not in reason, so that reason
//     always explains result;
//   - policy_revision: the policy version that decided;
//   - trace_id, span_id: the request's span, when the context carries a
//     sampled one (an unsampled trace is recorded nowhere), to join a line
//     to its trace.
//
// # Why it is built this way
//
//   - No values, ever. gate.Record carries only a value's size, and of a
//     service registration only its name and ID are logged: tags, meta and
//     address are registration content, which may hold secrets, and an
//     audit log is copied to more places, and kept longer, than the store.
//     Keys are logged: they are what policy decides on.
//   - One Write per line, under a mutex. A line is encoded into a pooled
//     buffer outside the lock and handed to the output in a single Write,
//     so concurrent requests never interleave their lines, and a line is
//     never split between two files by rotation (lumberjack rotates only
//     between Writes). Holding the lock only for the Write keeps requests
//     from queueing behind each other's encoding.
//   - A hand-written JSON encoder. The log runs on every request's path;
//     appending fields to a reused buffer costs no allocation on the common
//     path, where encoding/json would reflect over a struct per line. Every
//     string is escaped (quote, backslash, control characters and DEL), and
//     invalid UTF-8 in a string field is replaced by U+FFFD, so a line is
//     valid JSON whatever a caller put in a key, session or error text, and a
//     newline in a key cannot forge a second line.
//   - decision_id comes from math/rand/v2's top-level generator: the
//     runtime's per-thread ChaCha8, seeded from the operating system. It is
//     lock-free and needs no system call, and 128 bits of it do not collide
//     in practice. The ID names a line (to cite it in an incident, to
//     deduplicate after shipping); it is not a secret.
//   - Files rotate with gopkg.in/natefinch/lumberjack.v2 (MaxSizeMB,
//     MaxBackups, MaxAgeDays, Compress). Open creates the file (mode 0600,
//     parent directories 0700) and fails if it cannot, so a bad path stops
//     the gateway at startup instead of losing every line at run time.
//
// # When a line cannot be written
//
// The request still proceeds: Observe returns nothing, the decision the
// gate took stands, and Config.OnError is told (the gateway counts it in a
// metric). This is deliberate: a full disk or a closed pipe must not turn
// into an outage of every etcd and Consul client behind the gateway. The
// price is that decisions taken while the output fails are not audited. A
// deployment that must not lose audit records should write to a file on a
// reliable disk, with room to spare, and alert on the decision-log error
// metric; the log never fails closed by itself. Lines observed after Close
// are reported to OnError (as ErrClosed) and dropped.
//
// One exception is not this package's to handle: by Go's default, a write
// to stdout or stderr whose reader has gone (a broken pipe) kills the
// process with SIGPIPE. A gateway that logs to a pipe and must survive its
// reader should call signal.Notify for SIGPIPE (the write then fails with
// EPIPE, which goes to OnError), or log to a file.
package decisionlog
