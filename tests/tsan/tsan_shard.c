/*
 * tsan_shard.c - the pipeline's threads for real, under ThreadSanitizer (and in every
 * build): two producer threads submit events through their pipelines into the rings of
 * two shard threads, retrying when a ring is full, with every tenth event sent twice;
 * then they close. Checks that every distinct event was written exactly once, by the shard
 * that owns its visitor, that duplicates were dropped, and that every session became one
 * touchpoint. Exits 0 on success; TSan makes it exit non-zero on a race.
 */
#include "clickd/metrics.h"
#include "clickd/pipeline.h"
#include "clickd/shard.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRODUCERS 2
#define SHARDS    2
#define EVENTS    20000 /* per producer */
#define VISITORS  500

static _Atomic unsigned char written[PRODUCERS * EVENTS];
static _Atomic unsigned wrong_shard;
static _Atomic unsigned touchpoints;

/* A sink per shard that checks and counts instead of keeping. */
struct check_sink {
	struct sink base;
	unsigned shard;
};

static int check_write(struct sink *s, enum sink_stream stream, const char *key, size_t key_len,
                       const char *record, size_t record_len, int64_t received_at_ms)
{
	struct check_sink *c = (struct check_sink *)s;
	const char *p;
	unsigned n;

	(void)key;
	(void)key_len;
	(void)record_len;
	if (stream == SINK_TOUCHPOINTS) {
		atomic_fetch_add(&touchpoints, 1);
		return 0;
	}
	p = strstr(record, "\"event_id\":\"x");
	if (!p || sscanf(p + 13, "%u", &n) != 1 || n >= PRODUCERS * EVENTS)
		return 0;
	atomic_fetch_add(&written[n], 1);
	/* The visitor is v<n % VISITORS>: its shard must be this one. */
	{
		struct event ev;
		char vid[16];
		int len = snprintf(vid, sizeof(vid), "v%u", n % VISITORS);
		event_init(&ev);
		event_set(&ev, EF_APP_ID, "app", 3);
		event_set(&ev, EF_VISITOR_ID, vid, (size_t)len);
		if (pipeline_shard_of(&ev, SHARDS) != c->shard)
			atomic_fetch_add(&wrong_shard, 1);
	}
	return 0;
}

static int check_poll(struct sink *s, int64_t now_ms)
{
	(void)s;
	(void)now_ms;
	return 0;
}

static int check_flush(struct sink *s, int timeout_ms)
{
	(void)s;
	(void)timeout_ms;
	return 0;
}

static const struct sink_ops check_ops = {
    .name = "check", .write = check_write, .poll = check_poll, .flush = check_flush};

struct producer {
	unsigned index;
	struct pipeline *pl;
};

/* One event per batch: submitted, committed and its shard woken; retried while full. */
static void submit(struct pipeline *pl, const struct event *ev)
{
	while (pipeline_submit(pl, ev) == -EAGAIN) {
		pipeline_abort(pl);
		sched_yield();
	}
	pipeline_commit(pl);
	pipeline_wake(pl);
}

static void *produce(void *arg)
{
	struct producer *p = arg;
	static _Thread_local struct event ev;

	for (unsigned i = 0; i < EVENTS; i++) {
		unsigned n = p->index * EVENTS + i;
		char eid[32], vid[16];
		int eid_len = snprintf(eid, sizeof(eid), "x%u", n);
		int vid_len = snprintf(vid, sizeof(vid), "v%u", n % VISITORS);

		event_init(&ev);
		ev.received_at_ms = 1800000000000LL + i;
		event_set(&ev, EF_EVENT_ID, eid, (size_t)eid_len);
		event_set(&ev, EF_APP_ID, "app", 3);
		event_set(&ev, EF_VISITOR_ID, vid, (size_t)vid_len);
		event_set(&ev, EF_SOURCE, "(direct)", 8);
		event_set(&ev, EF_MEDIUM, "(none)", 6);
		submit(p->pl, &ev);
		if (i % 10 == 0)
			submit(p->pl, &ev); /* a duplicate, on the same path */
	}
	pipeline_close(p->pl);
	return NULL;
}

int main(void)
{
	static struct ring rings[PRODUCERS * SHARDS];
	static struct check_sink sinks[SHARDS];
	struct shard *shards[SHARDS];
	struct producer producers[PRODUCERS];
	pthread_t threads[PRODUCERS];
	char err[256];
	unsigned missing = 0, twice = 0;

	for (size_t r = 0; r < PRODUCERS * SHARDS; r++)
		if (ring_init(&rings[r], 64, sizeof(struct event)) != 0)
			return 1;
	for (unsigned s = 0; s < SHARDS; s++) {
		struct ring *inputs[PRODUCERS];
		struct shard_options o = {
		    .index = s,
		    .inputs = inputs,
		    .input_count = PRODUCERS,
		    .sink = &sinks[s].base,
		    .sink_owned = true,
		    .dedup_max_entries = 100000,
		    .dedup_window_ms = 3600000,
		    .session = {.timeout_ms = 1800000,
		                .max_duration_ms = 86400000,
		                .max_visitors = VISITORS,
		                .max_url_bytes = 256},
		    .stop_timeout_ms = 1000,
		};
		for (unsigned p = 0; p < PRODUCERS; p++)
			inputs[p] = &rings[p * SHARDS + s];
		sinks[s].base.ops = &check_ops;
		sinks[s].shard = s;
		shards[s] = shard_new(&o, err, sizeof(err));
		if (!shards[s] || shard_start(shards[s], NULL, NULL) != 0) {
			fprintf(stderr, "tsan_shard: %s\n", err);
			return 1;
		}
	}
	for (unsigned p = 0; p < PRODUCERS; p++) {
		producers[p].index = p;
		producers[p].pl = pipeline_new(&rings[p * SHARDS], shards, SHARDS, NULL, 64);
		if (!producers[p].pl || pthread_create(&threads[p], NULL, produce, &producers[p]))
			return 1;
	}
	for (unsigned p = 0; p < PRODUCERS; p++) {
		pthread_join(threads[p], NULL);
		pipeline_free(producers[p].pl);
	}
	for (unsigned s = 0; s < SHARDS; s++) {
		shard_join(shards[s]);
		shard_free(shards[s]);
	}
	for (unsigned n = 0; n < PRODUCERS * EVENTS; n++) {
		unsigned w = atomic_load(&written[n]);
		missing += w == 0;
		twice += w > 1;
	}
	for (size_t r = 0; r < PRODUCERS * SHARDS; r++)
		ring_close(&rings[r]);
	if (missing || twice || atomic_load(&wrong_shard) ||
	    atomic_load(&touchpoints) != VISITORS) {
		fprintf(stderr,
		        "tsan_shard: missing %u, written twice %u, on the wrong shard %u, "
		        "touchpoints %u (want %u)\n",
		        missing, twice, atomic_load(&wrong_shard), atomic_load(&touchpoints),
		        VISITORS);
		return 1;
	}
	printf("tsan_shard: ok: %u events once each, %u touchpoints\n", PRODUCERS * EVENTS,
	       atomic_load(&touchpoints));
	return 0;
}
