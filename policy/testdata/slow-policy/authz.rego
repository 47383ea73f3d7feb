# A policy whose allow rule takes seconds (about 5 on the 2-core reference
# machine): it counts, among a million pairs of numbers, the products that
# are negative (there are none). The engine's evaluation deadline must stop
# it long before.
package storegate.authz

allow if {
	input.op.key != ""
	count([1 |
		some i in numbers.range(1, 1000)
		some j in numbers.range(1, 1000)
		i * j < 0
	]) == 0
}

reason := "slow" if {
	input.op.key != ""
	count([1 |
		some i in numbers.range(1, 1000)
		some j in numbers.range(1, 1000)
		i * j < 0
	]) == 1
}
