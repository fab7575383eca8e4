/*
 * channel.h - the GA4 default channel group of a touchpoint.
 *
 * channel_classify() puts a (source, medium, campaign) triple into one of GA4's default
 * channels, applying Google's "manual traffic" rules in their documented order (the rule
 * table is in src/channel.c). clickd adds one rule before all of them: a touch that
 * carries an affiliate ID is Affiliates. Four of the rules ask whether the source is a
 * known search, social, video or shopping site; those source lists live in
 * conf/channels/<list>.txt, are compiled into the binary, and can be replaced by a
 * directory of files at start-up.
 *
 * A `struct channel_lists` is built once (channel_lists_new), then never changes: many
 * threads may classify against it at once without locks. Classifying allocates nothing
 * and makes no syscall; it is meant for the per-event hot path.
 */
#ifndef CLICKD_CHANNEL_H
#define CLICKD_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>

/* GA4's channels, in the order of its rule table; the first rule that matches wins and
 * CHANNEL_UNASSIGNED is what is left. Values are stable only within one build. */
enum channel {
	CHANNEL_DIRECT,
	CHANNEL_CROSS_NETWORK,
	CHANNEL_PAID_SHOPPING,
	CHANNEL_PAID_SEARCH,
	CHANNEL_PAID_SOCIAL,
	CHANNEL_PAID_VIDEO,
	CHANNEL_DISPLAY,
	CHANNEL_PAID_OTHER,
	CHANNEL_ORGANIC_SHOPPING,
	CHANNEL_ORGANIC_SOCIAL,
	CHANNEL_ORGANIC_VIDEO,
	CHANNEL_ORGANIC_SEARCH,
	CHANNEL_REFERRAL,
	CHANNEL_EMAIL,
	CHANNEL_AFFILIATES,
	CHANNEL_AUDIO,
	CHANNEL_SMS,
	CHANNEL_MOBILE_PUSH,
	CHANNEL_UNASSIGNED,
	CHANNEL__COUNT
};

/* The source lists the rules consult; conf/channels/<name>.txt for each. */
enum channel_list {
	CHANNEL_LIST_SEARCH,
	CHANNEL_LIST_SOCIAL,
	CHANNEL_LIST_VIDEO,
	CHANNEL_LIST_SHOPPING,
	CHANNEL_LIST__COUNT
};

/* Distinct entries one list may hold (GA4's largest, social, has 590). Past it loading
 * fails with -E2BIG and names the file and line. */
#define CHANNEL_LIST_MAX_ENTRIES 4096

/* Longest entry, in bytes after %-decoding: the longest DNS name. */
#define CHANNEL_ENTRY_MAX_BYTES 253

/* Largest list file channel_lists_new reads (bytes); a bigger one fails with -EFBIG. */
#define CHANNEL_LIST_MAX_FILE_BYTES (1024 * 1024)

/* The channel as GA4 writes it: "Paid Search", "Organic Social", "Unassigned", ...
 * (static storage). An out-of-range value gives "Unassigned". */
const char *channel_name(enum channel c);

/* GA4's condition for channel c, in our words ("The source is a search site and the
 * medium is paid."), for docs and --check-config style dumps (static storage). */
const char *channel_rule(enum channel c);

/* "search", "social", "video", "shopping" (static storage; the file is <name>.txt), or
 * NULL for an out-of-range value. */
const char *channel_list_name(enum channel_list which);

/* The four source lists. Owns all its memory; immutable once built. */
struct channel_lists;

/* Builds the source lists. dir NULL or "": the built-in lists, compiled into the binary
 * from conf/channels/<list>.txt. Otherwise reads <dir>/search.txt, social.txt, video.txt and
 * shopping.txt, which replace the built-in lists (all four files must exist). Returns a
 * new object to release with channel_lists_free, or NULL with a reason in err (the file
 * and line and what is wrong, or the file and the system error; out of memory says so). */
struct channel_lists *channel_lists_new(const char *dir, char *err, size_t errlen);

/* Four empty lists, to fill with channel_lists_add (tests, the fuzzer, callers that
 * build lists of their own). NULL when out of memory. */
struct channel_lists *channel_lists_new_empty(void);

/* Parses one list file's text[0..len) (format in conf/channels/search.txt's header) and
 * adds its entries to list `which`; used by channel_lists_new and by the fuzzer. Only
 * meant while building: do not call it once other threads classify against l.
 * name_for_errors (may be NULL) prefixes error messages as "name:line: problem".
 * Returns 0, -EINVAL for a bad entry, -E2BIG past CHANNEL_LIST_MAX_ENTRIES, -ENOMEM.
 * On error the entries before the bad line stay added; callers discard l. */
int channel_lists_add(struct channel_lists *l, enum channel_list which, const char *text,
                      size_t len, const char *name_for_errors, char *err, size_t errlen);

/* Releases l and everything it owns; NULL is a no-op. */
void channel_lists_free(struct channel_lists *l);

/* Distinct entries in list `which` (entries equal after normalisation count once). */
size_t channel_lists_count(const struct channel_lists *l, enum channel_list which);

/* True when `source` matches an entry of list `which` (see conf/channels/search.txt for
 * exactly what matches). l may be NULL: no lists, nothing matches. */
bool channel_lists_contains(const struct channel_lists *l, enum channel_list which,
                            const char *source, size_t source_len);

/* The GA4 default channel of a touchpoint. Comparisons ignore ASCII case. A field with
 * len 0 is absent (its pointer may be NULL) and reads as GA4's "(not set)": so source
 * "(direct)" with no medium is Direct, like "(direct)"/"(none)". An affiliate ID (not
 * absent) makes the channel Affiliates before any of GA4's rules is tried. l may be NULL
 * (no source is then on any list). Borrowed strings, any thread, no allocation. */
enum channel channel_classify(const struct channel_lists *l, const char *source, size_t source_len,
                              const char *medium, size_t medium_len, const char *campaign,
                              size_t campaign_len, const char *affiliate_id,
                              size_t affiliate_id_len);

#endif
