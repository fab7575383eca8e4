/*
 * url.h - percent-decoding, query strings and URL splitting.
 *
 * Pure functions over caller-owned buffers; no allocation, any thread. The decoders reject
 * what is malformed instead of guessing: a '%' not followed by two hex digits, an encoded
 * NUL (%00), or bytes that are not valid UTF-8 after decoding. url_query_parse_text leaves
 * the last two to the text rules of text.h (limits.invalid_utf8, limits.control_chars).
 */
#ifndef CLICKD_URL_H
#define CLICKD_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Percent-decodes in[0..len) into out (cap >= len always suffices; out may be in, to
 * decode in place). With plus_is_space, '+' becomes ' ' (form and query encoding). One
 * pass only: "%2541" becomes "%41", never "A". Returns 0 and sets *out_len, or
 * -EINVAL (bad or truncated escape, %00 or a raw NUL), -EILSEQ (not UTF-8), -ENOSPC. */
int url_decode(const char *in, size_t len, char *out, size_t cap, bool plus_is_space,
               size_t *out_len);

/* True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool url_utf8_valid(const char *s, size_t len);

/* Called once per key=value pair, with decoded, borrowed (not NUL-terminated) strings.
 * They point into the parse's scratch, each pair in its own place, so they stay readable
 * until the caller reuses scratch. A non-zero return stops the parse and is returned. */
typedef int (*url_query_cb)(void *ud, const char *key, size_t key_len, const char *value,
                            size_t value_len);

/* Parses an application/x-www-form-urlencoded string ("a=1&b=x+y"). Empty segments
 * ("a=1&&b") are skipped; a key without '=' has an empty value; an empty key ("=v") is
 * -EINVAL. Keys and values are decoded into scratch (scratch_cap >= len suffices).
 * Repeated keys are all reported, in order: the caller decides. Returns 0, a decode
 * error, or what cb returned. */
int url_query_parse(const char *q, size_t len, char *scratch, size_t scratch_cap, url_query_cb cb,
                    void *ud);

struct text_rules;

/* url_query_parse with the text rules of text.h instead of the strict reading: each
 * decoded key and value is clean UTF-8 without control characters (NUL included), or is
 * repaired by the rules (U+FFFD; counted in *repairs when not NULL), or stops the parse
 * with -EILSEQ (not UTF-8) or -EBADMSG (a control character) when the rules refuse it. A
 * repair needs room (it is written after the decoded bytes, then moved over them):
 * scratch_cap >= 4 x len suffices (else -ENOSPC). */
int url_query_parse_text(const char *q, size_t len, char *scratch, size_t scratch_cap,
                         const struct text_rules *rules, size_t *repairs, url_query_cb cb,
                         void *ud);

/* The parts of an absolute URL ("https://user@Host:8443/p/a?q=1#frag") or of a
 * scheme-relative one ("//host/p"). Every part points into the input (borrowed); an absent
 * part has len 0. host excludes the brackets of an IPv6 literal; port is -1 when absent. */
struct url_parts {
	const char *scheme;
	size_t scheme_len;
	const char *host;
	size_t host_len;
	int port;
	const char *path;
	size_t path_len;
	const char *query; /* without the '?' */
	size_t query_len;
	const char *fragment; /* without the '#' */
	size_t fragment_len;
};

/* Splits url into parts. Returns 0, or -EINVAL when it has no host, a bad port
 * (non-digits, > 65535), an unclosed IPv6 bracket, or spaces/control characters. An
 * empty port ("http://h:/") is the scheme's default, so port is -1. The host keeps its
 * case (it is borrowed): compare with url_host_same_site, lowercase in a copy. */
int url_split(const char *url, size_t len, struct url_parts *out);

/* Case-insensitive host comparison that ignores a leading "www." on either side. */
bool url_host_same_site(const char *a, size_t a_len, const char *b, size_t b_len);

#endif
