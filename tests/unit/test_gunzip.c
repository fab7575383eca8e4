/*
 * test_gunzip.c - bounded gzip decompression: round trips, members, bounds, bad input.
 */
#include "clickd/gunzip.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* gzip-compresses src with zlib's deflate (a gzip wrapper), into a new buffer. */
static unsigned char *gz(const void *src, size_t len, size_t *out_len)
{
	z_stream zs;
	size_t cap = compressBound(len) + 64;
	unsigned char *out = malloc(cap);

	memset(&zs, 0, sizeof(zs));
	cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = (unsigned char *)src;
	zs.avail_in = (unsigned)len;
	zs.next_out = out;
	zs.avail_out = (unsigned)cap;
	cr_assert_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
	*out_len = zs.total_out;
	deflateEnd(&zs);
	return out;
}

Test(gunzip, round_trips_a_beacon_batch)
{
	const char *body = "e=pv&aid=shop&eid=1\ne=pv&aid=shop&eid=2\n";
	size_t zlen, len;
	unsigned char *z = gz(body, strlen(body), &zlen);
	char *out, err[128];

	cr_assert_eq(gunzip_body(z, zlen, 1 << 20, 100, &out, &len, err, sizeof(err)), 0, "%s",
	             err);
	cr_assert_eq(len, strlen(body));
	cr_assert_str_eq(out, body);
	free(out);
	free(z);
}

Test(gunzip, takes_an_empty_body_and_members_back_to_back)
{
	size_t la, lb, len;
	unsigned char *a = gz("", 0, &la), *b = gz("second", 6, &lb);
	unsigned char *both = malloc(la + lb);
	char *out, err[128];

	cr_assert_eq(gunzip_body(a, la, 1024, 100, &out, &len, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(len, 0);
	free(out);
	memcpy(both, a, la);
	memcpy(both + la, b, lb);
	cr_assert_eq(gunzip_body(both, la + lb, 1024, 100, &out, &len, err, sizeof(err)), 0, "%s",
	             err);
	cr_assert_str_eq(out, "second");
	free(out);
	free(a);
	free(b);
	free(both);
}

Test(gunzip, stops_a_bomb_at_the_ratio_and_a_big_body_at_the_size)
{
	size_t n = 8 << 20, zlen, len;
	char *zeros = calloc(1, n), *out = (char *)1, err[128];
	unsigned char *z = gz(zeros, n, &zlen);

	cr_assert_lt(zlen, n / 500, "8 MiB of zeros is a bomb: %zu bytes", zlen);
	cr_assert_eq(gunzip_body(z, zlen, 64 << 20, 100, &out, &len, err, sizeof(err)), -E2BIG);
	cr_assert_null(out);
	cr_assert(strstr(err, "100 times"), "%s", err);
	cr_assert_eq(gunzip_body(z, zlen, 1 << 20, 0, &out, &len, err, sizeof(err)), -EMSGSIZE);
	cr_assert(strstr(err, "1048576"), "%s", err);
	/* Exactly at the bound is fine, one byte over is not. */
	cr_assert_eq(gunzip_body(z, zlen, n, 0, &out, &len, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(len, n);
	free(out);
	cr_assert_eq(gunzip_body(z, zlen, n - 1, 0, &out, &len, err, sizeof(err)), -EMSGSIZE);
	free(z);
	free(zeros);
}

Test(gunzip, refuses_what_is_not_one_whole_gzip_stream)
{
	const char *body = "e=pv&aid=shop&eid=1";
	size_t zlen, len;
	unsigned char *z = gz(body, strlen(body), &zlen);
	unsigned char *more = malloc(zlen + 3);
	char *out, err[128];

	cr_assert_eq(gunzip_body(body, strlen(body), 1024, 100, &out, &len, err, sizeof(err)),
	             -EBADMSG);
	cr_assert(strstr(err, "not gzip"), "%s", err);
	for (size_t cut = 2; cut < zlen; cut++)
		cr_assert_eq(gunzip_body(z, cut, 1024, 100, &out, &len, err, sizeof(err)), -EBADMSG,
		             "cut at %zu", cut);
	memcpy(more, z, zlen);
	memcpy(more + zlen, "xyz", 3);
	cr_assert_eq(gunzip_body(more, zlen + 3, 1024, 100, &out, &len, err, sizeof(err)),
	             -EBADMSG);
	cr_assert(strstr(err, "after the last member"), "%s", err);
	z[zlen - 5] ^= 0x40; /* the length trailer: zlib checks it */
	cr_assert_eq(gunzip_body(z, zlen, 1024, 100, &out, &len, err, sizeof(err)), -EBADMSG);
	free(more);
	free(z);
}
