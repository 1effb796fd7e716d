/* The msgpack subset the supervisor's channel uses (channel.py packs with use_bin_type):
 * maps, strings, bytes, ints and floats out; everything but ext types in. A few dozen
 * lines instead of a library: the binary stays static and small, and every clone copies
 * only that much. */
#include "sandboxd.h"

#include <stdlib.h>
#include <string.h>

void put(struct buf *b, const void *d, size_t n) {
    if (!n) return; /* (d may then be NULL: an empty capture's bytes) */
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) die("realloc");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_be(struct buf *b, uint64_t v, int n) {
    unsigned char t[8];
    for (int i = 0; i < n; i++) t[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    put(b, t, (size_t)n);
}

static void mp_head(struct buf *b, unsigned fix, unsigned fixmax, unsigned c8, unsigned c16,
                    unsigned c32, uint64_t n) {
    unsigned char c;
    if (fix && n < fixmax) { c = (unsigned char)(fix | n); put(b, &c, 1); }
    else if (c8 && n < 256) { c = (unsigned char)c8; put(b, &c, 1); put_be(b, n, 1); }
    else if (n < 65536) { c = (unsigned char)c16; put(b, &c, 1); put_be(b, n, 2); }
    else { c = (unsigned char)c32; put(b, &c, 1); put_be(b, n, 4); }
}

void mp_map(struct buf *b, uint32_t n) { mp_head(b, 0x80, 16, 0, 0xde, 0xdf, n); }

void mp_str(struct buf *b, const char *s, size_t n) {
    mp_head(b, 0xa0, 32, 0xd9, 0xda, 0xdb, n);
    put(b, s, n);
}

void mp_cstr(struct buf *b, const char *s) { mp_str(b, s, strlen(s)); }

void mp_bin(struct buf *b, const void *d, size_t n) {
    mp_bin_head(b, n);
    put(b, d, n);
}

void mp_bin_head(struct buf *b, size_t n) { mp_head(b, 0, 0, 0xc4, 0xc5, 0xc6, n); }

void mp_int(struct buf *b, int64_t v) {
    unsigned char c;
    if (v >= 0 && v < 128) { c = (unsigned char)v; put(b, &c, 1); return; }
    c = v >= 0 ? 0xcf : 0xd3;
    put(b, &c, 1);
    put_be(b, (uint64_t)v, 8);
}

void mp_float(struct buf *b, double d) {
    unsigned char c = 0xcb;
    uint64_t bits;
    memcpy(&bits, &d, 8);
    put(b, &c, 1);
    put_be(b, bits, 8);
}

static int rd_be(struct rd *r, int n, uint64_t *v) {
    if (r->end - r->p < n) return -1;
    *v = 0;
    for (int i = 0; i < n; i++) *v = (*v << 8) | r->p[i];
    r->p += n;
    return 0;
}

/* The next item's type; `n` is its value (ints), length (str, bin) or count (arr, map);
 * `data` points at a str's or bin's bytes, which are skipped. */
int mp_next(struct rd *r, uint64_t *n, const unsigned char **data) {
    if (r->p >= r->end) return T_BAD;
    unsigned c = *r->p++;
    int t = T_BAD, w = 0;
    *n = 0;
    if (c < 0x80) { *n = c; return T_INT; }
    if (c >= 0xe0) { *n = (uint64_t)(int64_t)(int8_t)c; return T_INT; }
    if ((c & 0xf0) == 0x80) { *n = c & 0x0f; return T_MAP; }
    if ((c & 0xf0) == 0x90) { *n = c & 0x0f; return T_ARR; }
    if ((c & 0xe0) == 0xa0) { *n = c & 0x1f; t = T_STR; goto bytes; }
    switch (c) {
    case 0xc0: return T_NIL;
    case 0xc2: case 0xc3: *n = c & 1; return T_BOOL;
    case 0xc4: t = T_BIN; w = 1; break;
    case 0xc5: t = T_BIN; w = 2; break;
    case 0xc6: t = T_BIN; w = 4; break;
    case 0xd9: t = T_STR; w = 1; break;
    case 0xda: t = T_STR; w = 2; break;
    case 0xdb: t = T_STR; w = 4; break;
    case 0xcc: return rd_be(r, 1, n) ? T_BAD : T_INT;
    case 0xcd: return rd_be(r, 2, n) ? T_BAD : T_INT;
    case 0xce: return rd_be(r, 4, n) ? T_BAD : T_INT;
    case 0xcf: return rd_be(r, 8, n) ? T_BAD : T_INT;
    case 0xd0: if (rd_be(r, 1, n)) return T_BAD; *n = (uint64_t)(int64_t)(int8_t)*n; return T_INT;
    case 0xd1: if (rd_be(r, 2, n)) return T_BAD; *n = (uint64_t)(int64_t)(int16_t)*n; return T_INT;
    case 0xd2: if (rd_be(r, 4, n)) return T_BAD; *n = (uint64_t)(int64_t)(int32_t)*n; return T_INT;
    case 0xd3: return rd_be(r, 8, n) ? T_BAD : T_INT;
    case 0xca: return rd_be(r, 4, n) ? T_BAD : T_FLOAT;
    case 0xcb: return rd_be(r, 8, n) ? T_BAD : T_FLOAT;
    case 0xdc: return rd_be(r, 2, n) ? T_BAD : T_ARR;
    case 0xdd: return rd_be(r, 4, n) ? T_BAD : T_ARR;
    case 0xde: return rd_be(r, 2, n) ? T_BAD : T_MAP;
    case 0xdf: return rd_be(r, 4, n) ? T_BAD : T_MAP;
    default: return T_BAD; /* ext types: never sent on this channel */
    }
    if (rd_be(r, w, n)) return T_BAD;
bytes:
    if ((uint64_t)(r->end - r->p) < *n) return T_BAD;
    *data = r->p;
    r->p += *n;
    return t;
}

int mp_skip(struct rd *r, int depth) {
    uint64_t n;
    const unsigned char *d;
    int t = mp_next(r, &n, &d);
    if (t == T_BAD || depth > 32) return -1;
    if (t == T_ARR || t == T_MAP) {
        uint64_t items = t == T_MAP ? 2 * n : n;
        for (uint64_t i = 0; i < items; i++)
            if (mp_skip(r, depth + 1)) return -1;
    }
    return 0;
}

int key_is(const unsigned char *k, uint64_t n, const char *want) {
    return n == strlen(want) && !memcmp(k, want, n);
}
