# Tests of the shipped intentions engine against the shipped intentions.yaml.
# Run them with `gateway policy test` (or go test ./policy/): storegate
# compiles intentions.yaml into package storegate.intentions first.
package storegate.authz_test

import data.storegate.authz

web := "spiffe://example.org/web"

admin := "spiffe://example.org/admin"

batch := "spiffe://example.org/batch"

caller(id) := {"id": id, "trust_domain": "example.org", "path": substring(id, count("spiffe://example.org"), -1)}

# key is an op on one key.
key(resource, action, k) := {
	"protocol": "etcd", "resource": resource, "action": action, "method": "",
	"key": k, "range_end": "", "range": false, "prefix": false, "cover": k,
	"lease": 0, "value_size": 0, "prev_kv": false, "txn_index": 0,
	"session": "", "datacenter": "", "foreign": false,
}

# prefix is an op on every key starting with p (etcdctl --prefix).
prefix(resource, action, p, end) := object.union(key(resource, action, p), {
	"range_end": end, "range": true, "prefix": true, "cover": p,
})

# span is an op on [k, end), whose keys all start with cover.
span(resource, action, k, end, cover) := object.union(key(resource, action, k), {
	"range_end": end, "range": true, "cover": cover,
})

# bare is an op that names no key.
bare(resource, action) := key(resource, action, "")

service(action, name) := object.union(bare("service", action), {
	"protocol": "consul",
	"service": {"name": name, "id": name, "tags": [], "meta": {}, "address": "", "port": 0, "checks": []},
})

req(id, op) := {"caller": caller(id), "op": op}

# --- single keys ---

test_web_reads_and_writes_its_keys if {
	authz.allow with input as req(web, key("kv", "read", "/app/config"))
	authz.allow with input as req(web, key("kv", "write", "/app/a/b/c"))
	authz.allow with input as req(web, key("kv", "delete", "/app/x"))
	authz.allow with input as req(web, key("watch", "watch", "/app/x"))
}

test_web_is_denied_other_keys if {
	not authz.allow with input as req(web, key("kv", "write", "/other/x"))
	authz.reason == `no intention allows spiffe://example.org/web to write kv "/other/x"` with input as req(web, key("kv", "write", "/other/x"))
}

test_double_star_needs_the_slash if {
	not authz.allow with input as req(web, key("kv", "read", "/app"))
	not authz.allow with input as req(web, key("kv", "read", "/application"))
	authz.allow with input as req(web, key("kv", "read", "/app/"))
}

test_deny_wins if {
	op := key("kv", "read", "/app/secret/db-password")
	not authz.allow with input as req(web, op)
	authz.reason == `deny intention "web-no-secrets" matches` with input as req(web, op)
	not authz.filter with input as req(web, op)
}

test_deny_is_per_caller if {
	authz.allow with input as req(admin, key("kv", "read", "/app/secret/db-password"))
}

test_admin_does_everything if {
	authz.allow with input as req(admin, key("kv", "write", "/anything"))
	authz.allow with input as req(admin, bare("maintenance", "admin"))
	authz.allow with input as req(admin, prefix("kv", "delete", "", "\u0000"))
}

test_unknown_caller_is_denied if {
	not authz.allow with input as req("spiffe://other.org/web", key("kv", "read", "/app/x"))
	not authz.allow with input as req(batch, key("kv", "read", "/app/x"))
}

test_action_must_be_listed if {
	not authz.allow with input as req(web, key("kv", "compact", "/app/x"))
}

# --- * matches one segment, ** any ---

test_single_star_matches_one_segment if {
	authz.allow with input as req(batch, key("kv", "read", "/shared/motd"))
	authz.allow with input as req(web, key("kv", "read", "/shared/motd"))
	not authz.allow with input as req(batch, key("kv", "read", "/shared/a/b"))
	not authz.allow with input as req(batch, key("kv", "write", "/shared/motd"))
}

test_single_star_in_source_matches_one_segment if {
	authz.allow with input as req(batch, bare("status", "read"))
	not authz.allow with input as req("spiffe://example.org/ns/batch", bare("status", "read"))
}

# --- ops that name no key ---

test_leases if {
	authz.allow with input as req(web, bare("lease", "grant"))
	authz.allow with input as req(web, bare("lease", "revoke"))
	not authz.allow with input as req(batch, bare("lease", "grant"))
}

# --- ops on what another identity owns (leases) ---

# foreign is an op on a lease another identity owns ("": none on record).
foreign(action, owner) := object.union(bare("lease", action), {"lease": 7, "foreign": true, "owner": owner})

test_web_keeps_its_own_lease_alive if {
	authz.allow with input as req(web, object.union(bare("lease", "keepalive"), {"lease": 7}))
	authz.allow with input as req(web, object.union(bare("lease", "revoke"), {"lease": 7}))
}

test_web_may_not_touch_admins_lease if {
	# web-leases has no owners: it covers web's own leases only.
	not authz.allow with input as req(web, foreign("keepalive", admin))
	not authz.allow with input as req(web, foreign("revoke", admin))
	not authz.allow with input as req(web, foreign("read", admin))
	authz.reason == "no intention allows spiffe://example.org/web to keepalive lease" with input as req(web, foreign("keepalive", admin))
}

test_web_may_not_touch_a_lease_without_owner if {
	not authz.allow with input as req(web, foreign("keepalive", ""))
	not authz.allow with input as req(batch, foreign("revoke", ""))
}

test_admin_may_act_on_webs_lease if {
	authz.allow with input as req(admin, foreign("keepalive", web))
	authz.allow with input as req(admin, foreign("revoke", web))
	authz.allow with input as req(admin, foreign("read", batch))
}

test_double_star_owners_match_no_owner if {
	authz.allow with input as req(admin, foreign("revoke", ""))
}

test_deny_with_owners_wins if {
	# admin-all (owners: ["**"]) allows admin to attach keys to anyone's lease,
	# but gateway-leases denies it for a gateway's.
	gw := "spiffe://example.org/storegate"
	authz.allow with input as req(admin, foreign("write", web))
	not authz.allow with input as req(admin, foreign("write", gw))
	not authz.allow with input as req(admin, foreign("write", "spiffe://example.org/storegate/replica-2"))
	authz.reason == `deny intention "gateway-leases" matches` with input as req(admin, foreign("write", gw))

	# Only those owners: the deny is no wider than its globs.
	authz.allow with input as req(admin, foreign("write", "spiffe://example.org/storegate-not"))
	authz.allow with input as req(admin, foreign("write", ""))

	# And the other actions on a gateway's lease stay allowed.
	authz.allow with input as req(admin, foreign("keepalive", gw))
}

test_owners_do_not_narrow_own_ops if {
	# admin-all names owners; it still covers admin's own leases.
	authz.allow with input as req(admin, object.union(bare("lease", "revoke"), {"lease": 7}))
}

test_foreign_must_be_false_for_own_ops if {
	# An input without op.foreign matches no intention: fail closed.
	not authz.allow with input as req(web, object.remove(key("kv", "read", "/app/x"), {"foreign"}))
}

test_keyed_intentions_do_not_match_keyless_ops if {
	# web-app-kv has keys: it does not cover a kv op that names none.
	not authz.allow with input as req(web, bare("kv", "read"))
	authz.reason == "no intention allows spiffe://example.org/web to read kv" with input as req(web, bare("kv", "read"))
}

test_status if {
	authz.allow with input as req(web, bare("status", "read"))
	not authz.allow with input as req(web, bare("cluster", "admin"))
}

test_locks_and_elections if {
	authz.allow with input as req(web, key("lock", "acquire", "/app/locks/leader"))
	not authz.allow with input as req(web, key("lock", "acquire", "/other/locks/leader"))
	authz.allow with input as req(web, key("election", "campaign", "/app/election/primary"))
	not authz.allow with input as req(web, key("election", "campaign", "/app/locks/primary"))
}

test_services if {
	authz.allow with input as req(web, service("register", "web-frontend"))
	not authz.allow with input as req(web, service("register", "db"))
	authz.reason == `no intention allows spiffe://example.org/web to register service "db"` with input as req(web, service("register", "db"))
}

# --- ranges ---

test_range_covered_is_allowed if {
	authz.allow with input as req(web, prefix("kv", "read", "/app/config/", "/app/config0"))
	authz.allow with input as req(web, span("kv", "read", "/app/locks/a", "/app/locks/b", "/app/locks/"))
}

test_range_overlapping_a_deny_is_filtered if {
	op := prefix("kv", "read", "/app/", "/app0")
	not authz.allow with input as req(web, op)
	authz.filter with input as req(web, op)
	authz.reason == `deny intention "web-no-secrets" may match keys in kv prefix "/app/"` with input as req(web, op)
}

test_watch_overlapping_a_deny_is_filtered if {
	authz.filter with input as req(web, prefix("watch", "watch", "/app/", "/app0"))
}

test_range_wider_than_allowed_is_filtered if {
	op := prefix("kv", "read", "/", "0")
	not authz.allow with input as req(web, op)
	authz.filter with input as req(web, op)
	authz.filter with input as req(web, prefix("kv", "read", "", "\u0000"))
}

test_range_write_is_never_filtered if {
	op := prefix("kv", "delete", "/app/", "/app0")
	not authz.allow with input as req(web, op)
	not authz.filter with input as req(web, op)
}

test_range_inside_a_deny_is_denied if {
	op := prefix("kv", "read", "/app/secret/", "/app/secret0")
	not authz.allow with input as req(web, op)
	not authz.filter with input as req(web, op)
	authz.reason == `deny intention "web-no-secrets" matches every key in kv prefix "/app/secret/"` with input as req(web, op)
}

test_range_elsewhere_is_denied if {
	op := prefix("kv", "read", "/other/", "/other0")
	not authz.allow with input as req(web, op)
	not authz.filter with input as req(web, op)
	authz.reason == `no intention allows spiffe://example.org/web to read kv prefix "/other/"` with input as req(web, op)
}

test_range_not_a_prefix if {
	op := span("kv", "read", "/other/a", "/other/c", "/other/")
	authz.reason == `no intention allows spiffe://example.org/web to read kv range ["/other/a", "/other/c")` with input as req(web, op)
}

test_range_from_a_key_on if {
	op := span("kv", "delete", "/other/a", "\u0000", "")
	authz.reason == `no intention allows spiffe://example.org/web to delete kv keys from "/other/a" on` with input as req(web, op)
}

test_range_of_everything if {
	op := prefix("kv", "delete", "", "\u0000")
	authz.reason == "no intention allows spiffe://example.org/web to delete every kv key" with input as req(web, op)
}

test_single_star_does_not_cover_a_range if {
	# "/shared/*" matches /shared/motd, not /shared/a/b: the range is only filtered.
	op := prefix("kv", "read", "/shared/", "/shared0")
	not authz.allow with input as req(batch, op)
	authz.filter with input as req(batch, op)
}

test_undefined_input_denies if {
	not authz.allow with input as {}
	not authz.filter with input as {}
}

# --- reasons ---

test_reason_names_every_matching_deny if {
	authz.reason == `deny intentions "a", "b" match` with input as req(web, key("kv", "read", "/x"))
		with data.storegate.intentions.deny_hits as {"b", "a"}
}

web_registers(checks) := {
	"caller": {"id": "spiffe://example.org/web", "trust_domain": "example.org", "path": "/web"},
	"op": object.union(service("register", "web-api"), {"service": {
		"name": "web-api", "id": "web-api", "address": "127.0.0.1", "port": 8080,
		"tagged_addresses": {}, "checks": checks,
	}}),
}

check(kind, host, port, own, guarded) := {
	"kind": kind, "id": "c", "name": "c", "alias_service": "", "alias_node": "", "os_service": "",
	"target": {"url": "", "method": "", "headers": [], "body": false, "host": host, "port": port, "own": own, "guarded": guarded},
}

ttl := check("ttl", "", 0, false, "")

test_script_and_docker_checks_denied if {
	not authz.allow with input as web_registers([check("http", "127.0.0.1", 8080, true, ""), check("script", "", 0, false, "")])
	authz.reason == "script checks are not allowed, nor Docker checks" with input as web_registers([check("script", "", 0, false, "")])
	not authz.allow with input as web_registers([check("docker", "", 0, false, "")])
}

test_own_checks_allowed if {
	authz.allow with input as web_registers([check("http", "127.0.0.1", 8080, true, ""), ttl])
	authz.allow with input as web_registers([check("tcp", "localhost", 8080, true, ""), alias("web-api", "")])
}

test_checks_elsewhere_denied if {
	not authz.allow with input as web_registers([check("http", "10.0.0.9", 80, false, "")])
	authz.reason == "a http check may reach only its service's own address and port, not 10.0.0.9:80" with input as web_registers([check("http", "10.0.0.9", 80, false, "")])
	not authz.allow with input as web_registers([ttl, check("grpc", "::1", 9, false, "")])
	authz.reason == "a grpc check may reach only its service's own address and port, not [::1]:9" with input as web_registers([check("grpc", "::1", 9, false, "")])
	not authz.allow with input as web_registers([check("tcp", "", 0, false, "")])
}

test_guarded_targets_denied_even_when_own if {
	not authz.allow with input as web_registers([check("http", "127.0.0.1", 8500, true, "consul")])
	not authz.allow with input as web_registers([check("tcp", "169.254.169.254", 80, false, "link_local")])
}

test_check_targets_name_a_target if {
	authz.allow with input as web_registers([check("http", "10.0.0.9", 80, false, "")])
		with data.storegate.intentions.check_targets as {"web-services": [{"host": "10.0.0.9", "port": 80}]}
	authz.allow with input as web_registers([check("http", "10.0.0.9", 80, false, "")])
		with data.storegate.intentions.check_targets as {"web-services": [{"cidr": "10.0.0.0/8", "port": 0}]}
	authz.allow with input as web_registers([check("http", "db.internal", 443, false, "")])
		with data.storegate.intentions.check_targets as {"web-services": [{"glob": "*.internal", "port": 443}]}
	# A guarded target only by its exact host and port.
	not authz.allow with input as web_registers([check("http", "127.0.0.1", 8500, true, "consul")])
		with data.storegate.intentions.check_targets as {"web-services": [{"cidr": "127.0.0.0/8", "port": 0}]}
	authz.allow with input as web_registers([check("http", "127.0.0.1", 8500, true, "consul")])
		with data.storegate.intentions.check_targets as {"web-services": [{"host": "127.0.0.1", "port": 8500}]}
	# Only an intention that allows the op names targets for it.
	not authz.allow with input as web_registers([check("http", "10.0.0.9", 80, false, "")])
		with data.storegate.intentions.check_targets as {"admin-all": [{"host": "10.0.0.9", "port": 80}]}
}

test_addresses_restrict_where_a_service_registers if {
	authz.allow with input as web_registers([ttl])
		with data.storegate.intentions.addresses as {"web-services": [{"cidr": "127.0.0.0/8", "port": 0}]}
	not authz.allow with input as web_registers([ttl])
		with data.storegate.intentions.addresses as {"web-services": [{"host": "10.0.0.1", "port": 0}]}
	not authz.allow with input as web_registers([ttl])
		with data.storegate.intentions.addresses as {"web-services": [{"any": true, "port": 9090}]}
}

web_proxy(guarded) := object.union(web_registers([]), {"op": {"service": {"kind": "connect-proxy", "proxy": {
	"destination_name": "web-api", "destination_id": "", "upstreams": [],
	"local_service": {"address": "127.0.0.1", "port": 8500}, "expose_ports": [], "local_guarded": guarded,
}}}})

test_proxy_into_guarded_denied if {
	authz.allow with input as web_proxy("")
	not authz.allow with input as web_proxy("consul")
	authz.reason == "a proxy may not forward to an address storegate guards" with input as web_proxy("consul")
}

alias(svc, node) := object.union(check("alias", "", 0, false, ""), {"alias_service": svc, "alias_node": node})

test_alias_checks_mirror_only_their_own if {
	authz.allow with input as web_registers([alias("web-api", "")])
	not authz.allow with input as web_registers([alias("api-1", "")])
	authz.reason == "an alias check may mirror only its own service" with input as web_registers([alias("api-1", "")])
	not authz.allow with input as web_registers([alias("", "node-1")])
	authz.allow with input as object.union(web_proxy(""), {"op": {"service": {"checks": [alias("web-api", "")]}}})
}
