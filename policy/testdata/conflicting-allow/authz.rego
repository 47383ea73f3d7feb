package storegate.authz

# Two complete definitions that disagree: evaluating allow is an error.
allow := true if input.caller.id != ""

allow := false if input.op.key != ""
