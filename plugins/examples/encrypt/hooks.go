package main

import "github.com/storegate/storegate/plugins/sdk"

// onRequest encrypts the value of a KV write under a prefix. Another KV op
// that carries a value under a prefix (a transaction's value compare) is
// denied: it would compare plaintext with ciphertext and could never
// match. Other ops continue.
func onRequest(op *sdk.Op) sdk.Result {
	if op.Resource != sdk.ResourceKV || !op.HasValue() || !encrypted(op.Key) {
		return sdk.Continue()
	}
	if op.Action != sdk.ActionWrite {
		return sdk.Deny("encrypt: cannot compare the value of " + string(op.Key) + ": it is stored encrypted")
	}
	return sdk.Mutate().AppendValue(func(dst []byte) []byte { return seal(dst, op.Key, op.Value) })
}

// onResponse decrypts a value going back from under a prefix. One that
// does not decrypt (tampered, written around the gateway, another key)
// fails the whole response: ciphertext is never sent as plaintext.
func onResponse(it *sdk.Item) sdk.Result {
	if !it.HasValue() || !encrypted(it.Key) {
		return sdk.Continue()
	}
	failed := false
	r := sdk.Mutate().AppendValue(func(dst []byte) []byte {
		out, err := open(dst, it.Key, it.Value)
		failed = err != nil
		return out
	})
	if failed {
		return sdk.Deny("cannot decrypt value of " + string(it.Key))
	}
	return r
}
