/*
 * test_beacon.c - the native beacon decoders (beacon.h): every field, the event type, ts,
 * rev and cur, UTM tags and click IDs, the referrer and the source/medium rules of
 * CONTRACTS.md, the visitor, the IP and GPC, bots, limits, and the JSON path with its
 * per-element emit and reject. The cases live in tests/data/beacon_*.tsv (found through
 * CLICKD_TEST_DATA, which ctest sets, and read with data_table.h); this file holds the
 * checks, and the cases that are not table-shaped (sizes, callback returns, reading only len
 * bytes).
 *
 * Every event decoded here is also serialised with record_event_json and parsed back with
 * yajl, and its strings are checked against event.h's invariant (UTF-8, no NUL, no control
 * character).
 */
#include "clickd/beacon.h"
#include "clickd/event.h"
#include "clickd/record.h"
#include "clickd/text.h"
#include "clickd/url.h"

#include "data_table.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

/* ------------------------------------------------------------- requests and options */

#define RECEIVED_AT_MS 1795426286123LL

/* The request and options of one case: the defaults, changed by the setup column. */
struct setup {
	struct beacon_request req;
	struct beacon_options opt;
	const char *affiliate_params[32]; /* opt.affiliate_params: into aff_text */
	char aff_text[512];
};

/* "a,b,c" (or "default": BEACON_DEFAULT_AFFILIATE_PARAMS) as s's affiliate parameters. */
static void setup_affiliate_params(struct setup *s, const char *where, const char *list)
{
	if (strcmp(list, "default") == 0)
		list = BEACON_DEFAULT_AFFILIATE_PARAMS;
	cr_assert_lt(strlen(list), sizeof(s->aff_text), "%s: aff_params too long", where);
	strcpy(s->aff_text, list);
	s->opt.affiliate_param_count = 0;
	for (char *p = strtok(s->aff_text, ","); p != NULL; p = strtok(NULL, ",")) {
		cr_assert_lt(s->opt.affiliate_param_count, 32, "%s: too many aff_params", where);
		s->affiliate_params[s->opt.affiliate_param_count++] = p;
	}
	s->opt.affiliate_params = s->affiliate_params;
}

static void setup_defaults(struct setup *s)
{
	memset(s, 0, sizeof(*s));
	s->req.received_at_ms = RECEIVED_AT_MS;
	s->req.protocol = "native";
	s->opt.anonymize_ip = true;
	s->opt.honor_gpc = true;
	/* Limits stay 0: the decoder's defaults (64 fields, 100 beacons, depth 8). */
}

/* Applies "k=v|k|..." to s; the values point into text, which must outlive s. */
static void setup_parse(struct setup *s, const char *where, char *text)
{
	const char *aff_params = NULL;

	setup_defaults(s);
	if (strcmp(text, "-") == 0 || text[0] == '\0')
		return;
	for (char *item = strtok(text, "|"); item != NULL; item = strtok(NULL, "|")) {
		char *eq = strchr(item, '=');
		const char *v = eq ? eq + 1 : "";

		if (eq)
			*eq = '\0';
		if (strcmp(item, "ip") == 0) {
			s->req.client_ip = v;
		} else if (strcmp(item, "ua") == 0) {
			s->req.user_agent = v;
			s->req.user_agent_len = strlen(v);
		} else if (strcmp(item, "cookie") == 0) {
			s->req.cookie_visitor_id = v;
			s->req.cookie_visitor_id_len = strlen(v);
		} else if (strcmp(item, "mint") == 0) {
			s->req.minted_visitor_id = v;
			s->req.minted_visitor_id_len = strlen(v);
		} else if (strcmp(item, "gpc") == 0) {
			s->req.gpc = true;
		} else if (strcmp(item, "no_protocol") == 0) {
			s->req.protocol = NULL;
		} else if (strcmp(item, "anonymize") == 0) {
			s->opt.anonymize_ip = v[0] == '1';
		} else if (strcmp(item, "honor_gpc") == 0) {
			s->opt.honor_gpc = v[0] == '1';
		} else if (strcmp(item, "max_fields") == 0) {
			s->opt.max_fields = strtoul(v, NULL, 10);
		} else if (strcmp(item, "max_batch") == 0) {
			s->opt.max_batch = strtoul(v, NULL, 10);
		} else if (strcmp(item, "max_json_depth") == 0) {
			s->opt.max_json_depth = strtoul(v, NULL, 10);
		} else if (strcmp(item, "max_string") == 0) {
			s->opt.max_string_bytes = strtoul(v, NULL, 10);
		} else if (strcmp(item, "utf8") == 0) {
			cr_assert(strcmp(v, "replace") == 0 || strcmp(v, "reject") == 0,
			          "%s: utf8=%s", where, v);
			s->opt.replace_invalid_utf8 = strcmp(v, "replace") == 0;
		} else if (strcmp(item, "controls") == 0) {
			cr_assert(strcmp(v, "replace") == 0 || strcmp(v, "reject") == 0,
			          "%s: controls=%s", where, v);
			s->opt.reject_controls = strcmp(v, "reject") == 0;
		} else if (strcmp(item, "aff_params") == 0) {
			aff_params = v; /* after the loop: strtok is not reentrant */
		} else {
			cr_assert_fail("%s: unknown setup item %s", where, item);
		}
	}
	if (aff_params)
		setup_affiliate_params(s, where, aff_params);
}

/* ------------------------------------------------------------------ checking events */

static void assert_valid_json(const char *where, const char *json)
{
	char err[256];
	yajl_val v = yajl_tree_parse(json, err, sizeof(err));

	cr_expect_not_null(v, "%s: record is not valid JSON (%s): %s", where, err, json);
	if (v != NULL)
		cr_expect(YAJL_IS_OBJECT(v), "%s: record is not an object", where);
	yajl_tree_free(v);
}

/* What every decoded event promises: its strings are UTF-8 without NUL or any other control
 * character, inside the arena, and it serialises to valid JSON. */
static void expect_event_invariants(const char *where, const struct event *ev)
{
	static char json[RECORD_EVENT_MAX_BYTES];
	int n;

	cr_expect_leq(ev->arena_used, EVENT_ARENA_BYTES, "%s: arena overrun", where);
	for (int f = 0; f < EF__COUNT; f++) {
		size_t len;
		const char *s = event_get(ev, (enum event_field)f, &len);

		if (s == NULL)
			continue;
		cr_expect_leq(ev->str[f].off + len, ev->arena_used, "%s: %s outside the arena",
		              where, event_field_name((enum event_field)f));
		cr_expect(url_utf8_valid(s, len) && !text_has_control(s, len),
		          "%s: %s is not UTF-8 without control characters", where,
		          event_field_name((enum event_field)f));
	}
	n = record_event_json(ev, json, sizeof(json));
	cr_expect_gt(n, 0, "%s: record_event_json %d", where, n);
	if (n > 0)
		assert_valid_json(where, json);
}

/* A 0/1 flag of a check; anything else is a mistake in the table. */
static bool flag_is(const char *where, const char *v, bool b)
{
	cr_assert(strcmp(v, "0") == 0 || strcmp(v, "1") == 0, "%s: bad flag '%s'", where, v);
	return (v[0] == '1') == b;
}

/* A number of a check, all of it; anything else is a mistake in the table. */
static long long check_int(const char *where, const char *v)
{
	char *end;
	long long n = strtoll(v, &end, 10);

	cr_assert(end != v && *end == '\0', "%s: bad integer '%s'", where, v);
	return n;
}

static double check_double(const char *where, const char *v)
{
	char *end;
	double d = strtod(v, &end);

	cr_assert(end != v && *end == '\0', "%s: bad number '%s'", where, v);
	return d;
}

/* "key=value" or "!key" against ev. */
static void check_event(const char *where, const struct event *ev, const char *check,
                        size_t check_len)
{
	bool absent = check[0] == '!';
	const char *key = absent ? check + 1 : check;
	const char *eq = absent ? NULL : memchr(check, '=', check_len);
	size_t key_len = eq ? (size_t)(eq - key) : strlen(key);
	const char *want = eq ? eq + 1 : NULL;
	size_t want_len = eq ? check_len - (size_t)(want - check) : 0;
	char name[32];

	cr_assert(absent || eq != NULL, "%s: bad check '%s'", where, check);
	cr_assert_lt(key_len, sizeof(name), "%s: bad check '%s'", where, check);
	memcpy(name, key, key_len);
	name[key_len] = '\0';

	if (strcmp(name, "type") == 0) {
		cr_expect_str_eq(event_type_name(ev->type), want, "%s: type", where);
	} else if (strcmp(name, "client_at") == 0) {
		if (absent)
			cr_expect_eq(ev->client_at_ms, EVENT_TIME_ABSENT, "%s: client_at", where);
		else
			cr_expect_eq(ev->client_at_ms, check_int(where, want), "%s: client_at %lld",
			             where, (long long)ev->client_at_ms);
	} else if (strcmp(name, "received_at") == 0) {
		cr_expect_eq(ev->received_at_ms, check_int(where, want), "%s: received_at", where);
	} else if (strcmp(name, "revenue") == 0) {
		if (absent) {
			cr_expect(!ev->has_revenue, "%s: revenue present", where);
		} else {
			cr_expect(ev->has_revenue, "%s: revenue absent", where);
			cr_expect(ev->revenue == check_double(where, want), "%s: revenue %.17g",
			          where, ev->revenue);
		}
	} else if (strcmp(name, "is_bot") == 0) {
		cr_expect(flag_is(where, want, ev->is_bot), "%s: is_bot %d", where, ev->is_bot);
	} else if (strcmp(name, "from_cookie") == 0) {
		cr_expect(flag_is(where, want, ev->visitor_from_cookie), "%s: from_cookie %d",
		          where, ev->visitor_from_cookie);
	} else if (strcmp(name, "set_cookie") == 0) {
		cr_expect(flag_is(where, want, ev->set_visitor_cookie), "%s: set_cookie %d", where,
		          ev->set_visitor_cookie);
	} else if (strcmp(name, "repaired") == 0) {
		cr_expect(flag_is(where, want, ev->text_repaired), "%s: repaired %d", where,
		          ev->text_repaired);
	} else {
		int f = 0;
		size_t len;
		const char *got;

		while (f < EF__COUNT && strcmp(event_field_name((enum event_field)f), name) != 0)
			f++;
		cr_assert_lt(f, EF__COUNT, "%s: unknown field in check '%s'", where, check);
		got = event_get(ev, (enum event_field)f, &len);
		if (absent)
			cr_expect_null(got, "%s: %s is '%.*s', want absent", where, name, (int)len,
			               got ? got : "");
		else
			cr_expect(bytes_eq(got, len, want, want_len),
			          "%s: %s is '%.*s', want '%.*s'", where, name, (int)len,
			          got ? got : "", (int)want_len, want);
	}
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void expect_one_line_reason(const char *where, const char *err)
{
	cr_expect(err[0] != '\0', "%s: no reason given", where);
	cr_expect_null(strchr(err, '\n'), "%s: reason is not one line: %s", where, err);
}

/* The columns a beacon_*.tsv case starts with: name, setup, input, result. Sets s up from
 * the setup column and returns the result the case wants. */
static int case_setup(struct table *t, struct table_row *r, const char *where, struct setup *s)
{
	cr_assert_geq(r->columns, 4, "%s: want at least 4 columns", where);
	setup_parse(s, where, r->col[1]);
	return table_result(t, r, 3);
}

/* A decoder's answer against the case's result; a refusal comes with a one-line reason. */
static void expect_result(const char *where, int rc, int want, const char *err)
{
	cr_expect_eq(rc, want, "%s: rc %d, want %d (%s)", where, rc, want, err);
	if (rc != 0)
		expect_one_line_reason(where, err);
}

/* -------------------------------------------------------------------- the query path */

Test(beacon, decodes_every_case_of_the_query_table)
{
	static struct event ev;
	struct table t;

	table_open(&t, "beacon_query.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		const char *where = table_where(&t, r);
		struct setup s;
		char err[160] = "";
		int rc, want;

		want = case_setup(&t, r, where, &s);
		rc = beacon_decode_query(r->col[2], r->len[2], &s.req, &s.opt, &ev, err,
		                         sizeof(err));
		expect_result(where, rc, want, err);
		if (rc == 0)
			expect_event_invariants(where, &ev);
		for (size_t c = 4; c < r->columns; c++) {
			if (starts_with(r->col[c], "err~"))
				cr_expect_not_null(strstr(err, r->col[c] + 4), "%s: reason '%s'",
				                   where, err);
			else if (rc == 0)
				check_event(where, &ev, r->col[c], r->len[c]);
		}
	}
	table_close(&t);
}

static char *repeat(const char *prefix, char c, size_t n, const char *suffix)
{
	size_t p = strlen(prefix), s = strlen(suffix);
	char *out = malloc(p + n + s + 1);

	cr_assert_not_null(out);
	memcpy(out, prefix, p);
	memset(out + p, c, n);
	memcpy(out + p + n, suffix, s + 1);
	return out;
}

Test(beacon, strings_longer_than_the_event_arena_are_no_space)
{
	/* Each field within the largest limits.max_string_bytes, together over the arena. */
	static struct event ev;
	struct setup s;
	char err[160] = "";
	char *url = repeat("eid=x&url=https%3A%2F%2Fs.example%2F", 'a', 5000, "&ref=");
	char *q = repeat(url, 'b', 5000, "");

	setup_defaults(&s);
	s.opt.max_string_bytes = EVENT_ARENA_BYTES;
	cr_assert_eq(beacon_decode_query(q, strlen(q), &s.req, &s.opt, &ev, err, sizeof(err)),
	             -ENOSPC);
	cr_assert_not_null(strstr(err, "too large"), "reason: %s", err);
	free(url);
	free(q);
}

Test(beacon, a_query_beacon_longer_than_the_decoder_takes_is_no_space)
{
	static struct event ev;
	struct setup s;
	char err[160] = "";
	char *q = repeat("eid=x&foo=", 'a', 4 * EVENT_ARENA_BYTES, "");

	setup_defaults(&s);
	/* beacon.h: -E2BIG is for too many fields, -ENOSPC for strings too long. */
	cr_assert_eq(beacon_decode_query(q, strlen(q), &s.req, &s.opt, &ev, err, sizeof(err)),
	             -ENOSPC);
	cr_assert_not_null(strstr(err, "too large"), "reason: %s", err);
	free(q);
}

Test(beacon, many_short_strings_that_overflow_the_arena_together_are_no_space)
{
	static struct event ev;
	struct setup s;
	char err[160] = "";
	char *url = repeat("eid=x&url=https%3A%2F%2Fs.example%2F", 'u', EVENT_ARENA_BYTES / 2, "");
	char *q = repeat(url, 'r', EVENT_ARENA_BYTES / 2, "");

	/* Each under the arena, together over it: the second half starts "ref=". */
	memcpy(q + strlen(url), "&ref=", 5);
	setup_defaults(&s);
	cr_assert_eq(beacon_decode_query(q, strlen(q), &s.req, &s.opt, &ev, err, sizeof(err)),
	             -ENOSPC);
	free(url);
	free(q);
}

Test(beacon, a_query_beacon_is_read_only_up_to_its_length)
{
	static struct event ev;
	struct setup s;
	const char *q = "eid=abc&e=nope";
	size_t len;
	const char *id;

	setup_defaults(&s);
	cr_assert_eq(beacon_decode_query(q, strlen("eid=abc"), &s.req, &s.opt, &ev, NULL, 0), 0);
	id = event_get(&ev, EF_EVENT_ID, &len);
	cr_assert(bytes_eq(id, len, "abc", 3));
	cr_assert_eq(ev.type, EVENT_PAGE_VIEW);
}

Test(beacon, a_rejected_beacon_needs_no_error_buffer)
{
	static struct event ev;
	struct setup s;

	setup_defaults(&s);
	cr_assert_eq(beacon_decode_query("e=nope", 6, &s.req, &s.opt, &ev, NULL, 0), -EINVAL);
	cr_assert_eq(beacon_decode_query("a=%zz", 5, &s.req, &s.opt, &ev, NULL, 0), -EINVAL);
}

Test(beacon, a_request_without_a_protocol_leaves_it_absent)
{
	static struct event ev;
	struct setup s;

	setup_defaults(&s);
	s.req.protocol = NULL;
	cr_assert_eq(beacon_decode_query("eid=x", 5, &s.req, &s.opt, &ev, NULL, 0), 0);
	cr_assert(!event_has(&ev, EF_PROTOCOL));
}

/* --------------------------------------------------------------------- the JSON path */

#define MAX_OUTCOMES 16

struct outcome {
	bool emitted;
	struct event ev;
	char payload[512];
	size_t payload_len;
	char reason[160];
};

struct outcomes {
	const char *body; /* the payloads must lie inside it */
	size_t body_len;
	size_t n;
	struct outcome o[MAX_OUTCOMES];
	int emit_return; /* what emit answers */
};

static int record_emit(void *ud, struct event *ev)
{
	struct outcomes *x = ud;

	cr_assert_lt(x->n, MAX_OUTCOMES);
	x->o[x->n].emitted = true;
	memcpy(&x->o[x->n].ev, ev, sizeof(*ev));
	x->n++;
	return x->emit_return;
}

static void record_reject(void *ud, int code, const char *payload, size_t payload_len,
                          const char *reason)
{
	struct outcomes *x = ud;
	struct outcome *o;

	cr_assert(code == -EINVAL || code == -EILSEQ || code == -E2BIG || code == -ENOSPC,
	          "a rejected element's code is a documented one: %d", code);
	cr_assert_lt(x->n, MAX_OUTCOMES);
	cr_assert(payload >= x->body && payload_len <= x->body_len &&
	              payload + payload_len <= x->body + x->body_len,
	          "a rejected payload lies outside the body");
	cr_assert_not_null(reason);
	o = &x->o[x->n++];
	o->emitted = false;
	o->payload_len = payload_len < sizeof(o->payload) ? payload_len : sizeof(o->payload);
	memcpy(o->payload, payload, o->payload_len);
	snprintf(o->reason, sizeof(o->reason), "%s", reason);
}

static struct outcomes outcomes;

static int decode_json(const char *body, size_t len, const struct setup *s, char *err,
                       size_t errlen)
{
	memset(&outcomes, 0, sizeof(outcomes));
	outcomes.body = body;
	outcomes.body_len = len;
	return beacon_decode_json(body, len, &s->req, &s->opt, record_emit, record_reject,
	                          &outcomes, err, errlen);
}

/* Walks the outcome columns of r against what the callbacks recorded. */
static void check_outcomes(const char *where, const struct table_row *r, const char *err)
{
	struct outcome *cur = NULL;
	size_t next = 0;

	for (size_t c = 4; c < r->columns; c++) {
		const char *item = r->col[c];

		if (strcmp(item, "emit") == 0 || strcmp(item, "reject") == 0) {
			bool emit = item[0] == 'e';

			cur = NULL;
			cr_expect_lt(next, outcomes.n, "%s: callback %zu (%s) never came", where,
			             next + 1, item);
			if (next >= outcomes.n)
				return;
			cr_expect_eq(outcomes.o[next].emitted, emit,
			             "%s: callback %zu is %s, want %s (reason %s)", where, next + 1,
			             outcomes.o[next].emitted ? "emit" : "reject", item,
			             outcomes.o[next].reason);
			if (outcomes.o[next].emitted != emit)
				return;
			cur = &outcomes.o[next++];
		} else if (starts_with(item, "err~")) {
			cr_expect_not_null(strstr(err, item + 4), "%s: reason '%s'", where, err);
		} else if (starts_with(item, "payload=")) {
			cr_assert(cur && !cur->emitted, "%s: payload= outside a reject", where);
			cr_expect(bytes_eq(cur->payload, cur->payload_len, item + 8, r->len[c] - 8),
			          "%s: payload '%.*s'", where, (int)cur->payload_len, cur->payload);
		} else if (starts_with(item, "reason~")) {
			cr_assert(cur && !cur->emitted, "%s: reason~ outside a reject", where);
			cr_expect_not_null(strstr(cur->reason, item + 7), "%s: reject reason '%s'",
			                   where, cur->reason);
		} else {
			cr_assert(cur && cur->emitted, "%s: check '%s' outside an emit", where,
			          item);
			check_event(where, &cur->ev, item, r->len[c]);
		}
	}
	cr_expect_eq(next, outcomes.n, "%s: %zu callbacks, the table lists %zu", where, outcomes.n,
	             next);
}

Test(beacon, decodes_every_case_of_the_json_table)
{
	struct table t;

	table_open(&t, "beacon_json.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		const char *where = table_where(&t, r);
		struct setup s;
		char err[160] = "";
		int rc, want;

		want = case_setup(&t, r, where, &s);
		rc = decode_json(r->col[2], r->len[2], &s, err, sizeof(err));
		expect_result(where, rc, want, err);
		for (size_t k = 0; k < outcomes.n; k++) {
			if (outcomes.o[k].emitted)
				expect_event_invariants(where, &outcomes.o[k].ev);
			else
				cr_expect(outcomes.o[k].reason[0] != '\0',
				          "%s: reject without reason", where);
		}
		check_outcomes(where, r, err);
	}
	table_close(&t);
}

Test(beacon, a_non_zero_emit_return_stops_a_json_array_and_is_returned)
{
	const char *body = "[{\"eid\":\"1\"},{\"eid\":\"2\"},{\"eid\":\"3\"}]";
	struct setup s;

	setup_defaults(&s);
	memset(&outcomes, 0, sizeof(outcomes));
	outcomes.body = body;
	outcomes.body_len = strlen(body);
	outcomes.emit_return = 7;
	cr_assert_eq(beacon_decode_json(body, strlen(body), &s.req, &s.opt, record_emit,
	                                record_reject, &outcomes, NULL, 0),
	             7);
	cr_assert_eq(outcomes.n, 1);
}

Test(beacon, a_non_zero_emit_return_for_a_lone_object_is_returned)
{
	const char *body = "{\"eid\":\"1\"}";
	struct setup s;

	setup_defaults(&s);
	memset(&outcomes, 0, sizeof(outcomes));
	outcomes.body = body;
	outcomes.body_len = strlen(body);
	outcomes.emit_return = -EAGAIN;
	cr_assert_eq(beacon_decode_json(body, strlen(body), &s.req, &s.opt, record_emit,
	                                record_reject, &outcomes, NULL, 0),
	             -EAGAIN);
	cr_assert_eq(outcomes.n, 1);
}

Test(beacon, json_decoding_works_without_callbacks)
{
	const char *body = "[{\"eid\":\"1\"},{\"e\":\"bad\"},2]";
	struct setup s;

	setup_defaults(&s);
	cr_assert_eq(
	    beacon_decode_json(body, strlen(body), &s.req, &s.opt, NULL, NULL, NULL, NULL, 0), 0);
}

Test(beacon, a_json_body_is_read_only_up_to_its_length)
{
	const char *body = "{\"eid\":\"x\"} trailing garbage";
	struct setup s;
	char err[160] = "";

	setup_defaults(&s);
	cr_assert_eq(decode_json(body, strlen("{\"eid\":\"x\"}"), &s, err, sizeof(err)), 0, "%s",
	             err);
	cr_assert_eq(outcomes.n, 1);
}

Test(beacon, json_strings_longer_than_the_event_arena_are_no_space)
{
	/* Each field within the largest limits.max_string_bytes, together over the arena. */
	char *url =
	    repeat("{\"eid\":\"x\",\"url\":\"https://s.example/", 'a', 5000, "\",\"ref\":\"");
	char *one = repeat(url, 'b', 5000, "\"}");
	char *arr_url =
	    repeat("[{\"eid\":\"x\",\"url\":\"https://s.example/", 'a', 5000, "\",\"ref\":\"");
	char *arr = repeat(arr_url, 'b', 5000, "\"},{\"eid\":\"y\"}]");
	struct setup s;
	char err[160] = "";

	setup_defaults(&s);
	s.opt.max_string_bytes = EVENT_ARENA_BYTES;
	cr_assert_eq(decode_json(one, strlen(one), &s, err, sizeof(err)), -ENOSPC);
	cr_assert_not_null(strstr(err, "too large"), "reason: %s", err);
	cr_assert_eq(outcomes.n, 0);

	cr_assert_eq(decode_json(arr, strlen(arr), &s, err, sizeof(err)), 0);
	cr_assert_eq(outcomes.n, 2);
	cr_assert(!outcomes.o[0].emitted);
	cr_assert_not_null(strstr(outcomes.o[0].reason, "too large"));
	cr_assert(outcomes.o[1].emitted);
	free(url);
	free(one);
	free(arr_url);
	free(arr);
}

Test(beacon, json_field_data_beyond_the_decoder_scratch_is_no_space)
{
	/* url, ref and en, each within the largest limits.max_string_bytes, together over
	 * the 16 KiB scratch. */
	char *url = repeat("{\"url\":\"https://s.example/", 'a', 6000, "\",\"ref\":\"");
	char *ref = repeat(url, 'b', 6000, "\",\"en\":\"");
	char *body = repeat(ref, 'c', 6000, "\"}");
	struct setup s;
	char err[160] = "";

	setup_defaults(&s);
	s.opt.max_string_bytes = EVENT_ARENA_BYTES;
	cr_assert_eq(decode_json(body, strlen(body), &s, err, sizeof(err)), -ENOSPC, "%s", err);
	cr_assert_not_null(strstr(err, "too large"), "reason: %s", err);
	free(url);
	free(ref);
	free(body);
}

Test(beacon, a_field_over_max_string_bytes_is_no_space_with_its_name)
{
	static struct event ev;
	struct setup s;
	char err[160] = "";
	char *q = repeat("eid=x&url=https%3A%2F%2Fs.example%2F", 'a', EVENT_ARENA_BYTES, "");
	char *body =
	    repeat("{\"eid\":\"x\",\"url\":\"https://s.example/", 'a', EVENT_ARENA_BYTES, "\"}");

	setup_defaults(&s);
	s.opt.max_string_bytes = 1u << 20; /* more than an event holds: the arena bounds it */
	cr_assert_eq(beacon_decode_query(q, strlen(q), &s.req, &s.opt, &ev, err, sizeof(err)),
	             -ENOSPC);
	cr_assert_not_null(strstr(err, "field url: longer than limits.max_string_bytes (8192)"),
	                   "reason: %s", err);
	cr_assert_eq(decode_json(body, strlen(body), &s, err, sizeof(err)), -ENOSPC);
	cr_assert_not_null(strstr(err, "field url: longer than limits.max_string_bytes (8192)"),
	                   "reason: %s", err);
	free(q);
	free(body);
}

/* ----------------------------------------------------------------- IP anonymisation */

Test(beacon, anonymizes_every_case_of_the_ip_table)
{
	struct table t;

	table_open(&t, "beacon_anonymize_ip.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		char out[64];
		size_t cap;
		int n, want;

		cr_assert_eq(r->columns, 5, "beacon_anonymize_ip.tsv:%d: want 5 columns", r->line);
		cap = table_size_or(r, 2, sizeof(out));
		cr_assert_leq(cap, sizeof(out));
		want = table_result(&t, r, 3);
		n = beacon_anonymize_ip(r->col[1], out, cap);
		if (want < 0) {
			cr_expect_eq(n, want, "beacon_anonymize_ip.tsv:%d (%s): %d", r->line,
			             r->col[0], n);
			continue;
		}
		cr_expect_eq(n, (int)r->len[4], "beacon_anonymize_ip.tsv:%d (%s): %d", r->line,
		             r->col[0], n);
		if (n > 0)
			cr_expect_str_eq(out, r->col[4], "beacon_anonymize_ip.tsv:%d (%s)", r->line,
			                 r->col[0]);
	}
	table_close(&t);
}

Test(beacon, anonymizing_no_ip_is_invalid)
{
	char out[64];

	cr_assert_eq(beacon_anonymize_ip(NULL, out, sizeof(out)), -EINVAL);
}
