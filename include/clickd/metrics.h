/*
 * metrics.h - process-wide counters, gauges and histograms, rendered as Prometheus text on
 * /metrics.
 *
 * Every metric is declared once in the tables below (name, help; bucket bounds for the
 * histograms); rendering comes from them, and tests/integration/test_metrics.py holds
 * README's list to /metrics. Counters and histograms are per thread (STYLE rule 7): each
 * thread that counts gets a block of its own on its first call, adds to it without a locked
 * instruction and without sharing a cache line with another thread, and a scrape sums the
 * blocks. A counting call costs a thread-local load and a plain add (a histogram: plus a
 * search over at most METRICS_BUCKETS_MAX bounds), so ingest threads and shards may count
 * per event. Gauges are single relaxed atomics (set or moved by deltas a few times a
 * second). Any thread may call any function here.
 */
#ifndef CLICKD_METRICS_H
#define CLICKD_METRICS_H

#include "clickd/sink.h"

#include <stdbool.h>
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
	X(HTTP_SLOW_READERS, "clickd_http_slow_readers_total",                                     \
	  "HTTP connections closed because the client did not read its answers: a write was "      \
	  "still waiting for it after http.idle_timeout_ms.")                                      \
	X(BEACONS_REPAIRED, "clickd_beacons_repaired_total",                                       \
	  "Beacons accepted with text repaired: invalid UTF-8 (limits.invalid_utf8=replace) or "   \
	  "control characters (limits.control_chars=replace) replaced with U+FFFD, or a "          \
	  "User-Agent header repaired.")                                                           \
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
	X(SESSIONS_RESTORED, "clickd_sessions_restored_total",                                     \
	  "Open sessions restored from session.state_file at start.")                              \
	X(EVENTS_WITHOUT_SESSION, "clickd_events_without_session_total",                           \
	  "Events written without a session: no visitor ID (GPC/DNT without vid, UDP without "     \
	  "vid).")                                                                                 \
	X(REVENUE_OTHER_CURRENCY, "clickd_revenue_other_currency_total",                           \
	  "Conversions whose revenue was not added to their session's: another currency than the " \
	  "session's first.")                                                                      \
	X(RELOADS_APPLIED, "clickd_reloads_applied_total",                                         \
	  "SIGHUP reloads that were applied (keys that need a restart are named in the log).")     \
	X(RELOADS_REFUSED, "clickd_reloads_refused_total",                                         \
	  "SIGHUP reloads refused (a bad config or source list): the old config keeps running.")   \
	X(SHARD_SINK_FULL, "clickd_shard_sink_full_total",                                         \
	  "Records a shard had to hold back because the sink answered 'full'; it stops taking "    \
	  "events until they are written (back-pressure to ingest).")                              \
	X(ATTRIBUTION_RECORDS, "clickd_attribution_records_total",                                 \
	  "Attribution records written, one per conversion (e=cv, or an event name in "            \
	  "attribution.conversion_events).")                                                       \
	X(CONVERSIONS_WITHOUT_PATH, "clickd_attribution_conversions_without_path_total",           \
	  "Conversions written with an empty touchpoints array: no visitor ID, or no touchpoint "  \
	  "of the visitor (or its user's devices) left within attribution.lookback_days.")         \
	X(ATTRIBUTION_EVICTED, "clickd_attribution_evicted_total",                                 \
	  "Visitors whose attribution path was forgotten before attribution.lookback_days "        \
	  "passed, least recently seen first: the shard's share of session.max_visitors or of "    \
	  "attribution.max_stored_touchpoints was full.")                                          \
	X(ROLLUP_ROWS, "clickd_rollup_rows_total",                                                 \
	  "Rollup records written: one per closed minute, shard and (app, channel, source, "       \
	  "medium, campaign).")                                                                    \
	X(ROLLUP_LATE, "clickd_rollup_late_total",                                                 \
	  "Records counted in a later minute's rollup than their own, because they arrived after " \
	  "their minute closed (rollups.grace_s); each row's late says how many.")                 \
	X(ROLLUP_OTHER, "clickd_rollup_other_total",                                               \
	  "Records counted in a minute's (other) rollup row because rollups.max_keys_per_minute "  \
	  "keys were already in that minute.")                                                     \
	X(SPOOL_SPOOLED, "clickd_spool_records_spooled_total",                                     \
	  "Records the Kafka sink wrote to the disk spool (spool.dir): while Kafka was away or "   \
	  "its queue past spool.high_water, and failed deliveries.")                               \
	X(SPOOL_REPLAYED, "clickd_spool_records_replayed_total",                                   \
	  "Records read back from the spool and reported delivered by Kafka.")                     \
	X(SPOOL_FULL_REFUSALS, "clickd_spool_full_refusals_total",                                 \
	  "Records the spool refused because it held spool.max_bytes (the sink answered 'full', "  \
	  "ingest 503); a record retried is counted each time.")                                   \
	X(SPOOL_CORRUPT_FRAMES, "clickd_spool_corrupt_frames_total",                               \
	  "Corrupt regions of spool segments skipped on replay (their records are lost).")         \
	X(SPOOL_TORN_TAILS_CUT, "clickd_spool_torn_tails_cut_total",                               \
	  "Torn last frames cut off the newest spool segment at start (a crash mid-write).")       \
	X(PROTOCOL_JSON_DROPPED, "clickd_protocol_json_dropped_total",                             \
	  "Contexts or properties of tracker events left out of their event because its string "   \
	  "arena (8 KiB with the URL, referrer and user agent) could not hold them; the event "    \
	  "itself was kept.")                                                                      \
	X(HTTP_GZIP_BODIES, "clickd_http_gzip_bodies_total",                                       \
	  "POST bodies sent with Content-Encoding: gzip and decompressed (those refused are "      \
	  "dead letters).")                                                                        \
	X(REDIRECTS, "clickd_redirects_total",                                                     \
	  "Click redirects (GET /r) recorded and answered 302.")                                   \
	X(REDIRECTS_REFUSED, "clickd_redirects_refused_total",                                     \
	  "Click redirects refused: no target, a target not allowed by http.redirect_allow or "    \
	  "not an http(s) URL (400), or redirects off (403).")                                     \
	X(REAL_IP_FALLBACK, "clickd_http_real_ip_fallback_total",                                  \
	  "Requests from a trusted proxy whose http.real_ip_header was missing, repeated or "      \
	  "not one IP address: the peer address was used.")                                        \
	X(ACK_TIMEOUTS, "clickd_ack_timeouts_total",                                               \
	  "kafka.ack_mode=kafka: requests answered 503 because their events were not all "         \
	  "delivered or spooled within kafka.ack_timeout_ms.")                                     \
	X(ACK_FAILURES, "clickd_ack_failures_total",                                               \
	  "kafka.ack_mode=kafka: requests answered 503 because one of their events failed for "    \
	  "good (neither delivered nor spooled).")

/* Gauges: id, Prometheus name, scale, help. Any thread sets them or adds deltas. The value
 * is an integer; the scrape shows it divided by scale (a ratio is kept in millionths). */
#define METRICS_GAUGES(X)                                                                          \
	X(SESSIONS_OPEN, "clickd_sessions_open", 1, "Sessions open now, over all shards.")         \
	X(VISITORS, "clickd_visitors_remembered", 1,                                               \
	  "Visitors remembered for session_index (bounded by session.max_visitors).")              \
	X(DEDUP_ENTRIES, "clickd_dedup_entries", 1,                                                \
	  "Event fingerprints held for deduplication (bounded by dedup.max_entries per shard).")   \
	X(RING_EVENTS, "clickd_ring_events", 1,                                                    \
	  "Events waiting in the rings between ingest threads and shards.")                        \
	X(RING_FILL_PPM, "clickd_ring_fill_ratio", 1000000,                                        \
	  "The fullest ring between an ingest thread and a shard: events waiting over its "        \
	  "pipeline.ring_slots (0 to 1; at 1 ingest answers 503 and UDP stops reading).")          \
	X(DEDUP_COVERED, "clickd_dedup_window_covered_seconds", 1,                                 \
	  "How far back duplicates are caught now, the least over shards: dedup.window_s, or "     \
	  "less while dedup.max_entries is full (the age of the oldest fingerprint kept).")        \
	X(KAFKA_QUEUE, "clickd_kafka_queue_depth", 1,                                              \
	  "Messages in the Kafka producer's queue: not yet sent, or sent and not yet "             \
	  "acknowledged (0 with the file sink).")                                                  \
	X(ATTRIBUTION_PATHS, "clickd_attribution_paths", 1,                                        \
	  "Visitors with an attribution path remembered (bounded by session.max_visitors).")       \
	X(ATTRIBUTION_TOUCHPOINTS, "clickd_attribution_touchpoints", 1,                            \
	  "Touchpoints held in attribution paths (bounded by "                                     \
	  "attribution.max_stored_touchpoints).")                                                  \
	X(SPOOL_BYTES, "clickd_spool_bytes", 1,                                                    \
	  "Bytes of the Kafka sink's disk spool segments (bounded by spool.max_bytes).")           \
	X(SPOOL_SEGMENTS, "clickd_spool_segments", 1, "Segment files in the disk spool.")          \
	X(SPOOL_ACTIVE, "clickd_spool_active", 1,                                                  \
	  "1 while new Kafka records go to the spool instead of librdkafka: Kafka unreachable, "   \
	  "its queue past spool.high_water, or the spool not yet replayed.")                       \
	X(SPOOL_FULL, "clickd_spool_full", 1,                                                      \
	  "1 from the first record the full spool refused until Kafka took records back (a "       \
	  "segment deleted), and while the spool's disk fails: ingest answers 503 and /readyz "    \
	  "is not ready.")                                                                         \
	X(ACK_PENDING, "clickd_ack_pending", 1,                                                    \
	  "kafka.ack_mode=kafka: HTTP requests waiting for their events to be delivered to Kafka " \
	  "or spooled before they are answered (bounded by kafka.ack_max_pending per ingest "      \
	  "thread).")

/*
 * Histograms: id, Prometheus name, label (one `key="value"` pair, or ""), bucket upper
 * bounds in microseconds (a METRICS_BOUNDS_* list, at most METRICS_BUCKETS_MAX, ascending),
 * help. Several ids may share a name, one series per label value: they must follow one
 * another and have the same bounds and help. Observations are in microseconds; the scrape
 * shows seconds.
 */
#define METRICS_BUCKETS_MAX 20
#define METRICS_BOUNDS_HTTP_US                                                                     \
	50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000
#define METRICS_BOUNDS_SINK_US                                                                     \
	1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,  \
	    10000000, 30000000, 60000000, 120000000, 300000000
#define METRICS_HELP_EVENT_TO_SINK                                                                 \
	"From an event's arrival (received_at) to when its record is taken for good: handed to "   \
	"the file sink, or reported delivered by Kafka. Records that went through the Kafka "      \
	"sink's disk spool are not observed (see clickd_spool_*), nor, in kafka.ack_mode=kafka, "  \
	"records whose request no longer waits (timed out, client gone)."
#define METRICS_HISTOGRAMS(X)                                                                      \
	X(HTTP_REQUEST_DURATION, "clickd_http_request_duration_seconds", "",                       \
	  METRICS_BOUNDS_HTTP_US,                                                                  \
	  "From reading a request's last bytes to its answer queued for sending (the answers to "  \
	  "the requests of one read leave together), on the collect listeners.")                   \
	X(EVENT_TO_SINK_FILE, "clickd_event_to_sink_seconds", "sink=\"file\"",                     \
	  METRICS_BOUNDS_SINK_US, METRICS_HELP_EVENT_TO_SINK)                                      \
	X(EVENT_TO_SINK_KAFKA, "clickd_event_to_sink_seconds", "sink=\"kafka\"",                   \
	  METRICS_BOUNDS_SINK_US, METRICS_HELP_EVENT_TO_SINK)

enum metrics_counter {
#define METRICS_COUNTER_ENUM(id, name, help) METRIC_##id,
	METRICS_COUNTERS(METRICS_COUNTER_ENUM)
#undef METRICS_COUNTER_ENUM
	    METRIC__COUNT
};

enum metrics_gauge {
#define METRICS_GAUGE_ENUM(id, name, scale, help) GAUGE_##id,
	METRICS_GAUGES(METRICS_GAUGE_ENUM)
#undef METRICS_GAUGE_ENUM
	    GAUGE__COUNT
};

enum metrics_histogram {
#define METRICS_HISTOGRAM_ENUM(id, name, label, bounds, help) HIST_##id,
	METRICS_HISTOGRAMS(METRICS_HISTOGRAM_ENUM)
#undef METRICS_HISTOGRAM_ENUM
	    HIST__COUNT
};

/* Session end reasons (clickd_sessions_ended_total{reason}); the order of
 * enum session_end_reason. */
#define METRICS_SESSION_END_REASONS 5

/* Dead letters are counted per reason class; the record itself carries the full reason. */
#define METRICS_DEAD_LETTER_REASONS(X)                                                             \
	X(MALFORMED, "malformed")                                                                  \
	X(NOT_UTF8, "not_utf8")                                                                    \
	X(TOO_LARGE, "too_large")                                                                  \
	X(UNSUPPORTED, "unsupported")                                                              \
	X(UNAUTHORIZED, "unauthorized")

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
/* clickd_protocol_events_in_total{protocol}: events accepted, by protocol (p is an enum
 * event_protocol; clickd_events_in_total counts them all). */
void metrics_protocol_events_in(int protocol, uint64_t n);
uint64_t metrics_protocol_events_in_get(int protocol);
/* clickd_protocol_dead_letters_total{protocol}: dead letters by the protocol named (an
 * EVENT_PROTOCOLS name; another name is not counted here). */
void metrics_protocol_dead_letter(const char *protocol);
/* clickd_records_out_total{sink,stream}: records the sink has taken for good (file:
 * written; Kafka: delivery report said delivered). */
void metrics_sink_out(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n);
/* clickd_sink_failures_total{sink,stream}: records a sink failed to deliver. */
void metrics_sink_failed(enum metrics_sink_kind sink, enum sink_stream stream, uint64_t n);
/* The clickd_kafka_queue_depth gauge (GAUGE_KAFKA_QUEUE). */
void metrics_set_kafka_queue(int64_t depth);

uint64_t metrics_sink_out_get(enum metrics_sink_kind sink, enum sink_stream stream);
uint64_t metrics_sink_failed_get(enum metrics_sink_kind sink, enum sink_stream stream);

/* Adds n observations of value_us to a histogram (n 0: nothing). */
void metrics_observe(enum metrics_histogram h, uint64_t value_us, uint64_t n);
/* Observations so far (every bucket, +Inf included) and their sum, over all threads. */
uint64_t metrics_histogram_count(enum metrics_histogram h);
uint64_t metrics_histogram_sum_us(enum metrics_histogram h);

/* clickd_http_request_duration_seconds: n requests of one read answered duration_ns after
 * the read (the caller's monotonic clock, taken once per read). */
void metrics_http_answered(uint64_t duration_ns, uint64_t n);

/* clickd_event_to_sink_seconds: one observation of the time from received_at_ms (the
 * event's arrival, wall clock) to now, in h (HIST_EVENT_TO_SINK_FILE or _KAFKA). A
 * received_at_ms of 0 or less (no event: touchpoints, dead letters) is not observed; a
 * wall clock stepped back counts as no delay. Sinks call it when they take a record for
 * good (sink.h's write carries the time). */
void metrics_event_to_sink(enum metrics_histogram h, int64_t received_at_ms);

/* Renders every metric in Prometheus text format into buf. Returns the length, or
 * -ENOSPC when buf is too small. */
int metrics_render(char *buf, size_t cap);

#endif
