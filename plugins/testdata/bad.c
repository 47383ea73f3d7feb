// bad: misbehaves, as BAD_* says, on ops whose key starts with BAD_PREFIX
// (default "/bad"), and lets every other op continue.
//   BAD_TRAP       traps (unreachable)
//   BAD_LOOP       loops forever
//   BAD_GROW       grows its memory until refused, then traps
//   BAD_MALFORMED  returns a result that runs past its memory
//   BAD_MUTATE     returns mutate (as a validator: an ABI error)
//   BAD_RANGE_END  its response hook changes the range end (an ABI error)
//   BAD_EMPTY_KEY  returns mutate with an empty key (an ABI error)
//   BAD_ALLOC      its allocator fails for buffers over 64 KiB
#ifdef BAD_ALLOC
#define CUSTOM_ALLOC
#endif
#include "guest.h"

#ifdef BAD_ALLOC
EXPORT("storegate_alloc") u32 sg_alloc(u32 n) { return n > 65536 ? 0 : heap_alloc(n); }
#endif

#ifndef BAD_PREFIX
#define BAD_PREFIX "/bad"
#endif

static int is_bad(const u8 *p) {
	struct env e;
	parse(p, &e);
	return has_prefix(e.key, e.key_len, BAD_PREFIX);
}

EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	(void)n;
	if (!is_bad(p)) return 0;
#if defined(BAD_TRAP)
	__builtin_trap();
#elif defined(BAD_LOOP)
	volatile u32 x = 0;
	for (;;) x++;
#elif defined(BAD_GROW)
	while (__builtin_wasm_memory_grow(0, 1) != (u32)-1) {
	}
	__builtin_trap();
#elif defined(BAD_MALFORMED)
	return (u64)16 << 32 | 0x7fffffffu;
#elif defined(BAD_MUTATE)
	static const u8 k[] = "/elsewhere";
	return mutate(k, sizeof k - 1, NULL, 0, NULL, 0);
#elif defined(BAD_EMPTY_KEY)
	return mutate(out + 100, 0, NULL, 0, NULL, 0);
#endif
	return 0;
}

#if CAPS & 2
EXPORT("storegate_on_response") u64 on_response(const u8 *p, u32 n) {
	(void)n;
	if (!is_bad(p)) return 0;
	static const u8 end[] = "/z";
	return mutate(NULL, 0, end, 2, NULL, 0);
}
#endif
