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
	some _ in allowed
	not hit_denied
	not unsafe_check
	not stray_check
	not stray_alias
	not proxy_into_guarded
}

# An alias check shows another service's or node's health as the caller's
# own check: it may mirror only the service itself or, for a proxy, the
# service it fronts.
stray_alias if {
	some c in input.op.service.checks
	c.kind == "alias"
	not own_alias(c)
}

own_alias(c) if {
	c.alias_node == ""
	c.alias_service != ""
	c.alias_service in {input.op.service.id, object.get(input.op.service, ["proxy", "destination_id"], "")}
}

# A proxy sends the mesh's traffic to its local service and exposed ports:
# never into what the gateway guards (the stores, the gateway itself).
proxy_into_guarded if input.op.service.proxy.local_guarded != ""

# The hits of intentions that match the op's service where it is: an
# intention with `addresses` matches a service op only when the service's
# address and port, and each of its tagged addresses, are among them.
allowed contains n if {
	some n in intentions.allow_hits
	at_addresses(n)
}

denied contains n if {
	some n in intentions.deny_hits
	at_addresses(n)
}

at_addresses(n) if not intentions.addresses[n]

at_addresses(n) if {
	pats := intentions.addresses[n]
	input.op.service
	every e in endpoints {
		some p in pats
		endpoint_matches(p, e)
	}
}

endpoints contains {"host": lower(s.address), "port": s.port} if s := input.op.service

endpoints contains {"host": lower(a.address), "port": a.port} if some a in input.op.service.tagged_addresses

# Script and Docker checks run commands on the agent's host: a registration
# that carries one, wherever it is nested, is denied. Teams that want them
# replace this rule.
unsafe_check if {
	some c in input.op.service.checks
	c.kind in {"script", "docker"}
}

# Health checks are not a proxy: a check that connects somewhere reaches
# only its service's own address and port, never an address the gateway
# guards (the stores, its own listeners, link-local and metadata addresses)
# however the service registered itself, unless an intention that allows the
# op names the target in `check_targets` (a guarded one by its exact host
# and port).
stray_check if {
	some c in input.op.service.checks
	c.kind in {"http", "tcp", "udp", "grpc", "h2ping"}
	not target_allowed(c.target)
}

stray := [c | some c in input.op.service.checks; c.kind in {"http", "tcp", "udp", "grpc", "h2ping"}; not target_allowed(c.target)]

target_allowed(t) if {
	t.own
	t.guarded == ""
}

target_allowed(t) if {
	some n in allowed
	some p in intentions.check_targets[n]
	target_named(p, t)
}

target_named(p, t) if {
	t.guarded != ""
	p.host == t.host
	p.port == t.port
}

target_named(p, t) if {
	t.guarded == ""
	endpoint_matches(p, t)
}

# endpoint_matches: pattern p (host, cidr, glob or any; port, 0 for any)
# matches e's host and port.
endpoint_matches(p, e) if {
	p.host != ""
	p.host == e.host
	port_matches(p, e)
}

endpoint_matches(p, e) if {
	p.any
	port_matches(p, e)
}

endpoint_matches(p, e) if {
	p.cidr != ""
	net.cidr_contains(p.cidr, e.host)
	port_matches(p, e)
}

endpoint_matches(p, e) if {
	p.glob != ""
	glob.match(p.glob, ["."], e.host)
	port_matches(p, e)
}

port_matches(p, _) if p.port == 0

port_matches(p, e) if p.port == e.port

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

hit_denied if some _ in denied

# The generated overlaps sets leave out the intentions that cover the range.
range_may_be_allowed if some _ in intentions.allow_covers

range_may_be_allowed if some _ in intentions.allow_overlaps

range_may_be_denied if some _ in intentions.deny_covers

range_may_be_denied if some _ in intentions.deny_overlaps

range_denied if some _ in intentions.deny_covers

# reason says why an op is not allowed; the first branch that holds wins.
reason := "script checks are not allowed, nor Docker checks" if {
	unsafe_check
} else := "an alias check may mirror only its own service" if {
	stray_alias
} else := "a proxy may not forward to an address storegate guards" if {
	proxy_into_guarded
} else := sprintf("%s %s %s", [noun[one], listed(names), verb[one]]) if {
	input.op.range == false
	names := sort(denied)
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
} else := sprintf("a %s check may reach only its service's own address and port, not %s", [c.kind, endpoint(c.target)]) if {
	input.op.range == false
	some _ in allowed
	c := stray[0]
} else := sprintf("no intention allows %s to %s %s", [input.caller.id, input.op.action, target])

# endpoint spells a check target for reasons.
endpoint(t) := "an unreadable target" if t.host == ""

endpoint(t) := sprintf("%s:%d", [t.host, t.port]) if {
	t.host != ""
	not contains(t.host, ":")
}

endpoint(t) := sprintf("[%s]:%d", [t.host, t.port]) if contains(t.host, ":")

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
