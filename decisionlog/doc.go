// Package decisionlog is the gateway's audit log of policy decisions: one
// JSON object per line for every decision the gate takes in Check, written
// to stdout, stderr or a size-rotated file. A *Log is a gate.Auditor (and a
// gate.Observer): the gate denies an op whose line the log refuses.
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
// A line is at most MaxLineBytes (16 KiB), whatever the request: etcd and
// Consul take keys of a megabyte and more, and a log of such keys would
// cost the gateway and every log shipper behind it far more than the
// attacker who sends them. Each text field is cut, at a character boundary,
// to a limit on its encoded length (escapes and base64 count): 1 KiB for
// key, range_end, reason, error and shadow_reason, 2 KiB for caller, 256
// bytes for method, service name and id, session, datacenter and
// policy_revision. A cut field is followed by "<field>_truncated" holding
// the field's full length in bytes: a 1.5 MB key is logged as its first
// 1 KiB and "key_truncated":1572864. Nothing is appended to the value
// itself, so a cut key is a prefix of the key policy saw. A cut key is logged as text
// when the part kept is valid UTF-8, so key_base64 means that part is not.
//
// # Why it is built this way
//
//   - No values, ever. gate.Record carries only a value's size, and of a
//     service registration only its name and ID are logged: tags, meta and
//     address are registration content, which may hold secrets, and an
//     audit log is copied to more places, and kept longer, than the store.
//     Keys are logged: they are what policy decides on.
//   - Off the request path, through a bounded queue. Audit encodes the
//     line on the caller's goroutine (the record and its op are the
//     gate's, and may change once Audit returns), appends it to the queue
//     under a mutex held only for the copy, and returns; one writer
//     goroutine takes everything queued at once and writes it in Writes of
//     whole lines of at most 64 KiB. A request never waits for the disk, a
//     line is never interleaved with another or split between two files
//     (lumberjack rotates only between Writes), and a burst costs a few
//     syscalls rather than one per line. The queue is bounded both in lines
//     (Config.QueueSize, 4096) and in bytes (Config.QueueBytes, 8 MiB), a
//     line counting until it is written: the gateway's memory for the log is
//     bounded whatever the line sizes and however stuck the output.
//   - A failed write is retried, with a pause growing to a second, from
//     the first byte not written: a line the log took is the record of a
//     decision that went ahead, and is not given up while the log is open.
//     While writes fail, Audit refuses under on_error deny; the first write
//     that succeeds ends that.
//   - The writer paces itself to at most one file's worth (MaxSizeMB) per
//     2 ms. lumberjack names a rotated file after the rotation's time to
//     the millisecond; two rotations in one millisecond (a full queue
//     written at memory speed to small files) would rename the second file
//     onto the first backup and lose it.
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
// A line cannot be taken when the queue is full (the output is slower than
// the requests, or stuck), while the writer's last write failed (a full
// disk, a closed pipe), or after Close. Config.ErrorMode (on_error) says
// what then happens:
//
//   - deny (the default): Audit returns the error and the gate denies the
//     op; Refused counts them. The log is then a condition of every
//     decision: nothing goes ahead whose line the log has not taken,
//     because an attacker who can fill a queue or a disk (every denied
//     request writes a line too) must not thereby act unlogged. The price
//     is that a stuck or failing output is an outage of every etcd and
//     Consul client behind the gateway, until it recovers; alert on the
//     decision-log reports and keep the log on a reliable disk with room to
//     spare. A healthy output is not the weak point: the writer writes 64
//     KiB per syscall, far faster than the gateway decides, so only a slow
//     or stuck output fills the queue. (A taken line is lost only when Close
//     gives up on it.)
//   - drop: the line is dropped and counted (Dropped), the op proceeds,
//     and the decisions taken meanwhile are not audited.
//
// Observe, which cannot fail a request, drops under either mode. Either way
// Config.OnError (or, if nil, slog.Default()) is told, at once for the first
// failure and then at most every ReportInterval, with the counts so far.
// Close drains the queue, waiting at most Config.CloseTimeout (5 s); lines
// still queued then are counted as dropped and Close returns an error.
//
// One exception is not this package's to handle: by Go's default, a write
// to stdout or stderr whose reader has gone (a broken pipe) kills the
// process with SIGPIPE. A gateway that logs to a pipe and must survive its
// reader should call signal.Notify for SIGPIPE (the write then fails with
// EPIPE, which goes to OnError), or log to a file.
package decisionlog
