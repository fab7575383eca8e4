/*
 * data_table.h - the reader of the tab-separated case tables in tests/data, shared by the
 * unit tests (header-only: every function is static inline). Any mistake in a file, or a file
 * that cannot be read, fails the calling test through a criterion assert.
 *
 * Where: table_data_dir() is $CLICKD_TEST_DATA (ctest sets it) or, unset, "tests/data"
 * (a run from the repo root).
 *
 * Format: one case a line; empty lines and lines that start with '#' are passed over.
 * Every tab starts a new column (an empty column is an empty string; nothing is trimmed),
 * at most TABLE_MAX_COLUMNS of them. Lines are numbered from 1, counting every line, so
 * that "file:line" in a message points at the case.
 *
 * Escapes, for values no plain line can hold: \t \n \r \\ and \xHH (two hex digits of
 * either case; any byte, NUL too). Any other backslash is kept as it is.
 *
 * Use:
 *	struct table t;
 *
 *	table_open(&t, "url_utf8.tsv");
 *	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
 *		cr_assert_eq(r->columns, 3, "%s: want 3 columns", table_where(&t, r));
 *		... r->col[1], r->len[1] ...
 *	}
 *	table_close(&t);
 */
#ifndef CLICKD_TEST_DATA_TABLE_H
#define CLICKD_TEST_DATA_TABLE_H

#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TABLE_MAX_COLUMNS 64

struct table_row {
	int line; /* in the file, from 1 */
	size_t columns;
	char *col[TABLE_MAX_COLUMNS]; /* unescaped, NUL-terminated (may also hold NULs) */
	size_t len[TABLE_MAX_COLUMNS];
};

struct table {
	char name[64]; /* the file name, as given to table_open */
	char *text;    /* the file; the columns point into it */
	size_t rows;
	struct table_row *row;
	char where[192]; /* table_where's answer */
};

static inline const char *table_data_dir(void)
{
	const char *dir = getenv("CLICKD_TEST_DATA");

	return dir ? dir : "tests/data";
}

static inline int table_hex(char c)
{
	static const char digits[] = "0123456789abcdef";
	const char *d = c != '\0' ? strchr(digits, tolower((unsigned char)c)) : NULL;

	return d ? (int)(d - digits) : -1;
}

/* Undoes the escapes of s in place; returns the new length. */
static inline size_t table_unescape(char *s, size_t len)
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
			if (e == 'x' && i + 3 < len && table_hex(s[i + 2]) >= 0 &&
			    table_hex(s[i + 3]) >= 0) {
				s[n++] = (char)(table_hex(s[i + 2]) << 4 | table_hex(s[i + 3]));
				i += 4;
				continue;
			}
		}
		s[n++] = s[i++];
	}
	return n;
}

/* Splits the line [p, stop) into the columns of r. */
static inline void table_split(const struct table *t, struct table_row *r, int line, char *p,
                               char *stop)
{
	r->line = line;
	for (;;) {
		char *tab = memchr(p, '\t', (size_t)(stop - p));
		char *end = tab ? tab : stop;

		cr_assert_lt(r->columns, TABLE_MAX_COLUMNS, "%s:%d: too many columns", t->name,
		             line);
		r->col[r->columns] = p;
		r->len[r->columns] = table_unescape(p, (size_t)(end - p));
		p[r->len[r->columns]] = '\0';
		r->columns++;
		if (tab == NULL)
			break;
		p = tab + 1;
	}
}

/* Reads table_data_dir()/name into t; it must hold at least one case. */
static inline void table_open(struct table *t, const char *name)
{
	char path[1024];
	FILE *f;
	long size;
	char *p, *end;

	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(path, sizeof(path), "%s/%s", table_data_dir(), name);
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

		if (stop > p && p[0] != '#')
			table_split(t, &t->row[t->rows++], line, p, stop);
		p = stop + 1;
	}
	cr_assert_gt(t->rows, 0, "%s holds no cases", name);
}

static inline void table_close(struct table *t)
{
	free(t->row);
	free(t->text);
}

/* The row after r, the first when r is NULL; NULL after the last. */
static inline struct table_row *table_next(struct table *t, const struct table_row *r)
{
	size_t i = r ? (size_t)(r - t->row) + 1 : 0;

	return i < t->rows ? &t->row[i] : NULL;
}

/* "file:line (first column)", for messages; valid until the next call on t. */
static inline const char *table_where(struct table *t, const struct table_row *r)
{
	snprintf(t->where, sizeof(t->where), "%s:%d (%s)", t->name, r->line, r->col[0]);
	return t->where;
}

/* Column c as a result: OK is 0, EINVAL EILSEQ ENOSPC E2BIG EBADMSG EMSGSIZE the negated errno,
 * REPAIRED 1 (text_check's answer). */
static inline int table_result(const struct table *t, const struct table_row *r, size_t c)
{
	static const struct {
		const char *name;
		int rc;
	} results[] = {
	    {"OK", 0},         {"EINVAL", -EINVAL},   {"EILSEQ", -EILSEQ},     {"ENOSPC", -ENOSPC},
	    {"E2BIG", -E2BIG}, {"EBADMSG", -EBADMSG}, {"EMSGSIZE", -EMSGSIZE}, {"REPAIRED", 1},
	};

	for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++)
		if (strcmp(r->col[c], results[i].name) == 0)
			return results[i].rc;
	cr_assert_fail("%s:%d: unknown result %s", t->name, r->line, r->col[c]);
	return 1;
}

/* Column c as a size: its leading decimal digits (strtoul), or dash when it is "-". */
static inline size_t table_size_or(const struct table_row *r, size_t c, size_t dash)
{
	return strcmp(r->col[c], "-") == 0 ? dash : strtoul(r->col[c], NULL, 10);
}

/* Column c as a flag: true when it starts with '1'. */
static inline bool table_flag(const struct table_row *r, size_t c)
{
	return r->col[c][0] == '1';
}

/* Whether two byte strings are equal (either may be NULL when its length is 0). */
static inline bool bytes_eq(const char *a, size_t a_len, const char *b, size_t b_len)
{
	return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

#endif
