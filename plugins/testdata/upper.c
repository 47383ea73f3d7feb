// upper: a mutator that upper-cases the value.
#include "guest.h"

static u8 value[1 << 15];

EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	struct env e;
	(void)n;
	parse(p, &e);
	if (!(e.flags & 1)) return 0;
	for (u32 i = 0; i < e.value_len; i++) {
		u8 c = e.value[i];
		value[i] = c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
	}
	return mutate(NULL, 0, NULL, 0, value, e.value_len);
}
