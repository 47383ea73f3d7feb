package sdk

import (
	"encoding/binary"
	"errors"
)

// Sizes and markers of the ABI's binary formats (ABI.md).
const (
	envelopeVersion  = 1          // byte 0 of every envelope
	phaseRequest     = 1          // byte 1 of an op envelope
	phaseResponse    = 2          // byte 1 of an item envelope
	headerSize       = 40         // fixed part of an envelope
	resultHeaderSize = 20         // fixed part of a result
	unchangedLen     = 0xFFFFFFFF // result length meaning "not changed"
)

// Errors DecodeOp and DecodeItem return for an envelope that breaks the
// ABI. They are fixed values so that decoding never allocates, even when it
// fails.
var (
	ErrShortEnvelope   = errors.New("envelope shorter than its 40-byte header")
	ErrEnvelopeVersion = errors.New("envelope version is not 1")
	ErrEnvelopePhase   = errors.New("envelope of the wrong phase for this hook")
	ErrEnvelopeLengths = errors.New("envelope lengths exceed its size")
)

// DecodeOp decodes an op envelope (phase 1) into op, overwriting every
// field. op's slices become views into env (see Op for their lifetime).
// It does not allocate. Bytes past the last part are ignored.
func DecodeOp(env []byte, op *Op) error {
	var parts [5][]byte
	if err := decodeEnvelope(env, phaseRequest, &parts); err != nil {
		return err
	}
	op.Protocol = Protocol(env[2])
	op.Resource = Resource(env[3])
	op.Action = Action(env[4])
	op.Flags = Flags(env[5])
	op.TxnIndex = binary.LittleEndian.Uint16(env[6:])
	op.Lease = binary.LittleEndian.Uint64(env[8:])
	op.Caller, op.Key, op.RangeEnd, op.Value, op.Service = parts[0], parts[1], parts[2], parts[3], parts[4]
	return nil
}

// DecodeItem decodes an item envelope (phase 2) into it, overwriting every
// field. it's slices become views into env (see Item for their lifetime).
// The range end and service parts, which ABI.md says are empty in an item,
// are skipped if present. It does not allocate.
func DecodeItem(env []byte, it *Item) error {
	var parts [5][]byte
	if err := decodeEnvelope(env, phaseResponse, &parts); err != nil {
		return err
	}
	it.Protocol = Protocol(env[2])
	it.Resource = Resource(env[3])
	it.Action = Action(env[4])
	it.Flags = Flags(env[5])
	it.Caller, it.Key, it.Value = parts[0], parts[1], parts[3]
	return nil
}

// decodeEnvelope checks env's header against phase and cuts its variable
// parts (caller, key, range end, value, service) into parts, each with its
// capacity clipped to its length so that an append never spills into the
// next part.
func decodeEnvelope(env []byte, phase byte, parts *[5][]byte) error {
	if len(env) < headerSize {
		return ErrShortEnvelope
	}
	if env[0] != envelopeVersion {
		return ErrEnvelopeVersion
	}
	if env[1] != phase {
		return ErrEnvelopePhase
	}
	off := uint64(headerSize)
	for i := range parts {
		n := uint64(binary.LittleEndian.Uint32(env[16+4*i:]))
		if off+n > uint64(len(env)) {
			return ErrEnvelopeLengths
		}
		parts[i] = env[off : off+n : off+n]
		off += n
	}
	return nil
}

// AppendOpEnvelope appends op encoded as an op envelope to dst, as the
// host writes it. Plugins do not need it; tests and harnesses that play the
// host do.
func AppendOpEnvelope(dst []byte, op *Op) []byte {
	dst = appendHeader(dst, phaseRequest, op.Protocol, op.Resource, op.Action, op.Flags, op.TxnIndex, op.Lease,
		op.Caller, op.Key, op.RangeEnd, op.Value, op.Service)
	return appendParts(dst, op.Caller, op.Key, op.RangeEnd, op.Value, op.Service)
}

// AppendItemEnvelope appends it encoded as an item envelope to dst, as the
// host writes it (range end and service empty). For tests and harnesses.
func AppendItemEnvelope(dst []byte, it *Item) []byte {
	dst = appendHeader(dst, phaseResponse, it.Protocol, it.Resource, it.Action, it.Flags, 0, 0,
		it.Caller, it.Key, nil, it.Value, nil)
	return appendParts(dst, it.Caller, it.Key, nil, it.Value, nil)
}

// appendHeader appends the 40-byte envelope header with the lengths of the
// five variable parts.
func appendHeader(dst []byte, phase byte, p Protocol, r Resource, a Action, f Flags, txn uint16, lease uint64,
	caller, key, rangeEnd, value, service []byte) []byte {
	dst = append(dst, envelopeVersion, phase, byte(p), byte(r), byte(a), byte(f))
	dst = binary.LittleEndian.AppendUint16(dst, txn)
	dst = binary.LittleEndian.AppendUint64(dst, lease)
	for _, part := range [...][]byte{caller, key, rangeEnd, value, service} {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(part)))
	}
	return binary.LittleEndian.AppendUint32(dst, 0) // reserved
}

// appendParts appends the variable parts back to back.
func appendParts(dst []byte, parts ...[]byte) []byte {
	for _, part := range parts {
		dst = append(dst, part...)
	}
	return dst
}
