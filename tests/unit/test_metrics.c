/* Unit tests for src/metrics.c: counting, per-thread sums, histograms and the Prometheus
 * text rendering. */
#include "clickd/admin.h"
#include "clickd/metrics.h"
#include "clickd/session.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char buf[ADMIN_METRICS_BYTES];

static unsigned long long value_of(const char *series)
{
	char *p = strstr(buf, series);
	unsigned long long v = 0;
	cr_assert(p != NULL, "series %s missing", series);
	cr_assert_eq(sscanf(p + strlen(series), " %llu", &v), 1);
	return v;
}

static double real_of(const char *series)
{
	char *p = strstr(buf, series);
	double v = 0;
	cr_assert(p != NULL, "series %s missing", series);
	cr_assert_eq(sscanf(p + strlen(series), " %lf", &v), 1);
	return v;
}

static int64_t wall_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Test(metrics, counters_render_with_help_and_type)
{
	metrics_add(METRIC_EVENTS_IN, 3);
	cr_assert(metrics_render(buf, sizeof(buf)) > 0);
	cr_assert(strstr(buf, "# HELP clickd_events_in_total ") != NULL);
	cr_assert(strstr(buf, "# TYPE clickd_events_in_total counter") != NULL);
	cr_assert_eq(value_of("\nclickd_events_in_total"), 3);
}

Test(metrics, requests_are_counted_by_status_and_unknown_ones_as_other)
{
	metrics_http_status(204);
	metrics_http_status(204);
	metrics_http_status(418);
	metrics_render(buf, sizeof(buf));
	cr_assert_eq(value_of("clickd_http_requests_total{status=\"204\"}"), 2);
	cr_assert_eq(value_of("clickd_http_requests_total{status=\"other\"}"), 1);
}

Test(metrics, sink_records_are_labelled_by_sink_and_stream)
{
	metrics_sink_out(METRICS_SINK_KAFKA, SINK_EVENTS, 5);
	metrics_sink_failed(METRICS_SINK_FILE, SINK_DEAD_LETTERS, 1);
	metrics_dead_letter(METRICS_DL_NOT_UTF8);
	metrics_render(buf, sizeof(buf));
	cr_assert_eq(value_of("clickd_records_out_total{sink=\"kafka\",stream=\"events\"}"), 5);
	cr_assert_eq(value_of("clickd_sink_failures_total{sink=\"file\",stream=\"dead_letters\"}"),
	             1);
	cr_assert_eq(value_of("clickd_dead_letters_total{reason=\"not_utf8\"}"), 1);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 5);
}

Test(metrics, a_small_buffer_is_refused_not_overrun)
{
	char small[64];
	cr_assert_eq(metrics_render(small, sizeof(small)), -ENOSPC);
}

Test(metrics, gauges_move_both_ways_and_render_as_gauges)
{
	metrics_gauge_add(GAUGE_SESSIONS_OPEN, 5);
	metrics_gauge_add(GAUGE_SESSIONS_OPEN, -2);
	cr_assert_eq(metrics_gauge_get(GAUGE_SESSIONS_OPEN), 3);
	metrics_render(buf, sizeof(buf));
	cr_assert(strstr(buf, "# TYPE clickd_sessions_open gauge") != NULL);
	cr_assert_eq(value_of("\nclickd_sessions_open"), 3);
}

Test(metrics, session_ends_are_labelled_like_the_touchpoint_end_reason)
{
	for (int r = 0; r < SESSION_END__COUNT; r++)
		metrics_session_ended(r, (uint64_t)r + 1);
	metrics_render(buf, sizeof(buf));
	for (int r = 0; r < SESSION_END__COUNT; r++) {
		char series[128];
		snprintf(series, sizeof(series), "clickd_sessions_ended_total{reason=\"%s\"}",
		         session_end_reason_name((enum session_end_reason)r));
		cr_assert_eq(value_of(series), (unsigned long long)r + 1, "%s", series);
	}
	cr_assert_eq(SESSION_END__COUNT, METRICS_SESSION_END_REASONS);
}

Test(metrics, ratio_gauges_render_as_decimals)
{
	metrics_gauge_set(GAUGE_RING_FILL_PPM, 250000);
	metrics_render(buf, sizeof(buf));
	cr_assert(strstr(buf, "\nclickd_ring_fill_ratio 0.25\n") != NULL);
	metrics_gauge_set(GAUGE_RING_FILL_PPM, 1000000);
	metrics_render(buf, sizeof(buf));
	cr_assert(strstr(buf, "\nclickd_ring_fill_ratio 1\n") != NULL);
	metrics_set_kafka_queue(7);
	metrics_render(buf, sizeof(buf));
	cr_assert(strstr(buf, "\nclickd_kafka_queue_depth 7\n") != NULL);
}

Test(metrics, histogram_buckets_are_cumulative_and_end_in_inf_sum_and_count)
{
	/* 30 us, 50 us (on the first bound: le is "less or equal"), 700 us, 2 s (past 1 s). */
	metrics_observe(HIST_HTTP_REQUEST_DURATION, 30, 1);
	metrics_observe(HIST_HTTP_REQUEST_DURATION, 50, 2);
	metrics_observe(HIST_HTTP_REQUEST_DURATION, 700, 1);
	metrics_observe(HIST_HTTP_REQUEST_DURATION, 2000000, 1);
	metrics_observe(HIST_HTTP_REQUEST_DURATION, 5, 0); /* nothing */
	cr_assert(metrics_render(buf, sizeof(buf)) > 0);
	cr_assert(strstr(buf, "# TYPE clickd_http_request_duration_seconds histogram\n") != NULL);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"0.00005\"}"), 3);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"0.0005\"}"), 3);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"0.001\"}"), 4);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"1\"}"), 4);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"+Inf\"}"), 5);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_count"), 5);
	/* 30 + 100 + 700 + 2000000 us, exactly. */
	cr_assert(strstr(buf, "\nclickd_http_request_duration_seconds_sum 2.00083\n") != NULL);
	cr_assert_eq(metrics_histogram_count(HIST_HTTP_REQUEST_DURATION), 5);
	cr_assert_eq(metrics_histogram_sum_us(HIST_HTTP_REQUEST_DURATION), 2000830);
}

Test(metrics, every_bucket_line_is_at_least_the_one_before)
{
	const char *p = buf;
	unsigned long long last = 0;
	int lines = 0;

	for (uint64_t v = 1; v < 400000000; v = v * 3 + 1)
		metrics_observe(HIST_EVENT_TO_SINK_FILE, v, v % 5 + 1);
	metrics_render(buf, sizeof(buf));
	while ((p = strstr(p, "clickd_event_to_sink_seconds_bucket{sink=\"file\",le=\""))) {
		unsigned long long v;
		p = strchr(p, '}');
		cr_assert_eq(sscanf(p + 1, " %llu", &v), 1);
		cr_assert_geq(v, last);
		last = v;
		lines++;
	}
	cr_assert_eq(lines, 18); /* 17 bounds and +Inf */
	cr_assert_eq(last, metrics_histogram_count(HIST_EVENT_TO_SINK_FILE));
	cr_assert_eq(value_of("clickd_event_to_sink_seconds_count{sink=\"file\"}"), last);
	cr_assert_eq(value_of("clickd_event_to_sink_seconds_count{sink=\"kafka\"}"), 0);
}

Test(metrics, labelled_histogram_series_share_one_header)
{
	const char *first, *second;

	metrics_render(buf, sizeof(buf));
	first = strstr(buf, "# TYPE clickd_event_to_sink_seconds histogram\n");
	cr_assert(first != NULL);
	second = strstr(first + 1, "# TYPE clickd_event_to_sink_seconds ");
	cr_assert(second == NULL, "one TYPE line per family");
	cr_assert(strstr(buf, "clickd_event_to_sink_seconds_sum{sink=\"kafka\"} 0\n") != NULL);
}

Test(metrics, bucket_bounds_ascend)
{
	static const uint64_t http[] = {METRICS_BOUNDS_HTTP_US};
	static const uint64_t sink[] = {METRICS_BOUNDS_SINK_US};

	for (size_t i = 1; i < sizeof(http) / sizeof(http[0]); i++)
		cr_assert_gt(http[i], http[i - 1]);
	for (size_t i = 1; i < sizeof(sink) / sizeof(sink[0]); i++)
		cr_assert_gt(sink[i], sink[i - 1]);
	cr_assert_eq(http[0], 50);
	cr_assert_eq(sink[0], 1000);
	cr_assert_eq(sink[sizeof(sink) / sizeof(sink[0]) - 1], 300000000);
}

/* Every family: HELP (without characters the text format would need escaped) then TYPE,
 * both once; counters end in _total. */
Test(metrics, every_family_has_help_and_type_once)
{
	const char *p = buf;
	int families = 0;

	metrics_render(buf, sizeof(buf));
	while ((p = strstr(p, "# HELP "))) {
		char name[128], type[32], expect[160];
		const char *eol = strchr(p, '\n');
		const char *help;

		cr_assert_eq(sscanf(p, "# HELP %127s", name), 1);
		help = p + strlen("# HELP ") + strlen(name) + 1;
		cr_assert(memchr(help, '\\', (size_t)(eol - help)) == NULL, "%s", name);
		cr_assert_gt(eol - help, 10, "%s has a help text", name);
		snprintf(expect, sizeof(expect), "# TYPE %s ", name);
		cr_assert(strncmp(eol + 1, expect, strlen(expect)) == 0, "%s: TYPE follows", name);
		cr_assert_eq(sscanf(eol + 1 + strlen(expect), "%31s", type), 1);
		if (strcmp(type, "counter") == 0)
			cr_assert(strlen(name) > 6 && !strcmp(name + strlen(name) - 6, "_total"),
			          "%s", name);
		else
			cr_assert(!strcmp(type, "gauge") || !strcmp(type, "histogram"), "%s", type);
		snprintf(expect, sizeof(expect), "# HELP %s ", name);
		cr_assert(strstr(eol, expect) == NULL, "%s twice", name);
		families++;
		p = eol;
	}
	/* + http_requests, dead_letters, protocol_events_in, protocol_dead_letters,
	 * records_out, sink_failures, sessions_ended */
	cr_assert_eq(families, METRIC__COUNT + 7 + GAUGE__COUNT + 2);
	cr_assert_lt(strlen(buf), sizeof(buf) / 8, "room to grow in ADMIN_METRICS_BYTES");
}

/* ---- per-thread counting ---- */

#define THREADS         4
#define ADDS_PER_THREAD 100000

static void *count_a_lot(void *arg)
{
	uint64_t id = (uint64_t)(uintptr_t)arg;

	for (int i = 0; i < ADDS_PER_THREAD; i++) {
		metrics_add(METRIC_BYTES_IN, 2);
		metrics_http_status(204);
		metrics_sink_out(METRICS_SINK_FILE, SINK_EVENTS, 1);
		metrics_observe(HIST_HTTP_REQUEST_DURATION, id * 100, 1);
	}
	return NULL;
}

static void *scrape_a_lot(void *arg)
{
	static char local[ADMIN_METRICS_BYTES];
	_Atomic int *stop = arg;

	while (!atomic_load(stop))
		cr_assert(metrics_render(local, sizeof(local)) > 0);
	return NULL;
}

Test(metrics, counts_of_many_threads_are_summed_on_scrape)
{
	pthread_t t[THREADS], scraper;
	_Atomic int stop = 0;

	metrics_add(METRIC_BYTES_IN, 1); /* this thread's block too */
	pthread_create(&scraper, NULL, scrape_a_lot, &stop);
	for (uintptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, count_a_lot, (void *)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&stop, 1);
	pthread_join(scraper, NULL);
	cr_assert_eq(metrics_get(METRIC_BYTES_IN), 1 + 2ull * THREADS * ADDS_PER_THREAD);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS),
	             (uint64_t)THREADS * ADDS_PER_THREAD);
	cr_assert_eq(metrics_histogram_count(HIST_HTTP_REQUEST_DURATION),
	             (uint64_t)THREADS * ADDS_PER_THREAD);
	/* ids 0..3: 0, 100, 200 and 300 us. */
	cr_assert_eq(metrics_histogram_sum_us(HIST_HTTP_REQUEST_DURATION),
	             600ull * ADDS_PER_THREAD);
	metrics_render(buf, sizeof(buf));
	cr_assert_eq(value_of("clickd_http_requests_total{status=\"204\"}"),
	             (unsigned long long)THREADS * ADDS_PER_THREAD);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"0.00005\"}"),
	             ADDS_PER_THREAD);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"0.00025\"}"),
	             3 * ADDS_PER_THREAD);
}

static void *count_once(void *arg)
{
	(void)arg;
	metrics_add(METRIC_EVENTS_IN, 1);
	metrics_observe(HIST_EVENT_TO_SINK_KAFKA, 2000, 1);
	return NULL;
}

Test(metrics, counts_of_ended_threads_stay_in_the_sums)
{
	/* One thread after the other: each may take the block the one before it left. */
	for (int i = 0; i < 300; i++) {
		pthread_t t;
		pthread_create(&t, NULL, count_once, NULL);
		pthread_join(t, NULL);
	}
	cr_assert_eq(metrics_get(METRIC_EVENTS_IN), 300);
	cr_assert_eq(metrics_histogram_count(HIST_EVENT_TO_SINK_KAFKA), 300);
	metrics_render(buf, sizeof(buf));
	cr_assert_eq(value_of("clickd_event_to_sink_seconds_bucket{sink=\"kafka\",le=\"0.001\"}"),
	             0);
	cr_assert_eq(value_of("clickd_event_to_sink_seconds_bucket{sink=\"kafka\",le=\"0.0025\"}"),
	             300);
	cr_assert(real_of("clickd_event_to_sink_seconds_sum{sink=\"kafka\"}") == 0.6);
}

/* ---- event to sink ---- */

Test(metrics, an_event_taken_by_a_sink_is_observed_from_its_receive_time)
{
	metrics_event_to_sink(HIST_EVENT_TO_SINK_FILE, wall_clock_ms() - 3000);
	metrics_event_to_sink(HIST_EVENT_TO_SINK_FILE, 0);  /* no event: not observed */
	metrics_event_to_sink(HIST_EVENT_TO_SINK_FILE, -5); /* nor a nonsense time */
	cr_assert_eq(metrics_histogram_count(HIST_EVENT_TO_SINK_FILE), 1);
	cr_assert_geq(metrics_histogram_sum_us(HIST_EVENT_TO_SINK_FILE), 3000000);
	cr_assert_lt(metrics_histogram_sum_us(HIST_EVENT_TO_SINK_FILE), 60000000);
	metrics_render(buf, sizeof(buf));
	cr_assert_eq(value_of("clickd_event_to_sink_seconds_bucket{sink=\"file\",le=\"2.5\"}"), 0);
	cr_assert_eq(value_of("clickd_event_to_sink_seconds_bucket{sink=\"file\",le=\"+Inf\"}"), 1);
	cr_assert_eq(metrics_histogram_count(HIST_EVENT_TO_SINK_KAFKA), 0);
}

Test(metrics, a_wall_clock_stepped_back_counts_as_no_delay)
{
	metrics_event_to_sink(HIST_EVENT_TO_SINK_KAFKA, wall_clock_ms() + 60000);
	cr_assert_eq(metrics_histogram_count(HIST_EVENT_TO_SINK_KAFKA), 1);
	cr_assert_eq(metrics_histogram_sum_us(HIST_EVENT_TO_SINK_KAFKA), 0);
}

Test(metrics, http_answers_of_one_read_share_its_duration)
{
	metrics_http_answered(120000, 3); /* 120 us */
	metrics_http_answered(5000, 0);
	cr_assert_eq(metrics_histogram_count(HIST_HTTP_REQUEST_DURATION), 3);
	cr_assert_eq(metrics_histogram_sum_us(HIST_HTTP_REQUEST_DURATION), 360);
	metrics_render(buf, sizeof(buf));
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"0.0001\"}"), 0);
	cr_assert_eq(value_of("clickd_http_request_duration_seconds_bucket{le=\"0.00025\"}"), 3);
}
