/*
 * limits: a storegate validator plugin in C.
 *
 * For kv writes (etcd Put and txn puts, Consul KV PUT and txn sets) it denies
 *   - values larger than max_value_bytes:
 *       "value is 2048 bytes, the limit is 1024"
 *   - keys with a byte outside key_charset:
 *       "key has character '%' at offset 5, outside a-zA-Z0-9/_.-"
 * and lets every other op continue.
 *
 * Config: {"max_value_bytes": 1024, "key_charset": "a-zA-Z0-9/_.-"}
 *   max_value_bytes  a whole number, 0 .. 4294967295
 *   key_charset      printable ASCII characters and ranges ("a-z"); a '-' that
 *                    does not sit between two characters is itself
 * Either may be left out (that check is then off), not both. Unknown fields are
 * ignored; malformed JSON, a wrong type or a bad charset make init deny, so the
 * gateway refuses to start the plugin.
 *
 * Build (from the repository root):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -o limits.wasm \
 *       plugins/examples/limits/limits.c -I plugins/sdk/c
 */
#define SG_IMPLEMENTATION
#define SG_CAPABILITIES 0 /* a validator: never mutates, no response hook */
#include "storegate.h"

#define CHARSET_MAX 256 /* longest key_charset accepted, in bytes */

/* Configuration, set by init; globals persist between calls on an instance. */
static int have_max;
static uint32_t max_value_bytes;
static int have_charset;
static uint8_t allowed[256]; /* allowed[b] != 0: byte b may appear in a key */
static char charset[CHARSET_MAX];
static uint32_t charset_len;

/* Deny reasons are built here: static, nothing allocated per call. */
static char reason[512];

/* ---- a small, strict JSON reader, enough for a flat config object -------- */

typedef struct json {
    const uint8_t *s;
    uint32_t pos, len;
    const char *err; /* the first error, or NULL */
    uint32_t err_pos;
} json;

#define JSON_MAX_DEPTH 32

static int fail(json *j, const char *err) {
    if (!j->err) {
        j->err = err;
        j->err_pos = j->pos;
    }
    return 0;
}

static void skip_ws(json *j) {
    while (j->pos < j->len) {
        uint8_t c = j->s[j->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        j->pos++;
    }
}

static int peek(json *j) { return j->pos < j->len ? j->s[j->pos] : -1; }

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads a string at j->pos (which is at its opening quote). Decoded bytes go to
 * out[0:cap) when out is not NULL; *n gets the decoded length (which may
 * exceed cap: the rest was dropped). \u escapes are decoded as UTF-8; a code
 * point of 0x80 or above sets *non_ascii. Raw control characters are
 * refused, as JSON says. */
static int read_string(json *j, char *out, uint32_t cap, uint32_t *n, int *non_ascii) {
    uint32_t k = 0;
    *n = 0;
    if (non_ascii) *non_ascii = 0;
    if (peek(j) != '"')
        return fail(j, peek(j) < 0 ? "unexpected end of input" : "expected a string");
    j->pos++;
    for (;;) {
        uint32_t cp;
        uint8_t c;
        if (j->pos >= j->len)
            return fail(j, "unterminated string");
        c = j->s[j->pos];
        if (c == '"') {
            j->pos++;
            *n = k;
            return 1;
        }
        if (c < 0x20)
            return fail(j, "control character in a string");
        if (c != '\\') {
            if (c >= 0x80 && non_ascii) *non_ascii = 1;
            if (out && k < cap) out[k] = (char)c;
            k++;
            j->pos++;
            continue;
        }
        /* an escape */
        if (j->pos + 1 >= j->len)
            return fail(j, "unterminated string");
        c = j->s[j->pos + 1];
        switch (c) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u': {
            int i;
            if (j->pos + 6 > j->len)
                return fail(j, "short \\u escape");
            cp = 0;
            for (i = 0; i < 4; i++) {
                int h = hexval(j->s[j->pos + 2 + i]);
                if (h < 0)
                    return fail(j, "bad \\u escape");
                cp = cp << 4 | (uint32_t)h;
            }
            j->pos += 4; /* plus the 2 below */
            break;
        }
        default:
            return fail(j, "bad escape in a string");
        }
        j->pos += 2;
        if (cp < 0x80) {
            if (out && k < cap) out[k] = (char)cp;
            k++;
        } else {
            /* Only ever compared or refused as non-ASCII: count its UTF-8
             * length without decoding surrogate pairs. */
            if (non_ascii) *non_ascii = 1;
            k += cp < 0x800 ? 2 : 3;
        }
    }
}

/* Reads a number at j->pos by JSON's grammar. *is_uint is set when it is a
 * plain non-negative integer; *v then holds it, saturated at UINT64_MAX. */
static int read_number(json *j, int *is_uint, uint64_t *v) {
    uint64_t x = 0;
    int neg = 0, frac = 0, over = 0;
    if (peek(j) == '-') {
        neg = 1;
        j->pos++;
    }
    if (peek(j) == '0') {
        j->pos++;
    } else if (peek(j) >= '1' && peek(j) <= '9') {
        while (peek(j) >= '0' && peek(j) <= '9') {
            uint64_t d = (uint64_t)(peek(j) - '0');
            if (x > (UINT64_MAX - d) / 10) over = 1;
            else x = x * 10 + d;
            j->pos++;
        }
    } else {
        return fail(j, "bad number");
    }
    if (peek(j) == '.') {
        frac = 1;
        j->pos++;
        if (!(peek(j) >= '0' && peek(j) <= '9'))
            return fail(j, "bad number");
        while (peek(j) >= '0' && peek(j) <= '9') j->pos++;
    }
    if (peek(j) == 'e' || peek(j) == 'E') {
        frac = 1;
        j->pos++;
        if (peek(j) == '+' || peek(j) == '-') j->pos++;
        if (!(peek(j) >= '0' && peek(j) <= '9'))
            return fail(j, "bad number");
        while (peek(j) >= '0' && peek(j) <= '9') j->pos++;
    }
    *is_uint = !neg && !frac;
    *v = over ? UINT64_MAX : x;
    return 1;
}

static int read_literal(json *j, const char *word) {
    uint32_t n = (uint32_t)strlen(word);
    if (j->len - j->pos < n || memcmp(j->s + j->pos, word, n) != 0)
        return fail(j, "unexpected character");
    j->pos += n;
    return 1;
}

/* Skips any JSON value (validating it). */
static int skip_value(json *j, int depth) {
    int c;
    skip_ws(j);
    c = peek(j);
    if (depth > JSON_MAX_DEPTH)
        return fail(j, "nested too deeply");
    if (c == '"') {
        uint32_t n;
        return read_string(j, NULL, 0, &n, NULL);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        int u;
        uint64_t v;
        return read_number(j, &u, &v);
    }
    if (c == 't') return read_literal(j, "true");
    if (c == 'f') return read_literal(j, "false");
    if (c == 'n') return read_literal(j, "null");
    if (c == '{' || c == '[') {
        int close = c == '{' ? '}' : ']';
        j->pos++;
        skip_ws(j);
        if (peek(j) == close) {
            j->pos++;
            return 1;
        }
        for (;;) {
            if (close == '}') {
                uint32_t n;
                skip_ws(j);
                if (!read_string(j, NULL, 0, &n, NULL)) return 0;
                skip_ws(j);
                if (peek(j) != ':') return fail(j, "expected ':' after a field name");
                j->pos++;
            }
            if (!skip_value(j, depth + 1)) return 0;
            skip_ws(j);
            if (peek(j) == ',') {
                j->pos++;
                continue;
            }
            if (peek(j) == close) {
                j->pos++;
                return 1;
            }
            return fail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c < 0)
        return fail(j, "unexpected end of input");
    return fail(j, "unexpected character");
}

/* ---- the charset ----------------------------------------------------------- */

/* Fills allowed[] from charset[0:charset_len). Returns an error or NULL. */
static const char *compile_charset(void) {
    uint32_t i = 0;
    memset(allowed, 0, sizeof allowed);
    if (charset_len == 0)
        return "key_charset is empty: it would deny every key";
    for (i = 0; i < charset_len; i++)
        if ((uint8_t)charset[i] < 0x20 || (uint8_t)charset[i] > 0x7E)
            return "key_charset must be printable ASCII";
    i = 0;
    while (i < charset_len) {
        uint8_t lo = (uint8_t)charset[i];
        if (i + 2 < charset_len && charset[i + 1] == '-') {
            uint8_t hi = (uint8_t)charset[i + 2];
            unsigned b;
            if (lo > hi)
                return "key_charset has a range whose start is after its end";
            for (b = lo; b <= hi; b++)
                allowed[b] = 1;
            i += 3;
        } else {
            allowed[lo] = 1;
            i++;
        }
    }
    return NULL;
}

/* ---- hooks -------------------------------------------------------------- */

/* "invalid config at offset 20: max_value_bytes must be a number" */
static sg_result deny_config(const char *what, int with_offset, uint32_t offset) {
    sg_text t;
    sg_text_init(&t, reason, sizeof reason);
    sg_text_str(&t, "invalid config");
    if (with_offset) {
        sg_text_str(&t, " at offset ");
        sg_text_u64(&t, offset);
    }
    sg_text_str(&t, ": ");
    sg_text_str(&t, what);
    return sg_deny(t.ptr, t.len);
}

sg_result sg_plugin_init(const uint8_t *config, uint32_t len) {
    json j = {config, 0, len, NULL, 0};
    int seen_max = 0, seen_charset = 0;
    const char *err;

    have_max = have_charset = 0;
    max_value_bytes = 0;
    charset_len = 0;

    skip_ws(&j);
    if (peek(&j) != '{')
        return deny_config("expected a JSON object", 1, j.pos);
    j.pos++;
    skip_ws(&j);
    if (peek(&j) == '}') {
        j.pos++;
    } else {
        for (;;) {
            char name[32];
            uint32_t n, name_pos;
            skip_ws(&j);
            name_pos = j.pos;
            if (peek(&j) >= 0 && peek(&j) != '"')
                return deny_config("expected a field name (a string)", 1, j.pos);
            if (!read_string(&j, name, sizeof name, &n, NULL))
                return deny_config(j.err, 1, j.err_pos);
            skip_ws(&j);
            if (peek(&j) != ':')
                return deny_config("expected ':' after a field name", 1, j.pos);
            j.pos++;
            skip_ws(&j);

            if (n == 15 && memcmp(name, "max_value_bytes", 15) == 0) {
                int is_uint = 0;
                uint64_t v = 0;
                uint32_t at = j.pos;
                if (seen_max)
                    return deny_config("max_value_bytes given twice", 1, name_pos);
                seen_max = 1;
                if (!(peek(&j) == '-' || (peek(&j) >= '0' && peek(&j) <= '9')))
                    return deny_config("max_value_bytes must be a number", 1, at);
                if (!read_number(&j, &is_uint, &v))
                    return deny_config(j.err, 1, j.err_pos);
                if (!is_uint)
                    return deny_config("max_value_bytes must be a whole number of bytes, 0 or more", 1, at);
                if (v > UINT32_MAX)
                    return deny_config("max_value_bytes is too large (at most 4294967295)", 1, at);
                max_value_bytes = (uint32_t)v;
                have_max = 1;
            } else if (n == 11 && memcmp(name, "key_charset", 11) == 0) {
                int non_ascii = 0;
                uint32_t at = j.pos;
                if (seen_charset)
                    return deny_config("key_charset given twice", 1, name_pos);
                seen_charset = 1;
                if (peek(&j) != '"')
                    return deny_config("key_charset must be a string", 1, at);
                if (!read_string(&j, charset, sizeof charset, &charset_len, &non_ascii))
                    return deny_config(j.err, 1, j.err_pos);
                if (non_ascii)
                    return deny_config("key_charset must be printable ASCII", 1, at);
                if (charset_len > sizeof charset)
                    return deny_config("key_charset is longer than 256 bytes", 1, at);
                have_charset = 1;
            } else if (!skip_value(&j, 1)) {
                return deny_config(j.err, 1, j.err_pos);
            }

            skip_ws(&j);
            if (peek(&j) == ',') {
                j.pos++;
                continue;
            }
            if (peek(&j) == '}') {
                j.pos++;
                break;
            }
            return deny_config(peek(&j) < 0 ? "unexpected end of input" : "expected ',' or '}'", 1, j.pos);
        }
    }
    skip_ws(&j);
    if (j.pos != j.len)
        return deny_config("unexpected data after the object", 1, j.pos);

    if (have_charset && (err = compile_charset()) != NULL) {
        have_charset = 0;
        return deny_config(err, 0, 0);
    }
    if (!have_max && !have_charset)
        return deny_config("neither max_value_bytes nor key_charset is set: nothing to check", 0, 0);

    {
        sg_text t;
        sg_text_init(&t, reason, sizeof reason);
        sg_text_str(&t, "limits ready:");
        if (have_max) {
            sg_text_str(&t, " max_value_bytes=");
            sg_text_u64(&t, max_value_bytes);
        }
        if (have_charset) {
            sg_text_str(&t, " key_charset=");
            sg_text_mem(&t, charset, charset_len);
        }
        sg_log(SG_LOG_INFO, t.ptr, t.len);
    }
    return sg_continue();
}

sg_result sg_plugin_on_request(const sg_op *op) {
    sg_text t;
    uint32_t i;

    if (op->resource != SG_RESOURCE_KV || op->action != SG_ACTION_WRITE)
        return sg_continue(); /* only kv writes; unknown ops continue */

    if (have_max && op->value.len > max_value_bytes) {
        sg_text_init(&t, reason, sizeof reason);
        sg_text_str(&t, "value is ");
        sg_text_u64(&t, op->value.len);
        sg_text_str(&t, " bytes, the limit is ");
        sg_text_u64(&t, max_value_bytes);
        return sg_deny(t.ptr, t.len);
    }

    if (have_charset) {
        for (i = 0; i < op->key.len; i++) {
            uint8_t b = op->key.ptr[i];
            if (allowed[b])
                continue;
            sg_text_init(&t, reason, sizeof reason);
            if (b >= 0x20 && b <= 0x7E) {
                sg_text_str(&t, "key has character '");
                sg_text_char(&t, (char)b);
                sg_text_char(&t, '\'');
            } else {
                sg_text_str(&t, "key has byte ");
                sg_text_hex(&t, b, 2);
            }
            sg_text_str(&t, " at offset ");
            sg_text_u64(&t, i);
            sg_text_str(&t, ", outside ");
            sg_text_mem(&t, charset, charset_len);
            return sg_deny(t.ptr, t.len);
        }
    }
    return sg_continue();
}
