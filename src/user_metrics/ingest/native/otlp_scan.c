/* otlp_scan.c: one pass over an OTLP ExportTraceServiceRequest's protobuf bytes that validates the
 * whole body as upb does and splits its spans into "plain" ones (reduced to their ids) and
 * "candidates" (copied verbatim into a smaller request for the Python mapper).
 *
 * Design
 * ------
 * The body is walked once, top down, by hand-written readers for the five levels that matter
 * (request, ResourceSpans, ScopeSpans, Span, a span's KeyValue) and by one table-driven walker
 * (`walk`) for every other message of the schema (Resource, InstrumentationScope, AnyValue,
 * ArrayValue, KeyValueList, EntityRef, Event, Link, Status): those are only validated. Nothing is
 * allocated per span; outputs go to two growable buffers.
 *
 * A span is plain when its ids are well formed (trace_id 16 bytes not all zero, span_id 8 bytes not
 * all zero, parent_span_id empty or 8 bytes not all zero) and none of its first `max_attributes` attribute keys
 * hits the table: an exact key (open-addressing hash set, hashed on length + first and last 8
 * bytes), a property prefix or an LLM-like prefix followed by an LLM-like word before any '\n'
 * (prefixes are bucketed by their first byte). Everything else is a candidate.
 *
 * Validity is upb's, measured against protobuf 7 (tests/ingest/test_native_validity.py holds one
 * case per rule): a tag is at most 5 bytes and at most UINT32_MAX; field number 0 is refused in a message
 * (but skipped inside an unknown group, as upb does); a varint is at most 10 bytes; a length is at
 * most 5 bytes and never past the end of its enclosing message; wire types 6 and 7 are refused; an
 * end-group tag outside the group it closes is refused; a known field with another wire type than
 * its own is an unknown field (upb keeps it as unknown, it does not refuse it); unknown fields are
 * skipped, groups included (their content is only checked for wire format); every proto3 `string`
 * field of the schema must be valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
 *
 * Bounds
 * ------
 * - Bodies of OTS_MAX_BODY bytes or more are refused.
 * - Every length is checked against the bytes left in its enclosing message before it is used;
 *   no read goes past `end` of the current message.
 * - Nesting: the request is level 0, each message or group one level deeper; a level above
 *   OTS_MAX_LEVEL (100, upb's default) is refused. The C recursion is therefore at most ~100
 *   frames deep (walk / skip_group), each a few dozen bytes.
 * - Output: candidates are at most the size of the body (a subset of its bytes, with lengths
 *   re-encoded minimally); plain records are 40 bytes per span of at least 30 input bytes.
 * - Work is linear in the body size, except the LLM-like test, which is linear in key length times
 *   the (small, fixed) number of words.
 */
#include "otlp_scan.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The readers of the hot loops are small and called from a few places each: inlined. */
#if defined(__GNUC__) || defined(__clang__)
#define HOT_INLINE static inline __attribute__((always_inline))
#else
#define HOT_INLINE static inline
#endif

/* ---- the table --------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *data;
    size_t len;
    uint64_t head, mask; /* its first (up to) 8 bytes as a word (head_of), and the mask of those */
} span_str; /* a string owned by the table */

/* Strings grouped by first byte: bucket b holds items[start[b] .. start[b+1]); empty strings are
 * counted apart (they match every key). */
typedef struct {
    span_str *items;
    size_t count;
    size_t start[257];
    size_t empty; /* how many empty strings */
} bucketed;

struct ots_table {
    span_str *keys; /* hash set of exact keys, open addressing, NULL data = free slot */
    size_t mask;    /* slots - 1 (power of two) */
    bucketed prefixes, like_prefixes;
    span_str *words;
    size_t nwords;
    uint8_t *arena; /* every string's bytes */
};

static uint64_t load_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Cheap hash for short keys: length, first and last 8 bytes, mixed (keys sharing a long prefix
 * and suffix collide and are told apart by memcmp; the probe sequence is bounded by the table). */
static inline uint64_t key_hash(const uint8_t *p, size_t n) {
    uint64_t a, b;
    if (n >= 8) {
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
    } else {
        a = load_le(p, n);
        b = 0;
    }
    uint64_t h = (a ^ (n * 0x9E3779B97F4A7C15ull)) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    h += b * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 32;
    return h * 0x9E3779B97F4A7C15ull;
}

static inline bool is_exact_key(const ots_table *t, const uint8_t *k, size_t n, uint64_t kh);

/* The first (up to) 8 bytes of a string as a word (native byte order), zero-padded. */
static inline uint64_t head_of(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    memcpy(&v, p, n < 8 ? n : 8);
    return v;
}

static void set_head(span_str *s) {
    s->head = head_of(s->data, s->len);
    s->mask = 0;
    memset(&s->mask, 0xFF, s->len < 8 ? s->len : 8); /* the bytes head_of filled, in the same order */
}

static bool bucket_build(bucketed *bk, const ots_str *src, size_t n, uint8_t **arena) {
    size_t counts[256] = {0};
    bk->items = calloc(n ? n : 1, sizeof(span_str));
    if (!bk->items) return false;
    bk->empty = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i].len == 0)
            bk->empty++;
        else
            counts[(uint8_t)src[i].data[0]]++;
    }
    bk->start[0] = 0;
    for (int b = 0; b < 256; b++) bk->start[b + 1] = bk->start[b] + counts[b];
    bk->count = bk->start[256];
    size_t fill[256];
    memcpy(fill, bk->start, sizeof(fill));
    for (size_t i = 0; i < n; i++) {
        if (src[i].len == 0) continue;
        span_str *s = &bk->items[fill[(uint8_t)src[i].data[0]]++];
        memcpy(*arena, src[i].data, src[i].len);
        s->data = *arena;
        s->len = src[i].len;
        set_head(s);
        *arena += src[i].len;
    }
    return true;
}

ots_table *ots_table_new(const ots_str *keys, size_t nkeys, const ots_str *prefixes, size_t nprefixes,
                         const ots_str *like_prefixes, size_t nlike_prefixes, const ots_str *like_words,
                         size_t nlike_words) {
    size_t total = 1;
    for (size_t i = 0; i < nkeys; i++) total += keys[i].len;
    for (size_t i = 0; i < nprefixes; i++) total += prefixes[i].len;
    for (size_t i = 0; i < nlike_prefixes; i++) total += like_prefixes[i].len;
    for (size_t i = 0; i < nlike_words; i++) total += like_words[i].len;
    ots_table *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    size_t slots = 16;
    while (slots < 4 * nkeys) slots *= 2;
    t->mask = slots - 1;
    t->arena = malloc(total);
    t->keys = calloc(slots, sizeof(span_str));
    t->words = calloc(nlike_words ? nlike_words : 1, sizeof(span_str));
    if (!t->arena || !t->keys || !t->words) goto fail;
    uint8_t *arena = t->arena;
    for (size_t i = 0; i < nkeys; i++) {
        const uint8_t *k = (const uint8_t *)keys[i].data;
        if (is_exact_key(t, k, keys[i].len, head_of(k, keys[i].len))) continue; /* a duplicate */
        size_t j = (size_t)key_hash(k, keys[i].len) & t->mask;
        while (t->keys[j].data) j = (j + 1) & t->mask;
        memcpy(arena, k, keys[i].len);
        t->keys[j].data = arena;
        t->keys[j].len = keys[i].len;
        set_head(&t->keys[j]);
        arena += keys[i].len;
    }
    if (!bucket_build(&t->prefixes, prefixes, nprefixes, &arena)) goto fail;
    if (!bucket_build(&t->like_prefixes, like_prefixes, nlike_prefixes, &arena)) goto fail;
    for (size_t i = 0; i < nlike_words; i++) {
        memcpy(arena, like_words[i].data, like_words[i].len);
        t->words[i].data = arena;
        t->words[i].len = like_words[i].len;
        arena += like_words[i].len;
    }
    t->nwords = nlike_words;
    return t;
fail:
    ots_table_free(t);
    return NULL;
}

void ots_table_free(ots_table *t) {
    if (!t) return;
    free(t->keys);
    free(t->prefixes.items);
    free(t->like_prefixes.items);
    free(t->words);
    free(t->arena);
    free(t);
}

static inline bool is_exact_key(const ots_table *t, const uint8_t *k, size_t n, uint64_t kh) {
    size_t j = (size_t)key_hash(k, n) & t->mask;
    /* the set is at most a quarter full, so a free slot ends every probe sequence */
    while (t->keys[j].data) {
        const span_str *e = &t->keys[j];
        if (e->len == n && e->head == kh && (n <= 8 || memcmp(e->data + 8, k + 8, n - 8) == 0)) return true;
        j = (j + 1) & t->mask;
    }
    return false;
}

/* True when `k` (whose head_of is `kh`) starts with `p`: the first 8 bytes compared as one word. */
static inline bool has_prefix(const span_str *p, const uint8_t *k, size_t n, uint64_t kh) {
    return p->len <= n && (kh & p->mask) == p->head &&
           (p->len <= 8 || memcmp(p->data + 8, k + 8, p->len - 8) == 0);
}

/* True when `k` starts with one of the strings of `bk` (an empty one matches every key). */
static inline bool starts_with_any(const bucketed *bk, const uint8_t *k, size_t n, uint64_t kh) {
    if (bk->empty) return true;
    if (n == 0 || bk->count == 0) return false;
    for (size_t i = bk->start[k[0]]; i < bk->start[k[0] + 1]; i++)
        if (has_prefix(&bk->items[i], k, n, kh)) return true;
    return false;
}

/* re.match("(?:P1|P2|..)[^\n]*?(?:W1|W2|..)", key): some like-prefix P starts the key and some
 * word W starts at a position p >= len(P) with no '\n' in key[len(P):p]. */
static bool after_prefix_has_word(const ots_table *t, const uint8_t *k, size_t n, size_t from) {
    for (size_t p = from; p <= n; p++) {
        for (size_t w = 0; w < t->nwords; w++) {
            size_t wl = t->words[w].len;
            if (wl <= n - p && memcmp(k + p, t->words[w].data, wl) == 0) return true;
        }
        if (p < n && k[p] == '\n') break;
    }
    return false;
}

static bool is_llm_like(const ots_table *t, const uint8_t *k, size_t n, uint64_t kh) {
    const bucketed *bk = &t->like_prefixes;
    if (t->nwords == 0) return false;
    if (bk->empty && after_prefix_has_word(t, k, n, 0)) return true;
    if (n == 0 || bk->count == 0) return false;
    for (size_t i = bk->start[k[0]]; i < bk->start[k[0] + 1]; i++) {
        const span_str *p = &bk->items[i];
        if (has_prefix(p, k, n, kh) && after_prefix_has_word(t, k, n, p->len)) return true;
    }
    return false;
}

int ots_key_hits(const ots_table *t, const uint8_t *k, size_t n) {
    uint64_t kh = head_of(k, n);
    if (is_exact_key(t, k, n, kh)) return 1;
    if (starts_with_any(&t->prefixes, k, n, kh)) return 1;
    if (is_llm_like(t, k, n, kh)) return 1;
    return 0;
}

/* ---- output buffers ---------------------------------------------------------------------------- */

typedef struct {
    const ots_table *t;
    uint64_t max_attributes;
    ots_result *r;
    const uint8_t *body;
    uint32_t ordinal;
    const char *err;
    const uint8_t *err_at;
    bool nomem;
} state;

static bool fail(state *s, const uint8_t *at, const char *why) {
    if (!s->err) {
        s->err = why;
        s->err_at = at;
    }
    return false;
}

static bool reserve(state *s, ots_buf *b, size_t n) {
    if (b->cap - b->len >= n) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) return s->nomem = true, fail(s, NULL, "out of memory");
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (!data) return s->nomem = true, fail(s, NULL, "out of memory");
    b->data = data;
    b->cap = cap;
    return true;
}

static bool put(state *s, ots_buf *b, const void *src, size_t n) {
    if (!reserve(s, b, n)) return false;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return true;
}

/* A length-delimited field whose length is known only at its end: the tag, then 5 reserved bytes
 * (enough for any length below 2^35); `close_delimited` writes the minimal varint and moves the
 * content back over the unused reserved bytes. Returns the content's offset. */
static bool open_delimited(state *s, ots_buf *b, uint8_t tag, size_t *content) {
    if (!reserve(s, b, 6)) return false;
    b->data[b->len++] = tag;
    b->len += 5;
    *content = b->len;
    return true;
}

static void close_delimited(ots_buf *b, size_t content) {
    size_t n = b->len - content;
    uint8_t v[5];
    size_t k = 0;
    do {
        v[k] = (uint8_t)(n & 0x7f);
        n >>= 7;
        if (n) v[k] |= 0x80;
        k++;
    } while (n && k < 5);
    uint8_t *head = b->data + content - 5;
    memmove(head + k, b->data + content, b->len - content);
    memcpy(head, v, k);
    b->len -= 5 - k;
}

/* ---- wire format ------------------------------------------------------------------------------- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* A varint of at most `max` bytes, all before `end`. Bits past 64 are dropped, as upb does. */
static inline bool read_varint(const uint8_t **pp, const uint8_t *end, int max, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int i = 0; i < max && p < end; i++) {
        uint8_t byte = *p++;
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *pp = p;
            *out = v;
            return true;
        }
    }
    return false;
}

/* A tag: at most 5 bytes and at most UINT32_MAX (upb's _upb_Decoder_DecodeTag). */
HOT_INLINE bool read_tag(state *s, const uint8_t **pp, const uint8_t *end, uint32_t *field,
                            uint32_t *wt) {
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) { /* one-byte tags: fields 1-15 */
        *field = *p >> 3;
        *wt = *p & 7;
        *pp = p + 1;
        return true;
    }
    uint64_t v;
    if (!read_varint(pp, end, 5, &v) || v > 0xFFFFFFFFu) return fail(s, p, "malformed tag");
    *field = (uint32_t)(v >> 3);
    *wt = (uint32_t)(v & 7);
    return true;
}

/* A length prefix: at most 5 bytes (as upb reads them) and within the enclosing message. */
HOT_INLINE bool read_len(state *s, const uint8_t **pp, const uint8_t *end, size_t *len) {
    const uint8_t *p = *pp;
    uint64_t v;
    if (p < end && *p < 0x80) {
        v = *p;
        *pp = p + 1;
    } else if (!read_varint(pp, end, 5, &v)) {
        return fail(s, p, "malformed length");
    }
    if (v > (uint64_t)(end - *pp)) return fail(s, p, "length past the end of its message");
    *len = (size_t)v;
    return true;
}

static bool skip_group(state *s, const uint8_t **pp, const uint8_t *end, uint32_t field, int level);

/* Skips the value of a field this reader does not look into (unknown, or a known field with a
 * foreign wire type, which upb also keeps as unknown). */
static bool skip_value(state *s, const uint8_t **pp, const uint8_t *end, uint32_t field, uint32_t wt,
                       int level) {
    const uint8_t *p = *pp;
    uint64_t v;
    size_t n;
    switch (wt) {
        case WT_VARINT:
            if (!read_varint(pp, end, 10, &v)) return fail(s, p, "malformed varint");
            return true;
        case WT_I64:
            if (end - p < 8) return fail(s, p, "truncated fixed64");
            *pp = p + 8;
            return true;
        case WT_I32:
            if (end - p < 4) return fail(s, p, "truncated fixed32");
            *pp = p + 4;
            return true;
        case WT_LEN:
            if (!read_len(s, pp, end, &n)) return false;
            *pp += n;
            return true;
        case WT_SGROUP:
            return skip_group(s, pp, end, field, level + 1);
        case WT_EGROUP:
            return fail(s, p, "end-group tag outside its group");
        default:
            return fail(s, p, "invalid wire type");
    }
}

/* skip_value with the scalar wire types inline (the common case in the loops below). */
HOT_INLINE bool skip_fast(state *s, const uint8_t **pp, const uint8_t *end, uint32_t field, uint32_t wt,
                             int level) {
    const uint8_t *p = *pp;
    if (wt == WT_VARINT) {
        const uint8_t *limit = end - p > 10 ? p + 10 : end;
        while (p < limit)
            if (!(*p++ & 0x80)) {
                *pp = p;
                return true;
            }
        return fail(s, *pp, "malformed varint");
    }
    if (wt == WT_I64 && end - p >= 8) {
        *pp = p + 8;
        return true;
    }
    if (wt == WT_I32 && end - p >= 4) {
        *pp = p + 4;
        return true;
    }
    return skip_value(s, pp, end, field, wt, level);
}

/* An unknown group at `level`: fields until the end-group tag of the same number. As in upb, the
 * fields inside are only checked for wire format (field number 0 is allowed there). */
static bool skip_group(state *s, const uint8_t **pp, const uint8_t *end, uint32_t field, int level) {
    if (level > OTS_MAX_LEVEL) return fail(s, *pp, "nesting too deep");
    for (;;) {
        if (*pp >= end) return fail(s, *pp, "unterminated group");
        uint32_t f, wt;
        if (!read_tag(s, pp, end, &f, &wt)) return false;
        if (wt == WT_EGROUP) {
            if (f == field) return true;
            return fail(s, *pp, "end-group tag of another group");
        }
        if (!skip_value(s, pp, end, f, wt, level)) return false;
    }
}

/* A tag inside a message: besides read_tag's checks, field 0 and end-group tags are refused. */
HOT_INLINE bool message_tag(state *s, const uint8_t **pp, const uint8_t *end, uint32_t *field,
                               uint32_t *wt) {
    const uint8_t *at = *pp;
    if (!read_tag(s, pp, end, field, wt)) return false;
    if (*wt == WT_EGROUP) return fail(s, at, "end-group tag outside a group");
    if (*field == 0) return fail(s, at, "field number 0");
    return true;
}

/* One field of a message at `level`, read by next_field. */
typedef struct {
    const uint8_t *start; /* its tag */
    const uint8_t *val;   /* the value of a length-delimited field, `n` bytes */
    size_t n;
    uint32_t field;
    bool delimited;
} field_view;

/* Reads the next field's tag. A length-delimited field's value is left to the caller (`f->val`,
 * `f->n`); any other is skipped here and, when `copy` is given, copied there verbatim. */
HOT_INLINE bool next_field(state *s, const uint8_t **pp, const uint8_t *end, int level, ots_buf *copy,
                              field_view *f) {
    uint32_t wt;
    f->start = *pp;
    if (!message_tag(s, pp, end, &f->field, &wt)) return false;
    f->delimited = wt == WT_LEN;
    if (!f->delimited) {
        if (!skip_fast(s, pp, end, f->field, wt, level)) return false;
        return !copy || put(s, copy, f->start, (size_t)(*pp - f->start));
    }
    if (!read_len(s, pp, end, &f->n)) return false;
    f->val = *pp;
    *pp += f->n;
    return true;
}

static bool utf8_valid(const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    while (p < end) {
        if (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (!(w & 0x8080808080808080ull)) {
                p += 8;
                continue;
            }
        }
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
        } else if (c < 0xC2) { /* a continuation byte, or an overlong 2-byte form */
            return false;
        } else if (c < 0xE0) {
            if (end - p < 2 || (p[1] & 0xC0) != 0x80) return false;
            p += 2;
        } else if (c < 0xF0) {
            if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return false;
            if (c == 0xE0 && p[1] < 0xA0) return false;  /* overlong */
            if (c == 0xED && p[1] >= 0xA0) return false; /* UTF-16 surrogates */
            p += 3;
        } else if (c < 0xF5) {
            if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
                return false;
            if (c == 0xF0 && p[1] < 0x90) return false;  /* overlong */
            if (c == 0xF4 && p[1] >= 0x90) return false; /* past U+10FFFF */
            p += 4;
        } else {
            return false;
        }
    }
    return true;
}

/* ASCII is checked inline 8 bytes at a time; the first non-ASCII byte hands over to utf8_valid. */
HOT_INLINE bool check_utf8(state *s, const uint8_t *p, size_t n) {
    uint64_t w, high = 0;
    if (n >= 8) { /* whole words, the last one overlapping the previous one */
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&w, p + i, 8);
            high |= w;
        }
        memcpy(&w, p + n - 8, 8);
        high |= w;
    } else {
        for (size_t i = 0; i < n; i++) high |= p[i];
    }
    if (!(high & 0x8080808080808080ull)) return true;
    return utf8_valid(p, n) || fail(s, p, "invalid UTF-8 in a string field");
}

/* ---- the schema, for the messages that are only validated ---------------------------------------- */

enum { F_OTHER = 0, F_STRING, F_MESSAGE };

typedef struct msgdef {
    const char *name;
    uint8_t max_field;        /* fields above are unknown */
    uint8_t kind[17];         /* per field number, for the length-delimited wire type */
    const struct msgdef *sub[17];
} msgdef;

/* Forward declarations: AnyValue, ArrayValue, KeyValueList and KeyValue nest into each other. */
static const msgdef ANY_VALUE, ARRAY_VALUE, KEY_VALUE_LIST, KEY_VALUE;

/* opentelemetry.proto.common.v1 */
static const msgdef ANY_VALUE = {
    "AnyValue", 8,
    /* 1 string_value, 2 bool, 3 int, 4 double, 5 array_value, 6 kvlist_value, 7 bytes, 8 strindex */
    {[1] = F_STRING, [5] = F_MESSAGE, [6] = F_MESSAGE},
    {[5] = &ARRAY_VALUE, [6] = &KEY_VALUE_LIST}};
static const msgdef ARRAY_VALUE = {"ArrayValue", 1, {[1] = F_MESSAGE}, {[1] = &ANY_VALUE}};
static const msgdef KEY_VALUE_LIST = {"KeyValueList", 1, {[1] = F_MESSAGE}, {[1] = &KEY_VALUE}};
/* 1 key, 2 value, 3 key_strindex */
static const msgdef KEY_VALUE = {"KeyValue", 3, {[1] = F_STRING, [2] = F_MESSAGE}, {[2] = &ANY_VALUE}};
/* 1 schema_url, 2 type, 3 id_keys (repeated), 4 description_keys (repeated) */
static const msgdef ENTITY_REF = {
    "EntityRef", 4, {[1] = F_STRING, [2] = F_STRING, [3] = F_STRING, [4] = F_STRING}, {0}};
/* 1 name, 2 version, 3 attributes, 4 dropped_attributes_count */
static const msgdef SCOPE = {
    "InstrumentationScope", 4, {[1] = F_STRING, [2] = F_STRING, [3] = F_MESSAGE}, {[3] = &KEY_VALUE}};
/* opentelemetry.proto.resource.v1: 1 attributes, 2 dropped_attributes_count, 3 entity_refs */
static const msgdef RESOURCE = {
    "Resource", 3, {[1] = F_MESSAGE, [3] = F_MESSAGE}, {[1] = &KEY_VALUE, [3] = &ENTITY_REF}};
/* opentelemetry.proto.trace.v1 */
/* Event: 1 time_unix_nano, 2 name, 3 attributes, 4 dropped_attributes_count */
static const msgdef EVENT = {"Span.Event", 4, {[2] = F_STRING, [3] = F_MESSAGE}, {[3] = &KEY_VALUE}};
/* Link: 1 trace_id, 2 span_id, 3 trace_state, 4 attributes, 5 dropped, 6 flags */
static const msgdef LINK = {"Span.Link", 6, {[3] = F_STRING, [4] = F_MESSAGE}, {[4] = &KEY_VALUE}};
/* Status: 2 message, 3 code */
static const msgdef STATUS = {"Status", 3, {[2] = F_STRING}, {0}};

/* Validates one message of type `d` at `level` spanning [p, end). */
static bool walk(state *s, const uint8_t *p, const uint8_t *end, const msgdef *d, int level) {
    if (level > OTS_MAX_LEVEL) return fail(s, p, "nesting too deep");
    while (p < end) {
        field_view f;
        if (!next_field(s, &p, end, level, NULL, &f)) return false;
        if (!f.delimited) continue;
        const uint8_t *v = f.val;
        const size_t n = f.n;
        const uint32_t field = f.field;
        if (field > d->max_field) continue;
        switch (d->kind[field]) {
            case F_STRING:
                if (!check_utf8(s, v, n)) return false;
                break;
            case F_MESSAGE:
                if (!walk(s, v, v + n, d->sub[field], level + 1)) return false;
                break;
            default:
                break;
        }
    }
    return true;
}

/* ---- the levels that are read ------------------------------------------------------------------ */

#define LEVEL_RESOURCE_SPANS 1
#define LEVEL_SCOPE_SPANS 2
#define LEVEL_SPAN 3
#define LEVEL_KEY_VALUE 4

#define LEVEL_VALUE 5

/* A span attribute's AnyValue (level 5): what walk(&ANY_VALUE) does, with the usual fields inline. */
static inline bool read_value(state *s, const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        field_view f;
        if (!next_field(s, &p, end, LEVEL_VALUE, NULL, &f)) return false;
        if (!f.delimited) continue;
        const uint8_t *v = f.val;
        const size_t n = f.n;
        const uint32_t field = f.field;
        if (field == 1) { /* string_value */
            if (!check_utf8(s, v, n)) return false;
        } else if (field == 5 || field == 6) { /* array_value, kvlist_value */
            if (!walk(s, v, v + n, ANY_VALUE.sub[field], LEVEL_VALUE + 1)) return false;
        }
    }
    return true;
}

/* A span's attribute (KeyValue, level 4): validated, and its key (the last `key` field, as protobuf
 * keeps the last occurrence of a scalar) returned. */
static bool read_attribute(state *s, const uint8_t *p, const uint8_t *end, const uint8_t **key,
                           size_t *key_len) {
    *key = p;
    *key_len = 0;
    while (p < end) {
        field_view f;
        if (!next_field(s, &p, end, LEVEL_KEY_VALUE, NULL, &f)) return false;
        if (!f.delimited) continue;
        const uint8_t *v = f.val;
        const size_t n = f.n;
        const uint32_t field = f.field;
        if (field == 1) {
            if (!check_utf8(s, v, n)) return false;
            *key = v;
            *key_len = n;
        } else if (field == 2) {
            if (!read_value(s, v, v + n)) return false;
        }
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

typedef struct {
    const uint8_t *trace_id, *span_id, *parent;
    size_t trace_len, span_len, parent_len;
    uint64_t attributes;
    bool hit; /* a key among the first max_attributes hit the table */
} span_view;

/* One Span (level 3): validated, its ids and attribute verdict collected. */
static bool read_span(state *s, const uint8_t *p, const uint8_t *end, span_view *v) {
    memset(v, 0, sizeof(*v));
    while (p < end) {
        field_view f;
        if (!next_field(s, &p, end, LEVEL_SPAN, NULL, &f)) return false;
        if (!f.delimited) continue;
        const uint8_t *val = f.val;
        const size_t n = f.n;
        const uint32_t field = f.field;
        switch (field) {
            case 1: /* trace_id */
                v->trace_id = val;
                v->trace_len = n;
                break;
            case 2: /* span_id */
                v->span_id = val;
                v->span_len = n;
                break;
            case 4: /* parent_span_id */
                v->parent = val;
                v->parent_len = n;
                break;
            case 3: /* trace_state */
            case 5: /* name */
                if (!check_utf8(s, val, n)) return false;
                break;
            case 9: { /* attributes */
                v->attributes++;
                if (v->hit || v->attributes > s->max_attributes) {
                    if (!walk(s, val, val + n, &KEY_VALUE, LEVEL_KEY_VALUE)) return false;
                } else {
                    const uint8_t *key;
                    size_t key_len;
                    if (!read_attribute(s, val, val + n, &key, &key_len)) return false;
                    v->hit = ots_key_hits(s->t, key, key_len);
                }
                break;
            }
            case 11: /* events */
                if (!walk(s, val, val + n, &EVENT, LEVEL_SPAN + 1)) return false;
                break;
            case 13: /* links */
                if (!walk(s, val, val + n, &LINK, LEVEL_SPAN + 1)) return false;
                break;
            case 15: /* status */
                if (!walk(s, val, val + n, &STATUS, LEVEL_SPAN + 1)) return false;
                break;
            default: /* 6 kind, 7/8 times, 10/12/14 counts, 16 flags: not length-delimited */
                break;
        }
    }
    return true;
}

static bool span_is_plain(const span_view *v) {
    return !v->hit && v->trace_len == 16 && !all_zero(v->trace_id, 16) && v->span_len == 8 &&
           !all_zero(v->span_id, 8) &&
           (v->parent_len == 0 || (v->parent_len == 8 && !all_zero(v->parent, 8)));
}

static bool put_plain(state *s, const span_view *v) {
    ots_result *r = s->r;
    if (!reserve(s, &r->plain, OTS_PLAIN_RECORD)) return false;
    uint8_t *rec = r->plain.data + r->plain.len;
    memcpy(rec, v->trace_id, 16);
    memcpy(rec + 16, v->span_id, 8);
    if (v->parent_len == 8)
        memcpy(rec + 24, v->parent, 8);
    else
        memset(rec + 24, 0, 8);
    uint32_t ord = s->ordinal;
    for (int i = 0; i < 4; i++) rec[32 + i] = (uint8_t)(ord >> (8 * i));
    memset(rec + 36, 0, 4);
    r->plain.len += OTS_PLAIN_RECORD;
    if (v->attributes > s->max_attributes) r->plain_dropped += v->attributes - s->max_attributes;
    return true;
}

/* A field of a ResourceSpans or ScopeSpans (at `level`) other than its children, ending at `after`:
 * validated (1: the resource or scope, of type `sub`; 3: schema_url) and copied verbatim. */
static bool copy_header_field(state *s, ots_buf *out, const field_view *f, const uint8_t *after,
                              const msgdef *sub, int level) {
    if (f->field == 1) {
        if (!walk(s, f->val, f->val + f->n, sub, level + 1)) return false;
    } else if (f->field == 3) {
        if (!check_utf8(s, f->val, f->n)) return false;
    }
    return put(s, out, f->start, (size_t)(after - f->start));
}

/* One ScopeSpans (level 2): its non-span fields and its candidate spans are copied, in order. */
static bool read_scope_spans(state *s, const uint8_t *p, const uint8_t *end) {
    ots_buf *out = &s->r->candidates;
    while (p < end) {
        field_view f;
        if (!next_field(s, &p, end, LEVEL_SCOPE_SPANS, out, &f)) return false;
        if (!f.delimited) continue;
        if (f.field == 2) { /* spans */
            span_view v;
            if (!read_span(s, f.val, f.val + f.n, &v)) return false;
            if (span_is_plain(&v)) {
                if (!put_plain(s, &v)) return false;
            } else if (!put(s, out, f.start, (size_t)(p - f.start))) {
                return false;
            }
            s->ordinal++;
            s->r->spans++;
            continue;
        }
        if (!copy_header_field(s, out, &f, p, &SCOPE, LEVEL_SCOPE_SPANS)) return false;
    }
    return true;
}

/* One ResourceSpans (level 1): its non-scope fields copied, then one ScopeSpans per input one. */
static bool read_resource_spans(state *s, const uint8_t *p, const uint8_t *end) {
    ots_buf *out = &s->r->candidates;
    while (p < end) {
        field_view f;
        if (!next_field(s, &p, end, LEVEL_RESOURCE_SPANS, out, &f)) return false;
        if (!f.delimited) continue;
        if (f.field == 2) { /* scope_spans */
            size_t content;
            if (!open_delimited(s, out, 0x12, &content)) return false;
            if (!read_scope_spans(s, f.val, f.val + f.n)) return false;
            close_delimited(out, content);
            continue;
        }
        if (!copy_header_field(s, out, &f, p, &RESOURCE, LEVEL_RESOURCE_SPANS)) return false;
    }
    return true;
}

/* The request (level 0): one ResourceSpans out per ResourceSpans in; other fields are dropped. */
static bool read_request(state *s, const uint8_t *p, const uint8_t *end) {
    ots_buf *out = &s->r->candidates;
    while (p < end) {
        field_view f;
        if (!next_field(s, &p, end, 0, NULL, &f)) return false;
        if (!f.delimited || f.field != 1) continue;
        size_t content;
        if (!open_delimited(s, out, 0x0A, &content)) return false;
        if (!read_resource_spans(s, f.val, f.val + f.n)) return false;
        close_delimited(out, content);
    }
    return true;
}

int ots_split(const uint8_t *body, size_t len, const ots_table *table, uint64_t max_attributes,
              ots_result *out) {
    state s = {table, max_attributes, out, body, 0, NULL, NULL, false};
    out->candidates.len = 0;
    out->plain.len = 0;
    out->spans = 0;
    out->plain_dropped = 0;
    out->error = NULL;
    out->error_offset = 0;
    if (len >= OTS_MAX_BODY) {
        out->error = "body too large";
        return OTS_INVALID;
    }
    /* candidates never outgrow the body: reserve it once (pages are only touched when written) */
    if (!reserve(&s, &out->candidates, len + 16)) return OTS_NOMEM;
    if (read_request(&s, body, body + len)) return OTS_OK;
    if (s.nomem) return OTS_NOMEM;
    out->error = s.err ? s.err : "invalid request";
    out->error_offset = s.err_at ? (size_t)(s.err_at - body) : 0;
    return OTS_INVALID;
}

void ots_result_free(ots_result *out) {
    free(out->candidates.data);
    free(out->plain.data);
    out->candidates = (ots_buf){0};
    out->plain = (ots_buf){0};
}
