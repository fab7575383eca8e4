/*
 * protocol.c - what the tracker protocol decoders share (see protocols.h): base64 in both
 * alphabets, JSON trees with a depth check, a compact JSON writer that always produces
 * valid JSON, and the parsing of numbers, currencies and times. Pure functions; any thread.
 */
#include "clickd/metrics.h"
#include "clickd/protocols.h"
#include "clickd/text.h"
#include "clickd/url.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 ---- */

static int base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

int protocol_base64_decode(const char *in, size_t len, char *out, size_t cap)
{
	uint32_t acc = 0;
	size_t bits = 0, n = 0, pad = 0;

	/* Padding: at most two '=' and only at the end. */
	while (len > 0 && in[len - 1] == '=' && pad < 2) {
		len--;
		pad++;
	}
	if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		int v = base64_value((unsigned char)in[i]);

		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= cap)
				return -ENOSPC;
			out[n++] = (char)(acc >> bits & 0xff);
		}
	}
	return (int)n;
}

/* ---- errors and names ---- */

void protocol_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

bool protocol_bytes_is(const char *a, size_t a_len, const char *b)
{
	return a_len == strlen(b) && memcmp(a, b, a_len) == 0;
}

/* ---- JSON in ---- */

/* The deepest nesting of the text's brackets outside strings, stopping once past max. */
static size_t json_depth(const char *s, size_t len, size_t max)
{
	size_t depth = 0, deepest = 0;
	bool in_string = false;

	for (size_t i = 0; i < len && deepest <= max; i++) {
		char c = s[i];

		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			if (++depth > deepest)
				deepest = depth;
		} else if ((c == '}' || c == ']') && depth > 0) {
			depth--;
		}
	}
	return deepest;
}

yajl_val protocol_json_parse(const char *text, size_t len, size_t max_depth, char *err,
                             size_t errlen)
{
	char msg[160];
	char *copy;
	yajl_val v;

	if (memchr(text, '\0', len) != NULL) {
		protocol_set_err(err, errlen, "not JSON: NUL byte");
		return NULL;
	}
	if (json_depth(text, len, max_depth) > max_depth) {
		protocol_set_err(err, errlen, "JSON nested deeper than %zu", max_depth);
		return NULL;
	}
	/* yajl_tree_parse reads a C string. */
	copy = malloc(len + 1);
	if (copy == NULL) {
		protocol_set_err(err, errlen, "out of memory");
		return NULL;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	msg[0] = '\0';
	v = yajl_tree_parse(copy, msg, sizeof(msg));
	free(copy);
	if (v == NULL) {
		char *nl = strchr(msg, '\n');

		if (nl)
			*nl = '\0';
		protocol_set_err(err, errlen, "not JSON: %s", msg[0] ? msg : "parse error");
	}
	return v;
}

yajl_val protocol_json_get(yajl_val obj, const char *key)
{
	if (obj == NULL || !YAJL_IS_OBJECT(obj))
		return NULL;
	for (size_t i = 0; i < obj->u.object.len; i++)
		if (strcmp(obj->u.object.keys[i], key) == 0)
			return obj->u.object.values[i];
	return NULL;
}

const char *protocol_json_text(yajl_val v, size_t *len)
{
	if (v == NULL)
		return NULL;
	if (YAJL_IS_STRING(v)) {
		*len = strlen(v->u.string);
		return v->u.string;
	}
	if (YAJL_IS_NUMBER(v)) {
		*len = strlen(v->u.number.r);
		return v->u.number.r;
	}
	return NULL;
}

/* ---- JSON out ---- */

void protocol_json_init(struct protocol_json *j, char *buf, size_t cap)
{
	memset(j, 0, sizeof(*j));
	j->buf = buf;
	j->cap = cap;
}

static void jw_bytes(struct protocol_json *j, const char *s, size_t n)
{
	if (j->len < j->cap && n <= j->cap - j->len)
		memcpy(j->buf + j->len, s, n);
	j->len += n;
}

static void jw_char(struct protocol_json *j, char c)
{
	if (j->len < j->cap)
		j->buf[j->len] = c;
	j->len++;
}

/* Before a value (or a key) at the current depth: the comma when one came before. */
static void jw_separate(struct protocol_json *j)
{
	uint64_t bit = (uint64_t)1 << (j->depth & 63);

	if (j->need_comma & bit)
		jw_char(j, ',');
	j->need_comma |= bit;
}

void protocol_json_open(struct protocol_json *j, char bracket)
{
	jw_separate(j);
	jw_char(j, bracket);
	j->depth++;
	j->need_comma &= ~((uint64_t)1 << (j->depth & 63));
}

void protocol_json_close(struct protocol_json *j, char bracket)
{
	j->depth--;
	jw_char(j, bracket);
}

static void jw_quoted(struct protocol_json *j, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	jw_char(j, '"');
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t seq = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;

		if (c == '"' || c == '\\') {
			jw_char(j, '\\');
			jw_char(j, (char)c);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};

			jw_bytes(j, esc, sizeof(esc));
			i++;
		} else if (c < 0x80) {
			jw_char(j, (char)c);
			i++;
		} else if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
		           (unsigned char)s[i + 1] <= 0x9F) {
			/* C1 controls (U+0080..U+009F) are escaped too: no control character
			 * reaches a record, not even inside its JSON (text.h). */
			unsigned char d = (unsigned char)s[i + 1];
			char esc[6] = {'\\', 'u', '0', '0', hex[d >> 4], hex[d & 0xf]};

			jw_bytes(j, esc, sizeof(esc));
			i += 2;
		} else if (seq <= n - i && url_utf8_valid(s + i, seq)) {
			jw_bytes(j, s + i, seq);
			i += seq;
		} else {
			jw_bytes(j, "\xef\xbf\xbd", 3); /* U+FFFD */
			i++;
		}
	}
	jw_char(j, '"');
}

void protocol_json_key(struct protocol_json *j, const char *key, size_t len)
{
	jw_separate(j);
	jw_quoted(j, key, len);
	jw_char(j, ':');
	/* The value that follows takes no comma of its own. */
	j->need_comma &= ~((uint64_t)1 << (j->depth & 63));
}

/* After a key the value must not get a comma, but the next key must: a key clears the
 * bit, the value sets it again. */
void protocol_json_string(struct protocol_json *j, const char *s, size_t len)
{
	jw_separate(j);
	jw_quoted(j, s, len);
}

/* A JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number_syntax(const char *s, size_t len)
{
	size_t i = 0;

	if (i < len && s[i] == '-')
		i++;
	if (i >= len)
		return false;
	if (s[i] == '0') {
		i++;
	} else if (s[i] >= '1' && s[i] <= '9') {
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
	} else {
		return false;
	}
	if (i < len && s[i] == '.') {
		size_t start = ++i;

		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return false;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		size_t start;

		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		start = i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return false;
	}
	return i == len;
}

void protocol_json_number(struct protocol_json *j, const char *s, size_t len)
{
	if (!json_number_syntax(s, len)) {
		protocol_json_string(j, s, len);
		return;
	}
	jw_separate(j);
	jw_bytes(j, s, len);
}

void protocol_json_value(struct protocol_json *j, yajl_val v)
{
	if (v == NULL || YAJL_IS_NULL(v)) {
		jw_separate(j);
		jw_bytes(j, "null", 4);
	} else if (YAJL_IS_TRUE(v)) {
		jw_separate(j);
		jw_bytes(j, "true", 4);
	} else if (YAJL_IS_FALSE(v)) {
		jw_separate(j);
		jw_bytes(j, "false", 5);
	} else if (YAJL_IS_STRING(v)) {
		protocol_json_string(j, v->u.string, strlen(v->u.string));
	} else if (YAJL_IS_NUMBER(v)) {
		protocol_json_number(j, v->u.number.r, strlen(v->u.number.r));
	} else if (YAJL_IS_OBJECT(v)) {
		protocol_json_open(j, '{');
		for (size_t i = 0; i < v->u.object.len; i++) {
			protocol_json_key(j, v->u.object.keys[i], strlen(v->u.object.keys[i]));
			protocol_json_value(j, v->u.object.values[i]);
		}
		protocol_json_close(j, '}');
	} else if (YAJL_IS_ARRAY(v)) {
		protocol_json_open(j, '[');
		for (size_t i = 0; i < v->u.array.len; i++)
			protocol_json_value(j, v->u.array.values[i]);
		protocol_json_close(j, ']');
	}
}

bool protocol_json_fits(const struct protocol_json *j)
{
	return j->len <= j->cap;
}

void protocol_set_json(struct event *ev, enum event_field f, const struct protocol_json *j)
{
	if (!protocol_json_fits(j) || j->len <= 2)
		return;
	if (event_set(ev, f, j->buf, j->len) < 0)
		metrics_add(METRIC_PROTOCOL_JSON_DROPPED, 1);
}

int protocol_set_text(struct event *ev, enum event_field f, const char *s, size_t len)
{
	if (s == NULL || len == 0 || event_has(ev, f))
		return 0;
	if (memchr(s, '\0', len) != NULL || !url_utf8_valid(s, len))
		return -EILSEQ;
	if (text_has_control(s, len)) {
		/* Control characters never reach a record (text.h): each becomes U+FFFD, as
		 * limits.control_chars=replace (the default) does for native beacons. */
		static const struct text_rules controls = {.replace_controls = true};
		char fixed[EVENT_ARENA_BYTES];

		len = text_repair(s, len, &controls, fixed, sizeof(fixed));
		ev->text_repaired = true;
		return event_set(ev, f, fixed, len);
	}
	return event_set(ev, f, s, len);
}

/* ---- numbers and times ---- */

bool protocol_parse_decimal(const char *s, size_t len, double *out)
{
	char copy[64];
	char *end;
	double v;

	if (len == 0 || len >= sizeof(copy))
		return false;
	/* A plain decimal only: no hex, inf, nan or spaces for strtod to take. */
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' ||
		      c == 'E'))
			return false;
	}
	memcpy(copy, s, len);
	copy[len] = '\0';
	v = strtod(copy, &end);
	if (end != copy + len || !isfinite(v))
		return false;
	*out = v;
	return true;
}

bool protocol_parse_currency(const char *s, size_t len, char out[3])
{
	if (s == NULL || len != 3)
		return false;
	for (int i = 0; i < 3; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 'a' && c <= 'z')
			c = (unsigned char)(c - 32);
		if (c < 'A' || c > 'Z')
			return false;
		out[i] = (char)c;
	}
	return true;
}

/* ms since the epoch of 2200-01-01T00:00:00Z. */
#define EPOCH_MS_MAX 7258118400000LL

bool protocol_parse_epoch_ms(const char *s, size_t len, int64_t *ms)
{
	int64_t v = 0;

	if (s == NULL || len == 0 || len > 16)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v <= 0 || v >= EPOCH_MS_MAX)
		return false;
	*ms = v;
	return true;
}

static bool digits(const char *s, size_t n, int *out)
{
	int v = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

bool protocol_parse_iso8601(const char *s, size_t len, int64_t *ms)
{
	int year, month, day, hour, minute, second, frac_ms = 0;
	size_t i = 19;
	int64_t t, offset_min = 0;

	/* YYYY-MM-DDTHH:MM:SS */
	if (s == NULL || len < 20 || s[4] != '-' || s[7] != '-' ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
		return false;
	if (!digits(s, 4, &year) || !digits(s + 5, 2, &month) || !digits(s + 8, 2, &day) ||
	    !digits(s + 11, 2, &hour) || !digits(s + 14, 2, &minute) || !digits(s + 17, 2, &second))
		return false;
	if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
	    second > 60)
		return false;
	if (i < len && s[i] == '.') {
		int scale = 100, n = 0;

		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, n++) {
			frac_ms += (s[i] - '0') * scale;
			scale /= 10;
		}
		if (n == 0)
			return false;
	}
	if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i < len && (s[i] == '+' || s[i] == '-')) {
		int oh, om;

		if (len - i != 6 || s[i + 3] != ':' || !digits(s + i + 1, 2, &oh) ||
		    !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
			return false;
		offset_min = (int64_t)(oh * 60 + om) * (s[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		return false;
	}
	if (i != len)
		return false;
	t = days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 + hour * 3600 +
	    minute * 60 + second - offset_min * 60;
	t = t * 1000 + frac_ms;
	if (t <= 0 || t >= EPOCH_MS_MAX)
		return false;
	*ms = t;
	return true;
}

/* ---- credentials ---- */

static bool text_is(const char *a, const char *b, size_t b_len)
{
	return strlen(a) == b_len && memcmp(a, b, b_len) == 0;
}

const struct config_credential *protocol_keys_find(const struct protocol_keys *keys, const char *id,
                                                   size_t id_len, const char *secret,
                                                   size_t secret_len)
{
	if (keys == NULL || secret == NULL)
		return NULL;
	for (size_t i = 0; i < keys->count; i++) {
		const struct config_credential *c = &keys->items[i];

		if (!text_is(c->secret, secret, secret_len))
			continue;
		if (id != NULL && !text_is(c->id, id, id_len))
			continue;
		return c;
	}
	return NULL;
}
