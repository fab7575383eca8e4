/*
 * beacon.c - the native beacon protocol: fields (query string or JSON) to struct event.
 *
 * Runs on an ingest thread, one beacon at a time, with no libuv types and no clock: the
 * request (receive time, IP, user agent, cookie) is passed in. Two steps:
 *
 *   1. collect: the native fields of CONTRACTS.md into a struct beacon_fields (borrowed
 *      views into a scratch buffer), checking the field count and that a repeated field
 *      repeats the same value;
 *   2. build: validate and copy them into the event's arena, then enrich: UTM tags,
 *      click IDs and the affiliate ID from the page URL (explicit fields win), the
 *      referrer host,
 *      source/medium by the rules of CONTRACTS.md, the visitor, the IP (GPC,
 *      anonymisation), the user agent and the bot check.
 *
 * The query path never allocates: the beacon is decoded into a stack scratch buffer of
 * BEACON_MAX_BYTES. The JSON path uses yajl's callback parser (which allocates inside),
 * with our own depth, batch and size limits, and never builds a tree.
 */
#include "clickd/beacon.h"
#include "clickd/text.h"
#include "clickd/url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

/* The largest beacon accepted on the query path, and the most field data one JSON element
 * may carry. Twice the event arena: percent-encoding inflates what ends up in the arena,
 * and a beacon larger than this could not fit in the event anyway. */
#define BEACON_MAX_BYTES (2 * EVENT_ARENA_BYTES)

/* Used when an option is 0 (not configured). */
#define BEACON_DEFAULT_MAX_FIELDS     64
#define BEACON_DEFAULT_MAX_BATCH      100
#define BEACON_DEFAULT_MAX_JSON_DEPTH 8
#define BEACON_DEFAULT_MAX_STRING     4096

/* Revenue and ts are parsed from a bounded copy; longer texts are not numbers we take. */
#define NUMBER_MAX_CHARS 64

/* ms since the epoch of 2200-01-01T00:00:00Z: a ts at or past it is a client bug. */
#define TS_MAX_MS 7258118400000LL

/* The native fields, CONTRACTS.md's table. The six UTM fields are consecutive and in the
 * order of utm_tags below. */
#define BEACON_FIELDS(X)                                                                           \
	X(EID, "eid")                                                                              \
	X(E, "e")                                                                                  \
	X(EN, "en")                                                                                \
	X(AID, "aid")                                                                              \
	X(VID, "vid")                                                                              \
	X(UID, "uid")                                                                              \
	X(URL, "url")                                                                              \
	X(REF, "ref")                                                                              \
	X(TS, "ts")                                                                                \
	X(REV, "rev")                                                                              \
	X(CUR, "cur")                                                                              \
	X(UTM_SOURCE, "utm_source")                                                                \
	X(UTM_MEDIUM, "utm_medium")                                                                \
	X(UTM_CAMPAIGN, "utm_campaign")                                                            \
	X(UTM_TERM, "utm_term")                                                                    \
	X(UTM_CONTENT, "utm_content")                                                              \
	X(UTM_ID, "utm_id")                                                                        \
	X(AFF, "aff")

enum beacon_field {
#define BEACON_FIELD_ENUM(id, name) BF_##id,
	BEACON_FIELDS(BEACON_FIELD_ENUM)
#undef BEACON_FIELD_ENUM
	    BF__COUNT
};

static const char *const beacon_field_names[BF__COUNT] = {
#define BEACON_FIELD_NAME(id, name) [BF_##id] = name,
    BEACON_FIELDS(BEACON_FIELD_NAME)
#undef BEACON_FIELD_NAME
};

/* UTM tags: the query parameter (and beacon field) name and the event field it fills. */
#define UTM_TAG_COUNT 6
static const struct {
	const char *name;
	enum event_field field;
} utm_tags[UTM_TAG_COUNT] = {
    {"utm_source", EF_SOURCE}, {"utm_medium", EF_MEDIUM},   {"utm_campaign", EF_CAMPAIGN},
    {"utm_term", EF_TERM},     {"utm_content", EF_CONTENT}, {"utm_id", EF_UTM_ID},
};

/* Click IDs in priority order (the first present wins) and the source/medium they imply;
 * NULL source: no rule of CONTRACTS.md names it, the referrer rules decide. */
#define CLICK_ID_COUNT 9
static const struct {
	const char *name;
	const char *source;
	const char *medium;
} click_ids[CLICK_ID_COUNT] = {
    {"gclid", "google", "cpc"}, {"gbraid", "google", "cpc"}, {"wbraid", "google", "cpc"},
    {"dclid", "google", "cpc"}, {"msclkid", "bing", "cpc"},  {"fbclid", NULL, NULL},
    {"ttclid", NULL, NULL},     {"li_fat_id", NULL, NULL},   {"twclid", NULL, NULL},
};

/*
 * Search engines, matched on the lowercased referrer host. With any_tld, `pattern` is a
 * name followed by a public suffix: the host is "<pattern>.<tld>" or a subdomain of it,
 * where <tld> is one label ("com", "de") or a country second-level pair ("co.uk",
 * "com.au": a label of at most 3 letters, then a 2-letter label). So www.google.co.uk
 * matches and google.example.com does not. Without any_tld, the host is the pattern or a
 * subdomain of it. Portals whose other pages are not search (yahoo, aol, brave) are
 * matched on their search host only.
 */
static const struct {
	const char *engine;
	const char *pattern;
	bool any_tld;
} search_engines[] = {
    {"google", "google", true},
    {"bing", "bing", true},
    {"yahoo", "search.yahoo", true},
    {"duckduckgo", "duckduckgo", true},
    {"baidu", "baidu", true},
    {"yandex", "yandex", true},
    {"ecosia", "ecosia.org", false},
    {"naver", "naver.com", false},
    {"seznam", "seznam.cz", false},
    {"qwant", "qwant.com", false},
    {"startpage", "startpage.com", false},
    {"brave", "search.brave.com", false},
    {"ask", "ask.com", false},
    {"aol", "search.aol", true},
};

/* Substrings (ASCII, lowercase; matched case-insensitively) that mark a user agent as a
 * bot, crawler or script. An absent user agent is not a bot: servers send beacons too. */
static const char *const bot_patterns[] = {
    "bot",
    "crawler",
    "spider",
    "slurp",
    "headless",
    "lighthouse",
    "facebookexternalhit",
    "curl/",
    "wget",
    "python-requests",
    "go-http-client",
};

/* Borrowed views of one beacon's native fields; len 0 = absent. `count` is every field
 * seen, known or not, since all of them count toward max_fields. */
struct beacon_fields {
	const char *value[BF__COUNT];
	size_t len[BF__COUNT];
	size_t count;
	size_t max_fields;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static size_t opt_or(size_t value, size_t fallback)
{
	return value ? value : fallback;
}

static unsigned char ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int hex_digit(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool bytes_equal(const char *a, size_t a_len, const char *b)
{
	return a_len == strlen(b) && memcmp(a, b, a_len) == 0;
}

/* The text rules of text.h the options ask for. */
static struct text_rules text_rules_of(const struct beacon_options *opt)
{
	struct text_rules r = {
	    .replace_invalid_utf8 = opt->replace_invalid_utf8,
	    .replace_controls = !opt->reject_controls,
	};
	return r;
}

/* limits.max_string_bytes, at most what an event can hold. */
static size_t max_string_of(const struct beacon_options *opt)
{
	size_t n = opt_or(opt->max_string_bytes, BEACON_DEFAULT_MAX_STRING);
	return n < EVENT_ARENA_BYTES ? n : EVENT_ARENA_BYTES;
}

/* A field name for a message: itself when it is short printable ASCII, "?" otherwise. */
static void printable_name(const char *k, size_t len, char *out, size_t cap)
{
	bool printable = len > 0 && len < cap;

	for (size_t i = 0; printable && i < len; i++)
		printable = k[i] > 0x20 && k[i] < 0x7F;
	if (printable) {
		memcpy(out, k, len);
		out[len] = '\0';
	} else {
		snprintf(out, cap, "?");
	}
}

/* A field name and value within limits.max_string_bytes, or -ENOSPC with the reason. */
static int field_length_check(const char *key, size_t key_len, size_t value_len, size_t max_string,
                              char *err, size_t errlen)
{
	char name[64];

	if (key_len > max_string) {
		set_err(err, errlen, "a field name longer than limits.max_string_bytes (%zu)",
		        max_string);
		return -ENOSPC;
	}
	if (value_len > max_string) {
		printable_name(key, key_len, name, sizeof(name));
		set_err(err, errlen, "field %s: longer than limits.max_string_bytes (%zu)", name,
		        max_string);
		return -ENOSPC;
	}
	return 0;
}

/* ------------------------------------------------------------------ collecting fields */

static void fields_init(struct beacon_fields *f, const struct beacon_options *opt)
{
	memset(f, 0, sizeof(*f));
	f->max_fields = opt_or(opt->max_fields, BEACON_DEFAULT_MAX_FIELDS);
}

static int field_lookup(const char *key, size_t len)
{
	for (int i = 0; i < BF__COUNT; i++)
		if (bytes_equal(key, len, beacon_field_names[i]))
			return i;
	return -1;
}

/* Counts one field toward max_fields. */
static int fields_count(struct beacon_fields *f, char *err, size_t errlen)
{
	if (++f->count > f->max_fields) {
		set_err(err, errlen, "too many fields (max %zu)", f->max_fields);
		return -E2BIG;
	}
	return 0;
}

/* Records native field `idx` (< 0: unknown, ignored). value must stay readable until the
 * build. An empty value is absent; a repeat must carry the same value. */
static int fields_put(struct beacon_fields *f, int idx, const char *value, size_t len, char *err,
                      size_t errlen)
{
	if (idx < 0 || len == 0)
		return 0;
	if (f->len[idx] == 0) {
		f->value[idx] = value;
		f->len[idx] = len;
		return 0;
	}
	if (f->len[idx] == len && memcmp(f->value[idx], value, len) == 0)
		return 0;
	set_err(err, errlen, "field %s repeated with different values", beacon_field_names[idx]);
	return -EINVAL;
}

/* ---------------------------------------------------------------- validating values */

static int parse_event_type(const struct beacon_fields *f, struct event *ev, char *err,
                            size_t errlen)
{
	const char *v = f->value[BF_E];
	size_t len = f->len[BF_E];

	if (len == 0 || bytes_equal(v, len, "pv"))
		ev->type = EVENT_PAGE_VIEW;
	else if (bytes_equal(v, len, "ev"))
		ev->type = EVENT_CUSTOM;
	else if (bytes_equal(v, len, "cv"))
		ev->type = EVENT_CONVERSION;
	else {
		set_err(err, errlen, "field e: unknown event type");
		return -EINVAL;
	}
	return 0;
}

/* ts: milliseconds since the epoch, digits only, 0 < ts < 2200-01-01. */
static int parse_ts(const struct beacon_fields *f, struct event *ev, char *err, size_t errlen)
{
	const char *v = f->value[BF_TS];
	size_t len = f->len[BF_TS];
	int64_t ms = 0;

	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9') {
			set_err(err, errlen, "field ts: not a number");
			return -EINVAL;
		}
		ms = ms * 10 + (v[i] - '0');
		if (ms >= TS_MAX_MS)
			break;
	}
	if (ms <= 0 || ms >= TS_MAX_MS) {
		set_err(err, errlen, "field ts: out of range");
		return -EINVAL;
	}
	ev->client_at_ms = ms;
	return 0;
}

/* A plain decimal: [-]digits[.digits][e[+-]digits], at least one digit before the
 * exponent. This is what strtod is allowed to see: no hex, inf, nan or spaces. */
static bool decimal_syntax(const char *s, size_t len)
{
	size_t i = 0, digits = 0;

	if (i < len && s[i] == '-')
		i++;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		digits++;
	if (i < len && s[i] == '.')
		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
	if (digits == 0)
		return false;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		size_t exp_digits = 0;

		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			exp_digits++;
		if (exp_digits == 0)
			return false;
	}
	return i == len;
}

static int parse_revenue(const struct beacon_fields *f, struct event *ev, char *err, size_t errlen)
{
	const char *v = f->value[BF_REV];
	size_t len = f->len[BF_REV];
	char copy[NUMBER_MAX_CHARS + 1];
	char *end;
	double value;

	if (len == 0)
		return 0;
	if (len > NUMBER_MAX_CHARS || !decimal_syntax(v, len)) {
		set_err(err, errlen, "field rev: not a decimal number");
		return -EINVAL;
	}
	memcpy(copy, v, len);
	copy[len] = '\0';
	value = strtod(copy, &end);
	if (*end != '\0' || !isfinite(value)) {
		set_err(err, errlen, "field rev: not a decimal number");
		return -EINVAL;
	}
	ev->revenue = value;
	ev->has_revenue = true;
	return 0;
}

/* cur: three ASCII letters (ISO 4217), uppercased into out. */
static int parse_currency(const struct beacon_fields *f, char out[3], char *err, size_t errlen)
{
	const char *v = f->value[BF_CUR];

	if (f->len[BF_CUR] == 0)
		return 0;
	if (f->len[BF_CUR] != 3)
		goto bad;
	for (int i = 0; i < 3; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c >= 'a' && c <= 'z')
			c = (unsigned char)(c - 32);
		if (c < 'A' || c > 'Z')
			goto bad;
		out[i] = (char)c;
	}
	return 0;
bad:
	set_err(err, errlen, "field cur: not a 3-letter currency code");
	return -EINVAL;
}

/* ------------------------------------------------------------------- building events */

/* event_set that remembers a full arena, so a build checks once at its end. */
static void put(struct event *ev, enum event_field f, const char *s, size_t len, bool *full)
{
	if (event_set(ev, f, s, len) < 0)
		*full = true;
}

static char *arena_ptr(struct event *ev, enum event_field f)
{
	return ev->arena + ev->str[f].off;
}

/* Tags, click IDs and the affiliate ID read from the page URL's query: borrowed views
 * into scratch. */
struct page_tags {
	const char *utm[UTM_TAG_COUNT];
	size_t utm_len[UTM_TAG_COUNT];
	const char *click[CLICK_ID_COUNT];
	size_t click_len[CLICK_ID_COUNT];
	const struct beacon_options *opt; /* its affiliate_params */
	const char *affiliate;            /* the value of the best-ranked parameter seen */
	size_t affiliate_len;
	size_t affiliate_rank; /* its index in affiliate_params; SIZE_MAX: none yet */
};

static int page_tag_cb(void *ud, const char *key, size_t key_len, const char *value,
                       size_t value_len)
{
	struct page_tags *t = ud;

	if (value_len == 0)
		return 0;
	/* The first (non-empty) occurrence of a parameter wins. */
	for (int i = 0; i < UTM_TAG_COUNT; i++) {
		if (bytes_equal(key, key_len, utm_tags[i].name)) {
			if (t->utm_len[i] == 0) {
				t->utm[i] = value;
				t->utm_len[i] = value_len;
			}
			return 0;
		}
	}
	for (int i = 0; i < CLICK_ID_COUNT; i++) {
		if (bytes_equal(key, key_len, click_ids[i].name)) {
			if (t->click_len[i] == 0) {
				t->click[i] = value;
				t->click_len[i] = value_len;
			}
			return 0;
		}
	}
	/* Affiliate parameters: the one listed first wins, whatever the URL's order. */
	for (size_t i = 0; i < t->opt->affiliate_param_count && i < t->affiliate_rank; i++) {
		if (bytes_equal(key, key_len, t->opt->affiliate_params[i])) {
			t->affiliate = value;
			t->affiliate_len = value_len;
			t->affiliate_rank = i;
			return 0;
		}
	}
	return 0;
}

/* UTM tags, the click ID and the affiliate ID (unless the beacon gave one) from the page
 * URL; sets *page_host (borrowed from the arena) when the URL splits. A URL that does not
 * split or whose query is malformed is kept as given, without tags: it is the site's URL,
 * not ours to reject. The tags follow the text rules like the fields: repaired, or, when
 * the rules refuse what one holds, no tags at all. Returns the index of the winning click
 * ID or -1. */
static int page_url_enrich(struct event *ev, const struct beacon_options *opt, char *scratch,
                           size_t scratch_cap, struct url_parts *page, bool *full)
{
	struct page_tags tags;
	struct text_rules rules;
	size_t url_len, repairs = 0;
	const char *url = event_get(ev, EF_URL, &url_len);
	int click = -1;

	if (url == NULL || url_split(url, url_len, page) < 0) {
		memset(page, 0, sizeof(*page));
		return -1;
	}
	if (page->query_len == 0)
		return -1;
	memset(&tags, 0, sizeof(tags));
	tags.opt = opt;
	tags.affiliate_rank = SIZE_MAX;
	rules = text_rules_of(opt);
	if (url_query_parse_text(page->query, page->query_len, scratch, scratch_cap, &rules,
	                         &repairs, page_tag_cb, &tags) != 0)
		return -1;
	if (repairs > 0)
		ev->text_repaired = true;
	if (!event_has(ev, EF_AFFILIATE_ID))
		put(ev, EF_AFFILIATE_ID, tags.affiliate, tags.affiliate_len, full);
	for (int i = 0; i < UTM_TAG_COUNT; i++)
		if (!event_has(ev, utm_tags[i].field))
			put(ev, utm_tags[i].field, tags.utm[i], tags.utm_len[i], full);
	for (int i = 0; i < CLICK_ID_COUNT && click < 0; i++) {
		if (tags.click_len[i] == 0)
			continue;
		click = i;
		put(ev, EF_CLICK_ID_TYPE, click_ids[i].name, strlen(click_ids[i].name), full);
		put(ev, EF_CLICK_ID, tags.click[i], tags.click_len[i], full);
	}
	return click;
}

/* referrer_host: the referrer's host, lowercased (in the arena, which is ours) and without
 * the trailing dot of an absolute name, so "www.google.com." is Google like the rest. */
static void referrer_host_set(struct event *ev, bool *full)
{
	struct url_parts ref;
	size_t len;
	const char *url = event_get(ev, EF_REFERRER, &len);
	char *host;

	if (url == NULL || url_split(url, len, &ref) < 0)
		return;
	if (ref.host_len > 1 && ref.host[ref.host_len - 1] == '.')
		ref.host_len--;
	put(ev, EF_REFERRER_HOST, ref.host, ref.host_len, full);
	if (!event_has(ev, EF_REFERRER_HOST))
		return;
	host = arena_ptr(ev, EF_REFERRER_HOST);
	for (size_t i = 0; i < ref.host_len; i++)
		host[i] = (char)ascii_lower((unsigned char)host[i]);
}

/* A public suffix as search_engines describes: "com" or "co.uk" style. */
static bool tld_like(const char *s, size_t len)
{
	const char *dot = memchr(s, '.', len);
	size_t first = dot ? (size_t)(dot - s) : len;

	for (size_t i = 0; i < len; i++)
		if (s[i] != '.' && (s[i] < 'a' || s[i] > 'z'))
			return false;
	if (dot == NULL)
		return len >= 2 && len <= 6;
	return first >= 2 && first <= 3 && len - first - 1 == 2;
}

static bool engine_matches(const char *host, size_t len, const char *pattern, bool any_tld)
{
	size_t plen = strlen(pattern);

	if (!any_tld) {
		if (len < plen || memcmp(host + len - plen, pattern, plen) != 0)
			return false;
		return len == plen || host[len - plen - 1] == '.';
	}
	/* "<pattern>.<tld>" at the start of the host or right after a dot. */
	for (size_t p = 0; p + plen + 2 < len; p++) {
		if (p > 0 && host[p - 1] != '.')
			continue;
		if (memcmp(host + p, pattern, plen) != 0 || host[p + plen] != '.')
			continue;
		if (tld_like(host + p + plen + 1, len - p - plen - 1))
			return true;
	}
	return false;
}

static const char *search_engine(const char *host, size_t len)
{
	for (size_t i = 0; i < sizeof(search_engines) / sizeof(search_engines[0]); i++)
		if (engine_matches(host, len, search_engines[i].pattern, search_engines[i].any_tld))
			return search_engines[i].engine;
	return NULL;
}

static void source_medium(struct event *ev, const char *source, const char *medium, bool *full)
{
	put(ev, EF_SOURCE, source, strlen(source), full);
	put(ev, EF_MEDIUM, medium, strlen(medium), full);
}

/*
 * Source and medium, CONTRACTS.md: explicit UTM tags (field or page URL) first, as
 * given, a missing one left absent; else a Google or Bing click ID; else a search engine
 * referrer (organic); else another site's referrer (referral, www. dropped); else
 * (direct)/(none). A referrer on the page's own host is internal: (direct)/(none) here,
 * the session layer decides whether it is a touch.
 */
static void source_medium_set(struct event *ev, const struct url_parts *page, int click, bool *full)
{
	size_t ref_len;
	const char *ref = event_get(ev, EF_REFERRER_HOST, &ref_len);
	const char *engine;

	if (event_has(ev, EF_SOURCE) || event_has(ev, EF_MEDIUM))
		return;
	if (click >= 0 && click_ids[click].source != NULL) {
		source_medium(ev, click_ids[click].source, click_ids[click].medium, full);
		return;
	}
	if (ref == NULL ||
	    (page->host_len > 0 && url_host_same_site(ref, ref_len, page->host, page->host_len))) {
		source_medium(ev, "(direct)", "(none)", full);
		return;
	}
	engine = search_engine(ref, ref_len);
	if (engine != NULL) {
		source_medium(ev, engine, "organic", full);
		return;
	}
	if (ref_len > 4 && memcmp(ref, "www.", 4) == 0) {
		ref += 4;
		ref_len -= 4;
	}
	/* ref points into the arena; event_set copies it further on, never over it. */
	put(ev, EF_SOURCE, ref, ref_len, full);
	put(ev, EF_MEDIUM, "referral", 8, full);
}

/*
 * The bot check was the most expensive step of decoding a beacon (bench/micro.c): a
 * case-insensitive comparison at every position for every pattern. Now the user agent
 * (its first BOT_SCAN_BYTES: bot tokens come early) is lowercased once and walked once;
 * only at a letter that starts some pattern (bot_first, which must list the first letter
 * of every bot_patterns entry: the table of tests/data/beacon_query.tsv has a case per
 * pattern) are the patterns compared.
 */
#define BOT_SCAN_BYTES 512

static const bool bot_first[256] = {
    ['b'] = true, ['c'] = true, ['s'] = true, ['h'] = true, ['l'] = true,
    ['f'] = true, ['w'] = true, ['p'] = true, ['g'] = true};

static bool user_agent_is_bot(const char *ua, size_t len)
{
	char lower[BOT_SCAN_BYTES];

	if (len > sizeof(lower))
		len = sizeof(lower);
	for (size_t i = 0; i < len; i++)
		lower[i] = (char)ascii_lower((unsigned char)ua[i]);
	for (size_t i = 0; i < len; i++) {
		if (!bot_first[(unsigned char)lower[i]])
			continue;
		for (size_t k = 0; k < sizeof(bot_patterns) / sizeof(bot_patterns[0]); k++) {
			const char *p = bot_patterns[k];
			size_t n = strlen(p);
			if (p[0] == lower[i] && n <= len - i && memcmp(lower + i, p, n) == 0)
				return true;
		}
	}
	return false;
}

static bool request_string_usable(const char *s, size_t len)
{
	return s != NULL && len > 0 && memchr(s, '\0', len) == NULL && url_utf8_valid(s, len);
}

/* The visitor, when the decoder set none (the vid field, a tracker's own ID): our cookie,
 * else a freshly minted ID (set as the cookie) unless the request asks not to be tracked
 * (GPC/DNT honoured, or an anonymous tracker). */
static void visitor_set(const struct beacon_request *req, const struct beacon_options *opt,
                        struct event *ev, bool *full)
{
	if (event_has(ev, EF_VISITOR_ID))
		return;
	if (!req->anonymous &&
	    request_string_usable(req->cookie_visitor_id, req->cookie_visitor_id_len)) {
		put(ev, EF_VISITOR_ID, req->cookie_visitor_id, req->cookie_visitor_id_len, full);
		ev->visitor_from_cookie = true;
	} else if (!(opt->honor_gpc && req->gpc) && !req->anonymous &&
	           request_string_usable(req->minted_visitor_id, req->minted_visitor_id_len)) {
		put(ev, EF_VISITOR_ID, req->minted_visitor_id, req->minted_visitor_id_len, full);
		ev->visitor_from_cookie = true;
		ev->set_visitor_cookie = true;
	}
}

/* The IP: none under GPC; anonymised when configured; an unparsable IP is dropped. */
static void ip_set(const struct beacon_request *req, const struct beacon_options *opt,
                   struct event *ev, bool *full)
{
	char buf[INET6_ADDRSTRLEN];
	unsigned char addr[sizeof(struct in6_addr)];
	int len;

	if (req->client_ip == NULL || (opt->honor_gpc && req->gpc) || req->anonymous)
		return;
	if (opt->anonymize_ip) {
		len = beacon_anonymize_ip(req->client_ip, buf, sizeof(buf));
		if (len > 0)
			put(ev, EF_IP, buf, (size_t)len, full);
		return;
	}
	if (inet_pton(AF_INET, req->client_ip, addr) == 1 ||
	    inet_pton(AF_INET6, req->client_ip, addr) == 1)
		put(ev, EF_IP, req->client_ip, strlen(req->client_ip), full);
}

/* The User-Agent header is whatever the client sent, and not the beacon's data: it is cut
 * to limits.max_string_bytes and repaired (invalid UTF-8 and control characters become
 * U+FFFD, in scratch), never a reason to refuse the beacon. */
static void user_agent_set(const struct beacon_request *req, const struct beacon_options *opt,
                           struct event *ev, char *scratch, size_t scratch_cap, bool *full)
{
	size_t max = max_string_of(opt), len, repaired_len;
	const char *ua = req->user_agent;

	if (ua == NULL || req->user_agent_len == 0)
		return;
	len = text_cut(ua, req->user_agent_len, max);
	if (text_check(ua, len, &text_repair_all, &repaired_len) != 0) {
		len = text_repair(ua, len, &text_repair_all, scratch,
		                  max < scratch_cap ? max : scratch_cap);
		ua = scratch;
		ev->text_repaired = true;
	}
	put(ev, EF_USER_AGENT, ua, len, full);
	if (event_has(ev, EF_USER_AGENT))
		ev->is_bot = user_agent_is_bot(arena_ptr(ev, EF_USER_AGENT), len);
}

static int event_finish(struct event *ev, const struct beacon_request *req,
                        const struct beacon_options *opt, char *scratch, size_t scratch_cap,
                        char *err, size_t errlen);

/*
 * Validates the fields and builds *ev. The fields may point into scratch: they are all
 * copied into the event before scratch is reused to parse the page URL's query.
 */
static int beacon_build(const struct beacon_fields *f, const struct beacon_request *req,
                        const struct beacon_options *opt, struct event *ev, char *scratch,
                        size_t scratch_cap, char *err, size_t errlen)
{
	static const struct {
		enum beacon_field from;
		enum event_field to;
	} copies[] = {
	    {BF_EID, EF_EVENT_ID},      {BF_AID, EF_APP_ID},
	    {BF_VID, EF_VISITOR_ID},    {BF_EN, EF_NAME},
	    {BF_UID, EF_USER_ID},       {BF_URL, EF_URL},
	    {BF_REF, EF_REFERRER},      {BF_UTM_SOURCE, EF_SOURCE},
	    {BF_UTM_MEDIUM, EF_MEDIUM}, {BF_UTM_CAMPAIGN, EF_CAMPAIGN},
	    {BF_UTM_TERM, EF_TERM},     {BF_UTM_CONTENT, EF_CONTENT},
	    {BF_UTM_ID, EF_UTM_ID},     {BF_AFF, EF_AFFILIATE_ID},
	};
	char currency[3];
	bool full = false;
	int rc;

	event_init(ev);
	ev->received_at_ms = req->received_at_ms;
	rc = parse_event_type(f, ev, err, errlen);
	if (rc == 0)
		rc = parse_ts(f, ev, err, errlen);
	if (rc == 0)
		rc = parse_revenue(f, ev, err, errlen);
	if (rc == 0)
		rc = parse_currency(f, currency, err, errlen);
	if (rc < 0)
		return rc;

	for (size_t i = 0; i < sizeof(copies) / sizeof(copies[0]); i++)
		put(ev, copies[i].to, f->value[copies[i].from], f->len[copies[i].from], &full);
	if (f->len[BF_CUR] > 0)
		put(ev, EF_CURRENCY, currency, 3, &full);
	if (full) {
		set_err(err, errlen, "beacon too large");
		return -ENOSPC;
	}
	/* From here on the fields are not read: scratch is free. */
	return event_finish(ev, req, opt, scratch, scratch_cap, err, errlen);
}

/*
 * The enrichment every protocol shares, once a decoder has copied its own fields: the
 * visitor (when none was given), UTM tags, click ID and affiliate ID from the page URL,
 * the referrer host, source/medium, the IP, the user agent and the bot check, and the
 * protocol's name.
 */
static int event_finish(struct event *ev, const struct beacon_request *req,
                        const struct beacon_options *opt, char *scratch, size_t scratch_cap,
                        char *err, size_t errlen)
{
	struct url_parts page;
	bool full = false;
	int click;

	visitor_set(req, opt, ev, &full);
	/* From here on the fields are not read: scratch is free (the page URL's query, then
	 * the user agent, use it). */
	click = page_url_enrich(ev, opt, scratch, scratch_cap, &page, &full);
	referrer_host_set(ev, &full);
	source_medium_set(ev, &page, click, &full);
	ip_set(req, opt, ev, &full);
	user_agent_set(req, opt, ev, scratch, scratch_cap, &full);
	if (req->protocol != NULL)
		put(ev, EF_PROTOCOL, req->protocol, strlen(req->protocol), &full);
	if (full) {
		set_err(err, errlen, "beacon too large");
		return -ENOSPC;
	}
	return 0;
}

int beacon_finish(struct event *ev, const struct beacon_request *req,
                  const struct beacon_options *opt, char *err, size_t errlen)
{
	char scratch[BEACON_MAX_BYTES];

	return event_finish(ev, req, opt, scratch, sizeof(scratch), err, errlen);
}

/* ----------------------------------------------------------------------- query path */

struct query_ctx {
	struct beacon_fields *fields;
	size_t max_string;
	char *err;
	size_t errlen;
	bool err_set;
};

static int query_field_cb(void *ud, const char *key, size_t key_len, const char *value,
                          size_t value_len)
{
	struct query_ctx *q = ud;
	int rc = fields_count(q->fields, q->err, q->errlen);

	if (rc == 0)
		rc = field_length_check(key, key_len, value_len, q->max_string, q->err, q->errlen);
	if (rc == 0)
		rc = fields_put(q->fields, field_lookup(key, key_len), value, value_len, q->err,
		                q->errlen);
	q->err_set = rc != 0;
	return rc;
}

int beacon_decode_query(const char *q, size_t len, const struct beacon_request *req,
                        const struct beacon_options *opt, struct event *ev, char *err,
                        size_t errlen)
{
	char scratch[BEACON_MAX_BYTES];
	struct beacon_fields fields;
	struct text_rules rules = text_rules_of(opt);
	struct query_ctx ctx = {
	    .fields = &fields, .max_string = max_string_of(opt), .err = err, .errlen = errlen};
	size_t repairs = 0;
	int rc;

	if (len > sizeof(scratch)) {
		set_err(err, errlen, "beacon too large");
		return -ENOSPC; /* beacon.h: -E2BIG is too many fields, -ENOSPC too long */
	}
	fields_init(&fields, opt);
	rc = url_query_parse_text(q, len, scratch, sizeof(scratch), &rules, &repairs,
	                          query_field_cb, &ctx);
	if (rc < 0 && !ctx.err_set) {
		if (rc == -EILSEQ) {
			set_err(err, errlen, "not UTF-8");
		} else if (rc == -EBADMSG) {
			set_err(err, errlen, "a control character in a field");
			rc = -EINVAL;
		} else if (rc == -EINVAL) {
			set_err(err, errlen, "bad percent-encoding or empty field name");
		} else {
			set_err(err, errlen, "beacon too large");
		}
	}
	if (rc < 0)
		return rc;
	rc = beacon_build(&fields, req, opt, ev, scratch, sizeof(scratch), err, errlen);
	if (rc == 0 && repairs > 0)
		ev->text_repaired = true;
	return rc;
}

/* ------------------------------------------------------------------------ JSON path */

/*
 * The JSON body is parsed with yajl's callback API; strings are checked by us (yajl's
 * own UTF-8 check is off) so that one bad string rejects its element, not the batch.
 *
 * A top-level object is one beacon, decoded in one pass and emitted only once the whole
 * document has parsed. An array takes two passes over the text, each with its own yajl
 * handle: the first checks the document (syntax, depth, at most max_batch elements)
 * without decoding, so that nothing is emitted from a batch that is then refused; the
 * second decodes each element and emits or rejects it as soon as it closes.
 *
 * An element's raw text (for reject) runs from the first byte after the previous element
 * (skipping whitespace and the comma) to yajl_get_bytes_consumed() when it closes: the
 * whole body goes to yajl in one yajl_parse call, so that count is an offset into it.
 */
#define JSON_KEY_MAX    64
#define JSON_REASON_MAX 128

struct json_ctx {
	yajl_handle h;
	const char *body;
	size_t len;
	const struct beacon_request *req;
	const struct beacon_options *opt;
	beacon_emit_fn emit;
	beacon_reject_fn reject;
	void *ud;
	bool decode;  /* false: the checking pass of an array */
	size_t base;  /* depth of the beacon objects: 0 (object), 1 (array) */
	size_t depth; /* containers open */
	size_t max_depth;
	size_t elements;
	size_t max_batch;
	size_t boundary; /* where the text after the last element starts */
	int rc;          /* what cancelled the parse (err filled) */
	char *err;
	size_t errlen;
	struct text_rules rules;
	size_t max_string;

	/* The element being decoded. */
	size_t elem_start;
	int elem_rc; /* the first error in it; elem_reason says why */
	char elem_reason[JSON_REASON_MAX];
	char key[JSON_KEY_MAX]; /* the current key, printable for messages */
	int key_idx;            /* its native field, or -1 */
	struct beacon_fields fields;
	size_t repairs; /* strings of the element the text rules repaired */
	size_t scratch_used;
	char scratch[BEACON_MAX_BYTES];
	char unescaped[EVENT_ARENA_BYTES]; /* a string yajl could not decode (json_string) */
	struct event ev;
};

static int json_cancel(struct json_ctx *c, int rc)
{
	c->rc = rc;
	return 0;
}

static void elem_fail(struct json_ctx *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void elem_fail(struct json_ctx *c, int rc, const char *fmt, ...)
{
	va_list ap;

	if (c->elem_rc != 0)
		return; /* the first reason is the one reported */
	c->elem_rc = rc;
	va_start(ap, fmt);
	vsnprintf(c->elem_reason, sizeof(c->elem_reason), fmt, ap);
	va_end(ap);
}

static bool json_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* A value opens at the current depth: count it when it is an element of the array. */
static int json_value_begins(struct json_ctx *c)
{
	size_t start = c->boundary;

	if (c->depth != c->base)
		return 1;
	if (++c->elements > c->max_batch) {
		set_err(c->err, c->errlen, "more than %zu beacons in one body", c->max_batch);
		return json_cancel(c, -EMSGSIZE);
	}
	if (!c->decode)
		return 1;
	while (start < c->len && (json_space(c->body[start]) || c->body[start] == ','))
		start++;
	c->elem_start = start;
	c->elem_rc = 0;
	c->elem_reason[0] = '\0';
	c->repairs = 0;
	c->scratch_used = 0;
	fields_init(&c->fields, c->opt);
	return 1;
}

/* The element that began at depth base has closed. */
static int json_element_ends(struct json_ctx *c)
{
	size_t end = yajl_get_bytes_consumed(c->h);
	int rc;

	c->boundary = end;
	if (!c->decode)
		return 1;
	if (c->elem_rc == 0) {
		c->elem_rc =
		    beacon_build(&c->fields, c->req, c->opt, &c->ev, c->scratch, sizeof(c->scratch),
		                 c->elem_reason, sizeof(c->elem_reason));
		if (c->elem_rc == 0 && c->repairs > 0)
			c->ev.text_repaired = true;
	}
	if (c->base == 0)
		return 1; /* a lone object: the caller emits once the document is whole */
	if (c->elem_rc != 0) {
		if (c->reject != NULL)
			c->reject(c->ud, c->elem_rc, c->body + c->elem_start, end - c->elem_start,
			          c->elem_reason);
		return 1;
	}
	rc = c->emit != NULL ? c->emit(c->ud, &c->ev) : 0;
	return rc != 0 ? json_cancel(c, rc) : 1;
}

/* True when the parser is at a field value of a beacon being decoded. */
static bool json_at_field(const struct json_ctx *c)
{
	return c->decode && c->depth == c->base + 1 && c->elem_rc == 0;
}

/* A scalar at element level is an element that is not an object. */
static int json_scalar_element(struct json_ctx *c)
{
	if (!json_value_begins(c))
		return 0;
	if (c->decode)
		elem_fail(c, -EINVAL, "not a JSON object");
	return json_element_ends(c);
}

/*
 * yajl 2.1 decodes \u escapes without checking surrogates: a high surrogate that no
 * escape follows becomes '?' (and the character after it is lost), and one followed by
 * any \u escape is merged with it into an unrelated code point. So the raw text of each
 * string we take is checked here: a \uD800-\uDBFF must be followed at once by a
 * \uDC00-\uDFFF, and a low surrogate must follow a high one. yajl's lexer has already
 * checked that each \u has four hex digits.
 */
static bool json_surrogates_valid(const char *raw, size_t len)
{
	bool want_low = false;

	for (size_t i = 0; i < len; i++) {
		unsigned cp = 0;

		if (raw[i] != '\\' || i + 1 >= len || raw[i + 1] != 'u') {
			if (want_low)
				return false;
			if (raw[i] == '\\')
				i++; /* a two-character escape: skip what it escapes */
			continue;
		}
		if (len - i < 6)
			return false;
		for (size_t k = i + 2; k < i + 6; k++) {
			int d = hex_digit((unsigned char)raw[k]);

			if (d < 0)
				return false;
			cp = cp << 4 | (unsigned)d;
		}
		i += 5;
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			if (want_low)
				return false;
			want_low = true;
		} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
			if (!want_low)
				return false;
			want_low = false;
		} else if (want_low) {
			return false;
		}
	}
	return !want_low;
}

/*
 * The raw text (between the quotes) of the string token yajl has just reported. The whole
 * body is parsed in one yajl_parse call, so yajl_get_bytes_consumed() is the offset just
 * past its closing quote; the opening quote is the nearest earlier '"' that is not escaped
 * (not preceded by an odd run of backslashes). False when that does not hold.
 */
static bool json_raw_string(const struct json_ctx *c, const char **raw, size_t *len)
{
	size_t end = yajl_get_bytes_consumed(c->h);
	size_t q;

	if (end < 2 || end > c->len || c->body[end - 1] != '"')
		return false;
	for (q = end - 1; q-- > 0;) {
		size_t backslashes = 0;

		if (c->body[q] != '"')
			continue;
		while (backslashes < q && c->body[q - 1 - backslashes] == '\\')
			backslashes++;
		if (backslashes % 2 == 0) {
			*raw = c->body + q + 1;
			*len = end - 1 - (q + 1);
			return true;
		}
	}
	return false;
}

/* True when the string token just reported has no broken surrogate escapes. A token
 * that cannot be found in the body is refused too: we cannot vouch for it. */
static bool json_string_escapes_valid(const struct json_ctx *c)
{
	const char *raw;
	size_t len;

	return json_raw_string(c, &raw, &len) && json_surrogates_valid(raw, len);
}

/* A field value (of any field: unknown ones are checked too) under the text rules and
 * limits.max_string_bytes; kept in scratch when the field is one of ours. */
static int json_field_value(struct json_ctx *c, const char *v, size_t len)
{
	size_t repaired_len = 0, out_len;
	int rc = text_check(v, len, &c->rules, &repaired_len);
	char *copy;

	if (rc == -EILSEQ) {
		elem_fail(c, -EILSEQ, "field %s: not UTF-8", c->key);
		return 1;
	}
	if (rc == -EBADMSG) {
		elem_fail(c, -EINVAL, "field %s: a control character", c->key);
		return 1;
	}
	out_len = rc == 1 ? repaired_len : len;
	if (out_len > c->max_string) {
		elem_fail(c, -ENOSPC, "field %s: longer than limits.max_string_bytes (%zu)", c->key,
		          c->max_string);
		return 1;
	}
	if (c->key_idx < 0 || len == 0)
		return 1;
	/* yajl's buffer is reused for the next token: keep a copy for the build. */
	if (out_len > sizeof(c->scratch) - c->scratch_used) {
		elem_fail(c, -ENOSPC, "beacon too large");
		return 1;
	}
	copy = c->scratch + c->scratch_used;
	if (rc == 1) {
		text_repair(v, len, &c->rules, copy, out_len);
		c->repairs++;
	} else {
		memcpy(copy, v, len);
	}
	c->scratch_used += out_len;
	if (fields_put(&c->fields, c->key_idx, copy, out_len, c->elem_reason,
	               sizeof(c->elem_reason)) < 0)
		c->elem_rc = -EINVAL;
	return 1;
}

static unsigned json_hex4(const char *s)
{
	unsigned cp = 0;

	for (int k = 0; k < 4; k++)
		cp = cp << 4 | (unsigned)hex_digit((unsigned char)s[k]);
	return cp;
}

/* Writes code point cp as UTF-8 into out; returns its length. */
static size_t utf8_encode(unsigned cp, char out[4])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/*
 * Decodes the raw text of a JSON string (yajl's lexer has checked its escapes: each \u has
 * four hex digits) into out, with each \u escape of a surrogate that is not half of a pair
 * becoming U+FFFD: what JavaScript's JSON.stringify writes for a string cut in the middle
 * of an emoji. False when the result does not fit in cap.
 */
static bool json_unescape_repair(const char *raw, size_t len, char *out, size_t cap,
                                 size_t *out_len)
{
	size_t i = 0, w = 0;

	while (i < len) {
		char tmp[4];
		size_t n = 1;

		if (raw[i] != '\\' || i + 1 >= len) {
			tmp[0] = raw[i++];
		} else if (raw[i + 1] != 'u') {
			static const char from[] = "bfnrt", to[] = "\b\f\n\r\t";
			const char *esc = strchr(from, raw[i + 1]);

			tmp[0] = esc != NULL && raw[i + 1] != '\0' ? to[esc - from] : raw[i + 1];
			i += 2;
		} else if (len - i < 6) {
			return false; /* not what yajl lets through */
		} else {
			unsigned cp = json_hex4(raw + i + 2), low;

			i += 6;
			if (cp >= 0xD800 && cp <= 0xDBFF && len - i >= 6 && raw[i] == '\\' &&
			    raw[i + 1] == 'u' && (low = json_hex4(raw + i + 2)) >= 0xDC00 &&
			    low <= 0xDFFF) {
				cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
				i += 6;
			} else if (cp >= 0xD800 && cp <= 0xDFFF) {
				cp = 0xFFFD;
			}
			n = utf8_encode(cp, tmp);
		}
		if (n > cap - w)
			return false;
		memcpy(out + w, tmp, n);
		w += n;
	}
	*out_len = w;
	return true;
}

static int json_null(void *ctx)
{
	struct json_ctx *c = ctx;

	if (c->depth == c->base)
		return json_scalar_element(c);
	return 1; /* null is absent */
}

static int json_boolean(void *ctx, int value)
{
	struct json_ctx *c = ctx;

	if (c->depth == c->base)
		return json_scalar_element(c);
	if (json_at_field(c))
		elem_fail(c, -EINVAL, "field %s: true/false not allowed", c->key);
	return 1;
}

static int json_number(void *ctx, const char *s, size_t len)
{
	struct json_ctx *c = ctx;

	if (c->depth == c->base)
		return json_scalar_element(c);
	if (json_at_field(c))
		return json_field_value(c, s, len);
	return 1;
}

static int json_string(void *ctx, const unsigned char *s, size_t len)
{
	struct json_ctx *c = ctx;

	if (c->depth == c->base)
		return json_scalar_element(c);
	if (!json_at_field(c))
		return 1;
	if (!json_string_escapes_valid(c)) {
		const char *raw;
		size_t raw_len, n;

		/* yajl has already mangled such a string: with limits.invalid_utf8=replace it
		 * is decoded again from its raw text, the broken halves as U+FFFD. */
		if (!c->rules.replace_invalid_utf8 || !json_raw_string(c, &raw, &raw_len)) {
			elem_fail(c, -EILSEQ, "field %s: not UTF-8 (broken surrogate escape)",
			          c->key);
			return 1;
		}
		if (!json_unescape_repair(raw, raw_len, c->unescaped, sizeof(c->unescaped), &n)) {
			elem_fail(c, -ENOSPC, "field %s: longer than limits.max_string_bytes (%zu)",
			          c->key, c->max_string);
			return 1;
		}
		if (c->key_idx >= 0)
			c->repairs++;
		return json_field_value(c, c->unescaped, n);
	}
	return json_field_value(c, (const char *)s, len);
}

/*
 * A field name: counted, and checked like a value (text rules, limits.max_string_bytes).
 * Our field names are ASCII, so a name the rules repair names none of them: its value is
 * checked and dropped like any unknown field's.
 */
static int json_map_key(void *ctx, const unsigned char *s, size_t len)
{
	struct json_ctx *c = ctx;
	const char *k = (const char *)s;
	size_t repaired_len;
	int rc;

	if (!json_at_field(c))
		return 1;
	printable_name(k, len, c->key, sizeof(c->key));
	c->key_idx = field_lookup(k, len);
	if (fields_count(&c->fields, c->elem_reason, sizeof(c->elem_reason)) < 0) {
		c->elem_rc = -E2BIG;
		return 1;
	}
	if (len == 0) { /* as on the query path ("=v"): one beacon, one rule */
		elem_fail(c, -EINVAL, "empty field name");
		return 1;
	}
	if (len > c->max_string) {
		elem_fail(c, -ENOSPC, "a field name longer than limits.max_string_bytes (%zu)",
		          c->max_string);
		return 1;
	}
	rc = text_check(k, len, &c->rules, &repaired_len);
	if (rc == 0 && !json_string_escapes_valid(c))
		rc = c->rules.replace_invalid_utf8 ? 1 : -EILSEQ;
	if (rc == -EILSEQ)
		elem_fail(c, -EILSEQ, "field name not UTF-8");
	else if (rc == -EBADMSG)
		elem_fail(c, -EINVAL, "a control character in a field name");
	else if (rc == 1)
		c->key_idx = -1;
	return 1;
}

static int json_open(struct json_ctx *c, bool is_map)
{
	if (!json_value_begins(c))
		return 0;
	if (c->decode && c->depth == c->base && !is_map)
		elem_fail(c, -EINVAL, "not a JSON object");
	else if (json_at_field(c))
		elem_fail(c, -EINVAL, "field %s: nested values not allowed", c->key);
	if (++c->depth > c->max_depth) {
		set_err(c->err, c->errlen, "JSON nested deeper than %zu", c->max_depth);
		return json_cancel(c, -EINVAL);
	}
	if (c->depth == 1 && c->base == 1)
		c->boundary = yajl_get_bytes_consumed(c->h); /* just after the '[' */
	return 1;
}

static int json_close(struct json_ctx *c)
{
	c->depth--;
	if (c->depth == c->base)
		return json_element_ends(c);
	return 1;
}

static int json_start_map(void *ctx)
{
	return json_open(ctx, true);
}

static int json_end_map(void *ctx)
{
	return json_close(ctx);
}

static int json_start_array(void *ctx)
{
	return json_open(ctx, false);
}

static int json_end_array(void *ctx)
{
	return json_close(ctx);
}

static const yajl_callbacks json_callbacks = {
    .yajl_null = json_null,
    .yajl_boolean = json_boolean,
    .yajl_number = json_number, /* raw text: ts and rev are validated as text */
    .yajl_string = json_string,
    .yajl_start_map = json_start_map,
    .yajl_map_key = json_map_key,
    .yajl_end_map = json_end_map,
    .yajl_start_array = json_start_array,
    .yajl_end_array = json_end_array,
};

/* One pass over the whole body with a fresh handle. */
static int json_pass(struct json_ctx *c, bool decode)
{
	yajl_status st;
	int rc = 0;

	c->decode = decode;
	c->depth = 0;
	c->elements = 0;
	c->boundary = 0;
	c->rc = 0;
	c->elem_rc = 0;
	c->h = yajl_alloc(&json_callbacks, NULL, c);
	if (c->h == NULL) {
		set_err(c->err, c->errlen, "out of memory");
		return -ENOMEM;
	}
	yajl_config(c->h, yajl_dont_validate_strings, 1);
	st = yajl_parse(c->h, (const unsigned char *)c->body, c->len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(c->h);
	if (st == yajl_status_client_canceled) {
		rc = c->rc;
	} else if (st != yajl_status_ok) {
		unsigned char *msg = yajl_get_error(c->h, 0, NULL, 0);
		char *nl;

		set_err(c->err, c->errlen, "not JSON: %s", msg ? (const char *)msg : "?");
		if (c->err != NULL && (nl = strchr(c->err, '\n')) != NULL)
			*nl = '\0';
		if (msg != NULL)
			yajl_free_error(c->h, msg);
		rc = -EINVAL;
	}
	yajl_free(c->h);
	c->h = NULL;
	return rc;
}

int beacon_decode_json(const char *body, size_t len, const struct beacon_request *req,
                       const struct beacon_options *opt, beacon_emit_fn emit,
                       beacon_reject_fn reject, void *ud, char *err, size_t errlen)
{
	struct json_ctx c;
	size_t i = 0;
	int rc;

	while (i < len && json_space(body[i]))
		i++;
	if (i == len || (body[i] != '{' && body[i] != '[')) {
		set_err(err, errlen, "not a JSON object or array");
		return -EINVAL;
	}
	memset(&c, 0, offsetof(struct json_ctx, scratch));
	c.body = body;
	c.len = len;
	c.req = req;
	c.opt = opt;
	c.emit = emit;
	c.reject = reject;
	c.ud = ud;
	c.err = err;
	c.errlen = errlen;
	c.rules = text_rules_of(opt);
	c.max_string = max_string_of(opt);
	c.base = body[i] == '[' ? 1 : 0;
	c.max_depth = opt_or(opt->max_json_depth, BEACON_DEFAULT_MAX_JSON_DEPTH);
	c.max_batch = c.base ? opt_or(opt->max_batch, BEACON_DEFAULT_MAX_BATCH) : 1;

	if (c.base == 1) {
		rc = json_pass(&c, false);
		if (rc != 0)
			return rc;
	}
	rc = json_pass(&c, true);
	if (rc != 0 || c.base == 1)
		return rc;
	/* A lone object is one beacon: its failure is the call's, like a query beacon. */
	if (c.elem_rc != 0) {
		set_err(err, errlen, "%s", c.elem_reason);
		return c.elem_rc;
	}
	return emit != NULL ? emit(ud, &c.ev) : 0;
}

/* ----------------------------------------------------------------------------- IPs */

int beacon_anonymize_ip(const char *ip, char *out, size_t cap)
{
	unsigned char addr[sizeof(struct in6_addr)];
	char buf[INET6_ADDRSTRLEN];
	size_t len;

	if (ip == NULL)
		return -EINVAL;
	if (inet_pton(AF_INET, ip, addr) == 1) {
		addr[3] = 0;
		inet_ntop(AF_INET, addr, buf, sizeof(buf));
	} else if (inet_pton(AF_INET6, ip, addr) == 1) {
		/* An IPv4-mapped address (::ffff:a.b.c.d, what a dual-stack socket reports)
		 * is an IPv4 client: its /24, not a /48 that would keep nothing. */
		static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0,    0,
		                                            0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(addr, v4_mapped, sizeof(v4_mapped)) == 0)
			addr[15] = 0;
		else
			memset(addr + 6, 0, sizeof(addr) - 6);
		inet_ntop(AF_INET6, addr, buf, sizeof(buf));
	} else {
		return -EINVAL;
	}
	len = strlen(buf);
	if (len + 1 > cap)
		return -ENOSPC;
	memcpy(out, buf, len + 1);
	return (int)len;
}
