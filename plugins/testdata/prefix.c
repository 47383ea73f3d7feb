// prefix: a mutator that moves every key (and range end) under PREFIX and,
// with SUFFIX, appends SUFFIX to the value; its response hook undoes both,
// and denies an item whose key is not under PREFIX.
#include "guest.h"

static u8 key[4096], end[4096], value[1 << 15];

EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	struct env e;
	(void)n;
	parse(p, &e);
	u32 pl = slen(PREFIX);
	mcopy(key, (const u8 *)PREFIX, pl);
	mcopy(key + pl, e.key, e.key_len);
	const u8 *newend = NULL;
	u32 elen = 0;
	if (e.end_len == 1 && e.end[0] == 0) { // every key >= key: every key under the prefix
		mcopy(end, (const u8 *)PREFIX, pl);
		end[pl - 1]++;
		newend = end, elen = pl;
	} else if (e.end_len > 0) {
		mcopy(end, (const u8 *)PREFIX, pl);
		mcopy(end + pl, e.end, e.end_len);
		newend = end, elen = pl + e.end_len;
	}
	const u8 *newvalue = NULL;
	u32 vlen = 0;
#ifdef SUFFIX
	if (e.flags & 1) {
		mcopy(value, e.value, e.value_len);
		mcopy(value + e.value_len, (const u8 *)SUFFIX, slen(SUFFIX));
		newvalue = value, vlen = e.value_len + slen(SUFFIX);
	}
#endif
	return mutate(key, pl + e.key_len, newend, elen, newvalue, vlen);
}

EXPORT("storegate_on_response") u64 on_response(const u8 *p, u32 n) {
	struct env e;
	(void)n;
	parse(p, &e);
	if (!has_prefix(e.key, e.key_len, PREFIX)) return deny("item outside " PREFIX);
	u32 pl = slen(PREFIX);
	const u8 *newvalue = NULL;
	u32 vlen = 0;
#ifdef SUFFIX
	u32 sl = slen(SUFFIX);
	if ((e.flags & 1) && e.value_len >= sl && mequal(e.value + e.value_len - sl, (const u8 *)SUFFIX, sl)) {
		newvalue = e.value, vlen = e.value_len - sl;
	}
#endif
	return mutate(e.key + pl, e.key_len - pl, NULL, 0, newvalue, vlen);
}
