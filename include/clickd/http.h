/*
 * http.h - an HTTP/1.1 server on libuv and http-parser, shared by the collect listener
 * (ingest_http.c) and the admin listener (admin.c), which differ only in their handler.
 *
 * One server per loop; it owns its connections. Keep-alive and pipelining: requests of a
 * connection are parsed in order and their answers queued in order; the answers produced
 * while parsing one read are sent with one write. Limits on header bytes (431), URL bytes
 * (414), body bytes (413) and idle time (408 or a quiet close) are enforced here, before
 * the handler sees a request. Memory: per connection one request buffer (URL, the headers
 * clickd reads, body), reused across requests and bounded by the limits, and two output
 * buffers; nothing is allocated per request once a connection is warm.
 */
#ifndef CLICKD_HTTP_H
#define CLICKD_HTTP_H

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
	bool gpc; /* Sec-GPC: 1 or DNT: 1 */
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

struct http_server;
struct http_conn;

/* Handles one complete request; must call http_respond exactly once before returning. */
typedef void (*http_handler_fn)(void *ud, struct http_conn *conn, const struct http_request *req);

/* Called with a limit violation or a protocol error before the request reaches the
 * handler, to dead-letter it (may be NULL). payload is what was received of it. */
typedef void (*http_reject_fn)(void *ud, int status, const char *reason, const char *peer_ip,
                               const char *payload, size_t payload_len);

struct http_limits {
	size_t max_connections;
	size_t max_header_bytes;
	size_t max_url_bytes;
	size_t max_body_bytes;
	uint64_t idle_timeout_ms;
	bool collect_metrics; /* count bytes, connections and statuses (collect listener) */
};

/* Starts serving the listening socket fd (takes ownership). name is for logs ("http",
 * "admin"). Returns 0 or a negative libuv error. */
int http_server_new(uv_loop_t *loop, int fd, const char *name, const struct http_limits *limits,
                    http_handler_fn handler, http_reject_fn reject, void *ud,
                    struct http_server **out);

/* Stops accepting; idle connections close now, busy ones after their current request (or
 * when `drain_timeout_ms` passes). `done` is called once every handle is closed and the
 * server freed. */
void http_server_close(struct http_server *srv, uint64_t drain_timeout_ms, void (*done)(void *arg),
                       void *arg);

/* Queues the answer to the request being handled. */
void http_respond(struct http_conn *conn, const struct http_response *resp);

/* The reason phrase of a status code. */
const char *http_status_text(int status);

/* Open connections (for metrics and tests). */
size_t http_server_connections(const struct http_server *srv);

#endif
