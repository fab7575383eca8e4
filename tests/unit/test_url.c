/*
 * test_url.c - percent-decoding, UTF-8, query strings, URL splitting and host comparison
 * (url.h). The cases live in tests/data/url_*.tsv (found through CLICKD_TEST_DATA, which
 * ctest sets); this file holds the table reader and the checks that are not table-shaped:
 * in-place decoding, scratch ownership, callback stop, bounds of the split parts.
 *
 * Output buffers are heap blocks of exactly the capacity passed, so a write past it is an
 * AddressSanitizer error in the sanitizer build.
 */
#include "clickd/url.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ the table reader */

#define TABLE_MAX_COLUMNS 64

struct table_row {
	int line;
	size_t columns;
	char *col[TABLE_MAX_COLUMNS]; /* unescaped, NUL-terminated (may also hold NULs) */
	size_t len[TABLE_MAX_COLUMNS];
};

struct table {
	char name[64];
	char *text;
	size_t rows;
	struct table_row *row;
};

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* \t \n \r \\ and \xHH are escapes; any other backslash is kept. Returns the new length. */
static size_t unescape(char *s, size_t len)
{
	size_t i = 0, n = 0;

	while (i < len) {
		if (s[i] == '\\' && i + 1 < len) {
			char e = s[i + 1];

			if (e == 't' || e == 'n' || e == 'r' || e == '\\') {
				s[n++] = e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : '\\';
				i += 2;
				continue;
			}
			if (e == 'x' && i + 3 < len && hex_digit(s[i + 2]) >= 0 &&
			    hex_digit(s[i + 3]) >= 0) {
				s[n++] = (char)(hex_digit(s[i + 2]) << 4 | hex_digit(s[i + 3]));
				i += 4;
				continue;
			}
		}
		s[n++] = s[i++];
	}
	return n;
}

static void table_load(struct table *t, const char *name)
{
	const char *dir = getenv("CLICKD_TEST_DATA");
	char path[1024];
	FILE *f;
	long size;
	char *p, *end;

	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/data", name);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s (is CLICKD_TEST_DATA set?)", path);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	t->text = malloc((size_t)size + 1);
	cr_assert_not_null(t->text);
	cr_assert_eq(fread(t->text, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	t->text[size] = '\0';
	t->row = calloc((size_t)size + 1, sizeof(*t->row)); /* at most one row per byte */
	cr_assert_not_null(t->row);

	p = t->text;
	end = t->text + size;
	for (int line = 1; p < end; line++) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *stop = nl ? nl : end;
		struct table_row *r = &t->row[t->rows];

		if (stop > p && p[0] != '#') {
			char *c = p;

			r->line = line;
			for (;;) {
				char *tab = memchr(c, '\t', (size_t)(stop - c));
				char *cend = tab ? tab : stop;

				cr_assert_lt(r->columns, TABLE_MAX_COLUMNS,
				             "%s:%d: too many columns", name, line);
				r->col[r->columns] = c;
				r->len[r->columns] = unescape(c, (size_t)(cend - c));
				c[r->len[r->columns]] = '\0';
				r->columns++;
				if (tab == NULL)
					break;
				c = tab + 1;
			}
			t->rows++;
		}
		p = stop + 1;
	}
	cr_assert_gt(t->rows, 0, "%s holds no cases", name);
}

static void table_free(struct table *t)
{
	free(t->row);
	free(t->text);
}

static int result_code(const struct table *t, const struct table_row *r, const char *s)
{
	if (strcmp(s, "OK") == 0)
		return 0;
	if (strcmp(s, "EINVAL") == 0)
		return -EINVAL;
	if (strcmp(s, "EILSEQ") == 0)
		return -EILSEQ;
	if (strcmp(s, "ENOSPC") == 0)
		return -ENOSPC;
	cr_assert_fail("%s:%d: unknown result %s", t->name, r->line, s);
	return 1;
}

static bool bytes_eq(const char *a, size_t a_len, const char *b, size_t b_len)
{
	return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

/* ---------------------------------------------------------------------- url_decode */

Test(url, decodes_every_case_of_the_decode_table)
{
	struct table t;

	table_load(&t, "url_decode.tsv");
	for (size_t i = 0; i < t.rows; i++) {
		const struct table_row *r = &t.row[i];
		size_t cap, out_len = (size_t)-1;
		int want, rc;
		char *out;

		cr_assert_eq(r->columns, 6, "url_decode.tsv:%d: want 6 columns", r->line);
		cap = strcmp(r->col[3], "-") == 0 ? r->len[1] : strtoul(r->col[3], NULL, 10);
		want = result_code(&t, r, r->col[4]);
		out = malloc(cap ? cap : 1);
		rc = url_decode(r->col[1], r->len[1], out, cap, r->col[2][0] == '1', &out_len);
		cr_expect_eq(rc, want, "url_decode.tsv:%d (%s): rc %d, want %d", r->line, r->col[0],
		             rc, want);
		if (rc == 0 && want == 0)
			cr_expect(bytes_eq(out, out_len, r->col[5], r->len[5]),
			          "url_decode.tsv:%d (%s): got '%.*s'", r->line, r->col[0],
			          (int)out_len, out);
		free(out);
	}
	table_free(&t);
}

Test(url, decodes_every_case_of_the_decode_table_in_place_too)
{
	struct table t;

	table_load(&t, "url_decode.tsv");
	for (size_t i = 0; i < t.rows; i++) {
		const struct table_row *r = &t.row[i];
		size_t out_len = (size_t)-1;
		char *buf;
		int rc;

		if (strcmp(r->col[3], "-") != 0)
			continue; /* a smaller cap than the input cannot be in place */
		buf = malloc(r->len[1] ? r->len[1] : 1);
		memcpy(buf, r->col[1], r->len[1]);
		rc = url_decode(buf, r->len[1], buf, r->len[1], r->col[2][0] == '1', &out_len);
		cr_expect_eq(rc, result_code(&t, r, r->col[4]), "url_decode.tsv:%d (%s) in place",
		             r->line, r->col[0]);
		if (rc == 0)
			cr_expect(bytes_eq(buf, out_len, r->col[5], r->len[5]),
			          "url_decode.tsv:%d (%s) in place: got '%.*s'", r->line, r->col[0],
			          (int)out_len, buf);
		free(buf);
	}
	table_free(&t);
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

	table_load(&t, "url_utf8.tsv");
	for (size_t i = 0; i < t.rows; i++) {
		const struct table_row *r = &t.row[i];
		bool want;

		cr_assert_eq(r->columns, 3, "url_utf8.tsv:%d: want 3 columns", r->line);
		want = r->col[2][0] == '1';
		cr_expect_eq(url_utf8_valid(r->col[1], r->len[1]), want, "url_utf8.tsv:%d (%s)",
		             r->line, r->col[0]);
	}
	table_free(&t);
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

	table_load(&t, "url_query.tsv");
	for (size_t i = 0; i < t.rows; i++) {
		const struct table_row *r = &t.row[i];
		struct pairs p = {0};
		char *scratch;
		size_t want_pairs;
		int rc, want;

		cr_assert_geq(r->columns, 3, "url_query.tsv:%d: want 3 columns", r->line);
		cr_assert_eq((r->columns - 3) % 2, 0, "url_query.tsv:%d: odd pair columns",
		             r->line);
		want = result_code(&t, r, r->col[2]);
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
	table_free(&t);
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

	table_load(&t, "url_split.tsv");
	for (size_t i = 0; i < t.rows; i++) {
		const struct table_row *r = &t.row[i];
		struct url_parts u;
		int rc, want;

		cr_assert(r->columns == 3 || r->columns == 9,
		          "url_split.tsv:%d: want 3 or 9 columns", r->line);
		want = result_code(&t, r, r->col[2]);
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
	table_free(&t);
}

Test(url, every_split_part_points_into_the_input)
{
	struct table t;

	table_load(&t, "url_split.tsv");
	for (size_t i = 0; i < t.rows; i++) {
		const struct table_row *r = &t.row[i];
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
	table_free(&t);
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

	table_load(&t, "url_same_site.tsv");
	for (size_t i = 0; i < t.rows; i++) {
		const struct table_row *r = &t.row[i];
		bool want;

		cr_assert_eq(r->columns, 4, "url_same_site.tsv:%d: want 4 columns", r->line);
		want = r->col[3][0] == '1';
		cr_expect_eq(url_host_same_site(r->col[1], r->len[1], r->col[2], r->len[2]), want,
		             "url_same_site.tsv:%d (%s)", r->line, r->col[0]);
		cr_expect_eq(url_host_same_site(r->col[2], r->len[2], r->col[1], r->len[1]), want,
		             "url_same_site.tsv:%d (%s), reversed", r->line, r->col[0]);
	}
	table_free(&t);
}
