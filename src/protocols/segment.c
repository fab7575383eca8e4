/*
 * segment.c - the Segment HTTP tracking API (analytics-next, analytics-node) and the
 * engine RudderStack's Segment-shaped API shares (rudderstack.c holds its own table).
 *
 * Routes: a single message on /v1/t|p|i|g|a|s (the browser's short forms) and
 * /v1/track|page|identify|group|alias|screen, whose type the route gives; a batch
 * {batch:[...], context, sentAt, writeKey} on /v1/b and /v1/batch (and RudderStack's
 * /beacon/v1/batch), whose messages each carry their type, with the batch-level context
 * merged under each message's own (the message's keys win).
 *
 * Mapping (segment__table): dotted paths into a message -> event fields, the first path
 * found for a field winning (anonymousId before userId for the visitor; the page context
 * before the page properties for the URL). Then:
 *   - type: page and screen are page views, track is a custom event named by `event`,
 *     identify/group/alias custom events named by their type; a track named "Order
 *     Completed" (Segment's e-commerce spec) is a conversion with properties.revenue
 *     (else total, else value) and properties.currency;
 *   - client_at: the message's timestamp corrected for the client's clock as Segment
 *     does, timestamp + (received_at - sentAt) (originalTimestamp when a library sent it);
 *   - the user agent: context.userAgent when given (server libraries), else the header;
 *   - properties: the message's properties (track, page, screen), traits (identify,
 *     group) or {previousId} (alias); contexts: the merged context.
 * The write key (Basic auth "key:", else ?writeKey=, else the body's writeKey) is checked
 * against segment.write_keys and rudderstack.write_keys when either holds keys; the key's
 * app_id goes to every event.
 */
#include "clickd/protocols.h"
#include "clickd/url.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PROTOCOL_SEGMENT     "segment"
#define PROTOCOL_RUDDERSTACK "rudderstack"
#define WRITE_KEY_MAX        256

/* The mapping table of Segment messages (CONTRACTS.md's event fields). */
const struct segment_mapping segment__table[] = {
    {"messageId", EF_EVENT_ID},
    {"anonymousId", EF_VISITOR_ID},
    {"userId", EF_VISITOR_ID},
    {"userId", EF_USER_ID},
    {"context.page.url", EF_URL},
    {"properties.url", EF_URL},
    {"context.page.referrer", EF_REFERRER},
    {"properties.referrer", EF_REFERRER},
    {"context.campaign.source", EF_SOURCE},
    {"context.campaign.medium", EF_MEDIUM},
    {"context.campaign.name", EF_CAMPAIGN},
    {"context.campaign.term", EF_TERM},
    {"context.campaign.content", EF_CONTENT},
    {"context.campaign.id", EF_UTM_ID},
    {"context.campaign.utm_id", EF_UTM_ID},
};
const size_t segment__table_len = sizeof(segment__table) / sizeof(segment__table[0]);

static const struct {
	const char *short_name;
	const char *name;
	enum segment_route route;
} segment_routes[] = {
    {"t", "track", SEGMENT_TRACK},       {"p", "page", SEGMENT_PAGE},
    {"i", "identify", SEGMENT_IDENTIFY}, {"g", "group", SEGMENT_GROUP},
    {"a", "alias", SEGMENT_ALIAS},       {"s", "screen", SEGMENT_SCREEN},
    {"b", "batch", SEGMENT_BATCH},
};

/* What the messages of one request share. */
struct seg_ctx {
	const struct segment_request *sreq;
	const struct beacon_request *req;
	const struct beacon_options *opt;
	yajl_val batch_context; /* NULL for a single message */
	yajl_val batch_sent_at;
	const char *app_id; /* from the write key; NULL when none */
	bool rudderstack;   /* the key or the route says RudderStack */
};

int segment_route_of(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(segment_routes) / sizeof(segment_routes[0]); i++)
		if (protocol_bytes_is(name, len, segment_routes[i].short_name) ||
		    protocol_bytes_is(name, len, segment_routes[i].name))
			return (int)segment_routes[i].route;
	return -1;
}

/* The value at a dotted path ("context.page.url") of obj, or NULL. */
static yajl_val json_path(yajl_val obj, const char *path)
{
	char part[64];

	while (obj != NULL && *path) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);

		if (n >= sizeof(part))
			return NULL;
		memcpy(part, path, n);
		part[n] = '\0';
		obj = protocol_json_get(obj, part);
		path += n + (dot != NULL);
	}
	return obj;
}

/* A message's value at path; a context.* path not in the message comes from the batch's
 * context (merged under it). */
static yajl_val msg_path(const struct seg_ctx *c, yajl_val msg, const char *path)
{
	yajl_val v = json_path(msg, path);

	if (v == NULL && c->batch_context != NULL && strncmp(path, "context.", 8) == 0)
		v = json_path(c->batch_context, path + 8);
	return v;
}

/* ---- write keys ---- */

/* The key of "Basic base64(key:)" into out; 0 when there is none. */
static size_t basic_auth_key(const char *h, size_t len, char *out, size_t cap)
{
	char decoded[WRITE_KEY_MAX + 8];
	const char *colon;
	int n;

	if (h == NULL || len < 6 || strncasecmp(h, "Basic ", 6) != 0)
		return 0;
	h += 6;
	len -= 6;
	while (len > 0 && *h == ' ') {
		h++;
		len--;
	}
	n = protocol_base64_decode(h, len, decoded, sizeof(decoded));
	if (n <= 0)
		return 0;
	colon = memchr(decoded, ':', (size_t)n);
	if (colon != NULL)
		n = (int)(colon - decoded);
	if (n <= 0 || (size_t)n > cap)
		return 0;
	memcpy(out, decoded, (size_t)n);
	return (size_t)n;
}

/* Finds the request's write key and checks it; fills c->app_id and c->rudderstack. */
static int seg_auth(struct seg_ctx *c, yajl_val doc, char *err, size_t errlen)
{
	char key_buf[WRITE_KEY_MAX];
	const struct segment_request *s = c->sreq;
	const struct config_credential *cred;
	const char *key = NULL;
	size_t key_len =
	    basic_auth_key(s->authorization, s->authorization_len, key_buf, sizeof(key_buf));

	if (key_len > 0) {
		key = key_buf;
	} else if (s->query_write_key != NULL && s->query_write_key_len > 0) {
		key = s->query_write_key;
		key_len = s->query_write_key_len;
	} else {
		key = protocol_json_text(protocol_json_get(doc, "writeKey"), &key_len);
	}
	if (s->segment_keys.count + s->rudderstack_keys.count == 0)
		return 0;
	if (key == NULL || key_len == 0) {
		protocol_set_err(err, errlen, "no write key");
		return -EACCES;
	}
	cred = protocol_keys_find(&s->rudderstack_keys, NULL, 0, key, key_len);
	if (cred != NULL) {
		c->rudderstack = true;
	} else {
		cred = protocol_keys_find(&s->segment_keys, NULL, 0, key, key_len);
		if (cred == NULL) {
			protocol_set_err(err, errlen, "unknown write key");
			return -EACCES;
		}
	}
	c->app_id = cred->app_id;
	return 0;
}

/* ---- one message ---- */

static const char *const type_names[] = {
    [SEGMENT_TRACK] = "track", [SEGMENT_PAGE] = "page",   [SEGMENT_IDENTIFY] = "identify",
    [SEGMENT_GROUP] = "group", [SEGMENT_ALIAS] = "alias", [SEGMENT_SCREEN] = "screen",
    [SEGMENT_BATCH] = "batch",
};

static int seg_type_of(yajl_val msg, enum segment_route *type, char *err, size_t errlen)
{
	size_t len;
	const char *t = protocol_json_text(protocol_json_get(msg, "type"), &len);

	for (int i = SEGMENT_TRACK; t != NULL && i < SEGMENT_BATCH; i++) {
		if (protocol_bytes_is(t, len, type_names[i])) {
			*type = (enum segment_route)i;
			return 0;
		}
	}
	protocol_set_err(err, errlen, "field type: %s",
	                 t == NULL ? "missing" : "unknown message type");
	return -EINVAL;
}

static int seg_map(const struct seg_ctx *c, yajl_val msg, const struct segment_mapping *table,
                   size_t table_len, struct event *ev, char *err, size_t errlen)
{
	for (size_t i = 0; i < table_len; i++) {
		size_t len = 0;
		const char *v = protocol_json_text(msg_path(c, msg, table[i].path), &len);
		int rc;

		/* RudderStack's "no referrer" marker is no referrer. */
		if (v == NULL ||
		    (table[i].field == EF_REFERRER && protocol_bytes_is(v, len, "$direct")))
			continue;
		rc = protocol_set_text(ev, table[i].field, v, len);
		if (rc == -EILSEQ) {
			protocol_set_err(err, errlen, "field %s: not UTF-8", table[i].path);
			return rc;
		}
		if (rc < 0) {
			protocol_set_err(err, errlen, "message too large");
			return rc;
		}
	}
	return 0;
}

/* Type and name; a track "Order Completed" is a conversion with its revenue. */
static int seg_kind(const struct seg_ctx *c, yajl_val msg, enum segment_route type,
                    struct event *ev)
{
	size_t len = 0;
	const char *name;
	char currency[3];

	switch (type) {
	case SEGMENT_PAGE:
	case SEGMENT_SCREEN:
		ev->type = EVENT_PAGE_VIEW;
		name = protocol_json_text(protocol_json_get(msg, "name"), &len);
		return protocol_set_text(ev, EF_NAME, name, len);
	case SEGMENT_TRACK:
		ev->type = EVENT_CUSTOM;
		name = protocol_json_text(protocol_json_get(msg, "event"), &len);
		if (name == NULL || !protocol_bytes_is(name, len, "Order Completed"))
			return protocol_set_text(ev, EF_NAME, name, len);
		break;
	default:
		ev->type = EVENT_CUSTOM;
		return event_set(ev, EF_NAME, type_names[type], strlen(type_names[type]));
	}
	ev->type = EVENT_CONVERSION;
	static const char *const revenue_paths[] = {"properties.revenue", "properties.total",
	                                            "properties.value"};
	for (size_t i = 0; i < 3 && !ev->has_revenue; i++) {
		const char *v = protocol_json_text(msg_path(c, msg, revenue_paths[i]), &len);

		if (v != NULL && protocol_parse_decimal(v, len, &ev->revenue))
			ev->has_revenue = true;
	}
	name = protocol_json_text(msg_path(c, msg, "properties.currency"), &len);
	if (protocol_parse_currency(name, len, currency) &&
	    event_set(ev, EF_CURRENCY, currency, 3) < 0)
		return -ENOSPC;
	return event_set(ev, EF_NAME, "Order Completed", 15);
}

/* client_at = timestamp + (received_at - sentAt), Segment's clock-skew correction. */
static void seg_time(const struct seg_ctx *c, yajl_val msg, struct event *ev)
{
	size_t len = 0;
	const char *s = protocol_json_text(protocol_json_get(msg, "originalTimestamp"), &len);
	int64_t ts, sent;

	if (s == NULL)
		s = protocol_json_text(protocol_json_get(msg, "timestamp"), &len);
	if (!protocol_parse_iso8601(s, len, &ts))
		return;
	ev->client_at_ms = ts;
	s = protocol_json_text(protocol_json_get(msg, "sentAt"), &len);
	if (s == NULL)
		s = protocol_json_text(c->batch_sent_at, &len);
	if (protocol_parse_iso8601(s, len, &sent)) {
		int64_t corrected = ts + (ev->received_at_ms - sent);

		if (corrected > 0)
			ev->client_at_ms = corrected;
	}
}

/* contexts: the message's context with the batch's keys it lacks. */
static void seg_contexts(const struct seg_ctx *c, yajl_val msg, struct protocol_json *j)
{
	yajl_val own = protocol_json_get(msg, "context");
	yajl_val shared = c->batch_context;

	if (own != NULL && !YAJL_IS_OBJECT(own))
		own = NULL;
	if (shared != NULL && !YAJL_IS_OBJECT(shared))
		shared = NULL;
	if (own == NULL && shared == NULL)
		return;
	protocol_json_open(j, '{');
	for (size_t i = 0; own != NULL && i < own->u.object.len; i++) {
		protocol_json_key(j, own->u.object.keys[i], strlen(own->u.object.keys[i]));
		protocol_json_value(j, own->u.object.values[i]);
	}
	for (size_t i = 0; shared != NULL && i < shared->u.object.len; i++) {
		if (own != NULL && protocol_json_get(own, shared->u.object.keys[i]) != NULL)
			continue;
		protocol_json_key(j, shared->u.object.keys[i], strlen(shared->u.object.keys[i]));
		protocol_json_value(j, shared->u.object.values[i]);
	}
	protocol_json_close(j, '}');
}

static void seg_properties(yajl_val msg, enum segment_route type, struct protocol_json *j)
{
	yajl_val v;

	if (type == SEGMENT_ALIAS) {
		v = protocol_json_get(msg, "previousId");
		if (v == NULL)
			return;
		protocol_json_open(j, '{');
		protocol_json_key(j, "previousId", 10);
		protocol_json_value(j, v);
		protocol_json_close(j, '}');
		return;
	}
	v = protocol_json_get(
	    msg, type == SEGMENT_IDENTIFY || type == SEGMENT_GROUP ? "traits" : "properties");
	if (v != NULL && YAJL_IS_OBJECT(v))
		protocol_json_value(j, v);
}

static int seg_build(const struct seg_ctx *c, yajl_val msg, enum segment_route type,
                     struct event *ev, char *err, size_t errlen)
{
	char json_buf[EVENT_ARENA_BYTES];
	struct beacon_request r = *c->req;
	bool rudder =
	    c->rudderstack || c->sreq->rudderstack_route || rudderstack__message_is_ours(msg);
	struct protocol_json j;
	const char *ua;
	size_t ua_len = 0;
	int rc;

	if (!YAJL_IS_OBJECT(msg)) {
		protocol_set_err(err, errlen, "message is not a JSON object");
		return -EINVAL;
	}
	event_init(ev);
	ev->received_at_ms = r.received_at_ms;
	r.protocol = rudder ? PROTOCOL_RUDDERSTACK : PROTOCOL_SEGMENT;
	if (c->app_id != NULL && c->app_id[0])
		event_set(ev, EF_APP_ID, c->app_id, strlen(c->app_id));
	rc = rudder ? seg_map(c, msg, rudderstack__table, rudderstack__table_len, ev, err, errlen)
	            : seg_map(c, msg, segment__table, segment__table_len, ev, err, errlen);
	if (rc < 0)
		return rc;
	rc = seg_kind(c, msg, type, ev);
	if (rc < 0) {
		protocol_set_err(err, errlen,
		                 rc == -EILSEQ ? "event name: not UTF-8" : "message too large");
		return rc;
	}
	seg_time(c, msg, ev);
	ua = protocol_json_text(msg_path(c, msg, "context.userAgent"), &ua_len);
	if (ua != NULL && YAJL_IS_STRING(msg_path(c, msg, "context.userAgent"))) {
		r.user_agent = ua;
		r.user_agent_len = ua_len;
	}
	rc = beacon_finish(ev, &r, c->opt, err, errlen);
	if (rc < 0)
		return rc;
	protocol_json_init(&j, json_buf, sizeof(json_buf));
	seg_properties(msg, type, &j);
	protocol_set_json(ev, EF_PROPERTIES, &j);
	protocol_json_init(&j, json_buf, sizeof(json_buf));
	seg_contexts(c, msg, &j);
	protocol_set_json(ev, EF_CONTEXTS, &j);
	return 0;
}

static void seg_reject(yajl_val msg, int code, const char *reason, beacon_reject_fn reject,
                       void *ud)
{
	char buf[4 * EVENT_ARENA_BYTES];
	struct protocol_json j;

	if (reject == NULL)
		return;
	protocol_json_init(&j, buf, sizeof(buf));
	protocol_json_value(&j, msg);
	reject(ud, code, buf, protocol_json_fits(&j) ? j.len : sizeof(buf), reason);
}

int segment_decode(const char *body, size_t len, const struct segment_request *sreq,
                   const struct beacon_request *req, const struct beacon_options *opt,
                   beacon_emit_fn emit, beacon_reject_fn reject, void *ud, char *err, size_t errlen)
{
	struct event ev;
	size_t max_depth = opt->max_json_depth > PROTOCOL_MAX_JSON_DEPTH ? opt->max_json_depth
	                                                                 : PROTOCOL_MAX_JSON_DEPTH;
	size_t max_batch = opt->max_batch ? opt->max_batch : 100;
	struct seg_ctx c = {.sreq = sreq, .req = req, .opt = opt};
	yajl_val doc = protocol_json_parse(body, len, max_depth, err, errlen);
	yajl_val batch;
	int rc;

	if (doc == NULL)
		return -EINVAL;
	if (!YAJL_IS_OBJECT(doc)) {
		protocol_set_err(err, errlen, "not a JSON object");
		rc = -EINVAL;
		goto out;
	}
	rc = seg_auth(&c, doc, err, errlen);
	if (rc < 0)
		goto out;
	if (sreq->route != SEGMENT_BATCH) {
		char why[160];

		rc = seg_build(&c, doc, sreq->route, &ev, why, sizeof(why));
		if (rc < 0) {
			protocol_set_err(err, errlen, "%s", why);
			goto out;
		}
		rc = emit != NULL ? emit(ud, &ev) : 0;
		goto out;
	}
	batch = protocol_json_get(doc, "batch");
	if (batch == NULL || !YAJL_IS_ARRAY(batch)) {
		protocol_set_err(err, errlen, "no batch array");
		rc = -EINVAL;
		goto out;
	}
	if (batch->u.array.len > max_batch) {
		protocol_set_err(err, errlen, "more than %zu messages in one batch", max_batch);
		rc = -E2BIG;
		goto out;
	}
	c.batch_context = protocol_json_get(doc, "context");
	c.batch_sent_at = protocol_json_get(doc, "sentAt");
	for (size_t i = 0; i < batch->u.array.len && rc == 0; i++) {
		yajl_val msg = batch->u.array.values[i];
		enum segment_route type;
		char why[160];
		int erc = seg_type_of(msg, &type, why, sizeof(why));

		if (erc == 0)
			erc = seg_build(&c, msg, type, &ev, why, sizeof(why));
		if (erc < 0) {
			seg_reject(msg, erc, why, reject, ud);
			continue;
		}
		rc = emit != NULL ? emit(ud, &ev) : 0;
	}
out:
	yajl_tree_free(doc);
	return rc;
}
