/*
 * gunzip.c - bounded gzip decompression of request bodies (see gunzip.h).
 */
#include "clickd/gunzip.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* The first buffer: a typical beacon batch decompresses to a few KiB. */
#define GUNZIP_FIRST_BYTES 4096
/* windowBits for inflateInit2: 15 (the largest window) + 16 (gzip wrapper only). */
#define GUNZIP_WINDOW_BITS (15 + 16)

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

int gunzip_body(const void *in, size_t in_len, size_t max_out, unsigned max_ratio, char **out,
                size_t *out_len, char *err, size_t errlen)
{
	z_stream zs;
	char *buf = NULL;
	size_t cap = 0, len = 0, limit = max_out;
	const unsigned char *p = in;
	size_t left = in_len;
	int rc = 0, zr;
	enum { BY_SIZE, BY_RATIO } bound = BY_SIZE;

	*out = NULL;
	*out_len = 0;
	if (max_ratio > 0 && in_len <= SIZE_MAX / max_ratio && in_len * max_ratio < limit) {
		limit = in_len * max_ratio;
		bound = BY_RATIO;
	}
	if (in_len < 2 || p[0] != 0x1f || p[1] != 0x8b)
		return fail(err, errlen, -EBADMSG,
		            "Content-Encoding: gzip but the body is not gzip");
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, GUNZIP_WINDOW_BITS) != Z_OK)
		return fail(err, errlen, -ENOMEM, "gzip: out of memory");
	for (;;) {
		if (len == cap) {
			size_t want = cap ? cap * 2 : GUNZIP_FIRST_BYTES;
			char *nb;

			if (cap >= limit + 1) { /* full at limit + 1: the output passed the bound */
				rc = bound == BY_SIZE
				         ? fail(err, errlen, -EMSGSIZE,
				                "gzip body decompresses to more than %zu bytes",
				                max_out)
				         : fail(err, errlen, -E2BIG,
				                "gzip body expands more than %u times (%zu bytes "
				                "sent)",
				                max_ratio, in_len);
				break;
			}
			if (want > limit + 1)
				want = limit + 1; /* one byte over the bound is enough to know */
			nb = realloc(buf, want + 1);
			if (!nb) {
				rc = fail(err, errlen, -ENOMEM, "gzip: out of memory");
				break;
			}
			buf = nb;
			cap = want;
		}
		zs.next_in = (unsigned char *)p;
		zs.avail_in = left > UINT_MAX ? UINT_MAX : (unsigned)left;
		zs.next_out = (unsigned char *)buf + len;
		zs.avail_out = (cap - len) > UINT_MAX ? UINT_MAX : (unsigned)(cap - len);
		zr = inflate(&zs, Z_NO_FLUSH);
		len = (size_t)((char *)zs.next_out - buf);
		left -= (size_t)(zs.next_in - p);
		p = zs.next_in;
		if (len > limit) {
			cap = len; /* the bound message above */
			continue;
		}
		if (zr == Z_STREAM_END) {
			if (left == 0)
				break;
			/* Another member follows; anything else after a member is refused. */
			if (left < 2 || p[0] != 0x1f || p[1] != 0x8b) {
				rc = fail(err, errlen, -EBADMSG,
				          "gzip: %zu bytes after the last member", left);
				break;
			}
			if (inflateReset(&zs) != Z_OK) {
				rc = fail(err, errlen, -EBADMSG,
				          "gzip: cannot start the next member");
				break;
			}
			continue;
		}
		if (zr == Z_OK)
			continue;
		if (zr == Z_BUF_ERROR && zs.avail_out == 0)
			continue;        /* the buffer is full: grow it */
		if (zr == Z_BUF_ERROR) { /* no progress possible: input ended mid-member */
			rc = fail(err, errlen, -EBADMSG, "gzip: truncated body");
			break;
		}
		if (zr == Z_MEM_ERROR) {
			rc = fail(err, errlen, -ENOMEM, "gzip: out of memory");
			break;
		}
		rc = fail(err, errlen, -EBADMSG, "gzip: %s", zs.msg ? zs.msg : "corrupt data");
		break;
	}
	inflateEnd(&zs);
	if (rc) {
		free(buf);
		return rc;
	}
	if (!buf) { /* cannot happen (a member always runs a loop turn), but stay safe */
		buf = malloc(1);
		if (!buf)
			return fail(err, errlen, -ENOMEM, "gzip: out of memory");
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}
