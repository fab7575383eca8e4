/*
 * http.h - an HTTP/1.1 server on libuv and http-parser, shared by the collect listener
 * (ingest_http.c) and the admin listener (admin.c), which differ only in their handler.
 *
 * One server per loop; it owns its connections. Keep-alive and pipelining: requests of a
 * connection are parsed in order and their answers queued in order; the answers produced
 * while parsing one read are sent with one write. Limits on header bytes and header count
 * (431), URL bytes (414), body bytes (413) and idle time (408 or a quiet close) are
 * enforced here, before the handler sees a request; so is a client that does not read its
 * answers (closed when a write waits for it for the idle time). Memory: per connection
 * one request buffer (URL, the headers clickd reads, body), reused across requests and
 * bounded by the limits, and two output buffers; nothing is allocated per request once a
 * connection is warm.
 *
 * The request parsing itself (http-parser callbacks assembling a struct http_request and
 * enforcing the limits) is a separate piece with no sockets, struct http_reqparser below,
 * so that a fuzzer can drive it from bytes (tests/fuzz/fuzz_http.c).
 */
#ifndef CLICKD_HTTP_H
#define CLICKD_HTTP_H

#include <http_parser.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

enum http_req_method {
	HTTP_REQ_GET,
	HTTP_REQ_HEAD,
	HTTP_REQ_POST,
	HTTP_REQ_OPTIONS,
	HTTP_REQ_OTHER
};

/* The single-address client IP headers a proxy or CDN may set (http.real_ip_header). */
enum http_ip_header {
	HTTP_IP_X_REAL_IP,
	HTTP_IP_CF_CONNECTING_IP,
	HTTP_IP_TRUE_CLIENT_IP,
	HTTP_IP_FASTLY_CLIENT_IP,
	HTTP_IP_HEADER__COUNT
};

/* A kept header's value (NULL when absent); repeated: it came more than once (the first
 * value is kept). */
struct http_header_value {
	const char *value;
	size_t len;
	bool repeated;
};

/* The request a handler sees; every pointer is borrowed and valid during the call only. */
struct http_request {
	enum http_req_method method;
	const char *path; /* without the query */
	size_t path_len;
	const char *query; /* after '?', NULL when absent */
	size_t query_len;
	const char *body;
	size_t body_len;
	/* The headers clickd reads (NULL when absent). */
	const char *origin;
	size_t origin_len;
	const char *content_type;
	size_t content_type_len;
	const char *cookie;
	size_t cookie_len;
	const char *user_agent;
	size_t user_agent_len;
	const char *forwarded_for;
	size_t forwarded_for_len;
	const char *cors_request_headers;
	size_t cors_request_headers_len;
	const char *authorization; /* Segment/RudderStack write keys (Basic auth) */
	size_t authorization_len;
	struct http_header_value content_encoding;
	struct http_header_value ip_headers[HTTP_IP_HEADER__COUNT];
	bool gpc;          /* Sec-GPC: 1 or DNT: 1 */
	bool sp_anonymous; /* SP-Anonymous present (Snowplow's anonymous tracking) */
	bool keep_alive;   /* the client allows another request on the connection */
	const struct sockaddr_storage *peer;
	const char *peer_ip;    /* textual peer address */
	int64_t received_at_ms; /* wall clock when the request's last bytes were read */
};

/* A handler's answer. headers: extra header lines, each ending in "\r\n" (may be NULL). */
struct http_response {
	int status;
	const char *content_type;
	const char *body;
	size_t body_len;
	const char *headers;
	size_t headers_len;
};

/* ---- request parsing, without sockets ---- */

struct http_reqparser_limits {
	size_t max_header_bytes; /* URL plus header names and values (": ", CRLF): over it 431 */
	size_t max_headers;      /* header fields (chunked trailers too): over it 431 */
	size_t max_url_bytes;    /* request target: over it 414 */
	size_t max_body_bytes;   /* body (Content-Length or chunked): over it 413 */
};

/* Called for each complete request, in order. req is the parser's and valid during the
 * call only, like everything it points to (the parser's buffer); the callback may fill
 * its connection fields (peer, peer_ip, received_at_ms) before handing it on. Returns 0
 * to go on parsing, non-zero to stop: the bytes after this request are not parsed. */
typedef int (*http_reqparser_request_fn)(void *ud, struct http_request *req);
/* Called when a request's headers say "Expect: 100-continue" and its body may come. */
typedef void (*http_reqparser_continue_fn)(void *ud);

#define HTTP_REQPARSER_HEADERS 16 /* the headers clickd reads (http.c) */

struct http_reqparser_span {
	uint32_t off;
	uint32_t len;
	bool seen;
	bool repeated;
};

/*
 * One connection's request parser. The caller owns the struct (embedded, not
 * allocated); the parser owns `buf`: the URL, the values of the headers clickd reads and
 * the body of the request being parsed, at offsets (it moves when it grows), grown as
 * needed up to the sum of the limits and reused from one request to the next; released by
 * http_reqparser_close. The fields are private: use the functions below (the fuzzer
 * reads buf/len to check that requests point into it).
 */
struct http_reqparser {
	http_parser parser;
	struct http_reqparser_limits limits;
	http_reqparser_request_fn on_request;
	http_reqparser_continue_fn on_continue;
	void *ud;

	char *buf;
	size_t len, cap;
	size_t url_len;
	size_t header_bytes;
	size_t header_count;
	struct http_reqparser_span headers[HTTP_REQPARSER_HEADERS];
	char field[40];
	size_t field_len;
	int cur_header;    /* the kept header whose value is being read, or -1 */
	int piece;         /* what the last header callback read: 0 none, 1 a name, 2 a value */
	bool headers_done; /* fields after this are chunked trailers: counted, not kept */
	size_t body_off, body_len;
	bool body_started;
	bool in_message;
	enum http_req_method method; /* of the request being parsed */
	uint64_t progress;           /* requests begun plus requests completed */
	struct http_request req;     /* handed to on_request */

	int result; /* 0, HTTP_REQPARSER_STOPPED or HTTP_REQPARSER_ERROR, sticky */
	int error_status;
	const char *error_reason;
	const char *error_payload;
	size_t error_payload_len;
	char error_text[128];
};

#define HTTP_REQPARSER_STOPPED 1
#define HTTP_REQPARSER_ERROR   (-1)

/* What a failed parse answers with. */
struct http_reqparser_error {
	int status;          /* 400, 413, 414, 431, or 503 when out of memory */
	const char *reason;  /* one line; valid until the parser is used again */
	const char *payload; /* what was received of the bad request: the parser's buffer, or
	                        for input that is not HTTP the data of the failing feed */
	size_t payload_len;
};

/* Readies p for a connection. on_continue may be NULL; limits are copied. */
void http_reqparser_init(struct http_reqparser *p, const struct http_reqparser_limits *limits,
                         http_reqparser_request_fn on_request,
                         http_reqparser_continue_fn on_continue, void *ud);

/* Parses the next len bytes of the connection. Returns 0 when all were taken (the last
 * request may be incomplete), HTTP_REQPARSER_STOPPED when on_request asked to stop, or
 * HTTP_REQPARSER_ERROR when the input broke a limit or is not HTTP (see
 * http_reqparser_error). Either end is final: later calls take nothing and return it. */
int http_reqparser_feed(struct http_reqparser *p, const char *data, size_t len);

/* Fills out after HTTP_REQPARSER_ERROR. */
void http_reqparser_error(const struct http_reqparser *p, struct http_reqparser_error *out);

/* True while a request has begun and is not complete. */
bool http_reqparser_in_message(const struct http_reqparser *p);

/* What was received of the request in progress (URL and kept header values and body as
 * stored; borrowed), for the dead letter of a request that never completes. */
void http_reqparser_partial(const struct http_reqparser *p, const char **data, size_t *len);

/* Requests begun plus requests completed so far: when it changes, a request began or
 * ended (the idle timer restarts then, not on every read). */
uint64_t http_reqparser_progress(const struct http_reqparser *p);

/* The method of the request being parsed (HTTP_REQ_OTHER before its request line): an
 * error answer to a HEAD request carries no body. */
enum http_req_method http_reqparser_method(const struct http_reqparser *p);

/* Releases the buffer. p may be initialised again. */
void http_reqparser_close(struct http_reqparser *p);

/* ---- the server ---- */

struct http_server;
struct http_conn;

/* Handles one complete request; must call http_respond exactly once before returning. */
typedef void (*http_handler_fn)(void *ud, struct http_conn *conn, const struct http_request *req);

/* Called with a limit violation or a protocol error before the request reaches the
 * handler, to dead-letter it (may be NULL). payload is what was received of it; its first
 * target_len bytes are the request target (path and query) when they are known, else
 * target_len is 0. */
typedef void (*http_reject_fn)(void *ud, int status, const char *reason, const char *peer_ip,
                               const char *payload, size_t payload_len, size_t target_len);

struct http_limits {
	size_t max_connections;
	/* Connections open over every server that shares this counter (the ingest threads'
	 * servers share one budget of max_connections); NULL: this server's own count. */
	_Atomic size_t *shared_open;
	size_t max_header_bytes;
	size_t max_headers;
	size_t max_url_bytes;
	size_t max_body_bytes;
	uint64_t idle_timeout_ms;
	bool collect_metrics; /* count bytes, connections and statuses (collect listener) */
	/* Deferred answers (http_defer) waiting on one connection at which reading from it
	 * pauses; 0: no limit but the bytes they hold. */
	size_t max_deferred;
};

/* Starts serving the listening socket fd (takes ownership); fd -1: no listener, connections
 * come only through http_server_adopt. name is for logs ("http", "admin"). Returns 0 or a
 * negative libuv error. */
int http_server_new(uv_loop_t *loop, int fd, const char *name, const struct http_limits *limits,
                    http_handler_fn handler, http_reject_fn reject, void *ud,
                    struct http_server **out);

/* Stops accepting; idle connections close now, busy ones after their current request (or
 * when `drain_timeout_ms` passes). `done` is called once every handle is closed and the
 * server freed. */
void http_server_close(struct http_server *srv, uint64_t drain_timeout_ms, void (*done)(void *arg),
                       void *arg);

/* Serves the connected stream socket fd (takes ownership: closed on every failure) as if
 * the listener had accepted it, within max_connections (past it the client is refused like
 * any other). peer: the client's address (NULL: getpeername). For the fuzzer, which drives
 * the whole connection handler through one end of a socketpair (tests/fuzz/
 * fuzz_http_conn.c). Returns 0 or a negative libuv error (UV_EBUSY: refused). */
int http_server_adopt(struct http_server *srv, int fd, const struct sockaddr *peer);

/* Queues the answer to the request being handled. */
void http_respond(struct http_conn *conn, const struct http_response *resp);

/* The lower-case name of a client IP header ("x-real-ip", ...); "?" out of range. */
const char *http_ip_header_name(enum http_ip_header h);

/*
 * Deferred answers (kafka.ack_mode=kafka). Instead of http_respond, a handler may defer the
 * answer to the request being handled: the answer keeps its place in the connection's
 * order, and the answers to later (pipelined) requests wait behind it. `headers` (extra
 * header lines, each ending in "\r\n"; copied) are sent with the eventual answer, before
 * its own. Returns a handle (never 0) for http_respond_deferred, or 0 when the answer
 * cannot be deferred (out of memory, connection closing): then answer now.
 *
 * Ownership: the connection keeps the handle valid until either the handler answers it
 * (http_respond_deferred, exactly once, from the server's loop) or the connection closes
 * first (the client went away, a write failed, a drain timeout): then the server calls its
 * cancel callback with the tag given here, and the handler must forget the handle (the
 * connection's memory goes later, with its close callbacks). A connection with deferred
 * answers is busy: the idle timer does not end it (the handler bounds the wait), and
 * http_server_close waits for them up to its drain timeout. Reading from it pauses while
 * limits.max_deferred answers wait.
 */
typedef void (*http_cancel_fn)(void *ud, uint64_t tag);
/* The server's cancel callback (ud is the handler's); set before answers are deferred. */
void http_server_set_cancel(struct http_server *srv, http_cancel_fn cancel);
uint64_t http_defer(struct http_conn *conn, const char *headers, size_t headers_len, uint64_t tag);
/* Answers a deferred request: resp->headers come after those given to http_defer. */
void http_respond_deferred(struct http_conn *conn, uint64_t handle,
                           const struct http_response *resp);

/* The reason phrase of a status code. */
const char *http_status_text(int status);

/* Open connections (for metrics and tests). */
size_t http_server_connections(const struct http_server *srv);

/* New limits (a reload), from the server's loop thread: they apply to connections
 * accepted from now on and to the idle timer; a connection keeps the header, URL and body
 * limits it was accepted with until it closes. */
void http_server_set_limits(struct http_server *srv, const struct http_limits *limits);

#endif
