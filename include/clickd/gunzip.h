/*
 * gunzip.h - request bodies sent with Content-Encoding: gzip, decompressed with bounds.
 *
 * A compressed body is small on the wire and may be huge inside (a "zip bomb": 1 MB of
 * zeros gzips to about 1 KB). gunzip_body stops as soon as the output would pass either
 * bound: max_out bytes (the same http.max_body_bytes an uncompressed body gets), or
 * max_ratio times the compressed size. Memory: the output buffer, grown geometrically up
 * to the bound, plus zlib's inflate state (about 7 KiB and a 32 KiB window).
 *
 * Accepted: one or more gzip members (RFC 1952) back to back, as `cat a.gz b.gz` makes
 * and RFC 1952 allows; each member's CRC-32 and length are checked by zlib. Refused:
 * anything else (zlib or raw deflate streams, bytes after the last member, a truncated
 * member), with a one-line reason.
 */
#ifndef CLICKD_GUNZIP_H
#define CLICKD_GUNZIP_H

#include <stddef.h>

/* Decompresses in[0..in_len) into a new buffer (*out, NUL-terminated, *out_len bytes
 * without the NUL; free it). Returns 0; -EMSGSIZE when the output would pass max_out;
 * -E2BIG when it would pass max_ratio x in_len; -EBADMSG when it is not a complete gzip
 * stream; -ENOMEM. On failure *out is NULL and err holds the reason. */
int gunzip_body(const void *in, size_t in_len, size_t max_out, unsigned max_ratio, char **out,
                size_t *out_len, char *err, size_t errlen);

#endif
