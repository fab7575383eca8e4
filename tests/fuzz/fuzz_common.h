/*
 * fuzz_common.h - what the libFuzzer harnesses of the decoders share (header-only: every
 * function is static inline). CHECK aborts on a failed invariant, so that the fuzzer
 * reports it as a crash with the input; the fuzz_check_* functions check, with CHECK, the
 * invariants every decoder keeps:
 *
 *  - fuzz_check_text: a decoded string is valid UTF-8 without NUL;
 *  - fuzz_check_json: a record is JSON that yajl's validating parser takes as an object;
 *  - fuzz_check_event: an event keeps event.h's invariant (strings as above and without
 *    any control character either, inside its arena) and serialises with
 *    record_event_json to such a record;
 *  - fuzz_check_beacon_result: a beacon decoder answers 0 or a documented code, and a
 *    failure comes with a one-line reason (fuzz_check_reason);
 *  - fuzz_check_same_record: the query and the JSON path made the same record.
 */
#ifndef CLICKD_FUZZ_COMMON_H
#define CLICKD_FUZZ_COMMON_H

#include "clickd/event.h"
#include "clickd/record.h"
#include "clickd/text.h"
#include "clickd/url.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The receive time the harnesses give their requests. */
#define FUZZ_RECEIVED_AT_MS 1795426286123LL

static inline void fuzz_check_text(const char *s, size_t len)
{
	CHECK(url_utf8_valid(s, len));
	CHECK(len == 0 || memchr(s, '\0', len) == NULL);
}

static inline void fuzz_check_json(const char *text)
{
	char err[128];
	yajl_val v = yajl_tree_parse(text, err, sizeof(err));

	if (v == NULL)
		fprintf(stderr, "not JSON (%s): %s\n", err, text);
	CHECK(v != NULL && YAJL_IS_OBJECT(v));
	yajl_tree_free(v);
}

/* Checks ev and leaves its record in record[cap]; returns the record's length. */
static inline int fuzz_check_event(const struct event *ev, char *record, size_t cap)
{
	int n;

	CHECK(ev->arena_used <= EVENT_ARENA_BYTES);
	for (int f = 0; f < EF__COUNT; f++) {
		size_t len;
		const char *s = event_get(ev, (enum event_field)f, &len);

		if (s == NULL)
			continue;
		CHECK(ev->str[f].off + len <= ev->arena_used);
		fuzz_check_text(s, len);
		CHECK(!text_has_control(s, len));
	}
	n = record_event_json(ev, record, cap);
	CHECK(n > 0 && (size_t)n == strlen(record));
	fuzz_check_json(record);
	return n;
}

static inline void fuzz_check_reason(const char *reason)
{
	CHECK(reason != NULL && reason[0] != '\0' && strchr(reason, '\n') == NULL);
}

/* rc and err of beacon_decode_query or beacon_decode_json. */
static inline void fuzz_check_beacon_result(int rc, const char *err)
{
	CHECK(rc == 0 || rc == -EINVAL || rc == -EILSEQ || rc == -E2BIG || rc == -ENOSPC ||
	      rc == -EMSGSIZE);
	if (rc != 0)
		fuzz_check_reason(err);
}

/* The record of the event the query path decoded against the one the JSON path made. */
static inline void fuzz_check_same_record(const struct event *query_ev, const char *json_record,
                                          int json_record_len)
{
	static char record[RECORD_EVENT_MAX_BYTES];
	int n = record_event_json(query_ev, record, sizeof(record));

	if (n != json_record_len || memcmp(record, json_record, (size_t)n) != 0)
		fprintf(stderr, "query path: %s\nJSON path:  %s\n", record, json_record);
	CHECK(n == json_record_len && memcmp(record, json_record, (size_t)n) == 0);
}

#endif
