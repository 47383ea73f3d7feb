package plugins

import (
	"encoding/binary"

	"github.com/storegate/storegate/gate"
)

// The envelopes are written straight into the guest's input buffer (a
// view of its memory, see instance.buffer): the host keeps no copy of its
// own, and nothing here allocates.

var le = binary.LittleEndian

// serviceName is the op's service name for the envelope's service part.
func serviceName(op *gate.Op) string {
	if op.Service == nil {
		return ""
	}
	return op.Service.Name
}

// opEnvelopeSize is the size of op's envelope, as a uint64 so that no
// length can overflow before it is checked against maxEnvelope.
func opEnvelopeSize(caller string, op *gate.Op) uint64 {
	return envelopeHeader + uint64(len(caller)) + uint64(len(op.Keys.Key)) + uint64(len(op.Keys.End)) +
		uint64(len(op.Value)) + uint64(len(serviceName(op)))
}

// opFlags is the flags byte of op's envelope.
func opFlags(op *gate.Op) byte {
	var f byte
	if op.Value != nil {
		f |= flagValue
	}
	if len(op.Keys.End) > 0 {
		f |= flagRange
	}
	if op.TxnIndex > 0 {
		f |= flagTxn
	}
	return f
}

// txnIndex is op's transaction position as the u16 field holds it.
func txnIndex(op *gate.Op) uint16 {
	return uint16(min(max(op.TxnIndex, 0), 0xFFFF))
}

// putHeader writes the 40-byte header shared by both envelopes.
func putHeader(dst []byte, phase byte, op *gate.Op, flags byte, lease int64, caller, key, end, value, service int) {
	dst[0] = envelopeVersion
	dst[1] = phase
	dst[2] = byte(op.Protocol)
	dst[3] = byte(op.Resource)
	dst[4] = byte(op.Action)
	dst[5] = flags
	le.PutUint16(dst[6:], txnIndex(op))
	le.PutUint64(dst[8:], uint64(lease))
	le.PutUint32(dst[16:], uint32(caller))
	le.PutUint32(dst[20:], uint32(key))
	le.PutUint32(dst[24:], uint32(end))
	le.PutUint32(dst[28:], uint32(value))
	le.PutUint32(dst[32:], uint32(service))
	le.PutUint32(dst[36:], 0)
}

// encodeOp writes op's envelope (phase request) into dst, which is
// opEnvelopeSize bytes long.
func encodeOp(dst []byte, caller string, op *gate.Op) {
	service := serviceName(op)
	putHeader(dst, phaseRequest, op, opFlags(op), op.Lease,
		len(caller), len(op.Keys.Key), len(op.Keys.End), len(op.Value), len(service))
	n := envelopeHeader
	n += copy(dst[n:], caller)
	n += copy(dst[n:], op.Keys.Key)
	n += copy(dst[n:], op.Keys.End)
	n += copy(dst[n:], op.Value)
	copy(dst[n:], service)
}

// itemEnvelopeSize is the size of the envelope of one item going back.
func itemEnvelopeSize(caller string, key, value []byte) uint64 {
	return envelopeHeader + uint64(len(caller)) + uint64(len(key)) + uint64(len(value))
}

// encodeItem writes the envelope of one item (key, value) answering op
// (phase response) into dst, which is itemEnvelopeSize bytes long. The
// header is op's, with the item's value flag, no range end, no service and
// no lease.
func encodeItem(dst []byte, caller string, op *gate.Op, key, value []byte) {
	var flags byte
	if value != nil {
		flags |= flagValue
	}
	if op.TxnIndex > 0 {
		flags |= flagTxn
	}
	putHeader(dst, phaseResponse, op, flags, 0, len(caller), len(key), 0, len(value), 0)
	n := envelopeHeader
	n += copy(dst[n:], caller)
	n += copy(dst[n:], key)
	copy(dst[n:], value)
}

// result is a decoded hook result. Its slices are views of the guest's
// memory, valid until the next call into the instance: whatever the host
// keeps is copied first (see apply).
type result struct {
	verdict Verdict
	reason  []byte
	// key, end and value are the new parts of a mutate; has* tell a part
	// that is unchanged from one rewritten to empty.
	key, end, value          []byte
	hasKey, hasEnd, hasValue bool
}

// mutates reports whether the result changes anything.
func (r *result) mutates() bool { return r.hasKey || r.hasEnd || r.hasValue }

// decodeResult checks and decodes the result view b strictly: a header,
// a known verdict, zero reserved bytes, a reason only on deny, and lengths
// that add up to exactly len(b). For continue and deny the three mutate
// lengths are ignored. It allocates only to describe a failure.
func decodeResult(b []byte) (result, *Failure) {
	if len(b) < resultHeader {
		return result{}, fail(FailMalformed, "result of %d bytes is shorter than its %d-byte header", len(b), resultHeader)
	}
	r := result{verdict: Verdict(b[0])}
	if r.verdict > VerdictMutate {
		return result{}, fail(FailMalformed, "unknown verdict %d", b[0])
	}
	if b[1]|b[2]|b[3] != 0 {
		return result{}, fail(FailMalformed, "reserved result bytes are not zero")
	}
	reasonLen := uint64(le.Uint32(b[4:]))
	if reasonLen != 0 && r.verdict != VerdictDeny {
		return result{}, fail(FailMalformed, "%s result carries a %d-byte reason", r.verdict, reasonLen)
	}
	want := resultHeader + reasonLen
	lens := [3]uint32{unchanged, unchanged, unchanged} // continue and deny change nothing
	if r.verdict == VerdictMutate {
		for i := range lens {
			lens[i] = le.Uint32(b[8+4*i:])
			if lens[i] != unchanged {
				want += uint64(lens[i])
			}
		}
	}
	if want != uint64(len(b)) {
		return result{}, fail(FailMalformed, "result is %d bytes but its header adds up to %d", len(b), want)
	}
	n := uint64(resultHeader)
	r.reason = b[n : n+reasonLen]
	n += reasonLen
	part := func(l uint32) ([]byte, bool) {
		if l == unchanged {
			return nil, false
		}
		p := b[n : n+uint64(l) : n+uint64(l)]
		n += uint64(l)
		return p, true
	}
	r.key, r.hasKey = part(lens[0])
	r.end, r.hasEnd = part(lens[1])
	r.value, r.hasValue = part(lens[2])
	return r, nil
}
