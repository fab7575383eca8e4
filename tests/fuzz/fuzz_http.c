/*
 * fuzz_http.c - libFuzzer harness for the HTTP request parser (struct http_reqparser in
 * src/http.c): the bytes a client sends on one connection, without sockets.
 *
 * Each input is parsed three times with the same limits: whole, split in two at a point
 * chosen from the input, and one byte per feed, so that every chunk boundary http-parser
 * can hand over (a name or value in pieces, empty pieces, a CRLF cut in two) is crossed.
 * The limits come from the input too: the defaults, small ones or tiny ones, so that the
 * 414/431/413 paths are reached. It aborts when an invariant breaks:
 *   - every request handed over points into the parser's buffer, and so does the payload
 *     of a limit error (a syntax error's payload is the data of the failing feed);
 *   - the URL, header bytes, header count and body limits are never exceeded by a request
 *     handed over;
 *   - an error is one of the statuses the server answers with, with a reason;
 *   - the three ways agree: the same requests (compared by digest), the same number of
 *     100-continue calls and the same end (result, status, reason; see same() for the one
 *     difference allowed).
 * White-box: it reads the parser's buf/len/url_len/header_bytes to check the invariants.
 */
#include "clickd/http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct run {
	struct http_reqparser p;
	const uint8_t *input;
	size_t input_len;
	uint64_t digest;
	size_t requests;
	size_t continues;
	int result;
	int status;
	char reason[128];
};

static void mix(uint64_t *h, const void *data, size_t len)
{
	const unsigned char *b = data;
	for (size_t i = 0; i < len; i++) {
		*h ^= b[i];
		*h *= 0x100000001b3ULL;
	}
}

static void mix_string(uint64_t *h, const char *s, size_t len)
{
	unsigned char present = s != NULL;
	mix(h, &present, 1);
	mix(h, &len, sizeof(len));
	if (s)
		mix(h, s, len);
}

/* s[0..len) lies within the parser's buffer (NULL only with len 0). */
static void check_within(const struct http_reqparser *p, const char *s, size_t len)
{
	uintptr_t lo = (uintptr_t)p->buf, hi = lo + p->len, a = (uintptr_t)s;
	if (s == NULL) {
		if (len != 0)
			abort();
		return;
	}
	if (p->buf == NULL || a < lo || a > hi || len > hi - a)
		abort();
}

static int on_request(void *ud, struct http_request *r)
{
	struct run *run = ud;
	const struct http_reqparser *p = &run->p;
	const struct http_reqparser_limits *l = &p->limits;

	check_within(p, r->path, r->path_len);
	check_within(p, r->query, r->query_len);
	check_within(p, r->body, r->body_len);
	check_within(p, r->origin, r->origin_len);
	check_within(p, r->content_type, r->content_type_len);
	check_within(p, r->cookie, r->cookie_len);
	check_within(p, r->user_agent, r->user_agent_len);
	check_within(p, r->forwarded_for, r->forwarded_for_len);
	check_within(p, r->cors_request_headers, r->cors_request_headers_len);
	if (r->path == NULL || (r->body == NULL) != (r->body_len == 0))
		abort();
	if (p->url_len > l->max_url_bytes || p->header_bytes > l->max_header_bytes ||
	    p->header_count > l->max_headers || r->body_len > l->max_body_bytes ||
	    p->len > l->max_url_bytes + l->max_header_bytes + l->max_body_bytes)
		abort();
	if (r->path_len + (r->query ? r->query_len + 1 : 0) > p->url_len)
		abort();
	if ((unsigned)r->method > HTTP_REQ_OTHER || r->peer != NULL || r->peer_ip != NULL)
		abort();
	if (http_reqparser_in_message(p))
		abort();

	run->requests++;
	mix(&run->digest, &r->method, sizeof(r->method));
	mix_string(&run->digest, r->path, r->path_len);
	mix_string(&run->digest, r->query, r->query_len);
	mix_string(&run->digest, r->body, r->body_len);
	mix_string(&run->digest, r->origin, r->origin_len);
	mix_string(&run->digest, r->content_type, r->content_type_len);
	mix_string(&run->digest, r->cookie, r->cookie_len);
	mix_string(&run->digest, r->user_agent, r->user_agent_len);
	mix_string(&run->digest, r->forwarded_for, r->forwarded_for_len);
	mix_string(&run->digest, r->cors_request_headers, r->cors_request_headers_len);
	mix(&run->digest, &r->gpc, sizeof(r->gpc));
	mix(&run->digest, &r->keep_alive, sizeof(r->keep_alive));
	/* As the server does: a request that ends the connection stops the parse. */
	return r->keep_alive ? 0 : 1;
}

static void on_continue(void *ud)
{
	struct run *run = ud;
	run->continues++;
	mix(&run->digest, "100", 3);
}

static void finish(struct run *run, const uint8_t *fed, size_t fed_len)
{
	struct http_reqparser_error e;
	uintptr_t a, lo = (uintptr_t)fed;

	run->result = run->p.result;
	if (run->result != HTTP_REQPARSER_ERROR) {
		run->status = 0;
		run->reason[0] = '\0';
		return;
	}
	http_reqparser_error(&run->p, &e);
	if (e.status != 400 && e.status != 413 && e.status != 414 && e.status != 431 &&
	    e.status != 503)
		abort();
	if (e.reason == NULL || e.reason[0] == '\0' || strlen(e.reason) >= sizeof(run->reason))
		abort();
	/* The payload is in the buffer (a limit) or in the data of the failing feed. */
	a = (uintptr_t)e.payload;
	if (e.payload_len > 0 &&
	    !(a >= lo && a <= lo + fed_len && e.payload_len <= lo + fed_len - a))
		check_within(&run->p, e.payload, e.payload_len);
	run->status = e.status;
	strcpy(run->reason, e.reason);
}

static void start(struct run *run, const struct http_reqparser_limits *limits, const uint8_t *data,
                  size_t size)
{
	memset(run, 0, sizeof(*run));
	run->input = data;
	run->input_len = size;
	run->digest = 0xcbf29ce484222325ULL;
	http_reqparser_init(&run->p, limits, on_request, on_continue, run);
}

/* Feeds data[from, to); returns the parser's result. The failing feed is remembered. */
static int feed(struct run *run, size_t from, size_t to)
{
	int rc;
	if (run->p.result != 0)
		return run->p.result;
	rc = http_reqparser_feed(&run->p, (const char *)run->input + from, to - from);
	if (rc == HTTP_REQPARSER_ERROR)
		finish(run, run->input + from, to - from);
	return rc;
}

static void end(struct run *run)
{
	if (run->p.result != HTTP_REQPARSER_ERROR)
		finish(run, NULL, 0);
	/* Once ended, the parser takes nothing more. */
	if (run->p.result != 0 &&
	    http_reqparser_feed(&run->p, "GET / HTTP/1.1\r\n\r\n", 18) != run->p.result)
		abort();
	http_reqparser_close(&run->p);
}

static bool syntax_error(const struct run *run)
{
	return strncmp(run->reason, "malformed HTTP:", 15) == 0;
}

/*
 * The runs must agree on every request and on how the parse ended. One difference is
 * allowed, and only in the bad request itself: http-parser checks a token's syntax before
 * handing it over, and the parser counts a limit when it is handed over, so a long token
 * with a bad byte further on is a 414/431/413 when it arrives in pieces and a 400 when it
 * arrives whole. Either answer refuses it.
 */
static void same(const struct run *a, const struct run *b)
{
	if (a->digest != b->digest || a->requests != b->requests || a->continues != b->continues ||
	    a->result != b->result)
		abort();
	if (a->status == b->status && strcmp(a->reason, b->reason) == 0)
		return;
	if (syntax_error(a) == syntax_error(b))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct http_reqparser_limits limit_sets[] = {
	    {.max_header_bytes = 8192,
	     .max_headers = 100,
	     .max_url_bytes = 4096,
	     .max_body_bytes = 1048576},
	    {.max_header_bytes = 1024,
	     .max_headers = 16,
	     .max_url_bytes = 256,
	     .max_body_bytes = 1024},
	    {.max_header_bytes = 64, .max_headers = 2, .max_url_bytes = 16, .max_body_bytes = 8},
	};
	static struct run whole, split, bytes;
	uint64_t h = 0xcbf29ce484222325ULL;
	const struct http_reqparser_limits *limits;
	size_t cut;

	mix(&h, data, size);
	limits = &limit_sets[h % 3];
	cut = size ? (size_t)(h >> 8) % (size + 1) : 0;

	start(&whole, limits, data, size);
	feed(&whole, 0, size);
	end(&whole);

	start(&split, limits, data, size);
	if (feed(&split, 0, cut) == 0)
		feed(&split, cut, size);
	end(&split);
	same(&whole, &split);

	start(&bytes, limits, data, size);
	for (size_t i = 0; i < size && feed(&bytes, i, i + 1) == 0; i++)
		;
	end(&bytes);
	same(&whole, &bytes);
	return 0;
}
