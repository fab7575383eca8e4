/*
 * pipeline.c - the ingest side of the pipeline (see pipeline.h): routing events into the
 * shards' rings, and dead letters straight to the ingest thread's sink. Per event: one
 * hash, one claim, one copy of the used bytes, one release store and a wake check; no
 * allocation, no lock, no syscall unless the shard sleeps.
 */
#include "clickd/pipeline.h"

#include "clickd/held.h"
#include "clickd/log.h"
#include "clickd/record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pipeline {
	struct ring *rings;    /* borrowed: shard_count rings */
	struct shard **shards; /* owned array of borrowed shards */
	size_t shard_count;
	size_t submitted;   /* since the last commit or abort */
	uint64_t ack_token; /* carried by the events submitted now (pipeline_set_ack) */
	bool *to_wake;      /* owned: shard_count flags */
	struct sink *dead_letter_sink;
	struct held dead_letters_held; /* refused with "full"; retried by pipeline_retry */
	size_t dead_letter_payload_bytes;
	int64_t last_failure_log_ms;
	uint64_t failures_since_log;
	char *buf; /* a dead letter's worst case */
	size_t buf_cap;
};

static size_t dead_letter_cap(size_t payload_bytes)
{
	/* Every payload byte may become a 6-byte \u escape; reason and peer are short. */
	return payload_bytes * 6 + 2048;
}

struct pipeline *pipeline_new(struct ring *rings, struct shard *const *shards, size_t shard_count,
                              struct sink *dead_letter_sink, size_t dead_letter_payload_bytes)
{
	struct pipeline *pl = calloc(1, sizeof(*pl));

	if (!pl)
		return NULL;
	pl->buf_cap = dead_letter_cap(dead_letter_payload_bytes);
	pl->buf = malloc(pl->buf_cap);
	pl->shards = calloc(shard_count ? shard_count : 1, sizeof(*pl->shards));
	pl->to_wake = calloc(shard_count ? shard_count : 1, sizeof(*pl->to_wake));
	if (!pl->buf || !pl->shards || !pl->to_wake) {
		pipeline_free(pl);
		return NULL;
	}
	for (size_t i = 0; i < shard_count; i++)
		pl->shards[i] = shards[i];
	pl->rings = rings;
	pl->shard_count = shard_count;
	pl->dead_letter_sink = dead_letter_sink;
	held_init(&pl->dead_letters_held, PIPELINE_HELD_DEAD_LETTER_BYTES);
	pl->dead_letter_payload_bytes = dead_letter_payload_bytes;
	return pl;
}

void pipeline_free(struct pipeline *pl)
{
	if (!pl)
		return;
	free(pl->buf);
	held_close(&pl->dead_letters_held);
	free(pl->shards);
	free(pl->to_wake);
	free(pl);
}

size_t pipeline_shard_of_hash(uint64_t visitor_hash, size_t shard_count)
{
	return shard_count <= 1 ? 0 : (size_t)(visitor_hash % shard_count);
}

size_t pipeline_shard_of(const struct event *ev, size_t shard_count)
{
	return pipeline_shard_of_hash(event_visitor_hash(ev), shard_count);
}

static int64_t monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int pipeline_submit(struct pipeline *pl, const struct event *ev)
{
	size_t shard = pipeline_shard_of(ev, pl->shard_count);
	struct event *slot = ring_claim(&pl->rings[shard]);

	if (!slot)
		return -EAGAIN;
	memcpy(slot, ev, offsetof(struct event, arena) + ev->arena_used);
	slot->order_us = monotonic_us();
	slot->ack_token = pl->ack_token;
	pl->submitted++;
	return 0;
}

void pipeline_set_ack(struct pipeline *pl, uint64_t token)
{
	pl->ack_token = token;
}

size_t pipeline_commit(struct pipeline *pl)
{
	size_t n = 0;

	if (pl->submitted == 0)
		return 0;
	for (size_t i = 0; i < pl->shard_count; i++) {
		size_t k = ring_publish(&pl->rings[i]);
		if (k) {
			pl->to_wake[i] = true;
			n += k;
		}
	}
	pl->submitted = 0;
	metrics_add(METRIC_EVENTS_IN, n);
	return n;
}

size_t pipeline_abort(struct pipeline *pl)
{
	size_t n = pl->submitted;

	for (size_t i = 0; i < pl->shard_count; i++)
		ring_unclaim_all(&pl->rings[i]);
	pl->submitted = 0;
	return n;
}

void pipeline_wake(struct pipeline *pl)
{
	for (size_t i = 0; i < pl->shard_count; i++) {
		if (pl->to_wake[i]) {
			pl->to_wake[i] = false;
			shard_wake(pl->shards[i]);
		}
	}
}

bool pipeline_retry(struct pipeline *pl)
{
	return pl->dead_letters_held.count == 0 ||
	       held_retry(&pl->dead_letters_held, pl->dead_letter_sink);
}

void pipeline_close(struct pipeline *pl)
{
	if (!pipeline_retry(pl)) {
		size_t n = pl->dead_letters_held.count;
		sink_count_failed(pl->dead_letter_sink, SINK_DEAD_LETTERS, n);
		log_error("pipeline",
		          "msg=\"dead letters still refused by a full sink at stop\" count=%zu", n);
	}
	pipeline_commit(pl);
	for (size_t i = 0; i < pl->shard_count; i++) {
		ring_close_producer(&pl->rings[i]);
		shard_wake(pl->shards[i]);
		pl->to_wake[i] = false;
	}
}

static void log_dead_letter_failure(struct pipeline *pl, int rc)
{
	struct timespec ts;
	int64_t now_ms;

	pl->failures_since_log++;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (now_ms - pl->last_failure_log_ms < 1000)
		return;
	log_error("pipeline", "msg=\"dead letters could not be written\" count=%llu err=%d",
	          (unsigned long long)pl->failures_since_log, rc);
	pl->failures_since_log = 0;
	pl->last_failure_log_ms = now_ms;
}

void pipeline_dead_letter(struct pipeline *pl, int64_t received_at_ms,
                          enum metrics_dead_letter_reason reason_class, const char *reason,
                          const char *protocol, const char *peer, const char *payload,
                          size_t payload_len)
{
	int len =
	    record_dead_letter_json(received_at_ms, reason, protocol, peer, payload, payload_len,
	                            pl->dead_letter_payload_bytes, pl->buf, pl->buf_cap);
	int rc;

	metrics_dead_letter(reason_class);
	metrics_protocol_dead_letter(protocol);
	if (len < 0) {
		log_dead_letter_failure(pl, len);
		return;
	}
	/* received_at 0: a dead letter is no event, clickd_event_to_sink_seconds skips it. */
	rc = held_write(&pl->dead_letters_held, pl->dead_letter_sink, SINK_DEAD_LETTERS, NULL, 0,
	                pl->buf, (size_t)len, 0);
	if (rc == -ENOSPC || rc == -ENOMEM)
		sink_count_failed(pl->dead_letter_sink, SINK_DEAD_LETTERS, 1);
	if (rc < 0)
		log_dead_letter_failure(pl, rc);
}

enum metrics_dead_letter_reason pipeline_reason_class(int code)
{
	switch (code) {
	case -EILSEQ:
		return METRICS_DL_NOT_UTF8;
	case -E2BIG:
	case -ENOSPC:
	case -EMSGSIZE:
		return METRICS_DL_TOO_LARGE;
	case -ENOTSUP:
		return METRICS_DL_UNSUPPORTED;
	case -EACCES:
		return METRICS_DL_UNAUTHORIZED;
	}
	return METRICS_DL_MALFORMED;
}
