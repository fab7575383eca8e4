/* Unit tests for src/metrics.c: counting and the Prometheus text rendering. */
#include "clickd/metrics.h"
#include "clickd/session.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static char buf[65536];

static unsigned long long value_of(const char *series)
{
	char *p = strstr(buf, series);
	unsigned long long v = 0;
	cr_assert(p != NULL, "series %s missing", series);
	cr_assert_eq(sscanf(p + strlen(series), " %llu", &v), 1);
	return v;
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
