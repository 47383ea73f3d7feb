package storegate.authz_test

import data.storegate.authz

test_denies_by_default if {
	not authz.allow
}

test_allows_everything if {
	authz.allow
}
