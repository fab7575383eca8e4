/*
 * fake_sink.h - a sink for unit tests that keeps every record it is given (up to
 * FAKE_SINK_MAX per stream) and answers what the test tells it to.
 */
#ifndef CLICKD_TEST_FAKE_SINK_H
#define CLICKD_TEST_FAKE_SINK_H

#include "clickd/sink.h"

#include <stdlib.h>
#include <string.h>

#define FAKE_SINK_MAX 4096

struct fake_record {
	char key[256];
	size_t key_len;
	char *text; /* NUL-terminated copy */
	int64_t received_at_ms;
	uint64_t ack_token; /* given with write_acked (the sink keeps it: never completes it) */
};

struct fake_sink {
	struct sink base;
	int answer; /* what write returns; 0 keeps the record */
	size_t count[SINK_STREAM_COUNT];
	struct fake_record records[SINK_STREAM_COUNT][FAKE_SINK_MAX];
};

static int fake_sink_write(struct sink *s, enum sink_stream stream, const char *key, size_t key_len,
                           const char *record, size_t record_len, int64_t received_at_ms)
{
	struct fake_sink *f = (struct fake_sink *)s;
	struct fake_record *r;

	if (f->answer)
		return f->answer;
	if (f->count[stream] == FAKE_SINK_MAX)
		return -ENOSPC;
	r = &f->records[stream][f->count[stream]++];
	r->key_len = key_len < sizeof(r->key) ? key_len : sizeof(r->key) - 1;
	memcpy(r->key, key ? key : "", r->key_len);
	r->key[r->key_len] = '\0';
	r->text = malloc(record_len + 1);
	memcpy(r->text, record, record_len);
	r->text[record_len] = '\0';
	r->received_at_ms = received_at_ms;
	return 0;
}

static int fake_sink_write_acked(struct sink *s, enum sink_stream stream, const char *key,
                                 size_t key_len, const char *record, size_t record_len,
                                 int64_t received_at_ms, uint64_t ack_token)
{
	struct fake_sink *f = (struct fake_sink *)s;
	int rc = fake_sink_write(s, stream, key, key_len, record, record_len, received_at_ms);

	if (rc == 0)
		f->records[stream][f->count[stream] - 1].ack_token = ack_token;
	return rc;
}

static int fake_sink_poll(struct sink *s, int64_t now_ms)
{
	(void)s;
	(void)now_ms;
	return 0;
}

static int fake_sink_flush(struct sink *s, int timeout_ms)
{
	(void)s;
	(void)timeout_ms;
	return 0;
}

static const struct sink_ops fake_sink_ops = {
    .name = "fake",
    .write = fake_sink_write,
    .write_acked = fake_sink_write_acked,
    .poll = fake_sink_poll,
    .flush = fake_sink_flush,
};

static inline void fake_sink_reset(struct fake_sink *f)
{
	for (int s = 0; s < SINK_STREAM_COUNT; s++)
		for (size_t i = 0; i < f->count[s]; i++)
			free(f->records[s][i].text);
	memset(f, 0, sizeof(*f));
	f->base.ops = &fake_sink_ops;
}

#endif
