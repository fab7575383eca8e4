/*
 * test_text.c - client text under the rules of text.h: control characters and invalid
 * UTF-8, refused or replaced with U+FFFD (one per maximal subpart), cutting at character
 * boundaries. The cases live in tests/data/text.tsv; the exhaustive checks below hold
 * text_check and text_repair to url_utf8_valid (the strict validator) over every string of
 * one and two bytes and many longer ones.
 *
 * Output buffers are heap blocks of exactly the capacity passed, so a write past it is an
 * AddressSanitizer error in the sanitizer build.
 */
#include "clickd/text.h"
#include "clickd/url.h"

#include "data_table.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const struct text_rules rules_none = {false, false};
static const struct text_rules rules_utf8 = {.replace_invalid_utf8 = true};
static const struct text_rules rules_controls = {.replace_controls = true};

static const struct text_rules *rules_named(const char *where, const char *name)
{
	if (strcmp(name, "none") == 0)
		return &rules_none;
	if (strcmp(name, "utf8") == 0)
		return &rules_utf8;
	if (strcmp(name, "controls") == 0)
		return &rules_controls;
	cr_assert_str_eq(name, "all", "%s: unknown rules", where);
	return &text_repair_all;
}

/* The test's own definition: C0, DEL and C1 (as U+0080..U+009F in valid UTF-8). */
static bool has_control(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] < 0x20 || s[i] == 0x7F)
			return true;
		if (s[i] == 0xC2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9F)
			return true;
	}
	return false;
}

Test(text, checks_and_repairs_every_case_of_the_text_table)
{
	struct table t;

	table_open(&t, "text.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		const char *where = table_where(&t, r);
		const struct text_rules *rules;
		size_t repaired_len = (size_t)-1, n;
		int want, rc;
		char *out;

		cr_assert_geq(r->columns, 4, "%s: want 4 columns", where);
		rules = rules_named(where, r->col[1]);
		want = table_result(&t, r, 3);
		rc = text_check(r->col[2], r->len[2], rules, &repaired_len);
		cr_expect_eq(rc, want, "%s: text_check %d, want %d", where, rc, want);
		if (want != 1 || rc != 1)
			continue;
		cr_assert_eq(r->columns, 5, "%s: a repaired case wants the repaired text", where);
		cr_expect_eq(repaired_len, r->len[4], "%s: repaired length %zu, want %zu", where,
		             repaired_len, r->len[4]);
		out = malloc(repaired_len);
		n = text_repair(r->col[2], r->len[2], rules, out, repaired_len);
		cr_expect(bytes_eq(out, n, r->col[4], r->len[4]), "%s: repaired to '%.*s'", where,
		          (int)n, out);
		free(out);
	}
	table_close(&t);
}

/* What every check and repair of s must satisfy, whatever s is. */
static void expect_consistent(const unsigned char *s, size_t len)
{
	const char *str = (const char *)s;
	bool valid = url_utf8_valid(str, len), control = valid && has_control(s, len);
	size_t repaired_len = 0, n;
	char out[64];
	int rc;

	rc = text_check(str, len, &rules_none, &repaired_len);
	cr_assert_eq(rc == 0, valid && !control, "clean iff valid without controls (len %zu)", len);
	cr_assert(rc == 0 || rc == -EILSEQ || rc == -EBADMSG);
	if (valid)
		cr_assert_eq(rc, control ? -EBADMSG : 0);
	if (valid)
		cr_assert_eq(text_has_control(str, len), control);

	rc = text_check(str, len, &text_repair_all, &repaired_len);
	cr_assert(rc == 0 || rc == 1);
	if (rc == 0)
		return;
	cr_assert_leq(repaired_len, 3 * len);
	cr_assert_leq(repaired_len, sizeof(out));
	n = text_repair(str, len, &text_repair_all, out, repaired_len);
	cr_assert_eq(n, repaired_len);
	cr_assert(url_utf8_valid(out, n) && !has_control((unsigned char *)out, n),
	          "a repair is valid UTF-8 without controls");
	/* Repaired text is clean: repairing it again changes nothing. */
	cr_assert_eq(text_check(out, n, &rules_none, &repaired_len), 0);
}

Test(text, every_string_of_one_or_two_bytes_is_checked_consistently)
{
	unsigned char s[2];

	for (unsigned a = 0; a < 256; a++) {
		s[0] = (unsigned char)a;
		expect_consistent(s, 1);
		for (unsigned b = 0; b < 256; b++) {
			s[1] = (unsigned char)b;
			expect_consistent(s, 2);
		}
	}
}

Test(text, longer_strings_are_checked_consistently)
{
	/* Bytes drawn mostly from the interesting ranges: leads, continuations, ASCII. */
	static const unsigned char pool[] = {0x00, 0x09, 0x1F, 0x41, 0x7F, 0x80, 0x85,
	                                     0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0,
	                                     0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	unsigned char s[12];

	for (int i = 0; i < 200000; i++) {
		size_t len = 3 + (size_t)(i % 10);

		for (size_t k = 0; k < len; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			s[k] = pool[x % sizeof(pool)];
		}
		expect_consistent(s, len);
	}
}

Test(text, one_odd_byte_anywhere_in_a_printable_run_is_found)
{
	/* text_check skips printable ASCII 8 bytes at a time: an odd byte at any offset, at
	 * every length around the word size, must still be seen. */
	static const unsigned char odd[] = {0x00, 0x09, 0x1F, 0x20, 0x7E, 0x7F,
	                                    0x80, 0xC2, 0xE2, 0xF0, 0xFF};
	unsigned char s[40];

	for (size_t len = 1; len <= sizeof(s); len++) {
		for (size_t at = 0; at < len; at++) {
			for (size_t k = 0; k < sizeof(odd); k++) {
				memset(s, 'a', len);
				s[at] = odd[k];
				expect_consistent(s, len);
			}
		}
	}
}

Test(text, a_repair_stops_before_a_character_that_does_not_fit)
{
	char out[8];

	/* "ab" then U+FFFD (3 bytes) does not fit in 4: only "ab". */
	cr_assert_eq(text_repair("ab\xff", 3, &text_repair_all, out, 4), 2);
	cr_assert_eq(text_repair("ab\xff", 3, &text_repair_all, out, 5), 5);
	/* A valid four-byte character is never cut either. */
	cr_assert_eq(text_repair("a\xf0\x9f\x98\x80", 5, &text_repair_all, out, 4), 1);
	/* What the rules do not repair is copied as it is. */
	cr_assert_eq(text_repair("a\x01", 2, &rules_utf8, out, sizeof(out)), 2);
	cr_assert_eq(memcmp(out, "a\x01", 2), 0);
}

Test(text, a_cut_never_ends_inside_a_character)
{
	const char *s = "ab\xc3\xa9\xe2\x82\xac"; /* a b é € */

	cr_assert_eq(text_cut(s, 7, 100), 7);
	cr_assert_eq(text_cut(s, 7, 7), 7);
	cr_assert_eq(text_cut(s, 7, 6), 4);
	cr_assert_eq(text_cut(s, 7, 4), 4);
	cr_assert_eq(text_cut(s, 7, 3), 2);
	cr_assert_eq(text_cut(s, 7, 0), 0);
	/* Invalid bytes are units of their own: a cut may fall between them. */
	cr_assert_eq(text_cut("\xff\xff\xff", 3, 2), 2);
}

Test(text, checks_read_only_the_given_length)
{
	size_t n;

	/* The byte after the length would complete the sequence: it must not be read. */
	cr_assert_eq(text_check("\xc3\xa9", 1, &rules_none, &n), -EILSEQ);
	cr_assert_eq(text_check("a\x01", 1, &rules_none, &n), 0);
	cr_assert(!text_has_control("\xc2\x85", 1));
}
