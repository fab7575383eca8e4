/*
 * fuzz_json_beacon.c - libFuzzer harness for beacon_decode_json, with small limits (8
 * fields, 4 beacons, depth 4) so that the fuzzer reaches them, under the default text rules
 * and again under limits.invalid_utf8=replace, limits.control_chars=reject and a 32-byte
 * limits.max_string_bytes.
 *
 * Invariants checked (abort on failure, so the fuzzer reports a crash):
 *  - the call answers 0 or a documented code with a one-line reason; when it fails, no
 *    callback has run (a refused batch emits nothing), and at most max_batch callbacks run;
 *  - every emitted event keeps event.h's invariant (UTF-8, no NUL, inside its arena) and
 *    serialises with record_event_json to JSON that yajl's validating parser accepts;
 *  - every rejected payload lies inside the body and has a reason, and its dead-letter
 *    record (record_dead_letter_json) is valid JSON; so is the dead letter of a body the
 *    call refuses as a whole;
 *  - the two decoders agree: a lone object of string and number fields that decodes is
 *    re-encoded as a query string (every byte percent-encoded but the unreserved ones),
 *    which must decode through beacon_decode_query to the very same record.
 */
#include "clickd/beacon.h"
#include "clickd/event.h"
#include "clickd/record.h"

#include "fuzz_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#define MAX_BATCH       4
#define MAX_PAYLOAD     512
#define DEAD_LETTER_CAP (6 * MAX_PAYLOAD + 1024)

static char json[RECORD_EVENT_MAX_BYTES];

struct state {
	const char *body;
	size_t len;
	size_t emits, rejects;
	int record_len; /* record_event_json of the last emitted event */
};

static char emitted[RECORD_EVENT_MAX_BYTES];

static int on_emit(void *ud, struct event *ev)
{
	struct state *s = ud;

	s->emits++;
	s->record_len = fuzz_check_event(ev, emitted, sizeof(emitted));
	return 0;
}

static void dead_letter(const char *reason, const char *payload, size_t len)
{
	int n = record_dead_letter_json(FUZZ_RECEIVED_AT_MS, reason, "native", "192.0.2.1", payload,
	                                len, MAX_PAYLOAD, json, DEAD_LETTER_CAP);

	CHECK(n > 0 && (size_t)n == strlen(json));
	fuzz_check_json(json);
}

static void on_reject(void *ud, int code, const char *payload, size_t payload_len,
                      const char *reason)
{
	struct state *s = ud;

	s->rejects++;
	CHECK(code < 0);
	fuzz_check_beacon_result(code, reason);
	CHECK(payload != NULL && payload >= s->body && payload_len <= s->len &&
	      payload + payload_len <= s->body + s->len);
	fuzz_check_reason(reason);
	dead_letter(reason, payload, payload_len);
}

/* The query path takes at most this much (beacon.c's BEACON_MAX_BYTES). */
#define QUERY_MAX_BYTES (2 * EVENT_ARENA_BYTES)

struct query_buf {
	char text[QUERY_MAX_BYTES];
	size_t len;
	bool overflow;
};

static void query_put(struct query_buf *q, const char *s, size_t len, bool encode)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		bool plain = !encode || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';

		if (q->len + 3 > sizeof(q->text)) {
			q->overflow = true;
			return;
		}
		if (plain) {
			q->text[q->len++] = (char)c;
		} else {
			q->text[q->len++] = '%';
			q->text[q->len++] = hex[c >> 4];
			q->text[q->len++] = hex[c & 15];
		}
	}
}

/*
 * Re-encodes a lone object, parsed with yajl's tree parser, as a query string. Returns
 * false when the object holds anything but strings, numbers and nulls (null becomes a key
 * without a value, absent like the JSON null) or does not fit the query path.
 */
static bool object_as_query(const char *body, size_t len, struct query_buf *q)
{
	char *copy = malloc(len + 1);
	yajl_val v;
	bool ok = true;

	memcpy(copy, body, len);
	copy[len] = '\0';
	v = yajl_tree_parse(copy, NULL, 0);
	free(copy);
	if (v == NULL || !YAJL_IS_OBJECT(v)) {
		yajl_tree_free(v);
		return false;
	}
	q->len = 0;
	q->overflow = false;
	for (size_t i = 0; ok && i < v->u.object.len; i++) {
		const char *key = v->u.object.keys[i];
		yajl_val val = v->u.object.values[i];

		if (i > 0)
			query_put(q, "&", 1, false);
		query_put(q, key, strlen(key), true);
		if (YAJL_IS_STRING(val)) {
			query_put(q, "=", 1, false);
			query_put(q, val->u.string, strlen(val->u.string), true);
		} else if (YAJL_IS_NUMBER(val)) {
			query_put(q, "=", 1, false);
			query_put(q, val->u.number.r, strlen(val->u.number.r), true);
		} else if (!YAJL_IS_NULL(val)) {
			ok = false;
		}
	}
	yajl_tree_free(v);
	return ok && !q->overflow;
}

static void check_same_as_query(const char *body, size_t len, const struct beacon_request *req,
                                const struct beacon_options *opt, const char *record,
                                int record_len)
{
	static struct query_buf q;
	static struct event ev;
	char err[160];
	int rc;

	if (!object_as_query(body, len, &q))
		return;
	rc = beacon_decode_query(q.text, q.len, req, opt, &ev, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "query %.*s: %d %s\n", (int)q.len, q.text, rc, err);
	CHECK(rc == 0);
	fuzz_check_same_record(&ev, record, record_len);
}

/* One decode of the body with opt; the differential check against the query path when
 * asked (only with the default text rules: yajl's tree parser, which the check re-encodes
 * from, does not decode broken surrogate escapes as limits.invalid_utf8=replace does). */
static void run(const uint8_t *data, size_t size, const struct beacon_options *opt,
                bool differential)
{
	const struct beacon_request req = {
	    .received_at_ms = FUZZ_RECEIVED_AT_MS,
	    .client_ip = "192.0.2.77",
	    .user_agent = "Mozilla/5.0 (compatible; Googlebot/2.1)",
	    .user_agent_len = 39,
	    .minted_visitor_id = "m-1",
	    .minted_visitor_id_len = 3,
	    .protocol = "native",
	};
	struct state s = {.body = (const char *)data, .len = size};
	char err[160];
	int rc;

	err[0] = '\0';
	rc = beacon_decode_json(s.body, size, &req, opt, on_emit, on_reject, &s, err, sizeof(err));
	fuzz_check_beacon_result(rc, err);
	CHECK(s.emits + s.rejects <= MAX_BATCH);
	if (rc != 0) {
		CHECK(s.emits == 0 && s.rejects == 0);
		dead_letter(err, s.body, size);
		return;
	}
	/* yajl's tree holds strings as C strings: one with an escaped NUL cannot be
	 * re-encoded whole, so such a body has no differential check. */
	if (differential && s.emits == 1 && s.rejects == 0 && size > 0 &&
	    memchr(s.body, '[', size) == NULL && memmem(s.body, size, "\\u0000", 6) == NULL)
		check_same_as_query(s.body, size, &req, opt, emitted, s.record_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct beacon_options defaults = {
	    .anonymize_ip = true,
	    .honor_gpc = true,
	    .max_fields = 8,
	    .max_batch = MAX_BATCH,
	    .max_json_depth = 4,
	};
	const struct beacon_options text = {
	    .max_fields = 8,
	    .max_batch = MAX_BATCH,
	    .max_json_depth = 4,
	    .max_string_bytes = 32,
	    .replace_invalid_utf8 = true,
	    .reject_controls = true,
	};

	run(data, size, &defaults, true);
	run(data, size, &text, false);
	return 0;
}
