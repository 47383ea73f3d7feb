package main

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/storegate/storegate/plugins/sdk"
)

// onRequest validates the value of a KV write against every rule whose
// prefix the key starts with. The key is the one the store will see: a
// validator runs after all mutators (ABI.md), so a namespace plugin's
// prefix is already on it. Other ops continue.
func onRequest(op *sdk.Op) sdk.Result {
	if op.Resource != sdk.ResourceKV || op.Action != sdk.ActionWrite || !op.HasValue() {
		return sdk.Continue()
	}
	var doc any
	parsed := false
	for _, r := range rules {
		if !bytes.HasPrefix(op.Key, r.prefix) {
			continue
		}
		if !parsed {
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(op.Value))
			if err != nil {
				return sdk.Deny("value is not JSON: " + firstLine(err.Error()))
			}
			doc, parsed = v, true
		}
		if err := r.schema.Validate(doc); err != nil {
			return sdk.Deny("value does not match the schema for " + strconv.Quote(string(r.prefix)) + ": " + explain(err))
		}
	}
	return sdk.Continue()
}

// explain returns the library's message for the first failing keyword,
// such as "at '/port': got string, want integer". The first line of the
// whole error only says "jsonschema validation failed with 'urn:…#'", so it
// follows the first cause down to a leaf, whose message is one line.
func explain(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return firstLine(err.Error())
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	return firstLine(ve.Error())
}

// firstLine returns the first line of msg, trimmed of spaces and of the
// "- " the library puts before nested causes.
func firstLine(msg string) string {
	msg, _, _ = strings.Cut(msg, "\n")
	return strings.TrimPrefix(strings.TrimSpace(msg), "- ")
}
