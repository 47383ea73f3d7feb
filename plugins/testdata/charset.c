// charset: a validator that reads every byte of the value and denies one
// outside [A-Za-z0-9 ._-]; with REQUIRE_PREFIX, it also denies keys
// outside that prefix.
#include "guest.h"

static int allowed(u8 c) {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == ' ' || c == '.' || c == '_' || c == '-';
}

EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	struct env e;
	(void)n;
	parse(p, &e);
#ifdef REQUIRE_PREFIX
	if (!has_prefix(e.key, e.key_len, REQUIRE_PREFIX)) return deny("key outside " REQUIRE_PREFIX);
#endif
	u32 bad = 0;
	for (u32 i = 0; i < e.value_len; i++) bad |= !allowed(e.value[i]);
	if (bad) return deny("value outside the charset");
	return 0;
}
