/*
 * test_shard.c - a shard driven without its thread: events from its rings become event
 * records with session and channel, duplicates are dropped, sessions become touchpoints
 * (on the tick and at the finish), and a full sink holds records back, in order, while
 * the rings wait. Attribution: a conversion credited over a user's devices, named
 * conversions, conversions without a visitor, rollup minutes closed on the tick, at the
 * finish, and late records.
 */
#include "clickd/ack.h"
#include "clickd/metrics.h"
#include "clickd/shard.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include "fake_sink.h"

#define T0 1800000000000LL

static struct fake_sink sink;
static struct ring rings[2];
static struct shard *sh;
static struct channel_lists *lists;

static void setup(void)
{
	char err[256];
	struct ring *inputs[2] = {&rings[0], &rings[1]};
	struct shard_options o = {
	    .index = 0,
	    .inputs = inputs,
	    .input_count = 2,
	    .sink = &sink.base,
	    .sink_owned = true,
	    .dedup_max_entries = 1000,
	    .dedup_window_ms = 3600000,
	    .session = {.timeout_ms = 1800000,
	                .max_duration_ms = 86400000,
	                .max_visitors = 1000,
	                .max_url_bytes = 512},
	    .stop_timeout_ms = 100,
	};

	fake_sink_reset(&sink);
	lists = channel_lists_new(NULL, err, sizeof(err));
	cr_assert_not_null(lists, "%s", err);
	o.channels = lists;
	cr_assert_eq(ring_init(&rings[0], 16, sizeof(struct event)), 0);
	cr_assert_eq(ring_init(&rings[1], 16, sizeof(struct event)), 0);
	sh = shard_new(&o, err, sizeof(err));
	cr_assert_not_null(sh, "%s", err);
}

static void teardown(void)
{
	shard_free(sh);
	ring_close(&rings[0]);
	ring_close(&rings[1]);
	channel_lists_free(lists);
	fake_sink_reset(&sink);
}

TestSuite(shard, .init = setup, .fini = teardown);

static void put(struct event *ev, enum event_field f, const char *s)
{
	cr_assert_eq(event_set(ev, f, s, strlen(s)), 0);
}

/* Pushes a page view into ring r. */
static void push(int r, const char *eid, const char *vid, int64_t at, const char *source,
                 const char *medium)
{
	struct event *ev = ring_claim(&rings[r]);

	cr_assert_not_null(ev, "ring %d full", r);
	event_init(ev);
	ev->received_at_ms = at;
	if (eid)
		put(ev, EF_EVENT_ID, eid);
	put(ev, EF_APP_ID, "shop");
	put(ev, EF_VISITOR_ID, vid);
	put(ev, EF_URL, "https://shop.example/");
	put(ev, EF_SOURCE, source);
	put(ev, EF_MEDIUM, medium);
	ring_publish(&rings[r]);
}

/* A page view of visitor v1 into ring r, carrying an ack token. */
static void push_acked(int r, const char *eid, int64_t at, uint64_t token)
{
	struct event *ev = ring_claim(&rings[r]);

	cr_assert_not_null(ev, "ring %d full", r);
	event_init(ev);
	ev->received_at_ms = at;
	ev->ack_token = token;
	put(ev, EF_EVENT_ID, eid);
	put(ev, EF_APP_ID, "shop");
	put(ev, EF_VISITOR_ID, "v1");
	ring_publish(&rings[r]);
}

static const char *event_text(size_t i)
{
	cr_assert_lt(i, sink.count[SINK_EVENTS]);
	return sink.records[SINK_EVENTS][i].text;
}

Test(shard, events_get_their_session_and_channel)
{
	push(0, "e1", "v1", T0, "google", "cpc");
	push(1, "e2", "v1", T0 + 1000, "(direct)", "(none)");
	cr_assert_eq(shard_drain(sh), 2);
	cr_assert_eq(sink.count[SINK_EVENTS], 2);
	cr_assert(strstr(event_text(0), "\"channel\":\"Paid Search\"") != NULL, "%s",
	          event_text(0));
	cr_assert(strstr(event_text(0), "\"session_index\":1") != NULL);
	cr_assert(strstr(event_text(1), "\"channel\":\"Direct\"") != NULL, "%s", event_text(1));
	/* Both in one session: the same session_id. */
	const char *a = strstr(event_text(0), "\"session_id\":\"");
	const char *b = strstr(event_text(1), "\"session_id\":\"");
	cr_assert(a && b);
	cr_assert_eq(memcmp(a, b, 14 + SESSION_ID_CHARS), 0);
	cr_assert_str_eq(sink.records[SINK_EVENTS][0].key, "shop\x1fv1");
}

Test(shard, duplicates_are_dropped_whichever_ring_they_come_from)
{
	uint64_t before = metrics_get(METRIC_DUPLICATES);

	push(0, "e1", "v1", T0, "(direct)", "(none)");
	push(1, "e1", "v1", T0 + 5, "(direct)", "(none)");
	push(0, "e2", "v1", T0 + 10, "(direct)", "(none)");
	shard_drain(sh);
	cr_assert_eq(sink.count[SINK_EVENTS], 2);
	shard_tick(sh, T0 + 20); /* publishes the shard's counts */
	cr_assert_eq(metrics_get(METRIC_DUPLICATES), before + 1);
}

Test(shard, a_closed_session_becomes_a_touchpoint_keyed_by_visitor)
{
	push(0, "e1", "v1", T0, "news", "email");
	push(0, "e2", "v1", T0 + 60000, "(direct)", "(none)");
	shard_drain(sh);
	shard_tick(sh, T0 + 60000 + 1800000 - 1);
	cr_assert_eq(sink.count[SINK_TOUCHPOINTS], 0);
	shard_tick(sh, T0 + 60000 + 1800000 + SHARD_TICK_MS);
	cr_assert_eq(sink.count[SINK_TOUCHPOINTS], 1);
	const char *tp = sink.records[SINK_TOUCHPOINTS][0].text;
	cr_assert(strstr(tp, "\"end_reason\":\"inactivity\"") != NULL, "%s", tp);
	cr_assert(strstr(tp, "\"events\":2") != NULL, "%s", tp);
	cr_assert(strstr(tp, "\"duration_ms\":60000") != NULL, "%s", tp);
	cr_assert(strstr(tp, "\"channel\":\"Email\"") != NULL, "%s", tp);
	cr_assert_str_eq(sink.records[SINK_TOUCHPOINTS][0].key, "shop\x1fv1");
}

Test(shard, finish_closes_open_sessions_as_shutdown)
{
	push(0, "e1", "v1", T0, "(direct)", "(none)");
	push(1, "e2", "v2", T0, "(direct)", "(none)");
	shard_drain(sh);
	cr_assert_eq(shard_finish(sh), 0);
	cr_assert_eq(sink.count[SINK_TOUCHPOINTS], 2);
	for (size_t i = 0; i < 2; i++)
		cr_assert(strstr(sink.records[SINK_TOUCHPOINTS][i].text,
		                 "\"end_reason\":\"shutdown\"") != NULL);
}

Test(shard, with_keep_sessions_at_stop_finish_leaves_them_open_for_the_state_file)
{
	char err[256];
	struct ring *inputs[2] = {&rings[0], &rings[1]};
	struct shard_options o = {
	    .inputs = inputs,
	    .input_count = 2,
	    .sink = &sink.base,
	    .sink_owned = true,
	    .channels = lists,
	    .dedup_max_entries = 1000,
	    .dedup_window_ms = 3600000,
	    .session = {.timeout_ms = 1800000,
	                .max_duration_ms = 86400000,
	                .max_visitors = 1000,
	                .max_url_bytes = 512},
	    .stop_timeout_ms = 100,
	    .keep_sessions_at_stop = true,
	};
	struct shard_state st;
	struct session_stats ss;

	shard_free(sh);
	sh = shard_new(&o, err, sizeof(err));
	cr_assert_not_null(sh, "%s", err);
	push(0, "e1", "v1", T0, "(direct)", "(none)");
	push(1, "e2", "v2", T0, "(direct)", "(none)");
	shard_drain(sh);
	cr_assert_eq(shard_finish(sh), 0);
	cr_assert_eq(sink.count[SINK_TOUCHPOINTS], 0, "no session cut at the stop");
	shard_get_state(sh, &st);
	session_get_stats(st.sessions, &ss);
	cr_assert_eq(ss.open, 2, "still open, for the state file");
	/* The save failed: they close as shutdown after all. */
	cr_assert_eq(shard_close_sessions(sh), 0);
	cr_assert_eq(sink.count[SINK_TOUCHPOINTS], 2);
	for (size_t i = 0; i < 2; i++)
		cr_assert(strstr(sink.records[SINK_TOUCHPOINTS][i].text,
		                 "\"end_reason\":\"shutdown\"") != NULL);
}

Test(shard, a_full_sink_holds_records_in_order_and_stops_the_rings)
{
	push(0, "e1", "v1", T0, "(direct)", "(none)");
	push(0, "e2", "v1", T0 + 1, "(direct)", "(none)");
	sink.answer = -EAGAIN;
	cr_assert_geq(shard_drain(sh), 1, "what is in hand is processed and held");
	cr_assert_eq(sink.count[SINK_EVENTS], 0);
	push(0, "e3", "v1", T0 + 2, "(direct)", "(none)");
	cr_assert_eq(shard_drain(sh), 0, "nothing more is taken while records are held");
	cr_assert_geq(ring_peek(&rings[0], 10), 1);
	shard_tick(sh, T0 + 100); /* the retry fails too */
	cr_assert_eq(sink.count[SINK_EVENTS], 0);
	sink.answer = 0;
	shard_tick(sh, T0 + 200);
	cr_assert_geq(sink.count[SINK_EVENTS], 1);
	while (shard_drain(sh) > 0)
		;
	cr_assert_eq(sink.count[SINK_EVENTS], 3);
	for (size_t i = 0; i < 3; i++) {
		char want[32];
		snprintf(want, sizeof(want), "\"event_id\":\"e%zu\"", i + 1);
		cr_assert(strstr(event_text(i), want) != NULL, "record %zu: %s", i, event_text(i));
	}
}

Test(shard, a_sink_still_full_at_the_stop_is_reported)
{
	push(0, "e1", "v1", T0, "(direct)", "(none)");
	sink.answer = -EAGAIN;
	shard_drain(sh);
	cr_assert_eq(shard_finish(sh), -ETIMEDOUT);
}

Test(shard, inputs_are_done_only_when_every_ring_is_closed_and_empty)
{
	cr_assert_not(shard_inputs_done(sh));
	push(0, "e1", "v1", T0, "(direct)", "(none)");
	ring_close_producer(&rings[0]);
	ring_close_producer(&rings[1]);
	cr_assert_not(shard_inputs_done(sh), "an event is still in a ring");
	shard_drain(sh);
	cr_assert(shard_inputs_done(sh));
}

static int64_t monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Like push, with the order stamp ingest gives (pipeline_submit). */
static void push_at(int r, const char *eid, int64_t order_us)
{
	struct event *ev = ring_claim(&rings[r]);

	cr_assert_not_null(ev);
	event_init(ev);
	ev->received_at_ms = T0;
	ev->order_us = order_us;
	put(ev, EF_EVENT_ID, eid);
	put(ev, EF_APP_ID, "shop");
	put(ev, EF_VISITOR_ID, "v1");
	ring_publish(&rings[r]);
}

Test(shard, rings_are_merged_in_the_order_ingest_handed_events_over)
{
	int64_t now = monotonic_us();

	/* Ring 1 holds the older events, ring 0 the newer: taken oldest first. */
	push_at(0, "third", now - 3000);
	push_at(0, "fourth", now - 2000);
	push_at(1, "first", now - 5000);
	push_at(1, "second", now - 4000);
	push_at(1, "fifth", now - 1000);
	cr_assert_eq(shard_drain(sh), 5);
	const char *want[] = {"first", "second", "third", "fourth", "fifth"};
	for (size_t i = 0; i < 5; i++) {
		char id[48];
		snprintf(id, sizeof(id), "\"event_id\":\"%s\"", want[i]);
		cr_assert(strstr(event_text(i), id) != NULL, "record %zu: %s", i, event_text(i));
	}
}

Test(shard, a_merged_event_waits_until_no_earlier_one_can_be_on_its_way)
{
	char err[256];
	struct ring *inputs[2] = {&rings[0], &rings[1]};
	struct shard_options o = {
	    .inputs = inputs,
	    .input_count = 2,
	    .sink = &sink.base,
	    .channels = lists,
	    .dedup_max_entries = 100,
	    .dedup_window_ms = 1000,
	    .session = {.timeout_ms = 1000,
	                .max_duration_ms = 10000,
	                .max_visitors = 10,
	                .max_url_bytes = 256},
	    .reorder_us = 3600 * 1000000LL, /* an hour: nothing fresh is old enough */
	};
	struct shard *slow = shard_new(&o, err, sizeof(err));
	int64_t now = monotonic_us();

	cr_assert_not_null(slow, "%s", err);
	push_at(0, "old", now - 7200 * 1000000LL);
	push_at(1, "fresh", now);
	cr_assert_eq(shard_drain(slow), 1, "only the event older than the window goes");
	cr_assert(strstr(event_text(0), "\"event_id\":\"old\"") != NULL);
	cr_assert_eq(ring_peek(&rings[1], 10), 1);
	/* Once every producer has closed, nothing earlier can come: the rest goes at once. */
	ring_close_producer(&rings[0]);
	ring_close_producer(&rings[1]);
	cr_assert_eq(shard_drain(slow), 1);
	cr_assert(shard_inputs_done(slow));
	shard_free(slow);
}

/* ---- attribution and rollups ---- */

static struct shard *attribution_shard(void)
{
	static const char *const conversion_events[] = {"purchase"};
	char err[256];
	struct ring *inputs[2] = {&rings[0], &rings[1]};
	struct shard_options o = {
	    .inputs = inputs,
	    .input_count = 2,
	    .sink = &sink.base,
	    .sink_owned = true,
	    .channels = lists,
	    .dedup_max_entries = 1000,
	    .dedup_window_ms = 3600000,
	    .session = {.timeout_ms = 1800000,
	                .max_duration_ms = 86400000,
	                .max_visitors = 1000,
	                .max_url_bytes = 512},
	    .stop_timeout_ms = 100,
	    .rollups = {.grace_ms = 1000, .max_keys = 100},
	    .conversion_events = conversion_events,
	    .conversion_event_count = 1,
	};
	struct shard *s;

	attribution_options_default(&o.attribution);
	o.attribution.max_visitors = o.attribution.max_users = 1000;
	s = shard_new(&o, err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	return s;
}

/* Claims a page view in ring 0 like push; the caller adds fields and publishes. */
static struct event *claim(const char *eid, const char *vid, int64_t at, const char *source,
                           const char *medium)
{
	struct event *ev = ring_claim(&rings[0]);

	cr_assert_not_null(ev, "ring full");
	event_init(ev);
	ev->received_at_ms = at;
	put(ev, EF_EVENT_ID, eid);
	put(ev, EF_APP_ID, "shop");
	if (vid)
		put(ev, EF_VISITOR_ID, vid);
	put(ev, EF_SOURCE, source);
	put(ev, EF_MEDIUM, medium);
	return ev;
}

static yajl_val parse(const char *json)
{
	char err[256];
	yajl_val v = yajl_tree_parse(json, err, sizeof(err));

	cr_assert_not_null(v, "not JSON (%s): %s", err, json);
	return v;
}

static yajl_val member(yajl_val v, const char *a, const char *b)
{
	const char *path[] = {a, b, NULL};

	return yajl_tree_get(v, path, yajl_t_any);
}

/* The affiliate / email / paid search story of the issue, on one shard. */
Test(shard, a_conversion_is_credited_over_the_users_devices_and_rolled_up)
{
	struct shard *s = attribution_shard();
	const int64_t start[3] = {T0, T0 + 10000, T0 + 20000};
	const int64_t converted = T0 + 30000, week = 7 * 86400000LL;
	const char *channels[3] = {"Affiliates", "Email", "Paid Search"};
	const double first[3] = {1, 0, 0}, last[3] = {0, 0, 1}, position[3] = {0.4, 0.2, 0.4};
	double decay[3], decay_sum = 0, revenue = 0, attributed[ATTRIBUTION_MODEL__COUNT] = {0};
	uint64_t sessions = 0, page_views = 0, conversions = 0;
	struct event *ev;
	yajl_val v, tps;

	ev = claim("e1", "v1", start[0], "(direct)", "(none)");
	put(ev, EF_AFFILIATE_ID, "awc-1");
	ring_publish(&rings[0]);
	ev = claim("e2", "v1", start[1], "news", "email"); /* back by email, logged in */
	put(ev, EF_USER_ID, "u1");
	ring_publish(&rings[0]);
	ev = claim("e3", "v2", start[2], "google", "cpc"); /* the second device */
	put(ev, EF_CLICK_ID_TYPE, "gclid");
	put(ev, EF_CLICK_ID, "g1");
	put(ev, EF_USER_ID, "u1");
	ring_publish(&rings[0]);
	ev = claim("e4", "v2", converted, "(direct)", "(none)");
	ev->type = EVENT_CONVERSION;
	ev->has_revenue = true;
	ev->revenue = 90;
	put(ev, EF_USER_ID, "u1");
	put(ev, EF_CURRENCY, "EUR");
	ring_publish(&rings[0]);
	cr_assert_eq(shard_drain(s), 4);

	cr_assert_eq(sink.count[SINK_ATTRIBUTION], 1);
	cr_assert_str_eq(sink.records[SINK_ATTRIBUTION][0].key, "shop\x1fv2");
	v = parse(sink.records[SINK_ATTRIBUTION][0].text);
	cr_assert_str_eq(YAJL_GET_STRING(member(v, "conversion_event_id", NULL)), "e4");
	cr_assert_str_eq(YAJL_GET_STRING(member(v, "user_id", NULL)), "u1");
	tps = member(v, "touchpoints", NULL);
	cr_assert_eq(tps->u.array.len, 3, "%s", sink.records[SINK_ATTRIBUTION][0].text);
	for (int i = 0; i < 3; i++) {
		decay[i] = exp2(-(double)(converted - start[i]) / (double)week);
		decay_sum += decay[i];
	}
	for (int i = 0; i < 3; i++) {
		yajl_val t = tps->u.array.values[i];

		cr_assert_str_eq(YAJL_GET_STRING(member(t, "channel", NULL)), channels[i]);
		cr_assert_str_eq(YAJL_GET_STRING(member(t, "visitor_id", NULL)),
		                 i < 2 ? "v1" : "v2");
		cr_assert_float_eq(YAJL_GET_DOUBLE(member(t, "credit", "first_touch")), first[i],
		                   1e-12);
		cr_assert_float_eq(YAJL_GET_DOUBLE(member(t, "credit", "last_touch")), last[i],
		                   1e-12);
		cr_assert_float_eq(YAJL_GET_DOUBLE(member(t, "credit", "last_non_direct")), last[i],
		                   1e-12);
		cr_assert_float_eq(YAJL_GET_DOUBLE(member(t, "credit", "linear")), 1.0 / 3, 1e-12);
		cr_assert_float_eq(YAJL_GET_DOUBLE(member(t, "credit", "position_based")),
		                   position[i], 1e-12);
		cr_assert_float_eq(YAJL_GET_DOUBLE(member(t, "credit", "time_decay")),
		                   decay[i] / decay_sum, 1e-12);
		cr_assert_float_eq(YAJL_GET_DOUBLE(member(t, "revenue", "linear")), 30, 1e-9);
	}
	cr_assert_str_eq(YAJL_GET_STRING(member(tps->u.array.values[0], "affiliate_id", NULL)),
	                 "awc-1");
	yajl_tree_free(v);

	/* The finish writes the open minute: its rows hold the conversion's revenue, and the
	 * attributed revenue of every model adds up to it. */
	cr_assert_eq(shard_finish(s), 0);
	cr_assert_geq(sink.count[SINK_ROLLUPS], 3);
	for (size_t r = 0; r < sink.count[SINK_ROLLUPS]; r++) {
		yajl_val row = parse(sink.records[SINK_ROLLUPS][r].text);

		cr_assert_str_eq(YAJL_GET_STRING(member(row, "minute", NULL)),
		                 "2027-01-15T08:00:00.000Z");
		sessions += (uint64_t)YAJL_GET_INTEGER(member(row, "sessions", NULL));
		page_views += (uint64_t)YAJL_GET_INTEGER(member(row, "page_views", NULL));
		conversions += (uint64_t)YAJL_GET_INTEGER(member(row, "conversions", NULL));
		revenue += YAJL_GET_DOUBLE(member(row, "revenue", NULL));
		for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++)
			attributed[m] += YAJL_GET_DOUBLE(
			    member(row, "attributed_revenue",
			           attribution_model_name((enum attribution_model)m)));
		yajl_tree_free(row);
	}
	cr_assert_eq(sessions, 3);
	cr_assert_eq(page_views, 3, "the conversion is no page view");
	cr_assert_eq(conversions, 1);
	cr_assert_float_eq(revenue, 90, 1e-9);
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++)
		cr_assert_float_eq(attributed[m], 90, 1e-9, "model %d", m);
	cr_assert_str_eq(sink.records[SINK_ROLLUPS][0].key, "shop\x1f"
	                                                    "Affiliates\x1f(direct)\x1f(none)\x1f");
	shard_free(s);
}

Test(shard, named_conversions_and_conversions_without_a_visitor_get_records_too)
{
	struct shard *s = attribution_shard();
	uint64_t without_path = metrics_get(METRIC_CONVERSIONS_WITHOUT_PATH);
	struct event *ev;

	ev = claim("e1", "v1", T0, "news", "email");
	ev->type = EVENT_CUSTOM;
	put(ev, EF_NAME, "purchase");
	ring_publish(&rings[0]);
	ev = claim("e2", "v1", T0 + 1, "(direct)", "(none)");
	ev->type = EVENT_CUSTOM;
	put(ev, EF_NAME, "add_to_cart"); /* not a conversion */
	ring_publish(&rings[0]);
	ev = claim("e3", NULL, T0 + 2, "(direct)", "(none)");
	ev->type = EVENT_CONVERSION;
	ring_publish(&rings[0]);
	cr_assert_eq(shard_drain(s), 3);
	cr_assert_eq(sink.count[SINK_ATTRIBUTION], 2);
	cr_assert(strstr(sink.records[SINK_ATTRIBUTION][0].text, "\"channel\":\"Email\"") != NULL);
	cr_assert(strstr(sink.records[SINK_ATTRIBUTION][1].text, "\"touchpoints\":[]") != NULL,
	          "%s", sink.records[SINK_ATTRIBUTION][1].text);
	cr_assert_eq(metrics_get(METRIC_CONVERSIONS_WITHOUT_PATH), without_path + 1);
	shard_free(s);
}

Test(shard, a_closed_minute_is_written_on_the_tick_and_a_late_record_counts_as_late)
{
	struct shard *s = attribution_shard(); /* grace 1 s */
	uint64_t late = metrics_get(METRIC_ROLLUP_LATE);

	push(0, "e1", "v1", T0 + 1000, "news", "email");
	shard_drain(s);
	shard_tick(s, T0 + 60000 + 999);
	cr_assert_eq(sink.count[SINK_ROLLUPS], 0, "within the grace");
	shard_tick(s, T0 + 60000 + 1000);
	cr_assert_eq(sink.count[SINK_ROLLUPS], 1);
	cr_assert(strstr(sink.records[SINK_ROLLUPS][0].text, "\"late\":0}") != NULL);
	/* Received in the closed minute, handled after it closed. */
	push(0, "e2", "v2", T0 + 2000, "news", "email");
	shard_drain(s);
	cr_assert_eq(shard_finish(s), 0);
	cr_assert_eq(sink.count[SINK_ROLLUPS], 2);
	cr_assert(strstr(sink.records[SINK_ROLLUPS][1].text,
	                 "\"minute\":\"2027-01-15T08:01:00.000Z\"") != NULL,
	          "%s", sink.records[SINK_ROLLUPS][1].text);
	cr_assert(strstr(sink.records[SINK_ROLLUPS][1].text, "\"late\":1}") != NULL);
	cr_assert_eq(metrics_get(METRIC_ROLLUP_LATE), late + 1);
	shard_free(s);
}

static void note_result(void *ud, int slot, enum ack_result result)
{
	enum ack_result *results = ud;

	results[slot] = result;
}

Test(shard, acks_a_duplicate_at_once_and_hands_other_tokens_to_the_sink_with_their_records)
{
	struct ack_hub *hub = ack_hub_new(1, 4);
	struct ack_table *t = ack_hub_table(hub, 0);
	struct shard *acked;
	struct ring *inputs[1] = {&rings[0]};
	struct shard_options o = {
	    .inputs = inputs,
	    .input_count = 1,
	    .sink = &sink.base,
	    .sink_owned = true,
	    .channels = lists,
	    .dedup_max_entries = 1000,
	    .dedup_window_ms = 3600000,
	    .session = {.timeout_ms = 1800000,
	                .max_duration_ms = 86400000,
	                .max_visitors = 1000,
	                .max_url_bytes = 512},
	    .stop_timeout_ms = 100,
	    .acks = hub,
	};
	enum ack_result results[4] = {-1, -1, -1, -1};
	uint64_t first, dup, refused;
	int a = ack_take(t, &first), b = ack_take(t, &dup), c = ack_take(t, &refused);
	char err[256];

	acked = shard_new(&o, err, sizeof(err));
	cr_assert_not_null(acked, "%s", err);
	ack_arm(t, a, 2, T0, INT64_MAX);
	ack_arm(t, b, 1, T0, INT64_MAX);
	ack_arm(t, c, 1, T0, INT64_MAX);
	push_acked(0, "e1", T0, first);
	push_acked(0, "e2", T0 + 1, first);
	push_acked(0, "e1", T0 + 2, dup); /* a tracker's retry of e1 */
	cr_assert_eq(shard_drain(acked), 3);
	cr_assert_eq(sink.count[SINK_EVENTS], 2);
	cr_assert_eq(sink.records[SINK_EVENTS][0].ack_token, first);
	cr_assert_eq(sink.records[SINK_EVENTS][1].ack_token, first);
	/* The duplicate is answered at once; the first request waits for the sink. */
	cr_assert_eq(ack_collect(t, note_result, results), 1);
	cr_assert_eq(results[b], ACK_DURABLE);
	cr_assert_eq(ack_armed(t), 2);

	/* A record the sink refuses for good: its request is answered failed. */
	sink.answer = -EIO;
	push_acked(0, "e3", T0 + 3, refused);
	cr_assert_eq(shard_drain(acked), 1);
	cr_assert_eq(ack_collect(t, note_result, results), 1);
	cr_assert_eq(results[c], ACK_FAILED);
	sink.answer = 0;
	shard_free(acked);
	ack_hub_free(hub);
}
