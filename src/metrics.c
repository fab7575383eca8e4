/*
 * metrics.c - counters and histograms per thread, gauges as atomics, rendered as Prometheus
 * text (see metrics.h).
 *
 * Per-thread blocks (STYLE rule 7). Every counter, labelled counter and histogram bucket is
 * one cell of a flat array of uint64 (enum cell gives each family its range), and each
 * thread that counts owns a block of those cells. Its first counting call attaches one: a
 * block left free by a thread that ended (so that thread's counts carry on in the sums), or
 * a new one pushed on a list that never shrinks. Only the owner writes a block, so adding
 * is a relaxed load and a relaxed store, not a locked read-modify-write, and a block is
 * 64-byte aligned and sized, so no two threads write one cache line. A scrape walks the
 * list and sums, with relaxed loads.
 *
 * Lifetime: a pthread key's destructor gives the block back (in_use false, release) when
 * its thread ends; the next thread to take it acquires, so the old owner's last adds come
 * before the new owner's first. Blocks are never freed (reachable from `blocks`, so not a
 * leak): there are as many as threads ever counted at the same time, each about 1 KiB. A
 * thread that cannot get a block (no memory) adds to the shared block with atomic adds.
 *
 * Relaxed ordering is enough: each cell is independent and a scrape only needs values that
 * were true at some moment. A histogram's _count is the sum of its buckets as read by the
 * same scrape, so it always equals the +Inf bucket and the buckets are always cumulative;
 * its _sum is read apart and may be off by the observations of that instant.
 */
#include "clickd/metrics.h"

#include "clickd/event.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct counter_def {
	const char *name;
	const char *help;
};

struct gauge_def {
	const char *name;
	int64_t scale;
	const char *help;
};

struct histogram_def {
	const char *name;
	const char *label;
	const char *help;
	uint64_t bounds_us[METRICS_BUCKETS_MAX];
	size_t bound_count;
};

static const struct counter_def counter_defs[METRIC__COUNT] = {
#define METRICS_COUNTER_DEF(id, n, h) [METRIC_##id] = {n, h},
    METRICS_COUNTERS(METRICS_COUNTER_DEF)
#undef METRICS_COUNTER_DEF
};

static const struct gauge_def gauge_defs[GAUGE__COUNT] = {
#define METRICS_GAUGE_DEF(id, n, s, h) [GAUGE_##id] = {n, s, h},
    METRICS_GAUGES(METRICS_GAUGE_DEF)
#undef METRICS_GAUGE_DEF
};

/* More than METRICS_BUCKETS_MAX bounds is a compile error (excess initializer elements). */
static const struct histogram_def histogram_defs[HIST__COUNT] = {
#define METRICS_HISTOGRAM_DEF(id, n, l, b, h)                                                      \
	[HIST_##id] = {n, l, h, {b}, sizeof((uint64_t[]){b}) / sizeof(uint64_t)},
    METRICS_HISTOGRAMS(METRICS_HISTOGRAM_DEF)
#undef METRICS_HISTOGRAM_DEF
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
static const int known_statuses[] = {200, 204, 302, 400, 401, 403, 404, 405, 408,
                                     411, 413, 414, 415, 431, 500, 501, 503, 505};
#define STATUS_SLOTS (sizeof(known_statuses) / sizeof(known_statuses[0]) + 1)

/* A histogram's cells: one per bucket (the last one used is +Inf), then the sum in us. */
#define HIST_SUM   (METRICS_BUCKETS_MAX + 1)
#define HIST_CELLS (METRICS_BUCKETS_MAX + 2)
#define SINK_CELLS (METRICS_SINK__COUNT * SINK_STREAM_COUNT)

enum cell {
	CELL_COUNTERS = 0,
	CELL_HTTP_STATUS = CELL_COUNTERS + METRIC__COUNT,
	CELL_DEAD_LETTERS = CELL_HTTP_STATUS + STATUS_SLOTS,
	CELL_SINK_OUT = CELL_DEAD_LETTERS + METRICS_DL__COUNT,
	CELL_SINK_FAILED = CELL_SINK_OUT + SINK_CELLS,
	CELL_SESSIONS_ENDED = CELL_SINK_FAILED + SINK_CELLS,
	CELL_PROTOCOL_EVENTS = CELL_SESSIONS_ENDED + METRICS_SESSION_END_REASONS,
	CELL_PROTOCOL_DEAD_LETTERS = CELL_PROTOCOL_EVENTS + EVENT_PROTOCOL__COUNT,
	CELL_HISTOGRAMS = CELL_PROTOCOL_DEAD_LETTERS + EVENT_PROTOCOL__COUNT,
	CELL__COUNT = CELL_HISTOGRAMS + HIST__COUNT * HIST_CELLS
};

struct metrics_block {
	_Alignas(64) _Atomic uint64_t cells[CELL__COUNT];
	struct metrics_block *next; /* set before the block is published, then constant */
	_Atomic bool in_use;
};

static _Atomic(struct metrics_block *) blocks; /* every block ever made, newest first */
static struct metrics_block shared_block;      /* for threads without a block: atomic adds */
static _Thread_local struct metrics_block *own_block;
static pthread_once_t block_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t block_key;
static bool block_key_made;

static _Atomic int64_t gauges[GAUGE__COUNT];

/* ---- per-thread blocks ---- */

static void block_release(void *arg)
{
	struct metrics_block *b = arg;

	own_block = NULL; /* a later count in this thread's exit attaches again */
	atomic_store_explicit(&b->in_use, false, memory_order_release);
}

static void block_key_make(void)
{
	block_key_made = pthread_key_create(&block_key, block_release) == 0;
}

/* A free block, or a new one on the list. */
static struct metrics_block *block_take(void)
{
	struct metrics_block *b = atomic_load_explicit(&blocks, memory_order_acquire);

	for (; b; b = b->next) {
		bool free_block = false;
		if (atomic_compare_exchange_strong_explicit(
		        &b->in_use, &free_block, true, memory_order_acquire, memory_order_relaxed))
			return b;
	}
	b = aligned_alloc(_Alignof(struct metrics_block), sizeof(*b));
	if (!b)
		return NULL;
	memset(b, 0, sizeof(*b));
	atomic_init(&b->in_use, true);
	b->next = atomic_load_explicit(&blocks, memory_order_relaxed);
	/* acq_rel: a scrape that sees this block sees the blocks before it and their `next`. */
	while (!atomic_compare_exchange_weak_explicit(&blocks, &b->next, b, memory_order_acq_rel,
	                                              memory_order_relaxed))
		;
	return b;
}

static struct metrics_block *block_attach(void)
{
	struct metrics_block *b;

	pthread_once(&block_key_once, block_key_make);
	if (!block_key_made || !(b = block_take()))
		return NULL;
	if (pthread_setspecific(block_key, b) != 0) {
		atomic_store_explicit(&b->in_use, false, memory_order_release);
		return NULL;
	}
	own_block = b;
	return b;
}

/* The owner's add: nobody else writes the cell, so no locked instruction is needed. */
static inline void block_add(struct metrics_block *b, size_t cell, uint64_t n)
{
	atomic_store_explicit(&b->cells[cell],
	                      atomic_load_explicit(&b->cells[cell], memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static void cell_add_slow(size_t cell, uint64_t n)
{
	struct metrics_block *b = block_attach();

	if (b)
		block_add(b, cell, n);
	else
		atomic_fetch_add_explicit(&shared_block.cells[cell], n, memory_order_relaxed);
}

static inline void cell_add(size_t cell, uint64_t n)
{
	struct metrics_block *b = own_block;

	if (__builtin_expect(b == NULL, 0)) {
		cell_add_slow(cell, n);
		return;
	}
	block_add(b, cell, n);
}

static uint64_t cell_sum(size_t cell)
{
	uint64_t sum = atomic_load_explicit(&shared_block.cells[cell], memory_order_relaxed);

	for (struct metrics_block *b = atomic_load_explicit(&blocks, memory_order_acquire); b;
	     b = b->next)
		sum += atomic_load_explicit(&b->cells[cell], memory_order_relaxed);
	return sum;
}

static size_t sink_cell(enum metrics_sink_kind sink, enum sink_stream stream)
{
	return (size_t)sink * SINK_STREAM_COUNT + (size_t)stream;
}

/* ---- counters ---- */

void metrics_add(enum metrics_counter c, uint64_t n)
{
	cell_add(CELL_COUNTERS + (size_t)c, n);
}

uint64_t metrics_get(enum metrics_counter c)
{
	return cell_sum(CELL_COUNTERS + (size_t)c);
}

void metrics_session_ended(int reason, uint64_t n)
{
	if (reason >= 0 && reason < METRICS_SESSION_END_REASONS)
		cell_add(CELL_SESSIONS_ENDED + (size_t)reason, n);
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
	cell_add(CELL_HTTP_STATUS + slot, 1);
}

void metrics_dead_letter(enum metrics_dead_letter_reason reason)
{
	cell_add(CELL_DEAD_LETTERS + (size_t)reason, 1);
}

void metrics_protocol_events_in(int protocol, uint64_t n)
{
	if (protocol >= 0 && protocol < EVENT_PROTOCOL__COUNT)
		cell_add(CELL_PROTOCOL_EVENTS + (size_t)protocol, n);
}

uint64_t metrics_protocol_events_in_get(int protocol)
{
	if (protocol < 0 || protocol >= EVENT_PROTOCOL__COUNT)
		return 0;
	return cell_sum(CELL_PROTOCOL_EVENTS + (size_t)protocol);
}

void metrics_protocol_dead_letter(const char *protocol)
{
	int p = event_protocol_of(protocol);

	if (p >= 0)
		cell_add(CELL_PROTOCOL_DEAD_LETTERS + (size_t)p, 1);
}

void metrics_sink_out(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n)
{
	cell_add(CELL_SINK_OUT + sink_cell(sink, stream), n);
}

void metrics_sink_failed(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n)
{
	cell_add(CELL_SINK_FAILED + sink_cell(sink, stream), n);
}

uint64_t metrics_sink_out_get(enum metrics_sink_kind sink, enum sink_stream stream)
{
	return cell_sum(CELL_SINK_OUT + sink_cell(sink, stream));
}

uint64_t metrics_sink_failed_get(enum metrics_sink_kind sink, enum sink_stream stream)
{
	return cell_sum(CELL_SINK_FAILED + sink_cell(sink, stream));
}

/* ---- gauges ---- */

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

void metrics_set_kafka_queue(int64_t depth)
{
	metrics_gauge_set(GAUGE_KAFKA_QUEUE, depth);
}

/* ---- histograms ---- */

static size_t hist_cell(enum metrics_histogram h)
{
	return CELL_HISTOGRAMS + (size_t)h * HIST_CELLS;
}

void metrics_observe(enum metrics_histogram h, uint64_t value_us, uint64_t n)
{
	const struct histogram_def *d = &histogram_defs[h];
	size_t bucket = 0;

	if (n == 0)
		return;
	/* Bounds are few and small values are the common case: a linear search ends early. */
	while (bucket < d->bound_count && value_us > d->bounds_us[bucket])
		bucket++;
	cell_add(hist_cell(h) + bucket, n);
	cell_add(hist_cell(h) + HIST_SUM, value_us * n);
}

uint64_t metrics_histogram_count(enum metrics_histogram h)
{
	uint64_t count = 0;

	for (size_t i = 0; i <= histogram_defs[h].bound_count; i++)
		count += cell_sum(hist_cell(h) + i);
	return count;
}

uint64_t metrics_histogram_sum_us(enum metrics_histogram h)
{
	return cell_sum(hist_cell(h) + HIST_SUM);
}

void metrics_http_answered(uint64_t duration_ns, uint64_t n)
{
	metrics_observe(HIST_HTTP_REQUEST_DURATION, duration_ns / 1000, n);
}

/* ---- event to sink ---- */

static int64_t wall_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void metrics_event_to_sink(enum metrics_histogram h, int64_t received_at_ms)
{
	int64_t delay_ms;

	if (received_at_ms <= 0)
		return;
	delay_ms = wall_clock_ms() - received_at_ms;
	/* The wall clock may step back: such a record counts as no delay at all. */
	metrics_observe(h, delay_ms > 0 ? (uint64_t)delay_ms * 1000 : 0, 1);
}

/* ---- rendering ---- */

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

/* value / scale in decimal without trailing zeros ("0.00005", "300", "0.25"); scale is 1
 * or a power of ten. Exact: no floating point. */
static void format_scaled(char *out, size_t cap, int64_t value, int64_t scale)
{
	uint64_t v = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
	int digits = 0, n;

	for (int64_t s = scale; s > 1; s /= 10)
		digits++;
	if (digits == 0) {
		snprintf(out, cap, "%lld", (long long)value);
		return;
	}
	n = snprintf(out, cap, "%s%llu.%0*llu", value < 0 ? "-" : "",
	             (unsigned long long)(v / (uint64_t)scale), digits,
	             (unsigned long long)(v % (uint64_t)scale));
	if (n <= 0 || (size_t)n >= cap)
		return;
	while (out[n - 1] == '0')
		n--;
	if (out[n - 1] == '.')
		n--;
	out[n] = '\0';
}

static void render_header(struct text *t, const char *name, const char *type, const char *help)
{
	text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_sink_family(struct text *t, const char *name, const char *help, size_t first)
{
	render_header(t, name, "counter", help);
	for (int s = 0; s < METRICS_SINK__COUNT; s++)
		for (int st = 0; st < SINK_STREAM_COUNT; st++)
			text_printf(t, "%s{sink=\"%s\",stream=\"%s\"} %llu\n", name, sink_labels[s],
			            sink_stream_name((enum sink_stream)st),
			            (unsigned long long)cell_sum(
			                first + sink_cell((enum metrics_sink_kind)s,
			                                  (enum sink_stream)st)));
}

static void render_labelled(struct text *t, const char *name, const char *label_name,
                            const char *const *labels, size_t count, size_t first)
{
	for (size_t i = 0; i < count; i++)
		text_printf(t, "%s{%s=\"%s\"} %llu\n", name, label_name, labels[i],
		            (unsigned long long)cell_sum(first + i));
}

/* One histogram series: cumulative buckets, +Inf, _sum and _count (= +Inf). */
static void render_histogram(struct text *t, enum metrics_histogram h)
{
	const struct histogram_def *d = &histogram_defs[h];
	const char *comma = d->label[0] ? "," : "";
	char le[32], sum[32];
	uint64_t count = 0;

	for (size_t i = 0; i <= d->bound_count; i++) {
		count += cell_sum(hist_cell(h) + i);
		if (i < d->bound_count)
			format_scaled(le, sizeof(le), (int64_t)d->bounds_us[i], 1000000);
		else
			strcpy(le, "+Inf");
		text_printf(t, "%s_bucket{%s%sle=\"%s\"} %llu\n", d->name, d->label, comma, le,
		            (unsigned long long)count);
	}
	format_scaled(sum, sizeof(sum), (int64_t)cell_sum(hist_cell(h) + HIST_SUM), 1000000);
	if (d->label[0]) {
		text_printf(t, "%s_sum{%s} %s\n", d->name, d->label, sum);
		text_printf(t, "%s_count{%s} %llu\n", d->name, d->label, (unsigned long long)count);
	} else {
		text_printf(t, "%s_sum %s\n", d->name, sum);
		text_printf(t, "%s_count %llu\n", d->name, (unsigned long long)count);
	}
}

static void render_counters(struct text *t)
{
	for (int c = 0; c < METRIC__COUNT; c++) {
		render_header(t, counter_defs[c].name, "counter", counter_defs[c].help);
		text_printf(t, "%s %llu\n", counter_defs[c].name,
		            (unsigned long long)metrics_get((enum metrics_counter)c));
	}
	render_header(t, "clickd_http_requests_total", "counter",
	              "HTTP responses sent on the collect listeners, by status code.");
	for (size_t i = 0; i < STATUS_SLOTS; i++) {
		uint64_t v = cell_sum(CELL_HTTP_STATUS + i);
		if (i + 1 < STATUS_SLOTS)
			text_printf(t, "clickd_http_requests_total{status=\"%d\"} %llu\n",
			            known_statuses[i], (unsigned long long)v);
		else
			text_printf(t, "clickd_http_requests_total{status=\"other\"} %llu\n",
			            (unsigned long long)v);
	}
	render_header(t, "clickd_dead_letters_total", "counter",
	              "Beacons written to the dead-letter output, by reason class.");
	render_labelled(t, "clickd_dead_letters_total", "reason", dead_letter_labels,
	                METRICS_DL__COUNT, CELL_DEAD_LETTERS);
	{
		const char *protocols[EVENT_PROTOCOL__COUNT];

		for (int p = 0; p < EVENT_PROTOCOL__COUNT; p++)
			protocols[p] = event_protocol_name((enum event_protocol)p);
		render_header(t, "clickd_protocol_events_in_total", "counter",
		              "Events accepted, by the protocol they arrived in.");
		render_labelled(t, "clickd_protocol_events_in_total", "protocol", protocols,
		                EVENT_PROTOCOL__COUNT, CELL_PROTOCOL_EVENTS);
		render_header(t, "clickd_protocol_dead_letters_total", "counter",
		              "Dead letters, by the protocol of the request they came from.");
		render_labelled(t, "clickd_protocol_dead_letters_total", "protocol", protocols,
		                EVENT_PROTOCOL__COUNT, CELL_PROTOCOL_DEAD_LETTERS);
	}
	render_sink_family(t, "clickd_records_out_total",
	                   "Records a sink has taken for good (file: written; kafka: delivered).",
	                   CELL_SINK_OUT);
	render_sink_family(t, "clickd_sink_failures_total",
	                   "Records a sink failed to write or deliver.", CELL_SINK_FAILED);
	render_header(t, "clickd_sessions_ended_total", "counter",
	              "Sessions closed, by end_reason (the touchpoint record's).");
	render_labelled(t, "clickd_sessions_ended_total", "reason", session_end_labels,
	                METRICS_SESSION_END_REASONS, CELL_SESSIONS_ENDED);
}

int metrics_render(char *buf, size_t cap)
{
	struct text t = {.buf = buf, .cap = cap};
	char value[32];

	if (cap == 0)
		return -ENOSPC;
	render_counters(&t);
	for (int g = 0; g < GAUGE__COUNT; g++) {
		render_header(&t, gauge_defs[g].name, "gauge", gauge_defs[g].help);
		format_scaled(value, sizeof(value), metrics_gauge_get((enum metrics_gauge)g),
		              gauge_defs[g].scale);
		text_printf(&t, "%s %s\n", gauge_defs[g].name, value);
	}
	for (int h = 0; h < HIST__COUNT; h++) {
		/* Series sharing a name follow one another under one header. */
		if (h == 0 || strcmp(histogram_defs[h].name, histogram_defs[h - 1].name) != 0)
			render_header(&t, histogram_defs[h].name, "histogram",
			              histogram_defs[h].help);
		render_histogram(&t, (enum metrics_histogram)h);
	}
	if (t.overflow)
		return -ENOSPC;
	return (int)t.len;
}
