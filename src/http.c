/*
 * http.c - HTTP/1.1 server on libuv + http-parser (see http.h for the contract).
 *
 * Two parts: the request parser (struct http_reqparser: bytes in, complete requests or an
 * error with its status out; no sockets, so the fuzzer drives it), and the connections
 * that feed it what they read and answer what it completes.
 *
 * Runs on one loop thread and owns its connections. Invariants:
 * - a connection's answers leave in request order: requests are handled synchronously as
 *   the parser completes them, appended to out[fill], and out[fill] is sent after each
 *   read (pipelined answers batch into one syscall): with uv_try_write, and with uv_write
 *   only for what the socket did not take (see conn_send);
 * - at most one uv_write per connection is in flight, and nothing is sent while it is
 *   (the next answers wait in the other buffer); reading pauses while more than
 *   OUT_PAUSE_BYTES wait, so a client that pipelines without reading cannot grow memory,
 *   and a write that still waits when the idle timer fires ends the connection, so such a
 *   client cannot hold it (and its buffers) for ever either;
 * - a deferred answer (http_defer, kafka.ack_mode=kafka) keeps its place: while one waits,
 *   the answers to later requests (and a 100 Continue) are appended to its `after` buffer
 *   instead of out[fill]; when the oldest deferred answer is given, it and its `after`
 *   move to out[fill], and so on down the queue. So answers still leave in request order.
 *   The queue is a ring of entries per connection, grown by doubling and reused (no
 *   allocation once warm); at most limits.max_deferred entries before reading pauses, plus
 *   the requests of the read that reached it. A connection that closes with deferred
 *   answers hands each one's tag to the server's cancel callback, so that the handler
 *   forgets it (the connection is freed later, from its close callbacks);
 * - memory is freed only from close callbacks (both the tcp and the timer handle);
 * - the idle timer restarts when a request begins or completes, never on a mere read: a
 *   request has http.idle_timeout_ms from its first byte to its last.
 */
#include "clickd/http.h"

#include "clickd/log.h"
#include "clickd/metrics.h"
#include "clickd/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* listen(2) backlog: the same as net_listen_tcp's and the socket units' Backlog=, since
 * uv_listen calls listen again on a socket passed by systemd. */
#define HTTP_LISTEN_BACKLOG 4096
#define REQ_INITIAL_BYTES   4096
#define OUT_INITIAL_BYTES   1024
#define OUT_PAUSE_BYTES     (1024 * 1024)
#define READ_BUFFER_BYTES   65536
/* After an error answer, how long unread request bytes are read and dropped before the
 * close (nginx's lingering close): closing with unread data makes the kernel send a reset
 * that can destroy the answer before the client reads it. */
#define LINGER_MS 2000

/* The headers clickd reads; everything else is counted against the limit and skipped. */
enum header_id {
	HDR_ORIGIN,
	HDR_CONTENT_TYPE,
	HDR_COOKIE,
	HDR_USER_AGENT,
	HDR_FORWARDED_FOR,
	HDR_CORS_REQUEST_HEADERS,
	HDR_SEC_GPC,
	HDR_DNT,
	HDR_EXPECT,
	HDR_AUTHORIZATION,
	HDR_SP_ANONYMOUS,
	HDR_CONTENT_ENCODING,
	HDR_X_REAL_IP, /* HDR_X_REAL_IP + enum http_ip_header: the single-address IP headers */
	HDR_CF_CONNECTING_IP,
	HDR_TRUE_CLIENT_IP,
	HDR_FASTLY_CLIENT_IP,
	HDR__COUNT,
	HDR_NONE = -1
};

_Static_assert(HDR__COUNT == HTTP_REQPARSER_HEADERS, "http.h sizes the header table");
_Static_assert(HDR_FASTLY_CLIENT_IP - HDR_X_REAL_IP == HTTP_IP_FASTLY_CLIENT_IP,
               "the IP headers follow enum http_ip_header");

static const char *const header_names[HDR__COUNT] = {
    [HDR_ORIGIN] = "origin",
    [HDR_CONTENT_TYPE] = "content-type",
    [HDR_COOKIE] = "cookie",
    [HDR_USER_AGENT] = "user-agent",
    [HDR_FORWARDED_FOR] = "x-forwarded-for",
    [HDR_CORS_REQUEST_HEADERS] = "access-control-request-headers",
    [HDR_SEC_GPC] = "sec-gpc",
    [HDR_DNT] = "dnt",
    [HDR_EXPECT] = "expect",
    [HDR_AUTHORIZATION] = "authorization",
    [HDR_SP_ANONYMOUS] = "sp-anonymous",
    [HDR_CONTENT_ENCODING] = "content-encoding",
    [HDR_X_REAL_IP] = "x-real-ip",
    [HDR_CF_CONNECTING_IP] = "cf-connecting-ip",
    [HDR_TRUE_CLIENT_IP] = "true-client-ip",
    [HDR_FASTLY_CLIENT_IP] = "fastly-client-ip",
};

struct outbuf {
	char *data;
	size_t len;
	size_t cap;
};

/* A deferred answer and the immediate answers queued behind it (see the top). */
struct deferred {
	uint64_t tag;                /* the handler's, for the cancel callback */
	uint64_t read_ns;            /* uv_hrtime of the read that completed its request */
	enum http_req_method method; /* of its request (HEAD: no body) */
	bool ready;                  /* answered, waiting for those before it */
	struct outbuf answer;        /* its extra headers, then (ready) its whole answer */
	struct outbuf after;         /* answers to later requests, up to the next deferred one */
};

struct http_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t write_req;
	uv_shutdown_t shutdown_req;
	struct http_server *srv;
	struct http_conn *prev, *next;
	struct http_reqparser rp;
	struct sockaddr_storage peer;
	char peer_ip[64];
	enum http_req_method method; /* of the request being answered (HEAD: no body) */
	int64_t received_at_ms;
	uint64_t answers; /* queued so far: on_read times the ones of each read */

	struct outbuf out[2];
	int fill; /* index of the buffer being filled; the other may be in flight */
	/* Deferred answers, oldest first: a ring of deferred_cap entries (owned, with their
	 * buffers, reused), deferred_count from deferred_head; the oldest has handle
	 * deferred_seq. deferred_bytes: the bytes of their buffers. */
	struct deferred *deferred;
	uint32_t deferred_cap, deferred_head, deferred_count;
	uint64_t deferred_seq;
	size_t deferred_bytes;
	bool writing;
	bool close_after_write;
	bool linger; /* close with a lingering read (after an error answer) */
	bool lingering;
	bool closing;
	bool reading;
	int open_handles;
};

struct http_server {
	uv_tcp_t listener;
	uv_timer_t drain_timer;
	uv_loop_t *loop;
	char name[16];
	struct http_limits limits;
	http_handler_fn handler;
	http_reject_fn reject;
	http_cancel_fn cancel;
	void *ud;
	struct http_conn *conns;
	size_t open;
	bool closing;
	int open_handles;
	void (*done)(void *arg);
	void *done_arg;
	char read_buffer[READ_BUFFER_BYTES];
	bool read_buffer_busy;
};

static void conn_close(struct http_conn *c);
static void conn_linger(struct http_conn *c);
static void on_server_handle_closed(uv_handle_t *h);
static void on_idle_timeout(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_flush(struct http_conn *c);
static void server_maybe_done(struct http_server *srv);

static int64_t wall_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 302:
		return "Found";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 411:
		return "Length Required";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	}
	return "Unknown";
}

/* ---- buffers ---- */

static int grow(char **buf, size_t *cap, size_t need, size_t initial)
{
	size_t n = *cap ? *cap : initial;
	char *p;
	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*buf, n);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = n;
	return 0;
}

static int out_append(struct outbuf *o, const char *data, size_t len)
{
	if (len == 0)
		return 0; /* data may be NULL (an empty buffer never grown) */
	if (grow(&o->data, &o->cap, o->len + len, OUT_INITIAL_BYTES) < 0)
		return -ENOMEM;
	memcpy(o->data + o->len, data, len);
	o->len += len;
	return 0;
}

/* ---- the request parser (no sockets; see http.h) ----
 *
 * http-parser calls back with pieces of the request, possibly split anywhere across
 * feeds. The parser keeps, in its one buffer and in arrival order, the URL, the values of
 * the headers clickd reads (by offset and length) and the body, and counts every header
 * byte against max_header_bytes whether it is kept or not. A limit broken in a callback
 * sets error_status and returns -1, which makes http-parser stop at once. Every limit
 * depends only on the bytes, never on where they were split (the fuzzer checks this).
 */

/* What the last header callback read. http-parser may hand a name or a value over in
 * several pieces, some of them empty (a feed that ends right before the ':'). */
enum { PIECE_NONE, PIECE_NAME, PIECE_VALUE };

static size_t rp_buffer_limit(const struct http_reqparser *p)
{
	return p->limits.max_url_bytes + p->limits.max_header_bytes + p->limits.max_body_bytes;
}

static int rp_fail(struct http_reqparser *p, int status, const char *reason)
{
	p->error_status = status;
	p->error_reason = reason;
	return -1;
}

/* Appends to the buffer; -E2BIG past the sum of the limits, -ENOMEM. */
static int rp_append(struct http_reqparser *p, const char *data, size_t len)
{
	if (p->len + len > rp_buffer_limit(p))
		return -E2BIG;
	if (grow(&p->buf, &p->cap, p->len + len, REQ_INITIAL_BYTES) < 0)
		return -ENOMEM;
	memcpy(p->buf + p->len, data, len);
	p->len += len;
	return 0;
}

static int rp_append_failed(struct http_reqparser *p, int rc)
{
	return rc == -ENOMEM ? rp_fail(p, 503, "out of memory")
	                     : rp_fail(p, 431, "request headers longer than http.max_header_bytes");
}

static int on_message_begin(http_parser *hp)
{
	struct http_reqparser *p = hp->data;
	p->len = 0;
	p->url_len = 0;
	p->header_bytes = 0;
	p->header_count = 0;
	memset(p->headers, 0, sizeof(p->headers));
	p->field_len = 0;
	p->cur_header = HDR_NONE;
	p->piece = PIECE_NONE;
	p->headers_done = false;
	p->body_off = p->body_len = 0;
	p->body_started = false;
	p->in_message = true;
	p->method = HTTP_REQ_OTHER;
	p->progress++;
	return 0;
}

static enum http_req_method method_of(unsigned m)
{
	switch (m) {
	case HTTP_GET:
		return HTTP_REQ_GET;
	case HTTP_HEAD:
		return HTTP_REQ_HEAD;
	case HTTP_POST:
		return HTTP_REQ_POST;
	case HTTP_OPTIONS:
		return HTTP_REQ_OPTIONS;
	}
	return HTTP_REQ_OTHER;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
	struct http_reqparser *p = hp->data;
	p->method = method_of(hp->method); /* known once the target starts */
	if (p->url_len + len > p->limits.max_url_bytes) {
		/* Keep what fits, so that the dead letter shows the start of the target. */
		if (rp_append(p, at, p->limits.max_url_bytes - p->url_len) == 0)
			p->url_len = p->limits.max_url_bytes;
		return rp_fail(p, 414, "request target longer than http.max_url_bytes");
	}
	/* The target counts toward the header bytes too (the request line is a header). */
	if (p->header_bytes + len > p->limits.max_header_bytes)
		return rp_fail(p, 431, "request headers longer than http.max_header_bytes");
	if (rp_append(p, at, len) < 0)
		return rp_fail(p, 503, "out of memory");
	p->url_len += len;
	p->header_bytes += len;
	return 0;
}

/* Counts a piece of a header name or value; `first` adds the ": " or CRLF around it once
 * per name or value, however it was split. */
static int count_header_bytes(struct http_reqparser *p, size_t len, bool first)
{
	p->header_bytes += len + (first ? 2 : 0);
	if (p->header_bytes > p->limits.max_header_bytes)
		return rp_fail(p, 431, "request headers longer than http.max_header_bytes");
	return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
	struct http_reqparser *p = hp->data;
	bool first = p->piece != PIECE_NAME;
	/* The count before the bytes: a name's first piece may be a byte or all of it, and
	 * the answer must not depend on that (found by fuzz_http). */
	if (first && ++p->header_count > p->limits.max_headers)
		return rp_fail(p, 431, "more header fields than http.max_headers");
	if (count_header_bytes(p, len, first) < 0)
		return -1;
	if (first) {
		p->field_len = 0;
		p->piece = PIECE_NAME;
	}
	if (p->field_len + len < sizeof(p->field)) {
		memcpy(p->field + p->field_len, at, len);
		p->field_len += len;
	} else {
		p->field_len = sizeof(p->field); /* too long to be one of ours */
	}
	return 0;
}

const char *http_ip_header_name(enum http_ip_header h)
{
	return (unsigned)h < HTTP_IP_HEADER__COUNT ? header_names[HDR_X_REAL_IP + h] : "?";
}

static int header_lookup(const char *name, size_t len)
{
	for (int i = 0; i < HDR__COUNT; i++)
		if (strlen(header_names[i]) == len && strncasecmp(header_names[i], name, len) == 0)
			return i;
	return HDR_NONE;
}

/*
 * A repeated X-Forwarded-For continues the list (one field per hop is the same as one
 * line joined with commas, RFC 9110 5.3): a proxy may add its own line at the end, and
 * the right-most hops are the ones to believe. The list must stay one span of the buffer:
 * when another kept header was stored after it, the list so far is first copied to the
 * end (the old copy is dead space; every other kept header is stored once, so this
 * happens at most HDR__COUNT - 1 times per request).
 */
static int forwarded_for_continue(struct http_reqparser *p, struct http_reqparser_span *s)
{
	int rc;
	if (s->off + s->len != p->len) {
		size_t off = p->len;
		if (p->len + s->len > rp_buffer_limit(p))
			return rp_append_failed(p, -E2BIG);
		if (grow(&p->buf, &p->cap, p->len + s->len, REQ_INITIAL_BYTES) < 0)
			return rp_append_failed(p, -ENOMEM);
		memcpy(p->buf + off, p->buf + s->off, s->len);
		p->len += s->len;
		s->off = (uint32_t)off;
	}
	if ((rc = rp_append(p, ",", 1)) < 0)
		return rp_append_failed(p, rc);
	s->len++;
	return 0;
}

/* The first piece of a header value: decides whether (and where) it is kept. */
static int header_value_begins(struct http_reqparser *p)
{
	struct http_reqparser_span *s;

	p->piece = PIECE_VALUE;
	p->cur_header = HDR_NONE;
	/* Fields after the body are chunked trailers: the client writes them after anything
	 * its proxies added, so none of them is believed. */
	if (p->headers_done || p->field_len >= sizeof(p->field))
		return 0;
	p->cur_header = header_lookup(p->field, p->field_len);
	if (p->cur_header == HDR_NONE)
		return 0;
	s = &p->headers[p->cur_header];
	if (!s->seen) {
		s->seen = true;
		s->off = (uint32_t)p->len;
		s->len = 0;
		return 0;
	}
	if (p->cur_header == HDR_FORWARDED_FOR)
		return forwarded_for_continue(p, s);
	s->repeated = true;
	p->cur_header = HDR_NONE; /* any other repeated header: the first one wins */
	return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
	struct http_reqparser *p = hp->data;
	bool first = p->piece != PIECE_VALUE;
	int rc;

	if (count_header_bytes(p, len, first) < 0)
		return -1;
	if (first && header_value_begins(p) < 0)
		return -1;
	if (p->cur_header == HDR_NONE)
		return 0;
	/* The pieces of one value arrive one after the other with nothing stored between
	 * them, so the span grows in place. */
	if ((rc = rp_append(p, at, len)) < 0)
		return rp_append_failed(p, rc);
	p->headers[p->cur_header].len += (uint32_t)len;
	return 0;
}

static bool header_is(const struct http_reqparser *p, enum header_id h, const char *value)
{
	const struct http_reqparser_span *s = &p->headers[h];
	size_t n = strlen(value);
	return s->seen && s->len == n && strncasecmp(p->buf + s->off, value, n) == 0;
}

static int on_headers_complete(http_parser *hp)
{
	struct http_reqparser *p = hp->data;
	p->headers_done = true;
	if (hp->content_length != ULLONG_MAX && hp->content_length > p->limits.max_body_bytes)
		return rp_fail(p, 413, "request body longer than http.max_body_bytes");
	if (header_is(p, HDR_EXPECT, "100-continue") && p->on_continue)
		p->on_continue(p->ud);
	return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
	struct http_reqparser *p = hp->data;
	if (!p->body_started) {
		p->body_started = true;
		p->body_off = p->len;
	}
	if (p->body_len + len > p->limits.max_body_bytes)
		return rp_fail(p, 413, "request body longer than http.max_body_bytes");
	if (rp_append(p, at, len) < 0)
		return rp_fail(p, 503, "out of memory");
	p->body_len += len;
	return 0;
}

static void header_out(const struct http_reqparser *p, enum header_id h, const char **ptr,
                       size_t *len)
{
	const struct http_reqparser_span *s = &p->headers[h];
	*ptr = s->seen ? p->buf + s->off : NULL;
	*len = s->seen ? s->len : 0;
}

static int on_message_complete(http_parser *hp)
{
	struct http_reqparser *p = hp->data;
	struct http_request *r = &p->req;
	const char *target = p->buf, *q;

	p->in_message = false;
	p->progress++;
	/* http-parser completes an Upgrade (or CONNECT) request and then stops: what follows
	 * would be another protocol. Refuse it before anyone answers it. */
	if (hp->upgrade)
		return rp_fail(p, 400, "protocol upgrade not supported");
	memset(r, 0, sizeof(*r));
	r->method = method_of(hp->method);
	q = memchr(target, '?', p->url_len);
	r->path = target;
	r->path_len = q ? (size_t)(q - target) : p->url_len;
	if (q) {
		r->query = q + 1;
		r->query_len = p->url_len - r->path_len - 1;
	}
	/* An absolute-form target ("http://host/collect?...") is answered by path. */
	if (r->path_len > 7 &&
	    (strncasecmp(r->path, "http://", 7) == 0 || strncasecmp(r->path, "https://", 8) == 0)) {
		const char *slash = memchr(r->path + 8, '/', r->path_len - 8);
		size_t cut = slash ? (size_t)(slash - r->path) : r->path_len;
		r->path += cut;
		r->path_len -= cut;
	}
	r->body = p->body_len ? p->buf + p->body_off : NULL;
	r->body_len = p->body_len;
	header_out(p, HDR_ORIGIN, &r->origin, &r->origin_len);
	header_out(p, HDR_CONTENT_TYPE, &r->content_type, &r->content_type_len);
	header_out(p, HDR_COOKIE, &r->cookie, &r->cookie_len);
	header_out(p, HDR_USER_AGENT, &r->user_agent, &r->user_agent_len);
	header_out(p, HDR_FORWARDED_FOR, &r->forwarded_for, &r->forwarded_for_len);
	header_out(p, HDR_CORS_REQUEST_HEADERS, &r->cors_request_headers,
	           &r->cors_request_headers_len);
	header_out(p, HDR_AUTHORIZATION, &r->authorization, &r->authorization_len);
	header_out(p, HDR_CONTENT_ENCODING, &r->content_encoding.value, &r->content_encoding.len);
	r->content_encoding.repeated = p->headers[HDR_CONTENT_ENCODING].repeated;
	for (int i = 0; i < HTTP_IP_HEADER__COUNT; i++) {
		struct http_header_value *v = &r->ip_headers[i];

		header_out(p, (enum header_id)(HDR_X_REAL_IP + i), &v->value, &v->len);
		v->repeated = p->headers[HDR_X_REAL_IP + i].repeated;
	}
	r->gpc = header_is(p, HDR_SEC_GPC, "1") || header_is(p, HDR_DNT, "1");
	r->sp_anonymous = p->headers[HDR_SP_ANONYMOUS].seen;
	r->keep_alive = http_should_keep_alive(hp) != 0;
	if (p->on_request(p->ud, r) != 0) {
		p->result = HTTP_REQPARSER_STOPPED;
		return -1; /* the rest is not parsed */
	}
	return 0;
}

static const http_parser_settings reqparser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void http_reqparser_init(struct http_reqparser *p, const struct http_reqparser_limits *limits,
                         http_reqparser_request_fn on_request,
                         http_reqparser_continue_fn on_continue, void *ud)
{
	memset(p, 0, sizeof(*p));
	http_parser_init(&p->parser, HTTP_REQUEST);
	p->parser.data = p;
	p->limits = *limits;
	p->on_request = on_request;
	p->on_continue = on_continue;
	p->ud = ud;
	p->cur_header = HDR_NONE;
	p->method = HTTP_REQ_OTHER;
}

int http_reqparser_feed(struct http_reqparser *p, const char *data, size_t len)
{
	enum http_errno e;

	if (p->result != 0 || len == 0)
		return p->result;
	p->error_status = 0;
	http_parser_execute(&p->parser, &reqparser_settings, data, len);
	if (p->result == HTTP_REQPARSER_STOPPED)
		return p->result;
	if (p->error_status) {
		/* A limit: the payload is what was kept of the request. */
		p->error_payload = p->buf;
		p->error_payload_len = p->len;
		p->result = HTTP_REQPARSER_ERROR;
		return p->result;
	}
	e = HTTP_PARSER_ERRNO(&p->parser);
	if (e == HPE_OK)
		return 0;
	p->error_status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
	snprintf(p->error_text, sizeof(p->error_text), "malformed HTTP: %s",
	         http_errno_description(e));
	p->error_reason = p->error_text;
	p->error_payload = data;
	p->error_payload_len = len;
	p->result = HTTP_REQPARSER_ERROR;
	return p->result;
}

void http_reqparser_error(const struct http_reqparser *p, struct http_reqparser_error *out)
{
	out->status = p->error_status;
	out->reason = p->error_reason ? p->error_reason : "";
	out->payload = p->error_payload;
	out->payload_len = p->error_payload_len;
}

bool http_reqparser_in_message(const struct http_reqparser *p)
{
	return p->in_message;
}

void http_reqparser_partial(const struct http_reqparser *p, const char **data, size_t *len)
{
	*data = p->buf;
	*len = p->len;
}

uint64_t http_reqparser_progress(const struct http_reqparser *p)
{
	return p->progress;
}

enum http_req_method http_reqparser_method(const struct http_reqparser *p)
{
	return p->method;
}

void http_reqparser_close(struct http_reqparser *p)
{
	free(p->buf);
	p->buf = NULL;
	p->len = p->cap = 0;
}

/* ---- requests on a connection ---- */

static struct deferred *deferred_at(const struct http_conn *c, uint32_t i)
{
	return &c->deferred[(c->deferred_head + i) % c->deferred_cap];
}

/* Where an answer given now goes: out[fill], or behind the newest deferred answer. */
static struct outbuf *answer_target(struct http_conn *c)
{
	if (c->deferred_count == 0)
		return &c->out[c->fill];
	return &deferred_at(c, c->deferred_count - 1)->after;
}

/* After answer_target's buffer o grew from `before` bytes: counts what waits behind a
 * deferred answer. */
static void answer_added(struct http_conn *c, const struct outbuf *o, size_t before)
{
	if (o != &c->out[c->fill])
		c->deferred_bytes += o->len - before;
}

static int conn_on_request(void *ud, struct http_request *r)
{
	struct http_conn *c = ud;

	r->peer = &c->peer;
	r->peer_ip = c->peer_ip;
	r->received_at_ms = c->received_at_ms;
	c->method = r->method;
	if (!r->keep_alive || c->srv->closing)
		c->close_after_write = true;
	c->srv->handler(c->srv->ud, c, r);
	/* Stop parsing what follows when this answer ends the connection. */
	return c->close_after_write ? 1 : 0;
}

static void conn_on_continue(void *ud)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	struct http_conn *c = ud;
	/* After the answers queued before it, so the order on the wire stays right. */
	struct outbuf *o = answer_target(c);
	size_t before = o->len;

	if (out_append(o, cont, sizeof(cont) - 1) < 0)
		return;
	answer_added(c, o, before);
	conn_flush(c);
}

/* ---- responses ---- */

/* Appends a string literal (its length known when compiling). */
#define HEAD_PUT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

/* Writes v in decimal at p; returns the end. */
static char *put_decimal(char *p, size_t v)
{
	char digits[20];
	size_t n = sizeof(digits);

	do {
		digits[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(p, digits + n, sizeof(digits) - n);
	return p + sizeof(digits) - n;
}

/* The status line and our fixed headers, built by hand (no printf: one per request). */
static size_t response_head(bool closes, const struct http_response *resp, char *head, size_t cap)
{
	const char *text = http_status_text(resp->status);
	size_t text_len = strlen(text);
	size_t ct_len = resp->content_type ? strlen(resp->content_type) : 0;
	char *p = head;

	/* Status line, Content-Length, Content-Type, Connection, Cache-Control: at most. */
	if (text_len + ct_len + 160 > cap)
		return 0;
	p = HEAD_PUT(p, "HTTP/1.1 ");
	p = put_decimal(p, (size_t)(resp->status % 1000));
	*p++ = ' ';
	memcpy(p, text, text_len);
	p += text_len;
	p = HEAD_PUT(p, "\r\nContent-Length: ");
	p = put_decimal(p, resp->status == 204 ? 0 : resp->body_len);
	p = HEAD_PUT(p, "\r\n");
	if (resp->content_type) {
		p = HEAD_PUT(p, "Content-Type: ");
		memcpy(p, resp->content_type, ct_len);
		p += ct_len;
		p = HEAD_PUT(p, "\r\n");
	}
	if (closes)
		p = HEAD_PUT(p, "Connection: close\r\n");
	p = HEAD_PUT(p, "Cache-Control: no-cache, no-store, must-revalidate\r\n");
	return (size_t)(p - head);
}

static void append_response(struct http_conn *c, const struct http_response *resp)
{
	char head[512];
	size_t n = response_head(c->close_after_write, resp, head, sizeof(head));
	bool with_body = c->method != HTTP_REQ_HEAD && resp->status != 204;
	struct outbuf *o = answer_target(c);
	size_t before = o->len;

	if (out_append(o, head, n) < 0 ||
	    (resp->headers_len && out_append(o, resp->headers, resp->headers_len) < 0) ||
	    out_append(o, "\r\n", 2) < 0 ||
	    (with_body && resp->body_len && out_append(o, resp->body, resp->body_len) < 0)) {
		/* Out of memory: this answer cannot be sent whole. The answers queued before it
		 * still go out, then the connection ends. */
		o->len = before;
		c->close_after_write = true;
	}
	answer_added(c, o, before);
	c->answers++;
	if (c->srv->limits.collect_metrics)
		metrics_http_status(resp->status);
}

void http_respond(struct http_conn *conn, const struct http_response *resp)
{
	append_response(conn, resp);
}

/* ---- deferred answers ---- */

void http_server_set_cancel(struct http_server *srv, http_cancel_fn cancel)
{
	srv->cancel = cancel;
}

/* Room for one more entry at the end of the ring. Returns 0 or -ENOMEM. */
static int deferred_reserve(struct http_conn *c)
{
	uint32_t cap = c->deferred_cap ? c->deferred_cap * 2 : 4;
	struct deferred *d;

	if (c->deferred_count < c->deferred_cap)
		return 0;
	if (c->deferred_cap > UINT32_MAX / 2)
		return -ENOMEM;
	d = calloc(cap, sizeof(*d));
	if (!d)
		return -ENOMEM;
	/* The entries (and the buffers they own) move in queue order to the front. */
	for (uint32_t i = 0; i < c->deferred_cap; i++)
		d[i] = *deferred_at(c, i);
	free(c->deferred);
	c->deferred = d;
	c->deferred_cap = cap;
	c->deferred_head = 0;
	return 0;
}

uint64_t http_defer(struct http_conn *c, const char *headers, size_t headers_len, uint64_t tag)
{
	struct deferred *d;

	if (c->closing || deferred_reserve(c) < 0)
		return 0;
	d = deferred_at(c, c->deferred_count);
	d->answer.len = 0;
	d->after.len = 0;
	if (headers_len && out_append(&d->answer, headers, headers_len) < 0)
		return 0;
	d->tag = tag;
	d->read_ns = uv_hrtime();
	d->method = c->method;
	d->ready = false;
	c->deferred_count++;
	c->deferred_bytes += d->answer.len;
	return c->deferred_seq + c->deferred_count - 1;
}

/* Renders the answer of d in place: status line and our headers, then the extra headers
 * stored at http_defer, then resp's, then the body. Returns 0 or -ENOMEM. */
static int deferred_render(struct deferred *d, const struct http_response *resp, bool closes)
{
	char head[512];
	size_t n = response_head(closes, resp, head, sizeof(head));
	bool with_body = d->method != HTTP_REQ_HEAD && resp->status != 204;
	struct outbuf *o = &d->answer;
	size_t stored = o->len;

	if (out_append(o, head, n) < 0)
		return -ENOMEM;
	/* The head goes first: move the stored headers behind it. */
	memmove(o->data + n, o->data, stored);
	memcpy(o->data, head, n);
	if ((resp->headers_len && out_append(o, resp->headers, resp->headers_len) < 0) ||
	    out_append(o, "\r\n", 2) < 0 ||
	    (with_body && resp->body_len && out_append(o, resp->body, resp->body_len) < 0))
		return -ENOMEM;
	return 0;
}

/* Moves the answered deferred answers at the front of the queue, with what waited behind
 * each, to out[fill]. */
static void deferred_release_ready(struct http_conn *c)
{
	while (c->deferred_count > 0 && c->deferred[c->deferred_head].ready) {
		struct deferred *d = &c->deferred[c->deferred_head];
		struct outbuf *o = &c->out[c->fill];

		if (out_append(o, d->answer.data, d->answer.len) < 0 ||
		    out_append(o, d->after.data, d->after.len) < 0) {
			/* Out of memory: the answers before still go out, then the end. */
			c->close_after_write = true;
		}
		c->deferred_bytes -= d->answer.len + d->after.len;
		d->answer.len = d->after.len = 0;
		c->deferred_head = (c->deferred_head + 1) % c->deferred_cap;
		c->deferred_count--;
		c->deferred_seq++;
	}
}

void http_respond_deferred(struct http_conn *c, uint64_t handle, const struct http_response *resp)
{
	struct deferred *d;
	bool last;
	size_t before;

	if (c->closing || handle < c->deferred_seq || handle >= c->deferred_seq + c->deferred_count)
		return; /* cannot happen: a closing connection cancelled its handles */
	d = deferred_at(c, (uint32_t)(handle - c->deferred_seq));
	if (d->ready)
		return;
	last = d == deferred_at(c, c->deferred_count - 1) && d->after.len == 0;
	before = d->answer.len + d->after.len;
	if (deferred_render(d, resp, last && c->close_after_write) < 0) {
		/* Out of memory: this answer cannot be sent; those before it still go. */
		d->answer.len = 0;
		d->after.len = 0;
		c->close_after_write = true;
	}
	c->deferred_bytes = c->deferred_bytes - before + d->answer.len + d->after.len;
	d->ready = true;
	if (c->srv->limits.collect_metrics) {
		metrics_http_status(resp->status);
		metrics_http_answered(uv_hrtime() - d->read_ns, 1);
	}
	deferred_release_ready(c);
	conn_flush(c);
}

/* The connection ends with deferred answers not given: the handler forgets them. */
static void deferred_cancel_all(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	for (uint32_t i = 0; i < c->deferred_count; i++) {
		struct deferred *d = deferred_at(c, i);
		if (!d->ready && srv->cancel)
			srv->cancel(srv->ud, d->tag);
	}
	c->deferred_count = 0;
	c->deferred_bytes = 0;
}

static void deferred_free(struct http_conn *c)
{
	for (uint32_t i = 0; i < c->deferred_cap; i++) {
		free(c->deferred[i].answer.data);
		free(c->deferred[i].after.data);
	}
	free(c->deferred);
	c->deferred = NULL;
	c->deferred_cap = 0;
}

static void respond_error(struct http_conn *c, int status, const char *reason)
{
	char body[256];
	int n = snprintf(body, sizeof(body), "%s\n", reason);
	struct http_response resp = {
	    .status = status,
	    .content_type = "text/plain; charset=utf-8",
	    .body = body,
	    .body_len = n > 0 ? (size_t)n : 0,
	};
	c->close_after_write = true;
	c->linger = true;
	if (status == 503)
		resp.headers = "Retry-After: 1\r\n", resp.headers_len = 16;
	append_response(c, &resp);
}

/* ---- connection lifecycle ---- */

static void on_conn_handle_closed(uv_handle_t *h)
{
	struct http_conn *c = h->data;
	struct http_server *srv = c->srv;
	if (--c->open_handles > 0)
		return;
	http_reqparser_close(&c->rp);
	free(c->out[0].data);
	free(c->out[1].data);
	deferred_free(c);
	free(c);
	srv->open_handles--;
	server_maybe_done(srv);
}

static void conn_close(struct http_conn *c)
{
	struct http_server *srv = c->srv;
	if (c->closing)
		return;
	c->closing = true;
	deferred_cancel_all(c);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->open--;
	if (srv->limits.shared_open)
		atomic_fetch_sub_explicit(srv->limits.shared_open, 1, memory_order_relaxed);
	uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
	uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
	if (srv->closing && srv->open == 0 && !uv_is_closing((uv_handle_t *)&srv->drain_timer))
		uv_close((uv_handle_t *)&srv->drain_timer, on_server_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;
	/* One read buffer per server: a read callback consumes its bytes before the loop
	 * reads again, so connections of one loop can share it. */
	if (c->srv->read_buffer_busy) {
		buf->base = NULL;
		buf->len = 0;
		return;
	}
	c->srv->read_buffer_busy = true;
	buf->base = c->srv->read_buffer;
	buf->len = sizeof(c->srv->read_buffer);
}

static size_t out_pending(const struct http_conn *c)
{
	return c->out[0].len + c->out[1].len;
}

/* Reading pauses past these: answers not sent yet, or deferred answers waiting. */
static bool too_much_pending(const struct http_conn *c)
{
	size_t max = c->srv->limits.max_deferred;

	return out_pending(c) + c->deferred_bytes > OUT_PAUSE_BYTES ||
	       (max && c->deferred_count >= max);
}

static void on_write(uv_write_t *w, int status)
{
	struct http_conn *c = w->data;
	c->writing = false;
	c->out[c->fill ^ 1].len = 0;
	if (c->closing)
		return;
	if (status < 0) {
		conn_close(c);
		return;
	}
	conn_flush(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_linger_shutdown(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status; /* the lingering read or its timer ends the connection */
}

/* Sends FIN, then reads and drops what the client still sends until it closes or
 * LINGER_MS pass. */
static void conn_linger(struct http_conn *c)
{
	if (c->lingering || c->closing)
		return;
	c->lingering = true;
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_linger_shutdown) < 0) {
		conn_close(c);
		return;
	}
	if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
		c->reading = true;
	uv_timer_start(&c->timer, on_idle_timeout, LINGER_MS, 0);
}

/*
 * Sends out[fill] (no write may be in flight). Most answers fit in the socket's send
 * buffer, so uv_try_write sends them with one write(2) and nothing else. A uv_write that
 * completes at once costs more in libuv 1.44: it feeds the stream's watcher, and the
 * drain that follows re-arms the socket with epoll_ctl, one extra syscall per request
 * (bench/run.sh). So uv_write only takes what try_write left, when the send buffer is
 * full; it then waits for POLLOUT, and out[fill] becomes the in-flight buffer (counted in
 * out_pending whole until on_write, the part already sent included). Returns 0 or a
 * negative libuv error.
 */
static int conn_send(struct http_conn *c)
{
	struct outbuf *o = &c->out[c->fill];
	uv_buf_t b = uv_buf_init(o->data, (unsigned)o->len);
	int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	int rc;

	if (n == UV_EAGAIN)
		n = 0; /* the send buffer is full: all of it goes by uv_write */
	if (n < 0)
		return n;
	if ((size_t)n == o->len) {
		o->len = 0;
		return 0;
	}
	b = uv_buf_init(o->data + n, (unsigned)(o->len - (size_t)n));
	c->write_req.data = c;
	rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (rc < 0)
		return rc;
	c->writing = true;
	c->fill ^= 1;
	return 0;
}

static void conn_flush(struct http_conn *c)
{
	if (c->closing)
		return;
	if (!c->writing && c->out[c->fill].len > 0 && conn_send(c) < 0) {
		conn_close(c);
		return;
	}
	if (!c->writing && out_pending(c) == 0 && c->close_after_write && c->deferred_count == 0) {
		if (c->linger)
			conn_linger(c);
		else
			conn_close(c);
		return;
	}
	/* Pause reading while answers pile up (or too many are deferred); resume when they
	 * are out. */
	if (c->reading && too_much_pending(c)) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	} else if (!c->reading && !c->close_after_write && out_pending(c) == 0 &&
	           !too_much_pending(c)) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
			c->reading = true;
	}
}

/* Dead-letters a request that never reached the handler, and answers it. */
static void reject(struct http_conn *c, int status, const char *reason, const char *payload,
                   size_t payload_len)
{
	struct http_server *srv = c->srv;
	/* The answer is to the failing request: no body if it is a HEAD. */
	size_t target_len = 0;

	c->method = http_reqparser_method(&c->rp);
	/* What the parser kept starts with the target: say how long it is. */
	if (payload != NULL && payload == c->rp.buf)
		target_len = c->rp.url_len < payload_len ? c->rp.url_len : payload_len;
	if (srv->reject)
		srv->reject(srv->ud, status, reason, c->peer_ip, payload, payload_len, target_len);
	respond_error(c, status, reason);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;
	struct http_server *srv = c->srv;
	uint64_t progress, read_ns, answers;

	if (buf->base == srv->read_buffer)
		srv->read_buffer_busy = false;
	if (nread == 0 || nread == UV_ENOBUFS || c->closing)
		return;
	if (c->lingering) {
		if (nread < 0)
			conn_close(c);
		return; /* dropped */
	}
	if (nread < 0 && c->deferred_count > 0) {
		/* The client went away (or reset) while answers wait for their events: it will
		 * not read them, so they are cancelled now rather than when they come (nginx
		 * takes an EOF while it waits upstream the same way). */
		conn_close(c);
		return;
	}
	if (nread < 0) {
		/* EOF or reset: answers already queued still go out, then we close. */
		uv_read_stop(s);
		c->reading = false;
		c->close_after_write = true;
		conn_flush(c);
		return;
	}
	if (srv->limits.collect_metrics)
		metrics_add(METRIC_BYTES_IN, (uint64_t)nread);
	c->received_at_ms = wall_clock_ms();
	read_ns = uv_hrtime(); /* once per read, however many requests it completes */
	answers = c->answers;
	progress = http_reqparser_progress(&c->rp);
	if (http_reqparser_feed(&c->rp, buf->base, (size_t)nread) == HTTP_REQPARSER_ERROR) {
		struct http_reqparser_error e;
		http_reqparser_error(&c->rp, &e);
		reject(c, e.status, e.reason, e.payload, e.payload_len);
	}
	/* The idle timer restarts when a request begins or ends, not on every read: a
	 * request must be complete within http.idle_timeout_ms of its first byte, or a
	 * client trickling a byte now and then would hold a connection for ever. */
	if (http_reqparser_progress(&c->rp) != progress && !c->close_after_write)
		uv_timer_start(&c->timer, on_idle_timeout, srv->limits.idle_timeout_ms, 0);
	if (c->close_after_write && c->reading) {
		uv_read_stop(s);
		c->reading = false;
	}
	if (srv->limits.collect_metrics && c->answers != answers)
		metrics_http_answered(uv_hrtime() - read_ns, c->answers - answers);
	conn_flush(c);
}

/*
 * The connection's one timer: a request not completed within http.idle_timeout_ms of its
 * first byte (408), a connection idle that long between requests (closed quietly), the
 * end of a lingering close, and a client that does not read. A write still waiting when
 * the timer fires has waited at least since the last request began or ended (when the
 * timer was last started): the client has not taken its answers for that long, and since
 * reading pauses while answers pile up, it could hold the connection and its buffers for
 * ever. It is closed; what it sent after is not answered, since no answer would reach it.
 */
static void on_idle_timeout(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	struct http_server *srv = c->srv;

	if (c->lingering) {
		conn_close(c);
		return;
	}
	if (c->deferred_count > 0 && !http_reqparser_in_message(&c->rp) && !c->writing) {
		/* Waiting for its deferred answers, which have deadlines of their own: busy. */
		uv_timer_start(&c->timer, on_idle_timeout, srv->limits.idle_timeout_ms, 0);
		return;
	}
	if (c->writing) {
		if (srv->limits.collect_metrics)
			metrics_add(METRIC_HTTP_SLOW_READERS, 1);
		conn_close(c);
		return;
	}
	if (srv->limits.collect_metrics)
		metrics_add(METRIC_HTTP_IDLE_TIMEOUTS, 1);
	if (http_reqparser_in_message(&c->rp) && !c->close_after_write) {
		const char *partial;
		size_t partial_len;
		http_reqparser_partial(&c->rp, &partial, &partial_len);
		reject(c, 408, "request not completed within http.idle_timeout_ms", partial,
		       partial_len);
		if (c->reading) {
			uv_read_stop((uv_stream_t *)&c->tcp);
			c->reading = false;
		}
		/* If the client does not read the 408 either, the next firing closes. */
		uv_timer_start(&c->timer, on_idle_timeout, srv->limits.idle_timeout_ms, 0);
		conn_flush(c);
		return;
	}
	conn_close(c);
}

/* The answer to a client past max_connections. */
static const char refusal[] = "HTTP/1.1 503 Service Unavailable\r\n"
                              "Connection: close\r\nRetry-After: 1\r\n"
                              "Content-Type: text/plain\r\nContent-Length: 21\r\n\r\n"
                              "too many connections\n";

static void count_refusal(struct http_server *srv)
{
	if (srv->limits.collect_metrics) {
		metrics_add(METRIC_HTTP_CONNECTIONS_REFUSED, 1);
		metrics_http_status(503);
	}
}

static void refuse_connection(struct http_server *srv)
{
	uv_tcp_t *t = malloc(sizeof(*t));
	if (!t)
		return;
	uv_tcp_init(srv->loop, t);
	if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)t) == 0) {
		uv_buf_t b = uv_buf_init((char *)refusal, sizeof(refusal) - 1);
		uv_try_write((uv_stream_t *)t, &b, 1);
	}
	uv_close((uv_handle_t *)t, (uv_close_cb)free);
	count_refusal(srv);
}

/* One more connection within max_connections (over every server sharing the budget)? */
static bool take_connection_slot(struct http_server *srv)
{
	_Atomic size_t *shared = srv->limits.shared_open;

	if (!shared)
		return srv->open < srv->limits.max_connections;
	if (atomic_fetch_add_explicit(shared, 1, memory_order_relaxed) <
	    srv->limits.max_connections)
		return true;
	atomic_fetch_sub_explicit(shared, 1, memory_order_relaxed);
	return false;
}

static void give_back_connection_slot(struct http_server *srv)
{
	if (srv->limits.shared_open)
		atomic_fetch_sub_explicit(srv->limits.shared_open, 1, memory_order_relaxed);
}

/* A connection of srv, linked and counted (its slot taken), with its handles initialised
 * but no socket yet; conn_close releases it. NULL when out of memory (the slot is given
 * back). */
static struct http_conn *conn_new(struct http_server *srv)
{
	struct http_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		give_back_connection_slot(srv);
		return NULL;
	}
	c->srv = srv;
	c->deferred_seq = 1; /* handles are never 0 */
	uv_tcp_init(srv->loop, &c->tcp);
	uv_timer_init(srv->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->open_handles = 2;
	srv->open_handles++;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->open++;
	return c;
}

/* Starts serving c once its tcp handle holds the socket. peer NULL: getpeername. */
static int conn_start(struct http_conn *c, const struct sockaddr *peer)
{
	struct http_server *srv = c->srv;
	const struct http_reqparser_limits limits = {
	    .max_header_bytes = srv->limits.max_header_bytes,
	    .max_headers = srv->limits.max_headers,
	    .max_url_bytes = srv->limits.max_url_bytes,
	    .max_body_bytes = srv->limits.max_body_bytes,
	};
	int len = sizeof(struct sockaddr_storage), rc;

	uv_tcp_nodelay(&c->tcp, 1);
	if (peer)
		memcpy(&c->peer, peer,
		       peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
		                                   : sizeof(struct sockaddr_in));
	else
		uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len);
	if (net_ip_string((struct sockaddr *)&c->peer, c->peer_ip, sizeof(c->peer_ip)) < 0)
		strcpy(c->peer_ip, "unknown");
	http_reqparser_init(&c->rp, &limits, conn_on_request, conn_on_continue, c);
	if (srv->limits.collect_metrics)
		metrics_add(METRIC_HTTP_CONNECTIONS, 1);
	uv_timer_start(&c->timer, on_idle_timeout, srv->limits.idle_timeout_ms, 0);
	rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (rc < 0) {
		conn_close(c);
		return rc;
	}
	c->reading = true;
	return 0;
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct http_server *srv = listener->data;
	struct http_conn *c;

	if (status < 0 || srv->closing)
		return;
	if (!take_connection_slot(srv)) {
		refuse_connection(srv);
		return;
	}
	c = conn_new(srv);
	if (!c)
		return;
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
		conn_close(c);
		return;
	}
	conn_start(c, NULL);
}

int http_server_adopt(struct http_server *srv, int fd, const struct sockaddr *peer)
{
	struct http_conn *c;
	int rc;

	if (srv->closing) {
		close(fd);
		return UV_ECANCELED;
	}
	if (!take_connection_slot(srv)) {
		/* As refuse_connection: the answer if the socket takes it at once, then close. */
		(void)!send(fd, refusal, sizeof(refusal) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		close(fd);
		count_refusal(srv);
		return UV_EBUSY;
	}
	c = conn_new(srv);
	if (!c) {
		close(fd);
		return UV_ENOMEM;
	}
	rc = uv_tcp_open(&c->tcp, fd);
	if (rc < 0) {
		close(fd);
		conn_close(c);
		return rc;
	}
	return conn_start(c, peer);
}

int http_server_new(uv_loop_t *loop, int fd, const char *name, const struct http_limits *limits,
                    http_handler_fn handler, http_reject_fn reject_fn, void *ud,
                    struct http_server **out)
{
	struct http_server *srv = calloc(1, sizeof(*srv));
	int rc;

	if (!srv)
		return UV_ENOMEM;
	srv->loop = loop;
	snprintf(srv->name, sizeof(srv->name), "%s", name);
	srv->limits = *limits;
	srv->handler = handler;
	srv->reject = reject_fn;
	srv->ud = ud;
	uv_tcp_init(loop, &srv->listener);
	uv_timer_init(loop, &srv->drain_timer);
	srv->listener.data = srv;
	srv->drain_timer.data = srv;
	srv->open_handles = 2;
	if (fd < 0) {
		*out = srv;
		return 0; /* no listener: connections come through http_server_adopt */
	}
	rc = uv_tcp_open(&srv->listener, fd);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&srv->listener, HTTP_LISTEN_BACKLOG, on_connection);
	if (rc < 0) {
		/* The caller still closes via http_server_close to release the handles. */
		*out = srv;
		return rc;
	}
	*out = srv;
	return 0;
}

static void server_maybe_done(struct http_server *srv)
{
	if (srv->closing && srv->open_handles == 0) {
		void (*done)(void *) = srv->done;
		void *arg = srv->done_arg;
		free(srv);
		if (done)
			done(arg);
	}
}

static void on_server_handle_closed(uv_handle_t *h)
{
	struct http_server *srv = h->data;
	srv->open_handles--;
	server_maybe_done(srv);
}

static void close_all(struct http_server *srv)
{
	while (srv->conns)
		conn_close(srv->conns);
	if (!uv_is_closing((uv_handle_t *)&srv->drain_timer))
		uv_close((uv_handle_t *)&srv->drain_timer, on_server_handle_closed);
}

static void on_drain_timeout(uv_timer_t *t)
{
	struct http_server *srv = t->data;
	if (srv->open)
		log_warn(srv->name, "msg=\"drain timeout, closing busy connections\" open=%zu",
		         srv->open);
	close_all(srv);
}

/* True when the client has sent bytes we have not read yet (a request racing the stop). */
static bool unread_bytes(struct http_conn *c)
{
	uv_os_fd_t fd;
	char byte;
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
		return false;
	return recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

void http_server_close(struct http_server *srv, uint64_t drain_timeout_ms, void (*done)(void *arg),
                       void *arg)
{
	struct http_conn *c, *next;

	srv->closing = true;
	srv->done = done;
	srv->done_arg = arg;
	uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
	for (c = srv->conns; c; c = next) {
		next = c->next;
		if (c->lingering)
			continue;
		if (http_reqparser_in_message(&c->rp) || unread_bytes(c)) {
			/* A request is on its way: it is answered (with Connection: close, as
			 * srv->closing is set) before the connection ends. */
			continue;
		}
		if (out_pending(c) == 0 && c->deferred_count == 0)
			conn_close(c);
		else
			c->close_after_write = true; /* the queued (or deferred) answers end it */
	}
	if (srv->open == 0) {
		close_all(srv);
		return;
	}
	uv_timer_start(&srv->drain_timer, on_drain_timeout, drain_timeout_ms, 0);
}

size_t http_server_connections(const struct http_server *srv)
{
	return srv->open;
}

void http_server_set_limits(struct http_server *srv, const struct http_limits *limits)
{
	_Atomic size_t *shared = srv->limits.shared_open;

	srv->limits = *limits;
	srv->limits.shared_open = shared; /* the budget stays shared with the other servers */
}
