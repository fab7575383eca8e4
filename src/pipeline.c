/*
 * pipeline.c - from decoded event to sink (foundation form: synchronous, on the calling
 * loop's thread). Serialises into one reusable buffer per pipeline, so the path from
 * beacon to sink allocates nothing. The pipeline issue replaces the body of
 * pipeline_submit with a push into the shard's ring; callers keep the same contract.
 */
#include "clickd/pipeline.h"

#include "clickd/log.h"
#include "clickd/record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pipeline {
	struct sink *sink;
	size_t dead_letter_payload_bytes;
	size_t buf_cap;
	int64_t last_failure_log_ms;
	uint64_t failures_since_log;
	char *buf; /* RECORD_EVENT_MAX_BYTES or a dead letter's worst case, whichever is larger */
};

static size_t dead_letter_cap(size_t payload_bytes)
{
	/* Every payload byte may become a 6-byte \u escape; reason and peer are short. */
	return payload_bytes * 6 + 2048;
}

struct pipeline *pipeline_new(struct sink *sink, size_t dead_letter_payload_bytes)
{
	struct pipeline *pl = calloc(1, sizeof(*pl));
	size_t cap = RECORD_EVENT_MAX_BYTES;

	if (!pl)
		return NULL;
	if (dead_letter_cap(dead_letter_payload_bytes) > cap)
		cap = dead_letter_cap(dead_letter_payload_bytes);
	pl->buf = malloc(cap);
	if (!pl->buf) {
		free(pl);
		return NULL;
	}
	pl->buf_cap = cap;
	pl->sink = sink;
	pl->dead_letter_payload_bytes = dead_letter_payload_bytes;
	return pl;
}

void pipeline_free(struct pipeline *pl)
{
	if (!pl)
		return;
	free(pl->buf);
	free(pl);
}

int pipeline_submit(struct pipeline *pl, const struct event *ev)
{
	char key[EVENT_ARENA_BYTES];
	int key_len = event_visitor_key(ev, key, sizeof(key));
	int len = record_event_json(ev, pl->buf, pl->buf_cap);
	int rc;

	if (len < 0 || key_len < 0)
		return -ENOSPC; /* cannot happen: both buffers hold the worst case */
	rc = sink_write(pl->sink, SINK_EVENTS, key, (size_t)key_len, pl->buf, (size_t)len);
	if (rc == 0)
		metrics_add(METRIC_EVENTS_IN, 1);
	return rc;
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
	if (len < 0) {
		log_dead_letter_failure(pl, len);
		return;
	}
	rc = sink_write(pl->sink, SINK_DEAD_LETTERS, NULL, 0, pl->buf, (size_t)len);
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
	}
	return METRICS_DL_MALFORMED;
}
