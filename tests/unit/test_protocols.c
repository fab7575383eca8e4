/*
 * test_protocols.c - the tracker protocol decoders (src/protocols/), against golden cases.
 *
 * tests/data/protocols/<protocol>.json holds an array of cases written from TRACKERS.md:
 * {what, route, query, body, authorization, query_write_key, sp_anonymous, config: [
 * "section.key=value", ...], expect: {rc, events: [subset, ...], rejects: [reason
 * substring, ...]}}. Each case is decoded, every emitted event written as its record, and
 * each expected event compared key by key with its record (a key's value compared as
 * compact JSON; "<absent>" for a key that must not be there).
 *
 * tests/data/protocols/captured/<tracker>.json are request bodies the real trackers sent in the
 * browser test ({page_url, referrer, requests: [{method, target, headers, body}]}): every
 * request must decode with no rejects, into events whose protocol is the tracker's, that
 * carry a visitor, and whose page URL's UTM tags became their source, medium and campaign.
 */
#include "clickd/config.h"
#include "clickd/protocols.h"
#include "clickd/record.h"
#include "clickd/url.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS  64
#define MAX_REJECTS 64

static char records[MAX_EVENTS][RECORD_EVENT_MAX_BYTES];
static size_t record_count;
static char reject_reasons[MAX_REJECTS][160];
static size_t reject_count;

static int collect(void *ud, struct event *ev)
{
	(void)ud;
	cr_assert_lt(record_count, MAX_EVENTS);
	cr_assert_gt(record_event_json(ev, records[record_count], RECORD_EVENT_MAX_BYTES), 0);
	record_count++;
	return 0;
}

static void collect_reject(void *ud, int code, const char *payload, size_t len, const char *why)
{
	(void)ud;
	cr_assert_lt(code, 0);
	cr_assert(payload != NULL && len > 0, "a reject carries its payload");
	cr_assert_lt(reject_count, MAX_REJECTS);
	snprintf(reject_reasons[reject_count++], 160, "%s", why);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	cr_assert(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	cr_assert(buf != NULL);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static yajl_val read_json(const char *path)
{
	char err[256];
	size_t len;
	char *text = read_file(path, &len);
	yajl_val v = yajl_tree_parse(text, err, sizeof(err));

	cr_assert(v != NULL, "%s: %s", path, err);
	free(text);
	return v;
}

static const char *data_dir(void)
{
	const char *dir = getenv("CLICKD_TEST_DATA");

	return dir ? dir : "tests/data";
}

static const char *str_of(yajl_val obj, const char *key)
{
	yajl_val v = protocol_json_get(obj, key);

	return v != NULL && YAJL_IS_STRING(v) ? v->u.string : NULL;
}

/* Compact JSON of v, for comparisons. */
static const char *compact(yajl_val v, char *buf, size_t cap)
{
	struct protocol_json j;

	protocol_json_init(&j, buf, cap);
	protocol_json_value(&j, v);
	cr_assert(protocol_json_fits(&j));
	buf[j.len] = '\0';
	return buf;
}

/* The record must hold every key of want with the same value. */
static void check_subset(const char *where, const char *record, yajl_val want)
{
	char err[256];
	yajl_val got = yajl_tree_parse(record, err, sizeof(err));

	cr_assert(got != NULL, "%s: record is not JSON: %s", where, record);
	for (size_t i = 0; i < want->u.object.len; i++) {
		const char *key = want->u.object.keys[i];
		yajl_val w = want->u.object.values[i], g = protocol_json_get(got, key);
		static char a[RECORD_EVENT_MAX_BYTES], b[RECORD_EVENT_MAX_BYTES];

		if (YAJL_IS_STRING(w) && strcmp(w->u.string, "<absent>") == 0) {
			cr_assert(g == NULL, "%s: %s should be absent in %s", where, key, record);
			continue;
		}
		if (YAJL_IS_STRING(w) && strcmp(w->u.string, "<present>") == 0) {
			cr_assert(g != NULL, "%s: %s missing in %s", where, key, record);
			continue;
		}
		cr_assert(g != NULL, "%s: %s missing in %s", where, key, record);
		cr_assert_str_eq(compact(g, a, sizeof(a)), compact(w, b, sizeof(b)),
		                 "%s: key %s in %s", where, key, record);
	}
	yajl_tree_free(got);
}

static void load_config(struct config *cfg, yajl_val sets)
{
	char *argv[16];
	char err[256];
	size_t n = 0;

	for (size_t i = 0; sets != NULL && i < sets->u.array.len && n < 16; i++)
		argv[n++] = sets->u.array.values[i]->u.string;
	cr_assert_eq(config_load(cfg, NULL, argv, n, err, sizeof(err)), 0, "%s", err);
}

static const struct beacon_options options = {
    .anonymize_ip = true, .max_fields = 64, .max_batch = 100, .max_json_depth = 8};

/* Runs one decoder on a request; returns its code. */
static int decode(const char *route, const char *query, const char *body, size_t body_len,
                  const char *authorization, const char *query_key, bool anonymous,
                  const struct config *cfg, char *err, size_t errlen)
{
	static struct event ev;
	struct beacon_request req = {
	    .received_at_ms = 1714557600000, /* 2024-05-01T10:00:00Z */
	    .client_ip = "198.51.100.23",
	    .user_agent = "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0",
	    .user_agent_len = 44,
	    .anonymous = anonymous,
	};
	struct protocol_keys ga4_keys = {cfg->ga4_secrets, cfg->ga4_secret_count};
	size_t qlen = query ? strlen(query) : 0;
	int rc;

	record_count = reject_count = 0;
	if (strcmp(route, "snowplow_get") == 0) {
		req.cookie_visitor_id = anonymous ? NULL : "nuid-cookie-1";
		req.cookie_visitor_id_len = anonymous ? 0 : 13;
		rc = snowplow_decode_query(query, qlen, &req, &options, &ev, err, errlen);
		if (rc == 0)
			collect(NULL, &ev);
		return rc;
	}
	if (strcmp(route, "snowplow_post") == 0)
		return snowplow_decode_post(body, body_len, &req, &options, collect, collect_reject,
		                            NULL, err, errlen);
	if (strcmp(route, "ga4_collect") == 0)
		return ga4_decode_collect(query, qlen, body, body_len, &ga4_keys, &req, &options,
		                          collect, collect_reject, NULL, err, errlen);
	if (strcmp(route, "ga4_mp") == 0)
		return ga4_decode_mp(query, qlen, body, body_len, &ga4_keys, &req, &options,
		                     collect, collect_reject, NULL, err, errlen);
	/* "segment:<route>" or "rudderstack_beacon" */
	{
		const char *name = strncmp(route, "segment:", 8) == 0 ? route + 8 : "batch";
		int sr = segment_route_of(name, strlen(name));
		struct segment_request sreq = {
		    .route = (enum segment_route)sr,
		    .authorization = authorization,
		    .authorization_len = authorization ? strlen(authorization) : 0,
		    .query_write_key = query_key,
		    .query_write_key_len = query_key ? strlen(query_key) : 0,
		    .segment_keys = {cfg->segment_keys, cfg->segment_key_count},
		    .rudderstack_keys = {cfg->rudderstack_keys, cfg->rudderstack_key_count},
		    .rudderstack_route = strcmp(route, "rudderstack_beacon") == 0,
		};

		cr_assert_geq(sr, 0, "unknown route %s", route);
		return segment_decode(body, body_len, &sreq, &req, &options, collect,
		                      collect_reject, NULL, err, errlen);
	}
}

static void run_cases(const char *file)
{
	char path[512];
	yajl_val cases;

	snprintf(path, sizeof(path), "%s/protocols/%s", data_dir(), file);
	cases = read_json(path);
	cr_assert(YAJL_IS_ARRAY(cases), "%s: an array of cases", path);
	cr_assert_gt(cases->u.array.len, 0);
	for (size_t i = 0; i < cases->u.array.len; i++) {
		yajl_val c = cases->u.array.values[i];
		yajl_val expect = protocol_json_get(c, "expect");
		yajl_val events = protocol_json_get(expect, "events");
		yajl_val rejects = protocol_json_get(expect, "rejects");
		yajl_val rc_want = protocol_json_get(expect, "rc");
		const char *what = str_of(c, "what"), *body = str_of(c, "body");
		const char *err_want = str_of(expect, "error");
		char where[600], err[160] = "";
		struct config cfg;
		int rc;

		snprintf(where, sizeof(where), "%s case %zu (%s)", file, i, what ? what : "?");
		load_config(&cfg, protocol_json_get(c, "config"));
		rc = decode(str_of(c, "route"), str_of(c, "query"), body, body ? strlen(body) : 0,
		            str_of(c, "authorization"), str_of(c, "query_write_key"),
		            YAJL_IS_TRUE(protocol_json_get(c, "sp_anonymous")), &cfg, err,
		            sizeof(err));
		cr_assert_eq(rc, rc_want ? (int)YAJL_GET_INTEGER(rc_want) : 0, "%s: rc %d (%s)",
		             where, rc, err);
		if (err_want != NULL)
			cr_assert(strstr(err, err_want) != NULL, "%s: error '%s' lacks '%s'", where,
			          err, err_want);
		cr_assert_eq(record_count, events ? events->u.array.len : 0,
		             "%s: %zu events (first: %s)", where, record_count,
		             record_count ? records[0] : "-");
		for (size_t k = 0; k < record_count; k++) {
			char ewhere[640];

			snprintf(ewhere, sizeof(ewhere), "%s event %zu", where, k);
			check_subset(ewhere, records[k], events->u.array.values[k]);
		}
		cr_assert_eq(reject_count, rejects ? rejects->u.array.len : 0,
		             "%s: %zu rejects (%s)", where, reject_count,
		             reject_count ? reject_reasons[0] : "-");
		for (size_t k = 0; k < reject_count; k++)
			cr_assert(strstr(reject_reasons[k], rejects->u.array.values[k]->u.string) !=
			              NULL,
			          "%s: reject '%s'", where, reject_reasons[k]);
		config_close(&cfg);
	}
	yajl_tree_free(cases);
}

Test(protocols, snowplow_golden_cases)
{
	run_cases("snowplow.json");
}

Test(protocols, segment_golden_cases)
{
	run_cases("segment.json");
}

Test(protocols, rudderstack_golden_cases)
{
	run_cases("rudderstack.json");
}

Test(protocols, ga4_golden_cases)
{
	run_cases("ga4.json");
}

/* ---- captured from the real trackers ---- */

/* The value of query parameter name in a URL (percent-decoded into out), or NULL. */
static const char *url_param(const char *url, const char *name, char *out, size_t cap)
{
	const char *q = strchr(url, '?');
	size_t n = strlen(name);

	while (q != NULL) {
		q++;
		if (strncmp(q, name, n) == 0 && q[n] == '=') {
			const char *end = strpbrk(q + n + 1, "&#");
			size_t len = end ? (size_t)(end - q - n - 1) : strlen(q + n + 1), out_len;

			if (url_decode(q + n + 1, len, out, cap - 1, true, &out_len) != 0)
				return NULL;
			out[out_len] = '\0';
			return out;
		}
		q = strchr(q, '&');
	}
	return NULL;
}

static void check_captured_file(const char *dir, const char *name)
{
	char path[768], want_protocol[32];
	yajl_val doc, requests;
	const char *page_url, *dot = strrchr(name, '.');
	char utm[3][128];
	size_t decoded = 0;
	struct config cfg;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(want_protocol, sizeof(want_protocol), "%.*s", (int)(dot - name), name);
	doc = read_json(path);
	page_url = str_of(doc, "page_url");
	requests = protocol_json_get(doc, "requests");
	cr_assert(page_url != NULL && requests != NULL && YAJL_IS_ARRAY(requests), "%s", path);
	cr_assert(url_param(page_url, "utm_source", utm[0], 128) != NULL, "%s: page_url", path);
	cr_assert(url_param(page_url, "utm_medium", utm[1], 128) != NULL, "%s: page_url", path);
	cr_assert(url_param(page_url, "utm_campaign", utm[2], 128) != NULL, "%s: page_url", path);
	load_config(&cfg, NULL);
	for (size_t i = 0; i < requests->u.array.len; i++) {
		yajl_val r = requests->u.array.values[i];
		const char *method = str_of(r, "method"), *target = str_of(r, "target");
		const char *body = str_of(r, "body"), *q = strchr(target, '?');
		const char *auth = str_of(protocol_json_get(r, "headers"), "authorization");
		char route[64], query[8192], err[160] = "", where[900];
		size_t path_len = q ? (size_t)(q - target) : strlen(target);
		int rc;

		if (strcmp(method, "OPTIONS") == 0)
			continue;
		snprintf(where, sizeof(where), "%s request %zu (%s %.80s)", name, i, method,
		         target);
		snprintf(query, sizeof(query), "%s", q ? q + 1 : "");
		if (strncmp(target, "/com.snowplowanalytics.snowplow/tp2", path_len) == 0)
			snprintf(route, sizeof(route), "snowplow_post");
		else if (path_len == 2 && strncmp(target, "/i", 2) == 0)
			snprintf(route, sizeof(route), "snowplow_get");
		else if (strncmp(target, "/g/collect", path_len) == 0)
			snprintf(route, sizeof(route), "ga4_collect");
		else if (strncmp(target, "/mp/collect", path_len) == 0)
			snprintf(route, sizeof(route), "ga4_mp");
		else if (strncmp(target, "/beacon/v1/batch", path_len) == 0)
			snprintf(route, sizeof(route), "rudderstack_beacon");
		else if (strncmp(target, "/v1/", 4) == 0)
			snprintf(route, sizeof(route), "segment:%.*s", (int)(path_len - 4),
			         target + 4);
		else
			cr_assert_fail("%s: no route", where);
		if (strcmp(route, "segment:m") == 0)
			continue; /* Segment's own metrics: discarded */
		rc = decode(route, query, body && body[0] ? body : NULL, body ? strlen(body) : 0,
		            auth, NULL, false, &cfg, err, sizeof(err));
		cr_assert_eq(rc, 0, "%s: %s", where, err);
		cr_assert_eq(reject_count, 0, "%s: rejected: %s", where,
		             reject_count ? reject_reasons[0] : "");
		cr_assert_gt(record_count, 0, "%s: no event", where);
		for (size_t k = 0; k < record_count; k++) {
			char a[128], b[128];
			yajl_val got = yajl_tree_parse(records[k], err, sizeof(err));
			const char *url = str_of(got, "url"), *protocol = str_of(got, "protocol");

			cr_assert(got != NULL, "%s: %s", where, records[k]);
			cr_assert(protocol != NULL && strncmp(protocol, want_protocol, 3) == 0,
			          "%s: protocol of %s", where, records[k]);
			cr_assert(str_of(got, "visitor_id") != NULL, "%s: no visitor in %s", where,
			          records[k]);
			if (url != NULL && url_param(url, "utm_source", a, sizeof(a)) != NULL &&
			    strcmp(a, utm[0]) == 0) {
				cr_assert_str_eq(str_of(got, "source"), utm[0], "%s: %s", where,
				                 records[k]);
				cr_assert_str_eq(str_of(got, "medium"), utm[1], "%s: %s", where,
				                 records[k]);
				cr_assert_str_eq(str_of(got, "campaign"), utm[2], "%s: %s", where,
				                 records[k]);
				(void)b;
			}
			yajl_tree_free(got);
			decoded++;
		}
	}
	cr_assert_gt(decoded, 0, "%s: no event at all", name);
	config_close(&cfg);
	yajl_tree_free(doc);
}

Test(protocols, every_captured_tracker_request_decodes)
{
	char dir[512];
	DIR *d;
	struct dirent *e;
	size_t files = 0;

	snprintf(dir, sizeof(dir), "%s/protocols/captured", data_dir());
	d = opendir(dir);
	if (d == NULL) {
		cr_assert_eq(errno, ENOENT, "%s: %s", dir, strerror(errno));
		cr_skip_test("no captured requests in %s", dir);
	}
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);

		if (n > 5 && strcmp(e->d_name + n - 5, ".json") == 0) {
			check_captured_file(dir, e->d_name);
			files++;
		}
	}
	closedir(d);
	cr_assert_gt(files, 0, "%s holds no .json file", dir);
}

/* ---- helpers ---- */

Test(protocols, base64_takes_both_alphabets_padded_or_not)
{
	char out[64];

	/* "{\"a\":\"~~~?\"}" has '+' / '/' in standard base64 and '-' / '_' URL-safe. */
	cr_assert_eq(protocol_base64_decode("eyJhIjoifn5+PyJ9", 16, out, sizeof(out)), 12);
	cr_assert(memcmp(out, "{\"a\":\"~~~?\"}", 12) == 0);
	cr_assert_eq(protocol_base64_decode("eyJhIjoifn5-PyJ9", 16, out, sizeof(out)), 12);
	cr_assert(memcmp(out, "{\"a\":\"~~~?\"}", 12) == 0);
	cr_assert_eq(protocol_base64_decode("YQ==", 4, out, sizeof(out)), 1);
	cr_assert_eq(protocol_base64_decode("YQ", 2, out, sizeof(out)), 1);
	cr_assert_eq(protocol_base64_decode("YWI=", 4, out, sizeof(out)), 2);
	cr_assert_eq(protocol_base64_decode("YWI", 3, out, sizeof(out)), 2);
	cr_assert_eq(protocol_base64_decode("Y", 1, out, sizeof(out)), -EINVAL);
	cr_assert_eq(protocol_base64_decode("Y===", 4, out, sizeof(out)), -EINVAL);
	cr_assert_eq(protocol_base64_decode("YQ=", 3, out, sizeof(out)), -EINVAL);
	cr_assert_eq(protocol_base64_decode("Y Q=", 4, out, sizeof(out)), -EINVAL);
	cr_assert_eq(protocol_base64_decode("YWJj", 4, out, 2), -ENOSPC);
}

Test(protocols, iso8601_times_with_fractions_and_offsets)
{
	int64_t ms;

	cr_assert(protocol_parse_iso8601("2024-05-01T10:00:00.123Z", 24, &ms));
	cr_assert_eq(ms, 1714557600123);
	cr_assert(protocol_parse_iso8601("2024-05-01T10:00:00Z", 20, &ms));
	cr_assert_eq(ms, 1714557600000);
	cr_assert(protocol_parse_iso8601("2024-05-01T12:00:00.5+02:00", 27, &ms));
	cr_assert_eq(ms, 1714557600500);
	cr_assert(protocol_parse_iso8601("2024-05-01T10:00:00.123456789Z", 30, &ms));
	cr_assert_eq(ms, 1714557600123);
	cr_assert(!protocol_parse_iso8601("2024-05-01T10:00:00", 19, &ms));
	cr_assert(!protocol_parse_iso8601("2024-13-01T10:00:00Z", 20, &ms));
	cr_assert(!protocol_parse_iso8601("2024-05-01T10:00:00.Z", 21, &ms));
	cr_assert(!protocol_parse_iso8601("2024-05-01T10:00:00Zx", 21, &ms));
}

Test(protocols, json_writer_escapes_and_replaces_bad_utf8)
{
	char buf[128];
	struct protocol_json j;

	protocol_json_init(&j, buf, sizeof(buf));
	protocol_json_open(&j, '{');
	protocol_json_key(&j, "a\"b", 3);
	protocol_json_string(&j, "x\n\xff", 3);
	protocol_json_key(&j, "n", 1);
	protocol_json_number(&j, "1.5e3", 5);
	protocol_json_key(&j, "s", 1);
	protocol_json_number(&j, "0x10", 4);
	protocol_json_key(&j, "l", 1);
	protocol_json_open(&j, '[');
	protocol_json_number(&j, "1", 1);
	protocol_json_open(&j, '{');
	protocol_json_close(&j, '}');
	protocol_json_close(&j, ']');
	protocol_json_close(&j, '}');
	cr_assert(protocol_json_fits(&j));
	buf[j.len] = '\0';
	cr_assert_str_eq(buf, "{\"a\\\"b\":\"x\\u000a\xef\xbf\xbd\",\"n\":1.5e3,\"s\":\"0x10\","
	                      "\"l\":[1,{}]}");
	protocol_json_init(&j, buf, 4);
	protocol_json_string(&j, "too long", 8);
	cr_assert(!protocol_json_fits(&j));
}

Test(protocols, json_parse_refuses_deep_nesting_and_nul)
{
	char deep[200], err[160];
	yajl_val v;

	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	cr_assert_null(
	    protocol_json_parse(deep, sizeof(deep), PROTOCOL_MAX_JSON_DEPTH, err, sizeof(err)));
	cr_assert(strstr(err, "deeper") != NULL, "%s", err);
	cr_assert_null(protocol_json_parse("{\"a\":\"\0\"}", 9, 8, err, sizeof(err)));
	v = protocol_json_parse("{\"a\":[1]}", 9, 8, err, sizeof(err));
	cr_assert_not_null(v);
	yajl_tree_free(v);
}
