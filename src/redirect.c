/*
 * redirect.c - the click redirect's allow list and target check (see redirect.h).
 */
#include "clickd/redirect.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

static bool host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.';
}

/* A DNS name: labels of host_char, no empty label. */
static bool dns_name(const char *s, size_t len)
{
	if (len == 0 || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!host_char(s[i]) || (s[i] == '.' && s[i + 1] == '.'))
			return false;
	return true;
}

int redirect_allow_parse(const char *spec, const char *key, char out[][REDIRECT_HOST_MAX],
                         size_t max, size_t *count, char *err, size_t errlen)
{
	const char *s = spec;
	size_t n = 0;

	*count = 0;
	while (*s) {
		const char *end, *name;
		size_t len;

		while (*s == ' ' || *s == ',' || *s == '\t')
			s++;
		if (!*s)
			break;
		for (end = s; *end && *end != ',' && *end != ' ' && *end != '\t'; end++)
			;
		len = (size_t)(end - s);
		name = s[0] == '*' && len > 2 && s[1] == '.' ? s + 2 : s;
		if (n == max || len >= REDIRECT_HOST_MAX)
			return fail(err, errlen, -EINVAL,
			            "%s: more than %zu entries or an entry too long", key, max);
		if (!dns_name(name, (size_t)(end - name)))
			return fail(err, errlen, -EINVAL,
			            "%s: '%.*s' is not a host name or *.domain", key, (int)len, s);
		for (size_t i = 0; i < len; i++)
			out[n][i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
		out[n][len] = '\0';
		n++;
		s = end;
	}
	*count = n;
	return 0;
}

bool redirect_host_allowed(const char *host, size_t len, const char allow[][REDIRECT_HOST_MAX],
                           size_t count)
{
	if (len > 1 && host[len - 1] == '.')
		len--;
	if (!dns_name(host, len))
		return false;
	for (size_t i = 0; i < count; i++) {
		const char *a = allow[i];
		size_t n = strlen(a);

		if (a[0] == '*') { /* "*.d": a host ending in ".d", with a label before it */
			n--;
			if (len > n && strncasecmp(host + len - n, a + 1, n) == 0)
				return true;
		} else if (len == n && strncasecmp(host, a, n) == 0) {
			return true;
		}
	}
	return false;
}

int redirect_target_check(const char *url, size_t len, const char allow[][REDIRECT_HOST_MAX],
                          size_t count, char *err, size_t errlen)
{
	const char *p, *end = url + len, *host, *host_end, *auth_end;

	/* Printable ASCII only, no backslash (browsers read it as '/'): nothing in the URL
	 * can be read two ways or break the Location header. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f ||
		    url[i] == '\\')
			return fail(err, errlen, -EINVAL,
			            "redirect target holds a control, space, backslash or "
			            "non-ASCII byte");
	if (len >= 7 && strncasecmp(url, "http://", 7) == 0)
		p = url + 7;
	else if (len >= 8 && strncasecmp(url, "https://", 8) == 0)
		p = url + 8;
	else
		return fail(err, errlen, -EINVAL, "redirect target is not an http(s) URL");
	for (auth_end = p;
	     auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#'; auth_end++)
		if (*auth_end == '@')
			return fail(err, errlen, -EINVAL, "redirect target carries user info");
	host = p;
	host_end = memchr(host, ':', (size_t)(auth_end - host));
	if (host_end) { /* a port: 1 to 5 digits, at most 65535 */
		size_t digits = (size_t)(auth_end - host_end - 1);
		long port = 0;

		if (digits == 0 || digits > 5)
			return fail(err, errlen, -EINVAL, "redirect target has a bad port");
		for (const char *d = host_end + 1; d < auth_end; d++) {
			if (*d < '0' || *d > '9')
				return fail(err, errlen, -EINVAL, "redirect target has a bad port");
			port = port * 10 + (*d - '0');
		}
		if (port > 65535)
			return fail(err, errlen, -EINVAL, "redirect target has a bad port");
	} else {
		host_end = auth_end;
	}
	if (host_end == host)
		return fail(err, errlen, -EINVAL, "redirect target has no host");
	if (!redirect_host_allowed(host, (size_t)(host_end - host), allow, count))
		return fail(err, errlen, -EPERM, "redirect target host %.*s is not allowed",
		            (int)(host_end - host > 100 ? 100 : host_end - host), host);
	return 0;
}
