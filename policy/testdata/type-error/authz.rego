package storegate.authz

default allow := false

allow if {
	no_such_function(input.caller.id)
}
