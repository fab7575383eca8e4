/*
 * metrics.c - counters and gauges as relaxed C11 atomics, rendered as Prometheus text.
 *
 * Relaxed ordering is enough: each counter is independent and a scrape only needs a value
 * that was true at some moment. Any thread adds; the admin listener renders.
 */
#include "clickd/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

struct counter_def {
	const char *name;
	const char *help;
};

static const struct counter_def counter_defs[METRIC__COUNT] = {
#define METRICS_COUNTER_DEF(id, n, h) [METRIC_##id] = {n, h},
    METRICS_COUNTERS(METRICS_COUNTER_DEF)
#undef METRICS_COUNTER_DEF
};

static const struct counter_def gauge_defs[GAUGE__COUNT] = {
#define METRICS_GAUGE_DEF(id, n, h) [GAUGE_##id] = {n, h},
    METRICS_GAUGES(METRICS_GAUGE_DEF)
#undef METRICS_GAUGE_DEF
};

/* Labels of clickd_sessions_ended_total, in the order of enum session_end_reason
 * (session.h; test_metrics checks they agree). */
static const char *const session_end_labels[METRICS_SESSION_END_REASONS] = {
    "inactivity", "new_campaign", "max_duration", "shutdown", "evicted"};

static const char *const dead_letter_labels[METRICS_DL__COUNT] = {
#define METRICS_DL_LABEL(id, label) [METRICS_DL_##id] = label,
    METRICS_DEAD_LETTER_REASONS(METRICS_DL_LABEL)
#undef METRICS_DL_LABEL
};

static const char *const sink_labels[METRICS_SINK__COUNT] = {"file", "kafka"};

/* The statuses clickd answers with; anything else is counted as "other". */
static const int known_statuses[] = {200, 204, 400, 403, 404, 405, 408, 411,
                                     413, 414, 415, 431, 500, 501, 503, 505};
#define STATUS_SLOTS (sizeof(known_statuses) / sizeof(known_statuses[0]) + 1)

static _Atomic uint64_t counters[METRIC__COUNT];
static _Atomic uint64_t http_status[STATUS_SLOTS];
static _Atomic uint64_t dead_letters[METRICS_DL__COUNT];
static _Atomic uint64_t sink_out[METRICS_SINK__COUNT][SINK_STREAM_COUNT];
static _Atomic uint64_t sink_failed[METRICS_SINK__COUNT][SINK_STREAM_COUNT];
static _Atomic int64_t kafka_queue_depth;
static _Atomic int64_t gauges[GAUGE__COUNT];
static _Atomic uint64_t sessions_ended[METRICS_SESSION_END_REASONS];

void metrics_add(enum metrics_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

uint64_t metrics_get(enum metrics_counter c)
{
	return atomic_load_explicit(&counters[c], memory_order_relaxed);
}

void metrics_gauge_add(enum metrics_gauge g, int64_t delta)
{
	atomic_fetch_add_explicit(&gauges[g], delta, memory_order_relaxed);
}

void metrics_gauge_set(enum metrics_gauge g, int64_t value)
{
	atomic_store_explicit(&gauges[g], value, memory_order_relaxed);
}

int64_t metrics_gauge_get(enum metrics_gauge g)
{
	return atomic_load_explicit(&gauges[g], memory_order_relaxed);
}

void metrics_session_ended(int reason, uint64_t n)
{
	if (reason >= 0 && reason < METRICS_SESSION_END_REASONS)
		atomic_fetch_add_explicit(&sessions_ended[reason], n, memory_order_relaxed);
}

void metrics_http_status(int status)
{
	size_t slot = STATUS_SLOTS - 1;
	for (size_t i = 0; i + 1 < STATUS_SLOTS; i++) {
		if (known_statuses[i] == status) {
			slot = i;
			break;
		}
	}
	atomic_fetch_add_explicit(&http_status[slot], 1, memory_order_relaxed);
}

void metrics_dead_letter(enum metrics_dead_letter_reason reason)
{
	atomic_fetch_add_explicit(&dead_letters[reason], 1, memory_order_relaxed);
}

void metrics_sink_out(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n)
{
	atomic_fetch_add_explicit(&sink_out[sink][stream], n, memory_order_relaxed);
}

void metrics_sink_failed(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n)
{
	atomic_fetch_add_explicit(&sink_failed[sink][stream], n, memory_order_relaxed);
}

void metrics_set_kafka_queue(int64_t depth)
{
	atomic_store_explicit(&kafka_queue_depth, depth, memory_order_relaxed);
}

uint64_t metrics_sink_out_get(enum metrics_sink_kind sink, enum sink_stream stream)
{
	return atomic_load_explicit(&sink_out[sink][stream], memory_order_relaxed);
}

uint64_t metrics_sink_failed_get(enum metrics_sink_kind sink, enum sink_stream stream)
{
	return atomic_load_explicit(&sink_failed[sink][stream], memory_order_relaxed);
}

/* A bounded appender: remembers overflow instead of failing each call. */
struct text {
	char *buf;
	size_t cap;
	size_t len;
	bool overflow;
};

__attribute__((format(printf, 2, 3))) static void text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->overflow)
		return;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= t->cap - t->len) {
		t->overflow = true;
		return;
	}
	t->len += (size_t)n;
}

static void render_header(struct text *t, const char *name, const char *type, const char *help)
{
	text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_sink_family(struct text *t, const char *name, const char *help,
                               _Atomic uint64_t values[METRICS_SINK__COUNT][SINK_STREAM_COUNT])
{
	render_header(t, name, "counter", help);
	for (int s = 0; s < METRICS_SINK__COUNT; s++)
		for (int st = 0; st < SINK_STREAM_COUNT; st++)
			text_printf(t, "%s{sink=\"%s\",stream=\"%s\"} %llu\n", name, sink_labels[s],
			            sink_stream_name((enum sink_stream)st),
			            (unsigned long long)atomic_load_explicit(&values[s][st],
			                                                     memory_order_relaxed));
}

int metrics_render(char *buf, size_t cap)
{
	struct text t = {.buf = buf, .cap = cap};

	if (cap == 0)
		return -ENOSPC;
	for (int c = 0; c < METRIC__COUNT; c++) {
		render_header(&t, counter_defs[c].name, "counter", counter_defs[c].help);
		text_printf(&t, "%s %llu\n", counter_defs[c].name,
		            (unsigned long long)metrics_get((enum metrics_counter)c));
	}
	render_header(&t, "clickd_http_requests_total", "counter",
	              "HTTP responses sent on the collect listeners, by status code.");
	for (size_t i = 0; i < STATUS_SLOTS; i++) {
		uint64_t v = atomic_load_explicit(&http_status[i], memory_order_relaxed);
		if (i + 1 < STATUS_SLOTS)
			text_printf(&t, "clickd_http_requests_total{status=\"%d\"} %llu\n",
			            known_statuses[i], (unsigned long long)v);
		else
			text_printf(&t, "clickd_http_requests_total{status=\"other\"} %llu\n",
			            (unsigned long long)v);
	}
	render_header(&t, "clickd_dead_letters_total", "counter",
	              "Beacons written to the dead-letter output, by reason class.");
	for (int r = 0; r < METRICS_DL__COUNT; r++)
		text_printf(&t, "clickd_dead_letters_total{reason=\"%s\"} %llu\n",
		            dead_letter_labels[r],
		            (unsigned long long)atomic_load_explicit(&dead_letters[r],
		                                                     memory_order_relaxed));
	render_sink_family(&t, "clickd_records_out_total",
	                   "Records a sink has taken for good (file: written; kafka: delivered).",
	                   sink_out);
	render_sink_family(&t, "clickd_sink_failures_total",
	                   "Records a sink failed to write or deliver.", sink_failed);
	render_header(&t, "clickd_sessions_ended_total", "counter",
	              "Sessions closed, by end_reason (the touchpoint record's).");
	for (int r = 0; r < METRICS_SESSION_END_REASONS; r++)
		text_printf(&t, "clickd_sessions_ended_total{reason=\"%s\"} %llu\n",
		            session_end_labels[r],
		            (unsigned long long)atomic_load_explicit(&sessions_ended[r],
		                                                     memory_order_relaxed));
	for (int g = 0; g < GAUGE__COUNT; g++) {
		render_header(&t, gauge_defs[g].name, "gauge", gauge_defs[g].help);
		text_printf(&t, "%s %lld\n", gauge_defs[g].name,
		            (long long)metrics_gauge_get((enum metrics_gauge)g));
	}
	render_header(&t, "clickd_kafka_queue_depth", "gauge",
	              "Messages waiting in the Kafka producer queue.");
	text_printf(&t, "clickd_kafka_queue_depth %lld\n",
	            (long long)atomic_load_explicit(&kafka_queue_depth, memory_order_relaxed));
	if (t.overflow)
		return -ENOSPC;
	return (int)t.len;
}
