/*
 * fuzz_redirect.c - libFuzzer harness for the click redirect's target check
 * (src/redirect.c) and the alias table (src/path_alias.c). The redirect part aborts when
 * a target is allowed that a browser could send elsewhere: checked here again, more
 * simply, from the bytes (absolute http(s), printable ASCII without backslash, no user
 * info, a listed host or a subdomain of the wildcard's). The alias part aborts when a
 * resolved path is not the target plus the rest of the request path.
 */
#include "clickd/path_alias.h"
#include "clickd/redirect.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static bool ends_with_ci(const char *s, size_t len, const char *tail)
{
	size_t n = strlen(tail);
	return len >= n && strncasecmp(s + len - n, tail, n) == 0;
}

static void fuzz_target(const char *url, size_t len)
{
	static char allow[2][REDIRECT_HOST_MAX];
	static size_t count;
	char err[160] = "";
	int rc;

	if (count == 0)
		CHECK(redirect_allow_parse("allowed.example.com,*.example.org", "k", allow, 2,
		                           &count, err, sizeof(err)) == 0);
	rc = redirect_target_check(url, len, allow, count, err, sizeof(err));
	CHECK(rc == 0 || rc == -EINVAL || rc == -EPERM);
	if (rc != 0) {
		CHECK(err[0] != '\0');
		return;
	}
	size_t skip = strncasecmp(url, "https://", 8) == 0 ? 8 : 7;
	CHECK(len > skip);
	CHECK(strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0);
	for (size_t i = 0; i < len; i++)
		CHECK(url[i] > 0x20 && url[i] < 0x7f && url[i] != '\\');
	const char *host = url + skip, *end = host;
	while (end < url + len && *end != '/' && *end != '?' && *end != '#')
		end++;
	CHECK(memchr(host, '@', (size_t)(end - host)) == NULL);
	const char *colon = memchr(host, ':', (size_t)(end - host));
	size_t host_len = (size_t)((colon ? colon : end) - host);
	if (host_len && host[host_len - 1] == '.')
		host_len--;
	CHECK((host_len == 19 && strncasecmp(host, "allowed.example.com", 19) == 0) ||
	      (host_len > 12 && ends_with_ci(host, host_len, ".example.org")));
}

static enum path_route_kind routes(const char *path, size_t len)
{
	if ((len == 8 && memcmp(path, "/collect", 8) == 0) ||
	    (len == 5 && !memcmp(path, "/v1/t", 5)))
		return PATH_ROUTE;
	if (len == 3 && memcmp(path, "/v1", 3) == 0)
		return PATH_ROUTE_PREFIX;
	if (len == 1 && path[0] == '/')
		return PATH_ROUTE_PARENT;
	return PATH_NO_ROUTE;
}

/* spec NUL path: parse the spec, resolve the path. */
static void fuzz_aliases(const char *s, size_t size)
{
	struct path_alias table[4];
	size_t count = 0, out_len = 0;
	const char *nul = memchr(s, '\0', size);
	char out[512], err[256] = "";

	if (!nul)
		return;
	if (path_alias_parse(s, "k", routes, table, 4, &count, err, sizeof(err)) != 0) {
		CHECK(err[0] != '\0');
		return;
	}
	const char *path = nul + 1;
	size_t len = size - (size_t)(path - s);
	if (!path_alias_resolve(table, count, path, len, out, sizeof(out), &out_len))
		return;
	CHECK(out_len <= sizeof(out));
	for (size_t i = 0; i < count; i++) {
		const struct path_alias *a = &table[i];
		if (!a->prefix && a->from_len == len && memcmp(a->from, path, len) == 0) {
			CHECK(out_len == a->to_len && memcmp(out, a->to, out_len) == 0);
			return;
		}
	}
	/* A prefix alias: out is some target + the path after its alias. */
	bool found = false;
	for (size_t i = 0; i < count && !found; i++) {
		const struct path_alias *a = &table[i];
		found = a->prefix && len > a->from_len && memcmp(a->from, path, a->from_len) == 0 &&
		        path[a->from_len] == '/' && out_len == a->to_len + len - a->from_len &&
		        memcmp(out, a->to, a->to_len) == 0 &&
		        memcmp(out + a->to_len, path + a->from_len, len - a->from_len) == 0;
	}
	CHECK(found);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy;

	if (size < 1)
		return 0;
	copy = malloc(
	    size); /* exactly size - 1 bytes readable past the selector: ASan sees overreads */
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	if (data[0] & 1)
		fuzz_aliases(copy, size - 1);
	else
		fuzz_target(copy, size - 1);
	free(copy);
	return 0;
}
