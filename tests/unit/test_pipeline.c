/* Unit tests for src/pipeline.c (foundation form) with a recording sink. */
#include "clickd/pipeline.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

struct fake_sink {
	struct sink base;
	int answer; /* what write returns */
	int writes[SINK_STREAM_COUNT];
	char last_key[256];
	size_t last_key_len;
	char last_record[65536];
	size_t last_record_len;
};

static int fake_write(struct sink *s, enum sink_stream stream, const char *key, size_t key_len,
                      const char *record, size_t record_len)
{
	struct fake_sink *f = (struct fake_sink *)s;
	if (f->answer)
		return f->answer;
	f->writes[stream]++;
	memcpy(f->last_key, key ? key : "", key_len);
	f->last_key_len = key_len;
	memcpy(f->last_record, record, record_len);
	f->last_record_len = record_len;
	return 0;
}

static const struct sink_ops fake_ops = {.name = "fake", .write = fake_write};
static struct fake_sink sink = {.base = {.ops = &fake_ops}};
static struct event ev;

static void setup(void)
{
	memset(&sink, 0, sizeof(sink));
	sink.base.ops = &fake_ops;
	event_init(&ev);
	event_set(&ev, EF_EVENT_ID, "e1", 2);
	event_set(&ev, EF_APP_ID, "shop", 4);
	event_set(&ev, EF_VISITOR_ID, "v9", 2);
	ev.received_at_ms = 1700000000000;
}

TestSuite(pipeline, .init = setup);

Test(pipeline, an_event_goes_to_the_events_stream_keyed_by_visitor)
{
	struct pipeline *pl = pipeline_new(&sink.base, 1024);
	uint64_t before = metrics_get(METRIC_EVENTS_IN);
	cr_assert_eq(pipeline_submit(pl, &ev), 0);
	cr_assert_eq(sink.writes[SINK_EVENTS], 1);
	cr_assert_eq(sink.last_key_len, 7);
	cr_assert(memcmp(sink.last_key, "shop\x1fv9", 7) == 0);
	sink.last_record[sink.last_record_len] = '\0';
	cr_assert(strstr(sink.last_record, "\"event_id\":\"e1\"") != NULL, "%s", sink.last_record);
	cr_assert_eq(metrics_get(METRIC_EVENTS_IN), before + 1);
	pipeline_free(pl);
}

Test(pipeline, a_full_sink_is_passed_back_as_try_again_and_not_counted)
{
	struct pipeline *pl = pipeline_new(&sink.base, 1024);
	uint64_t before = metrics_get(METRIC_EVENTS_IN);
	sink.answer = -EAGAIN;
	cr_assert_eq(pipeline_submit(pl, &ev), -EAGAIN);
	cr_assert_eq(metrics_get(METRIC_EVENTS_IN), before);
	pipeline_free(pl);
}

Test(pipeline, a_dead_letter_carries_its_reason_and_a_bounded_payload)
{
	struct pipeline *pl = pipeline_new(&sink.base, 64);
	char payload[1000];
	memset(payload, 'x', sizeof(payload));
	pipeline_dead_letter(pl, 1700000000000, METRICS_DL_MALFORMED, "field e: unknown", "native",
	                     "127.0.0.1", payload, sizeof(payload));
	cr_assert_eq(sink.writes[SINK_DEAD_LETTERS], 1);
	cr_assert_eq(sink.last_key_len, 0);
	sink.last_record[sink.last_record_len] = '\0';
	cr_assert(strstr(sink.last_record, "field e: unknown") != NULL);
	cr_assert(sink.last_record_len < 400, "payload not cut: %zu", sink.last_record_len);
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
