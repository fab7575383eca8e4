/*
 * test_redirect.c - the click redirect's allow list and target check: what is allowed,
 * and the open-redirect tricks that must not be.
 */
#include "clickd/config.h"
#include "clickd/redirect.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

static char allow[8][REDIRECT_HOST_MAX];
static size_t count;
static char err[256];

static void allow_list(const char *spec)
{
	cr_assert_eq(
	    redirect_allow_parse(spec, "http.redirect_allow", allow, 8, &count, err, sizeof(err)),
	    0, "%s", err);
}

static int check(const char *url)
{
	err[0] = '\0';
	return redirect_target_check(url, strlen(url), allow, count, err, sizeof(err));
}

Test(redirect, parses_hosts_and_wildcards_lower_cased)
{
	allow_list(" Shop.Example.COM, *.Example.org ,");
	cr_assert_eq(count, 2);
	cr_assert_str_eq(allow[0], "shop.example.com");
	cr_assert_str_eq(allow[1], "*.example.org");
}

Test(redirect, refuses_allow_entries_that_are_not_host_names)
{
	const char *bad[] = {"http://a.com", "a.com/x", "*",        "*.",
	                     "a..com",       ".a.com",  "a.com.",   "a_b.com",
	                     "*a.com",       "a.*.com", "a.com:80", "user@a.com"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(redirect_allow_parse(bad[i], "http.redirect_allow", allow, 8, &count,
		                                  err, sizeof(err)),
		             -EINVAL, "%s accepted", bad[i]);
		cr_assert(strstr(err, "http.redirect_allow"), "%s", err);
	}
}

Test(redirect, allows_listed_hosts_in_any_case_with_a_port_path_query_and_fragment)
{
	allow_list("shop.example.com,*.example.org");
	cr_assert_eq(check("https://shop.example.com/"), 0, "%s", err);
	cr_assert_eq(check("http://shop.example.com"), 0, "%s", err);
	cr_assert_eq(check("HTTPS://SHOP.Example.com:8443/a/b?utm_source=x&q=a+b#top"), 0, "%s",
	             err);
	cr_assert_eq(check("https://shop.example.com./x"), 0, "%s", err);
	cr_assert_eq(check("https://shop.example.com?x=1"), 0, "%s", err);
	cr_assert_eq(check("https://a.example.org/"), 0, "%s", err);
	cr_assert_eq(check("https://a.b.example.org/"), 0, "%s", err);
	/* Percent escapes after the host are the target's own business. */
	cr_assert_eq(check("https://shop.example.com/%2F%2Fevil.com"), 0, "%s", err);
}

Test(redirect, refuses_hosts_not_listed_with_eperm)
{
	allow_list("shop.example.com,*.example.org");
	cr_assert_eq(check("https://evil.com/"), -EPERM);
	cr_assert(strstr(err, "evil.com"), "%s", err);
	cr_assert_eq(check("https://example.org/"), -EPERM, "*.d is not d itself");
	cr_assert_eq(check("https://evilexample.org/"), -EPERM);
	cr_assert_eq(check("https://shop.example.com.evil.com/"), -EPERM);
	cr_assert_eq(check("https://xshop.example.com/"), -EPERM);
	cr_assert_eq(check("https://evil.com#@shop.example.com"), -EPERM);
	cr_assert_eq(check("https://evil.com?@shop.example.com"), -EPERM);
	cr_assert_eq(check("https://evil.com/@shop.example.com"), -EPERM);
}

Test(redirect, refuses_what_a_browser_could_read_another_way)
{
	const char *bad[] = {
	    "//evil.com",
	    "/path",
	    "",
	    "javascript:alert(1)",
	    "javascript://shop.example.com/%0aalert(1)",
	    "data:text/html,x",
	    "ftp://shop.example.com/",
	    "https:shop.example.com",
	    "https:/shop.example.com",
	    "https:///shop.example.com",
	    "https://shop.example.com@evil.com",
	    "https://user:pw@shop.example.com/",
	    "https://evil.com\\@shop.example.com",
	    "https://evil.com\\.shop.example.com",
	    "https://shop.example.com\r\nSet-Cookie: a=b",
	    "https://shop.example.com/\n",
	    "https://shop.example.com /",
	    "\thttps://shop.example.com/",
	    "https://shop.ex\xc3\xa4mple.com/",
	    "https://shop.example.com/caf\xc3\xa9",
	    "https://%73hop.example.com/",
	    "https://shop.example.com:/",
	    "https://shop.example.com:99999/",
	    "https://shop.example.com:80x/",
	    "https://[::1]/",
	    "https://shop..example.com/",
	    "https://.shop.example.com/",
	};

	allow_list("shop.example.com,*.example.com");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = check(bad[i]);
		cr_assert(rc == -EINVAL || rc == -EPERM, "%s allowed", bad[i]);
		cr_assert(err[0], "no reason for %s", bad[i]);
	}
}

Test(redirect, an_empty_allow_list_allows_nothing)
{
	allow_list("");
	cr_assert_eq(count, 0);
	cr_assert_eq(check("https://shop.example.com/"), -EPERM);
}

Test(redirect, host_matching_ignores_case_and_one_trailing_dot)
{
	allow_list("shop.example.com,*.example.org");
	cr_assert(redirect_host_allowed("SHOP.example.COM", 16, allow, count));
	cr_assert(redirect_host_allowed("shop.example.com.", 17, allow, count));
	cr_assert(!redirect_host_allowed("shop.example.com..", 18, allow, count));
	cr_assert(redirect_host_allowed("x.EXAMPLE.org", 13, allow, count));
	cr_assert(!redirect_host_allowed(".example.org", 12, allow, count));
	cr_assert(!redirect_host_allowed("", 0, allow, count));
}

Test(redirect, config_parses_http_redirect_allow)
{
	struct config cfg;
	char cerr[512];
	char *ok[] = {"http.redirect_allow=Shop.Example.com, *.example.org"};
	char *bad[] = {"http.redirect_allow=https://shop.example.com"};

	cr_assert_eq(config_load(&cfg, NULL, ok, 1, cerr, sizeof(cerr)), 0, "%s", cerr);
	cr_assert_eq(cfg.redirect_allow_count, 2);
	cr_assert_str_eq(cfg.redirect_allow[0], "shop.example.com");
	config_close(&cfg);
	cr_assert_eq(config_load(&cfg, NULL, bad, 1, cerr, sizeof(cerr)), -EINVAL);
	cr_assert(strstr(cerr, "http.redirect_allow"), "%s", cerr);
}
