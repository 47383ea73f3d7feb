package main

import "github.com/storegate/storegate/plugins/sdk"

// onRequest judges Consul service and check registrations; every other op
// continues.
func onRequest(op *sdk.Op) sdk.Result {
	if op.Action != sdk.ActionRegister || (op.Resource != sdk.ResourceService && op.Resource != sdk.ResourceCheck) {
		return sdk.Continue()
	}
	if !op.HasValue() || len(op.Value) == 0 {
		return sdk.Deny("registration: no registration body")
	}
	var err error
	if op.Resource == sdk.ResourceCheck {
		err = checkCheckRegistration(op.Value)
	} else {
		owner, ok := expectedOwner(op.Caller)
		if !ok {
			return sdk.Deny("registration: the caller's SPIFFE ID has no path segment to own a service: " + string(op.Caller))
		}
		err = checkService(op.Value, owner)
	}
	if err != nil {
		return sdk.Deny("registration: " + err.Error())
	}
	return sdk.Continue()
}
