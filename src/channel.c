/*
 * channel.c - the GA4 default channel group (see channel.h).
 *
 * Two halves. `channels[]` is GA4's rule table for manual traffic, one row per channel
 * in Google's order, each condition written as data (which field, which test, which
 * words); channel_classify walks it and the first row that matches wins. Before it,
 * `first_rules[]` holds clickd's own rules, tried in order: the affiliate ID (Affiliates),
 * which GA4 has no input for. The source lists are four open-addressing hash sets keyed
 * by XXH3 of an entry's normal form, so "is this source a social site" costs one hash and
 * a probe or two, with no allocation.
 *
 * The rules follow Google Analytics Help, "[GA4] Default channel group"
 * (https://support.google.com/analytics/answer/9756891), table "Channels for manual
 * traffic". GA4's rules that need Google Ads, DV360 or SA360 data have no input here.
 * Its regular expressions are implemented by hand (no regex engine on the hot path);
 * each test below says which documented condition it implements. Those regexes are
 * anchored (^...$) and their "." does not match a newline, so a value containing '\n'
 * never matches them: the one_line checks.
 *
 * Not here yet: the "AI Assistant" channel GA4 announced on 2026-05-13 (GA4 itself sets
 * medium "ai-assistant" when it recognises the referrer as an AI chatbot). Its row and
 * its place in the rule order were not in the documentation this table was written from;
 * add it to the enum and the table together once they are.
 *
 * Built once at start-up (channel_lists_new, any thread), then read-only: classify from
 * any number of threads at once.
 */
#include "clickd/channel.h"

#include "clickd/url.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- The rule table ---------------------------------------------------------------- */

/* The GA4 fields (absent reads as "(not set)"), then clickd's: the touch's affiliate ID. */
enum field { FIELD_SOURCE, FIELD_MEDIUM, FIELD_CAMPAIGN, FIELD_AFFILIATE_ID, FIELD__COUNT };

enum test_op {
	TEST_NONE = 0,      /* no test: ends a group */
	TEST_IS,            /* the field equals one of the words */
	TEST_CONTAINS,      /* the field contains one of the words */
	TEST_ENDS_WITH,     /* the field ends with one of the words */
	TEST_LINE_CONTAINS, /* regex ^(.*w.*)$: one line that contains the word */
	TEST_LINE_STARTS,   /* regex ^(w.*)$: one line that starts with the word */
	TEST_SHOP_WORD,     /* regex ^(.*(([^a-df-z]|^)shop|shopping).*)$, see shop_word() */
	TEST_IN_LIST,       /* the source matches an entry of a source list */
	TEST_PRESENT,       /* the field is there (not absent) */
};

#define MAX_WORDS  7 /* per test, with the NULL that ends them */
#define MAX_TESTS  3 /* per group: any one of them (OR) */
#define MAX_GROUPS 2 /* per rule: all of them (AND) */

struct test {
	enum test_op op;
	enum field field;
	enum channel_list list;       /* TEST_IN_LIST */
	const char *words[MAX_WORDS]; /* lowercase, NULL-terminated */
};

/* A channel and its rule: it matches when every group that has a test has one test that
 * matches. A row with no group (Unassigned) matches everything. */
struct channel_def {
	const char *name; /* as GA4 writes it */
	const char *rule; /* GA4's condition (and clickd's rule first, if any), in our words */
	struct test all_of[MAX_GROUPS][MAX_TESTS];
};

/* Test initialisers, one line each (clang-format would spread each over six lines). */
/* clang-format off */
#define IS(f, ...)        {TEST_IS, FIELD_##f, 0, {__VA_ARGS__, NULL}}
#define CONTAINS(f, ...)  {TEST_CONTAINS, FIELD_##f, 0, {__VA_ARGS__, NULL}}
#define ENDS_WITH(f, ...) {TEST_ENDS_WITH, FIELD_##f, 0, {__VA_ARGS__, NULL}}
#define IN_LIST(which)    {TEST_IN_LIST, FIELD_SOURCE, CHANNEL_LIST_##which, {NULL}}
#define PRESENT(f)        {TEST_PRESENT, FIELD_##f, 0, {NULL}}

/* "Medium matches regex ^(.*cp.*|ppc|retargeting|paid.*)$": contains "cp", or is "ppc" or
 * "retargeting", or starts with "paid" (the first and last on one line). */
#define PAID_MEDIUM                                                                        \
	{TEST_LINE_CONTAINS, FIELD_MEDIUM, 0, {"cp", NULL}},                               \
	IS(MEDIUM, "ppc", "retargeting"),                                                  \
	{TEST_LINE_STARTS, FIELD_MEDIUM, 0, {"paid", NULL}}

/* "Campaign Name matches regex ^(.*(([^a-df-z]|^)shop|shopping).*)$". */
#define SHOP_CAMPAIGN {TEST_SHOP_WORD, FIELD_CAMPAIGN, 0, {NULL}}

/* "Medium matches regex ^(.*video.*)$". */
#define VIDEO_MEDIUM {TEST_LINE_CONTAINS, FIELD_MEDIUM, 0, {"video", NULL}}
/* clang-format on */

/* GA4's manual-traffic rules, in its order (the enum's). "Paid medium" and "names a shop"
 * are the two regexes above. Within a rule the cheap test goes first: Paid Shopping
 * checks the short medium before it scans the campaign. */
static const struct channel_def channels[CHANNEL__COUNT] = {
    [CHANNEL_DIRECT] = {"Direct",
                        "The source is (direct) and the medium is (none) or (not set).",
                        {{IS(SOURCE, "(direct)")}, {IS(MEDIUM, "(not set)", "(none)")}}},
    [CHANNEL_CROSS_NETWORK] = {"Cross-network",
                               "The campaign contains cross-network.",
                               {{CONTAINS(CAMPAIGN, "cross-network")}}},
    [CHANNEL_PAID_SHOPPING] = {"Paid Shopping",
                               "The source is a shopping site or the campaign names a shop, "
                               "and the medium is paid.",
                               {{PAID_MEDIUM}, {IN_LIST(SHOPPING), SHOP_CAMPAIGN}}},
    [CHANNEL_PAID_SEARCH] = {"Paid Search",
                             "The source is a search site and the medium is paid.",
                             {{IN_LIST(SEARCH)}, {PAID_MEDIUM}}},
    [CHANNEL_PAID_SOCIAL] = {"Paid Social",
                             "The source is a social site and the medium is paid.",
                             {{IN_LIST(SOCIAL)}, {PAID_MEDIUM}}},
    [CHANNEL_PAID_VIDEO] = {"Paid Video",
                            "The source is a video site and the medium is paid.",
                            {{IN_LIST(VIDEO)}, {PAID_MEDIUM}}},
    [CHANNEL_DISPLAY] = {"Display",
                         "The medium is display, banner, expandable, interstitial or cpm.",
                         {{IS(MEDIUM, "display", "banner", "expandable", "interstitial", "cpm")}}},
    [CHANNEL_PAID_OTHER] = {"Paid Other", "The medium is paid.", {{PAID_MEDIUM}}},
    [CHANNEL_ORGANIC_SHOPPING] = {"Organic Shopping",
                                  "The source is a shopping site or the campaign names a shop.",
                                  {{IN_LIST(SHOPPING), SHOP_CAMPAIGN}}},
    [CHANNEL_ORGANIC_SOCIAL] = {"Organic Social",
                                "The source is a social site, or the medium is social, "
                                "social-network, social-media, sm, social network or social "
                                "media.",
                                {{IN_LIST(SOCIAL),
                                  IS(MEDIUM, "social", "social-network", "social-media", "sm",
                                     "social network", "social media")}}},
    [CHANNEL_ORGANIC_VIDEO] = {"Organic Video",
                               "The source is a video site or the medium contains video.",
                               {{IN_LIST(VIDEO), VIDEO_MEDIUM}}},
    [CHANNEL_ORGANIC_SEARCH] = {"Organic Search",
                                "The source is a search site or the medium is organic.",
                                {{IN_LIST(SEARCH), IS(MEDIUM, "organic")}}},
    [CHANNEL_REFERRAL] = {"Referral",
                          "The medium is referral, app or link.",
                          {{IS(MEDIUM, "referral", "app", "link")}}},
    [CHANNEL_EMAIL] = {"Email",
                       "The source or the medium is email, e-mail, e_mail or e mail.",
                       {{IS(SOURCE, "email", "e-mail", "e_mail", "e mail"),
                         IS(MEDIUM, "email", "e-mail", "e_mail", "e mail")}}},
    [CHANNEL_AFFILIATES] = {"Affiliates",
                            "The touch carries an affiliate ID (clickd's rule, before all "
                            "others), or the medium is affiliate.",
                            {{IS(MEDIUM, "affiliate")}}},
    [CHANNEL_AUDIO] = {"Audio", "The medium is audio.", {{IS(MEDIUM, "audio")}}},
    [CHANNEL_SMS] = {"SMS",
                     "The source or the medium is sms.",
                     {{IS(SOURCE, "sms"), IS(MEDIUM, "sms")}}},
    [CHANNEL_MOBILE_PUSH] = {"Mobile Push Notifications",
                             "The medium ends with push or contains mobile or notification, "
                             "or the source is firebase.",
                             {{ENDS_WITH(MEDIUM, "push"),
                               CONTAINS(MEDIUM, "mobile", "notification"),
                               IS(SOURCE, "firebase")}}},
    [CHANNEL_UNASSIGNED] = {"Unassigned", "No rule above matched.", {{{0}}}},
};

/* clickd's rules, tried in order before GA4's table: the first whose test matches gives
 * its channel. An affiliate network pays on the ID it put in the landing URL, so that is
 * how the touch was bought, whatever its source and medium say. */
static const struct {
	enum channel channel;
	struct test test;
} first_rules[] = {
    {CHANNEL_AFFILIATES, PRESENT(AFFILIATE_ID)},
};

static const char *const list_names[CHANNEL_LIST__COUNT] = {
    [CHANNEL_LIST_SEARCH] = "search",
    [CHANNEL_LIST_SOCIAL] = "social",
    [CHANNEL_LIST_VIDEO] = "video",
    [CHANNEL_LIST_SHOPPING] = "shopping",
};

const char *channel_name(enum channel c)
{
	if ((unsigned)c >= CHANNEL__COUNT)
		c = CHANNEL_UNASSIGNED;
	return channels[c].name;
}

const char *channel_rule(enum channel c)
{
	if ((unsigned)c >= CHANNEL__COUNT)
		c = CHANNEL_UNASSIGNED;
	return channels[c].rule;
}

const char *channel_list_name(enum channel_list which)
{
	if ((unsigned)which >= CHANNEL_LIST__COUNT)
		return NULL;
	return list_names[which];
}

/* ---- Case-insensitive matching ----------------------------------------------------- */

static unsigned char fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* s[at..] starts with the lowercase word w (wlen bytes), ignoring ASCII case. */
static bool has_at(const char *s, size_t len, size_t at, const char *w, size_t wlen)
{
	if (at > len || len - at < wlen)
		return false;
	for (size_t i = 0; i < wlen; i++)
		if (fold((unsigned char)s[at + i]) != (unsigned char)w[i])
			return false;
	return true;
}

/* The length of the lowercase, NUL-terminated word w when s[at..] starts with it
 * (ignoring ASCII case), else 0. Words are short literals: no strlen per test. */
static size_t word_at(const char *s, size_t len, size_t at, const char *w)
{
	size_t i = 0;

	for (; w[i]; i++)
		if (at + i >= len || fold((unsigned char)s[at + i]) != (unsigned char)w[i])
			return 0;
	return i;
}

static bool contains_word(const char *s, size_t len, const char *w)
{
	for (size_t at = 0; at < len; at++)
		if (fold((unsigned char)s[at]) == (unsigned char)w[0] && word_at(s, len, at, w))
			return true;
	return false;
}

static bool is_letter_but_e(unsigned char c)
{
	c = fold(c);
	return c >= 'a' && c <= 'z' && c != 'e';
}

/* A field as the rules see it; one_line is false when it holds a '\n'. */
struct view {
	const char *s;
	size_t len;
	bool one_line;
};

/*
 * Campaign Name matches regex ^(.*(([^a-df-z]|^)shop|shopping).*)$, case-insensitively
 * as GA4 applies its rules: the value is one line and contains "shopping", or contains
 * "shop" at its start or right after a character outside [a-df-z] - anything but a
 * letter other than e ("eshop", "summer-shop", "2shop" match; "workshop" does not).
 */
static bool shop_word(const struct view *v)
{
	if (!v->one_line)
		return false;
	for (size_t at = 0; at + 4 <= v->len; at++) {
		if (!has_at(v->s, v->len, at, "shop", 4))
			continue;
		if (at == 0 || !is_letter_but_e((unsigned char)v->s[at - 1]))
			return true;
		if (has_at(v->s, v->len, at, "shopping", 8))
			return true;
	}
	return false;
}

static bool word_test(enum test_op op, const struct view *v, const char *w)
{
	size_t wlen;

	switch (op) {
	case TEST_IS:
		return word_at(v->s, v->len, 0, w) == v->len;
	case TEST_CONTAINS:
		return contains_word(v->s, v->len, w);
	case TEST_ENDS_WITH:
		wlen = strlen(w);
		return v->len >= wlen && has_at(v->s, v->len, v->len - wlen, w, wlen);
	case TEST_LINE_CONTAINS:
		return v->one_line && contains_word(v->s, v->len, w);
	case TEST_LINE_STARTS:
		return v->one_line && word_at(v->s, v->len, 0, w) != 0;
	default:
		return false;
	}
}

static bool any_word(const struct test *t, const struct view *v)
{
	for (const char *const *w = t->words; *w; w++)
		if (word_test(t->op, v, *w))
			return true;
	return false;
}

/* in_lists: bit `which` set when the source is on list `which`. */
static bool test_matches(const struct test *t, const struct view fields[FIELD__COUNT],
                         unsigned in_lists)
{
	const struct view *v = &fields[t->field];

	switch (t->op) {
	case TEST_SHOP_WORD:
		return shop_word(v);
	case TEST_IN_LIST:
		return in_lists & (1u << t->list);
	case TEST_PRESENT:
		return v->len > 0;
	default:
		return any_word(t, v);
	}
}

static bool rule_matches(const struct channel_def *def, const struct view fields[FIELD__COUNT],
                         unsigned in_lists)
{
	for (int g = 0; g < MAX_GROUPS; g++) {
		const struct test *group = def->all_of[g];
		bool any = false;

		if (group[0].op == TEST_NONE)
			continue;
		for (int t = 0; t < MAX_TESTS && group[t].op != TEST_NONE && !any; t++)
			any = test_matches(&group[t], fields, in_lists);
		if (!any)
			return false;
	}
	return true;
}

/* ---- Source lists: normal form and hash sets --------------------------------------- */

/* Host prefixes dropped before comparing (conf/channels/search.txt explains). */
static const struct {
	const char *s;
	size_t len;
} host_prefixes[] = {{"www.", 4},    {"m.", 2},   {"l.", 2},     {"lm.", 3},
                     {"mobile.", 7}, {"amp.", 4}, {"touch.", 6}, {"web.", 4}};

/*
 * The normal form of a source or entry, written lowercase into out (at least
 * CHANNEL_ENTRY_MAX_BYTES bytes): one trailing '.' dropped, then the host prefixes, again
 * and again while what remains still contains a dot. Returns its length, or -1 when it
 * is longer than any entry can be. Linear in len (the last dot is found once), since a
 * source is untrusted input on the hot path.
 */
static int normal_form(const char *s, size_t len, char *out)
{
	const char *last_dot;

	if (len > 0 && s[len - 1] == '.')
		len--;
	last_dot = len ? memrchr(s, '.', len) : NULL;
	for (bool stripped = true; stripped && last_dot;) {
		stripped = false;
		for (size_t i = 0; i < sizeof(host_prefixes) / sizeof(host_prefixes[0]); i++) {
			size_t plen = host_prefixes[i].len;

			if (has_at(s, len, 0, host_prefixes[i].s, plen) && last_dot >= s + plen) {
				s += plen;
				len -= plen;
				stripped = true;
				break;
			}
		}
	}
	if (len > CHANNEL_ENTRY_MAX_BYTES)
		return -1;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)fold((unsigned char)s[i]);
	return (int)len;
}

static uint64_t key_hash(const char *key, size_t len)
{
	uint64_t h = XXH3_64bits(key, len);

	return h ? h : 1; /* 0 marks an empty slot */
}

/* One slot of a set; hash 0 = empty. The name is names[off .. off+len). */
struct slot {
	uint64_t hash;
	uint32_t off;
	uint32_t len;
};

/* One source list. Owns slots and names. Load factor stays <= 1/2, so a probe always
 * ends at an empty slot and probes stay short. */
struct source_set {
	struct slot *slots;
	size_t cap; /* power of two, or 0 before the first entry */
	size_t count;
	char *names;
	size_t names_used, names_cap;
};

struct channel_lists {
	struct source_set set[CHANNEL_LIST__COUNT];
};

static bool set_contains(const struct source_set *set, uint64_t hash, const char *key, size_t len)
{
	size_t mask;

	if (set->cap == 0)
		return false;
	mask = set->cap - 1;
	for (size_t i = hash & mask;; i = (i + 1) & mask) {
		const struct slot *e = &set->slots[i];

		if (e->hash == 0)
			return false;
		if (e->hash == hash && e->len == len && memcmp(set->names + e->off, key, len) == 0)
			return true;
	}
}

static void set_place(struct slot *slots, size_t cap, struct slot e)
{
	size_t i = e.hash & (cap - 1);

	while (slots[i].hash != 0)
		i = (i + 1) & (cap - 1);
	slots[i] = e;
}

static int set_grow(struct source_set *set)
{
	size_t cap = set->cap ? set->cap * 2 : 64;
	struct slot *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < set->cap; i++)
		if (set->slots[i].hash != 0)
			set_place(slots, cap, set->slots[i]);
	free(set->slots);
	set->slots = slots;
	set->cap = cap;
	return 0;
}

/* Adds a normal-form key; an existing key is not added twice. 0, -E2BIG or -ENOMEM. */
static int set_add(struct source_set *set, const char *key, size_t len)
{
	uint64_t hash = key_hash(key, len);
	struct slot e;

	if (set_contains(set, hash, key, len))
		return 0;
	if (set->count >= CHANNEL_LIST_MAX_ENTRIES)
		return -E2BIG;
	if ((set->count + 1) * 2 > set->cap && set_grow(set) < 0)
		return -ENOMEM;
	if (set->names_cap - set->names_used < len) {
		size_t cap = set->names_cap ? set->names_cap * 2 : 4096;
		char *names;

		while (cap - set->names_used < len)
			cap *= 2;
		names = realloc(set->names, cap);
		if (!names)
			return -ENOMEM;
		set->names = names;
		set->names_cap = cap;
	}
	memcpy(set->names + set->names_used, key, len);
	e.hash = hash;
	e.off = (uint32_t)set->names_used;
	e.len = (uint32_t)len;
	set->names_used += len;
	set_place(set->slots, set->cap, e);
	set->count++;
	return 0;
}

bool channel_lists_contains(const struct channel_lists *l, enum channel_list which,
                            const char *source, size_t source_len)
{
	char key[CHANNEL_ENTRY_MAX_BYTES];
	int len;

	if (!l || (unsigned)which >= CHANNEL_LIST__COUNT || source_len == 0)
		return false;
	len = normal_form(source, source_len, key);
	if (len <= 0)
		return false;
	return set_contains(&l->set[which], key_hash(key, (size_t)len), key, (size_t)len);
}

size_t channel_lists_count(const struct channel_lists *l, enum channel_list which)
{
	if (!l || (unsigned)which >= CHANNEL_LIST__COUNT)
		return 0;
	return l->set[which].count;
}

/* ---- Classification ---------------------------------------------------------------- */

/* Bit `which` set for each list the source is on: one normal form and hash for all four. */
static unsigned source_lists(const struct channel_lists *l, const char *source, size_t len)
{
	char key[CHANNEL_ENTRY_MAX_BYTES];
	unsigned bits = 0;
	uint64_t hash;
	int n;

	if (!l || len == 0)
		return 0;
	n = normal_form(source, len, key);
	if (n <= 0)
		return 0;
	hash = key_hash(key, (size_t)n);
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++)
		if (set_contains(&l->set[w], hash, key, (size_t)n))
			bits |= 1u << w;
	return bits;
}

enum channel channel_classify(const struct channel_lists *l, const char *source, size_t source_len,
                              const char *medium, size_t medium_len, const char *campaign,
                              size_t campaign_len, const char *affiliate_id,
                              size_t affiliate_id_len)
{
	static const char not_set[] = "(not set)";
	struct view fields[FIELD__COUNT] = {
	    [FIELD_SOURCE] = {source, source_len, true},
	    [FIELD_MEDIUM] = {medium, medium_len, true},
	    [FIELD_CAMPAIGN] = {campaign, campaign_len, true},
	    [FIELD_AFFILIATE_ID] = {affiliate_id, affiliate_id_len, true},
	};
	unsigned in_lists = source_lists(l, source, source_len);

	for (size_t r = 0; r < sizeof(first_rules) / sizeof(first_rules[0]); r++)
		if (test_matches(&first_rules[r].test, fields, in_lists))
			return first_rules[r].channel;
	/* GA4's fields only: clickd's own stay absent when absent. */
	for (int f = FIELD_SOURCE; f <= FIELD_CAMPAIGN; f++) {
		/* GA4 reports an absent value as "(not set)", and its rules see that value. */
		if (fields[f].len == 0) {
			fields[f].s = not_set;
			fields[f].len = sizeof(not_set) - 1;
		}
		fields[f].one_line = memchr(fields[f].s, '\n', fields[f].len) == NULL;
	}
	for (int c = 0; c < CHANNEL__COUNT; c++)
		if (rule_matches(&channels[c], fields, in_lists))
			return (enum channel)c;
	return CHANNEL_UNASSIGNED; /* not reached: the Unassigned row matches everything */
}

/* ---- Loading lists ----------------------------------------------------------------- */

static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* A printable excerpt of a refused entry for error messages: at most 40 bytes, anything
 * but printable ASCII shown as '?', so a log line stays one clean line. */
static void excerpt(const char *s, size_t len, char out[48])
{
	size_t n = len < 40 ? len : 40;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	strcpy(out + n, len > n ? "..." : "");
}

static bool is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* Why one entry (already cut of comment and surrounding blanks) is refused, or NULL. On
 * success its normal form is in key[0..*key_len). */
static const char *parse_entry(const char *s, size_t len, char *key, size_t *key_len)
{
	char decoded[CHANNEL_ENTRY_MAX_BYTES * 3];
	size_t dlen;
	int n, rc;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == ' ' || s[i] == '\t')
			return "a space inside the entry (write a space as %20)";
		if (is_control((unsigned char)s[i]))
			return "a control character in the entry";
	}
	/* Each decoded byte takes at most three encoded ones. */
	if (len > sizeof(decoded))
		return "entry longer than 253 bytes";
	rc = url_decode(s, len, decoded, sizeof(decoded), false, &dlen);
	if (rc == -EILSEQ)
		return "entry is not valid UTF-8";
	if (rc < 0)
		return "a bad %-escape in the entry (write a % as %25)";
	if (dlen > CHANNEL_ENTRY_MAX_BYTES)
		return "entry longer than 253 bytes";
	for (size_t i = 0; i < dlen; i++)
		if (is_control((unsigned char)decoded[i]))
			return "a %-escaped control character in the entry";
	n = normal_form(decoded, dlen, key);
	if (n <= 0)
		return "entry is empty once normalised";
	*key_len = (size_t)n;
	return NULL;
}

int channel_lists_add(struct channel_lists *l, enum channel_list which, const char *text,
                      size_t len, const char *name_for_errors, char *err, size_t errlen)
{
	const char *name = name_for_errors ? name_for_errors : "<list>";
	char key[CHANNEL_ENTRY_MAX_BYTES];
	size_t pos = 0, line_no = 0;

	if (!l || (unsigned)which >= CHANNEL_LIST__COUNT || (!text && len)) {
		fmt_err(err, errlen, "%s: bad arguments", name);
		return -EINVAL;
	}
	/* A UTF-8 byte-order mark, as some editors write, is not part of the first entry. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		pos = 3;
	while (pos < len) {
		const char *s = text + pos;
		const char *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - s) : len - pos;
		const char *hash = memchr(s, '#', n);
		const char *why;
		size_t key_len;
		char shown[48];
		int rc;

		pos += n + (nl ? 1 : 0);
		line_no++;
		if (hash)
			n = (size_t)(hash - s);
		while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
			n--;
		while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
			s++;
			n--;
		}
		if (n == 0)
			continue;
		why = parse_entry(s, n, key, &key_len);
		if (why) {
			excerpt(s, n, shown);
			fmt_err(err, errlen, "%s:%zu: %s: '%s'", name, line_no, why, shown);
			return -EINVAL;
		}
		rc = set_add(&l->set[which], key, key_len);
		if (rc == -E2BIG) {
			fmt_err(err, errlen, "%s:%zu: more than %d entries in the %s list", name,
			        line_no, CHANNEL_LIST_MAX_ENTRIES, list_names[which]);
			return rc;
		}
		if (rc < 0) {
			fmt_err(err, errlen, "%s:%zu: out of memory", name, line_no);
			return rc;
		}
	}
	return 0;
}

void channel_lists_free(struct channel_lists *l)
{
	if (!l)
		return;
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++) {
		free(l->set[w].slots);
		free(l->set[w].names);
	}
	free(l);
}

/* The text of conf/channels/<name>.txt, compiled in by CMakeLists.txt (the generated
 * channel_lists_builtin.c); each array ends with one extra NUL not counted in _len. */
extern const unsigned char channel__builtin_search[], channel__builtin_social[],
    channel__builtin_video[], channel__builtin_shopping[];
extern const size_t channel__builtin_search_len, channel__builtin_social_len,
    channel__builtin_video_len, channel__builtin_shopping_len;

static int add_builtin(struct channel_lists *l, enum channel_list which, char *err, size_t errlen)
{
	static const unsigned char *const texts[CHANNEL_LIST__COUNT] = {
	    channel__builtin_search, channel__builtin_social, channel__builtin_video,
	    channel__builtin_shopping};
	static const size_t *const lens[CHANNEL_LIST__COUNT] = {
	    &channel__builtin_search_len, &channel__builtin_social_len, &channel__builtin_video_len,
	    &channel__builtin_shopping_len};
	char name[64];

	snprintf(name, sizeof(name), "conf/channels/%s.txt (built in)", list_names[which]);
	return channel_lists_add(l, which, (const char *)texts[which], *lens[which], name, err,
	                         errlen);
}

/* Reads all of path (at most CHANNEL_LIST_MAX_FILE_BYTES) into a new buffer. */
static int read_file(const char *path, char **out, size_t *out_len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0;
	int rc;

	if (!f) {
		rc = -errno;
		fmt_err(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	buf = malloc(CHANNEL_LIST_MAX_FILE_BYTES + 1);
	if (!buf) {
		fmt_err(err, errlen, "%s: out of memory", path);
		rc = -ENOMEM;
		goto fail;
	}
	len = fread(buf, 1, CHANNEL_LIST_MAX_FILE_BYTES + 1, f);
	if (ferror(f)) {
		fmt_err(err, errlen, "%s: read error", path);
		rc = -EIO;
		goto fail;
	}
	if (len > CHANNEL_LIST_MAX_FILE_BYTES) {
		fmt_err(err, errlen, "%s: larger than %d bytes", path, CHANNEL_LIST_MAX_FILE_BYTES);
		rc = -EFBIG;
		goto fail;
	}
	fclose(f);
	*out = buf;
	*out_len = len;
	return 0;
fail:
	free(buf);
	fclose(f);
	return rc;
}

static int add_file(struct channel_lists *l, enum channel_list which, const char *dir, char *err,
                    size_t errlen)
{
	char path[4096];
	char *text = NULL;
	size_t len = 0;
	int rc;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s.txt", dir, list_names[which]) >=
	    sizeof(path)) {
		fmt_err(err, errlen, "%s: directory name too long", dir);
		return -ENAMETOOLONG;
	}
	rc = read_file(path, &text, &len, err, errlen);
	if (rc < 0)
		return rc;
	rc = channel_lists_add(l, which, text, len, path, err, errlen);
	free(text);
	return rc;
}

struct channel_lists *channel_lists_new_empty(void)
{
	return calloc(1, sizeof(struct channel_lists));
}

struct channel_lists *channel_lists_new(const char *dir, char *err, size_t errlen)
{
	struct channel_lists *l = channel_lists_new_empty();

	if (!l) {
		fmt_err(err, errlen, "channel lists: out of memory");
		return NULL;
	}
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++) {
		int rc = dir && *dir ? add_file(l, (enum channel_list)w, dir, err, errlen)
		                     : add_builtin(l, (enum channel_list)w, err, errlen);

		if (rc < 0)
			goto fail;
	}
	return l;
fail:
	channel_lists_free(l);
	return NULL;
}
