/*
 * snowplow.c - the Snowplow tracker protocol (browser tracker v3/v4): GET /i (one event in
 * the query) and POST .../tp2 (payload_data: {"schema":..., "data":[{string map}, ...]}).
 *
 * An event's parameters are gathered into a struct sp_params (borrowed views: into the
 * query's scratch, or into the yajl tree of a POST), then built by one mapping table
 * (snowplow_fields below): parameter -> event field, or -> a key of the event's
 * properties. The event type follows `e`; structured events (se_*), transactions (tr_*:
 * a conversion with tr_tt as revenue and tr_cu as currency), transaction items (ti_*) and
 * self-describing events (ue_pr, or ue_px in base64) add their own object to properties;
 * contexts (co, or cx in base64) are kept whole as the event's contexts. Base64 is taken in
 * both alphabets, padded or not (the tracker writes URL-safe unpadded; docs show standard).
 *
 * Times: ttm (true time) when given, else dtm corrected for the device clock as Snowplow's
 * derived_tstamp is: received_at - (stm - dtm); else dtm.
 *
 * Runs on an ingest thread; the query path allocates nothing, the POST path a yajl tree.
 */
#include "clickd/protocols.h"
#include "clickd/url.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PROTOCOL_SNOWPLOW "snowplow"

/* Parameters one event may carry: the tracker sends about 40 with every context on. */
#define SNOWPLOW_MAX_PARAMS 128

/* A query beacon's scratch: the event's strings plus base64 contexts fit in it. */
#define SNOWPLOW_SCRATCH_BYTES (3 * EVENT_ARENA_BYTES)

enum sp_kind {
	SP_FIELD,      /* to an event field */
	SP_PROP,       /* to properties, as a string */
	SP_PROP_NUMBER /* to properties, as a number when it is one */
};

/* The mapping table: tracker protocol parameter -> event field or properties key. A field
 * set by an earlier row is kept (duid before nuid for the visitor). */
static const struct {
	const char *param;
	enum sp_kind kind;
	enum event_field field; /* SP_FIELD */
	const char *prop;       /* SP_PROP* */
} snowplow_fields[] = {
    {"eid", SP_FIELD, EF_EVENT_ID, NULL},
    {"aid", SP_FIELD, EF_APP_ID, NULL},
    {"duid", SP_FIELD, EF_VISITOR_ID, NULL},
    {"uid", SP_FIELD, EF_USER_ID, NULL},
    {"sid", SP_FIELD, EF_CLIENT_SESSION_ID, NULL},
    {"url", SP_FIELD, EF_URL, NULL},
    {"refr", SP_FIELD, EF_REFERRER, NULL},
    {"p", SP_PROP, 0, "platform"},
    {"tv", SP_PROP, 0, "tracker_version"},
    {"tna", SP_PROP, 0, "tracker_namespace"},
    {"vid", SP_PROP_NUMBER, 0, "domain_sessionidx"},
    {"nuid", SP_PROP, 0, "network_userid"},
    {"tnuid", SP_PROP, 0, "tracker_network_userid"},
    {"page", SP_PROP, 0, "page_title"},
    {"res", SP_PROP, 0, "screen_resolution"},
    {"vp", SP_PROP, 0, "viewport"},
    {"ds", SP_PROP, 0, "document_size"},
    {"cd", SP_PROP_NUMBER, 0, "color_depth"},
    {"lang", SP_PROP, 0, "language"},
    {"cs", SP_PROP, 0, "charset"},
    {"tz", SP_PROP, 0, "timezone"},
    {"cookie", SP_PROP, 0, "cookies_enabled"},
    {"dtm", SP_PROP_NUMBER, 0, "dvce_created_tstamp"},
    {"stm", SP_PROP_NUMBER, 0, "dvce_sent_tstamp"},
    {"ttm", SP_PROP_NUMBER, 0, "true_tstamp"},
    {"pp_mix", SP_PROP_NUMBER, 0, "pp_xoffset_min"},
    {"pp_max", SP_PROP_NUMBER, 0, "pp_xoffset_max"},
    {"pp_miy", SP_PROP_NUMBER, 0, "pp_yoffset_min"},
    {"pp_may", SP_PROP_NUMBER, 0, "pp_yoffset_max"},
};

/* Structured event, transaction and item parameters: each group becomes one object in
 * properties under `object`. */
static const struct {
	const char *param;
	const char *object;
	const char *key;
	bool number;
} snowplow_groups[] = {
    {"se_ca", "structured", "category", false},
    {"se_ac", "structured", "action", false},
    {"se_la", "structured", "label", false},
    {"se_pr", "structured", "property", false},
    {"se_va", "structured", "value", true},
    {"tr_id", "transaction", "order_id", false},
    {"tr_af", "transaction", "affiliation", false},
    {"tr_tt", "transaction", "total", true},
    {"tr_tx", "transaction", "tax", true},
    {"tr_sh", "transaction", "shipping", true},
    {"tr_ci", "transaction", "city", false},
    {"tr_st", "transaction", "state", false},
    {"tr_co", "transaction", "country", false},
    {"tr_cu", "transaction", "currency", false},
    {"ti_id", "transaction_item", "order_id", false},
    {"ti_sk", "transaction_item", "sku", false},
    {"ti_nm", "transaction_item", "name", false},
    {"ti_ca", "transaction_item", "category", false},
    {"ti_pr", "transaction_item", "price", true},
    {"ti_qu", "transaction_item", "quantity", true},
    {"ti_cu", "transaction_item", "currency", false},
};

static const char *const group_objects[] = {"structured", "transaction", "transaction_item"};

/* e= values: the event type, and its name when the event has no name of its own. */
static const struct {
	const char *e;
	enum event_type type;
	const char *name;
} snowplow_types[] = {
    {"pv", EVENT_PAGE_VIEW, NULL},
    {"pp", EVENT_CUSTOM, "page_ping"},
    {"se", EVENT_CUSTOM, NULL},
    {"ue", EVENT_CUSTOM, NULL},
    {"tr", EVENT_CONVERSION, "transaction"},
    {"ti", EVENT_CUSTOM, "transaction_item"},
};

struct sp_params {
	size_t count;
	const char *key[SNOWPLOW_MAX_PARAMS];
	size_t key_len[SNOWPLOW_MAX_PARAMS];
	const char *value[SNOWPLOW_MAX_PARAMS];
	size_t value_len[SNOWPLOW_MAX_PARAMS];
};

/* The first non-empty value of param `name`, or NULL. */
static const char *sp_get(const struct sp_params *p, const char *name, size_t *len)
{
	for (size_t i = 0; i < p->count; i++) {
		if (p->value_len[i] > 0 && protocol_bytes_is(p->key[i], p->key_len[i], name)) {
			*len = p->value_len[i];
			return p->value[i];
		}
	}
	*len = 0;
	return NULL;
}

static int sp_add(struct sp_params *p, const char *k, size_t k_len, const char *v, size_t v_len,
                  char *err, size_t errlen)
{
	if (p->count == SNOWPLOW_MAX_PARAMS) {
		protocol_set_err(err, errlen, "too many parameters (max %d)", SNOWPLOW_MAX_PARAMS);
		return -E2BIG;
	}
	if (k_len == 0) {
		protocol_set_err(err, errlen, "empty parameter name");
		return -EINVAL;
	}
	p->key[p->count] = k;
	p->key_len[p->count] = k_len;
	p->value[p->count] = v;
	p->value_len[p->count] = v_len;
	p->count++;
	return 0;
}

/* ---- embedded JSON: contexts and self-describing events ---- */

/* The JSON of `plain` (co, ue_pr) or `b64` (cx, ue_px), parsed; *tree NULL when neither
 * was given. */
static int sp_embedded_json(const struct sp_params *p, const char *plain, const char *b64,
                            yajl_val *tree, char *err, size_t errlen)
{
	char decoded[PROTOCOL_MAX_EMBEDDED_JSON_BYTES];
	size_t len;
	const char *text = sp_get(p, plain, &len);
	char why[160];
	int n;

	*tree = NULL;
	if (text == NULL) {
		text = sp_get(p, b64, &len);
		if (text == NULL)
			return 0;
		n = protocol_base64_decode(text, len, decoded, sizeof(decoded));
		if (n < 0) {
			protocol_set_err(err, errlen, "field %s: %s", b64,
			                 n == -ENOSPC ? "too large" : "not base64");
			return n == -ENOSPC ? -ENOSPC : -EINVAL;
		}
		text = decoded;
		len = (size_t)n;
		plain = b64;
	}
	if (!url_utf8_valid(text, len)) {
		protocol_set_err(err, errlen, "field %s: not UTF-8", plain);
		return -EILSEQ;
	}
	*tree = protocol_json_parse(text, len, PROTOCOL_MAX_JSON_DEPTH, why, sizeof(why));
	if (*tree == NULL) {
		protocol_set_err(err, errlen, "field %s: %s", plain, why);
		return -EINVAL;
	}
	if (!YAJL_IS_OBJECT(*tree)) {
		yajl_tree_free(*tree);
		*tree = NULL;
		protocol_set_err(err, errlen, "field %s: not a JSON object", plain);
		return -EINVAL;
	}
	return 0;
}

/* The event name of a self-describing event: the name part of its schema URI
 * ("iglu:com.acme/button_click/jsonschema/1-0-0" -> "button_click"). */
static void sp_schema_name(yajl_val sde, const char **name, size_t *len)
{
	size_t n;
	const char *schema = protocol_json_text(protocol_json_get(sde, "schema"), &n);
	const char *slash, *next;

	*name = NULL;
	*len = 0;
	if (schema == NULL || !YAJL_IS_STRING(protocol_json_get(sde, "schema")))
		return;
	slash = memchr(schema, '/', n);
	if (slash == NULL)
		return;
	next = memchr(slash + 1, '/', n - (size_t)(slash + 1 - schema));
	if (next == NULL)
		return;
	*name = slash + 1;
	*len = (size_t)(next - slash - 1);
}

/* ---- building the event ---- */

static int sp_type(const struct sp_params *p, struct event *ev, const char **name, char *err,
                   size_t errlen)
{
	size_t len;
	const char *e = sp_get(p, "e", &len);

	*name = NULL;
	if (e == NULL) {
		protocol_set_err(err, errlen, "field e: missing");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(snowplow_types) / sizeof(snowplow_types[0]); i++) {
		if (protocol_bytes_is(e, len, snowplow_types[i].e)) {
			ev->type = snowplow_types[i].type;
			*name = snowplow_types[i].name;
			return 0;
		}
	}
	/* Another event type of a newer tracker: kept, named by its code. */
	ev->type = EVENT_CUSTOM;
	if (protocol_set_text(ev, EF_NAME, e, len) < 0) {
		protocol_set_err(err, errlen, "field e: not UTF-8");
		return -EILSEQ;
	}
	return 0;
}

/* client_at: ttm, else dtm corrected by the device's clock skew (stm), else dtm. */
static void sp_client_time(const struct sp_params *p, struct event *ev)
{
	size_t len;
	const char *s;
	int64_t ttm, dtm, stm;

	s = sp_get(p, "ttm", &len);
	if (protocol_parse_epoch_ms(s, len, &ttm)) {
		ev->client_at_ms = ttm;
		return;
	}
	s = sp_get(p, "dtm", &len);
	if (!protocol_parse_epoch_ms(s, len, &dtm))
		return;
	ev->client_at_ms = dtm;
	s = sp_get(p, "stm", &len);
	if (protocol_parse_epoch_ms(s, len, &stm) && stm >= dtm && ev->received_at_ms > stm - dtm)
		ev->client_at_ms = ev->received_at_ms - (stm - dtm);
}

static int sp_revenue(const struct sp_params *p, struct event *ev, char *err, size_t errlen)
{
	size_t len;
	const char *s = sp_get(p, "tr_tt", &len);
	char currency[3];

	if (ev->type != EVENT_CONVERSION)
		return 0;
	if (s != NULL) {
		if (!protocol_parse_decimal(s, len, &ev->revenue)) {
			protocol_set_err(err, errlen, "field tr_tt: not a decimal number");
			return -EINVAL;
		}
		ev->has_revenue = true;
	}
	s = sp_get(p, "tr_cu", &len);
	if (s != NULL) {
		if (!protocol_parse_currency(s, len, currency)) {
			protocol_set_err(err, errlen, "field tr_cu: not a 3-letter currency code");
			return -EINVAL;
		}
		return event_set(ev, EF_CURRENCY, currency, 3);
	}
	return 0;
}

/* The properties object: the table's SP_PROP rows, the se/tr/ti groups, and the
 * self-describing event (its inner {schema, data}). */
static void sp_properties(const struct sp_params *p, yajl_val ue, struct protocol_json *j)
{
	size_t len;
	const char *v;

	protocol_json_open(j, '{');
	for (size_t i = 0; i < sizeof(snowplow_fields) / sizeof(snowplow_fields[0]); i++) {
		if (snowplow_fields[i].kind == SP_FIELD)
			continue;
		v = sp_get(p, snowplow_fields[i].param, &len);
		if (v == NULL)
			continue;
		protocol_json_key(j, snowplow_fields[i].prop, strlen(snowplow_fields[i].prop));
		if (snowplow_fields[i].kind == SP_PROP_NUMBER)
			protocol_json_number(j, v, len);
		else
			protocol_json_string(j, v, len);
	}
	for (size_t g = 0; g < sizeof(group_objects) / sizeof(group_objects[0]); g++) {
		bool open = false;

		for (size_t i = 0; i < sizeof(snowplow_groups) / sizeof(snowplow_groups[0]); i++) {
			if (strcmp(snowplow_groups[i].object, group_objects[g]) != 0)
				continue;
			v = sp_get(p, snowplow_groups[i].param, &len);
			if (v == NULL)
				continue;
			if (!open) {
				protocol_json_key(j, group_objects[g], strlen(group_objects[g]));
				protocol_json_open(j, '{');
				open = true;
			}
			protocol_json_key(j, snowplow_groups[i].key,
			                  strlen(snowplow_groups[i].key));
			if (snowplow_groups[i].number)
				protocol_json_number(j, v, len);
			else
				protocol_json_string(j, v, len);
		}
		if (open)
			protocol_json_close(j, '}');
	}
	if (ue != NULL) {
		yajl_val inner = protocol_json_get(ue, "data");

		protocol_json_key(j, "self_describing_event", 21);
		protocol_json_value(j, inner != NULL ? inner : ue);
	}
	protocol_json_close(j, '}');
}

/* The event's name: the type's own, else se_ac for a structured event, else the
 * self-describing event's schema name. */
static int sp_name(const struct sp_params *p, struct event *ev, const char *type_name, yajl_val ue)
{
	size_t len;
	const char *s;

	if (event_has(ev, EF_NAME))
		return 0;
	if (type_name != NULL)
		return event_set(ev, EF_NAME, type_name, strlen(type_name));
	s = sp_get(p, "se_ac", &len);
	if (s != NULL)
		return protocol_set_text(ev, EF_NAME, s, len);
	if (ue != NULL) {
		yajl_val inner = protocol_json_get(ue, "data");

		sp_schema_name(inner != NULL ? inner : ue, &s, &len);
		return protocol_set_text(ev, EF_NAME, s, len);
	}
	return 0;
}

static int sp_fields(const struct sp_params *p, struct event *ev, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(snowplow_fields) / sizeof(snowplow_fields[0]); i++) {
		size_t len;
		const char *v;
		int rc;

		if (snowplow_fields[i].kind != SP_FIELD)
			continue;
		v = sp_get(p, snowplow_fields[i].param, &len);
		rc = protocol_set_text(ev, snowplow_fields[i].field, v, len);
		if (rc == -EILSEQ) {
			protocol_set_err(err, errlen, "field %s: not UTF-8",
			                 snowplow_fields[i].param);
			return rc;
		}
		if (rc < 0) {
			protocol_set_err(err, errlen, "beacon too large");
			return rc;
		}
	}
	return 0;
}

static int sp_build(const struct sp_params *p, const struct beacon_request *req,
                    const struct beacon_options *opt, struct event *ev, char *err, size_t errlen)
{
	char json_buf[EVENT_ARENA_BYTES];
	struct beacon_request r = *req;
	struct protocol_json j;
	yajl_val ue = NULL, co = NULL;
	const char *type_name, *ua;
	size_t ua_len;
	int rc;

	event_init(ev);
	ev->received_at_ms = req->received_at_ms;
	r.protocol = PROTOCOL_SNOWPLOW;
	rc = sp_type(p, ev, &type_name, err, errlen);
	if (rc == 0)
		rc = sp_fields(p, ev, err, errlen);
	if (rc == 0)
		rc = sp_revenue(p, ev, err, errlen);
	if (rc == 0)
		rc = sp_embedded_json(p, "ue_pr", "ue_px", &ue, err, errlen);
	if (rc == 0)
		rc = sp_embedded_json(p, "co", "cx", &co, err, errlen);
	if (rc == 0 && sp_name(p, ev, type_name, ue) < 0) {
		protocol_set_err(err, errlen, "field se_ac or ue: not UTF-8 or too large");
		rc = -EINVAL;
	}
	if (rc < 0) {
		if (rc == -ENOSPC)
			protocol_set_err(err, errlen, "beacon too large");
		goto out;
	}
	sp_client_time(p, ev);
	/* The tracker's ua parameter (set by a server-side tracker) wins over the header. */
	ua = sp_get(p, "ua", &ua_len);
	if (ua != NULL) {
		r.user_agent = ua;
		r.user_agent_len = ua_len;
	}
	rc = beacon_finish(ev, &r, opt, err, errlen);
	if (rc < 0)
		goto out;
	/* The extras last: when the arena cannot hold them, the event still goes. */
	protocol_json_init(&j, json_buf, sizeof(json_buf));
	sp_properties(p, ue, &j);
	protocol_set_json(ev, EF_PROPERTIES, &j);
	if (co != NULL) {
		protocol_json_init(&j, json_buf, sizeof(json_buf));
		protocol_json_value(&j, co);
		protocol_set_json(ev, EF_CONTEXTS, &j);
	}
out:
	if (ue != NULL)
		yajl_tree_free(ue);
	if (co != NULL)
		yajl_tree_free(co);
	return rc;
}

/* ---- GET /i ---- */

struct sp_query_ctx {
	struct sp_params *p;
	char *err;
	size_t errlen;
	bool err_set;
};

static int sp_query_cb(void *ud, const char *key, size_t key_len, const char *value,
                       size_t value_len)
{
	struct sp_query_ctx *c = ud;
	int rc = sp_add(c->p, key, key_len, value, value_len, c->err, c->errlen);

	c->err_set = rc != 0;
	return rc;
}

int snowplow_decode_query(const char *q, size_t len, const struct beacon_request *req,
                          const struct beacon_options *opt, struct event *ev, char *err,
                          size_t errlen)
{
	char scratch[SNOWPLOW_SCRATCH_BYTES];
	struct sp_params params;
	struct sp_query_ctx c = {.p = &params, .err = err, .errlen = errlen};
	int rc;

	if (len > sizeof(scratch)) {
		protocol_set_err(err, errlen, "beacon too large");
		return -ENOSPC;
	}
	params.count = 0;
	rc = url_query_parse(q, len, scratch, sizeof(scratch), sp_query_cb, &c);
	if (rc < 0 && !c.err_set) {
		if (rc == -EILSEQ)
			protocol_set_err(err, errlen, "not UTF-8");
		else if (rc == -EINVAL)
			protocol_set_err(err, errlen, "bad percent-encoding or empty field name");
		else
			protocol_set_err(err, errlen, "beacon too large");
	}
	if (rc < 0)
		return rc;
	return sp_build(&params, req, opt, ev, err, errlen);
}

/* ---- POST tp2 ---- */

/* One element of data: a map of strings (numbers taken as written; other values are not
 * Snowplow's and make the event bad). */
static int sp_params_of_json(yajl_val elem, struct sp_params *p, char *err, size_t errlen)
{
	p->count = 0;
	if (!YAJL_IS_OBJECT(elem)) {
		protocol_set_err(err, errlen, "event is not a JSON object");
		return -EINVAL;
	}
	for (size_t i = 0; i < elem->u.object.len; i++) {
		const char *k = elem->u.object.keys[i];
		yajl_val v = elem->u.object.values[i];
		size_t v_len = 0;
		const char *text;
		int rc;

		if (YAJL_IS_NULL(v))
			continue;
		text = protocol_json_text(v, &v_len);
		if (text == NULL) {
			protocol_set_err(err, errlen, "field %.40s: not a string", k);
			return -EINVAL;
		}
		rc = sp_add(p, k, strlen(k), text, v_len, err, errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The raw text of one data element for its dead letter: written back compactly. */
static void sp_reject(yajl_val elem, int code, const char *reason, beacon_reject_fn reject,
                      void *ud)
{
	char buf[2 * EVENT_ARENA_BYTES];
	struct protocol_json j;

	if (reject == NULL)
		return;
	protocol_json_init(&j, buf, sizeof(buf));
	protocol_json_value(&j, elem);
	reject(ud, code, buf, protocol_json_fits(&j) ? j.len : sizeof(buf), reason);
}

int snowplow_decode_post(const char *body, size_t len, const struct beacon_request *req,
                         const struct beacon_options *opt, beacon_emit_fn emit,
                         beacon_reject_fn reject, void *ud, char *err, size_t errlen)
{
	struct sp_params params;
	struct event ev;
	size_t max_depth = opt->max_json_depth > PROTOCOL_MAX_JSON_DEPTH ? opt->max_json_depth
	                                                                 : PROTOCOL_MAX_JSON_DEPTH;
	size_t max_batch = opt->max_batch ? opt->max_batch : 100;
	yajl_val doc = protocol_json_parse(body, len, max_depth, err, errlen);
	yajl_val data;
	int rc = 0;

	if (doc == NULL)
		return -EINVAL;
	data = protocol_json_get(doc, "data");
	if (data == NULL || !YAJL_IS_ARRAY(data)) {
		protocol_set_err(err, errlen, "not a payload_data object (no data array)");
		rc = -EINVAL;
		goto out;
	}
	if (data->u.array.len > max_batch) {
		protocol_set_err(err, errlen, "more than %zu events in one body", max_batch);
		rc = -E2BIG;
		goto out;
	}
	for (size_t i = 0; i < data->u.array.len && rc == 0; i++) {
		yajl_val elem = data->u.array.values[i];
		char why[160];
		int erc = sp_params_of_json(elem, &params, why, sizeof(why));

		if (erc == 0)
			erc = sp_build(&params, req, opt, &ev, why, sizeof(why));
		if (erc < 0) {
			sp_reject(elem, erc, why, reject, ud);
			continue;
		}
		rc = emit != NULL ? emit(ud, &ev) : 0;
	}
out:
	yajl_tree_free(doc);
	return rc;
}
