package storegate.authz

default allow := false
