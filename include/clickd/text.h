/*
 * text.h - what a string from a client may hold before it reaches a record.
 *
 * Every string an event carries is valid UTF-8 without control characters (event.h). A
 * decoder meets text that is not: bytes that are not UTF-8, and control characters — C0
 * (U+0000..U+001F, NUL, tab and newline included), DEL (U+007F) and C1 (U+0080..U+009F).
 * The config says, for each of the two, whether such text refuses its beacon (a dead
 * letter with the reason) or is repaired: each maximal ill-formed subsequence (Unicode
 * 15, 3.9, "U+FFFD substitution of maximal subparts", what browsers and Python's
 * 'replace' do) and each control character becomes U+FFFD.
 *
 * Pure functions over caller-owned buffers; no allocation, any thread.
 */
#ifndef CLICKD_TEXT_H
#define CLICKD_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* U+FFFD REPLACEMENT CHARACTER in UTF-8. */
#define TEXT_REPLACEMENT     "\xEF\xBF\xBD"
#define TEXT_REPLACEMENT_LEN 3

/* limits.invalid_utf8 and limits.control_chars: false refuses, true repairs. */
struct text_rules {
	bool replace_invalid_utf8;
	bool replace_controls;
};

/* Repairs everything (a header value: not the beacon's data, never a reason to refuse it). */
extern const struct text_rules text_repair_all;

/*
 * Checks s[0..len) against the rules. Returns 0 when the text is clean (valid UTF-8, no
 * control character); -EILSEQ when it is not UTF-8 and the rules refuse that; -EBADMSG
 * when it holds a control character and the rules refuse that (when both, the first one
 * met decides); or 1 when the rules repair what it holds, with the repaired length in
 * *repaired_len (at most 3 x len).
 */
int text_check(const char *s, size_t len, const struct text_rules *rules, size_t *repaired_len);

/* Writes s[0..len) repaired by the rules into out (not overlapping s), stopping before
 * the first character that would not fit in cap: never a part of one. What the rules do
 * not repair is copied as it is. Returns the bytes written. */
size_t text_repair(const char *s, size_t len, const struct text_rules *rules, char *out,
                   size_t cap);

/* The longest prefix of s[0..len) of at most max bytes that does not end inside a valid
 * UTF-8 sequence. */
size_t text_cut(const char *s, size_t len, size_t max);

/* True when s[0..len) holds a control character (C0, DEL, or C1 encoded as UTF-8). */
bool text_has_control(const char *s, size_t len);

#endif
