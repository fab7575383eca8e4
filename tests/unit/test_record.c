/*
 * test_record.c - the JSON records (record.h): field order, omission of absent values,
 * escaping, UTF-8 handling, times, numbers, dead-letter payload cutting. Every record is
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
	set(EF_CHANNEL, "Paid Search");
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
	    "\"click_id\":\"abc\",\"channel\":\"Paid Search\",\"revenue\":19.99,"
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
		if (f == EF_PROTOCOL) /* the last decoded field takes what is left */
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

Test(record, replaces_invalid_bytes_and_escapes_controls_in_the_dead_letter_payload)
{
	const char p[] = "a\xff"
	                 "b\x00"
	                 "c\n\"\xc3";
	char *back;

	dead_letter("peer", p, sizeof(p) - 1, 1024);
	cr_assert_not_null(strstr(buf, "\"payload\":\"a\xef\xbf\xbd"
	                               "b\\u0000c\\n\\\"\xef\xbf\xbd\""),
	                   "%s", buf);
	back = parsed_string(buf, "payload");
	/* yajl stops its C string at the decoded NUL: compare the part before it. */
	cr_assert_str_eq(back, "a\xef\xbf\xbd"
	                       "b");
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
