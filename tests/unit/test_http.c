/*
 * test_http.c - the HTTP request parser's limits (struct http_reqparser, http.h), without
 * sockets: header count (http.max_headers), and that a limit does not depend on how the
 * bytes were split into reads; then the server on a loop, through socketpairs it adopts
 * (http_server_adopt): max_connections, and clients that do not read their answers. The
 * integration tests and tests/fuzz/fuzz_http_conn.c drive it further.
 */
#include "clickd/http.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct seen {
	int requests;
};

static int on_request(void *ud, struct http_request *r)
{
	struct seen *s = ud;
	(void)r;
	s->requests++;
	return 0;
}

static const struct http_reqparser_limits limits = {
    .max_header_bytes = 8192,
    .max_headers = 4,
    .max_url_bytes = 1024,
    .max_body_bytes = 1024,
};

/* A request with n header fields ("Host" and n - 1 others), then a body if chunked. */
static size_t request_with_headers(char *buf, size_t cap, int n, bool chunked, int trailers)
{
	size_t len = (size_t)snprintf(buf, cap, "POST /collect HTTP/1.1\r\nHost: x\r\n");

	for (int i = 1; i < n - (chunked ? 1 : 0); i++)
		len += (size_t)snprintf(buf + len, cap - len, "X-H%d: v\r\n", i);
	if (!chunked) {
		len += (size_t)snprintf(buf + len, cap - len, "\r\n");
		return len;
	}
	len += (size_t)snprintf(buf + len, cap - len,
	                        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n");
	for (int i = 0; i < trailers; i++)
		len += (size_t)snprintf(buf + len, cap - len, "X-T%d: v\r\n", i);
	len += (size_t)snprintf(buf + len, cap - len, "\r\n");
	return len;
}

/* Parses buf whole and one byte per feed; both must agree. Returns the result and fills e. */
static int parse_both_ways(const char *buf, size_t len, struct seen *whole,
                           struct http_reqparser_error *e)
{
	struct http_reqparser p, q;
	struct http_reqparser_error eq;
	struct seen bytes = {0};
	int rc, rq = 0;

	http_reqparser_init(&p, &limits, on_request, NULL, whole);
	rc = http_reqparser_feed(&p, buf, len);
	http_reqparser_init(&q, &limits, on_request, NULL, &bytes);
	for (size_t i = 0; i < len && rq == 0; i++)
		rq = http_reqparser_feed(&q, buf + i, 1);
	cr_assert_eq(rq, rc, "one byte per feed: %d, whole: %d", rq, rc);
	cr_assert_eq(bytes.requests, whole->requests);
	if (rc == HTTP_REQPARSER_ERROR) {
		http_reqparser_error(&p, e);
		http_reqparser_error(&q, &eq);
		cr_assert_eq(eq.status, e->status);
		cr_assert_str_eq(eq.reason, e->reason);
	}
	http_reqparser_close(&p);
	http_reqparser_close(&q);
	return rc;
}

Test(http, max_headers_fields_are_taken)
{
	char buf[1024];
	struct seen s = {0};
	struct http_reqparser_error e;
	size_t len = request_with_headers(buf, sizeof(buf), 4, false, 0);

	cr_assert_eq(parse_both_ways(buf, len, &s, &e), 0);
	cr_assert_eq(s.requests, 1);
}

Test(http, one_header_field_over_max_headers_is_431)
{
	char buf[1024];
	struct seen s = {0};
	struct http_reqparser_error e;
	size_t len = request_with_headers(buf, sizeof(buf), 5, false, 0);

	cr_assert_eq(parse_both_ways(buf, len, &s, &e), HTTP_REQPARSER_ERROR);
	cr_assert_eq(s.requests, 0);
	cr_assert_eq(e.status, 431);
	cr_assert_str_eq(e.reason, "more header fields than http.max_headers");
}

Test(http, chunked_trailers_count_toward_max_headers)
{
	char buf[1024];
	struct seen s = {0};
	struct http_reqparser_error e;
	/* Host and Transfer-Encoding, then 2 trailers: 4 fields. */
	size_t len = request_with_headers(buf, sizeof(buf), 2, true, 2);

	cr_assert_eq(parse_both_ways(buf, len, &s, &e), 0);
	cr_assert_eq(s.requests, 1);
	len = request_with_headers(buf, sizeof(buf), 2, true, 3);
	s.requests = 0;
	cr_assert_eq(parse_both_ways(buf, len, &s, &e), HTTP_REQPARSER_ERROR);
	cr_assert_eq(e.status, 431);
}

Test(http, the_header_count_starts_again_with_each_request)
{
	char buf[2048];
	struct seen s = {0};
	struct http_reqparser_error e;
	size_t len = request_with_headers(buf, sizeof(buf), 4, false, 0);

	memcpy(buf + len, buf, len);
	memcpy(buf + 2 * len, buf, len);
	cr_assert_eq(parse_both_ways(buf, 3 * len, &s, &e), 0);
	cr_assert_eq(s.requests, 3);
}

/* ---- the server, through socketpairs (http_server_adopt) ---- */

static char big_body[64 * 1024];

/* Answers /big with 64 KiB, anything else with 204. */
static void handler(void *ud, struct http_conn *conn, const struct http_request *req)
{
	struct http_response resp = {.status = 204};
	int *handled = ud;

	(*handled)++;
	if (req->path_len == 4 && memcmp(req->path, "/big", 4) == 0) {
		resp.status = 200;
		resp.content_type = "application/octet-stream";
		resp.body = big_body;
		resp.body_len = sizeof(big_body);
	}
	http_respond(conn, &resp);
}

struct server_fixture {
	uv_loop_t loop;
	struct http_server *srv;
	int handled;
	bool done;
};

static void server_done(void *arg)
{
	*(bool *)arg = true;
}

static void fixture_start(struct server_fixture *f, size_t max_connections,
                          uint64_t idle_timeout_ms)
{
	const struct http_limits server_limits = {
	    .max_connections = max_connections,
	    .max_header_bytes = 8192,
	    .max_headers = 100,
	    .max_url_bytes = 1024,
	    .max_body_bytes = 1024,
	    .idle_timeout_ms = idle_timeout_ms,
	};

	cr_assert_eq(uv_loop_init(&f->loop), 0);
	cr_assert_eq(http_server_new(&f->loop, -1, "test", &server_limits, handler, NULL,
	                             &f->handled, &f->srv),
	             0);
}

static void fixture_stop(struct server_fixture *f)
{
	http_server_close(f->srv, 1000, server_done, &f->done);
	while (!f->done)
		uv_run(&f->loop, UV_RUN_ONCE);
	cr_assert_eq(uv_loop_close(&f->loop), 0, "a handle outlived the server");
}

/* A connected pair: [0] adopted by the server, [1] the client's (non-blocking). */
static int adopt(struct server_fixture *f, int *client)
{
	int fds[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	cr_assert_eq(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
	*client = fds[1];
	return http_server_adopt(f->srv, fds[0], NULL);
}

/* Reads what is there; returns the bytes, 0 at the end, -1 when nothing yet. */
static ssize_t drain(int fd, size_t *total)
{
	static char buf[65536];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);

	if (n > 0)
		*total += (size_t)n;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -1;
	return n < 0 ? 0 : n; /* a reset is an end too */
}

Test(http, an_adopted_connection_is_served_and_one_past_max_connections_refused)
{
	static const char get[] = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
	struct server_fixture f = {0};
	char answer[512];
	size_t got = 0;
	int a, b;
	ssize_t n;

	fixture_start(&f, 1, 60000);
	cr_assert_eq(adopt(&f, &a), 0);
	cr_assert_eq(http_server_connections(f.srv), 1);
	cr_assert_eq(adopt(&f, &b), UV_EBUSY);
	cr_assert_eq(http_server_connections(f.srv), 1);
	/* The refused client reads a clear answer, then the end. */
	n = recv(b, answer, sizeof(answer) - 1, 0);
	cr_assert_gt(n, 0);
	answer[n] = '\0';
	cr_assert(strstr(answer, "HTTP/1.1 503 Service Unavailable\r\n") == answer, "%s", answer);
	cr_assert(strstr(answer, "Retry-After: 1\r\n") != NULL);
	cr_assert(strstr(answer, "too many connections") != NULL);
	cr_assert_eq(recv(b, answer, sizeof(answer), 0), 0);
	close(b);

	cr_assert_eq(send(a, get, sizeof(get) - 1, 0), (ssize_t)(sizeof(get) - 1));
	while (f.handled == 0)
		uv_run(&f.loop, UV_RUN_ONCE);
	while (got == 0)
		if (drain(a, &got) < 0)
			uv_run(&f.loop, UV_RUN_NOWAIT);
	cr_assert_eq(f.handled, 1);
	close(a);
	fixture_stop(&f);
}

Test(http, a_client_that_does_not_read_its_answers_is_closed_at_the_idle_timeout)
{
	static const char get[] = "GET /big HTTP/1.1\r\nHost: h\r\n\r\n";
	struct server_fixture f = {0};
	size_t got = 0;
	int client, sent = 0;

	fixture_start(&f, 4, 50);
	cr_assert_eq(adopt(&f, &client), 0);
	/* One request per read, 64 answers of 64 KiB, none of them read: far more than the
	 * socket holds plus the 1 MiB the server keeps before it stops reading. */
	for (; sent < 64; sent++) {
		if (send(client, get, sizeof(get) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(get) - 1))
			break; /* closed already */
		for (int k = 0; k < 20; k++)
			uv_run(&f.loop, UV_RUN_NOWAIT);
	}
	/* The server must end the connection by itself. */
	while (http_server_connections(f.srv) > 0)
		uv_run(&f.loop, UV_RUN_ONCE);
	cr_assert_lt(f.handled, 64, "the server kept reading while its answers piled up");
	/* What it sent is readable, then the end. */
	while (drain(client, &got) != 0)
		uv_run(&f.loop, UV_RUN_NOWAIT);
	cr_assert_lt(got, (size_t)f.handled * sizeof(big_body));
	close(client);
	fixture_stop(&f);
}

Test(http, a_408_the_client_does_not_read_still_ends_the_connection)
{
	struct server_fixture f = {0};
	static char requests[64 * 32];
	size_t len = 0, got = 0;
	int client;

	/* Answers the client does not read, then half a request: the 408 cannot be sent
	 * either. */
	for (int i = 0; i < 40; i++)
		len += (size_t)snprintf(requests + len, sizeof(requests) - len,
		                        "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
	len += (size_t)snprintf(requests + len, sizeof(requests) - len, "GET /half HTTP/1.1\r\n");
	fixture_start(&f, 4, 50);
	cr_assert_eq(adopt(&f, &client), 0);
	cr_assert_eq(send(client, requests, len, 0), (ssize_t)len);
	while (http_server_connections(f.srv) > 0)
		uv_run(&f.loop, UV_RUN_ONCE);
	while (drain(client, &got) != 0)
		uv_run(&f.loop, UV_RUN_NOWAIT);
	close(client);
	fixture_stop(&f);
}
