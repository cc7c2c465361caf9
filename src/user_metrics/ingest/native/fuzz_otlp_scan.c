/* fuzz_otlp_scan.c: libFuzzer harness for the pure-C core (otlp_scan.c), for AddressSanitizer and
 * UndefinedBehaviorSanitizer runs:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I<dir of fuzz_table.h> -DOTS_FUZZ_TABLE \
 *         fuzz_otlp_scan.c otlp_scan.c -o fuzz_otlp_scan
 *   ./fuzz_otlp_scan -max_total_time=30 corpus/
 *
 * The classification table: with -DOTS_FUZZ_TABLE the harness includes "fuzz_table.h", which
 * tests/ingest/test_native_fuzz.py and tests/benchmarks/fuzz_native.py write from the real compiled
 * conventions (the arrays FUZZ_KEYS, FUZZ_PREFIXES, FUZZ_LIKE_PREFIXES, FUZZ_LIKE_WORDS); without it
 * a small built-in table of the same shape is used.
 *
 * Besides memory errors, each input checks the core's invariants (abort() on a violation, which
 * libFuzzer reports as a crash): a body the core accepts gives candidates no larger than the body,
 * whole 40-byte plain records, and candidates that split again without error into the same
 * candidate spans (no plain ones) with the same dropped-attribute count of zero. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "otlp_scan.h"

#ifdef OTS_FUZZ_TABLE
#include "fuzz_table.h"
#else
static const char *FUZZ_KEYS[] = {"user.id", "session.id", "gen_ai.request.model", "metadata", ""};
static const char *FUZZ_PREFIXES[] = {"property.", "traceloop.association.properties."};
static const char *FUZZ_LIKE_PREFIXES[] = {"gen_ai.", "llm.", "ai."};
static const char *FUZZ_LIKE_WORDS[] = {"model", "usage", "token", "cost"};
#endif

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static ots_table *table;

static void strs(const char **src, size_t n, ots_str *out) {
    for (size_t i = 0; i < n; i++) {
        out[i].data = src[i];
        out[i].len = strlen(src[i]);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    static ots_str k[COUNT(FUZZ_KEYS)], p[COUNT(FUZZ_PREFIXES)], lp[COUNT(FUZZ_LIKE_PREFIXES)],
        lw[COUNT(FUZZ_LIKE_WORDS)];
    strs(FUZZ_KEYS, COUNT(FUZZ_KEYS), k);
    strs(FUZZ_PREFIXES, COUNT(FUZZ_PREFIXES), p);
    strs(FUZZ_LIKE_PREFIXES, COUNT(FUZZ_LIKE_PREFIXES), lp);
    strs(FUZZ_LIKE_WORDS, COUNT(FUZZ_LIKE_WORDS), lw);
    table = ots_table_new(k, COUNT(k), p, COUNT(p), lp, COUNT(lp), lw, COUNT(lw));
    if (!table) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a first byte 0xF0-0xFF picks max_attributes 0-15 and is not part of the body; otherwise the
     * whole input is the body (so that captured requests are seeds as they are) and the limit is the
     * service's default, 1024 */
    uint64_t max_attributes = 1024;
    if (size > 0 && data[0] >= 0xF0) {
        max_attributes = data[0] & 0x0F;
        data++;
        size--;
    }
    /* copy into an exactly sized heap block, so that ASan sees any read past the end */
    uint8_t *body = malloc(size ? size : 1);
    if (!body) return 0;
    memcpy(body, data, size);
    ots_result r = {0};
    int status = ots_split(body, size, table, max_attributes, &r);
    if (status == OTS_OK) {
        if (r.candidates.len > size + 16 || r.plain.len % OTS_PLAIN_RECORD != 0) abort();
        if (r.plain.len / OTS_PLAIN_RECORD > r.spans) abort();
        /* the candidates are a valid request whose spans are all candidates again */
        uint8_t *again_body = malloc(r.candidates.len ? r.candidates.len : 1);
        if (!again_body) abort();
        memcpy(again_body, r.candidates.data, r.candidates.len);
        ots_result again = {0};
        if (ots_split(again_body, r.candidates.len, table, max_attributes, &again) != OTS_OK) abort();
        if (again.plain.len != 0 || again.spans != r.spans - r.plain.len / OTS_PLAIN_RECORD) abort();
        if (again.candidates.len != r.candidates.len ||
            memcmp(again.candidates.data, r.candidates.data, r.candidates.len) != 0)
            abort();
        ots_result_free(&again);
        free(again_body);
    } else if (status == OTS_INVALID) {
        if (!r.error || r.error_offset > size) abort();
    }
    ots_result_free(&r);
    free(body);
    return 0;
}
