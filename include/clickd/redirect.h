/*
 * redirect.h - the click redirect's target check (GET /r?u=<url>, http.redirect_allow).
 *
 * A redirect endpoint that sends anywhere is an open redirect: phishing links borrow the
 * site's name. clickd answers 302 only to an absolute http or https URL whose host is
 * allow-listed, and refuses everything a browser might read differently from this parser:
 * scheme-relative ("//evil.com"), other schemes ("javascript:"), user info
 * ("http://good.com@evil.com"), backslashes, control characters, spaces and non-ASCII
 * bytes anywhere (no header injection into Location either). Pure: no allocation.
 */
#ifndef CLICKD_REDIRECT_H
#define CLICKD_REDIRECT_H

#include <stdbool.h>
#include <stddef.h>

#define REDIRECT_HOST_MAX 256 /* an allow-list entry, with its NUL */

/* Parses http.redirect_allow ("host, *.domain, ..."): each entry a DNS name of
 * [a-z0-9.-] (lower-cased here), optionally starting "*." for its subdomains. Returns 0
 * with *count set, or -EINVAL with a reason naming `key`. */
int redirect_allow_parse(const char *spec, const char *key, char out[][REDIRECT_HOST_MAX],
                         size_t max, size_t *count, char *err, size_t errlen);

/* True when host (len bytes, any case, one trailing dot ignored) is an entry of allow, or
 * a subdomain of a "*." entry's domain. */
bool redirect_host_allowed(const char *host, size_t len, const char allow[][REDIRECT_HOST_MAX],
                           size_t count);

/* Checks the (percent-decoded) target url[0..len). Returns 0 when a 302 may send there;
 * -EINVAL when it is no absolute http(s) URL clickd would send a browser to; -EPERM when
 * its host is not allowed. err gets a one-line reason on failure. */
int redirect_target_check(const char *url, size_t len, const char allow[][REDIRECT_HOST_MAX],
                          size_t count, char *err, size_t errlen);

#endif
