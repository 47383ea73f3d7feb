/*
 * storegate.h: a header-only C SDK for storegate plugins (plugin ABI version 1,
 * see plugins/ABI.md). Target: clang --target=wasm32-wasi -mexec-model=reactor.
 *
 * A plugin defines its hooks and includes this header once with
 * SG_IMPLEMENTATION defined, which generates the ABI's exports:
 *
 *     #define SG_IMPLEMENTATION
 *     #define SG_CAPABILITIES 0        // SG_CAP_MUTATE | SG_CAP_RESPONSE, or 0
 *     #include "storegate.h"
 *
 *     sg_result sg_plugin_init(const uint8_t *config, uint32_t len) {
 *         return sg_continue();          // or sg_deny("why", 3): refuse to start
 *     }
 *     sg_result sg_plugin_on_request(const sg_op *op) {
 *         if (op->resource == SG_RESOURCE_KV && op->action == SG_ACTION_WRITE && op->value.len > 10)
 *             return sg_deny_str("value too large");
 *         return sg_continue();
 *     }
 *     // only with SG_CAP_RESPONSE in SG_CAPABILITIES:
 *     sg_result sg_plugin_on_response(const sg_op *item) { return sg_continue(); }
 *
 * Other translation units of the same plugin include the header without
 * SG_IMPLEMENTATION.
 *
 * Lifetimes (from the ABI):
 *   - `config` in sg_plugin_init is valid only during that call: copy what you
 *     keep.
 *   - the views of an sg_op (caller, key, range_end, value, service) point into
 *     the host's input buffer and are valid only during the hook call.
 *   - a result returned by sg_deny / sg_mutate is valid until the next call into
 *     the instance; the hook must return it (calling another result helper
 *     overwrites it).
 *
 * Nothing is allocated per call: envelopes are decoded in place, results are
 * written into a static buffer (SG_RESULT_SIZE bytes; a larger result grows a
 * heap buffer once, which is then kept), input buffers come from a static arena
 * (SG_ARENA_SIZE bytes; only a buffer larger than it comes from malloc).
 *
 * Configuration macros (define them before including the header in the
 * SG_IMPLEMENTATION translation unit):
 *   SG_CAPABILITIES  capability bits (default 0: a validator with no response hook);
 *                    integers or SG_CAP_* only, since #if tests it
 *   SG_ARENA_SIZE    static arena for the host's buffers (default 80 KiB: the 64 KiB
 *                    input buffer plus up to 16 KiB of configuration, both kept live)
 *   SG_RESULT_SIZE   static result buffer (default 64 KiB)
 */
#ifndef STOREGATE_H
#define STOREGATE_H

#if !defined(__wasm32__)
#error "storegate.h targets wasm32 (build with clang --target=wasm32-wasi -mexec-model=reactor)"
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Constants from the ABI                                                    */

#define SG_ABI_VERSION 1

/* Capability bits (storegate_capabilities). Macros, so that #if can test them. */
#define SG_CAP_MUTATE 1u   /* the request hook may mutate: the plugin is a mutator */
#define SG_CAP_RESPONSE 2u /* the plugin has a response hook */

/* Op envelope flags (sg_op.flags). */
#define SG_FLAG_HAS_VALUE 0x01u
#define SG_FLAG_RANGE 0x02u
#define SG_FLAG_TXN 0x04u

#define SG_ENVELOPE_VERSION 1
#define SG_OP_HEADER_SIZE 40u
#define SG_RESULT_HEADER_SIZE 20u
#define SG_RESULT_UNCHANGED 0xFFFFFFFFu /* a result length meaning "unchanged" */

typedef enum sg_phase {
    SG_PHASE_REQUEST = 1,
    SG_PHASE_RESPONSE = 2
} sg_phase;

typedef enum sg_protocol {
    SG_PROTOCOL_ETCD = 1,
    SG_PROTOCOL_CONSUL = 2
} sg_protocol;

/* New values may appear within ABI version 1: let ops you do not know continue. */
typedef enum sg_resource {
    SG_RESOURCE_KV = 1,
    SG_RESOURCE_WATCH = 2,
    SG_RESOURCE_LEASE = 3,
    SG_RESOURCE_LOCK = 4,
    SG_RESOURCE_ELECTION = 5,
    SG_RESOURCE_SESSION = 6,
    SG_RESOURCE_SERVICE = 7,
    SG_RESOURCE_CHECK = 8,
    SG_RESOURCE_NODE = 9,
    SG_RESOURCE_CLUSTER = 10,
    SG_RESOURCE_MAINTENANCE = 11,
    SG_RESOURCE_AUTH = 12,
    SG_RESOURCE_STATUS = 13
} sg_resource;

typedef enum sg_action {
    SG_ACTION_READ = 1,
    SG_ACTION_WRITE = 2,
    SG_ACTION_DELETE = 3,
    SG_ACTION_WATCH = 4,
    SG_ACTION_GRANT = 5,
    SG_ACTION_REVOKE = 6,
    SG_ACTION_KEEPALIVE = 7,
    SG_ACTION_ACQUIRE = 8,
    SG_ACTION_RELEASE = 9,
    SG_ACTION_REGISTER = 10,
    SG_ACTION_DEREGISTER = 11,
    SG_ACTION_CAMPAIGN = 12,
    SG_ACTION_PROCLAIM = 13,
    SG_ACTION_RESIGN = 14,
    SG_ACTION_COMPACT = 15,
    SG_ACTION_ADMIN = 16
} sg_action;

typedef enum sg_verdict {
    SG_VERDICT_CONTINUE = 0,
    SG_VERDICT_DENY = 1,
    SG_VERDICT_MUTATE = 2
} sg_verdict;

typedef enum sg_log_level {
    SG_LOG_DEBUG = 0,
    SG_LOG_INFO = 1,
    SG_LOG_WARN = 2,
    SG_LOG_ERROR = 3
} sg_log_level;

/* A packed result: (pointer << 32) | length; 0 means continue. */
typedef uint64_t sg_result;

/* ------------------------------------------------------------------------ */
/* Byte views and the decoded envelope                                      */

/* A view into memory the SDK does not own; not NUL-terminated. */
typedef struct sg_bytes {
    const uint8_t *ptr;
    uint32_t len;
} sg_bytes;

/* One op envelope (request hook) or item envelope (response hook), decoded in
 * place: the views point into the envelope. */
typedef struct sg_op {
    uint8_t version;      /* envelope version, 1 */
    sg_phase phase;       /* request or response */
    sg_protocol protocol; /* etcd or consul */
    sg_resource resource;
    sg_action action;
    uint8_t flags;      /* SG_FLAG_* */
    uint16_t txn_index; /* position in the transaction, from 1; 0 outside one */
    uint64_t lease;     /* lease ID, 0 for none */
    sg_bytes caller;    /* the caller's SPIFFE ID (ABI.md does not say for items) */
    sg_bytes key;       /* Consul keys carry a leading '/' */
    sg_bytes range_end; /* etcd semantics: empty = the key alone, "\0" = every key >= key */
    sg_bytes value;
    sg_bytes service;
} sg_op;

static inline int sg_op_has_value(const sg_op *op) { return (op->flags & SG_FLAG_HAS_VALUE) != 0; }
static inline int sg_op_is_range(const sg_op *op) { return (op->flags & SG_FLAG_RANGE) != 0; }
static inline int sg_op_in_txn(const sg_op *op) { return (op->flags & SG_FLAG_TXN) != 0; }

static inline int sg_bytes_eq(sg_bytes b, const void *s, size_t n) {
    return b.len == n && (n == 0 || memcmp(b.ptr, s, n) == 0);
}
static inline int sg_bytes_eq_str(sg_bytes b, const char *s) { return sg_bytes_eq(b, s, strlen(s)); }
static inline int sg_bytes_has_prefix(sg_bytes b, const void *s, size_t n) {
    return b.len >= n && (n == 0 || memcmp(b.ptr, s, n) == 0);
}

typedef enum sg_decode_status {
    SG_DECODE_OK = 0,
    SG_DECODE_SHORT = 1,     /* shorter than the 40-byte header */
    SG_DECODE_VERSION = 2,   /* envelope version is not 1 */
    SG_DECODE_TRUNCATED = 3  /* the header's lengths run past the envelope */
} sg_decode_status;

static inline uint32_t sg__le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void sg__put_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Decodes the envelope buf[0:len) into *op. Every length is checked against
 * len; on an error *op is left zeroed. Bytes after the variable parts are
 * ignored; so is the reserved header field. */
static inline sg_decode_status sg_op_decode(const uint8_t *buf, uint32_t len, sg_op *op) {
    uint32_t lens[5];
    uint64_t total = SG_OP_HEADER_SIZE;
    const uint8_t *p;
    int i;

    memset(op, 0, sizeof *op);
    if (buf == NULL || len < SG_OP_HEADER_SIZE)
        return SG_DECODE_SHORT;
    if (buf[0] != SG_ENVELOPE_VERSION)
        return SG_DECODE_VERSION;
    for (i = 0; i < 5; i++) {
        lens[i] = sg__le32(buf + 16 + 4 * i);
        total += lens[i]; /* 40 + 5 * (2^32 - 1) cannot overflow 64 bits */
    }
    if (total > len)
        return SG_DECODE_TRUNCATED;

    op->version = buf[0];
    op->phase = (sg_phase)buf[1];
    op->protocol = (sg_protocol)buf[2];
    op->resource = (sg_resource)buf[3];
    op->action = (sg_action)buf[4];
    op->flags = buf[5];
    op->txn_index = (uint16_t)(buf[6] | buf[7] << 8);
    op->lease = (uint64_t)sg__le32(buf + 8) | (uint64_t)sg__le32(buf + 12) << 32;

    p = buf + SG_OP_HEADER_SIZE;
    op->caller.ptr = p;    op->caller.len = lens[0];    p += lens[0];
    op->key.ptr = p;       op->key.len = lens[1];       p += lens[1];
    op->range_end.ptr = p; op->range_end.len = lens[2]; p += lens[2];
    op->value.ptr = p;     op->value.len = lens[3];     p += lens[3];
    op->service.ptr = p;   op->service.len = lens[4];
    return SG_DECODE_OK;
}

static inline const char *sg_decode_status_string(sg_decode_status s) {
    switch (s) {
    case SG_DECODE_OK: return "ok";
    case SG_DECODE_SHORT: return "shorter than its 40-byte header";
    case SG_DECODE_VERSION: return "envelope version is not 1";
    case SG_DECODE_TRUNCATED: return "its lengths run past its end";
    }
    return "unknown error";
}

/* ------------------------------------------------------------------------ */
/* Logging: the storegate.log import                                         */

__attribute__((import_module("storegate"), import_name("log")))
void sg__import_log(int32_t level, const uint8_t *ptr, uint32_t len);

/* Writes msg[0:len) to the gateway's log, tagged with the plugin's name.
 * The host cuts messages over 4 KiB. */
static inline void sg_log(sg_log_level level, const char *msg, size_t len) {
    sg__import_log((int32_t)level, (const uint8_t *)msg, (uint32_t)len);
}
static inline void sg_log_str(sg_log_level level, const char *msg) { sg_log(level, msg, strlen(msg)); }

/* ------------------------------------------------------------------------ */
/* A small text builder over a caller's buffer (no printf, no allocation).   */

typedef struct sg_text {
    char *ptr;
    size_t len, cap;
    int truncated; /* set when something did not fit; the text is cut */
} sg_text;

static inline void sg_text_init(sg_text *t, char *buf, size_t cap) {
    t->ptr = buf;
    t->len = 0;
    t->cap = cap;
    t->truncated = 0;
}
static inline void sg_text_mem(sg_text *t, const void *s, size_t n) {
    size_t room = t->cap - t->len;
    if (n > room) {
        n = room;
        t->truncated = 1;
    }
    if (n)
        memcpy(t->ptr + t->len, s, n);
    t->len += n;
}
static inline void sg_text_str(sg_text *t, const char *s) { sg_text_mem(t, s, strlen(s)); }
static inline void sg_text_char(sg_text *t, char c) { sg_text_mem(t, &c, 1); }
static inline void sg_text_bytes(sg_text *t, sg_bytes b) { sg_text_mem(t, b.ptr, b.len); }
static inline void sg_text_u64(sg_text *t, uint64_t v) {
    char d[20];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sg_text_mem(t, d + i, sizeof d - i);
}
/* Appends v as 0x followed by `digits` upper-case hex digits (1..16). */
static inline void sg_text_hex(sg_text *t, uint64_t v, int digits) {
    static const char hex[] = "0123456789ABCDEF";
    char d[18];
    int i;
    if (digits < 1) digits = 1;
    if (digits > 16) digits = 16;
    d[0] = '0';
    d[1] = 'x';
    for (i = 0; i < digits; i++)
        d[2 + i] = hex[(v >> (4 * (digits - 1 - i))) & 0xF];
    sg_text_mem(t, d, (size_t)digits + 2);
}

/* ------------------------------------------------------------------------ */
/* Results                                                                   */

/* Let the op (or item) continue unchanged. A packed result of 0 is continue. */
static inline sg_result sg_continue(void) { return 0; }

/* Deny with reason[0:len), said to the caller (for init: refuse to start). */
sg_result sg_deny(const char *reason, size_t len);
static inline sg_result sg_deny_str(const char *reason) { return sg_deny(reason, strlen(reason)); }

/* Rewrite the op: each field is unchanged when its pointer is NULL (write
 * SG_KEEP for the pair); set an empty value with a non-NULL pointer and length
 * 0 (e.g. "", 0). With all three unchanged it returns continue. Only a mutator
 * (SG_CAP_MUTATE) may mutate in its request hook; a response hook may not
 * change the range end; a new key may not be empty. The SDK copies the data,
 * so the pointers may point into the op. */
#define SG_KEEP NULL, 0
sg_result sg_mutate(const void *key, size_t key_len, const void *range_end, size_t range_end_len,
                    const void *value, size_t value_len);
static inline sg_result sg_mutate_key(const void *key, size_t len) { return sg_mutate(key, len, SG_KEEP, SG_KEEP); }
static inline sg_result sg_mutate_value(const void *value, size_t len) { return sg_mutate(SG_KEEP, SG_KEEP, value, len); }

/* ------------------------------------------------------------------------ */
/* The hooks a plugin defines                                                */

/* Required. config: the plugin's configuration (JSON; "{}" when none), valid
 * only during the call. Return sg_continue() when ready, sg_deny(...) to
 * refuse to start. */
sg_result sg_plugin_init(const uint8_t *config, uint32_t len);
/* Required. One op, after policy allowed it. */
sg_result sg_plugin_on_request(const sg_op *op);
/* Required when SG_CAPABILITIES has SG_CAP_RESPONSE. One item going back. */
sg_result sg_plugin_on_response(const sg_op *item);

#ifdef __cplusplus
}
#endif

#endif /* STOREGATE_H */

/* ======================================================================== */
/* Implementation: the exports, the allocator and the result buffer. Compiled */
/* in the one translation unit that defines SG_IMPLEMENTATION.                */

#if defined(SG_IMPLEMENTATION) && !defined(SG__IMPLEMENTED)
#define SG__IMPLEMENTED

#include <stdlib.h>

#ifndef SG_CAPABILITIES
#define SG_CAPABILITIES 0
#endif
#ifndef SG_ARENA_SIZE
#define SG_ARENA_SIZE (80u * 1024u)
#endif
#ifndef SG_RESULT_SIZE
#define SG_RESULT_SIZE (64u * 1024u)
#endif
#if SG_RESULT_SIZE < 64
#error "SG_RESULT_SIZE must be at least 64 bytes"
#endif

#define SG__EXPORT(name) __attribute__((export_name(name), visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

/* A failure the host must handle as one (its failure policy applies, the
 * instance is replaced): log why, then trap. */
__attribute__((noreturn, cold)) static void sg__fail(const char *what, const char *detail) {
    char buf[256];
    sg_text t;
    sg_text_init(&t, buf, sizeof buf);
    sg_text_str(&t, "storegate sdk: ");
    sg_text_str(&t, what);
    if (detail) {
        sg_text_str(&t, ": ");
        sg_text_str(&t, detail);
    }
    sg_log(SG_LOG_ERROR, t.ptr, t.len);
    __builtin_trap();
}

/* ---- storegate_alloc: a bump allocator over a static arena --------------
 * The ABI lets the guest reclaim a buffer once the host asks for a new one.
 * A new buffer is placed after the previous one when it fits in the arena
 * (so the configuration buffer survives the input buffer's allocation even
 * if a host allocated both before init), and at the arena's start otherwise.
 * A buffer larger than the arena comes from malloc and is freed at the next
 * request. */
static uint8_t sg__arena[SG_ARENA_SIZE] __attribute__((aligned(16)));
static uint32_t sg__arena_top;  /* end of the last arena buffer handed out */
static void *sg__heap_buffer;   /* the last heap buffer handed out, or NULL */

SG__EXPORT("storegate_alloc") uint8_t *storegate_alloc(uint32_t size) {
    uint32_t start;
    if (sg__heap_buffer) {
        free(sg__heap_buffer);
        sg__heap_buffer = NULL;
    }
    if (size <= SG_ARENA_SIZE) {
        start = sg__arena_top;
        if (SG_ARENA_SIZE - start < size)
            start = 0;
        sg__arena_top = start + size;
        sg__arena_top = (sg__arena_top + 15u) & ~15u;
        if (sg__arena_top > SG_ARENA_SIZE)
            sg__arena_top = SG_ARENA_SIZE;
        return sg__arena + start;
    }
    sg__heap_buffer = malloc(size); /* NULL (0): out of memory */
    return (uint8_t *)sg__heap_buffer;
}

/* ---- the result buffer --------------------------------------------------- */
static uint8_t sg__result_static[SG_RESULT_SIZE] __attribute__((aligned(16)));
static uint8_t *sg__result_heap;  /* kept once grown, so steady state allocates nothing */
static uint32_t sg__result_heap_cap;

static uint8_t *sg__result_buffer(uint64_t n) {
    if (n <= SG_RESULT_SIZE)
        return sg__result_static;
    if (n > 0x7FFFFFFFu)
        sg__fail("result too large", NULL);
    if (n > sg__result_heap_cap) {
        /* the previous result is dead: we are in the next call */
        free(sg__result_heap);
        sg__result_heap_cap = 0;
        sg__result_heap = (uint8_t *)malloc((size_t)n);
        if (sg__result_heap == NULL)
            sg__fail("out of memory for a result", NULL);
        sg__result_heap_cap = (uint32_t)n;
    }
    return sg__result_heap;
}

static sg_result sg__pack(const uint8_t *p, uint32_t n) {
    return (uint64_t)(uintptr_t)p << 32 | (uint64_t)n;
}

static void sg__result_header(uint8_t *r, sg_verdict v, uint32_t reason, uint32_t key, uint32_t end,
                              uint32_t value) {
    r[0] = (uint8_t)v;
    r[1] = r[2] = r[3] = 0;
    sg__put_le32(r + 4, reason);
    sg__put_le32(r + 8, key);
    sg__put_le32(r + 12, end);
    sg__put_le32(r + 16, value);
}

sg_result sg_deny(const char *reason, size_t len) {
    uint8_t *r;
    if (reason == NULL)
        len = 0;
    r = sg__result_buffer((uint64_t)SG_RESULT_HEADER_SIZE + len);
    /* The mutate lengths of a deny say "unchanged". */
    sg__result_header(r, SG_VERDICT_DENY, (uint32_t)len, SG_RESULT_UNCHANGED, SG_RESULT_UNCHANGED,
                      SG_RESULT_UNCHANGED);
    if (len)
        memcpy(r + SG_RESULT_HEADER_SIZE, reason, len);
    return sg__pack(r, (uint32_t)(SG_RESULT_HEADER_SIZE + len));
}

sg_result sg_mutate(const void *key, size_t key_len, const void *range_end, size_t range_end_len,
                    const void *value, size_t value_len) {
    uint64_t n = SG_RESULT_HEADER_SIZE;
    uint8_t *r, *p;
    if (!key && !range_end && !value)
        return 0; /* nothing changes: continue */
    if (key) n += key_len;
    if (range_end) n += range_end_len;
    if (value) n += value_len;
    if (key && key_len == 0)
        sg_log_str(SG_LOG_ERROR, "storegate sdk: sg_mutate with an empty key breaks the ABI; the host will fail the call");
    r = sg__result_buffer(n);
    sg__result_header(r, SG_VERDICT_MUTATE, 0,
                      key ? (uint32_t)key_len : SG_RESULT_UNCHANGED,
                      range_end ? (uint32_t)range_end_len : SG_RESULT_UNCHANGED,
                      value ? (uint32_t)value_len : SG_RESULT_UNCHANGED);
    p = r + SG_RESULT_HEADER_SIZE;
    /* memmove: the sources may be anywhere, the input buffer included */
    if (key && key_len) { memmove(p, key, key_len); p += key_len; }
    if (range_end && range_end_len) { memmove(p, range_end, range_end_len); p += range_end_len; }
    if (value && value_len) { memmove(p, value, value_len); }
    return sg__pack(r, (uint32_t)n);
}

/* The result a packed result points at (check it is non-zero first). */
static const uint8_t *sg__unpack(sg_result res) {
    return (const uint8_t *)(uintptr_t)(uint32_t)(res >> 32);
}

/* ---- the exports ---------------------------------------------------------- */
SG__EXPORT("storegate_abi_version") int32_t storegate_abi_version(void) { return SG_ABI_VERSION; }

SG__EXPORT("storegate_capabilities") int32_t storegate_capabilities(void) { return (int32_t)(SG_CAPABILITIES); }

SG__EXPORT("storegate_init") sg_result storegate_init(const uint8_t *ptr, uint32_t len) {
    return sg_plugin_init(ptr, len);
}

SG__EXPORT("storegate_on_request") sg_result storegate_on_request(const uint8_t *ptr, uint32_t len) {
    sg_op op;
    sg_result res;
    sg_decode_status st = sg_op_decode(ptr, len, &op);
    if (st != SG_DECODE_OK)
        sg__fail("malformed op envelope", sg_decode_status_string(st));
    res = sg_plugin_on_request(&op);
#if !((SG_CAPABILITIES) & SG_CAP_MUTATE)
    if (res != 0 && (uint32_t)res >= 1 && sg__unpack(res)[0] == SG_VERDICT_MUTATE)
        sg_log_str(SG_LOG_ERROR, "storegate sdk: a validator (no SG_CAP_MUTATE in SG_CAPABILITIES) returned "
                                 "mutate; the host will fail the call");
#endif
    return res;
}

#if (SG_CAPABILITIES) & SG_CAP_RESPONSE
SG__EXPORT("storegate_on_response") sg_result storegate_on_response(const uint8_t *ptr, uint32_t len) {
    sg_op item;
    sg_result res;
    sg_decode_status st = sg_op_decode(ptr, len, &item);
    if (st != SG_DECODE_OK)
        sg__fail("malformed item envelope", sg_decode_status_string(st));
    res = sg_plugin_on_response(&item);
    if (res != 0 && (uint32_t)res >= SG_RESULT_HEADER_SIZE && sg__unpack(res)[0] == SG_VERDICT_MUTATE &&
        sg__le32(sg__unpack(res) + 12) != SG_RESULT_UNCHANGED)
        sg_log_str(SG_LOG_ERROR, "storegate sdk: a response hook changed the range end; the host will fail "
                                 "the call");
    return res;
}
#endif

#ifdef __cplusplus
}
#endif

#endif /* SG_IMPLEMENTATION */
