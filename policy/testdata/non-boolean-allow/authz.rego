package storegate.authz

allow := "yes"
