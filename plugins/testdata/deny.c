// deny: denies every op whose key starts with DENY_PREFIX.
#include "guest.h"

#ifndef DENY_PREFIX
#define DENY_PREFIX "/secret"
#endif

EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	struct env e;
	(void)n;
	parse(p, &e);
	if (has_prefix(e.key, e.key_len, DENY_PREFIX)) return deny("keys under " DENY_PREFIX " are not allowed");
	return 0;
}
