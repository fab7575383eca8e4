/*
 * test_pipeline.c - the ingest side of the pipeline: routing by visitor key into the
 * shards' rings, back-pressure when a ring is full, closing, and dead letters.
 */
#include "clickd/pipeline.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_sink.h"

#define SHARDS 4

static struct fake_sink sink;
static struct ring rings[SHARDS];
static struct shard *shards[SHARDS];
static struct event ev;

static void setup(void)
{
	char err[256];

	fake_sink_reset(&sink);
	for (int i = 0; i < SHARDS; i++) {
		struct ring *in = &rings[i];
		struct shard_options o = {
		    .index = (unsigned)i,
		    .inputs = &in,
		    .input_count = 1,
		    .sink = &sink.base,
		    .dedup_max_entries = 100,
		    .dedup_window_ms = 1000,
		    .session = {.timeout_ms = 1000,
		                .max_duration_ms = 10000,
		                .max_visitors = 100,
		                .max_url_bytes = 256},
		};
		cr_assert_eq(ring_init(&rings[i], 8, sizeof(struct event)), 0);
		shards[i] = shard_new(&o, err, sizeof(err));
		cr_assert_not_null(shards[i], "%s", err);
	}
	event_init(&ev);
	event_set(&ev, EF_EVENT_ID, "e1", 2);
	event_set(&ev, EF_APP_ID, "shop", 4);
	event_set(&ev, EF_VISITOR_ID, "v9", 2);
	ev.received_at_ms = 1700000000000;
}

static void teardown(void)
{
	for (int i = 0; i < SHARDS; i++) {
		shard_free(shards[i]);
		ring_close(&rings[i]);
	}
	fake_sink_reset(&sink);
}

TestSuite(pipeline, .init = setup, .fini = teardown);

Test(pipeline, an_event_goes_whole_to_the_ring_of_its_visitors_shard)
{
	struct pipeline *pl = pipeline_new(rings, shards, SHARDS, &sink.base, 1024);
	uint64_t before = metrics_get(METRIC_EVENTS_IN);
	size_t shard = pipeline_shard_of(&ev, SHARDS);
	const struct event *got;
	size_t len;

	cr_assert_eq(pipeline_submit(pl, &ev), 0);
	cr_assert_eq(ring_peek(&rings[shard], 10), 0, "not visible before the commit");
	cr_assert_eq(pipeline_commit(pl), 1);
	cr_assert_eq(metrics_get(METRIC_EVENTS_IN), before + 1);
	for (size_t i = 0; i < SHARDS; i++)
		cr_assert_eq(ring_peek(&rings[i], 10), i == shard ? 1u : 0u);
	got = ring_slot_read(&rings[shard], 0);
	cr_assert_eq(got->received_at_ms, ev.received_at_ms);
	cr_assert_eq(memcmp(event_get(got, EF_VISITOR_ID, &len), "v9", 2), 0);
	cr_assert_eq(memcmp(event_get(got, EF_EVENT_ID, &len), "e1", 2), 0);
	pipeline_free(pl);
}

Test(pipeline, events_carry_the_ack_token_of_the_request_being_decoded)
{
	struct pipeline *pl = pipeline_new(rings, shards, SHARDS, &sink.base, 1024);
	size_t shard = pipeline_shard_of(&ev, SHARDS);

	ev.ack_token = 99; /* whatever the decoder's scratch event holds is not what counts */
	pipeline_set_ack(pl, 0x0001000200000003ull);
	cr_assert_eq(pipeline_submit(pl, &ev), 0);
	pipeline_set_ack(pl, 0);
	cr_assert_eq(pipeline_submit(pl, &ev), 0);
	cr_assert_eq(pipeline_commit(pl), 2);
	cr_assert_eq(((const struct event *)ring_slot_read(&rings[shard], 0))->ack_token,
	             0x0001000200000003ull);
	cr_assert_eq(((const struct event *)ring_slot_read(&rings[shard], 1))->ack_token, 0,
	             "after the request: nobody waits (UDP)");
	pipeline_free(pl);
}

Test(pipeline, one_visitor_always_lands_on_one_shard_and_visitors_spread)
{
	size_t seen[SHARDS] = {0};
	char vid[32];

	for (int i = 0; i < 1000; i++) {
		int n = snprintf(vid, sizeof(vid), "visitor-%d", i);
		size_t a, b;
		event_set(&ev, EF_VISITOR_ID, vid, (size_t)n);
		a = pipeline_shard_of(&ev, SHARDS);
		b = pipeline_shard_of(&ev, SHARDS);
		cr_assert_eq(a, b);
		seen[a]++;
	}
	for (int s = 0; s < SHARDS; s++)
		cr_assert_gt(seen[s], 150, "shard %d got %zu of 1000 visitors", s, seen[s]);
	cr_assert_eq(pipeline_shard_of(&ev, 1), 0);
}

Test(pipeline, a_full_ring_is_passed_back_as_try_again_and_not_counted)
{
	struct pipeline *pl = pipeline_new(rings, shards, SHARDS, &sink.base, 1024);
	uint64_t before = metrics_get(METRIC_EVENTS_IN);

	for (int i = 0; i < 8; i++)
		cr_assert_eq(pipeline_submit(pl, &ev), 0);
	cr_assert_eq(pipeline_commit(pl), 8);
	cr_assert_eq(pipeline_submit(pl, &ev), -EAGAIN);
	cr_assert_eq(pipeline_abort(pl), 0);
	cr_assert_eq(metrics_get(METRIC_EVENTS_IN), before + 8);
	pipeline_free(pl);
}

Test(pipeline, a_batch_that_does_not_fit_whole_is_taken_not_at_all)
{
	struct pipeline *pl = pipeline_new(rings, shards, SHARDS, &sink.base, 1024);
	size_t shard = pipeline_shard_of(&ev, SHARDS);
	static struct event other;
	size_t other_shard;
	char vid[16];
	int i = 0;

	/* An event of another shard first, then the first one's ring overflows. */
	event_init(&other);
	do {
		int n = snprintf(vid, sizeof(vid), "w%d", i++);
		event_set(&other, EF_VISITOR_ID, vid, (size_t)n);
		other_shard = pipeline_shard_of(&other, SHARDS);
	} while (other_shard == shard);
	cr_assert_eq(pipeline_submit(pl, &other), 0);
	for (i = 0; i < 8; i++)
		cr_assert_eq(pipeline_submit(pl, &ev), 0);
	cr_assert_eq(pipeline_submit(pl, &ev), -EAGAIN);
	cr_assert_eq(pipeline_abort(pl), 9);
	cr_assert_eq(pipeline_commit(pl), 0, "nothing left to publish");
	for (size_t s = 0; s < SHARDS; s++)
		cr_assert_eq(ring_peek(&rings[s], 10), 0, "shard %zu got part of the batch", s);
	/* The slots are free again: the whole ring takes a new batch. */
	for (i = 0; i < 8; i++)
		cr_assert_eq(pipeline_submit(pl, &ev), 0);
	cr_assert_eq(pipeline_commit(pl), 8);
	pipeline_free(pl);
}

Test(pipeline, closing_closes_every_ring_after_its_events)
{
	struct pipeline *pl = pipeline_new(rings, shards, SHARDS, &sink.base, 1024);

	cr_assert_eq(pipeline_submit(pl, &ev), 0);
	pipeline_close(pl); /* commits what was submitted */
	for (int i = 0; i < SHARDS; i++)
		cr_assert(ring_producer_closed(&rings[i]));
	cr_assert_eq(ring_peek(&rings[pipeline_shard_of(&ev, SHARDS)], 10), 1);
	pipeline_free(pl);
}

Test(pipeline, a_dead_letter_carries_its_reason_and_a_bounded_payload)
{
	struct pipeline *pl = pipeline_new(rings, shards, SHARDS, &sink.base, 64);
	char payload[1000];

	memset(payload, 'x', sizeof(payload));
	pipeline_dead_letter(pl, 1700000000000, METRICS_DL_MALFORMED, "field e: unknown", "native",
	                     "127.0.0.1", payload, sizeof(payload));
	cr_assert_eq(sink.count[SINK_DEAD_LETTERS], 1);
	cr_assert_eq(sink.records[SINK_DEAD_LETTERS][0].key_len, 0);
	cr_assert(strstr(sink.records[SINK_DEAD_LETTERS][0].text, "field e: unknown") != NULL);
	cr_assert(strlen(sink.records[SINK_DEAD_LETTERS][0].text) < 400, "payload not cut");
	pipeline_free(pl);
}

Test(pipeline, a_dead_letter_refused_by_a_full_sink_is_held_and_written_later)
{
	struct pipeline *pl = pipeline_new(rings, shards, SHARDS, &sink.base, 64);

	sink.answer = -EAGAIN;
	pipeline_dead_letter(pl, 1700000000000, METRICS_DL_MALFORMED, "first", "native", NULL, "a",
	                     1);
	pipeline_dead_letter(pl, 1700000000000, METRICS_DL_MALFORMED, "second", "native", NULL, "b",
	                     1);
	cr_assert_not(pipeline_retry(pl));
	sink.answer = 0;
	cr_assert(pipeline_retry(pl));
	cr_assert_eq(sink.count[SINK_DEAD_LETTERS], 2);
	cr_assert(strstr(sink.records[SINK_DEAD_LETTERS][0].text, "first") != NULL);
	cr_assert(strstr(sink.records[SINK_DEAD_LETTERS][1].text, "second") != NULL);
	pipeline_free(pl);
}

Test(pipeline, decoder_codes_map_to_reason_classes)
{
	cr_assert_eq(pipeline_reason_class(-EILSEQ), METRICS_DL_NOT_UTF8);
	cr_assert_eq(pipeline_reason_class(-E2BIG), METRICS_DL_TOO_LARGE);
	cr_assert_eq(pipeline_reason_class(-ENOSPC), METRICS_DL_TOO_LARGE);
	cr_assert_eq(pipeline_reason_class(-ENOTSUP), METRICS_DL_UNSUPPORTED);
	cr_assert_eq(pipeline_reason_class(-EINVAL), METRICS_DL_MALFORMED);
}
