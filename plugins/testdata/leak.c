// leak: grows its memory by LEAK_PAGES pages on every call and never gives
// them back; the host must recycle it before it reaches its limit.
#include "guest.h"

EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	(void)p; (void)n;
	if (__builtin_wasm_memory_grow(0, LEAK_PAGES) == (u32)-1) __builtin_trap();
	return 0;
}
