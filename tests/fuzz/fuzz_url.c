/*
 * fuzz_url.c - libFuzzer harness for url_split and url_host_same_site.
 *
 * Invariants checked (abort on failure, so the fuzzer reports a crash):
 *  - url_split answers 0 or -EINVAL; on success every part lies within the input, in
 *    order (scheme, host, path, query, fragment), the host is non-empty, the port is -1 or
 *    0..65535, the path is empty or starts with '/', the query follows a '?' and the
 *    fragment a '#', and no part holds a space or a control character;
 *  - url_host_same_site is symmetric, reflexive for non-empty hosts and blind to ASCII
 *    case. The input is split at its first byte 0x01 into two hosts (or taken whole
 *    against itself), and the hosts of the input as a URL are compared too.
 */
#include "clickd/url.h"

#include "fuzz_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool within(const char *p, size_t len, const char *s, size_t n)
{
	return len == 0 || (p != NULL && p >= s && len <= n && p + len <= s + n);
}

static bool clean(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] <= 0x20 || p[i] == 0x7f)
			return false;
	return true;
}

static void check_split(const char *s, size_t n, const struct url_parts *u)
{
	CHECK(within(u->scheme, u->scheme_len, s, n));
	CHECK(within(u->host, u->host_len, s, n));
	CHECK(within(u->path, u->path_len, s, n));
	CHECK(within(u->query, u->query_len, s, n));
	CHECK(within(u->fragment, u->fragment_len, s, n));
	CHECK(u->host_len > 0);
	CHECK(u->port >= -1 && u->port <= 65535);
	CHECK(clean(s, n));
	if (u->scheme_len > 0)
		CHECK(u->scheme == s && u->host > u->scheme + u->scheme_len);
	if (u->path_len > 0) {
		CHECK(u->path[0] == '/');
		CHECK(u->path >= u->host + u->host_len);
		CHECK(memchr(u->path, '?', u->path_len) == NULL);
		CHECK(memchr(u->path, '#', u->path_len) == NULL);
	}
	if (u->query != NULL) {
		CHECK(u->query > s && u->query[-1] == '?');
		CHECK(u->query >= u->host + u->host_len);
		CHECK(memchr(u->query, '#', u->query_len) == NULL);
	}
	if (u->fragment != NULL) {
		CHECK(u->fragment > s && u->fragment[-1] == '#');
		CHECK(u->fragment + u->fragment_len == s + n);
		if (u->query != NULL)
			CHECK(u->fragment > u->query + u->query_len);
	}
}

static void check_same_site(const char *a, size_t a_len, const char *b, size_t b_len)
{
	char *upper = malloc(a_len ? a_len : 1);
	bool ab = url_host_same_site(a, a_len, b, b_len);

	CHECK(ab == url_host_same_site(b, b_len, a, a_len));
	if (a_len > 0)
		CHECK(url_host_same_site(a, a_len, a, a_len));
	for (size_t i = 0; i < a_len; i++)
		upper[i] = (a[i] >= 'a' && a[i] <= 'z') ? (char)(a[i] - 32) : a[i];
	CHECK(url_host_same_site(upper, a_len, b, b_len) == ab);
	free(upper);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const char *sep = memchr(s, '\x01', size);
	struct url_parts u;
	int rc;

	rc = url_split(s, size, &u);
	CHECK(rc == 0 || rc == -EINVAL);
	if (rc == 0)
		check_split(s, size, &u);

	if (sep != NULL) {
		const char *b = sep + 1;
		size_t a_len = (size_t)(sep - s), b_len = size - a_len - 1;
		struct url_parts ua, ub;

		check_same_site(s, a_len, b, b_len);
		/* Two URLs: compare their hosts, as the source/medium rules do. */
		if (url_split(s, a_len, &ua) == 0 && url_split(b, b_len, &ub) == 0) {
			check_split(s, a_len, &ua);
			check_split(b, b_len, &ub);
			check_same_site(ua.host, ua.host_len, ub.host, ub.host_len);
		}
	} else {
		check_same_site(s, size, s, size);
	}
	return 0;
}
