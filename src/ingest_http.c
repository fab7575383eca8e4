/*
 * ingest_http.c - the collect listener's handler: routes, CORS, the visitor cookie, the
 * client IP, and turning a request (query, form/text lines, JSON) into beacons for the
 * pipeline. Runs on its ingest loop; per request it allocates nothing (events are built
 * in the ingest's scratch event, records in the pipeline's buffer).
 *
 * The tracker protocols (src/protocols/: Snowplow, Segment, RudderStack, GA4) have their own
 * routes below (route_of), sharing the batch, dead-letter and metric paths of the native one.
 * Before routing, http.path_aliases maps a site's own paths onto the routes; a POST body
 * with Content-Encoding: gzip is decompressed (bounded, freed once the request is answered:
 * the decoders copy what they keep); GET /r is the click redirect (redirect.h checks its
 * target against http.redirect_allow).
 *
 * Status codes follow what trackers do with them (CONTRACTS.md, TRACKERS.md): 204/200
 * when the beacons are in, 400/413/415 only for data that is truly bad (each bad beacon
 * also becomes a dead letter), 503 with Retry-After when we cannot take it now.
 *
 * kafka.ack_mode=kafka: "in" means durable (ack.h). A request takes a waiter slot before
 * its beacons are decoded (none free: 503, nothing taken), its events carry the slot's
 * token, and when some were accepted the answer is deferred (http_defer), the slot armed
 * with their number and the batch published, in that order. The loop answers it when the
 * slot's events have all completed (ack_async: 204/200, or 503 when one failed for good) or
 * when kafka.ack_timeout_ms passes first (ack_timer: 503 with Retry-After). Who owns what:
 * the slot is this thread's from ack_take to its release (answered, timed out, or the
 * connection closed: ingest_http_cancel); ack_waits[slot] borrows the connection for that
 * long, and http.c guarantees it lives until the cancel. Requests with no beacon taken
 * (all bad, OPTIONS, errors) are answered at once, as in accept mode.
 */
#include "clickd/ingest.h"

#include "clickd/gunzip.h"
#include "clickd/ack.h"
#include "clickd/log.h"
#include "clickd/net.h"
#include "clickd/protocols.h"
#include "clickd/redirect.h"
#include "clickd/url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define PROTOCOL_NATIVE "native"
#define VISITOR_ID_MAX  64

/* The 43-byte transparent 1x1 GIF. */
static const unsigned char pixel_gif[] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

/* What one request's beacons came to. */
struct batch {
	struct ingest *ix;
	const struct http_request *req;
	struct beacon_request br;
	size_t accepted;
	size_t rejected;
	size_t full;     /* beacons refused: a ring was full (all of the batch then) */
	size_t repaired; /* accepted beacons whose text was repaired (text.h) */
	size_t accepted_by[EVENT_PROTOCOL__COUNT]; /* accepted, by the event's protocol */
	const char *protocol;                      /* the request's, for its dead letters */
	bool set_cookie;
	char visitor_id[VISITOR_ID_MAX + 1];
	size_t visitor_id_len;
	int first_code;
	char first_reason[160];
	struct event ev; /* scratch: one beacon at a time */
};

/* One scratch batch per loop thread (it holds an 8 KiB event), for the request being
 * handled: used only inside one handler call, never kept. */
static _Thread_local struct batch batch_storage;

static uint64_t xorshift128plus(uint64_t s[2])
{
	uint64_t x = s[0];
	const uint64_t y = s[1];
	s[0] = y;
	x ^= x << 23;
	s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
	return s[1] + y;
}

void ingest_reconfigure(struct ingest *ix, const struct config *cfg)
{
	ix->cfg = cfg;
	ix->beacon.anonymize_ip = cfg->privacy_anonymize_ip;
	ix->beacon.honor_gpc = cfg->privacy_honor_gpc;
	ix->beacon.max_fields = (size_t)cfg->limits_max_fields;
	ix->beacon.max_batch = (size_t)cfg->limits_max_batch;
	ix->beacon.max_json_depth = (size_t)cfg->limits_max_json_depth;
	ix->beacon.max_string_bytes = (size_t)cfg->limits_max_string_bytes;
	ix->beacon.replace_invalid_utf8 = strcmp(cfg->limits_invalid_utf8, "replace") == 0;
	ix->beacon.reject_controls = strcmp(cfg->limits_control_chars, "reject") == 0;
	for (size_t i = 0; i < cfg->affiliate_param_count; i++)
		ix->affiliate_params[i] = cfg->affiliate_params[i];
	ix->beacon.affiliate_params = ix->affiliate_params;
	ix->beacon.affiliate_param_count = cfg->affiliate_param_count;
}

int ingest_init(struct ingest *ix, const struct config *cfg, struct pipeline *pl)
{
	memset(ix, 0, sizeof(*ix));
	ix->pl = pl;
	ingest_reconfigure(ix, cfg);
	if (getrandom(ix->rng, sizeof(ix->rng), 0) != sizeof(ix->rng) ||
	    (!ix->rng[0] && !ix->rng[1])) {
		ix->rng[0] = (uint64_t)(uintptr_t)ix ^ 0x9e3779b97f4a7c15ULL;
		ix->rng[1] = 0xbf58476d1ce4e5b9ULL;
	}
	return 0;
}

/* ---- request pieces ---- */

static bool path_is(const struct http_request *req, const char *path)
{
	size_t n = strlen(path);
	return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static bool visitor_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.';
}

/* Finds our cookie in the Cookie header; only a well-formed ID is believed. */
static bool cookie_visitor_id(const struct config *cfg, const struct http_request *req,
                              const char **value, size_t *len)
{
	size_t name_len = strlen(cfg->http_cookie_name);
	const char *p = req->cookie, *end;

	if (!p)
		return false; /* and NULL + 0 would be undefined behaviour (UBSan aborts) */
	end = p + req->cookie_len;
	while (p < end) {
		while (p < end && (*p == ' ' || *p == ';'))
			p++;
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *stop = semi ? semi : end;
		if ((size_t)(stop - p) > name_len &&
		    memcmp(p, cfg->http_cookie_name, name_len) == 0 && p[name_len] == '=') {
			const char *v = p + name_len + 1;
			size_t n = (size_t)(stop - v);
			if (n == 0 || n > VISITOR_ID_MAX)
				return false;
			for (size_t i = 0; i < n; i++)
				if (!visitor_id_char(v[i]))
					return false;
			*value = v;
			*len = n;
			return true;
		}
		p = stop;
	}
	return false;
}

static void trim(const char **s, size_t *len)
{
	while (*len && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

static bool parse_ip(const char *s, size_t len, struct sockaddr_storage *out)
{
	char tmp[64];
	memset(out, 0, sizeof(*out));
	if (len == 0 || len >= sizeof(tmp))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (inet_pton(AF_INET, tmp, &((struct sockaddr_in *)out)->sin_addr) == 1) {
		out->ss_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, tmp, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
		out->ss_family = AF_INET6;
		return true;
	}
	return false;
}

void ingest_client_ip(const struct config *cfg, const struct http_request *req, char *out,
                      size_t cap)
{
	struct sockaddr_storage hop;
	const char *list = req->forwarded_for;
	size_t left = req->forwarded_for_len;

	snprintf(out, cap, "%s", req->peer_ip);
	if (!config_is_trusted_proxy(cfg, (const struct sockaddr *)req->peer))
		return;
	if (cfg->real_ip_header >= 0 && cfg->real_ip_header < HTTP_IP_HEADER__COUNT) {
		/* One address, set by the proxy or CDN in front: a proxy that appends instead
		 * of replacing (the header twice) leaves no way to tell which one it set. */
		const struct http_header_value *h = &req->ip_headers[cfg->real_ip_header];
		const char *v = h->value;
		size_t n = h->len;

		if (v)
			trim(&v, &n);
		if (!v || h->repeated || !parse_ip(v, n, &hop)) {
			metrics_add(METRIC_REAL_IP_FALLBACK, 1);
			return;
		}
		net_ip_string((struct sockaddr *)&hop, out, cap);
		return;
	}
	if (!list)
		return;
	/* Walk from the right: each hop was added by the proxy after it; the first hop that
	 * is not one of our proxies is the client. A malformed hop ends the walk. */
	while (left > 0) {
		const char *comma = NULL;
		for (size_t i = left; i > 0; i--)
			if (list[i - 1] == ',') {
				comma = list + i - 1;
				break;
			}
		const char *item = comma ? comma + 1 : list;
		size_t item_len = (size_t)(list + left - item);
		trim(&item, &item_len);
		if (!parse_ip(item, item_len, &hop))
			return;
		net_ip_string((struct sockaddr *)&hop, out, cap);
		if (!config_is_trusted_proxy(cfg, (struct sockaddr *)&hop))
			return;
		left = comma ? (size_t)(comma - list) : 0;
	}
}

/* A serialised origin (scheme://host[:port], "null") is visible ASCII: anything else is
 * not one, and is never echoed into a header (http-parser lets control characters other
 * than CR and LF through in values; the fuzzer found one echoed). */
static bool origin_echoable(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7F)
			return false;
	return true;
}

/* Appends the CORS headers for an allowed Origin (echoed, never *). */
static size_t cors_headers(const struct config *cfg, const struct http_request *req, bool preflight,
                           char *out, size_t cap)
{
	size_t n = 0;
	int w;

	if (!req->origin || req->origin_len == 0 || req->origin_len > 255 ||
	    !origin_echoable(req->origin, req->origin_len) ||
	    !config_cors_allowed(cfg, req->origin, req->origin_len))
		return 0;
	w = snprintf(out, cap,
	             "Access-Control-Allow-Origin: %.*s\r\n"
	             "Access-Control-Allow-Credentials: true\r\n"
	             "Vary: Origin\r\n",
	             (int)req->origin_len, req->origin);
	if (w < 0 || (size_t)w >= cap)
		return 0;
	n = (size_t)w;
	if (!preflight)
		return n;
	w = snprintf(out + n, cap - n,
	             "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
	             "Access-Control-Max-Age: 3600\r\n");
	if (w < 0 || (size_t)w >= cap - n)
		return n;
	n += (size_t)w;
	if (req->cors_request_headers && req->cors_request_headers_len) {
		/* Echo only header-name characters, so nothing can be injected. */
		char names[512];
		size_t k = 0;
		for (size_t i = 0; i < req->cors_request_headers_len && k + 1 < sizeof(names);
		     i++) {
			char c = req->cors_request_headers[i];
			if (visitor_id_char(c) || c == ',' || c == ' ')
				names[k++] = c;
		}
		w = snprintf(out + n, cap - n, "Access-Control-Allow-Headers: %.*s\r\n", (int)k,
		             names);
		if (w > 0 && (size_t)w < cap - n)
			n += (size_t)w;
	}
	return n;
}

static size_t cookie_header(const struct config *cfg, const struct batch *b, char *out, size_t cap)
{
	char domain[300] = "";
	char max_age[48] = "";
	int w;

	if (cfg->http_cookie_domain[0])
		snprintf(domain, sizeof(domain), "; Domain=%s", cfg->http_cookie_domain);
	if (cfg->http_cookie_max_age_s > 0)
		snprintf(max_age, sizeof(max_age), "; Max-Age=%lld",
		         (long long)cfg->http_cookie_max_age_s);
	w = snprintf(out, cap, "Set-Cookie: %s=%.*s; Path=/%s%s; HttpOnly; %s\r\n",
	             cfg->http_cookie_name, (int)b->visitor_id_len, b->visitor_id, max_age, domain,
	             cfg->http_cookie_secure ? "SameSite=None; Secure" : "SameSite=Lax");
	return w > 0 && (size_t)w < cap ? (size_t)w : 0;
}

/* ---- beacons ---- */

static void note_reject(struct batch *b, int code, const char *reason, const char *payload,
                        size_t payload_len)
{
	if (b->rejected++ == 0) {
		b->first_code = code;
		snprintf(b->first_reason, sizeof(b->first_reason), "%s", reason);
	}
	pipeline_dead_letter(b->ix->pl, b->br.received_at_ms, pipeline_reason_class(code), reason,
	                     b->protocol, b->req ? b->req->peer_ip : NULL, payload, payload_len);
}

/* The protocol an event carries (its EF_PROTOCOL, set by its decoder). */
static int event_protocol(const struct event *ev)
{
	size_t len;
	const char *p = event_get(ev, EF_PROTOCOL, &len);

	for (int i = 0; p != NULL && i < EVENT_PROTOCOL__COUNT; i++) {
		const char *name = event_protocol_name((enum event_protocol)i);

		if (strlen(name) == len && memcmp(name, p, len) == 0)
			return i;
	}
	return EVENT_PROTOCOL_NATIVE;
}

/* A request's beacons are taken all or nothing (pipeline.h): once one did not fit, the
 * rest are only counted, and batch_settle gives back what was claimed. */
static int submit(struct batch *b, struct event *ev)
{
	if (b->full == 0 && pipeline_submit(b->ix->pl, ev) == 0) {
		b->accepted++;
		b->accepted_by[event_protocol(ev)]++;
		b->repaired += ev->text_repaired;
		if (ev->set_visitor_cookie)
			b->set_cookie = true;
	} else {
		b->full++;
	}
	return 0;
}

/* Publishes the batch's beacons, or, when one did not fit, none of them. */
static void batch_settle(struct batch *b)
{
	if (b->full == 0) {
		pipeline_commit(b->ix->pl);
		for (int p = 0; p < EVENT_PROTOCOL__COUNT; p++)
			if (b->accepted_by[p])
				metrics_protocol_events_in(p, b->accepted_by[p]);
		if (b->repaired)
			metrics_add(METRIC_BEACONS_REPAIRED, b->repaired);
		return;
	}
	pipeline_abort(b->ix->pl);
	memset(b->accepted_by, 0, sizeof(b->accepted_by));
	b->repaired = 0;
	b->full += b->accepted;
	b->accepted = 0;
}

static int emit_json(void *ud, struct event *ev)
{
	return submit(ud, ev);
}

static void reject_json(void *ud, int code, const char *payload, size_t payload_len,
                        const char *reason)
{
	note_reject(ud, code, reason, payload, payload_len);
}

static void decode_query_beacon(struct batch *b, const char *q, size_t len)
{
	char err[160];
	int rc = beacon_decode_query(q, len, &b->br, &b->ix->beacon, &b->ev, err, sizeof(err));
	if (rc < 0) {
		note_reject(b, rc, err, q, len);
		return;
	}
	submit(b, &b->ev);
}

/* A text/plain or form body: one beacon (a query string) per line. */
static size_t count_lines(const char *s, size_t len)
{
	const char *p = s, *end = s + len;
	size_t n = 0, line_len;

	while (ingest_next_line(&p, end, &line_len))
		n += line_len > 0;
	return n;
}

static void decode_lines(struct batch *b, const char *s, size_t len)
{
	const char *p = s, *end = s + len, *line;
	size_t n;

	while ((line = ingest_next_line(&p, end, &n)) != NULL)
		if (n)
			decode_query_beacon(b, line, n);
}

enum body_kind { BODY_LINES, BODY_JSON, BODY_UNSUPPORTED };

static enum body_kind body_kind_of(const struct http_request *req)
{
	const char *ct = req->content_type;
	size_t len = req->content_type_len;

	if (!ct || len == 0) {
		/* No Content-Type (sendBeacon with a string says text/plain; some servers say
		 * nothing): look at the first byte. */
		for (size_t i = 0; i < req->body_len; i++) {
			char c = req->body[i];
			if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
				continue;
			return c == '{' || c == '[' ? BODY_JSON : BODY_LINES;
		}
		return BODY_LINES;
	}
	const char *semi = memchr(ct, ';', len);
	if (semi)
		len = (size_t)(semi - ct);
	trim(&ct, &len);
#define CT_IS(s) (len == sizeof(s) - 1 && strncasecmp(ct, s, len) == 0)
	if (CT_IS("application/json") || CT_IS("text/json"))
		return BODY_JSON;
	if (CT_IS("application/x-www-form-urlencoded") || CT_IS("text/plain"))
		return BODY_LINES;
#undef CT_IS
	return BODY_UNSUPPORTED;
}

static void batch_init(struct batch *b, struct ingest *ix, const struct http_request *req,
                       char *ip_buf, size_t ip_cap)
{
	const char *cookie_vid = NULL;
	size_t cookie_len = 0;

	b->ix = ix;
	b->req = req;
	b->accepted = b->rejected = b->full = b->repaired = 0;
	memset(b->accepted_by, 0, sizeof(b->accepted_by));
	b->protocol = PROTOCOL_NATIVE;
	b->set_cookie = false;
	b->first_code = 0;
	b->first_reason[0] = '\0';
	memset(&b->br, 0, sizeof(b->br));
	b->br.received_at_ms = req->received_at_ms;
	b->br.protocol = PROTOCOL_NATIVE;
	b->br.user_agent = req->user_agent;
	b->br.user_agent_len = req->user_agent_len;
	b->br.gpc = req->gpc;
	ingest_client_ip(ix->cfg, req, ip_buf, ip_cap);
	b->br.client_ip = ip_buf;
	if (cookie_visitor_id(ix->cfg, req, &cookie_vid, &cookie_len)) {
		b->br.cookie_visitor_id = cookie_vid;
		b->br.cookie_visitor_id_len = cookie_len;
	} else {
		uint64_t hi = xorshift128plus(ix->rng), lo = xorshift128plus(ix->rng);
		b->visitor_id_len =
		    (size_t)snprintf(b->visitor_id, sizeof(b->visitor_id), "%016llx%016llx",
		                     (unsigned long long)hi, (unsigned long long)lo);
		b->br.minted_visitor_id = b->visitor_id;
		b->br.minted_visitor_id_len = b->visitor_id_len;
	}
}

/* ---- answers ---- */

static void respond(struct http_conn *conn, int status, const char *content_type, const void *body,
                    size_t body_len, const char *headers, size_t headers_len)
{
	struct http_response resp = {
	    .status = status,
	    .content_type = content_type,
	    .body = body,
	    .body_len = body_len,
	    .headers = headers,
	    .headers_len = headers_len,
	};
	http_respond(conn, &resp);
}

static void respond_text(struct http_conn *conn, int status, const char *text, const char *headers,
                         size_t headers_len)
{
	char body[256];
	int n = snprintf(body, sizeof(body), "%s\n", text);
	respond(conn, status, "text/plain; charset=utf-8", body, n > 0 ? (size_t)n : 0, headers,
	        headers_len);
}

/* 503 with Retry-After: nothing of the request was taken; `beacons` counted as refused. */
static void respond_busy(struct ingest *ix, struct http_conn *conn, size_t beacons, char *headers,
                         size_t headers_len, size_t headers_cap)
{
	int w = snprintf(headers + headers_len, headers_cap - headers_len, "Retry-After: %lld\r\n",
	                 (long long)ix->cfg->http_retry_after_s);

	if (w > 0 && (size_t)w < headers_cap - headers_len)
		headers_len += (size_t)w;
	metrics_add(METRIC_BACKPRESSURE_503, beacons);
	respond_text(conn, 503, "busy, retry later", headers, headers_len);
}

static void respond_batch(struct ingest *ix, struct http_conn *conn, const struct http_request *req,
                          const struct batch *b, bool pixel, char *headers, size_t headers_len,
                          size_t headers_cap)
{
	if (b->full) {
		respond_busy(ix, conn, b->full, headers, headers_len, headers_cap);
		return;
	}
	if (b->accepted == 0) {
		respond_text(conn, 400, b->rejected ? b->first_reason : "no beacon in request",
		             headers, headers_len);
		return;
	}
	if (b->set_cookie)
		headers_len +=
		    cookie_header(ix->cfg, b, headers + headers_len, headers_cap - headers_len);
	if (pixel)
		respond(conn, 200, "image/gif", pixel_gif, sizeof(pixel_gif), headers, headers_len);
	else
		respond(conn, 204, NULL, NULL, 0, headers, headers_len);
	(void)req;
}

/* Decodes the request's beacons into tb (submitted, not yet published). Returns true when
 * it has answered the request already (415, 413: nothing submitted). */
static bool decode_request(struct ingest *ix, struct http_conn *conn,
                           const struct http_request *req, struct batch *tb, const char *headers,
                           size_t headers_len)
{
	/* http.c gives NULL for an empty body; pointer arithmetic on NULL is undefined
	 * (UBSan aborts on it), so the decoders get "" instead. */
	const char *body = req->body ? req->body : "";
	enum body_kind kind;
	char err[160];

	if (req->method == HTTP_REQ_GET) {
		if (req->query_len)
			decode_query_beacon(tb, req->query, req->query_len);
		else
			note_reject(tb, -EINVAL, "no beacon in request", NULL, 0);
		return false;
	}
	kind = body_kind_of(req);
	if (kind == BODY_UNSUPPORTED) {
		note_reject(tb, -ENOTSUP, "unsupported Content-Type", body, req->body_len);
		respond_text(conn, 415, "unsupported Content-Type", headers, headers_len);
		return true;
	}
	if (kind == BODY_LINES &&
	    count_lines(body, req->body_len) > (size_t)ix->cfg->limits_max_batch) {
		note_reject(tb, -EMSGSIZE, "more beacons than limits.max_batch", body,
		            req->body_len);
		respond_text(conn, 413, "more beacons than limits.max_batch", headers, headers_len);
		return true;
	}
	if (kind == BODY_LINES) {
		decode_lines(tb, body, req->body_len);
	} else {
		int rc = beacon_decode_json(body, req->body_len, &tb->br, &ix->beacon, emit_json,
		                            reject_json, tb, err, sizeof(err));
		if (rc == -EMSGSIZE) {
			pipeline_abort(ix->pl); /* nothing was emitted; to be sure */
			note_reject(tb, rc, err, body, req->body_len);
			respond_text(conn, 413, err, headers, headers_len);
			return true;
		}
		if (rc < 0)
			note_reject(tb, rc, err, body, req->body_len);
	}
	if (tb->accepted + tb->rejected + tb->full == 0)
		note_reject(tb, -EINVAL, "no beacon in request", body, req->body_len);
	return false;
}

/* ---- kafka.ack_mode=kafka ---- */

static void ack_timer_schedule(struct ingest *ix);

/* A waiting request's answer: what accept mode would have said once it is durable, 503
 * with Retry-After when an event failed for good or the time ran out (its events may still
 * arrive: the tracker's retry is then a duplicate, which dedup drops on its eid). */
static void on_ack_done(void *ud, int slot, enum ack_result result)
{
	struct ingest *ix = ud;
	struct ingest_ack_wait *w = &ix->ack_waits[slot];
	struct http_response resp = {.status = 204};
	char retry[64], body[96];
	int n;

	if (!w->conn)
		return; /* cannot happen: a slot is released and forgotten together */
	if (result == ACK_DURABLE && w->pixel) {
		resp.status = 200;
		resp.content_type = "image/gif";
		resp.body = (const char *)pixel_gif;
		resp.body_len = sizeof(pixel_gif);
	} else if (result != ACK_DURABLE) {
		n = snprintf(retry, sizeof(retry), "Retry-After: %lld\r\n",
		             (long long)ix->cfg->http_retry_after_s);
		resp.status = 503;
		resp.headers = retry;
		resp.headers_len = n > 0 ? (size_t)n : 0;
		n = snprintf(body, sizeof(body), "%s\n",
		             result == ACK_TIMED_OUT
		                 ? "not yet stored in Kafka or the spool (kafka.ack_timeout_ms), "
		                   "retry later"
		                 : "could not be stored, retry later");
		resp.content_type = "text/plain; charset=utf-8";
		resp.body = body;
		resp.body_len = n > 0 ? (size_t)n : 0;
	}
	http_respond_deferred(w->conn, w->handle, &resp);
	w->conn = NULL;
}

static void on_ack_ready(uv_async_t *a)
{
	struct ingest *ix = a->data;

	ack_collect(ix->acks, on_ack_done, ix);
}

static void on_ack_timer(uv_timer_t *t)
{
	struct ingest *ix = t->data;

	ack_expire(ix->acks, (int64_t)uv_now(t->loop), on_ack_done, ix);
	ack_timer_schedule(ix);
}

/* The timer runs to the oldest deadline (every request waits as long, so a new one never
 * comes first); when that request was answered meanwhile, it fires early and looks again. */
static void ack_timer_schedule(struct ingest *ix)
{
	int64_t next = ack_next_deadline(ix->acks), now;

	if (next == INT64_MAX || uv_is_active((uv_handle_t *)&ix->ack_timer))
		return;
	now = (int64_t)uv_now(ix->ack_timer.loop);
	uv_timer_start(&ix->ack_timer, on_ack_timer, next > now ? (uint64_t)(next - now) : 0, 0);
}

/* Called from completing threads (ack_table_set_wake). */
static void ack_wake(void *arg)
{
	uv_async_send(arg);
}

/* The batch's events are taken: defer the answer, arm the waiter with their number, then
 * publish them (a completion can only follow the publish). Returns 0, or -ENOMEM when the
 * answer cannot be deferred (nothing is published). */
static int defer_until_durable(struct ingest *ix, struct http_conn *conn,
                               const struct http_request *req, struct batch *b, int slot,
                               bool pixel, char *headers, size_t headers_len, size_t headers_cap)
{
	uint64_t handle;

	if (b->set_cookie)
		headers_len +=
		    cookie_header(ix->cfg, b, headers + headers_len, headers_cap - headers_len);
	handle = http_defer(conn, headers, headers_len, (uint64_t)slot);
	if (!handle)
		return -ENOMEM;
	ix->ack_waits[slot] =
	    (struct ingest_ack_wait){.conn = conn, .handle = handle, .pixel = pixel};
	ack_arm(ix->acks, slot, (uint32_t)b->accepted, req->received_at_ms,
	        (int64_t)uv_now(ix->ack_timer.loop) + ix->cfg->kafka_ack_timeout_ms);
	pipeline_commit(ix->pl);
	ack_timer_schedule(ix);
	return 0;
}

void ingest_http_cancel(void *ud, uint64_t tag)
{
	struct ingest *ix = ud;

	if (!ix->acks || tag >= ix->ack_slots)
		return;
	ix->ack_waits[tag].conn = NULL;
	ack_release(ix->acks, (int)tag);
}

int ingest_acks_start(struct ingest *ix, uv_loop_t *loop, struct ack_table *t, size_t slots)
{
	ix->ack_waits = calloc(slots, sizeof(*ix->ack_waits));
	if (!ix->ack_waits)
		return -ENOMEM;
	ix->ack_slots = slots;
	uv_async_init(loop, &ix->ack_async, on_ack_ready);
	uv_timer_init(loop, &ix->ack_timer);
	ix->ack_async.data = ix;
	ix->ack_timer.data = ix;
	ix->acks = t;
	ack_table_set_wake(t, ack_wake, &ix->ack_async);
	return 0;
}

void ingest_acks_close(struct ingest *ix)
{
	if (!ix->acks)
		return;
	/* Once this returns no completing thread touches ack_async again. */
	ack_table_set_wake(ix->acks, NULL, NULL);
	if (!uv_is_closing((uv_handle_t *)&ix->ack_async))
		uv_close((uv_handle_t *)&ix->ack_async, NULL);
	if (!uv_is_closing((uv_handle_t *)&ix->ack_timer))
		uv_close((uv_handle_t *)&ix->ack_timer, NULL);
	free(ix->ack_waits);
	ix->ack_waits = NULL;
	ix->acks = NULL;
}

/* ---- collect ---- */

static void handle_collect(struct ingest *ix, struct http_conn *conn,
                           const struct http_request *req, bool pixel)
{
	struct batch *tb = &batch_storage;
	char headers[2048];
	char ip[64];
	size_t headers_len;
	uint64_t token = ACK_TOKEN_NONE;
	int slot = -1;
	bool answered;

	headers_len =
	    cors_headers(ix->cfg, req, req->method == HTTP_REQ_OPTIONS, headers, sizeof(headers));
	if (req->method == HTTP_REQ_OPTIONS) {
		respond(conn, 204, NULL, NULL, 0, headers, headers_len);
		return;
	}
	if (req->method != HTTP_REQ_GET && !(req->method == HTTP_REQ_POST && !pixel)) {
		const char *allow =
		    pixel ? "Allow: GET, OPTIONS\r\n" : "Allow: GET, POST, OPTIONS\r\n";
		size_t n = strlen(allow);
		if (headers_len + n < sizeof(headers)) {
			memcpy(headers + headers_len, allow, n);
			headers_len += n;
		}
		respond_text(conn, 405, "method not allowed", headers, headers_len);
		return;
	}
	if (ix->acks && (slot = ack_take(ix->acks, &token)) < 0) {
		/* kafka.ack_max_pending requests of this thread wait already. */
		respond_busy(ix, conn, 1, headers, headers_len, sizeof(headers));
		return;
	}
	batch_init(tb, ix, req, ip, sizeof(ip));
	pipeline_set_ack(ix->pl, token);
	answered = decode_request(ix, conn, req, tb, headers, headers_len);
	pipeline_set_ack(ix->pl, ACK_TOKEN_NONE);
	if (slot >= 0 && !answered && tb->full == 0 && tb->accepted > 0) {
		if (defer_until_durable(ix, conn, req, tb, slot, pixel, headers, headers_len,
		                        sizeof(headers)) == 0)
			return;
		/* Cannot wait for them (out of memory): take none. */
		pipeline_abort(ix->pl);
		tb->full = tb->accepted;
		tb->accepted = 0;
	}
	if (slot >= 0)
		ack_release(ix->acks, slot);
	if (answered)
		return;
	batch_settle(tb);
	respond_batch(ix, conn, req, tb, pixel, headers, headers_len, sizeof(headers));
}

/* ---- tracker protocols (src/protocols/) ---- */

/*
 * The routes of the tracker protocols and what each answers (TRACKERS.md): Snowplow's GET
 * /i and /ice.png the GIF with Cache-Control: no-cache, no-store, must-revalidate, its POST
 * tp2 200 "ok" as text/plain; the Segment-shaped routes 200 {"success":true} (Segment and
 * RudderStack take anything below 400); GA4's /g/collect and /mp/collect 204. Data to drop
 * is answered 400 (413 for too many events, 401 for a bad write key or API secret) and
 * dead-lettered; a full ring 503 with Retry-After, nothing of the request taken.
 */
enum route_kind {
	ROUTE_SNOWPLOW_GET,
	ROUTE_SNOWPLOW_POST,
	ROUTE_SEGMENT,         /* /v1/<type> and /v1/b, /v1/batch */
	ROUTE_SEGMENT_METRICS, /* /v1/m: accepted and discarded */
	ROUTE_RUDDERSTACK_BEACON,
	ROUTE_GA4_COLLECT,
	ROUTE_GA4_MP,
};

struct route {
	enum route_kind kind;
	enum event_protocol protocol; /* of its dead letters */
	int segment_route;            /* ROUTE_SEGMENT: enum segment_route */
};

static bool path_has_prefix(const struct http_request *req, const char *prefix, size_t *rest)
{
	size_t n = strlen(prefix);

	if (req->path_len <= n || memcmp(req->path, prefix, n) != 0)
		return false;
	*rest = n;
	return true;
}

/* The tracker route of a path; false when it is none. */
static bool route_of(const struct http_request *req, struct route *r)
{
	size_t rest;
	int sr;

	memset(r, 0, sizeof(*r));
	if (path_is(req, "/i") || path_is(req, "/ice.png")) {
		r->kind = ROUTE_SNOWPLOW_GET;
		r->protocol = EVENT_PROTOCOL_SNOWPLOW;
	} else if (path_is(req, "/com.snowplowanalytics.snowplow/tp2")) {
		r->kind = ROUTE_SNOWPLOW_POST;
		r->protocol = EVENT_PROTOCOL_SNOWPLOW;
	} else if (path_is(req, "/v1/m")) {
		r->kind = ROUTE_SEGMENT_METRICS;
		r->protocol = EVENT_PROTOCOL_SEGMENT;
	} else if (path_has_prefix(req, "/v1/", &rest) &&
	           (sr = segment_route_of(req->path + rest, req->path_len - rest)) >= 0) {
		r->kind = ROUTE_SEGMENT;
		r->protocol = EVENT_PROTOCOL_SEGMENT;
		r->segment_route = sr;
	} else if (path_is(req, "/beacon/v1/batch")) {
		r->kind = ROUTE_RUDDERSTACK_BEACON;
		r->protocol = EVENT_PROTOCOL_RUDDERSTACK;
		r->segment_route = SEGMENT_BATCH;
	} else if (path_is(req, "/g/collect")) {
		r->kind = ROUTE_GA4_COLLECT;
		r->protocol = EVENT_PROTOCOL_GA4;
	} else if (path_is(req, "/mp/collect")) {
		r->kind = ROUTE_GA4_MP;
		r->protocol = EVENT_PROTOCOL_GA4_MP;
	} else {
		return false;
	}
	return true;
}

/* A v4 UUID from the ingest's random state (the Snowplow network user ID). */
static void mint_uuid(struct ingest *ix, char out[37])
{
	uint64_t hi = xorshift128plus(ix->rng), lo = xorshift128plus(ix->rng);

	hi = (hi & ~0xf000ULL) | 0x4000ULL;             /* version 4 */
	lo = (lo & ~(0xc0ULL << 56)) | (0x80ULL << 56); /* variant 10 */
	snprintf(out, 37, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(hi >> 32),
	         (unsigned long long)(hi >> 16 & 0xffff), (unsigned long long)(hi & 0xffff),
	         (unsigned long long)(lo >> 48), (unsigned long long)(lo & 0xffffffffffffULL));
}

/* The value of cookie `name` when it is a well-formed ID. */
static bool cookie_value(const struct http_request *req, const char *name, const char **value,
                         size_t *len)
{
	size_t name_len = strlen(name);
	const char *p = req->cookie, *end;

	if (!p)
		return false;
	end = p + req->cookie_len;
	while (p < end) {
		while (p < end && (*p == ' ' || *p == ';'))
			p++;
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *stop = semi ? semi : end;
		if ((size_t)(stop - p) > name_len && memcmp(p, name, name_len) == 0 &&
		    p[name_len] == '=') {
			const char *v = p + name_len + 1;
			size_t n = (size_t)(stop - v);
			if (n == 0 || n > VISITOR_ID_MAX)
				return false;
			for (size_t i = 0; i < n; i++)
				if (!visitor_id_char(v[i]))
					return false;
			*value = v;
			*len = n;
			return true;
		}
		p = stop;
	}
	return false;
}

/* The nuid parameter of a GET query, when it is a well-formed ID. */
static bool query_nuid(const struct http_request *req, char *out, size_t cap, size_t *len)
{
	const char *q = req->query, *end;

	if (!q)
		return false;
	end = q + req->query_len;
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;
		size_t n = (size_t)(stop - q);

		if (n > 5 && memcmp(q, "nuid=", 5) == 0 && n - 5 <= cap &&
		    n - 5 <= VISITOR_ID_MAX) {
			for (size_t i = 5; i < n; i++)
				if (!visitor_id_char(q[i]))
					return false;
			memcpy(out, q + 5, n - 5);
			*len = n - 5;
			return true;
		}
		q = stop + (amp != NULL);
	}
	return false;
}

/*
 * Snowplow's network user ID, as the reference collector keeps it: the nuid parameter,
 * else the cookie, else a new UUID; the events of a request without their own duid take
 * it as their visitor. SP-Anonymous (and GPC/DNT when honoured): none, and no cookie.
 */
static void snowplow_network_user(struct batch *b, const struct http_request *req)
{
	const struct config *cfg = b->ix->cfg;
	const char *v = NULL;
	size_t len = 0;

	b->br.cookie_visitor_id = NULL;
	b->br.minted_visitor_id = NULL;
	b->visitor_id_len = 0;
	b->br.anonymous = req->sp_anonymous;
	if (req->sp_anonymous || (cfg->privacy_honor_gpc && req->gpc))
		return;
	if (query_nuid(req, b->visitor_id, VISITOR_ID_MAX, &len)) {
		b->visitor_id_len = len;
	} else if (cookie_value(req, cfg->snowplow_cookie_name, &v, &len)) {
		memcpy(b->visitor_id, v, len);
		b->visitor_id_len = len;
	} else {
		mint_uuid(b->ix, b->visitor_id);
		b->visitor_id_len = 36;
	}
	b->visitor_id[b->visitor_id_len] = '\0';
	b->br.cookie_visitor_id = b->visitor_id;
	b->br.cookie_visitor_id_len = b->visitor_id_len;
	b->set_cookie = true;
}

/* The host of an Origin header ("https://shop.example.com:8443" -> shop.example.com). */
static bool origin_host(const struct http_request *req, const char **host, size_t *len)
{
	const char *o = req->origin, *sep, *end;

	if (o == NULL || req->origin_len == 0)
		return false;
	end = o + req->origin_len;
	sep = memchr(o, ':', req->origin_len);
	if (sep == NULL || end - sep < 3 || sep[1] != '/' || sep[2] != '/')
		return false;
	*host = sep + 3;
	for (sep = *host; sep < end && *sep != ':' && *sep != '/'; sep++)
		;
	*len = (size_t)(sep - *host);
	return *len > 0;
}

/* The first configured domain that is the Origin's host or a parent of it, or NULL. */
static const char *snowplow_cookie_domain(const struct config *cfg, const struct http_request *req)
{
	const char *host;
	size_t host_len;

	if (!origin_host(req, &host, &host_len))
		return NULL;
	for (size_t i = 0; i < cfg->snowplow_cookie_domain_count; i++) {
		const char *d = cfg->snowplow_cookie_domains_list[i];
		size_t n;

		if (*d == '.')
			d++;
		n = strlen(d);
		if (n == 0 || n > host_len)
			continue;
		if (strncasecmp(host + host_len - n, d, n) != 0)
			continue;
		if (n == host_len || host[host_len - n - 1] == '.')
			return cfg->snowplow_cookie_domains_list[i];
	}
	return NULL;
}

static size_t snowplow_cookie_header(const struct config *cfg, const struct http_request *req,
                                     const struct batch *b, char *out, size_t cap)
{
	const char *domain = snowplow_cookie_domain(cfg, req);
	int w;

	w = snprintf(out, cap,
	             "Set-Cookie: %s=%.*s; Path=/; Max-Age=31536000%s%s; SameSite=None; Secure; "
	             "HttpOnly\r\n",
	             cfg->snowplow_cookie_name, (int)b->visitor_id_len, b->visitor_id,
	             domain ? "; Domain=" : "", domain ? domain : "");
	return w > 0 && (size_t)w < cap ? (size_t)w : 0;
}

static void append_header(char *headers, size_t *len, size_t cap, const char *line)
{
	size_t n = strlen(line);

	if (*len + n < cap) {
		memcpy(headers + *len, line, n);
		*len += n;
	}
}

/* The writeKey parameter of a query, percent-decoded into out. */
static size_t query_write_key(const struct http_request *req, char *out, size_t cap)
{
	const char *q = req->query, *end;

	if (!q)
		return 0;
	end = q + req->query_len;
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;
		size_t n = (size_t)(stop - q), out_len = 0;

		if (n > 9 && memcmp(q, "writeKey=", 9) == 0 &&
		    url_decode(q + 9, n - 9, out, cap, true, &out_len) == 0)
			return out_len;
		q = stop + (amp != NULL);
	}
	return 0;
}

static void protocol_decode(struct ingest *ix, struct batch *b, const struct http_request *req,
                            const struct route *r, char *err, size_t errlen, int *rc)
{
	const struct config *cfg = ix->cfg;
	const char *body = req->body ? req->body : "";
	struct protocol_keys ga4_keys = {cfg->ga4_secrets, cfg->ga4_secret_count};

	switch (r->kind) {
	case ROUTE_SNOWPLOW_GET:
		if (req->query_len == 0) {
			*rc = -EINVAL;
			snprintf(err, errlen, "no event in request");
			return;
		}
		*rc = snowplow_decode_query(req->query, req->query_len, &b->br, &ix->beacon, &b->ev,
		                            err, errlen);
		if (*rc == 0)
			submit(b, &b->ev);
		return;
	case ROUTE_SNOWPLOW_POST:
		*rc = snowplow_decode_post(body, req->body_len, &b->br, &ix->beacon, emit_json,
		                           reject_json, b, err, errlen);
		return;
	case ROUTE_SEGMENT:
	case ROUTE_RUDDERSTACK_BEACON: {
		char key[256];
		size_t key_len = query_write_key(req, key, sizeof(key));
		struct segment_request sreq = {
		    .route = (enum segment_route)r->segment_route,
		    .authorization = req->authorization,
		    .authorization_len = req->authorization_len,
		    .query_write_key = key_len ? key : NULL,
		    .query_write_key_len = key_len,
		    .segment_keys = {cfg->segment_keys, cfg->segment_key_count},
		    .rudderstack_keys = {cfg->rudderstack_keys, cfg->rudderstack_key_count},
		    .rudderstack_route = r->kind == ROUTE_RUDDERSTACK_BEACON,
		};
		*rc = segment_decode(body, req->body_len, &sreq, &b->br, &ix->beacon, emit_json,
		                     reject_json, b, err, errlen);
		return;
	}
	case ROUTE_GA4_COLLECT:
		*rc = ga4_decode_collect(req->query, req->query_len,
		                         req->method == HTTP_REQ_POST ? body : NULL, req->body_len,
		                         &ga4_keys, &b->br, &ix->beacon, emit_json, reject_json, b,
		                         err, errlen);
		return;
	case ROUTE_GA4_MP:
		*rc = ga4_decode_mp(req->query, req->query_len, body, req->body_len, &ga4_keys,
		                    &b->br, &ix->beacon, emit_json, reject_json, b, err, errlen);
		return;
	case ROUTE_SEGMENT_METRICS:
		return;
	}
}

static void respond_protocol(struct ingest *ix, struct http_conn *conn,
                             const struct http_request *req, const struct route *r, struct batch *b,
                             char *headers, size_t headers_len, size_t cap)
{
	if (b->full) {
		respond_batch(ix, conn, req, b, false, headers, headers_len, cap);
		return;
	}
	if (b->accepted == 0 && r->kind != ROUTE_SEGMENT_METRICS) {
		respond_text(conn, 400, b->rejected ? b->first_reason : "no event in request",
		             headers, headers_len);
		return;
	}
	switch (r->kind) {
	case ROUTE_SNOWPLOW_GET:
	case ROUTE_SNOWPLOW_POST:
		if (b->set_cookie)
			headers_len += snowplow_cookie_header(
			    ix->cfg, req, b, headers + headers_len, cap - headers_len);
		if (r->kind == ROUTE_SNOWPLOW_POST) {
			respond(conn, 200, "text/plain; charset=utf-8", "ok", 2, headers,
			        headers_len);
			return;
		}
		/* http.c sends Cache-Control: no-cache, no-store, must-revalidate with every
		 * answer, the header Snowplow's collector puts on its pixel. */
		respond(conn, 200, "image/gif", pixel_gif, sizeof(pixel_gif), headers, headers_len);
		return;
	case ROUTE_SEGMENT:
	case ROUTE_SEGMENT_METRICS:
	case ROUTE_RUDDERSTACK_BEACON:
		respond(conn, 200, "application/json", "{\"success\":true}", 16, headers,
		        headers_len);
		return;
	case ROUTE_GA4_COLLECT:
	case ROUTE_GA4_MP:
		respond(conn, 204, NULL, NULL, 0, headers, headers_len);
		return;
	}
}

static void handle_protocol(struct ingest *ix, struct http_conn *conn,
                            const struct http_request *req, const struct route *r)
{
	struct batch *tb = &batch_storage;
	char headers[2048];
	char ip[64];
	char err[160] = "";
	size_t headers_len;
	bool get_ok = r->kind == ROUTE_SNOWPLOW_GET || r->kind == ROUTE_GA4_COLLECT;
	bool post_ok = r->kind != ROUTE_SNOWPLOW_GET;
	int rc = 0;

	headers_len =
	    cors_headers(ix->cfg, req, req->method == HTTP_REQ_OPTIONS, headers, sizeof(headers));
	if (req->method == HTTP_REQ_OPTIONS) {
		respond(conn, 204, NULL, NULL, 0, headers, headers_len);
		return;
	}
	if (!((req->method == HTTP_REQ_GET && get_ok) ||
	      (req->method == HTTP_REQ_POST && post_ok))) {
		append_header(headers, &headers_len, sizeof(headers),
		              get_ok && post_ok ? "Allow: GET, POST, OPTIONS\r\n"
		              : get_ok          ? "Allow: GET, OPTIONS\r\n"
		                                : "Allow: POST, OPTIONS\r\n");
		respond_text(conn, 405, "method not allowed", headers, headers_len);
		return;
	}
	batch_init(tb, ix, req, ip, sizeof(ip));
	tb->protocol = event_protocol_name(r->protocol);
	if (r->kind == ROUTE_SNOWPLOW_GET || r->kind == ROUTE_SNOWPLOW_POST) {
		snowplow_network_user(tb, req);
	} else {
		/* The other trackers carry their own visitor IDs, and no cookies cross-site. */
		tb->br.cookie_visitor_id = NULL;
		tb->br.minted_visitor_id = NULL;
	}
	protocol_decode(ix, tb, req, r, err, sizeof(err), &rc);
	if (rc < 0) {
		const char *body = req->body ? req->body : req->query;
		size_t body_len = req->body ? req->body_len : req->query_len;

		pipeline_abort(ix->pl); /* a request refused whole has nothing in the rings */
		tb->accepted = 0;
		memset(tb->accepted_by, 0, sizeof(tb->accepted_by));
		note_reject(tb, rc, err, body, body_len);
		if (rc == -EACCES || rc == -E2BIG) {
			respond_text(conn, rc == -EACCES ? 401 : 413, err, headers, headers_len);
			return;
		}
	}
	batch_settle(tb);
	respond_protocol(ix, conn, req, r, tb, headers, headers_len, sizeof(headers));
}

/* ---- the click redirect: GET /r?u=<target>&<native beacon fields> ---- */

/* The raw (still percent-encoded) value of parameter `key` of a query; *count is how many
 * times it came. */
static const char *query_param(const char *q, size_t len, const char *key, size_t *value_len,
                               size_t *count)
{
	const char *end = q + len, *found = NULL;
	size_t key_len = strlen(key);

	*count = 0;
	*value_len = 0;
	while (q && q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;
		size_t n = (size_t)(stop - q);

		if (n >= key_len && memcmp(q, key, key_len) == 0 &&
		    (n == key_len || q[key_len] == '=')) {
			if ((*count)++ == 0) {
				found = n == key_len ? stop : q + key_len + 1;
				*value_len = (size_t)(stop - found);
			}
		}
		q = stop + (amp != NULL);
	}
	return found;
}

static bool param_is(const char *p, size_t n, const char *key)
{
	size_t k = strlen(key);

	return n >= k && memcmp(p, key, k) == 0 && (n == k || p[k] == '=');
}

/* Appends s[0..len) percent-encoded (all but RFC 3986 unreserved characters). */
static bool append_encoded(char *out, size_t *len, size_t cap, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';

		if (*len + 3 >= cap)
			return false;
		if (plain) {
			out[(*len)++] = (char)c;
		} else {
			out[(*len)++] = '%';
			out[(*len)++] = hex[c >> 4];
			out[(*len)++] = hex[c & 15];
		}
	}
	return true;
}

/*
 * The click's beacon: the request's native fields, but for u (the target, which becomes
 * the event's url, so the UTM tags and click IDs of a tagged link are read from it), url
 * and e (a click is e=ev), and en=click unless the link names the event.
 */
static bool click_query(const struct http_request *req, const char *target, size_t target_len,
                        char *out, size_t cap, size_t *out_len)
{
	const char *q = req->query, *end = q + req->query_len;
	size_t len = 0, n;
	size_t en_count;
	bool named = query_param(q, req->query_len, "en", &n, &en_count) != NULL && n > 0;

	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;

		n = (size_t)(stop - q);
		if (n && !param_is(q, n, "u") && !param_is(q, n, "url") && !param_is(q, n, "e")) {
			if (len + n + 1 >= cap)
				return false;
			memcpy(out + len, q, n);
			len += n;
			out[len++] = '&';
		}
		q = stop + (amp != NULL);
	}
	n = (size_t)snprintf(out + len, cap - len, "e=ev%s&url=", named ? "" : "&en=click");
	if (n >= cap - len)
		return false;
	len += n;
	if (!append_encoded(out, &len, cap, target, target_len))
		return false;
	*out_len = len;
	return true;
}

static void redirect_refuse(struct ingest *ix, struct http_conn *conn,
                            const struct http_request *req, int status, int code,
                            const char *reason, const char *headers, size_t headers_len)
{
	metrics_add(METRIC_REDIRECTS_REFUSED, 1);
	if (code)
		pipeline_dead_letter(ix->pl, req->received_at_ms, pipeline_reason_class(code),
		                     reason, PROTOCOL_NATIVE, req->peer_ip, req->query,
		                     req->query_len);
	respond_text(conn, status, reason, headers, headers_len);
}

/* The URL is at most http.max_url_bytes (<= 8192): the target and the click's beacon fit. */
#define REDIRECT_TARGET_MAX 8192
#define CLICK_QUERY_MAX     (3 * REDIRECT_TARGET_MAX + 64)

static void handle_redirect(struct ingest *ix, struct http_conn *conn,
                            const struct http_request *req)
{
	const struct config *cfg = ix->cfg;
	struct batch *tb = &batch_storage;
	static _Thread_local char target[REDIRECT_TARGET_MAX + 1];
	static _Thread_local char query[CLICK_QUERY_MAX];
	char headers[2048 + REDIRECT_TARGET_MAX];
	char ip[64], err[160];
	size_t headers_len = 0, raw_len, count, target_len, query_len;
	const char *raw;
	int rc;

	if (req->method != HTTP_REQ_GET) {
		respond_text(conn, 405, "method not allowed", "Allow: GET\r\n", 12);
		return;
	}
	if (cfg->redirect_allow_count == 0) {
		redirect_refuse(ix, conn, req, 403, 0,
		                "click redirects are off (http.redirect_allow is empty)", NULL, 0);
		return;
	}
	raw = query_param(req->query, req->query_len, "u", &raw_len, &count);
	if (!raw || raw_len == 0 || count > 1) {
		redirect_refuse(ix, conn, req, 400, -EINVAL,
		                count > 1 ? "redirect target u given more than once"
		                          : "no redirect target u in request",
		                NULL, 0);
		return;
	}
	rc = url_decode(raw, raw_len, target, sizeof(target) - 1, false, &target_len);
	if (rc == 0)
		rc = redirect_target_check(target, target_len, cfg->redirect_allow,
		                           cfg->redirect_allow_count, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "redirect target u is not percent-encoded UTF-8");
	if (rc < 0) {
		redirect_refuse(ix, conn, req, 400, rc == -EPERM ? -EINVAL : rc, err, NULL, 0);
		return;
	}
	if (!click_query(req, target, target_len, query, sizeof(query), &query_len)) {
		redirect_refuse(ix, conn, req, 414, -E2BIG, "click beacon too long", NULL, 0);
		return;
	}
	batch_init(tb, ix, req, ip, sizeof(ip));
	decode_query_beacon(tb, query, query_len);
	batch_settle(tb);
	if (tb->full || tb->accepted == 0) { /* 503 with Retry-After, or 400 with the reason */
		if (!tb->full)
			metrics_add(METRIC_REDIRECTS_REFUSED, 1);
		respond_batch(ix, conn, req, tb, false, headers, headers_len, sizeof(headers));
		return;
	}
	if (tb->set_cookie)
		headers_len += cookie_header(cfg, tb, headers, sizeof(headers));
	/* The target is printable ASCII without CR or LF (redirect_target_check). */
	headers_len += (size_t)snprintf(headers + headers_len, sizeof(headers) - headers_len,
	                                "Location: %.*s\r\n", (int)target_len, target);
	metrics_add(METRIC_REDIRECTS, 1);
	respond(conn, 302, NULL, NULL, 0, headers, headers_len);
}

/* ---- routing ---- */

/* The paths the router serves as they are, and the route prefixes (Segment's /v1/<type>,
 * which route_of checks). */
static const char *const exact_routes[] = {
    "/collect",
    "/pixel.gif",
    "/r",
    "/healthz",
    "/health",
    "/i",
    "/ice.png",
    "/v1/m",
    "/g/collect",
    "/mp/collect",
    "/beacon/v1/batch",
    "/com.snowplowanalytics.snowplow/tp2",
};
static const char *const route_prefixes[] = {"/v1"};

enum path_route_kind ingest_route_kind(const char *path, size_t len)
{
	struct http_request probe = {.path = path, .path_len = len};
	struct route r;
	const char *const *lists[2] = {exact_routes, route_prefixes};
	const size_t counts[2] = {sizeof(exact_routes) / sizeof(exact_routes[0]),
	                          sizeof(route_prefixes) / sizeof(route_prefixes[0])};

	for (size_t i = 0; i < counts[0]; i++)
		if (path_is(&probe, exact_routes[i]))
			return PATH_ROUTE;
	if (route_of(&probe, &r))
		return PATH_ROUTE;
	for (size_t i = 0; i < counts[1]; i++)
		if (path_is(&probe, route_prefixes[i]))
			return PATH_ROUTE_PREFIX;
	for (size_t l = 0; l < 2; l++)
		for (size_t i = 0; i < counts[l]; i++) {
			const char *route = lists[l][i];

			if (len > 0 && strlen(route) > len && memcmp(route, path, len) == 0 &&
			    (route[len] == '/' || path[len - 1] == '/'))
				return PATH_ROUTE_PARENT;
		}
	return PATH_NO_ROUTE;
}

enum content_coding { CODING_IDENTITY, CODING_GZIP, CODING_UNSUPPORTED };

/* Content-Encoding: absent or identity, gzip (x-gzip), or anything else (br, deflate,
 * compress, gzip twice, the header repeated). */
static enum content_coding content_coding_of(const struct http_header_value *h)
{
	const char *p = h->value, *end;
	int gzip = 0;

	if (!p)
		return CODING_IDENTITY;
	if (h->repeated)
		return CODING_UNSUPPORTED;
	end = p + h->len;
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *t = p;
		size_t n = (size_t)((comma ? comma : end) - p);

		trim(&t, &n);
#define TOKEN_IS(s) (n == sizeof(s) - 1 && strncasecmp(t, s, n) == 0)
		if (TOKEN_IS("gzip") || TOKEN_IS("x-gzip"))
			gzip++;
		else if (n && !TOKEN_IS("identity"))
			return CODING_UNSUPPORTED;
#undef TOKEN_IS
		p = comma ? comma + 1 : end;
	}
	return gzip > 1 ? CODING_UNSUPPORTED : gzip ? CODING_GZIP : CODING_IDENTITY;
}

/*
 * A POST body with Content-Encoding: gzip, decompressed into *owned (the caller frees it
 * once the request is answered: the decoders copy what they keep into events) and *out
 * made the request with that body. Returns false when it answered the request itself: 415
 * for a coding other than gzip, 413 for a body past http.max_body_bytes or
 * http.gzip_max_ratio once decompressed, 400 for one that is not gzip; each with a dead
 * letter of the request's protocol.
 */
static bool body_decoded(struct ingest *ix, struct http_conn *conn, const struct http_request *req,
                         const char *protocol, struct http_request *out, char **owned)
{
	const struct config *cfg = ix->cfg;
	char headers[1024], err[160];
	size_t headers_len, len = 0;
	enum content_coding coding = content_coding_of(&req->content_encoding);
	int rc, status;

	*owned = NULL;
	if (coding == CODING_IDENTITY)
		return true;
	if (coding == CODING_GZIP) {
		rc = gunzip_body(req->body ? req->body : "", req->body_len,
		                 (size_t)cfg->http_max_body_bytes,
		                 (unsigned)cfg->http_gzip_max_ratio, owned, &len, err, sizeof(err));
		if (rc == 0) {
			metrics_add(METRIC_HTTP_GZIP_BODIES, 1);
			*out = *req;
			out->body = *owned;
			out->body_len = len;
			out->content_encoding = (struct http_header_value){0};
			return true;
		}
	} else {
		rc = -ENOTSUP;
		snprintf(err, sizeof(err), "unsupported Content-Encoding (gzip or identity only)");
	}
	status = rc == -ENOTSUP                    ? 415
	         : rc == -EMSGSIZE || rc == -E2BIG ? 413
	         : rc == -ENOMEM                   ? 503
	                                           : 400;
	pipeline_dead_letter(ix->pl, req->received_at_ms,
	                     pipeline_reason_class(rc == -EBADMSG ? -EINVAL : rc), err, protocol,
	                     req->peer_ip, req->body, req->body_len);
	headers_len = cors_headers(cfg, req, false, headers, sizeof(headers));
	if (status == 503) {
		int w = snprintf(headers + headers_len, sizeof(headers) - headers_len,
		                 "Retry-After: %lld\r\n", (long long)cfg->http_retry_after_s);
		if (w > 0 && (size_t)w < sizeof(headers) - headers_len)
			headers_len += (size_t)w;
	}
	respond_text(conn, status, err, headers, headers_len);
	return false;
}

/* The route path of a request: http.path_aliases applied (into buf, cap bytes). */
static const struct http_request *aliased(const struct config *cfg, const struct http_request *req,
                                          struct http_request *copy, char *buf, size_t cap)
{
	size_t len;

	if (cfg->path_alias_count == 0 ||
	    !path_alias_resolve(cfg->path_aliases, cfg->path_alias_count, req->path, req->path_len,
	                        buf, cap, &len))
		return req;
	*copy = *req;
	copy->path = buf;
	copy->path_len = len;
	return copy;
}

#define ALIASED_PATH_MAX (8192 + PATH_ALIAS_MAX_BYTES)

void ingest_http_handle(void *ud, struct http_conn *conn, const struct http_request *in)
{
	struct ingest *ix = ud;
	struct route route;
	struct http_request alias_copy, decoded;
	char path[ALIASED_PATH_MAX];
	char *owned = NULL;
	const struct http_request *req = aliased(ix->cfg, in, &alias_copy, path, sizeof(path));
	bool collect = path_is(req, "/collect"), protocol = !collect && route_of(req, &route);

	/* A body is decoded for the routes that take a POST. */
	if (req->method == HTTP_REQ_POST &&
	    (collect || (protocol && route.kind != ROUTE_SNOWPLOW_GET))) {
		const char *name = collect ? PROTOCOL_NATIVE : event_protocol_name(route.protocol);

		if (!body_decoded(ix, conn, req, name, &decoded, &owned))
			return;
		if (owned)
			req = &decoded;
	}
	if (collect) {
		handle_collect(ix, conn, req, false);
	} else if (path_is(req, "/pixel.gif")) {
		handle_collect(ix, conn, req, true);
	} else if (protocol) {
		handle_protocol(ix, conn, req, &route);
	} else if (path_is(req, "/r")) {
		handle_redirect(ix, conn, req);
	} else if (path_is(req, "/healthz") || path_is(req, "/health")) {
		if (req->method == HTTP_REQ_GET || req->method == HTTP_REQ_HEAD)
			respond_text(conn, 200, "ok", NULL, 0);
		else
			respond_text(conn, 405, "method not allowed", "Allow: GET, HEAD\r\n", 18);
	} else {
		respond_text(conn, 404, "not found", NULL, 0);
	}
	free(owned); /* the answer is queued; nothing points into the body any more */
}

void ingest_http_reject(void *ud, int status, const char *reason, const char *peer_ip,
                        const char *payload, size_t payload_len, size_t target_len)
{
	struct ingest *ix = ud;
	struct timespec ts;
	enum metrics_dead_letter_reason cls = status == 413 || status == 414 || status == 431
	                                          ? METRICS_DL_TOO_LARGE
	                                          : METRICS_DL_MALFORMED;

	struct http_request target;
	struct route route;
	const char *protocol = PROTOCOL_NATIVE;

	/* The request target's path says which protocol the refused request spoke. */
	memset(&target, 0, sizeof(target));
	target.path = payload;
	while (payload != NULL && target.path_len < target_len && payload[target.path_len] != '?')
		target.path_len++;
	if (target.path_len > 0 && payload[0] == '/') {
		struct http_request copy;
		char path[ALIASED_PATH_MAX];
		const struct http_request *t = aliased(ix->cfg, &target, &copy, path, sizeof(path));

		if (route_of(t, &route))
			protocol = event_protocol_name(route.protocol);
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	pipeline_dead_letter(ix->pl, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, cls, reason,
	                     protocol, peer_ip, payload, payload_len);
}
