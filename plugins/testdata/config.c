// config: denies every op with its configuration as the reason.
#define CUSTOM_INIT
#include "guest.h"

static u8 config[1024];

EXPORT("storegate_init") u64 sg_init(const u8 *c, u32 len) {
	if (len >= sizeof config) return deny("config too long");
	mcopy(config, c, len);
	config[len] = 0;
	return 0;
}

EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	(void)p; (void)n;
	return deny((const char *)config);
}
