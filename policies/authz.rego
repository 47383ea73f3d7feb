# METADATA
# title: storegate intentions engine
# description: |
#   Decides every op from the intentions in intentions.yaml, which storegate
#   compiles into the rules of package storegate.intentions (one rule per
#   intention and glob; see policy/RATIONALE.md). This package only combines
#   their hit sets: an allow intention must match, and no deny intention may
#   match (deny wins). Ops on what another identity owns (input.op.foreign,
#   such as another caller's lease) are matched only by intentions with
#   owners, in the generated rules; nothing here needs to know.
#
#   The gateway queries `allow` for every op, and only when it is not true
#   `reason` and, for multi-key reads and watches, `filter`. Anything but
#   `allow == true` denies, evaluation errors included.
package storegate.authz

import data.storegate.intentions

default allow := false

# An op on one key, or an op that names no key (lease, status, service...):
# some allow intention matches it and no deny intention does.
allow if {
	input.op.range == false
	some _ in intentions.allow_hits
	not hit_denied
	not script_check
}

# Script checks run arbitrary commands on the agent's host: a registration
# that carries one is denied. Teams that want them replace this rule.
script_check if "script" in input.op.service.checks

# A multi-key range: some allow intention matches every key it may hold, and
# no deny intention may match any of them.
allow if {
	input.op.range == true
	some _ in intentions.allow_covers
	not range_may_be_denied
}

# A read or watch of a range that is not allowed as a whole may still be
# filtered: the gateway forwards it and drops every key and event that a
# single-key read of it would not allow. It is worth it when some allow
# intention may match a key of the range and no deny intention matches all
# of them.
default filter := false

filter if {
	not allow
	input.op.range == true
	input.op.action in {"read", "watch"}
	range_may_be_allowed
	not range_denied
}

hit_denied if some _ in intentions.deny_hits

# The generated overlaps sets leave out the intentions that cover the range.
range_may_be_allowed if some _ in intentions.allow_covers

range_may_be_allowed if some _ in intentions.allow_overlaps

range_may_be_denied if some _ in intentions.deny_covers

range_may_be_denied if some _ in intentions.deny_overlaps

range_denied if some _ in intentions.deny_covers

# reason says why an op is not allowed; the first branch that holds wins.
reason := "script checks are not allowed" if {
	script_check
} else := sprintf("%s %s %s", [noun[one], listed(names), verb[one]]) if {
	input.op.range == false
	names := sort(intentions.deny_hits)
	one := count(names) == 1
	count(names) > 0
} else := sprintf("%s %s %s every key in %s", [noun[one], listed(names), verb[one], target]) if {
	input.op.range == true
	names := sort(intentions.deny_covers)
	one := count(names) == 1
	count(names) > 0
} else := sprintf("%s %s may match keys in %s", [noun[one], listed(names), target]) if {
	input.op.range == true
	some _ in intentions.allow_covers
	names := sort(intentions.deny_overlaps)
	one := count(names) == 1
	count(names) > 0
} else := sprintf("no intention allows %s to %s %s", [input.caller.id, input.op.action, target])

# The words of a reason, by whether one deny intention is named (true) or
# several.
noun := {true: "deny intention", false: "deny intentions"}

verb := {true: "matches", false: "match"}

# listed quotes sorted names for a reason.
listed(names) := sprintf("%q", [names[0]]) if count(names) == 1

listed(names) := concat(", ", [sprintf("%q", [n]) | some n in names]) if count(names) > 1

# target names what the op touches, for reasons.
target := sprintf("service %q", [input.op.service.name]) if {
	input.op.service.name != ""
} else := sprintf("every %s key", [input.op.resource]) if {
	input.op.range
	input.op.prefix
	input.op.cover == ""
} else := sprintf("%s prefix %q", [input.op.resource, input.op.cover]) if {
	input.op.range
	input.op.prefix
} else := sprintf("%s keys from %q on", [input.op.resource, input.op.key]) if {
	input.op.range
	input.op.range_end == "\u0000"
} else := sprintf("%s range [%q, %q)", [input.op.resource, input.op.key, input.op.range_end]) if {
	input.op.range
} else := sprintf("%s %q", [input.op.resource, input.op.key]) if {
	input.op.key != ""
} else := input.op.resource
