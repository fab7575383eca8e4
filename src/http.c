/*
 * http.c - HTTP/1.1 server on libuv + http-parser (see http.h for the contract).
 *
 * Runs on one loop thread and owns its connections. Invariants:
 * - a connection's answers leave in request order: requests are handled synchronously as
 *   the parser completes them, appended to out[fill], and out[fill] is written with one
 *   uv_write after each read (pipelined answers batch into one syscall);
 * - at most one uv_write per connection is in flight; reading pauses while more than
 *   OUT_PAUSE_BYTES wait, so a client that pipelines without reading cannot grow memory;
 * - memory is freed only from close callbacks (both the tcp and the timer handle).
 */
#include "clickd/http.h"

#include "clickd/log.h"
#include "clickd/metrics.h"
#include "clickd/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define REQ_INITIAL_BYTES 4096
#define OUT_INITIAL_BYTES 1024
#define OUT_PAUSE_BYTES   (1024 * 1024)
#define READ_BUFFER_BYTES 65536
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
	HDR__COUNT,
	HDR_NONE = -1
};

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
};

struct span {
	uint32_t off;
	uint32_t len;
	bool seen;
};

struct outbuf {
	char *data;
	size_t len;
	size_t cap;
};

struct http_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t write_req;
	uv_shutdown_t shutdown_req;
	struct http_server *srv;
	struct http_conn *prev, *next;
	http_parser parser;
	struct sockaddr_storage peer;
	char peer_ip[64];

	/* The request being parsed: URL, then header values, then body, in one buffer
	 * (offsets, since it may move when it grows). */
	char *req;
	size_t req_len, req_cap;
	size_t url_len;
	size_t header_bytes;
	struct span headers[HDR__COUNT];
	char field[40];
	size_t field_len;
	int cur_header; /* enum header_id of the value being read, or HDR_NONE */
	bool last_was_value;
	size_t body_off, body_len;
	bool body_started;
	bool in_message;
	enum http_req_method method;
	int error_status; /* set by a callback when a limit is hit: abort with it */
	const char *error_reason;
	int64_t received_at_ms;

	struct outbuf out[2];
	int fill; /* index of the buffer being filled; the other may be in flight */
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
	void *ud;
	http_parser_settings settings;
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
	if (grow(&o->data, &o->cap, o->len + len, OUT_INITIAL_BYTES) < 0)
		return -ENOMEM;
	memcpy(o->data + o->len, data, len);
	o->len += len;
	return 0;
}

static size_t req_limit(const struct http_server *srv)
{
	return srv->limits.max_url_bytes + srv->limits.max_header_bytes +
	       srv->limits.max_body_bytes;
}

static int req_append(struct http_conn *c, const char *data, size_t len)
{
	if (c->req_len + len > req_limit(c->srv))
		return -E2BIG;
	if (grow(&c->req, &c->req_cap, c->req_len + len, REQ_INITIAL_BYTES) < 0)
		return -ENOMEM;
	memcpy(c->req + c->req_len, data, len);
	c->req_len += len;
	return 0;
}

/* ---- parser callbacks ---- */

static int fail(struct http_conn *c, int status, const char *reason)
{
	c->error_status = status;
	c->error_reason = reason;
	return -1;
}

static int on_message_begin(http_parser *p)
{
	struct http_conn *c = p->data;
	c->req_len = 0;
	c->url_len = 0;
	c->header_bytes = 0;
	memset(c->headers, 0, sizeof(c->headers));
	c->field_len = 0;
	c->cur_header = HDR_NONE;
	c->last_was_value = false;
	c->body_off = c->body_len = 0;
	c->body_started = false;
	c->in_message = true;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (c->url_len + len > c->srv->limits.max_url_bytes)
		return fail(c, 414, "request target longer than http.max_url_bytes");
	if (req_append(c, at, len) < 0)
		return fail(c, 503, "out of memory");
	c->url_len += len;
	c->header_bytes += len;
	return 0;
}

static int count_header_bytes(struct http_conn *c, size_t len)
{
	c->header_bytes += len + 2; /* and the ": " or "\r\n" around it */
	if (c->header_bytes > c->srv->limits.max_header_bytes)
		return fail(c, 431, "request headers longer than http.max_header_bytes");
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (count_header_bytes(c, len) < 0)
		return -1;
	if (c->last_was_value) {
		c->field_len = 0;
		c->last_was_value = false;
	}
	if (c->field_len + len < sizeof(c->field)) {
		memcpy(c->field + c->field_len, at, len);
		c->field_len += len;
	} else {
		c->field_len = sizeof(c->field); /* too long to be one of ours */
	}
	return 0;
}

static int header_lookup(const char *name, size_t len)
{
	for (int i = 0; i < HDR__COUNT; i++)
		if (strlen(header_names[i]) == len && strncasecmp(header_names[i], name, len) == 0)
			return i;
	return HDR_NONE;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (count_header_bytes(c, len) < 0)
		return -1;
	if (!c->last_was_value) {
		/* First chunk of a new value: decide whether we keep it. */
		c->last_was_value = true;
		c->cur_header = c->field_len < sizeof(c->field)
		                    ? header_lookup(c->field, c->field_len)
		                    : HDR_NONE;
		if (c->cur_header != HDR_NONE) {
			struct span *s = &c->headers[c->cur_header];
			if (s->seen && c->cur_header == HDR_FORWARDED_FOR &&
			    s->off + s->len == c->req_len) {
				/* A repeated X-Forwarded-For continues the list. */
				if (req_append(c, ",", 1) < 0)
					return fail(c, 503, "out of memory");
				s->len++;
			} else if (s->seen) {
				c->cur_header = HDR_NONE; /* first one wins */
			} else {
				s->seen = true;
				s->off = (uint32_t)c->req_len;
				s->len = 0;
			}
		}
	}
	if (c->cur_header != HDR_NONE) {
		struct span *s = &c->headers[c->cur_header];
		if (s->off + s->len != c->req_len) {
			/* Another header's value was appended in between: cannot happen, as a
			 * value's chunks arrive together; keep the first part only. */
			return 0;
		}
		if (req_append(c, at, len) < 0)
			return fail(c, 431, "request headers longer than http.max_header_bytes");
		s->len += (uint32_t)len;
	}
	return 0;
}

static bool header_is(const struct http_conn *c, enum header_id h, const char *value)
{
	const struct span *s = &c->headers[h];
	size_t n = strlen(value);
	return s->seen && s->len == n && strncasecmp(c->req + s->off, value, n) == 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	if (p->content_length != ULLONG_MAX && p->content_length > c->srv->limits.max_body_bytes)
		return fail(c, 413, "request body longer than http.max_body_bytes");
	if (header_is(c, HDR_EXPECT, "100-continue")) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		out_append(&c->out[c->fill], cont, sizeof(cont) - 1);
		conn_flush(c);
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (!c->body_started) {
		c->body_started = true;
		c->body_off = c->req_len;
	}
	if (c->body_len + len > c->srv->limits.max_body_bytes)
		return fail(c, 413, "request body longer than http.max_body_bytes");
	if (req_append(c, at, len) < 0)
		return fail(c, 503, "out of memory");
	c->body_len += len;
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

static void header_out(const struct http_conn *c, enum header_id h, const char **ptr, size_t *len)
{
	const struct span *s = &c->headers[h];
	*ptr = s->seen ? c->req + s->off : NULL;
	*len = s->seen ? s->len : 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	struct http_request r;
	const char *target = c->req, *q;

	memset(&r, 0, sizeof(r));
	c->in_message = false;
	c->method = method_of(p->method);
	r.method = c->method;
	q = memchr(target, '?', c->url_len);
	r.path = target;
	r.path_len = q ? (size_t)(q - target) : c->url_len;
	if (q) {
		r.query = q + 1;
		r.query_len = c->url_len - r.path_len - 1;
	}
	/* An absolute-form target ("http://host/collect?...") is answered by path. */
	if (r.path_len > 7 &&
	    (strncasecmp(r.path, "http://", 7) == 0 || strncasecmp(r.path, "https://", 8) == 0)) {
		const char *slash = memchr(r.path + 8, '/', r.path_len - 8);
		size_t cut = slash ? (size_t)(slash - r.path) : r.path_len;
		r.path += cut;
		r.path_len -= cut;
	}
	r.body = c->body_len ? c->req + c->body_off : NULL;
	r.body_len = c->body_len;
	header_out(c, HDR_ORIGIN, &r.origin, &r.origin_len);
	header_out(c, HDR_CONTENT_TYPE, &r.content_type, &r.content_type_len);
	header_out(c, HDR_COOKIE, &r.cookie, &r.cookie_len);
	header_out(c, HDR_USER_AGENT, &r.user_agent, &r.user_agent_len);
	header_out(c, HDR_FORWARDED_FOR, &r.forwarded_for, &r.forwarded_for_len);
	header_out(c, HDR_CORS_REQUEST_HEADERS, &r.cors_request_headers,
	           &r.cors_request_headers_len);
	r.gpc = header_is(c, HDR_SEC_GPC, "1") || header_is(c, HDR_DNT, "1");
	r.peer = &c->peer;
	r.peer_ip = c->peer_ip;
	r.received_at_ms = c->received_at_ms;

	if (!http_should_keep_alive(p) || c->srv->closing)
		c->close_after_write = true;
	c->srv->handler(c->srv->ud, c, &r);
	/* Stop parsing what follows when this answer ends the connection. */
	return c->close_after_write ? -1 : 0;
}

/* ---- responses ---- */

static void append_response(struct http_conn *c, const struct http_response *resp)
{
	char head[512];
	int n;
	bool with_body = c->method != HTTP_REQ_HEAD && resp->status != 204;
	struct outbuf *o = &c->out[c->fill];

	n = snprintf(head, sizeof(head),
	             "HTTP/1.1 %d %s\r\n"
	             "Content-Length: %zu\r\n"
	             "%s%s%s"
	             "%s"
	             "Cache-Control: no-cache, no-store, must-revalidate\r\n",
	             resp->status, http_status_text(resp->status),
	             resp->status == 204 ? (size_t)0 : resp->body_len,
	             resp->content_type ? "Content-Type: " : "",
	             resp->content_type ? resp->content_type : "", resp->content_type ? "\r\n" : "",
	             c->close_after_write ? "Connection: close\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(head))
		n = 0;
	if (out_append(o, head, (size_t)n) < 0 ||
	    (resp->headers_len && out_append(o, resp->headers, resp->headers_len) < 0) ||
	    out_append(o, "\r\n", 2) < 0 ||
	    (with_body && resp->body_len && out_append(o, resp->body, resp->body_len) < 0)) {
		/* Out of memory: the answer cannot be sent whole; end the connection. */
		o->len = 0;
		c->close_after_write = true;
	}
	if (c->srv->limits.collect_metrics)
		metrics_http_status(resp->status);
}

void http_respond(struct http_conn *conn, const struct http_response *resp)
{
	append_response(conn, resp);
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
	free(c->req);
	free(c->out[0].data);
	free(c->out[1].data);
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
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->open--;
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

static void conn_flush(struct http_conn *c)
{
	if (c->closing)
		return;
	if (!c->writing && c->out[c->fill].len > 0) {
		uv_buf_t b = uv_buf_init(c->out[c->fill].data, (unsigned)c->out[c->fill].len);
		c->write_req.data = c;
		if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
			conn_close(c);
			return;
		}
		c->writing = true;
		c->fill ^= 1;
		return;
	}
	if (!c->writing && out_pending(c) == 0 && c->close_after_write) {
		if (c->linger)
			conn_linger(c);
		else
			conn_close(c);
		return;
	}
	/* Pause reading while answers pile up; resume when they are out. */
	if (c->reading && out_pending(c) > OUT_PAUSE_BYTES) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	} else if (!c->reading && !c->close_after_write && out_pending(c) == 0) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
			c->reading = true;
	}
}

static void reject(struct http_conn *c, int status, const char *reason)
{
	struct http_server *srv = c->srv;
	if (srv->reject)
		srv->reject(srv->ud, status, reason, c->peer_ip, c->req, c->req_len);
	respond_error(c, status, reason);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;
	struct http_server *srv = c->srv;
	size_t parsed;

	if (buf->base == srv->read_buffer)
		srv->read_buffer_busy = false;
	if (nread == 0 || nread == UV_ENOBUFS || c->closing)
		return;
	if (c->lingering) {
		if (nread < 0)
			conn_close(c);
		return; /* dropped */
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
	uv_timer_again(&c->timer);
	c->error_status = 0;
	parsed = http_parser_execute(&c->parser, &srv->settings, buf->base, (size_t)nread);
	(void)parsed;
	if (c->error_status) {
		reject(c, c->error_status, c->error_reason);
	} else if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK && !c->close_after_write) {
		enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
		int status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
		char reason[128];
		snprintf(reason, sizeof(reason), "malformed HTTP: %s", http_errno_description(e));
		if (srv->reject)
			srv->reject(srv->ud, status, reason, c->peer_ip, buf->base, (size_t)nread);
		respond_error(c, status, reason);
	} else if (c->parser.upgrade) {
		reject(c, 400, "protocol upgrade not supported");
	}
	if (c->close_after_write && c->reading) {
		uv_read_stop(s);
		c->reading = false;
	}
	conn_flush(c);
}

static void on_idle_timeout(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	if (c->lingering) {
		conn_close(c);
		return;
	}
	if (c->srv->limits.collect_metrics)
		metrics_add(METRIC_HTTP_IDLE_TIMEOUTS, 1);
	if (c->in_message && !c->close_after_write) {
		reject(c, 408, "request not completed within http.idle_timeout_ms");
		if (c->reading) {
			uv_read_stop((uv_stream_t *)&c->tcp);
			c->reading = false;
		}
		conn_flush(c);
		return;
	}
	conn_close(c);
}

static void refuse_connection(struct http_server *srv)
{
	static const char answer[] = "HTTP/1.1 503 Service Unavailable\r\n"
	                             "Connection: close\r\nRetry-After: 1\r\n"
	                             "Content-Type: text/plain\r\nContent-Length: 21\r\n\r\n"
	                             "too many connections\n";
	uv_tcp_t *t = malloc(sizeof(*t));
	if (!t)
		return;
	uv_tcp_init(srv->loop, t);
	if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)t) == 0) {
		uv_buf_t b = uv_buf_init((char *)answer, sizeof(answer) - 1);
		uv_try_write((uv_stream_t *)t, &b, 1);
	}
	uv_close((uv_handle_t *)t, (uv_close_cb)free);
	if (srv->limits.collect_metrics) {
		metrics_add(METRIC_HTTP_CONNECTIONS_REFUSED, 1);
		metrics_http_status(503);
	}
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct http_server *srv = listener->data;
	struct http_conn *c;
	int len = sizeof(struct sockaddr_storage);

	if (status < 0 || srv->closing)
		return;
	if (srv->open >= srv->limits.max_connections) {
		refuse_connection(srv);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->srv = srv;
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
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len);
	if (net_ip_string((struct sockaddr *)&c->peer, c->peer_ip, sizeof(c->peer_ip)) < 0)
		strcpy(c->peer_ip, "unknown");
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->cur_header = HDR_NONE;
	if (srv->limits.collect_metrics)
		metrics_add(METRIC_HTTP_CONNECTIONS, 1);
	uv_timer_start(&c->timer, on_idle_timeout, srv->limits.idle_timeout_ms,
	               srv->limits.idle_timeout_ms);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
		conn_close(c);
		return;
	}
	c->reading = true;
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
	srv->settings.on_message_begin = on_message_begin;
	srv->settings.on_url = on_url;
	srv->settings.on_header_field = on_header_field;
	srv->settings.on_header_value = on_header_value;
	srv->settings.on_headers_complete = on_headers_complete;
	srv->settings.on_body = on_body;
	srv->settings.on_message_complete = on_message_complete;
	uv_tcp_init(loop, &srv->listener);
	uv_timer_init(loop, &srv->drain_timer);
	srv->listener.data = srv;
	srv->drain_timer.data = srv;
	srv->open_handles = 2;
	rc = uv_tcp_open(&srv->listener, fd);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
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
		if (c->in_message || unread_bytes(c)) {
			/* A request is on its way: it is answered (with Connection: close, as
			 * srv->closing is set) before the connection ends. */
			continue;
		}
		if (out_pending(c) == 0)
			conn_close(c);
		else
			c->close_after_write = true; /* the queued answers end it */
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
