/*
 * ga4.c - Google Analytics 4: gtag's /g/collect and the Measurement Protocol.
 *
 * /g/collect (GET or POST) is not documented by Google: this follows what gtag.js sends,
 * and stays tolerant of parameters it does not know. The query holds the parameters the
 * events share; a POST body holds one event per line, each line URL-encoded parameters
 * that override the query's (no body: the query is the one event). ga4_collect_fields
 * maps a parameter to an event field or a properties key; ep.<name> and epn.<name> (event
 * parameters, string and number) become properties <name>, up.* / upn.* go to
 * properties.user_properties, pr1.. (items) to properties.items. en names the event:
 * page_view is a page view, purchase a conversion with its value (epn.value, or ep.value)
 * and currency (cu, or ep.currency) and ep.transaction_id as its event ID; anything else
 * a custom event.
 *
 * The Measurement Protocol (POST /mp/collect?measurement_id=&api_secret=) is JSON:
 * {client_id, user_id, timestamp_micros, user_properties, events:[{name, params}]}, at
 * most 25 events. ga4_mp_fields maps params to event fields; all params are kept as the
 * event's properties and user_properties as its contexts.
 */
#include "clickd/protocols.h"
#include "clickd/url.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PROTOCOL_GA4    "ga4"
#define PROTOCOL_GA4_MP "ga4_mp"

/* Parameters in the query, and in one body line: gtag sends 30 to 60 with parameters. */
#define GA4_MAX_PARAMS 192

/* Bytes of decoded parameters: the query (http.max_url_bytes <= 8192) and one line. */
#define GA4_SCRATCH_BYTES (2 * EVENT_ARENA_BYTES)

enum ga4_kind { GA4_FIELD, GA4_PROP, GA4_PROP_NUMBER };

/* The mapping table of /g/collect parameters. tid is the app_id unless ga4.api_secrets
 * maps it to another (ga4_app_id). */
static const struct {
	const char *param;
	enum ga4_kind kind;
	enum event_field field;
	const char *prop;
} ga4_collect_fields[] = {
    {"cid", GA4_FIELD, EF_VISITOR_ID, NULL},
    {"uid", GA4_FIELD, EF_USER_ID, NULL},
    {"sid", GA4_FIELD, EF_CLIENT_SESSION_ID, NULL},
    {"en", GA4_FIELD, EF_NAME, NULL},
    {"dl", GA4_FIELD, EF_URL, NULL},
    {"dr", GA4_FIELD, EF_REFERRER, NULL},
    {"cs", GA4_FIELD, EF_SOURCE, NULL},
    {"cm", GA4_FIELD, EF_MEDIUM, NULL},
    {"cn", GA4_FIELD, EF_CAMPAIGN, NULL},
    {"ck", GA4_FIELD, EF_TERM, NULL},
    {"cc", GA4_FIELD, EF_CONTENT, NULL},
    {"ci", GA4_FIELD, EF_UTM_ID, NULL},
    {"tid", GA4_PROP, 0, "measurement_id"},
    {"v", GA4_PROP, 0, "protocol_version"},
    {"dt", GA4_PROP, 0, "page_title"},
    {"sct", GA4_PROP_NUMBER, 0, "session_count"},
    {"seg", GA4_PROP_NUMBER, 0, "session_engaged"},
    {"_ss", GA4_PROP_NUMBER, 0, "session_start"},
    {"_fv", GA4_PROP_NUMBER, 0, "first_visit"},
    {"_et", GA4_PROP_NUMBER, 0, "engagement_time_msec"},
    {"ul", GA4_PROP, 0, "language"},
    {"sr", GA4_PROP, 0, "screen_resolution"},
    {"cu", GA4_PROP, 0, "currency"},
};

/* The mapping table of Measurement Protocol event params (paths into the event). */
static const struct {
	const char *param;
	enum event_field field;
} ga4_mp_fields[] = {
    {"session_id", EF_CLIENT_SESSION_ID},
    {"page_location", EF_URL},
    {"page_referrer", EF_REFERRER},
    {"source", EF_SOURCE},
    {"medium", EF_MEDIUM},
    {"campaign", EF_CAMPAIGN},
    {"term", EF_TERM},
    {"content", EF_CONTENT},
    {"campaign_id", EF_UTM_ID},
};

struct ga4_params {
	size_t count;
	const char *key[GA4_MAX_PARAMS];
	size_t key_len[GA4_MAX_PARAMS];
	const char *value[GA4_MAX_PARAMS];
	size_t value_len[GA4_MAX_PARAMS];
};

/* An event's parameters: its line's, over the query's. */
struct ga4_view {
	const struct ga4_params *line; /* may be NULL */
	const struct ga4_params *query;
};

/* The next line of a body (without "\n" or "\r\n"), *p moved past it; NULL at end. */
static const char *next_line(const char **p, const char *end, size_t *len)
{
	const char *line = *p, *nl;

	if (line >= end)
		return NULL;
	nl = memchr(line, '\n', (size_t)(end - line));
	*p = nl ? nl + 1 : end;
	*len = (size_t)((nl ? nl : end) - line);
	if (*len && line[*len - 1] == '\r')
		(*len)--;
	return line;
}

static bool bytes_starts(const char *a, size_t a_len, const char *prefix)
{
	size_t n = strlen(prefix);

	return a_len > n && memcmp(a, prefix, n) == 0;
}

static const char *params_get(const struct ga4_params *p, const char *name, size_t *len)
{
	for (size_t i = 0; p != NULL && i < p->count; i++) {
		if (protocol_bytes_is(p->key[i], p->key_len[i], name)) {
			*len = p->value_len[i];
			return p->value_len[i] ? p->value[i] : NULL;
		}
	}
	return NULL;
}

/* The event's value of a parameter: its line's when the line has it (even empty). */
static const char *view_get(const struct ga4_view *v, const char *name, size_t *len)
{
	for (size_t i = 0; v->line != NULL && i < v->line->count; i++) {
		if (protocol_bytes_is(v->line->key[i], v->line->key_len[i], name)) {
			*len = v->line->value_len[i];
			return *len ? v->line->value[i] : NULL;
		}
	}
	*len = 0;
	return params_get(v->query, name, len);
}

struct ga4_parse_ctx {
	struct ga4_params *p;
	char *err;
	size_t errlen;
	bool err_set;
};

static int ga4_param_cb(void *ud, const char *key, size_t key_len, const char *value,
                        size_t value_len)
{
	struct ga4_parse_ctx *c = ud;
	struct ga4_params *p = c->p;

	if (p->count == GA4_MAX_PARAMS) {
		protocol_set_err(c->err, c->errlen, "too many parameters (max %d)", GA4_MAX_PARAMS);
		c->err_set = true;
		return -E2BIG;
	}
	p->key[p->count] = key;
	p->key_len[p->count] = key_len;
	p->value[p->count] = value;
	p->value_len[p->count] = value_len;
	p->count++;
	return 0;
}

static int ga4_parse(const char *q, size_t len, struct ga4_params *p, char *scratch, size_t cap,
                     char *err, size_t errlen)
{
	struct ga4_parse_ctx c = {.p = p, .err = err, .errlen = errlen};
	int rc;

	p->count = 0;
	if (len > cap) {
		protocol_set_err(err, errlen, "parameters too large");
		return -ENOSPC;
	}
	rc = url_query_parse(q, len, scratch, cap, ga4_param_cb, &c);
	if (rc < 0 && !c.err_set) {
		if (rc == -EILSEQ)
			protocol_set_err(err, errlen, "not UTF-8");
		else if (rc == -EINVAL)
			protocol_set_err(err, errlen,
			                 "bad percent-encoding or empty parameter name");
		else
			protocol_set_err(err, errlen, "parameters too large");
	}
	return rc;
}

/* app_id: the app_id ga4.api_secrets gives the measurement ID, else the ID itself. */
static int ga4_app_id(struct event *ev, const struct protocol_keys *keys, const char *tid,
                      size_t len)
{
	for (size_t i = 0; tid != NULL && keys != NULL && i < keys->count; i++)
		if (protocol_bytes_is(tid, len, keys->items[i].id))
			return event_set(ev, EF_APP_ID, keys->items[i].app_id,
			                 strlen(keys->items[i].app_id));
	return protocol_set_text(ev, EF_APP_ID, tid, len);
}

/* Type by event name; purchase: conversion with value, currency and transaction ID. */
static int ga4_collect_kind(const struct ga4_view *v, struct event *ev)
{
	size_t len = 0, n;
	const char *name = event_get(ev, EF_NAME, &n);
	const char *s;
	char currency[3];

	if (name == NULL) {
		return -EINVAL;
	} else if (protocol_bytes_is(name, n, "page_view")) {
		ev->type = EVENT_PAGE_VIEW;
		return 0;
	} else if (!protocol_bytes_is(name, n, "purchase")) {
		ev->type = EVENT_CUSTOM;
		return 0;
	}
	ev->type = EVENT_CONVERSION;
	s = view_get(v, "epn.value", &len);
	if (s == NULL)
		s = view_get(v, "ep.value", &len);
	if (s != NULL && protocol_parse_decimal(s, len, &ev->revenue))
		ev->has_revenue = true;
	s = view_get(v, "cu", &len);
	if (s == NULL)
		s = view_get(v, "ep.currency", &len);
	if (protocol_parse_currency(s, len, currency) &&
	    event_set(ev, EF_CURRENCY, currency, 3) < 0)
		return -ENOSPC;
	s = view_get(v, "ep.transaction_id", &len);
	return protocol_set_text(ev, EF_EVENT_ID, s, len);
}

/* One parameter set's ep./epn./up./upn./pr entries into the properties being written;
 * skip: a query parameter the line overrides is left to the line. */
static void ga4_event_params(const struct ga4_view *v, const struct ga4_params *p, bool is_query,
                             const char *prefix, const char *number_prefix, struct protocol_json *j)
{
	size_t plen = strlen(prefix), nlen = strlen(number_prefix);

	for (size_t i = 0; p != NULL && i < p->count; i++) {
		const char *k = p->key[i];
		size_t k_len = p->key_len[i], dummy;
		char name[128];
		bool number = bytes_starts(k, k_len, number_prefix);

		if (!number && !bytes_starts(k, k_len, prefix))
			continue;
		if (is_query && v->line != NULL && k_len < sizeof(name)) {
			memcpy(name, k, k_len);
			name[k_len] = '\0';
			if (params_get(v->line, name, &dummy) != NULL)
				continue;
		}
		if (number) {
			protocol_json_key(j, k + nlen, k_len - nlen);
			protocol_json_number(j, p->value[i], p->value_len[i]);
		} else {
			protocol_json_key(j, k + plen, k_len - plen);
			protocol_json_string(j, p->value[i], p->value_len[i]);
		}
	}
}

static bool has_prefixed(const struct ga4_params *p, const char *prefix, const char *prefix2)
{
	for (size_t i = 0; p != NULL && i < p->count; i++)
		if (bytes_starts(p->key[i], p->key_len[i], prefix) ||
		    bytes_starts(p->key[i], p->key_len[i], prefix2))
			return true;
	return false;
}

static void ga4_items(const struct ga4_params *p, struct protocol_json *j, bool *open)
{
	for (size_t i = 0; p != NULL && i < p->count; i++) {
		const char *k = p->key[i];
		size_t k_len = p->key_len[i];

		if (k_len < 3 || k[0] != 'p' || k[1] != 'r' || k[2] < '1' || k[2] > '9')
			continue;
		if (!*open) {
			protocol_json_key(j, "items", 5);
			protocol_json_open(j, '[');
			*open = true;
		}
		protocol_json_string(j, p->value[i], p->value_len[i]);
	}
}

static void ga4_collect_properties(const struct ga4_view *v, struct protocol_json *j)
{
	bool items = false;

	protocol_json_open(j, '{');
	for (size_t i = 0; i < sizeof(ga4_collect_fields) / sizeof(ga4_collect_fields[0]); i++) {
		size_t len;
		const char *s;

		if (ga4_collect_fields[i].kind == GA4_FIELD)
			continue;
		s = view_get(v, ga4_collect_fields[i].param, &len);
		if (s == NULL)
			continue;
		protocol_json_key(j, ga4_collect_fields[i].prop,
		                  strlen(ga4_collect_fields[i].prop));
		if (ga4_collect_fields[i].kind == GA4_PROP_NUMBER)
			protocol_json_number(j, s, len);
		else
			protocol_json_string(j, s, len);
	}
	ga4_event_params(v, v->line, false, "ep.", "epn.", j);
	ga4_event_params(v, v->query, true, "ep.", "epn.", j);
	if (has_prefixed(v->line, "up.", "upn.") || has_prefixed(v->query, "up.", "upn.")) {
		protocol_json_key(j, "user_properties", 15);
		protocol_json_open(j, '{');
		ga4_event_params(v, v->line, false, "up.", "upn.", j);
		ga4_event_params(v, v->query, true, "up.", "upn.", j);
		protocol_json_close(j, '}');
	}
	ga4_items(v->line != NULL ? v->line : v->query, j, &items);
	if (items)
		protocol_json_close(j, ']');
	protocol_json_close(j, '}');
}

static int ga4_collect_build(const struct ga4_view *v, const struct protocol_keys *keys,
                             const struct beacon_request *req, const struct beacon_options *opt,
                             struct event *ev, char *err, size_t errlen)
{
	char json_buf[EVENT_ARENA_BYTES];
	struct beacon_request r = *req;
	struct protocol_json j;
	size_t len = 0;
	const char *tid;
	int rc;

	event_init(ev);
	ev->received_at_ms = req->received_at_ms;
	r.protocol = PROTOCOL_GA4;
	for (size_t i = 0; i < sizeof(ga4_collect_fields) / sizeof(ga4_collect_fields[0]); i++) {
		const char *s;

		if (ga4_collect_fields[i].kind != GA4_FIELD)
			continue;
		s = view_get(v, ga4_collect_fields[i].param, &len);
		rc = protocol_set_text(ev, ga4_collect_fields[i].field, s, len);
		if (rc == -EILSEQ) {
			protocol_set_err(err, errlen, "parameter %s: not UTF-8",
			                 ga4_collect_fields[i].param);
			return rc;
		}
		if (rc < 0) {
			protocol_set_err(err, errlen, "beacon too large");
			return rc;
		}
	}
	tid = view_get(v, "tid", &len);
	if (ga4_app_id(ev, keys, tid, len) < 0) {
		protocol_set_err(err, errlen, "parameter tid: not UTF-8 or too large");
		return -EINVAL;
	}
	rc = ga4_collect_kind(v, ev);
	if (rc == -EINVAL) {
		protocol_set_err(err, errlen, "parameter en: missing");
		return rc;
	}
	if (rc < 0) {
		protocol_set_err(err, errlen,
		                 "parameter ep.transaction_id: not UTF-8 or too large");
		return rc;
	}
	rc = beacon_finish(ev, &r, opt, err, errlen);
	if (rc < 0)
		return rc;
	protocol_json_init(&j, json_buf, sizeof(json_buf));
	ga4_collect_properties(v, &j);
	protocol_set_json(ev, EF_PROPERTIES, &j);
	return 0;
}

int ga4_decode_collect(const char *query, size_t query_len, const char *body, size_t body_len,
                       const struct protocol_keys *keys, const struct beacon_request *req,
                       const struct beacon_options *opt, beacon_emit_fn emit,
                       beacon_reject_fn reject, void *ud, char *err, size_t errlen)
{
	char query_scratch[GA4_SCRATCH_BYTES], line_scratch[GA4_SCRATCH_BYTES];
	struct ga4_params qp, lp;
	struct event ev;
	size_t max_batch = opt->max_batch ? opt->max_batch : 100;
	struct ga4_view v = {.query = &qp};
	const char *p, *end, *line;
	size_t n, lines = 0;
	int rc;

	rc = ga4_parse(query != NULL ? query : "", query_len, &qp, query_scratch,
	               sizeof(query_scratch), err, errlen);
	if (rc < 0)
		return rc;
	if (body != NULL) {
		for (p = body, end = body + body_len; (line = next_line(&p, end, &n)) != NULL;)
			lines += n > 0;
	}
	if (lines > max_batch) {
		protocol_set_err(err, errlen, "more than %zu events in one body", max_batch);
		return -E2BIG;
	}
	if (lines == 0) {
		rc = ga4_collect_build(&v, keys, req, opt, &ev, err, errlen);
		if (rc < 0)
			return rc;
		return emit != NULL ? emit(ud, &ev) : 0;
	}
	v.line = &lp;
	for (p = body, end = body + body_len; (line = next_line(&p, end, &n)) != NULL;) {
		char why[160];
		int erc;

		if (n == 0)
			continue;
		erc = ga4_parse(line, n, &lp, line_scratch, sizeof(line_scratch), why, sizeof(why));
		if (erc == 0)
			erc = ga4_collect_build(&v, keys, req, opt, &ev, why, sizeof(why));
		if (erc < 0) {
			if (reject != NULL)
				reject(ud, erc, line, n, why);
			continue;
		}
		rc = emit != NULL ? emit(ud, &ev) : 0;
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- Measurement Protocol ---- */

/* timestamp_micros (a number or digits) as ms since the epoch. */
static bool mp_time(yajl_val v, int64_t *ms)
{
	size_t len = 0;
	const char *s = protocol_json_text(v, &len);
	int64_t us = 0;

	if (s == NULL || len == 0 || len > 19)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		us = us * 10 + (s[i] - '0');
	}
	if (us / 1000 <= 0 || us / 1000 >= 7258118400000LL) /* before 2200, like every time */
		return false;
	*ms = us / 1000;
	return true;
}

struct mp_ctx {
	yajl_val doc;
	const char *app_id;
	size_t app_id_len;
	const struct beacon_request *req;
	const struct beacon_options *opt;
};

static int mp_build(const struct mp_ctx *c, yajl_val e, struct event *ev, char *err, size_t errlen)
{
	char json_buf[EVENT_ARENA_BYTES];
	struct beacon_request r = *c->req;
	yajl_val params = protocol_json_get(e, "params");
	yajl_val props = protocol_json_get(c->doc, "user_properties");
	struct protocol_json j;
	size_t len = 0;
	const char *s;
	char currency[3];
	int64_t ms;
	int rc;

	if (!YAJL_IS_OBJECT(e)) {
		protocol_set_err(err, errlen, "event is not a JSON object");
		return -EINVAL;
	}
	if (params != NULL && !YAJL_IS_OBJECT(params))
		params = NULL;
	event_init(ev);
	ev->received_at_ms = r.received_at_ms;
	r.protocol = PROTOCOL_GA4_MP;
	s = protocol_json_text(protocol_json_get(e, "name"), &len);
	if (s == NULL || len == 0) {
		protocol_set_err(err, errlen, "event name: missing");
		return -EINVAL;
	}
	rc = protocol_set_text(ev, EF_NAME, s, len);
	if (rc == 0)
		rc = protocol_set_text(ev, EF_APP_ID, c->app_id, c->app_id_len);
	s = protocol_json_text(protocol_json_get(c->doc, "client_id"), &len);
	if (rc == 0)
		rc = protocol_set_text(ev, EF_VISITOR_ID, s, len);
	s = protocol_json_text(protocol_json_get(c->doc, "user_id"), &len);
	if (rc == 0)
		rc = protocol_set_text(ev, EF_USER_ID, s, len);
	for (size_t i = 0; rc == 0 && i < sizeof(ga4_mp_fields) / sizeof(ga4_mp_fields[0]); i++) {
		s = protocol_json_text(protocol_json_get(params, ga4_mp_fields[i].param), &len);
		rc = protocol_set_text(ev, ga4_mp_fields[i].field, s, len);
	}
	if (rc < 0) {
		protocol_set_err(err, errlen,
		                 rc == -EILSEQ ? "a field is not UTF-8" : "event too large");
		return rc;
	}
	s = event_get(ev, EF_NAME, &len);
	ev->type = protocol_bytes_is(s, len, "page_view")  ? EVENT_PAGE_VIEW
	           : protocol_bytes_is(s, len, "purchase") ? EVENT_CONVERSION
	                                                   : EVENT_CUSTOM;
	if (ev->type == EVENT_CONVERSION) {
		s = protocol_json_text(protocol_json_get(params, "value"), &len);
		if (s != NULL && protocol_parse_decimal(s, len, &ev->revenue))
			ev->has_revenue = true;
		s = protocol_json_text(protocol_json_get(params, "currency"), &len);
		if (protocol_parse_currency(s, len, currency))
			event_set(ev, EF_CURRENCY, currency, 3);
		s = protocol_json_text(protocol_json_get(params, "transaction_id"), &len);
		if (protocol_set_text(ev, EF_EVENT_ID, s, len) < 0) {
			protocol_set_err(err, errlen, "transaction_id: not UTF-8 or too large");
			return -EINVAL;
		}
	}
	if (mp_time(protocol_json_get(e, "timestamp_micros"), &ms) ||
	    mp_time(protocol_json_get(c->doc, "timestamp_micros"), &ms))
		ev->client_at_ms = ms;
	rc = beacon_finish(ev, &r, c->opt, err, errlen);
	if (rc < 0)
		return rc;
	if (params != NULL) {
		protocol_json_init(&j, json_buf, sizeof(json_buf));
		protocol_json_value(&j, params);
		protocol_set_json(ev, EF_PROPERTIES, &j);
	}
	if (props != NULL && YAJL_IS_OBJECT(props)) {
		protocol_json_init(&j, json_buf, sizeof(json_buf));
		protocol_json_open(&j, '{');
		protocol_json_key(&j, "user_properties", 15);
		protocol_json_value(&j, props);
		protocol_json_close(&j, '}');
		protocol_set_json(ev, EF_CONTEXTS, &j);
	}
	return 0;
}

int ga4_decode_mp(const char *query, size_t query_len, const char *body, size_t body_len,
                  const struct protocol_keys *keys, const struct beacon_request *req,
                  const struct beacon_options *opt, beacon_emit_fn emit, beacon_reject_fn reject,
                  void *ud, char *err, size_t errlen)
{
	char scratch[GA4_SCRATCH_BYTES];
	struct ga4_params qp;
	struct event ev;
	char reject_buf[2 * EVENT_ARENA_BYTES];
	struct mp_ctx c = {.req = req, .opt = opt};
	size_t mid_len = 0, secret_len = 0;
	const char *mid, *secret;
	yajl_val events;
	int rc;

	rc = ga4_parse(query != NULL ? query : "", query_len, &qp, scratch, sizeof(scratch), err,
	               errlen);
	if (rc < 0)
		return rc;
	mid = params_get(&qp, "measurement_id", &mid_len);
	secret = params_get(&qp, "api_secret", &secret_len);
	if (mid == NULL) {
		protocol_set_err(err, errlen, "no measurement_id");
		return keys != NULL && keys->count > 0 ? -EACCES : -EINVAL;
	}
	c.app_id = mid;
	c.app_id_len = mid_len;
	if (keys != NULL && keys->count > 0) {
		const struct config_credential *cred =
		    protocol_keys_find(keys, mid, mid_len, secret, secret_len);

		if (cred == NULL) {
			protocol_set_err(err, errlen, "unknown measurement_id or api_secret");
			return -EACCES;
		}
		c.app_id = cred->app_id;
		c.app_id_len = strlen(cred->app_id);
	}
	c.doc = protocol_json_parse(body != NULL ? body : "", body_len, PROTOCOL_MAX_JSON_DEPTH,
	                            err, errlen);
	if (c.doc == NULL)
		return -EINVAL;
	events = protocol_json_get(c.doc, "events");
	if (!YAJL_IS_OBJECT(c.doc) || events == NULL || !YAJL_IS_ARRAY(events) ||
	    events->u.array.len == 0) {
		protocol_set_err(err, errlen, "no events array");
		rc = -EINVAL;
		goto out;
	}
	if (events->u.array.len > GA4_MP_MAX_EVENTS) {
		protocol_set_err(err, errlen, "more than %d events in one request",
		                 GA4_MP_MAX_EVENTS);
		rc = -E2BIG;
		goto out;
	}
	for (size_t i = 0; i < events->u.array.len && rc == 0; i++) {
		yajl_val e = events->u.array.values[i];
		char why[160];
		int erc = mp_build(&c, e, &ev, why, sizeof(why));

		if (erc < 0) {
			if (reject != NULL) {
				struct protocol_json j;

				protocol_json_init(&j, reject_buf, sizeof(reject_buf));
				protocol_json_value(&j, e);
				reject(ud, erc, reject_buf,
				       protocol_json_fits(&j) ? j.len : sizeof(reject_buf), why);
			}
			continue;
		}
		rc = emit != NULL ? emit(ud, &ev) : 0;
	}
out:
	yajl_tree_free(c.doc);
	return rc;
}
