/*
 * test_http.c - the HTTP request parser's limits (struct http_reqparser, http.h), without
 * sockets: header count (http.max_headers), and that a limit does not depend on how the
 * bytes were split into reads. The server around it is driven through real sockets by the
 * integration tests and by tests/fuzz/fuzz_http_conn.c.
 */
#include "clickd/http.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

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
