/*
 * path_alias.h - http.path_aliases: a site's own paths for the collect routes.
 *
 * Ad blockers know the tracker paths (/collect, /i, /v1/t, /g/collect); a site serves the
 * collector on paths of its own instead. An alias maps an exact path onto a route
 * ("/t/p" -> "/collect"), or, when its target is a route prefix (Segment's "/v1", whose
 * routes continue "/v1/<type>"), a prefix onto that prefix ("/a/v1/t" -> "/v1/t"). The
 * table is parsed and checked once per config load (config.c) and resolved once per
 * request before routing (ingest_http.c). Pure: no allocation, no libuv.
 */
#ifndef CLICKD_PATH_ALIAS_H
#define CLICKD_PATH_ALIAS_H

#include <stdbool.h>
#include <stddef.h>

#define PATH_ALIAS_MAX_BYTES 128 /* an alias or a target, with its NUL */

struct path_alias {
	char from[PATH_ALIAS_MAX_BYTES];
	char to[PATH_ALIAS_MAX_BYTES];
	size_t from_len, to_len;
	bool prefix; /* from + "/" + rest maps to to + "/" + rest */
};

/* What a path is to the router (the route table's answer, ingest_route_kind). */
enum path_route_kind {
	PATH_NO_ROUTE,     /* nothing is served there or below */
	PATH_ROUTE,        /* a route ("/collect", "/v1/t") */
	PATH_ROUTE_PREFIX, /* routes continue below it by one segment ("/v1") */
	PATH_ROUTE_PARENT, /* some route lies below it ("/g" for "/g/collect", "/") */
};

typedef enum path_route_kind (*path_route_kind_fn)(const char *path, size_t len);

/* Parses "alias:target, ..." (commas and spaces separate the pairs) into out[0..max),
 * checking each against route_kind: the target must be a route (exact alias) or a route
 * prefix (prefix alias); the alias must not be given twice, must not be a route itself,
 * and a prefix alias must have no route below it. Paths start with '/', hold at most
 * PATH_ALIAS_MAX_BYTES - 1 bytes of [A-Za-z0-9/._~!$&'()*+;=@%-], and do not end in '/'
 * (but "/" itself). Returns 0 with *count set, or -EINVAL with a reason naming `key`. */
int path_alias_parse(const char *spec, const char *key, path_route_kind_fn route_kind,
                     struct path_alias *out, size_t max, size_t *count, char *err, size_t errlen);

/* The route path of a request path: an exact alias first, else the longest prefix alias
 * whose from + "/" begins the path (with something after it). Writes the route's path
 * into out (cap bytes; not NUL-terminated) and returns true with *out_len set; false when
 * no alias applies or out is too small (the path is then routed as it is). */
bool path_alias_resolve(const struct path_alias *table, size_t count, const char *path, size_t len,
                        char *out, size_t cap, size_t *out_len);

#endif
