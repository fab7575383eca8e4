/*
 * metrics.h - process-wide counters and gauges, rendered as Prometheus text on /metrics.
 *
 * Every metric is declared once in the tables below (name, help); rendering and the docs
 * come from them. Counters are relaxed C11 atomics: any thread adds, the admin listener
 * reads on scrape. Cheap enough for the hot path (one uncontended atomic add per batch).
 */
#ifndef CLICKD_METRICS_H
#define CLICKD_METRICS_H

#include "clickd/sink.h"

#include <stddef.h>
#include <stdint.h>

/* Plain counters: id, Prometheus name, help. */
#define METRICS_COUNTERS(X)                                                                        \
	X(EVENTS_IN, "clickd_events_in_total", "Beacons decoded into events and accepted.")        \
	X(BYTES_IN, "clickd_bytes_in_total",                                                       \
	  "Bytes received on the collect listeners (HTTP request bytes and UDP datagrams).")       \
	X(HTTP_CONNECTIONS, "clickd_http_connections_total", "HTTP connections accepted.")         \
	X(HTTP_CONNECTIONS_REFUSED, "clickd_http_connections_refused_total",                       \
	  "HTTP connections closed at once because http.max_connections were open.")               \
	X(HTTP_IDLE_TIMEOUTS, "clickd_http_idle_timeouts_total",                                   \
	  "HTTP connections closed after http.idle_timeout_ms without a complete request.")        \
	X(UDP_DATAGRAMS, "clickd_udp_datagrams_total", "UDP datagrams received.")                  \
	X(UDP_DROPS, "clickd_udp_drops_total",                                                     \
	  "UDP beacons clickd read and then gave up on: at shutdown, the rings to the shards "     \
	  "still full after shutdown.drain_timeout_ms. (A full ring otherwise pauses reading: "    \
	  "see clickd_udp_backpressure_total.)")                                                   \
	X(UDP_BACKPRESSURE, "clickd_udp_backpressure_total",                                       \
	  "Times a UDP datagram had to wait for room in a ring to a shard: reading pauses until "  \
	  "it is in, and the kernel's receive buffer (udp.recv_buffer_bytes) holds what arrives "  \
	  "meanwhile.")                                                                            \
	X(UDP_KERNEL_DROPS, "clickd_udp_kernel_drops_total",                                       \
	  "UDP datagrams the kernel dropped on clickd's sockets before they were read, mostly "    \
	  "because the receive buffer (udp.recv_buffer_bytes) was full (SO_MEMINFO, sampled "      \
	  "every 250 ms).")                                                                        \
	X(UDP_TRUNCATED, "clickd_udp_truncated_total",                                             \
	  "UDP datagrams longer than udp.max_datagram_bytes, dead-lettered.")                      \
	X(BACKPRESSURE_503, "clickd_backpressure_total",                                           \
	  "Beacons refused with 503 because a ring to a shard (or a sink queue) was full.")        \
	X(DUPLICATES, "clickd_duplicates_total",                                                   \
	  "Events dropped as duplicates: same app_id and eid (or same payload without eid) "       \
	  "within dedup.window_s.")                                                                \
	X(DEDUP_EVICTED, "clickd_dedup_evicted_total",                                             \
	  "Fingerprints forgotten before dedup.window_s passed because dedup.max_entries was "     \
	  "reached: a duplicate arriving later than that is not caught.")                          \
	X(SESSIONS_STARTED, "clickd_sessions_started_total", "Sessions opened.")                   \
	X(EVENTS_WITHOUT_SESSION, "clickd_events_without_session_total",                           \
	  "Events written without a session: no visitor ID (GPC/DNT without vid, UDP without "     \
	  "vid).")                                                                                 \
	X(REVENUE_OTHER_CURRENCY, "clickd_revenue_other_currency_total",                           \
	  "Conversions whose revenue was not added to their session's: another currency than the " \
	  "session's first.")                                                                      \
	X(SHARD_SINK_FULL, "clickd_shard_sink_full_total",                                         \
	  "Records a shard had to hold back because the sink answered 'full'; it stops taking "    \
	  "events until they are written (back-pressure to ingest).")

/* Gauges: id, Prometheus name, help. Any thread adds deltas. */
#define METRICS_GAUGES(X)                                                                          \
	X(SESSIONS_OPEN, "clickd_sessions_open", "Sessions open now, over all shards.")            \
	X(VISITORS, "clickd_visitors_remembered",                                                  \
	  "Visitors remembered for session_index (bounded by session.max_visitors).")              \
	X(DEDUP_ENTRIES, "clickd_dedup_entries",                                                   \
	  "Event fingerprints held for deduplication (bounded by dedup.max_entries per shard).")   \
	X(RING_EVENTS, "clickd_ring_events",                                                       \
	  "Events waiting in the rings between ingest threads and shards.")                        \
	X(DEDUP_COVERED, "clickd_dedup_window_covered_seconds",                                    \
	  "How far back duplicates are caught now, the least over shards: dedup.window_s, or "     \
	  "less while dedup.max_entries is full (the age of the oldest fingerprint kept).")

enum metrics_counter {
#define METRICS_COUNTER_ENUM(id, name, help) METRIC_##id,
	METRICS_COUNTERS(METRICS_COUNTER_ENUM)
#undef METRICS_COUNTER_ENUM
	    METRIC__COUNT
};

enum metrics_gauge {
#define METRICS_GAUGE_ENUM(id, name, help) GAUGE_##id,
	METRICS_GAUGES(METRICS_GAUGE_ENUM)
#undef METRICS_GAUGE_ENUM
	    GAUGE__COUNT
};

/* Session end reasons (clickd_sessions_ended_total{reason}); the order of
 * enum session_end_reason. */
#define METRICS_SESSION_END_REASONS 5

/* Dead letters are counted per reason class; the record itself carries the full reason. */
#define METRICS_DEAD_LETTER_REASONS(X)                                                             \
	X(MALFORMED, "malformed")                                                                  \
	X(NOT_UTF8, "not_utf8")                                                                    \
	X(TOO_LARGE, "too_large")                                                                  \
	X(UNSUPPORTED, "unsupported")

enum metrics_dead_letter_reason {
#define METRICS_DL_ENUM(id, label) METRICS_DL_##id,
	METRICS_DEAD_LETTER_REASONS(METRICS_DL_ENUM)
#undef METRICS_DL_ENUM
	    METRICS_DL__COUNT
};

enum metrics_sink_kind { METRICS_SINK_FILE = 0, METRICS_SINK_KAFKA, METRICS_SINK__COUNT };

void metrics_add(enum metrics_counter c, uint64_t n);
uint64_t metrics_get(enum metrics_counter c);
void metrics_gauge_add(enum metrics_gauge g, int64_t delta);
void metrics_gauge_set(enum metrics_gauge g, int64_t value);
int64_t metrics_gauge_get(enum metrics_gauge g);
/* clickd_sessions_ended_total{reason}: reason is an enum session_end_reason. */
void metrics_session_ended(int reason, uint64_t n);

/* clickd_http_requests_total{status="..."}: responses by status code. */
void metrics_http_status(int status);
/* clickd_dead_letters_total{reason="..."}. */
void metrics_dead_letter(enum metrics_dead_letter_reason reason);
/* clickd_records_out_total{sink,stream}: records the sink has taken for good (file:
 * written; Kafka: delivery report said delivered). */
void metrics_sink_out(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n);
/* clickd_sink_failures_total{sink,stream}: records a sink failed to deliver. */
void metrics_sink_failed(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n);
/* clickd_kafka_queue_depth gauge: messages waiting in librdkafka. */
void metrics_set_kafka_queue(int64_t depth);

uint64_t metrics_sink_out_get(enum metrics_sink_kind sink, enum sink_stream stream);
uint64_t metrics_sink_failed_get(enum metrics_sink_kind sink, enum sink_stream stream);

/* Renders every metric in Prometheus text format into buf. Returns the length, or
 * -ENOSPC when buf is too small. */
int metrics_render(char *buf, size_t cap);

#endif
