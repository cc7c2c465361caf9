/* otlp_scan.h: the pure-C core of the native split (no Python.h). See otlp_scan.c for the design
 * and the bounds; see /work/i17/native-contract.md (the contract with the Python side). */
#ifndef USER_METRICS_OTLP_SCAN_H
#define USER_METRICS_OTLP_SCAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bodies of this many bytes or more are refused (upb refuses lengths >= INT32_MAX too). */
#define OTS_MAX_BODY 0x7FFFFFFEu
/* Nesting limit of messages and groups, upb's default (the request itself is level 0). */
#define OTS_MAX_LEVEL 100
/* Size of one plain-span record: trace_id[16] span_id[8] parent[8] ordinal:u32le count:u32le. */
#define OTS_PLAIN_RECORD 40

typedef struct {
    const char *data;
    size_t len;
} ots_str;

/* The compiled classification table (immutable once built; safe to share between threads). */
typedef struct ots_table ots_table;

/* Copies the strings. Returns NULL when out of memory. */
ots_table *ots_table_new(const ots_str *keys, size_t nkeys, const ots_str *prefixes, size_t nprefixes,
                         const ots_str *like_prefixes, size_t nlike_prefixes, const ots_str *like_words,
                         size_t nlike_words);
void ots_table_free(ots_table *table);

/* True when an attribute with this key makes its span a candidate (exact key, property prefix or
 * LLM-like key). Exposed for tests and the fuzz harness. */
int ots_key_hits(const ots_table *table, const uint8_t *key, size_t len);

typedef struct {
    uint8_t *data;
    size_t len, cap;
} ots_buf;

typedef struct {
    ots_buf candidates;      /* a serialized ExportTraceServiceRequest */
    ots_buf plain;           /* OTS_PLAIN_RECORD bytes per plain span */
    uint64_t spans;          /* every span of the request */
    uint64_t plain_dropped;  /* attributes beyond max_attributes on plain spans */
    const char *error;       /* static message when ots_split returned OTS_INVALID */
    size_t error_offset;     /* byte offset in the body where the error was found */
} ots_result;

enum { OTS_OK = 0, OTS_INVALID = -1, OTS_NOMEM = -2 };

/* Splits one ExportTraceServiceRequest. `out` must be zeroed before the first call; free its buffers
 * with ots_result_free whatever the outcome. Reentrant: touches nothing but its arguments. */
int ots_split(const uint8_t *body, size_t len, const ots_table *table, uint64_t max_attributes,
              ots_result *out);
void ots_result_free(ots_result *out);

#ifdef __cplusplus
}
#endif
#endif
