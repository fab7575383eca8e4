/*
 * fuzz_query.c - libFuzzer harness for the query-string path: url_decode (both ways of
 * reading '+', into a buffer and in place), url_query_parse (strict) and
 * url_query_parse_text (the text rules), and beacon_decode_query with three requests (a
 * browser with cookie and IP, anonymised, default options; a GPC request with tight limits;
 * a request with limits.invalid_utf8=replace, limits.control_chars=reject and a small
 * limits.max_string_bytes).
 *
 * Invariants checked (abort on failure, so the fuzzer reports a crash):
 *  - url_decode with cap == len never answers -ENOSPC; on success the output is no longer
 *    than the input, valid UTF-8, without NUL, and the same whether decoded in place or not;
 *  - url_query_parse reports non-empty keys, keys and values valid UTF-8 without NUL, all
 *    inside scratch and still intact after the parse (each pair in its own place); so does
 *    url_query_parse_text, whose keys and values hold no control character either;
 *  - beacon_decode_query answers 0 or one of its documented codes with a one-line reason;
 *    a decoded event keeps event.h's invariant and serialises to valid JSON; a query that
 *    url_query_parse_text refuses under the beacon's text rules is refused as a beacon too;
 *  - the two decoders agree: the pairs of a query that decodes are re-encoded as one JSON
 *    object, which must decode through beacon_decode_json to the very same record.
 */
#include "clickd/beacon.h"
#include "clickd/event.h"
#include "clickd/record.h"
#include "clickd/text.h"
#include "clickd/url.h"

#include "fuzz_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_decode(const char *in, size_t size, bool plus_is_space)
{
	char *out = malloc(size ? size : 1);
	char *inplace = malloc(size ? size : 1);
	size_t n = (size_t)-1, m = (size_t)-1;
	int rc, rc2;

	rc = url_decode(in, size, out, size, plus_is_space, &n);
	CHECK(rc == 0 || rc == -EINVAL || rc == -EILSEQ);
	if (rc == 0) {
		size_t escapes = 0;

		for (size_t i = 0; i < size; i++)
			escapes += in[i] == '%';
		CHECK(n == size - 2 * escapes);
		fuzz_check_text(out, n);
	}
	if (size > 0)
		memcpy(inplace, in, size);
	rc2 = url_decode(inplace, size, inplace, size, plus_is_space, &m);
	CHECK(rc2 == rc);
	if (rc == 0)
		CHECK(m == n && (n == 0 || memcmp(out, inplace, n) == 0));
	free(out);
	free(inplace);
}

#define MAX_KEPT 64

/* The query's pairs as one JSON object, for the differential check. */
struct json_buf {
	char *text;
	size_t len, cap;
};

static void json_put(struct json_buf *j, const char *s, size_t len)
{
	if (j->len + len > j->cap) {
		j->cap = (j->len + len) * 2;
		j->text = realloc(j->text, j->cap);
		CHECK(j->text != NULL);
	}
	memcpy(j->text + j->len, s, len);
	j->len += len;
}

static void json_put_string(struct json_buf *j, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";

	json_put(j, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			json_put(j, esc, 2);
		} else if (c < 0x20) {
			json_put(j, esc, 6);
		} else {
			json_put(j, s + i, 1);
		}
	}
	json_put(j, "\"", 1);
}

struct query_state {
	const char *scratch;
	size_t cap;
	bool clean; /* url_query_parse_text: no control characters */
	size_t pairs;
	struct json_buf json;
	/* The first pairs, to check after the parse that later pairs did not overwrite them. */
	const char *key[MAX_KEPT], *value[MAX_KEPT];
	size_t key_len[MAX_KEPT], value_len[MAX_KEPT];
	uint32_t sum[MAX_KEPT];
};

static uint32_t checksum(const char *a, size_t a_len, const char *b, size_t b_len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < a_len; i++)
		h = (h ^ (unsigned char)a[i]) * 16777619u;
	h = (h ^ 0xff) * 16777619u;
	for (size_t i = 0; i < b_len; i++)
		h = (h ^ (unsigned char)b[i]) * 16777619u;
	return h;
}

static bool inside(const char *p, size_t len, const char *base, size_t cap)
{
	return len == 0 || (p >= base && len <= cap && p + len <= base + cap);
}

static int query_pair(void *ud, const char *key, size_t key_len, const char *value,
                      size_t value_len)
{
	struct query_state *s = ud;

	CHECK(key_len > 0);
	fuzz_check_text(key, key_len);
	fuzz_check_text(value, value_len);
	if (s->clean)
		CHECK(!text_has_control(key, key_len) && !text_has_control(value, value_len));
	CHECK(inside(key, key_len, s->scratch, s->cap));
	CHECK(inside(value, value_len, s->scratch, s->cap));
	if (s->pairs < MAX_KEPT) {
		s->key[s->pairs] = key;
		s->key_len[s->pairs] = key_len;
		s->value[s->pairs] = value;
		s->value_len[s->pairs] = value_len;
		s->sum[s->pairs] = checksum(key, key_len, value, value_len);
	}
	json_put(&s->json, s->pairs == 0 ? "{" : ",", 1);
	json_put_string(&s->json, key, key_len);
	json_put(&s->json, ":", 1);
	json_put_string(&s->json, value, value_len);
	s->pairs++;
	return 0;
}

static struct query_state parsed;

/* Parses in into `parsed` (its JSON form in parsed.json), strictly (rules NULL) or with
 * the text rules; returns the parse's code. */
static int fuzz_query_parse(const char *in, size_t size, const struct text_rules *rules)
{
	struct query_state *s = &parsed;
	size_t cap = rules ? 4 * size : size; /* the documented bounds */
	char *scratch = malloc(cap ? cap : 1);
	int rc;

	s->scratch = scratch;
	s->cap = cap;
	s->clean = rules != NULL;
	s->pairs = 0;
	s->json.len = 0;
	if (rules)
		rc = url_query_parse_text(in, size, scratch, cap, rules, NULL, query_pair, s);
	else
		rc = url_query_parse(in, size, scratch, cap, query_pair, s);
	CHECK(rc == 0 || rc == -EINVAL || rc == -EILSEQ || (rules && rc == -EBADMSG));
	for (size_t i = 0; i < s->pairs && i < MAX_KEPT; i++)
		CHECK(checksum(s->key[i], s->key_len[i], s->value[i], s->value_len[i]) ==
		      s->sum[i]);
	json_put(&s->json, s->pairs == 0 ? "{" : "", s->pairs == 0 ? 1 : 0);
	json_put(&s->json, "}", 1);
	free(scratch);
	return rc;
}

static char record[RECORD_EVENT_MAX_BYTES];
static int record_len;

static int json_emit(void *ud, struct event *ev)
{
	int *emits = ud;

	(*emits)++;
	record_len = record_event_json(ev, record, sizeof(record));
	CHECK(record_len > 0);
	return 0;
}

static void json_reject(void *ud, int code, const char *payload, size_t payload_len,
                        const char *reason)
{
	CHECK(0); /* a lone object is never rejected element by element */
}

/* The query's pairs as a JSON object decode to the same record as the query did. */
static void check_same_as_json(const struct event *ev, const struct beacon_request *req,
                               const struct beacon_options *opt)
{
	char err[160];
	int emits = 0, rc;

	rc = beacon_decode_json(parsed.json.text, parsed.json.len, req, opt, json_emit, json_reject,
	                        &emits, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "JSON %.*s: %d %s\n", (int)parsed.json.len, parsed.json.text, rc,
		        err);
	CHECK(rc == 0 && emits == 1);
	fuzz_check_same_record(ev, record, record_len);
}

static void fuzz_beacon(const char *in, size_t size, const struct beacon_request *req,
                        const struct beacon_options *opt)
{
	static struct event ev;
	static char query_record[RECORD_EVENT_MAX_BYTES];
	const struct text_rules rules = {.replace_invalid_utf8 = opt->replace_invalid_utf8,
	                                 .replace_controls = !opt->reject_controls};
	int parse_rc = fuzz_query_parse(in, size, &rules);
	char err[160];
	int rc;

	err[0] = '\0';
	rc = beacon_decode_query(in, size, req, opt, &ev, err, sizeof(err));
	fuzz_check_beacon_result(rc, err);
	if (rc == 0) {
		CHECK(parse_rc == 0);
		fuzz_check_event(&ev, query_record, sizeof(query_record));
		check_same_as_json(&ev, req, opt);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	const struct beacon_request browser = {
	    .received_at_ms = FUZZ_RECEIVED_AT_MS,
	    .client_ip = "2001:db8:abcd:1234::1",
	    .user_agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
	    .user_agent_len = 45,
	    .cookie_visitor_id = "c-1",
	    .cookie_visitor_id_len = 3,
	    .minted_visitor_id = "m-1",
	    .minted_visitor_id_len = 3,
	    .protocol = "native",
	};
	const struct beacon_request private_request = {
	    .received_at_ms = 0,
	    .client_ip = "192.0.2.1",
	    .minted_visitor_id = "m-2",
	    .minted_visitor_id_len = 3,
	    .gpc = true,
	    .protocol = "native",
	};
	/* Affiliate parameters as attribution.affiliate_params' defaults begin. */
	static const char *const affiliate_params[] = {"aff", "affiliate_id", "awc", "irclickid"};
	const struct beacon_options defaults = {.anonymize_ip = true,
	                                        .honor_gpc = true,
	                                        .affiliate_params = affiliate_params,
	                                        .affiliate_param_count = 4};
	const struct beacon_options tight = {.honor_gpc = true, .max_fields = 4};
	const struct beacon_options text = {.anonymize_ip = true,
	                                    .max_string_bytes = 32,
	                                    .replace_invalid_utf8 = true,
	                                    .reject_controls = true};

	fuzz_decode(in, size, false);
	fuzz_decode(in, size, true);
	fuzz_query_parse(in, size, NULL);
	fuzz_beacon(in, size, &browser, &defaults);
	fuzz_beacon(in, size, &private_request, &tight);
	fuzz_beacon(in, size, &browser, &text);
	return 0;
}
