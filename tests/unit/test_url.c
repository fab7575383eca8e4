/*
 * test_url.c - percent-decoding, UTF-8, query strings, URL splitting and host comparison
 * (url.h). The cases live in tests/data/url_*.tsv (read with data_table.h, found through
 * CLICKD_TEST_DATA, which ctest sets); this file holds the checks, and those that are not
 * table-shaped: in-place decoding, scratch ownership, callback stop, bounds of the split parts.
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

/* ---------------------------------------------------------------------- url_decode */

Test(url, decodes_every_case_of_the_decode_table)
{
	struct table t;

	table_open(&t, "url_decode.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		size_t cap, out_len = (size_t)-1;
		int want, rc;
		char *out;

		cr_assert_eq(r->columns, 6, "url_decode.tsv:%d: want 6 columns", r->line);
		cap = table_size_or(r, 3, r->len[1]);
		want = table_result(&t, r, 4);
		out = malloc(cap ? cap : 1);
		rc = url_decode(r->col[1], r->len[1], out, cap, table_flag(r, 2), &out_len);
		cr_expect_eq(rc, want, "url_decode.tsv:%d (%s): rc %d, want %d", r->line, r->col[0],
		             rc, want);
		if (rc == 0 && want == 0)
			cr_expect(bytes_eq(out, out_len, r->col[5], r->len[5]),
			          "url_decode.tsv:%d (%s): got '%.*s'", r->line, r->col[0],
			          (int)out_len, out);
		free(out);
	}
	table_close(&t);
}

Test(url, decodes_every_case_of_the_decode_table_in_place_too)
{
	struct table t;

	table_open(&t, "url_decode.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		size_t out_len = (size_t)-1;
		char *buf;
		int rc;

		if (strcmp(r->col[3], "-") != 0)
			continue; /* a smaller cap than the input cannot be in place */
		buf = malloc(r->len[1] ? r->len[1] : 1);
		memcpy(buf, r->col[1], r->len[1]);
		rc = url_decode(buf, r->len[1], buf, r->len[1], table_flag(r, 2), &out_len);
		cr_expect_eq(rc, table_result(&t, r, 4), "url_decode.tsv:%d (%s) in place", r->line,
		             r->col[0]);
		if (rc == 0)
			cr_expect(bytes_eq(buf, out_len, r->col[5], r->len[5]),
			          "url_decode.tsv:%d (%s) in place: got '%.*s'", r->line, r->col[0],
			          (int)out_len, buf);
		free(buf);
	}
	table_close(&t);
}

Test(url, decoding_in_place_shrinks_the_buffer_from_the_front)
{
	char buf[] = "a%41+b%2Bc%C3%A9";
	size_t n = 0;

	cr_assert_eq(url_decode(buf, strlen(buf), buf, strlen(buf), true, &n), 0);
	cr_assert_eq(n, 8);
	cr_assert(memcmp(buf, "aA b+c\xc3\xa9", 8) == 0);
}

/* ------------------------------------------------------------------- url_utf8_valid */

Test(url, validates_utf8_as_the_table_says)
{
	struct table t;

	table_open(&t, "url_utf8.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		bool want;

		cr_assert_eq(r->columns, 3, "url_utf8.tsv:%d: want 3 columns", r->line);
		want = table_flag(r, 2);
		cr_expect_eq(url_utf8_valid(r->col[1], r->len[1]), want, "url_utf8.tsv:%d (%s)",
		             r->line, r->col[0]);
	}
	table_close(&t);
}

Test(url, utf8_validation_stops_at_the_given_length)
{
	/* The byte after the length would make the sequence whole: it must not be read. */
	cr_assert(!url_utf8_valid("\xc3\xa9", 1));
	cr_assert(url_utf8_valid("a\xff", 1));
}

/* ------------------------------------------------------------------ url_query_parse */

#define MAX_PAIRS 16

struct pairs {
	size_t n;
	const char *key[MAX_PAIRS], *value[MAX_PAIRS];
	size_t key_len[MAX_PAIRS], value_len[MAX_PAIRS];
	size_t stop_after; /* 0: never stop */
};

static int collect_pair(void *ud, const char *key, size_t key_len, const char *value,
                        size_t value_len)
{
	struct pairs *p = ud;

	cr_assert_lt(p->n, MAX_PAIRS);
	/* Only pointers are kept: the pairs must still be readable after the parse. */
	p->key[p->n] = key;
	p->key_len[p->n] = key_len;
	p->value[p->n] = value;
	p->value_len[p->n] = value_len;
	p->n++;
	return p->stop_after != 0 && p->n == p->stop_after ? 42 : 0;
}

Test(url, parses_every_case_of_the_query_table)
{
	struct table t;

	table_open(&t, "url_query.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		struct pairs p = {0};
		char *scratch;
		size_t want_pairs;
		int rc, want;

		cr_assert_geq(r->columns, 3, "url_query.tsv:%d: want 3 columns", r->line);
		cr_assert_eq((r->columns - 3) % 2, 0, "url_query.tsv:%d: odd pair columns",
		             r->line);
		want = table_result(&t, r, 2);
		want_pairs = (r->columns - 3) / 2;
		/* The documented bound: scratch_cap >= len suffices. */
		scratch = malloc(r->len[1] ? r->len[1] : 1);
		rc = url_query_parse(r->col[1], r->len[1], scratch, r->len[1], collect_pair, &p);
		cr_expect_eq(rc, want, "url_query.tsv:%d (%s): rc %d, want %d", r->line, r->col[0],
		             rc, want);
		cr_expect_eq(p.n, want_pairs, "url_query.tsv:%d (%s): %zu pairs, want %zu", r->line,
		             r->col[0], p.n, want_pairs);
		for (size_t k = 0; k < p.n && k < want_pairs; k++) {
			cr_expect(
			    bytes_eq(p.key[k], p.key_len[k], r->col[3 + 2 * k], r->len[3 + 2 * k]),
			    "url_query.tsv:%d (%s): key %zu is '%.*s'", r->line, r->col[0], k,
			    (int)p.key_len[k], p.key[k]);
			cr_expect(bytes_eq(p.value[k], p.value_len[k], r->col[4 + 2 * k],
			                   r->len[4 + 2 * k]),
			          "url_query.tsv:%d (%s): value %zu is '%.*s'", r->line, r->col[0],
			          k, (int)p.value_len[k], p.value[k]);
		}
		free(scratch);
	}
	table_close(&t);
}

Test(url, a_non_zero_callback_return_stops_the_query_parse_and_is_returned)
{
	const char *q = "a=1&b=2&c=3";
	char scratch[32];
	struct pairs p = {.stop_after = 2};

	cr_assert_eq(url_query_parse(q, strlen(q), scratch, sizeof(scratch), collect_pair, &p), 42);
	cr_assert_eq(p.n, 2);
}

Test(url, a_query_larger_than_scratch_is_no_space)
{
	const char *q = "a=hello";
	char scratch[4];
	struct pairs p = {0};

	cr_assert_eq(url_query_parse(q, strlen(q), scratch, sizeof(scratch), collect_pair, &p),
	             -ENOSPC);
}

Test(url, every_pair_of_a_query_decodes_into_its_own_place_in_scratch)
{
	const char *q = "k1=v1&k2=v2&k3";
	char scratch[32];
	struct pairs p = {0};

	cr_assert_eq(url_query_parse(q, strlen(q), scratch, sizeof(scratch), collect_pair, &p), 0);
	cr_assert_eq(p.n, 3);
	cr_assert(bytes_eq(p.key[0], p.key_len[0], "k1", 2));
	cr_assert(bytes_eq(p.value[0], p.value_len[0], "v1", 2));
	cr_assert(bytes_eq(p.key[1], p.key_len[1], "k2", 2));
	cr_assert(bytes_eq(p.value[1], p.value_len[1], "v2", 2));
	cr_assert(bytes_eq(p.key[2], p.key_len[2], "k3", 2));
	cr_assert_eq(p.value_len[2], 0);
	for (size_t k = 0; k < p.n; k++) {
		cr_assert(p.key[k] >= scratch &&
		          p.key[k] + p.key_len[k] <= scratch + sizeof(scratch));
		cr_assert(p.value[k] >= scratch &&
		          p.value[k] + p.value_len[k] <= scratch + sizeof(scratch));
	}
}

/* ------------------------------------------------------------------------ url_split */

static bool part_within(const char *part, size_t part_len, const char *s, size_t len)
{
	if (part_len == 0)
		return true;
	return part >= s && part + part_len <= s + len;
}

static void expect_part(const struct table_row *r, const char *what, const char *got,
                        size_t got_len, int col)
{
	cr_expect(bytes_eq(got, got_len, r->col[col], r->len[col]),
	          "url_split.tsv:%d (%s): %s is '%.*s', want '%s'", r->line, r->col[0], what,
	          (int)got_len, got ? got : "", r->col[col]);
}

Test(url, splits_every_case_of_the_split_table)
{
	struct table t;

	table_open(&t, "url_split.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		struct url_parts u;
		int rc, want;

		cr_assert(r->columns == 3 || r->columns == 9,
		          "url_split.tsv:%d: want 3 or 9 columns", r->line);
		want = table_result(&t, r, 2);
		rc = url_split(r->col[1], r->len[1], &u);
		cr_expect_eq(rc, want, "url_split.tsv:%d (%s): rc %d, want %d", r->line, r->col[0],
		             rc, want);
		if (rc != 0 || want != 0)
			continue;
		cr_assert_eq(r->columns, 9, "url_split.tsv:%d: an OK case needs 9 columns",
		             r->line);
		expect_part(r, "scheme", u.scheme, u.scheme_len, 3);
		expect_part(r, "host", u.host, u.host_len, 4);
		cr_expect_eq(u.port, atoi(r->col[5]), "url_split.tsv:%d (%s): port %d", r->line,
		             r->col[0], u.port);
		expect_part(r, "path", u.path, u.path_len, 6);
		expect_part(r, "query", u.query, u.query_len, 7);
		expect_part(r, "fragment", u.fragment, u.fragment_len, 8);
	}
	table_close(&t);
}

Test(url, every_split_part_points_into_the_input)
{
	struct table t;

	table_open(&t, "url_split.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		const char *s = r->col[1];
		size_t n = r->len[1];
		struct url_parts u;

		if (url_split(s, n, &u) != 0)
			continue;
		cr_expect(part_within(u.scheme, u.scheme_len, s, n) &&
		              part_within(u.host, u.host_len, s, n) &&
		              part_within(u.path, u.path_len, s, n) &&
		              part_within(u.query, u.query_len, s, n) &&
		              part_within(u.fragment, u.fragment_len, s, n),
		          "url_split.tsv:%d (%s): a part lies outside the input", r->line,
		          r->col[0]);
	}
	table_close(&t);
}

Test(url, split_reads_only_the_given_length)
{
	/* The bytes after len hold a port and a path: they must not be seen. */
	const char *s = "https://example.com:8080/p";
	struct url_parts u;

	cr_assert_eq(url_split(s, strlen("https://example.com"), &u), 0);
	cr_assert_eq(u.port, -1);
	cr_assert_eq(u.host_len, strlen("example.com"));
	cr_assert_eq(u.path_len, 0);
}

/* --------------------------------------------------------------- url_host_same_site */

Test(url, compares_hosts_as_the_same_site_table_says_both_ways_round)
{
	struct table t;

	table_open(&t, "url_same_site.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		bool want;

		cr_assert_eq(r->columns, 4, "url_same_site.tsv:%d: want 4 columns", r->line);
		want = table_flag(r, 3);
		cr_expect_eq(url_host_same_site(r->col[1], r->len[1], r->col[2], r->len[2]), want,
		             "url_same_site.tsv:%d (%s)", r->line, r->col[0]);
		cr_expect_eq(url_host_same_site(r->col[2], r->len[2], r->col[1], r->len[1]), want,
		             "url_same_site.tsv:%d (%s), reversed", r->line, r->col[0]);
	}
	table_close(&t);
}

/* -------------------------------------------------------------- url_query_parse_text */

Test(url, the_text_rules_repair_keys_and_values_in_their_own_places)
{
	const char *q = "a%00=x%FFy&b=%C2%85&c=ok";
	char scratch[64];
	struct pairs p = {0};
	size_t repairs = 0;

	cr_assert_eq(url_query_parse_text(q, strlen(q), scratch, sizeof(scratch), &text_repair_all,
	                                  &repairs, collect_pair, &p),
	             0);
	cr_assert_eq(p.n, 3);
	cr_assert(bytes_eq(p.key[0], p.key_len[0], "a" TEXT_REPLACEMENT, 4));
	cr_assert(bytes_eq(p.value[0], p.value_len[0], "x" TEXT_REPLACEMENT "y", 5));
	cr_assert(bytes_eq(p.value[1], p.value_len[1], TEXT_REPLACEMENT, 3));
	cr_assert(bytes_eq(p.value[2], p.value_len[2], "ok", 2));
	cr_assert_eq(repairs, 3); /* a%00, x%FFy and %C2%85: the clean ones are not counted */
}

Test(url, the_text_rules_refuse_what_they_do_not_repair)
{
	static const struct text_rules none = {false, false};
	static const struct text_rules utf8_only = {.replace_invalid_utf8 = true};
	char scratch[64];
	struct pairs p = {0};

	cr_assert_eq(url_query_parse_text("a=%0A", 5, scratch, sizeof(scratch), &none, NULL,
	                                  collect_pair, &p),
	             -EBADMSG);
	cr_assert_eq(url_query_parse_text("a=%FF", 5, scratch, sizeof(scratch), &none, NULL,
	                                  collect_pair, &p),
	             -EILSEQ);
	cr_assert_eq(url_query_parse_text("a=%FF%7F", 8, scratch, sizeof(scratch), &utf8_only, NULL,
	                                  collect_pair, &p),
	             -EBADMSG);
	/* A bad escape is never repaired. */
	cr_assert_eq(url_query_parse_text("a=%G1", 5, scratch, sizeof(scratch), &text_repair_all,
	                                  NULL, collect_pair, &p),
	             -EINVAL);
	cr_assert_eq(p.n, 0);
}

Test(url, a_repair_needs_room_in_scratch)
{
	const char *q = "a=%FF%FF";
	char *scratch = malloc(4); /* "a" and two raw bytes fit; the 6-byte repair does not */
	char *roomy = malloc(4 * strlen(q));
	struct pairs p = {0};

	cr_assert_eq(url_query_parse_text(q, strlen(q), scratch, 4, &text_repair_all, NULL,
	                                  collect_pair, &p),
	             -ENOSPC);
	/* The documented bound: 4 x len suffices. */
	cr_assert_eq(url_query_parse_text(q, strlen(q), roomy, 4 * strlen(q), &text_repair_all,
	                                  NULL, collect_pair, &p),
	             0);
	cr_assert(bytes_eq(p.value[0], p.value_len[0], TEXT_REPLACEMENT TEXT_REPLACEMENT, 6));
	free(scratch);
	free(roomy);
}
