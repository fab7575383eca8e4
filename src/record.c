/*
 * record.c - JSON serialisers for the records clickd writes (see record.h, CONTRACTS.md).
 *
 * A tiny append-only JSON writer into the caller's buffer: no allocation, no locale, any
 * thread. Strings go through one escaper that validates UTF-8 as it copies: valid UTF-8 is
 * kept as is, `"` and `\` are escaped, every byte below 0x20 and DEL (0x7f) becomes a short
 * escape (\n, \t, ...) or \u00XX, and a byte that does not start a valid UTF-8 sequence
 * becomes U+FFFD. So whatever the bytes, the output is valid JSON. The worst case is 6
 * output bytes per input byte (\u00XX), which RECORD_EVENT_MAX_BYTES accounts for. A
 * dead letter's payload is the one string that may hold control characters (event strings
 * hold none: text.h); there, all but tab, LF and CR become U+FFFD too.
 *
 * The writer keeps going after the buffer is full (it only counts), so a record either fits
 * whole or the call answers -ENOSPC; the buffer then holds no promise.
 */
#include "clickd/record.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct json_out {
	char *buf;
	size_t cap;
	size_t len; /* bytes written so far (those past cap are only counted) */
	bool first; /* no key written yet in the current object */
};

static void out_bytes(struct json_out *o, const char *s, size_t n)
{
	if (o->len < o->cap && n <= o->cap - o->len)
		memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void out_char(struct json_out *o, char c)
{
	if (o->len < o->cap)
		o->buf[o->len] = c;
	o->len++;
}

static void out_cstr(struct json_out *o, const char *s)
{
	out_bytes(o, s, strlen(s));
}

/*
 * Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 when s[0] does not
 * start one within n bytes (stray continuation byte, overlong form, surrogate, > U+10FFFF,
 * or a sequence cut short). Follows the table in RFC 3629 section 4.
 */
static size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0;
	if (c < 0xe0) {
		if (n < 2 || (s[1] & 0xc0) != 0x80)
			return 0;
		return 2;
	}
	if (c < 0xf0) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80;
		unsigned char hi = c == 0xed ? 0x9f : 0xbf; /* no UTF-16 surrogates */
		if (n < 3 || s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80)
			return 0;
		return 3;
	}
	{
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80;
		unsigned char hi = c == 0xf4 ? 0x8f : 0xbf; /* nothing past U+10FFFF */
		if (n < 4 || s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80 ||
		    (s[3] & 0xc0) != 0x80)
			return 0;
		return 4;
	}
}

static void out_escaped_control(struct json_out *o, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};

	switch (c) {
	case '\b':
		out_bytes(o, "\\b", 2);
		return;
	case '\f':
		out_bytes(o, "\\f", 2);
		return;
	case '\n':
		out_bytes(o, "\\n", 2);
		return;
	case '\r':
		out_bytes(o, "\\r", 2);
		return;
	case '\t':
		out_bytes(o, "\\t", 2);
		return;
	}
	out_bytes(o, esc, sizeof(esc));
}

/*
 * True when none of the 8 bytes of w needs more than copying: no byte below 0x20, no '"',
 * no '\\', no DEL, no byte >= 0x80. Classic SWAR tests: (x - 0x01..) & ~x & 0x80.. is
 * non-zero exactly when some byte of x is zero (the borrow may mark more bytes above the
 * first, which does not matter for "any"); x = w ^ c*0x01.. turns "byte equals c" into
 * "byte is zero", and (w - 0x20*0x01..) & ~w & 0x80.. catches bytes below 0x20.
 */
static bool word_is_plain(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\'), d = w ^ (ones * 0x7f);
	uint64_t special = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b) |
	                   ((d - ones) & ~d) | w;

	return (special & high) == 0;
}

/*
 * Writes s[0..n) as a quoted JSON string. When max_in is smaller than n, the input is cut
 * to at most max_in bytes, at a character boundary: a valid sequence that would cross the
 * limit is left out whole. Runs of plain bytes are copied in one go, found 8 bytes at a
 * time (records are mostly plain ASCII: this loop was the shard's hottest).
 *
 * With only_whitespace_controls (a dead letter's payload: raw client bytes, read by people
 * with jq -r and in terminals), every control character but tab, LF and CR (escaped as
 * usual: the lines of a body stay readable) becomes U+FFFD too: NUL, ESC (terminal
 * escape sequences), the rest of C0, DEL and C1. Event strings hold none (the decoders
 * see to it), so their writer skips the check.
 */
static void out_string_cut(struct json_out *o, const char *s, size_t n, size_t max_in,
                           bool only_whitespace_controls)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t limit = n < max_in ? n : max_in;
	size_t i = 0, run = 0;

	out_char(o, '"');
	while (i < limit) {
		unsigned char c;
		size_t seq;
		uint64_t w;

		if (limit - i >= 8) {
			memcpy(&w, u + i, 8);
			if (word_is_plain(w)) {
				i += 8;
				continue;
			}
		}
		c = u[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			i++;
			continue;
		}
		out_bytes(o, s + run, i - run);
		if (c < 0x80) {
			if (c == '"' || c == '\\') {
				out_char(o, '\\');
				out_char(o, (char)c);
			} else if (only_whitespace_controls && c != '\t' && c != '\n' &&
			           c != '\r') {
				out_bytes(o, "\xef\xbf\xbd", 3); /* U+FFFD */
			} else {
				out_escaped_control(o, c);
			}
			i++;
		} else if ((seq = utf8_sequence_len(u + i, n - i)) != 0) {
			if (seq > limit - i) {
				run = i;
				break; /* would cross the cut: leave the character out */
			}
			if (only_whitespace_controls && c == 0xc2 && u[i + 1] <= 0x9f)
				out_bytes(o, "\xef\xbf\xbd", 3); /* a C1 control */
			else
				out_bytes(o, s + i, seq);
			i += seq;
		} else {
			out_bytes(o, "\xef\xbf\xbd", 3); /* U+FFFD */
			i++;
		}
		run = i;
	}
	out_bytes(o, s + run, i - run);
	out_char(o, '"');
}

static void out_string(struct json_out *o, const char *s, size_t n)
{
	out_string_cut(o, s, n, n, false);
}

static void out_key_n(struct json_out *o, const char *key, size_t len)
{
	if (!o->first)
		out_char(o, ',');
	o->first = false;
	out_char(o, '"');
	out_bytes(o, key, len); /* our own keys: plain ASCII, nothing to escape */
	out_bytes(o, "\":", 2);
}

/* Inlined, so that the length of a literal key is known when compiling. */
static inline __attribute__((always_inline)) void out_key(struct json_out *o, const char *key)
{
	out_key_n(o, key, strlen(key));
}

/* The event fields' JSON keys and their lengths, from the one list in event.h. */
static const struct {
	const char *name;
	size_t len;
} event_keys[EF__COUNT] = {
#define EVENT_KEY(id, json) [EF_##id] = {json, sizeof(json) - 1},
    EVENT_STRING_FIELDS(EVENT_KEY)
#undef EVENT_KEY
};

static void out_key_string(struct json_out *o, const char *key, const char *s, size_t n)
{
	out_key(o, key);
	out_string(o, s, n);
}

static void out_key_time(struct json_out *o, const char *key, int64_t ms)
{
	char t[32];

	record_format_time(ms, t);
	out_key(o, key);
	out_char(o, '"');
	out_cstr(o, t);
	out_char(o, '"');
}

/* The field of `ev`, written only when present (CONTRACTS.md: absent values are omitted). */
static void out_event_field(struct json_out *o, const struct event *ev, enum event_field f)
{
	size_t len;
	const char *s = event_get(ev, f, &len);

	if (s) {
		out_key_n(o, event_keys[f].name, event_keys[f].len);
		out_string(o, s, len);
	}
}

/*
 * A field holding JSON text (event_field_is_json): written as it is, since decoders store
 * only compact JSON of their own making (protocols/json.c). As a last guard against a
 * decoder's bug, text that does not even open and close like an object or array, or that
 * holds a byte below 0x20 (compact JSON never does), is written as a string instead, so
 * the record stays valid JSON.
 */
static void out_event_json_field(struct json_out *o, const struct event *ev, enum event_field f)
{
	size_t len;
	const char *s = event_get(ev, f, &len);
	bool shaped;

	if (s == NULL)
		return;
	shaped =
	    len >= 2 && ((s[0] == '{' && s[len - 1] == '}') || (s[0] == '[' && s[len - 1] == ']'));
	for (size_t i = 0; shaped && i < len; i++)
		shaped = (unsigned char)s[i] >= 0x20;
	out_key_n(o, event_keys[f].name, event_keys[f].len);
	if (shaped)
		out_bytes(o, s, len);
	else
		out_string(o, s, len);
}

/*
 * The shortest "%.*g" that reads back as the same double (15 digits are always exact for
 * short decimals like 19.99; 17 always round-trip). snprintf follows LC_NUMERIC, so a
 * locale decimal comma is turned back into a point. Caller has excluded NaN and infinity,
 * which JSON cannot carry.
 */
static void format_double(double v, char out[40])
{
	double cents = round(v * 100);

	/* Most revenues are whole cents: written by hand, without printf and strtod. A
	 * value with at most two decimals that reads back the same is the shortest form. */
	if (fabs(cents) < 1e15 && cents / 100 == v) {
		uint64_t c = (uint64_t)fabs(cents), whole = c / 100, frac = c % 100;
		char digits[24];
		size_t n = sizeof(digits), k = 0;

		do {
			digits[--n] = (char)('0' + whole % 10);
			whole /= 10;
		} while (whole);
		if (cents < 0)
			out[k++] = '-';
		memcpy(out + k, digits + n, sizeof(digits) - n);
		k += sizeof(digits) - n;
		if (frac) {
			out[k++] = '.';
			out[k++] = (char)('0' + frac / 10);
			if (frac % 10)
				out[k++] = (char)('0' + frac % 10);
		}
		out[k] = '\0';
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, 40, "%.*g", prec, v);
		for (char *p = out; *p; p++)
			if (*p == ',')
				*p = '.';
		if (strtod(out, NULL) == v)
			break;
	}
}

static int out_finish(struct json_out *o)
{
	/* Room for the terminating NUL too, so callers may treat buf as a C string. */
	if (o->len >= o->cap || o->len > (size_t)INT32_MAX)
		return -ENOSPC;
	o->buf[o->len] = '\0';
	return (int)o->len;
}

/* Writes v as exactly `width` decimal digits (v fits). */
static char *put_digits(char *p, int v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return p + width;
}

/* RFC 3339 has four-digit years: times are clamped to 0000-01-01 .. 9999-12-31. */
#define RECORD_TIME_MIN_MS (-62167219200000LL)
#define RECORD_TIME_MAX_MS (253402300799999LL)

/*
 * Year, month and day of a count of days since 1970-01-01 in the proleptic Gregorian
 * calendar (H. Hinnant's civil_from_days: 400-year eras of 146097 days, years counted from
 * March so the leap day comes last). Plain arithmetic: gmtime_r takes glibc's timezone
 * lock on every call, which showed in the shard's profile.
 */
static void civil_from_days(int64_t z, int *year, int *month, int *day)
{
	int64_t era, yy;
	unsigned doe, yoe, doy, mp;

	z += 719468; /* days from 0000-03-01 */
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	yy = (int64_t)yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*day = (int)(doy - (153 * mp + 2) / 5 + 1);
	*month = (int)(mp < 10 ? mp + 3 : mp - 9);
	*year = (int)(yy + (*month <= 2));
}

void record_format_time(int64_t ms, char out[32])
{
	int64_t secs, rem, days, sod;
	int year, month, day;
	char *p = out;

	if (ms < RECORD_TIME_MIN_MS)
		ms = RECORD_TIME_MIN_MS;
	if (ms > RECORD_TIME_MAX_MS)
		ms = RECORD_TIME_MAX_MS;
	secs = ms / 1000;
	rem = ms % 1000;
	if (rem < 0) { /* floor, so times before 1970 read right */
		rem += 1000;
		secs--;
	}
	days = secs / 86400;
	sod = secs % 86400;
	if (sod < 0) {
		sod += 86400;
		days--;
	}
	civil_from_days(days, &year, &month, &day);
	p = put_digits(p, year, 4);
	*p++ = '-';
	p = put_digits(p, month, 2);
	*p++ = '-';
	p = put_digits(p, day, 2);
	*p++ = 'T';
	p = put_digits(p, (int)(sod / 3600), 2);
	*p++ = ':';
	p = put_digits(p, (int)(sod / 60 % 60), 2);
	*p++ = ':';
	p = put_digits(p, (int)(sod % 60), 2);
	*p++ = '.';
	p = put_digits(p, (int)rem, 3);
	*p++ = 'Z';
	*p = '\0';
}

/* v in decimal, without printf (one per record: the shard's hot path). */
static void out_key_u64(struct json_out *o, const char *key, uint64_t v)
{
	char num[20];
	size_t n = sizeof(num);

	do {
		num[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	out_key(o, key);
	out_bytes(o, num + n, sizeof(num) - n);
}

int record_event_json(const struct event *ev, char *buf, size_t cap)
{
	struct json_out o = {.buf = buf, .cap = cap, .first = true};
	char num[40];

	out_char(&o, '{');
	out_event_field(&o, ev, EF_EVENT_ID);
	out_event_field(&o, ev, EF_APP_ID);
	out_key(&o, "type");
	out_char(&o, '"');
	out_cstr(&o, event_type_name(ev->type));
	out_char(&o, '"');
	out_event_field(&o, ev, EF_NAME);
	out_key_time(&o, "received_at", ev->received_at_ms);
	if (ev->client_at_ms != EVENT_TIME_ABSENT)
		out_key_time(&o, "client_at", ev->client_at_ms);
	out_event_field(&o, ev, EF_VISITOR_ID);
	out_event_field(&o, ev, EF_USER_ID);
	out_event_field(&o, ev, EF_SESSION_ID);
	if (ev->session_index > 0)
		out_key_u64(&o, "session_index", ev->session_index);
	/* url .. channel are consecutive in EVENT_STRING_FIELDS, in contract order. */
	_Static_assert(EF_CHANNEL - EF_URL == 12, "url..channel must stay one run of fields");
	for (enum event_field f = EF_URL; f <= EF_CHANNEL; f++)
		out_event_field(&o, ev, f);
	if (ev->has_revenue && isfinite(ev->revenue)) {
		format_double(ev->revenue, num);
		out_key(&o, "revenue");
		out_cstr(&o, num);
	}
	out_event_field(&o, ev, EF_CURRENCY);
	out_event_field(&o, ev, EF_IP);
	out_event_field(&o, ev, EF_USER_AGENT);
	out_key(&o, "is_bot");
	out_cstr(&o, ev->is_bot ? "true" : "false");
	out_event_field(&o, ev, EF_PROTOCOL);
	out_event_field(&o, ev, EF_CLIENT_SESSION_ID);
	out_event_json_field(&o, ev, EF_PROPERTIES);
	out_event_json_field(&o, ev, EF_CONTEXTS);
	out_char(&o, '}');
	return out_finish(&o);
}

int record_dead_letter_json(int64_t received_at_ms, const char *reason, const char *protocol,
                            const char *peer, const char *payload, size_t payload_len,
                            size_t max_payload, char *buf, size_t cap)
{
	struct json_out o = {.buf = buf, .cap = cap, .first = true};

	out_char(&o, '{');
	out_key_time(&o, "received_at", received_at_ms);
	if (reason)
		out_key_string(&o, "reason", reason, strlen(reason));
	if (protocol)
		out_key_string(&o, "protocol", protocol, strlen(protocol));
	if (peer)
		out_key_string(&o, "peer", peer, strlen(peer));
	if (payload && payload_len > 0 && max_payload > 0) {
		out_key(&o, "payload");
		out_string_cut(&o, payload, payload_len, max_payload, true);
	}
	out_char(&o, '}');
	return out_finish(&o);
}

/* A session string, written only when present. */
static void out_session_field(struct json_out *o, const struct session *s, enum session_field f,
                              const char *key)
{
	size_t len;
	const char *v = session_get(s, f, &len);

	if (v)
		out_key_string(o, key, v, len);
}

int record_touchpoint_json(const struct session *s, enum session_end_reason reason,
                           const char *channel, char *buf, size_t cap)
{
	struct json_out o = {.buf = buf, .cap = cap, .first = true};
	char num[40];

	out_char(&o, '{');
	out_key_string(&o, "session_id", s->id, strlen(s->id));
	out_session_field(&o, s, SF_APP_ID, "app_id");
	out_session_field(&o, s, SF_VISITOR_ID, "visitor_id");
	out_session_field(&o, s, SF_USER_ID, "user_id");
	out_key_u64(&o, "session_index", s->index);
	out_key_time(&o, "started_at", s->started_at_ms);
	out_key_time(&o, "ended_at", s->last_seen_ms);
	out_key_u64(&o, "duration_ms", (uint64_t)(s->last_seen_ms - s->started_at_ms));
	out_key_string(&o, "end_reason", session_end_reason_name(reason),
	               strlen(session_end_reason_name(reason)));
	out_key_u64(&o, "events", s->events);
	out_key_u64(&o, "page_views", s->page_views);
	out_key_u64(&o, "conversions", s->conversions);
	if (s->has_revenue && isfinite(s->revenue)) {
		format_double(s->revenue, num);
		out_key(&o, "revenue");
		out_cstr(&o, num);
	}
	if (s->currency[0])
		out_key_string(&o, "currency", s->currency, strlen(s->currency));
	out_session_field(&o, s, SF_LANDING_URL, "landing_url");
	out_session_field(&o, s, SF_EXIT_URL, "exit_url");
	out_session_field(&o, s, SF_REFERRER, "referrer");
	out_session_field(&o, s, SF_REFERRER_HOST, "referrer_host");
	out_session_field(&o, s, SF_SOURCE, "source");
	out_session_field(&o, s, SF_MEDIUM, "medium");
	out_session_field(&o, s, SF_CAMPAIGN, "campaign");
	out_session_field(&o, s, SF_TERM, "term");
	out_session_field(&o, s, SF_CONTENT, "content");
	out_session_field(&o, s, SF_CLICK_ID_TYPE, "click_id_type");
	out_session_field(&o, s, SF_CLICK_ID, "click_id");
	out_session_field(&o, s, SF_AFFILIATE_ID, "affiliate_id");
	if (channel && channel[0])
		out_key_string(&o, "channel", channel, strlen(channel));
	out_char(&o, '}');
	return out_finish(&o);
}

/* ---- attribution and rollups ---- */

/* A NUL-terminated string, written only when not empty (absent values are omitted). */
static void out_key_cstr(struct json_out *o, const char *key, const char *s)
{
	if (s[0])
		out_key_string(o, key, s, strlen(s));
}

/* v as a JSON number, written only when finite (JSON cannot carry the rest). */
static void out_key_double(struct json_out *o, const char *key, double v)
{
	char num[40];

	if (!isfinite(v))
		return;
	format_double(v, num);
	out_key(o, key);
	out_cstr(o, num);
}

/* {"first_touch":v[0],...}: one number per model, in ATTRIBUTION_MODELS order. */
static void out_key_models(struct json_out *o, const char *key,
                           const double v[ATTRIBUTION_MODEL__COUNT])
{
	out_key(o, key);
	out_char(o, '{');
	o->first = true;
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++)
		out_key_double(o, attribution_model_name((enum attribution_model)m), v[m]);
	out_char(o, '}');
	o->first = false;
}

static void out_credited(struct json_out *o, const struct attribution_credited *t,
                         bool with_revenue)
{
	const struct attribution_touchpoint *tp = &t->tp;

	out_char(o, '{');
	o->first = true;
	out_key_cstr(o, "session_id", tp->session_id);
	out_key_cstr(o, "visitor_id", t->visitor_id);
	out_key_time(o, "started_at", tp->started_at_ms);
	out_key_cstr(o, "channel", channel_name((enum channel)tp->channel));
	out_key_cstr(o, "source", tp->source);
	out_key_cstr(o, "medium", tp->medium);
	out_key_cstr(o, "campaign", tp->campaign);
	out_key_cstr(o, "click_id_type", tp->click_id_type);
	out_key_cstr(o, "affiliate_id", tp->affiliate_id);
	out_key_models(o, "credit", t->credit);
	if (with_revenue)
		out_key_models(o, "revenue", t->revenue);
	out_char(o, '}');
}

int record_attribution_json(const struct event *ev, const struct attribution_result *r, char *buf,
                            size_t cap)
{
	struct json_out o = {.buf = buf, .cap = cap, .first = true};
	bool with_revenue = ev->has_revenue && isfinite(ev->revenue);
	size_t len;
	const char *id = event_get(ev, EF_EVENT_ID, &len);

	out_char(&o, '{');
	if (id)
		out_key_string(&o, "conversion_event_id", id, len);
	out_event_field(&o, ev, EF_APP_ID);
	out_event_field(&o, ev, EF_VISITOR_ID);
	out_event_field(&o, ev, EF_USER_ID);
	out_key_time(&o, "converted_at", r->converted_at_ms);
	out_event_field(&o, ev, EF_NAME);
	if (with_revenue)
		out_key_double(&o, "revenue", ev->revenue);
	out_event_field(&o, ev, EF_CURRENCY);
	out_key(&o, "touchpoints");
	out_char(&o, '[');
	for (size_t i = 0; i < r->count; i++) {
		if (i)
			out_char(&o, ',');
		out_credited(&o, &r->touchpoints[i], with_revenue);
	}
	out_char(&o, ']');
	out_char(&o, '}');
	return out_finish(&o);
}

int record_rollup_json(const struct attribution_rollup_row *row, char *buf, size_t cap)
{
	struct json_out o = {.buf = buf, .cap = cap, .first = true};
	const struct attribution_rollup_counts *c = &row->counts;

	out_char(&o, '{');
	out_key_time(&o, "minute", row->minute_ms);
	out_key_cstr(&o, "app_id", row->app_id);
	out_key_cstr(&o, "channel",
	             row->other ? "(other)" : channel_name((enum channel)row->channel));
	out_key_cstr(&o, "source", row->source);
	out_key_cstr(&o, "medium", row->medium);
	out_key_cstr(&o, "campaign", row->campaign);
	out_key_u64(&o, "sessions", c->sessions);
	out_key_u64(&o, "page_views", c->page_views);
	out_key_u64(&o, "conversions", c->conversions);
	out_key_double(&o, "revenue", c->revenue);
	out_key_models(&o, "attributed_revenue", c->attributed_revenue);
	out_key_u64(&o, "late", row->late);
	out_char(&o, '}');
	return out_finish(&o);
}
