// continue: lets every op continue; logs through storegate.log and stdout
// at init.
#define CUSTOM_INIT
#include "guest.h"

EXPORT("storegate_init") u64 sg_init(const u8 *config, u32 len) {
	(void)config; (void)len;
#ifdef INIT_DENY
	return deny("bad config");
#endif
	log_str(1, "continue plugin ready");
	static const char line[] = "hello from stdout\n";
	struct ciovec iov = {line, sizeof line - 1};
	u32 written;
	fd_write(1, &iov, 1, &written);
	return 0;
}

#ifndef NO_ON_REQUEST
EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) { (void)p; (void)n; return 0; }
#endif
#if CAPS & 2
EXPORT("storegate_on_response") u64 on_response(const u8 *p, u32 n) { (void)p; (void)n; return 0; }
#endif
