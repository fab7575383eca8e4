/*
 * held.c - records a full sink refused, kept in order (see held.h). Entries are a header
 * (receive time, ack token, stream, key and record lengths) followed by the key and record
 * bytes; retrying moves the unwritten tail to the front once per call.
 */
#include "clickd/held.h"

#include "clickd/ack.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct held_entry {
	int64_t received_at_ms;
	uint64_t ack_token; /* 0: nobody waits */
	uint32_t stream;
	uint32_t key_len;
	uint32_t record_len;
};

void held_init(struct held *h, size_t max_bytes)
{
	memset(h, 0, sizeof(*h));
	h->max_bytes = max_bytes;
}

void held_close(struct held *h)
{
	free(h->buf);
	memset(h, 0, sizeof(*h));
}

static int push(struct held *h, enum sink_stream stream, const char *key, size_t key_len,
                const char *record, size_t record_len, int64_t received_at_ms, uint64_t ack_token)
{
	struct held_entry e = {received_at_ms, ack_token, (uint32_t)stream, (uint32_t)key_len,
	                       (uint32_t)record_len};
	size_t need = h->len + sizeof(e) + key_len + record_len;

	if (h->max_bytes && need > h->max_bytes)
		return -ENOSPC;
	if (need > h->cap) {
		size_t cap = h->cap ? h->cap : 65536;
		char *p;
		while (cap < need)
			cap *= 2;
		p = realloc(h->buf, cap);
		if (!p)
			return -ENOMEM;
		h->buf = p;
		h->cap = cap;
	}
	memcpy(h->buf + h->len, &e, sizeof(e));
	if (key_len)
		memcpy(h->buf + h->len + sizeof(e), key, key_len);
	memcpy(h->buf + h->len + sizeof(e) + key_len, record, record_len);
	h->len = need;
	h->count++;
	return 0;
}

int held_push(struct held *h, enum sink_stream stream, const char *key, size_t key_len,
              const char *record, size_t record_len, int64_t received_at_ms)
{
	return push(h, stream, key, key_len, record, record_len, received_at_ms, 0);
}

bool held_retry(struct held *h, struct sink *sink)
{
	size_t off = 0;

	while (off < h->len) {
		struct held_entry e;
		const char *key, *rec;
		int rc;

		memcpy(&e, h->buf + off, sizeof(e));
		key = h->buf + off + sizeof(e);
		rec = key + e.key_len;
		rc = sink_write_acked(sink, (enum sink_stream)e.stream, e.key_len ? key : NULL,
		                      e.key_len, rec, e.record_len, e.received_at_ms, e.ack_token);
		if (rc == -EAGAIN)
			break;
		if (rc < 0 && e.ack_token)
			ack_complete(h->acks, e.ack_token, false, NULL); /* refused for good */
		off += sizeof(e) + e.key_len + e.record_len;
		h->count--;
	}
	memmove(h->buf, h->buf + off, h->len - off);
	h->len -= off;
	return h->count == 0;
}

int held_write(struct held *h, struct sink *sink, enum sink_stream stream, const char *key,
               size_t key_len, const char *record, size_t record_len, int64_t received_at_ms)
{
	return held_write_acked(h, sink, stream, key, key_len, record, record_len, received_at_ms,
	                        0);
}

int held_write_acked(struct held *h, struct sink *sink, enum sink_stream stream, const char *key,
                     size_t key_len, const char *record, size_t record_len, int64_t received_at_ms,
                     uint64_t ack_token)
{
	if (h->count == 0) {
		int rc = sink_write_acked(sink, stream, key, key_len, record, record_len,
		                          received_at_ms, ack_token);
		if (rc != -EAGAIN)
			return rc;
	}
	return push(h, stream, key, key_len, record, record_len, received_at_ms, ack_token);
}
