/*
 * admin.c - /healthz, /readyz and /metrics on the admin listener (see admin.h).
 */
#include "clickd/admin.h"

#include "clickd/metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int admin_init(struct admin_state *st, struct sink *const *sinks)
{
	memset(st, 0, sizeof(*st));
	st->sinks = sinks;
	st->metrics_buf = malloc(ADMIN_METRICS_BYTES);
	return st->metrics_buf ? 0 : -ENOMEM;
}

void admin_close(struct admin_state *st)
{
	free(st->metrics_buf);
	st->metrics_buf = NULL;
}

static void text(struct http_conn *conn, int status, const char *body)
{
	struct http_response r = {
	    .status = status,
	    .content_type = "text/plain; charset=utf-8",
	    .body = body,
	    .body_len = strlen(body),
	};
	http_respond(conn, &r);
}

/* True when every sink can take records. */
static bool sinks_ready(const struct admin_state *st)
{
	for (struct sink *const *s = st->sinks; s && *s; s++)
		if ((*s)->ops->ready && !(*s)->ops->ready(*s))
			return false;
	return true;
}

static bool path_is(const struct http_request *req, const char *path)
{
	size_t n = strlen(path);
	return req->path_len == n && memcmp(req->path, path, n) == 0;
}

void admin_handle(void *ud, struct http_conn *conn, const struct http_request *req)
{
	struct admin_state *st = ud;

	if (req->method != HTTP_REQ_GET && req->method != HTTP_REQ_HEAD) {
		struct http_response r = {.status = 405,
		                          .content_type = "text/plain",
		                          .body = "method not allowed\n",
		                          .body_len = 19,
		                          .headers = "Allow: GET, HEAD\r\n",
		                          .headers_len = 18};
		http_respond(conn, &r);
		return;
	}
	if (path_is(req, "/healthz")) {
		text(conn, 200, "ok\n");
	} else if (path_is(req, "/readyz")) {
		if (!st->started)
			text(conn, 503, "not ready: starting\n");
		else if (st->draining)
			text(conn, 503, "not ready: draining\n");
		else if (!sinks_ready(st))
			text(conn, 503, "not ready: sink cannot take records\n");
		else
			text(conn, 200, "ready\n");
	} else if (path_is(req, "/metrics")) {
		int n = metrics_render(st->metrics_buf, ADMIN_METRICS_BYTES);
		struct http_response r = {
		    .status = n < 0 ? 500 : 200,
		    .content_type = "text/plain; version=0.0.4; charset=utf-8",
		    .body = n < 0 ? "metrics too large\n" : st->metrics_buf,
		    .body_len = n < 0 ? 18 : (size_t)n,
		};
		http_respond(conn, &r);
	} else {
		text(conn, 404, "not found\n");
	}
}
