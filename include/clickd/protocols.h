/*
 * protocols.h - the tracker protocols clickd accepts besides its native beacon: Snowplow,
 * Segment, RudderStack, GA4 (gtag's /g/collect) and the GA4 Measurement Protocol.
 *
 * One file per protocol in src/protocols/, each with one mapping table (a field of the
 * protocol -> a field of struct event, CONTRACTS.md), and what they share in
 * src/protocols/protocol.c: base64, JSON trees and compact JSON output, numbers, times.
 * Every decoder is a pure core like beacon.c: no libuv types, the receive time passed in
 * the struct beacon_request, and the same enrichment at the end (beacon_finish: page-URL
 * tags, referrer, source/medium, visitor fallback, IP, user agent), so the visitor key,
 * sessions and channels stay clickd's own whatever the protocol. A tracker's own session
 * ID goes to the event's client_session_id; contexts and event data are kept as JSON
 * (properties, contexts).
 *
 * Decoders of several events per request follow beacon_decode_json: each good event goes
 * to emit, each bad one to reject (with its raw text when it has one, else the request's),
 * and the call returns 0 when the request itself was well-formed, or a negative code with
 * err filled when nothing could be taken from it: -EINVAL malformed, -EILSEQ not UTF-8,
 * -E2BIG more events than opt->max_batch (the caller answers 413), -ENOSPC too large,
 * -EACCES a bad write key or API secret (the caller answers 401). Nothing is emitted then.
 *
 * JSON bodies are parsed into yajl trees (nesting checked first against
 * PROTOCOL_MAX_JSON_DEPTH, so neither yajl nor our recursion goes deep). That allocates,
 * bounded by the body size (http.max_body_bytes): the tracker protocols nest too much for
 * the native path's flat callback decoder.
 */
#ifndef CLICKD_PROTOCOLS_H
#define CLICKD_PROTOCOLS_H

#include "clickd/beacon.h"
#include "clickd/config.h"
#include "clickd/event.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_tree.h>

/* JSON nesting accepted in tracker bodies (Segment properties hold arrays of product
 * objects inside a batch: depth 5 to 7 is common). Deeper bodies are refused as malformed;
 * limits.max_json_depth raises it, never lowers it below this. */
#define PROTOCOL_MAX_JSON_DEPTH 32

/* Bytes of a self-describing event or contexts JSON once base64-decoded, at most: more
 * than one event can carry (EVENT_ARENA_BYTES) is refused before decoding. */
#define PROTOCOL_MAX_EMBEDDED_JSON_BYTES (2 * EVENT_ARENA_BYTES)

/* The credentials a decoder checks (config.h: segment.write_keys / rudderstack.write_keys
 * entries are {"", key, app_id}; ga4.api_secrets entries {measurement_id, secret,
 * app_id}); borrowed. count 0 = none configured: nothing checked. */
struct protocol_keys {
	const struct config_credential *items;
	size_t count;
};

/* ---- Snowplow (src/protocols/snowplow.c) ---- */

/* One event of the tracker protocol given as a query string (GET /i, /ice.png). Returns 0
 * or a negative code with err filled (beacon_decode_query's codes). */
int snowplow_decode_query(const char *q, size_t len, const struct beacon_request *req,
                          const struct beacon_options *opt, struct event *ev, char *err,
                          size_t errlen);

/* A payload_data body (POST /com.snowplowanalytics.snowplow/tp2): {"schema":...,
 * "data":[{...string map...}, ...]}. */
int snowplow_decode_post(const char *body, size_t len, const struct beacon_request *req,
                         const struct beacon_options *opt, beacon_emit_fn emit,
                         beacon_reject_fn reject, void *ud, char *err, size_t errlen);

/* ---- Segment and RudderStack (src/protocols/segment.c, src/protocols/rudderstack.c) ---- */

/* The message types of the Segment spec; the route says which one a single-message body
 * is (/v1/t, /v1/track ...); SEGMENT_BATCH for /v1/b, /v1/batch and /beacon/v1/batch,
 * whose messages each carry their own "type". */
enum segment_route {
	SEGMENT_TRACK,
	SEGMENT_PAGE,
	SEGMENT_IDENTIFY,
	SEGMENT_GROUP,
	SEGMENT_ALIAS,
	SEGMENT_SCREEN,
	SEGMENT_BATCH,
};

/* What the request says beside its body. */
struct segment_request {
	enum segment_route route;
	const char *authorization; /* the Authorization header, NULL when absent */
	size_t authorization_len;
	const char *query_write_key; /* ?writeKey= of /beacon/v1/batch, decoded; NULL: none */
	size_t query_write_key_len;
	/* segment.write_keys and rudderstack.write_keys. When either holds keys, every
	 * request needs one of them (Basic auth "key:", or writeKey in the body or query):
	 * else -EACCES. A key found sets the events' app_id. */
	struct protocol_keys segment_keys;
	struct protocol_keys rudderstack_keys;
	/* true on /beacon/v1/batch: the body is RudderStack's */
	bool rudderstack_route;
};

/* Decodes a Segment-shaped body (one message, or {batch:[...], context, sentAt, writeKey}).
 * Each event's protocol is "rudderstack" when its write key is one of rudderstack_keys,
 * the route is RudderStack's, or the message is RudderStack's (its context.library or
 * rudderId say so), else "segment"; req->protocol is not read. */
int segment_decode(const char *body, size_t len, const struct segment_request *sreq,
                   const struct beacon_request *req, const struct beacon_options *opt,
                   beacon_emit_fn emit, beacon_reject_fn reject, void *ud, char *err,
                   size_t errlen);

/* The route of a /v1/ path's last part ("t", "track", "b", "batch", ...); -1 when none. */
int segment_route_of(const char *name, size_t len);

/* Internal to segment.c and rudderstack.c: one protocol's mapping table. */
struct segment_mapping {
	const char *path; /* dotted path into the message: "context.page.url" */
	enum event_field field;
};
extern const struct segment_mapping segment__table[];
extern const size_t segment__table_len;
extern const struct segment_mapping rudderstack__table[];
extern const size_t rudderstack__table_len;
/* True when a message is RudderStack's by its own marks (rudderId, context.library). */
bool rudderstack__message_is_ours(yajl_val message);

/* ---- GA4 (src/protocols/ga4.c) ---- */

/* gtag's /g/collect: the shared parameters in the query, and for a POST one event per
 * body line whose parameters override the query's (body NULL or empty: the query is the
 * one event). keys: ga4.api_secrets, used only to map tid to an app_id (gtag has no
 * secret); without an entry for tid, app_id is tid. */
int ga4_decode_collect(const char *query, size_t query_len, const char *body, size_t body_len,
                       const struct protocol_keys *keys, const struct beacon_request *req,
                       const struct beacon_options *opt, beacon_emit_fn emit,
                       beacon_reject_fn reject, void *ud, char *err, size_t errlen);

/* The Measurement Protocol: POST /mp/collect?measurement_id=...&api_secret=... with JSON
 * {client_id, user_id?, timestamp_micros?, user_properties?, events:[{name, params}]}, at
 * most GA4_MP_MAX_EVENTS events. When keys holds entries, measurement_id and api_secret
 * must match one (else -EACCES), whose app_id the events take; otherwise app_id is the
 * measurement_id. */
#define GA4_MP_MAX_EVENTS 25
int ga4_decode_mp(const char *query, size_t query_len, const char *body, size_t body_len,
                  const struct protocol_keys *keys, const struct beacon_request *req,
                  const struct beacon_options *opt, beacon_emit_fn emit, beacon_reject_fn reject,
                  void *ud, char *err, size_t errlen);

/* ---- shared helpers (src/protocols/protocol.c) ---- */

/* Decodes base64 in either alphabet (standard "+/" or URL-safe "-_"), padded or not.
 * Returns the decoded length, or -EINVAL (a bad character, misplaced padding, a lone
 * trailing character) or -ENOSPC (out too small). */
int protocol_base64_decode(const char *in, size_t len, char *out, size_t cap);

/* Parses a JSON document into a yajl tree after checking that it holds no NUL and nests
 * at most max_depth deep. Returns the tree (free with yajl_tree_free), or NULL with err
 * filled. */
yajl_val protocol_json_parse(const char *text, size_t len, size_t max_depth, char *err,
                             size_t errlen);

/* A compact JSON writer into a caller's buffer: keeps counting past cap, so `len > cap`
 * afterwards means it did not fit. Strings are escaped, and bytes that are not valid
 * UTF-8 become U+FFFD, so the output is always valid JSON. */
struct protocol_json {
	char *buf;
	size_t cap;
	size_t len;
	int depth;
	uint64_t need_comma; /* bit d: a value was written at depth d */
};

void protocol_json_init(struct protocol_json *j, char *buf, size_t cap);
void protocol_json_open(struct protocol_json *j, char bracket);  /* '{' or '[' */
void protocol_json_close(struct protocol_json *j, char bracket); /* '}' or ']' */
void protocol_json_key(struct protocol_json *j, const char *key, size_t len);
void protocol_json_string(struct protocol_json *j, const char *s, size_t len);
/* A number given as text: written as is when it is a JSON number, else as a string. */
void protocol_json_number(struct protocol_json *j, const char *s, size_t len);
/* A yajl tree value, compactly. */
void protocol_json_value(struct protocol_json *j, yajl_val v);
/* True when everything written fitted. */
bool protocol_json_fits(const struct protocol_json *j);

/* A decoder's one-line reason into err (when err is not NULL), printf style. */
void protocol_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* True when a[0..a_len) is exactly the C string b. */
bool protocol_bytes_is(const char *a, size_t a_len, const char *b);

/* Stores the writer's JSON as field f (a JSON field: event_field_is_json) when it fitted
 * and holds more than "{}". When the arena cannot take it the field is left out and
 * clickd_protocol_json_dropped_total counts it: the event matters more than its extras. */
void protocol_set_json(struct event *ev, enum event_field f, const struct protocol_json *j);

/* event_set for text from a tracker: -EILSEQ when not UTF-8 or holding a NUL, -ENOSPC
 * when the arena is full; an already present field is kept (the first mapping wins). */
int protocol_set_text(struct event *ev, enum event_field f, const char *s, size_t len);

/* A decimal number as text (JSON or form value): true and *out set when it is one. */
bool protocol_parse_decimal(const char *s, size_t len, double *out);
/* A currency code: three ASCII letters, uppercased into out[3]. */
bool protocol_parse_currency(const char *s, size_t len, char out[3]);
/* Digits-only milliseconds since the epoch in (0, year 2200): true and *ms set. */
bool protocol_parse_epoch_ms(const char *s, size_t len, int64_t *ms);
/* An ISO 8601 / RFC 3339 time ("2024-05-01T10:00:00.123Z", offsets, fractions of any
 * length): true and *ms set. */
bool protocol_parse_iso8601(const char *s, size_t len, int64_t *ms);

/* The credential with this secret (and id, when id is not NULL), or NULL. */
const struct config_credential *protocol_keys_find(const struct protocol_keys *keys, const char *id,
                                                   size_t id_len, const char *secret,
                                                   size_t secret_len);

/* A value of a yajl object by key, or NULL. */
yajl_val protocol_json_get(yajl_val obj, const char *key);
/* The text of a string or number value (numbers as written), or NULL. */
const char *protocol_json_text(yajl_val v, size_t *len);

#endif
