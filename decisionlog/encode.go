package decisionlog

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
)

// timeFormat is RFC 3339 with a fixed nine-digit fraction, so that lines
// of one file sort by time as text.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// evalFailed is the reason logged when policy evaluation failed.
const evalFailed = "policy evaluation failed"

// Limits on what one field may add to a line, in encoded bytes (after
// escaping or base64, without the quotes). A value cut to its limit is
// followed by a field "<name>_truncated" holding its full length in bytes,
// so a line stays under MaxLineBytes whatever a caller sends (etcd and
// Consul take keys of a megabyte and more).
const (
	maxKeyLen    = 1024 // key, range_end
	maxTextLen   = 1024 // reason, error, shadow_reason
	maxCallerLen = 2048 // caller: a SPIFFE ID is at most 2048 bytes
	maxNameLen   = 256  // method, service name and id, session, datacenter, policy_revision
)

// MaxLineBytes bounds the size of one line, newline included: every field
// is bounded, text fields by the limits the package documentation lists
// (about 10 KiB together), the others by their type.
const MaxLineBytes = 16 << 10

// appendRecord appends rec as one JSON object and a newline.
func appendRecord(b []byte, ctx context.Context, rec *gate.Record) []byte {
	b = append(b, `{"time":"`...)
	b = appendTime(b, rec.Time)
	b = append(b, `","decision_id":"`...)
	b = appendID(b)
	b = append(b, '"')
	b = appendField(b, "caller", rec.Caller.String(), maxCallerLen)

	if op := rec.Op; op != nil {
		b = append(b, `,"protocol":`...)
		b = appendString(b, op.Protocol.String())
		b = appendField(b, "method", op.Method, maxNameLen)
		b = append(b, `,"resource":`...)
		b = appendString(b, op.Resource.String())
		b = append(b, `,"action":`...)
		b = appendString(b, op.Action.String())
		b = appendKey(b, "key", op.Keys.Key)
		b = appendKey(b, "range_end", op.Keys.End)
		if op.ValueSize > 0 {
			b = append(b, `,"value_size":`...)
			b = strconv.AppendInt(b, int64(op.ValueSize), 10)
		}
		if op.Lease != 0 {
			b = append(b, `,"lease":`...)
			b = strconv.AppendInt(b, op.Lease, 10)
		}
		if op.PrevKV {
			b = append(b, `,"prev_kv":true`...)
		}
		if op.TxnIndex > 0 {
			b = append(b, `,"txn_index":`...)
			b = strconv.AppendInt(b, int64(op.TxnIndex), 10)
		}
		if s := op.Service; s != nil {
			// Name and ID only: tags, meta and address are registration
			// content, not identifiers.
			b = append(b, `,"service":{`...)
			b = appendNamed(b, "name", s.Name, maxNameLen)
			b = appendOptField(b, "id", s.ID, maxNameLen)
			b = append(b, '}')
		}
		b = appendOptField(b, "session", op.Session, maxNameLen)
		b = appendOptField(b, "datacenter", op.Datacenter, maxNameLen)
	}

	d := &rec.Decision
	b = append(b, `,"result":`...)
	b = appendString(b, rec.Result().String())
	switch {
	case rec.Err != nil:
		b = append(b, `,"reason":"`+evalFailed+`"`...)
		b = appendField(b, "error", rec.Err.Error(), maxTextLen)
	case !d.Shadow:
		b = appendOptField(b, "reason", d.Reason, maxTextLen)
	}
	if d.Shadow {
		b = append(b, `,"shadow":true`...)
		b = appendOptField(b, "shadow_reason", d.Reason, maxTextLen)
	}
	b = appendOptField(b, "policy_revision", d.Revision, maxNameLen)
	b = append(b, `,"duration_us":`...)
	b = strconv.AppendInt(b, rec.Duration.Microseconds(), 10)

	// Only a sampled trace is recorded anywhere: an unsampled one has IDs
	// too, but pointing at them would send auditors to a trace no one kept.
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && sc.IsSampled() {
		tid, sid := sc.TraceID(), sc.SpanID()
		b = append(b, `,"trace_id":"`...)
		b = hex.AppendEncode(b, tid[:])
		b = append(b, `","span_id":"`...)
		b = hex.AppendEncode(b, sid[:])
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// appendID appends 32 random lowercase hex characters.
func appendID(b []byte) []byte {
	var id [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		id[i] = byte(hi >> (56 - 8*i))
		id[8+i] = byte(lo >> (56 - 8*i))
	}
	return hex.AppendEncode(b, id[:])
}

// appendKey appends the field name with key, unless key is empty: as text
// when the part of key that fits in maxKeyLen is valid UTF-8, otherwise as
// name_base64 (standard base64), and then name_truncated if key was cut.
func appendKey(b []byte, name string, key []byte) []byte {
	if len(key) == 0 {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	n, ok := textPrefix(key, maxKeyLen)
	if ok {
		b = append(b, `":"`...)
		b = appendEscaped(b, key[:n])
	} else {
		n = min(len(key), maxKeyLen/4*3)
		b = append(b, `_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, key[:n])
	}
	b = append(b, '"')
	return appendTruncated(b, name, n, len(key))
}

// textPrefix returns the length of the longest prefix of key, cut at a
// character boundary, whose escaped form is at most limit bytes, and
// whether that prefix is valid UTF-8.
func textPrefix(key []byte, limit int) (int, bool) {
	enc := 0
	for i := 0; i < len(key); {
		c := key[i]
		w, size := 1, 1
		if c < utf8.RuneSelf {
			if !safe[c] {
				w = escapedLen(c)
			}
		} else {
			r, n := utf8.DecodeRune(key[i:])
			if r == utf8.RuneError && n == 1 {
				return i, false
			}
			w, size = n, n
		}
		if enc+w > limit {
			return i, true
		}
		enc += w
		i += size
	}
	return len(key), true
}

// appendTruncated appends name_truncated with the full length when only n
// of full bytes were logged.
func appendTruncated(b []byte, name string, n, full int) []byte {
	if n >= full {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `_truncated":`...)
	return strconv.AppendInt(b, int64(full), 10)
}

// appendOptField appends the field name with s, unless s is empty.
func appendOptField(b []byte, name, s string, limit int) []byte {
	if s == "" {
		return b
	}
	return appendField(b, name, s, limit)
}

// appendField appends a comma and the field name with s, cut to limit.
func appendField(b []byte, name, s string, limit int) []byte {
	return appendNamed(append(b, ','), name, s, limit)
}

// appendNamed appends "name":s, s cut to limit encoded bytes, and then
// name_truncated if it was cut.
func appendNamed(b []byte, name, s string, limit int) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, `":`...)
	b, n := appendStringN(b, s, limit)
	return appendTruncated(b, name, n, len(s))
}

// appendTime appends t in UTC as timeFormat would, without parsing the
// layout on every line.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, timeFormat)
	}
	hour, minute, sec := t.Clock()
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond(), 9)
	return append(b, 'Z')
}

// appendDigits appends the n low decimal digits of v >= 0, zero-padded.
func appendDigits(b []byte, v, n int) []byte {
	b = append(b, "000000000"[:n]...)
	for i := len(b) - 1; n > 0; i, n = i-1, n-1 {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return b
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json writes it.
func appendString(b []byte, s string) []byte {
	b, _ = appendStringN(b, s, len(s)*6)
	return b
}

// appendStringN appends as a JSON string the longest prefix of s, cut at a
// character boundary, whose encoded form (without the quotes) is at most
// limit bytes, and returns how many bytes of s that is. Invalid UTF-8
// becomes U+FFFD, as encoding/json writes it.
func appendStringN(b []byte, s string, limit int) ([]byte, int) {
	b = append(b, '"')
	base := len(b) // the encoded length is len(b) - base + i - start
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safe[c] {
				if len(b)-base+i-start >= limit {
					b = append(b, s[start:i]...)
					return append(b, '"'), i
				}
				i++
				continue
			}
			b = append(b, s[start:i]...)
			if len(b)-base+escapedLen(c) > limit {
				return append(b, '"'), i
			}
			b = appendEscapedByte(b, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			if len(b)-base+len("\ufffd") > limit {
				return append(b, '"'), i
			}
			b = append(b, "\ufffd"...)
			i++
			start = i
			continue
		}
		if len(b)-base+i-start+size > limit {
			b = append(b, s[start:i]...)
			return append(b, '"'), i
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"'), len(s)
}

const hexDigits = "0123456789abcdef"

// safe says which ASCII bytes go into a JSON string as they are: all but
// the quote, the backslash, control characters and DEL.
var safe = func() (t [utf8.RuneSelf]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\' && c != 0x7f
	}
	return t
}()

// appendEscaped appends s, which must be valid UTF-8, escaped for the
// inside of a JSON string. Bytes >= 0x80 are copied as they are (s is valid
// UTF-8, so they form whole characters).
func appendEscaped(b []byte, s []byte) []byte {
	start := 0
	for i, c := range s {
		if c >= utf8.RuneSelf || safe[c] {
			continue
		}
		b = append(b, s[start:i]...)
		b = appendEscapedByte(b, c)
		start = i + 1
	}
	return append(b, s[start:]...)
}

// escapedLen is the length of appendEscapedByte's escape of c.
func escapedLen(c byte) int {
	switch c {
	case '"', '\\', '\n', '\r', '\t':
		return 2
	}
	return 6
}

// appendEscapedByte appends the escape of an ASCII byte that needs one.
func appendEscapedByte(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}
