package storegate.authz

reason := "this policy decides nothing"
