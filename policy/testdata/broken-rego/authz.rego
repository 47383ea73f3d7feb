package storegate.authz

default allow := false

allow if {
	input.caller.id == 
}
