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

// appendRecord appends rec as one JSON object and a newline.
func appendRecord(b []byte, ctx context.Context, rec *gate.Record) []byte {
	b = append(b, `{"time":"`...)
	b = appendTime(b, rec.Time)
	b = append(b, `","decision_id":"`...)
	b = appendID(b)
	b = append(b, `","caller":`...)
	b = appendString(b, rec.Caller.String())

	if op := rec.Op; op != nil {
		b = append(b, `,"protocol":`...)
		b = appendString(b, op.Protocol.String())
		b = append(b, `,"method":`...)
		b = appendString(b, op.Method)
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
			b = append(b, `,"service":{"name":`...)
			b = appendString(b, s.Name)
			if s.ID != "" {
				b = append(b, `,"id":`...)
				b = appendString(b, s.ID)
			}
			b = append(b, '}')
		}
		b = appendOptString(b, "session", op.Session)
		b = appendOptString(b, "datacenter", op.Datacenter)
	}

	d := &rec.Decision
	b = append(b, `,"result":`...)
	b = appendString(b, rec.Result().String())
	switch {
	case rec.Err != nil:
		b = append(b, `,"reason":"`+evalFailed+`","error":`...)
		b = appendString(b, rec.Err.Error())
	case !d.Shadow:
		b = appendOptString(b, "reason", d.Reason)
	}
	if d.Shadow {
		b = append(b, `,"shadow":true`...)
		b = appendOptString(b, "shadow_reason", d.Reason)
	}
	b = appendOptString(b, "policy_revision", d.Revision)
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

// appendKey appends the field name (or name_base64) with key, unless key
// is empty.
func appendKey(b []byte, name string, key []byte) []byte {
	if len(key) == 0 {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	if utf8.Valid(key) {
		b = append(b, `":"`...)
		b = appendEscaped(b, key)
	} else {
		b = append(b, `_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, key)
	}
	return append(b, '"')
}

// appendOptString appends the field name with s, unless s is empty.
func appendOptString(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":`...)
	return appendString(b, s)
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
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = appendEscapedByte(b, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
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
