/*
 * ingest_http.c - the collect listener's handler: routes, CORS, the visitor cookie, the
 * client IP, and turning a request (query, form/text lines, JSON) into beacons for the
 * pipeline. Runs on its ingest loop; per request it allocates nothing (events are built
 * in the ingest's scratch event, records in the pipeline's buffer).
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

#include "clickd/ack.h"
#include "clickd/log.h"
#include "clickd/net.h"

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
	size_t full; /* beacons refused: a ring was full (all of the batch then) */
	bool set_cookie;
	char visitor_id[VISITOR_ID_MAX + 1];
	size_t visitor_id_len;
	int first_code;
	char first_reason[160];
	struct event ev; /* scratch: one beacon at a time */
};

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
	if (!list || !config_is_trusted_proxy(cfg, (const struct sockaddr *)req->peer))
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

/* Appends the CORS headers for an allowed Origin (echoed, never *). */
static size_t cors_headers(const struct config *cfg, const struct http_request *req, bool preflight,
                           char *out, size_t cap)
{
	size_t n = 0;
	int w;

	if (!req->origin || req->origin_len == 0 || req->origin_len > 255 ||
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
	                     PROTOCOL_NATIVE, b->req ? b->req->peer_ip : NULL, payload,
	                     payload_len);
}

/* A request's beacons are taken all or nothing (pipeline.h): once one did not fit, the
 * rest are only counted, and batch_settle gives back what was claimed. */
static int submit(struct batch *b, struct event *ev)
{
	if (b->full == 0 && pipeline_submit(b->ix->pl, ev) == 0) {
		b->accepted++;
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
		return;
	}
	pipeline_abort(b->ix->pl);
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
	b->accepted = b->rejected = b->full = 0;
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
		note_reject(tb, -E2BIG, "more beacons than limits.max_batch", body, req->body_len);
		respond_text(conn, 413, "more beacons than limits.max_batch", headers, headers_len);
		return true;
	}
	if (kind == BODY_LINES) {
		decode_lines(tb, body, req->body_len);
	} else {
		int rc = beacon_decode_json(body, req->body_len, &tb->br, &ix->beacon, emit_json,
		                            reject_json, tb, err, sizeof(err));
		if (rc == -E2BIG) {
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
	/* One scratch batch per loop thread (it holds an 8 KiB event): used only inside
	 * this call, never kept. */
	static _Thread_local struct batch storage;
	struct batch *tb = &storage;
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

void ingest_http_handle(void *ud, struct http_conn *conn, const struct http_request *req)
{
	struct ingest *ix = ud;

	if (path_is(req, "/collect")) {
		handle_collect(ix, conn, req, false);
	} else if (path_is(req, "/pixel.gif")) {
		handle_collect(ix, conn, req, true);
	} else if (path_is(req, "/healthz")) {
		if (req->method == HTTP_REQ_GET || req->method == HTTP_REQ_HEAD)
			respond_text(conn, 200, "ok", NULL, 0);
		else
			respond_text(conn, 405, "method not allowed", "Allow: GET, HEAD\r\n", 18);
	} else {
		respond_text(conn, 404, "not found", NULL, 0);
	}
}

void ingest_http_reject(void *ud, int status, const char *reason, const char *peer_ip,
                        const char *payload, size_t payload_len)
{
	struct ingest *ix = ud;
	struct timespec ts;
	enum metrics_dead_letter_reason cls = status == 413 || status == 414 || status == 431
	                                          ? METRICS_DL_TOO_LARGE
	                                          : METRICS_DL_MALFORMED;

	clock_gettime(CLOCK_REALTIME, &ts);
	pipeline_dead_letter(ix->pl, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, cls, reason,
	                     PROTOCOL_NATIVE, peer_ip, payload, payload_len);
}
