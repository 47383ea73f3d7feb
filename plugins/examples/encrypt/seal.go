package main

// The stored format, version 1:
//
//	0x01 | nonce (12 bytes) | ciphertext | GCM tag (16 bytes)
//
// AES-256-GCM with the key the value is stored under as additional data,
// so that a ciphertext copied to another key does not decrypt there. The
// version byte leaves room for another format or key later; 29 bytes are
// added to every value.

import (
	"bytes"
	"errors"
)

// formatV1 is the version byte of the format above.
const formatV1 = 1

// errFormat reports a stored value that is not in a known format.
var errFormat = errors.New("not an encrypted value")

// seal appends the stored form of plaintext, for key, to dst.
func seal(dst, key, plaintext []byte) []byte {
	dst = append(dst, formatV1)
	return aead.Seal(dst, nil, plaintext, key)
}

// open appends the plaintext of stored, read under key, to dst; on an
// error dst comes back as it was (no partial plaintext).
func open(dst, key, stored []byte) ([]byte, error) {
	if len(stored) < 1+aead.Overhead() || stored[0] != formatV1 {
		return dst, errFormat
	}
	out, err := aead.Open(dst, nil, stored[1:], key)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// encrypted reports whether values under key are stored encrypted.
func encrypted(key []byte) bool {
	for _, p := range prefixes {
		if bytes.HasPrefix(key, p) {
			return true
		}
	}
	return false
}
