/*
 * test_path_alias.c - http.path_aliases: parsing, the checks against the routes (a fake
 * route table here, and the real one through config_load), and resolution.
 */
#include "clickd/config.h"
#include "clickd/path_alias.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

/* Routes: /collect, /i, /g/collect, and the prefix /v1 (/v1/t, /v1/batch, ...). */
static enum path_route_kind fake_routes(const char *path, size_t len)
{
	static const char *const exact[] = {"/collect", "/i", "/g/collect", "/v1/t", "/v1/batch"};

	for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
		if (strlen(exact[i]) == len && memcmp(exact[i], path, len) == 0)
			return PATH_ROUTE;
	if (len == 3 && memcmp(path, "/v1", 3) == 0)
		return PATH_ROUTE_PREFIX;
	if ((len == 1 && path[0] == '/') || (len == 2 && memcmp(path, "/g", 2) == 0))
		return PATH_ROUTE_PARENT;
	return PATH_NO_ROUTE;
}

static struct path_alias table[8];
static size_t count;
static char err[256];

static int parse(const char *spec)
{
	err[0] = '\0';
	return path_alias_parse(spec, "http.path_aliases", fake_routes, table, 8, &count, err,
	                        sizeof(err));
}

static void assert_resolves(const char *path, const char *want)
{
	char out[256];
	size_t len = 0;
	bool hit = path_alias_resolve(table, count, path, strlen(path), out, sizeof(out), &len);

	if (want == NULL) {
		cr_assert(!hit, "%s resolved to %.*s", path, (int)len, out);
		return;
	}
	cr_assert(hit, "%s did not resolve", path);
	cr_assert_eq(len, strlen(want), "%s -> %.*s", path, (int)len, out);
	cr_assert(memcmp(out, want, len) == 0, "%s -> %.*s", path, (int)len, out);
}

Test(path_alias, parses_exact_and_prefix_aliases_by_what_their_target_is)
{
	cr_assert_eq(parse(" /t/p:/collect, /x/i:/i,/a/v1:/v1  "), 0, "%s", err);
	cr_assert_eq(count, 3);
	cr_assert(!table[0].prefix);
	cr_assert(!table[1].prefix);
	cr_assert(table[2].prefix);
	cr_assert_str_eq(table[2].from, "/a/v1");
	cr_assert_str_eq(table[2].to, "/v1");
}

Test(path_alias, an_empty_list_is_no_alias)
{
	cr_assert_eq(parse(""), 0);
	cr_assert_eq(count, 0);
	cr_assert_eq(parse(" , "), 0);
	cr_assert_eq(count, 0);
	assert_resolves("/collect", NULL);
}

Test(path_alias, resolves_exact_aliases_only_on_the_whole_path)
{
	cr_assert_eq(parse("/t/p:/collect,/x/i:/i"), 0, "%s", err);
	assert_resolves("/t/p", "/collect");
	assert_resolves("/x/i", "/i");
	assert_resolves("/t/p/", NULL);
	assert_resolves("/t/pp", NULL);
	assert_resolves("/t", NULL);
	assert_resolves("/collect", NULL);
}

Test(path_alias, resolves_a_prefix_alias_where_the_route_continues)
{
	cr_assert_eq(parse("/a/v1:/v1,/a/v1/deep:/v1,/a/v1/x:/collect"), 0, "%s", err);
	assert_resolves("/a/v1/t", "/v1/t");
	assert_resolves("/a/v1/batch", "/v1/batch");
	assert_resolves("/a/v1/deep/t", "/v1/t"); /* the longest prefix wins */
	assert_resolves("/a/v1/x", "/collect");   /* an exact alias wins over a prefix */
	assert_resolves("/a/v1", NULL);
	assert_resolves("/a/v1/", NULL);
	assert_resolves("/a/v12/t", NULL);
}

Test(path_alias, refuses_a_target_that_is_no_route)
{
	cr_assert_eq(parse("/t:/nope"), -EINVAL);
	cr_assert(strstr(err, "http.path_aliases") && strstr(err, "'/nope' is no collect route"),
	          "%s", err);
	cr_assert_eq(parse("/t:/g"), -EINVAL, "a route parent is no route");
	cr_assert_eq(parse("/t:/"), -EINVAL);
}

Test(path_alias, refuses_an_alias_given_twice)
{
	cr_assert_eq(parse("/t:/collect, /t:/i"), -EINVAL);
	cr_assert(strstr(err, "alias '/t' given twice"), "%s", err);
}

Test(path_alias, refuses_an_alias_that_shadows_a_route)
{
	cr_assert_eq(parse("/collect:/i"), -EINVAL);
	cr_assert(strstr(err, "shadows a route"), "%s", err);
	cr_assert_eq(parse("/v1/t:/collect"), -EINVAL);
	cr_assert_eq(parse("/v1:/collect"), -EINVAL);
	/* A prefix alias with routes below it would take them over. */
	cr_assert_eq(parse("/g:/v1"), -EINVAL);
	cr_assert_eq(parse("/:/v1"), -EINVAL);
	/* An exact alias on a route parent takes only that path. */
	cr_assert_eq(parse("/g:/collect"), 0, "%s", err);
}

Test(path_alias, refuses_paths_that_are_not_plain_absolute_paths)
{
	const char *bad[] = {"t:/collect", "/t:collect", "/t/:/collect", "/t:/collect/",
	                     "/t",         "/t:/i:/i",   "/t?x:/i",      "/t#x:/i",
	                     ":/collect",  "/t:",        "/t\"x:/i"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(parse(bad[i]), -EINVAL, "%s accepted", bad[i]);
	char longer[300] = "/";
	memset(longer + 1, 'a', 130);
	strcat(longer, ":/collect");
	cr_assert_eq(parse(longer), -EINVAL);
}

Test(path_alias, refuses_more_aliases_than_the_table_holds)
{
	cr_assert_eq(parse("/a:/i,/b:/i,/c:/i,/d:/i,/e:/i,/f:/i,/g2:/i,/h:/i"), 0, "%s", err);
	cr_assert_eq(parse("/a:/i,/b:/i,/c:/i,/d:/i,/e:/i,/f:/i,/g2:/i,/h:/i,/j:/i"), -EINVAL);
}

Test(path_alias, config_checks_aliases_against_the_real_routes)
{
	struct config cfg;
	char cerr[512];
	char *ok[] = {
	    "http.path_aliases=/t/p:/collect, /x/sp:/com.snowplowanalytics.snowplow/tp2, "
	    "/x/i:/i, /a/v1:/v1, /px:/pixel.gif, /go:/r, /gg:/g/collect, /mp:/mp/collect, "
	    "/rb:/beacon/v1/batch, /seg-t:/v1/track"};
	char *bad[] = {"http.path_aliases=/t:/v2", "http.path_aliases=/i:/collect",
	               "http.path_aliases=/beacon:/v1", "http.path_aliases=/v1/batch:/collect"};

	cr_assert_eq(config_load(&cfg, NULL, ok, 1, cerr, sizeof(cerr)), 0, "%s", cerr);
	cr_assert_eq(cfg.path_alias_count, 10);
	cr_assert(cfg.path_aliases[3].prefix);
	config_close(&cfg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(config_load(&cfg, NULL, &bad[i], 1, cerr, sizeof(cerr)), -EINVAL,
		             "%s accepted", bad[i]);
		cr_assert(strstr(cerr, "http.path_aliases"), "%s", cerr);
	}
}
