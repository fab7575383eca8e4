/*
 * test_record.c - the JSON records (record.h): field order, omission of absent values,
 * escaping, UTF-8 handling, times, numbers, dead-letter payload cutting, attribution and
 * rollup records (key order, shares read back summing to 1, worst cases). Every record is
 * also parsed back with yajl (which validates UTF-8) to prove it is valid JSON.
 */
#include "clickd/event.h"
#include "clickd/record.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

static char buf[RECORD_EVENT_MAX_BYTES];
static struct event ev;

static void set(enum event_field f, const char *s)
{
	cr_assert_eq(event_set(&ev, f, s, strlen(s)), 0);
}

static void set_n(enum event_field f, const char *s, size_t n)
{
	cr_assert_eq(event_set(&ev, f, s, n), 0);
}

static void assert_valid_json(const char *json)
{
	char err[256];
	yajl_val v = yajl_tree_parse(json, err, sizeof(err));

	cr_assert_not_null(v, "not valid JSON (%s): %s", err, json);
	cr_assert(YAJL_IS_OBJECT(v));
	yajl_tree_free(v);
}

static const char *event_json(void)
{
	int n = record_event_json(&ev, buf, sizeof(buf));

	cr_assert_gt(n, 0);
	cr_assert_eq(strlen(buf), (size_t)n);
	assert_valid_json(buf);
	return buf;
}

/* The string value of key in the parsed record (a copy; the caller frees it). */
static char *parsed_string(const char *json, const char *key)
{
	const char *path[] = {key, NULL};
	yajl_val v = yajl_tree_parse(json, NULL, 0);
	yajl_val s = yajl_tree_get(v, path, yajl_t_string);
	const char *str = YAJL_GET_STRING(s);
	char *out = str ? strdup(str) : NULL;

	yajl_tree_free(v);
	return out;
}

static void setup(void)
{
	event_init(&ev);
}

TestSuite(record, .init = setup);

Test(record, writes_every_field_in_contract_order)
{
	ev.type = EVENT_CONVERSION;
	ev.received_at_ms = 1795426286123;
	ev.client_at_ms = 1795426286000;
	ev.session_index = 3;
	ev.has_revenue = true;
	ev.revenue = 19.99;
	ev.is_bot = true;
	/* Set in reverse order: the output order must not depend on the arena order. */
	set(EF_PROTOCOL, "native");
	set(EF_USER_AGENT, "UA");
	set(EF_IP, "192.0.2.0");
	set(EF_CURRENCY, "EUR");
	set(EF_CHANNEL, "Affiliates");
	set(EF_AFFILIATE_ID, "aff7");
	set(EF_CLICK_ID, "abc");
	set(EF_CLICK_ID_TYPE, "gclid");
	set(EF_UTM_ID, "u1");
	set(EF_CONTENT, "c");
	set(EF_TERM, "t");
	set(EF_CAMPAIGN, "spring");
	set(EF_MEDIUM, "cpc");
	set(EF_SOURCE, "google");
	set(EF_REFERRER_HOST, "www.google.com");
	set(EF_REFERRER, "https://www.google.com/");
	set(EF_URL, "https://shop.example/?gclid=abc");
	set(EF_SESSION_ID, "s1");
	set(EF_USER_ID, "user1");
	set(EF_VISITOR_ID, "v1");
	set(EF_NAME, "purchase");
	set(EF_APP_ID, "shop");
	set(EF_EVENT_ID, "e1");

	cr_assert_str_eq(
	    event_json(),
	    "{\"event_id\":\"e1\",\"app_id\":\"shop\",\"type\":\"conversion\","
	    "\"name\":\"purchase\",\"received_at\":\"2026-11-23T09:31:26.123Z\","
	    "\"client_at\":\"2026-11-23T09:31:26.000Z\",\"visitor_id\":\"v1\","
	    "\"user_id\":\"user1\",\"session_id\":\"s1\",\"session_index\":3,"
	    "\"url\":\"https://shop.example/?gclid=abc\","
	    "\"referrer\":\"https://www.google.com/\",\"referrer_host\":\"www.google.com\","
	    "\"source\":\"google\",\"medium\":\"cpc\",\"campaign\":\"spring\",\"term\":\"t\","
	    "\"content\":\"c\",\"utm_id\":\"u1\",\"click_id_type\":\"gclid\","
	    "\"click_id\":\"abc\",\"affiliate_id\":\"aff7\",\"channel\":\"Affiliates\","
	    "\"revenue\":19.99,"
	    "\"currency\":\"EUR\",\"ip\":\"192.0.2.0\",\"user_agent\":\"UA\",\"is_bot\":true,"
	    "\"protocol\":\"native\"}");
}

Test(record, omits_absent_fields_but_always_writes_type_received_at_and_is_bot)
{
	ev.received_at_ms = 0;
	cr_assert_str_eq(event_json(), "{\"type\":\"page_view\","
	                               "\"received_at\":\"1970-01-01T00:00:00.000Z\","
	                               "\"is_bot\":false}");
}

Test(record, omits_session_index_zero_and_revenue_without_has_revenue)
{
	ev.session_index = 0;
	ev.revenue = 5;
	ev.has_revenue = false;
	event_json();
	cr_assert_null(strstr(buf, "session_index"));
	cr_assert_null(strstr(buf, "revenue"));
	cr_assert_null(strstr(buf, "client_at"));
}

Test(record, escapes_quotes_backslashes_control_characters_and_del)
{
	set(EF_NAME, "a\"b\\c\n\t\r\b\f\x01\x1f\x7f/");
	event_json();
	cr_assert_not_null(strstr(buf, "\"name\":\"a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001\\u001f"
	                               "\\u007f/\""),
	                   "%s", buf);
	char *back = parsed_string(buf, "name");
	cr_assert_str_eq(back, "a\"b\\c\n\t\r\b\f\x01\x1f\x7f/");
	free(back);
}

Test(record, keeps_valid_utf8_as_it_is)
{
	const char *s = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xef\xbf\xbf";

	set(EF_NAME, s);
	event_json();
	char *back = parsed_string(buf, "name");
	cr_assert_str_eq(back, s);
	free(back);
	cr_assert_not_null(strstr(buf, s));
}

Test(record, replaces_invalid_utf8_in_event_strings)
{
	/* Decoders promise valid UTF-8; the writer still never emits invalid JSON. Stray
	 * continuation, overlong '/', a surrogate, and a sequence cut short. */
	set(EF_NAME, "a\x80"
	             "b\xc0\xaf"
	             "c\xed\xa0\x80"
	             "d\xe6\x97");
	event_json();
	char *back = parsed_string(buf, "name");
	cr_assert_str_eq(back, "a\xef\xbf\xbd"
	                       "b\xef\xbf\xbd\xef\xbf\xbd"
	                       "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	                       "d\xef\xbf\xbd\xef\xbf\xbd");
	free(back);
}

Test(record, formats_times_as_rfc3339_utc_with_milliseconds)
{
	char t[32];

	record_format_time(0, t);
	cr_assert_str_eq(t, "1970-01-01T00:00:00.000Z");
	record_format_time(1795426286123, t);
	cr_assert_str_eq(t, "2026-11-23T09:31:26.123Z");
	record_format_time(1709251199999, t); /* leap day */
	cr_assert_str_eq(t, "2024-02-29T23:59:59.999Z");
	record_format_time(1709251200000, t);
	cr_assert_str_eq(t, "2024-03-01T00:00:00.000Z");
	record_format_time(-1, t);
	cr_assert_str_eq(t, "1969-12-31T23:59:59.999Z");
	record_format_time(INT64_MAX, t);
	cr_assert_str_eq(t, "9999-12-31T23:59:59.999Z");
	record_format_time(INT64_MIN, t);
	cr_assert_str_eq(t, "0000-01-01T00:00:00.000Z");
}

static const char *revenue_of(double v)
{
	event_init(&ev);
	ev.has_revenue = true;
	ev.revenue = v;
	event_json();
	const char *p = strstr(buf, "\"revenue\":");
	if (!p)
		return NULL;
	static char num[64];
	p += strlen("\"revenue\":");
	size_t n = strcspn(p, ",}");
	memcpy(num, p, n);
	num[n] = '\0';
	return num;
}

Test(record, writes_revenue_as_the_shortest_number_that_reads_back_the_same)
{
	cr_assert_str_eq(revenue_of(19.99), "19.99");
	cr_assert_str_eq(revenue_of(100), "100");
	cr_assert_str_eq(revenue_of(0.1 + 0.2), "0.30000000000000004");
	cr_assert_str_eq(revenue_of(1.0 / 3), "0.3333333333333333");
	cr_assert_str_eq(revenue_of(1e21), "1e+21");
	cr_assert_str_eq(revenue_of(-2.5), "-2.5");
	cr_assert_str_eq(revenue_of(0), "0");
	/* whole cents take the printf-free path: the same shortest forms */
	cr_assert_str_eq(revenue_of(49.9), "49.9");
	cr_assert_str_eq(revenue_of(0.05), "0.05");
	cr_assert_str_eq(revenue_of(-0.01), "-0.01");
	cr_assert_str_eq(revenue_of(1234567.89), "1234567.89");
	cr_assert_str_eq(revenue_of(9999999999999.99), "9999999999999.99");
	cr_assert_str_eq(revenue_of(-0.0), "0");
	cr_assert_str_eq(revenue_of(0.001), "0.001");
}

Test(record, never_writes_nan_or_infinity)
{
	cr_assert_null(revenue_of(NAN));
	cr_assert_null(revenue_of(INFINITY));
	cr_assert_null(revenue_of(-INFINITY));
}

Test(record, answers_enospc_when_the_buffer_is_too_small)
{
	char small[64];
	int n;

	set(EF_URL, "https://example.com/a/long/enough/path/to/overflow/the/small/buffer");
	cr_assert_eq(record_event_json(&ev, small, sizeof(small)), -ENOSPC);
	n = record_event_json(&ev, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	/* Exactly length + NUL fits; one byte less does not. */
	cr_assert_eq(record_event_json(&ev, buf, (size_t)n + 1), n);
	cr_assert_eq(record_event_json(&ev, buf, (size_t)n), -ENOSPC);
}

Test(record, json_fields_are_written_as_json_and_bad_ones_as_strings)
{
	event_init(&ev);
	ev.received_at_ms = 1795426286123;
	set(EF_PROPERTIES, "{\"a\":[1,\"x\"]}");
	set(EF_CONTEXTS, "{\"broken\"");
	event_json();
	cr_assert(strstr(buf, ",\"properties\":{\"a\":[1,\"x\"]}") != NULL, "%s", buf);
	cr_assert(strstr(buf, ",\"contexts\":\"{\\\"broken\\\"\"") != NULL, "%s", buf);
}

Test(record, a_full_arena_of_control_characters_fits_the_max_size)
{
	static char junk[EVENT_ARENA_BYTES];
	/* Decoded fields fill all but the reserve; session_id and channel fill the reserve. */
	size_t decoded = EVENT_ARENA_BYTES - EVENT_ARENA_RESERVE;
	size_t per = decoded / (EF__COUNT - 2), used = 0;

	memset(junk, '\x01', sizeof(junk));
	for (int f = 0; f < EF__COUNT; f++) {
		size_t n = per;
		if (f == EF_SESSION_ID || f == EF_CHANNEL)
			continue;
		if (f == EF_CONTEXTS) /* the last decoded field takes what is left */
			n = decoded - used;
		cr_assert_eq(event_set(&ev, (enum event_field)f, junk, n), 0, "field %d", f);
		used += n;
	}
	cr_assert_eq(event_set(&ev, EF_SESSION_ID, junk, EVENT_ARENA_RESERVE / 2), 0);
	cr_assert_eq(event_set(&ev, EF_CHANNEL, junk, EVENT_ARENA_RESERVE / 2), 0);
	cr_assert_eq(ev.arena_used, EVENT_ARENA_BYTES);
	ev.has_revenue = true;
	ev.revenue = -1.2345678901234567e-300;
	ev.session_index = UINT32_MAX;
	ev.client_at_ms = 0;
	event_json();
}

static const char *dead_letter(const char *peer, const char *payload, size_t len, size_t max)
{
	int n = record_dead_letter_json(1795426286123, "malformed: bad query", "http", peer,
	                                payload, len, max, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	assert_valid_json(buf);
	return buf;
}

Test(record, writes_a_dead_letter_with_every_field)
{
	cr_assert_str_eq(dead_letter("192.0.2.1:5000", "e=pv&x", 6, 1024),
	                 "{\"received_at\":\"2026-11-23T09:31:26.123Z\","
	                 "\"reason\":\"malformed: bad query\",\"protocol\":\"http\","
	                 "\"peer\":\"192.0.2.1:5000\",\"payload\":\"e=pv&x\"}");
}

Test(record, omits_the_dead_letter_peer_when_unknown)
{
	dead_letter(NULL, "x", 1, 1024);
	cr_assert_null(strstr(buf, "peer"));
}

Test(record, cuts_the_dead_letter_payload_at_a_utf8_boundary)
{
	/* "a" then "é" (2 bytes) then "😀" (4 bytes). */
	const char *p = "a\xc3\xa9\xf0\x9f\x98\x80";
	char *back;

	dead_letter(NULL, p, strlen(p), 2); /* cut inside é: é left out whole */
	back = parsed_string(buf, "payload");
	cr_assert_str_eq(back, "a");
	free(back);

	dead_letter(NULL, p, strlen(p), 3);
	back = parsed_string(buf, "payload");
	cr_assert_str_eq(back, "a\xc3\xa9");
	free(back);

	dead_letter(NULL, p, strlen(p), 6); /* inside the emoji */
	back = parsed_string(buf, "payload");
	cr_assert_str_eq(back, "a\xc3\xa9");
	free(back);

	dead_letter(NULL, p, strlen(p), 7);
	back = parsed_string(buf, "payload");
	cr_assert_str_eq(back, p);
	free(back);
}

Test(record, replaces_invalid_bytes_and_controls_in_the_dead_letter_payload)
{
	/* Invalid bytes and every control but tab, LF and CR become U+FFFD: NUL, ESC (a
	 * terminal escape), DEL and C1 never reach whoever prints the payload. */
	const char p[] = "a\xff"
	                 "b\x00"
	                 "c\n\t\r\"\x1b[31m\x7f\xc2\x85\xc2\xa0\xc3";
	char *back;

	dead_letter("peer", p, sizeof(p) - 1, 1024);
	cr_assert_not_null(
	    strstr(buf,
	           "\"payload\":\"a\xef\xbf\xbd"
	           "b\xef\xbf\xbd"
	           "c\\n\\t\\r\\\"\xef\xbf\xbd[31m\xef\xbf\xbd\xef\xbf\xbd\xc2\xa0\xef\xbf\xbd\""),
	    "%s", buf);
	back = parsed_string(buf, "payload");
	cr_assert_str_eq(back,
	                 "a\xef\xbf\xbd"
	                 "b\xef\xbf\xbd"
	                 "c\n\t\r\"\xef\xbf\xbd[31m\xef\xbf\xbd\xef\xbf\xbd\xc2\xa0\xef\xbf\xbd");
	free(back);
}

Test(record, a_whole_payload_of_invalid_bytes_stays_valid_json)
{
	static char p[4096];

	for (size_t i = 0; i < sizeof(p); i++)
		p[i] = (char)(0x80 + i % 0x80);
	dead_letter(NULL, p, sizeof(p), sizeof(p));
	dead_letter(NULL, p, sizeof(p), 1000);
}

Test(record, times_agree_with_gmtime_from_year_0_to_9999)
{
	long bad = 0;

	/* A step of a week and an hour and a second walks over every weekday, hour and leap
	 * rule of the range (record_format_time no longer calls gmtime_r). */
	for (long long s = -62167219200LL; s < 253402300799LL; s += 86400 * 7 + 3601) {
		char ours[32], want[64];
		struct tm tm;
		time_t t = (time_t)s;

		gmtime_r(&t, &tm);
		snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.123Z",
		         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		         tm.tm_sec);
		record_format_time(s * 1000 + 123, ours);
		if (strcmp(ours, want) != 0 && bad++ < 5)
			cr_log_error("%lld: %s, gmtime says %s", s, ours, want);
	}
	cr_assert_eq(bad, 0);
}

/* ---- attribution and rollup records ---- */

static char big[RECORD_ATTRIBUTION_MAX_BYTES];
static struct attribution_result result;

/* The keys of object v, in order, joined by ",". */
static void object_keys(yajl_val v, char *out, size_t cap)
{
	size_t len = 0;

	cr_assert(YAJL_IS_OBJECT(v));
	out[0] = '\0';
	for (size_t i = 0; i < v->u.object.len; i++)
		len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "," : "",
		                        v->u.object.keys[i]);
}

static yajl_val member(yajl_val v, const char *key)
{
	const char *path[] = {key, NULL};

	return yajl_tree_get(v, path, yajl_t_any);
}

/* A conversion of 90 EUR after three sessions: affiliate, email, paid search. */
static void three_touch_conversion(void)
{
	static const struct {
		const char *session, *visitor, *source, *medium, *campaign, *click, *affiliate;
		enum channel channel;
		int64_t started;
	} tps[3] = {
	    {"s1", "v1", "(direct)", "(none)", "", "", "awc-9", CHANNEL_AFFILIATES, 1795426000000},
	    {"s2", "v1", "news", "email", "spring", "", "", CHANNEL_EMAIL, 1795426100000},
	    {"s3", "v2", "google", "cpc", "", "gclid", "", CHANNEL_PAID_SEARCH, 1795426200000},
	};

	ev.type = EVENT_CONVERSION;
	ev.received_at_ms = 1795426286123;
	ev.has_revenue = true;
	ev.revenue = 90;
	set(EF_EVENT_ID, "c1");
	set(EF_APP_ID, "shop");
	set(EF_VISITOR_ID, "v2");
	set(EF_USER_ID, "u1");
	set(EF_NAME, "purchase");
	set(EF_CURRENCY, "EUR");
	memset(&result, 0, sizeof(result));
	result.converted_at_ms = ev.received_at_ms;
	result.revenue = 90;
	result.count = 3;
	for (int i = 0; i < 3; i++) {
		struct attribution_credited *c = &result.touchpoints[i];

		strcpy(c->tp.session_id, tps[i].session);
		strcpy(c->visitor_id, tps[i].visitor);
		strcpy(c->tp.source, tps[i].source);
		strcpy(c->tp.medium, tps[i].medium);
		strcpy(c->tp.campaign, tps[i].campaign);
		strcpy(c->tp.click_id_type, tps[i].click);
		strcpy(c->tp.affiliate_id, tps[i].affiliate);
		c->tp.channel = (uint8_t)tps[i].channel;
		c->tp.started_at_ms = tps[i].started;
	}
	attribution_credit(&result, 7LL * 86400000);
}

static yajl_val attribution_json(void)
{
	char err[256];
	int n = record_attribution_json(&ev, &result, big, sizeof(big));
	yajl_val v;

	cr_assert_gt(n, 0);
	cr_assert_eq(strlen(big), (size_t)n);
	v = yajl_tree_parse(big, err, sizeof(err));
	cr_assert_not_null(v, "not valid JSON (%s): %s", err, big);
	return v;
}

Test(record, writes_an_attribution_record_in_contract_order)
{
	char keys[512];
	yajl_val v, tps;

	three_touch_conversion();
	v = attribution_json();
	object_keys(v, keys, sizeof(keys));
	cr_assert_str_eq(keys, "conversion_event_id,app_id,visitor_id,user_id,converted_at,name,"
	                       "revenue,currency,touchpoints");
	cr_assert_str_eq(YAJL_GET_STRING(member(v, "converted_at")), "2026-11-23T09:31:26.123Z");
	cr_assert_eq(YAJL_GET_DOUBLE(member(v, "revenue")), 90);
	tps = member(v, "touchpoints");
	cr_assert(YAJL_IS_ARRAY(tps));
	cr_assert_eq(tps->u.array.len, 3);
	object_keys(tps->u.array.values[0], keys, sizeof(keys));
	cr_assert_str_eq(keys,
	                 "session_id,visitor_id,started_at,channel,source,medium,"
	                 "affiliate_id,credit,revenue",
	                 "empty strings (campaign, click_id_type) are omitted: %s", keys);
	object_keys(tps->u.array.values[2], keys, sizeof(keys));
	cr_assert_str_eq(keys, "session_id,visitor_id,started_at,channel,source,medium,"
	                       "click_id_type,credit,revenue");
	cr_assert_str_eq(YAJL_GET_STRING(member(tps->u.array.values[0], "channel")), "Affiliates");
	cr_assert_str_eq(YAJL_GET_STRING(member(tps->u.array.values[2], "visitor_id")), "v2");
	object_keys(member(tps->u.array.values[1], "credit"), keys, sizeof(keys));
	cr_assert_str_eq(keys, "first_touch,last_touch,last_non_direct,linear,time_decay,"
	                       "position_based");
	object_keys(member(tps->u.array.values[1], "revenue"), keys, sizeof(keys));
	cr_assert_str_eq(keys, "first_touch,last_touch,last_non_direct,linear,time_decay,"
	                       "position_based");
	yajl_tree_free(v);
}

Test(record, attribution_shares_read_back_sum_to_one_and_revenue_follows_them)
{
	yajl_val v, tps;

	three_touch_conversion();
	v = attribution_json();
	tps = member(v, "touchpoints");
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++) {
		const char *model = attribution_model_name((enum attribution_model)m);
		double sum = 0, revenue = 0;

		for (size_t i = 0; i < tps->u.array.len; i++) {
			yajl_val t = tps->u.array.values[i];
			double share = YAJL_GET_DOUBLE(member(member(t, "credit"), model));
			double amount = YAJL_GET_DOUBLE(member(member(t, "revenue"), model));

			cr_assert_float_eq(amount, share * 90, 1e-9, "%s touchpoint %zu", model, i);
			cr_assert_eq(share, result.touchpoints[i].credit[m], "read back exactly");
			sum += share;
			revenue += amount;
		}
		cr_assert_float_eq(sum, 1.0, 1e-9, "%s", model);
		cr_assert_float_eq(revenue, 90.0, 1e-9, "%s", model);
	}
	/* position_based over three: 0.4 / 0.2 / 0.4, written as such. */
	cr_assert(strstr(big, "\"position_based\":0.4}") != NULL);
	cr_assert(strstr(big, "\"position_based\":0.2}") != NULL);
	yajl_tree_free(v);
}

Test(record, an_attribution_record_without_revenue_or_path_omits_what_is_absent)
{
	three_touch_conversion();
	ev.has_revenue = false;
	cr_assert_gt(record_attribution_json(&ev, &result, big, sizeof(big)), 0);
	cr_assert_null(strstr(big, "revenue"), "%s", big);
	cr_assert(strstr(big, "\"credit\":{") != NULL);
	result.count = 0;
	event_init(&ev);
	ev.type = EVENT_CONVERSION;
	ev.received_at_ms = 0;
	cr_assert_gt(record_attribution_json(&ev, &result, big, sizeof(big)), 0);
	cr_assert_str_eq(big, "{\"converted_at\":\"2026-11-23T09:31:26.123Z\","
	                      "\"touchpoints\":[]}");
	assert_valid_json(big);
}

Test(record, a_worst_case_attribution_record_fits_the_max_size)
{
	static char junk[EVENT_ARENA_BYTES];
	size_t decoded = EVENT_ARENA_BYTES - EVENT_ARENA_RESERVE;
	const enum event_field fields[] = {EF_EVENT_ID, EF_APP_ID, EF_VISITOR_ID,
	                                   EF_USER_ID,  EF_NAME,   EF_CURRENCY};
	size_t per = decoded / 6;
	yajl_val v;

	memset(junk, '\x01', sizeof(junk));
	for (size_t i = 0; i < 6; i++)
		set_n(fields[i], junk, per);
	ev.type = EVENT_CONVERSION;
	ev.has_revenue = true;
	ev.revenue = -1.2345678901234567e-300;
	memset(&result, 0, sizeof(result));
	result.count = ATTRIBUTION_MAX_TOUCHPOINTS;
	result.converted_at_ms = INT64_MIN;
	result.revenue = ev.revenue;
	for (size_t i = 0; i < result.count; i++) {
		struct attribution_credited *c = &result.touchpoints[i];

		memset(&c->tp, '\x01', sizeof(c->tp));
		c->tp.session_id[sizeof(c->tp.session_id) - 1] = '\0';
		c->tp.source[sizeof(c->tp.source) - 1] = '\0';
		c->tp.medium[sizeof(c->tp.medium) - 1] = '\0';
		c->tp.campaign[sizeof(c->tp.campaign) - 1] = '\0';
		c->tp.click_id_type[sizeof(c->tp.click_id_type) - 1] = '\0';
		c->tp.affiliate_id[sizeof(c->tp.affiliate_id) - 1] = '\0';
		c->tp.channel = CHANNEL_MOBILE_PUSH; /* the longest name */
		c->tp.started_at_ms = INT64_MIN;
		memset(c->visitor_id, '\x01', sizeof(c->visitor_id) - 1);
		c->visitor_id[sizeof(c->visitor_id) - 1] = '\0';
		for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++) {
			c->credit[m] = -1.2345678901234567e-300;
			c->revenue[m] = -1.2345678901234567e-300;
		}
	}
	v = attribution_json();
	yajl_tree_free(v);
}

static const char *rollup_json(const struct attribution_rollup_row *row)
{
	static char out[RECORD_ROLLUP_MAX_BYTES];
	int n = record_rollup_json(row, out, sizeof(out));

	cr_assert_gt(n, 0);
	cr_assert_eq(strlen(out), (size_t)n);
	assert_valid_json(out);
	return out;
}

Test(record, writes_a_rollup_record_in_contract_order)
{
	struct attribution_rollup_row row = {
	    .minute_ms = 1795426260000,
	    .channel = CHANNEL_PAID_SEARCH,
	    .counts = {.sessions = 3,
	               .page_views = 7,
	               .conversions = 1,
	               .revenue = 90,
	               .attributed_revenue = {0, 90, 90, 30, 33.25, 36}},
	    .late = 2,
	};

	strcpy(row.app_id, "shop");
	strcpy(row.source, "google");
	strcpy(row.medium, "cpc");
	cr_assert_str_eq(rollup_json(&row),
	                 "{\"minute\":\"2026-11-23T09:31:00.000Z\",\"app_id\":\"shop\","
	                 "\"channel\":\"Paid Search\",\"source\":\"google\",\"medium\":\"cpc\","
	                 "\"sessions\":3,\"page_views\":7,\"conversions\":1,\"revenue\":90,"
	                 "\"attributed_revenue\":{\"first_touch\":0,\"last_touch\":90,"
	                 "\"last_non_direct\":90,\"linear\":30,\"time_decay\":33.25,"
	                 "\"position_based\":36},\"late\":2}");
}

Test(record, the_other_rollup_row_is_written_as_other)
{
	struct attribution_rollup_row row = {.other = true, .channel = -1};

	strcpy(row.app_id, "(other)");
	strcpy(row.source, "(other)");
	strcpy(row.medium, "(other)");
	strcpy(row.campaign, "(other)");
	cr_assert(strstr(rollup_json(&row),
	                 "\"app_id\":\"(other)\",\"channel\":\"(other)\",\"source\":\"(other)\","
	                 "\"medium\":\"(other)\",\"campaign\":\"(other)\",\"sessions\":0,"
	                 "\"page_views\":0,\"conversions\":0,\"revenue\":0,") != NULL);
}

Test(record, a_worst_case_rollup_record_fits_the_max_size)
{
	struct attribution_rollup_row row = {.minute_ms = INT64_MIN,
	                                     .channel = CHANNEL_MOBILE_PUSH};

	memset(row.app_id, '\x01', sizeof(row.app_id) - 1);
	memset(row.source, '\x01', sizeof(row.source) - 1);
	memset(row.medium, '\x01', sizeof(row.medium) - 1);
	memset(row.campaign, '\x01', sizeof(row.campaign) - 1);
	row.counts.sessions = row.counts.page_views = row.counts.conversions = UINT64_MAX;
	row.late = UINT64_MAX;
	row.counts.revenue = -1.2345678901234567e-300;
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++)
		row.counts.attributed_revenue[m] = -1.2345678901234567e-300;
	rollup_json(&row);
}
