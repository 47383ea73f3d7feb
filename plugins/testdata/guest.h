// guest.h: the guest side of the storegate plugin ABI v1 (ABI.md) for the
// test modules, in freestanding C (no libc): clang --target=wasm32-wasi
// -nostdlib. Each test module includes it and defines its hooks.
//
// Defines: ABI_VERSION (default 1), CAPS (default 0), NO_ON_REQUEST (the
// module defines no request hook), INIT_DENY (init refuses the config),
// CUSTOM_INIT and CUSTOM_ALLOC (the module defines those exports itself),
// INIT_SPIN_MS (the default init busy-waits that many milliseconds, by the
// WASI monotonic clock: a slow start-up, so a slot whose instance failed
// stays empty that long while it is refilled).

#pragma clang diagnostic ignored "-Wunused-function" // each module uses some helpers

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(mod, name) __attribute__((import_module(mod), import_name(name)))
#define UNCHANGED 0xFFFFFFFFu
#define NULL ((void *)0)

#ifndef ABI_VERSION
#define ABI_VERSION 1
#endif
#ifndef CAPS
#define CAPS 0
#endif

IMPORT("storegate", "log") void sg_log(u32 level, const void *ptr, u32 len);

struct ciovec { const void *buf; u32 len; };
IMPORT("wasi_snapshot_preview1", "fd_write") u32 fd_write(u32 fd, const struct ciovec *iov, u32 n, u32 *written);

static u32 slen(const char *s) { u32 n = 0; while (s[n]) n++; return n; }
static void mcopy(u8 *d, const u8 *s, u32 n) { for (u32 i = 0; i < n; i++) d[i] = s[i]; }
static int mequal(const u8 *a, const u8 *b, u32 n) { for (u32 i = 0; i < n; i++) if (a[i] != b[i]) return 0; return 1; }
static int has_prefix(const u8 *s, u32 n, const char *p) { u32 pl = slen(p); return n >= pl && mequal(s, (const u8 *)p, pl); }
static u32 rd32(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static void wr32(u8 *p, u32 v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }
static void log_str(u32 level, const char *s) { sg_log(level, s, slen(s)); }

IMPORT("wasi_snapshot_preview1", "clock_time_get") u32 clock_time_get(u32 id, u64 precision, u64 *time);
static u64 now_ns(void) { u64 t = 0; clock_time_get(1, 1, &t); return t; }
static void spin_ms(u32 ms) { u64 end = now_ns() + (u64)ms * 1000000u; while (now_ns() < end) {} }

// The heap: a bump allocator over memory grown on demand; nothing is freed
// (the host asks for a buffer once, and again only to grow it).
extern u8 __heap_base;
static u32 heap_top;
static u32 heap_alloc(u32 n) {
	if (!heap_top) heap_top = (u32)&__heap_base;
	u32 p = (heap_top + 15) & ~15u, end = p + n;
	u32 have = __builtin_wasm_memory_size(0) * 65536u;
	if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (u32)-1) return 0;
	heap_top = end;
	return p;
}

EXPORT("storegate_abi_version") u32 sg_abi_version(void) { return ABI_VERSION; }
EXPORT("storegate_capabilities") u32 sg_capabilities(void) { return CAPS; }
#ifndef CUSTOM_ALLOC
EXPORT("storegate_alloc") u32 sg_alloc(u32 n) { return heap_alloc(n); }
#endif

// A parsed envelope (both phases).
struct env {
	u8 phase, protocol, resource, action, flags;
	u32 caller_len, key_len, end_len, value_len, service_len;
	const u8 *caller, *key, *end, *value, *service;
};

static void parse(const u8 *p, struct env *e) {
	e->phase = p[1]; e->protocol = p[2]; e->resource = p[3]; e->action = p[4]; e->flags = p[5];
	e->caller_len = rd32(p + 16); e->key_len = rd32(p + 20); e->end_len = rd32(p + 24);
	e->value_len = rd32(p + 28); e->service_len = rd32(p + 32);
	e->caller = p + 40; e->key = e->caller + e->caller_len; e->end = e->key + e->key_len;
	e->value = e->end + e->end_len; e->service = e->value + e->value_len;
}

// The result buffer, reused by every call.
static u8 out[1 << 16];

static u64 pack(const u8 *p, u32 n) { return (u64)(u32)p << 32 | n; }

static u64 deny(const char *reason) {
	u32 n = slen(reason);
	for (int i = 0; i < 20; i++) out[i] = 0;
	out[0] = 1;
	wr32(out + 4, n);
	wr32(out + 8, UNCHANGED); wr32(out + 12, UNCHANGED); wr32(out + 16, UNCHANGED);
	mcopy(out + 20, (const u8 *)reason, n);
	return pack(out, 20 + n);
}

// mutate: a NULL part is unchanged.
static u64 mutate(const u8 *key, u32 klen, const u8 *end, u32 elen, const u8 *value, u32 vlen) {
	u32 n = 20;
	for (int i = 0; i < 20; i++) out[i] = 0;
	out[0] = 2;
	wr32(out + 8, key ? klen : UNCHANGED);
	wr32(out + 12, end ? elen : UNCHANGED);
	wr32(out + 16, value ? vlen : UNCHANGED);
	if (key) { mcopy(out + n, key, klen); n += klen; }
	if (end) { mcopy(out + n, end, elen); n += elen; }
	if (value) { mcopy(out + n, value, vlen); n += vlen; }
	return pack(out, n);
}

#ifndef CUSTOM_INIT
EXPORT("storegate_init") u64 sg_init(const u8 *config, u32 len) {
#ifdef INIT_DENY
	return deny("bad config");
#endif
#ifdef INIT_SPIN_MS
	spin_ms(INIT_SPIN_MS);
#endif
	(void)config; (void)len;
	return 0;
}
#endif
