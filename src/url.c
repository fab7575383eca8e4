/*
 * url.c - percent-decoding, query strings and URL splitting (see url.h).
 *
 * Everything here is a pure function over caller-owned buffers: no allocation, no global
 * state, safe from any thread. A bad escape is always refused, never repaired by a guess.
 * What the decoded bytes may be is the caller's rule: url_decode and url_query_parse refuse
 * NUL and invalid UTF-8; url_query_parse_text applies the config's text rules (text.h:
 * refuse, or replace with U+FFFD), so what reaches the sinks is always valid UTF-8 without
 * control characters (event.h's invariant).
 */
#include "clickd/url.h"

#include "clickd/text.h"

#include <errno.h>
#include <string.h>

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes in into out; with reject_nul a NUL (raw or %00) is -EINVAL. The bytes
 * are not judged otherwise: the caller checks them. */
static int decode_bytes(const char *in, size_t len, char *out, size_t cap, bool plus_is_space,
                        bool reject_nul, size_t *out_len)
{
	size_t i = 0, n = 0;

	/* Writing never runs ahead of reading (n <= i), so out may be in. */
	while (i < len) {
		unsigned char c = (unsigned char)in[i];

		if (c == '%') {
			int hi, lo;

			if (len - i < 3)
				return -EINVAL;
			hi = hex_value((unsigned char)in[i + 1]);
			lo = hex_value((unsigned char)in[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (unsigned char)(hi << 4 | lo);
			if (c == 0 && reject_nul)
				return -EINVAL;
			i += 3;
		} else if (c == 0 && reject_nul) {
			return -EINVAL;
		} else {
			if (c == '+' && plus_is_space)
				c = ' ';
			i++;
		}
		if (n >= cap)
			return -ENOSPC;
		out[n++] = (char)c;
	}
	*out_len = n;
	return 0;
}

int url_decode(const char *in, size_t len, char *out, size_t cap, bool plus_is_space,
               size_t *out_len)
{
	size_t n;
	int rc = decode_bytes(in, len, out, cap, plus_is_space, true, &n);

	if (rc < 0)
		return rc;
	if (!url_utf8_valid(out, n))
		return -EILSEQ;
	*out_len = n;
	return 0;
}

/*
 * Strict UTF-8 (RFC 3629, Unicode table 3-7): the second byte's range depends on the lead
 * byte, which is what excludes overlong forms (E0 80..9F, F0 80..8F), surrogates
 * (ED A0..BF) and code points above U+10FFFF (F4 90..BF, F5..FF). C0 and C1 never lead.
 */
bool url_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		unsigned char lo = 0x80, hi = 0xBF;
		size_t need;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2;
			if (c == 0xE0)
				lo = 0xA0;
			else if (c == 0xED)
				hi = 0x9F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3;
			if (c == 0xF0)
				lo = 0x90;
			else if (c == 0xF4)
				hi = 0x8F;
		} else {
			return false;
		}
		if (len - i - 1 < need)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= need; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xBF)
				return false;
		i += need + 1;
	}
	return true;
}

/*
 * Decodes one key or value of a query into scratch[*used..cap) and advances *used. Without
 * rules, url_decode's strict reading. With rules, the decoded bytes go through text_check:
 * clean text stays where it was decoded; text to repair is repaired into the space after
 * it (up to 3 bytes per byte) and moved back, so each piece keeps one place in scratch.
 */
static int decode_piece(const char *in, size_t len, char *scratch, size_t cap, size_t *used,
                        const struct text_rules *rules, size_t *repairs, const char **out,
                        size_t *out_len)
{
	char *dst = scratch + *used;
	size_t room = cap - *used, n, repaired_len = 0;
	int rc;

	if (rules == NULL) {
		rc = url_decode(in, len, dst, room, true, &n);
	} else {
		rc = decode_bytes(in, len, dst, room, true, false, &n);
		if (rc == 0)
			rc = text_check(dst, n, rules, &repaired_len);
		if (rc == 1) {
			if (repaired_len > room - n)
				return -ENOSPC;
			text_repair(dst, n, rules, dst + n, repaired_len);
			memmove(dst, dst + n, repaired_len);
			n = repaired_len;
			rc = 0;
			if (repairs != NULL)
				(*repairs)++;
		}
	}
	if (rc < 0)
		return rc;
	*used += n;
	*out = dst;
	*out_len = n;
	return 0;
}

static int query_parse(const char *q, size_t len, char *scratch, size_t scratch_cap,
                       const struct text_rules *rules, size_t *repairs, url_query_cb cb, void *ud)
{
	size_t pos = 0, used = 0;

	while (pos < len) {
		const char *seg = q + pos;
		const char *amp = memchr(seg, '&', len - pos);
		size_t seg_len = amp ? (size_t)(amp - seg) : len - pos;
		const char *eq, *key, *value = scratch + used;
		size_t key_raw, key_len, value_len = 0;
		int rc;

		pos += seg_len + 1;
		if (seg_len == 0)
			continue;
		eq = memchr(seg, '=', seg_len);
		key_raw = eq ? (size_t)(eq - seg) : seg_len;
		if (key_raw == 0)
			return -EINVAL;

		/* Each pair decodes into fresh scratch space, so earlier pairs stay readable
		 * until the caller reuses scratch (beacon.c relies on it). */
		rc = decode_piece(seg, key_raw, scratch, scratch_cap, &used, rules, repairs, &key,
		                  &key_len);
		if (rc < 0)
			return rc;
		value = scratch + used;
		if (eq) {
			rc = decode_piece(eq + 1, seg_len - key_raw - 1, scratch, scratch_cap,
			                  &used, rules, repairs, &value, &value_len);
			if (rc < 0)
				return rc;
		}
		rc = cb(ud, key, key_len, value, value_len);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int url_query_parse(const char *q, size_t len, char *scratch, size_t scratch_cap, url_query_cb cb,
                    void *ud)
{
	return query_parse(q, len, scratch, scratch_cap, NULL, NULL, cb, ud);
}

int url_query_parse_text(const char *q, size_t len, char *scratch, size_t scratch_cap,
                         const struct text_rules *rules, size_t *repairs, url_query_cb cb, void *ud)
{
	return query_parse(q, len, scratch, scratch_cap, rules, repairs, cb, ud);
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* A scheme per RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). */
static bool scheme_valid(const char *s, size_t len)
{
	if (len == 0 || !is_alpha((unsigned char)s[0]))
		return false;
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.')
			return false;
	}
	return true;
}

/* A registered name (or IPv4): anything but the delimiters and characters URLs never
 * carry unencoded. Non-ASCII bytes (internationalised names) are allowed. */
static bool reg_name_valid(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (strchr("[]<>\"\\{}|^`@/?#:", s[i]) != NULL)
			return false;
	return true;
}

/* The inside of "[...]": hex digits, ':' and '.' (an embedded IPv4), at least one ':'. */
static bool ipv6_literal_valid(const char *s, size_t len)
{
	bool colon = false;

	if (len < 2)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == ':')
			colon = true;
		else if (c != '.' && hex_value(c) < 0)
			return false;
	}
	return colon;
}

/* Parses the digits after ':'. An empty port ("host:/") is allowed by RFC 3986 and means
 * the scheme's default, so it reads as absent. */
static int port_parse(const char *s, size_t len, int *port)
{
	long v = 0;

	if (len == 0) {
		*port = -1;
		return 0;
	}
	if (len > 5)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 65535)
		return -EINVAL;
	*port = (int)v;
	return 0;
}

static int authority_split(const char *a, size_t len, struct url_parts *out)
{
	const char *host, *rest;
	size_t host_len, rest_len;

	/* Userinfo ends at the last '@' (a password may hold an encoded one, never a raw
	 * one, but browsers split at the last). It is skipped, never returned. */
	for (size_t i = len; i > 0; i--) {
		if (a[i - 1] == '@') {
			a += i;
			len -= i;
			break;
		}
	}
	if (len > 0 && a[0] == '[') {
		const char *close = memchr(a, ']', len);

		if (close == NULL)
			return -EINVAL;
		host = a + 1;
		host_len = (size_t)(close - host);
		if (!ipv6_literal_valid(host, host_len))
			return -EINVAL;
		rest = close + 1;
		rest_len = len - (size_t)(rest - a);
		if (rest_len > 0 && rest[0] != ':')
			return -EINVAL;
	} else {
		const char *colon = memchr(a, ':', len);

		host = a;
		host_len = colon ? (size_t)(colon - a) : len;
		if (!reg_name_valid(host, host_len))
			return -EINVAL;
		rest = a + host_len;
		rest_len = len - host_len;
	}
	out->host = host;
	out->host_len = host_len;
	out->port = -1;
	if (rest_len == 0)
		return 0;
	return port_parse(rest + 1, rest_len - 1, &out->port);
}

int url_split(const char *url, size_t len, struct url_parts *out)
{
	const char *p = url, *end = url + len, *auth;
	int rc;

	memset(out, 0, sizeof(*out));
	out->port = -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)url[i];

		if (c <= 0x20 || c == 0x7F)
			return -EINVAL;
	}
	if (!(len >= 2 && p[0] == '/' && p[1] == '/')) {
		const char *colon = memchr(p, ':', len);

		if (colon == NULL || !scheme_valid(p, (size_t)(colon - p)))
			return -EINVAL;
		out->scheme = p;
		out->scheme_len = (size_t)(colon - p);
		p = colon + 1;
		if (end - p < 2 || p[0] != '/' || p[1] != '/')
			return -EINVAL; /* "mailto:x", "http:host": no authority, no host */
	}
	p += 2;
	auth = p;
	while (p < end && *p != '/' && *p != '?' && *p != '#')
		p++;
	rc = authority_split(auth, (size_t)(p - auth), out);
	if (rc < 0)
		return rc;

	out->path = p;
	while (p < end && *p != '?' && *p != '#')
		p++;
	out->path_len = (size_t)(p - out->path);
	if (p < end && *p == '?') {
		out->query = ++p;
		while (p < end && *p != '#')
			p++;
		out->query_len = (size_t)(p - out->query);
	}
	if (p < end && *p == '#') {
		out->fragment = p + 1;
		out->fragment_len = (size_t)(end - out->fragment);
	}
	return 0;
}

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Drops a leading "www." and a trailing '.' (the absolute form of a DNS name). */
static void host_trim(const char **h, size_t *len)
{
	static const char www[] = "www.";

	if (*len > 4) {
		size_t i = 0;

		while (i < 4 && lower((unsigned char)(*h)[i]) == (unsigned char)www[i])
			i++;
		if (i == 4) {
			*h += 4;
			*len -= 4;
		}
	}
	if (*len > 1 && (*h)[*len - 1] == '.')
		(*len)--;
}

bool url_host_same_site(const char *a, size_t a_len, const char *b, size_t b_len)
{
	host_trim(&a, &a_len);
	host_trim(&b, &b_len);
	if (a_len != b_len || a_len == 0)
		return false;
	for (size_t i = 0; i < a_len; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return false;
	return true;
}
