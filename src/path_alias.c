/*
 * path_alias.c - http.path_aliases parsing and resolution (see path_alias.h).
 */
#include "clickd/path_alias.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* The characters of a path segment (RFC 3986 pchar, without ':') and '/'. */
static bool path_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("/-._~!$&'()*+;=@%", c) != NULL;
}

static bool path_ok(const char *s, size_t len)
{
	if (len == 0 || len >= PATH_ALIAS_MAX_BYTES || s[0] != '/')
		return false;
	if (len > 1 && s[len - 1] == '/')
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\0' || !path_char(s[i]))
			return false;
	return true;
}

/* Checks one pair and fills *a; the pairs before it are out[0..n). */
static int alias_check(const char *item, size_t item_len, const char *key,
                       path_route_kind_fn route_kind, const struct path_alias *out, size_t n,
                       struct path_alias *a, char *err, size_t errlen)
{
	const char *colon = memchr(item, ':', item_len);
	enum path_route_kind target, self;

	if (!colon || memchr(colon + 1, ':', item_len - (size_t)(colon - item) - 1))
		return fail(err, errlen, "%s: '%.*s' is not alias:route", key, (int)item_len, item);
	memset(a, 0, sizeof(*a));
	a->from_len = (size_t)(colon - item);
	a->to_len = item_len - a->from_len - 1;
	if (!path_ok(item, a->from_len) || !path_ok(colon + 1, a->to_len))
		return fail(err, errlen,
		            "%s: '%.*s': paths start with '/', do not end with '/' and hold at "
		            "most %d URL path characters",
		            key, (int)item_len, item, PATH_ALIAS_MAX_BYTES - 1);
	memcpy(a->from, item, a->from_len);
	memcpy(a->to, colon + 1, a->to_len);
	target = route_kind(a->to, a->to_len);
	if (target != PATH_ROUTE && target != PATH_ROUTE_PREFIX)
		return fail(err, errlen, "%s: '%s' is no collect route", key, a->to);
	a->prefix = target == PATH_ROUTE_PREFIX;
	self = route_kind(a->from, a->from_len);
	if (self == PATH_ROUTE || self == PATH_ROUTE_PREFIX ||
	    (a->prefix && self == PATH_ROUTE_PARENT))
		return fail(err, errlen, "%s: alias '%s' shadows a route", key, a->from);
	for (size_t i = 0; i < n; i++)
		if (out[i].from_len == a->from_len &&
		    memcmp(out[i].from, a->from, a->from_len) == 0)
			return fail(err, errlen, "%s: alias '%s' given twice", key, a->from);
	return 0;
}

int path_alias_parse(const char *spec, const char *key, path_route_kind_fn route_kind,
                     struct path_alias *out, size_t max, size_t *count, char *err, size_t errlen)
{
	const char *s = spec;
	size_t n = 0;

	*count = 0;
	while (*s) {
		const char *end;

		while (*s == ' ' || *s == ',' || *s == '\t')
			s++;
		if (!*s)
			break;
		for (end = s; *end && *end != ',' && *end != ' ' && *end != '\t'; end++)
			;
		if (n == max)
			return fail(err, errlen, "%s: more than %zu aliases", key, max);
		if (alias_check(s, (size_t)(end - s), key, route_kind, out, n, &out[n], err,
		                errlen) < 0)
			return -EINVAL;
		n++;
		s = end;
	}
	*count = n;
	return 0;
}

bool path_alias_resolve(const struct path_alias *table, size_t count, const char *path, size_t len,
                        char *out, size_t cap, size_t *out_len)
{
	const struct path_alias *best = NULL;

	for (size_t i = 0; i < count; i++) {
		const struct path_alias *a = &table[i];

		if (!a->prefix && a->from_len == len && memcmp(a->from, path, len) == 0) {
			if (a->to_len > cap)
				return false;
			memcpy(out, a->to, a->to_len);
			*out_len = a->to_len;
			return true;
		}
		/* "/" as a prefix alias cannot be: "/" is a route parent. */
		if (a->prefix && len > a->from_len + 1 && memcmp(a->from, path, a->from_len) == 0 &&
		    path[a->from_len] == '/' && (!best || a->from_len > best->from_len))
			best = a;
	}
	if (!best)
		return false;
	if (best->to_len + (len - best->from_len) > cap)
		return false;
	memcpy(out, best->to, best->to_len);
	memcpy(out + best->to_len, path + best->from_len, len - best->from_len);
	*out_len = best->to_len + len - best->from_len;
	return true;
}
