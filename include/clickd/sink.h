/*
 * sink.h - where records go: one small interface, several backends (Fluent Bit style).
 *
 * The engine calls sink_write for every record and sink_poll regularly from its loop; a
 * backend never blocks in write or poll. write answers 0 (taken), -EAGAIN (full: try
 * again later, answer the client 503) or another negative code (fatal for that record,
 * which the backend has already counted and logged). flush may block up to its timeout
 * and is for shutdown only. A sink is used from one thread at a time, except where a
 * backend says otherwise (Kafka: write from any number of threads).
 *
 * write also gets the receive time of the event a record comes from (received_at_ms, wall
 * clock; 0 when there is none: touchpoints, dead letters), for the histogram
 * clickd_event_to_sink_seconds: the file sink observes it when it takes the record, the
 * Kafka sink when the delivery report says delivered.
 *
 * write_acked (kafka.ack_mode=kafka, ack.h) is write for a record an HTTP request waits for:
 * when it answers 0 (taken) the sink owns the ack token and completes it, exactly once, when
 * the record is durable (ack_complete durable: delivered, or in the spool as spool.fsync
 * says) or failed for good (ack_complete failed); on any other answer the token stays the
 * caller's (held with the record on -EAGAIN, completed as failed by the caller otherwise).
 * Only backends that can tell durability have it (Kafka); NULL elsewhere.
 */
#ifndef CLICKD_SINK_H
#define CLICKD_SINK_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sink_stream {
	SINK_EVENTS = 0,
	SINK_TOUCHPOINTS,
	SINK_DEAD_LETTERS,
	SINK_ATTRIBUTION, /* one record per conversion (record_attribution_json) */
	SINK_ROLLUPS,     /* per-minute aggregates (record_rollup_json) */
	SINK_STREAM_COUNT
};

/* "events", "touchpoints", "dead_letters", "attribution", "rollups": file name prefixes and
 * metric labels. */
const char *sink_stream_name(enum sink_stream stream);

struct sink;

/* Counts n records of `stream` that the caller (not the sink) had to give up on, in
 * clickd_sink_failures_total{sink,stream}. */
void sink_count_failed(const struct sink *s, enum sink_stream stream, uint64_t n);

struct sink;

struct sink_ops {
	const char *name; /* "file", "kafka": the metric label */
	int (*write)(struct sink *s, enum sink_stream stream, const char *key, size_t key_len,
	             const char *record, size_t record_len, int64_t received_at_ms);
	/* NULL when the backend cannot tell when a record is durable (see above). */
	int (*write_acked)(struct sink *s, enum sink_stream stream, const char *key, size_t key_len,
	                   const char *record, size_t record_len, int64_t received_at_ms,
	                   uint64_t ack_token);
	/* Non-blocking periodic work: delivery reports, rotation by age. Returns 0 or < 0. */
	int (*poll)(struct sink *s, int64_t now_ms);
	/* Pushes everything out, waiting at most timeout_ms (files: completes, fsyncs and
	 * renames the open files). Returns 0, or -ETIMEDOUT (or the disk's -errno) with
	 * records still pending. */
	int (*flush)(struct sink *s, int timeout_ms);
	/* True while the sink can take records (for /readyz). */
	bool (*ready)(struct sink *s);
	void (*free)(struct sink *s);
};

struct sink {
	const struct sink_ops *ops;
};

static inline int sink_write(struct sink *s, enum sink_stream stream, const char *key,
                             size_t key_len, const char *record, size_t record_len,
                             int64_t received_at_ms)
{
	return s->ops->write(s, stream, key, key_len, record, record_len, received_at_ms);
}

/* write, or write_acked when someone waits (ack_token not 0). -ENOTSUP when the backend has
 * no write_acked (the caller still owns the token). */
static inline int sink_write_acked(struct sink *s, enum sink_stream stream, const char *key,
                                   size_t key_len, const char *record, size_t record_len,
                                   int64_t received_at_ms, uint64_t ack_token)
{
	if (ack_token == 0)
		return s->ops->write(s, stream, key, key_len, record, record_len, received_at_ms);
	if (!s->ops->write_acked)
		return -ENOTSUP;
	return s->ops->write_acked(s, stream, key, key_len, record, record_len, received_at_ms,
	                           ack_token);
}

/* ---- file sink: NDJSON files <dir>/<stream>-<UTC start time>-[<tag>-]<seq>.ndjson[.zst] ----
 *
 * A file being written is named `<final name>.open`; it is renamed to its final name only
 * when complete (zstd frame ended, file and directory fsynced): after rotation (by size
 * before a record would pass rotate_bytes, by age in poll), flush and free. So a shipper can
 * take `*.ndjson` / `*.ndjson.zst` safely, and a crash leaves `.open` files. Each .zst file
 * is one zstd frame (`zstd -d`).
 *
 * Completion (fsync, close, rename, directory fsync) runs on a thread of the instance's
 * own: at rotation the writer only writes what is still buffered and hands the file over.
 * At most SINK_FILE_COMPLETIONS_MAX files of an instance wait for completion; while that
 * many wait, a write that would start a new file answers -EAGAIN (full, not a failure: the
 * record is not taken) and poll keeps an aged file open until a later poll. flush hands
 * every open file over and waits up to timeout_ms (< 0: no limit) for every pending
 * completion; it answers -ETIMEDOUT when some are still pending, the disk's -errno when a
 * file could not be written, or could not be completed since the last flush. Writes after
 * it start new files. free waits, without limit, until every file is complete.
 *
 * Records are counted out when taken into the sink's buffer; data waits there at most about
 * a second (pushed by poll) or until the buffer fills. A failing disk makes write answer
 * its -errno for records that no longer fit in the buffer (counted as failures; buffered
 * data is kept and retried) and ready() false. A file that cannot be completed (fsync or
 * rename fails) keeps its `.open` name, its records are counted as failures too (they were
 * counted out when taken), the failure is logged at most once a second and ready() is false
 * until a later file completes. Rotation by age and the periodic push use only the clock
 * given to poll. rotate_bytes 0 / rotate_age_ms 0: no rotation by that measure;
 * zstd_level 0: zstd's default. Records longer than 128 KiB are refused with -EMSGSIZE. */
#define SINK_FILE_COMPLETIONS_MAX 10
struct sink_file_options {
	const char *dir;       /* created if missing */
	bool compress_zstd;    /* sink.file.compress=zstd */
	int zstd_level;        /* sink.file.zstd_level */
	uint64_t rotate_bytes; /* sink.file.rotate_bytes: uncompressed bytes per file */
	int64_t rotate_age_ms; /* sink.file.rotate_s * 1000 */
	const char *name_tag;  /* in every file name, to tell instances apart; NULL: none */
	/* Tests only, NULL in clickd: called on the completion thread before each file's fsync
	 * with the file's final name (to hold completions back, or to see where they run). */
	void (*before_complete)(void *arg, const char *name);
	void *before_complete_arg;
};
struct sink *sink_file_new(const struct sink_file_options *opt, char *err, size_t errlen);

/* ---- Kafka sink (librdkafka), with an optional disk spool (spool.h) ----
 *
 * Records are counted when librdkafka reports on them (delivered or failed, in poll/flush),
 * or at once when librdkafka refuses one in write. write answers -EINVAL for a stream with
 * no topic configured, -EMSGSIZE / -ENOENT / -EIO for other refusals.
 *
 * Without a spool: write answers -EAGAIN when librdkafka's queue is full (not a failure);
 * flush waits for the delivery reports (-ETIMEDOUT with messages left); free purges what
 * is left, so it is reported as failed. ready() is false after a fatal producer error and
 * while all brokers are down.
 *
 * With a spool, nothing the sink took is dropped while the spool has room:
 *  - "Spooling" is on while the spool holds records not yet replayed, while all brokers
 *    are down or the producer had a fatal error, and while librdkafka's queue holds more
 *    than spool_high_water messages (looked at in poll) or is full. Meanwhile write appends
 *    to the spool instead of librdkafka, so a key's spooled records are never overtaken by
 *    newer records of that key.
 *  - A delivery that fails for a reason that may pass (message.timeout.ms, brokers away,
 *    purged at stop, fatal producer) goes to the spool from its delivery report; one that
 *    can never succeed (too large, invalid, not authorised) is counted failed and logged.
 *  - poll replays the spool, oldest first, while Kafka is back (a broker up, the queue
 *    below spool_high_water), a bounded amount per call; a delivery report acks the record
 *    (a segment is deleted once all its records are delivered) or nacks it (read again,
 *    in order).
 *  - write answers -EAGAIN ("full") when the spool is full or its disk fails: the caller
 *    holds the record and answers 503 upstream. ready() is false from then on: when full,
 *    until Kafka has taken records back and a spool segment was deleted; when the disk
 *    failed, until the spool takes a record again. Also after a fatal producer error;
 *    brokers down alone no longer make it false (the spool takes the records).
 *  - flush (the stop) waits up to timeout_ms for librdkafka, then purges what is left: the
 *    purged records go to the spool from their reports, and the spool's batch is written
 *    (and synced as spool.fsync says); replay stops. It answers 0 when every record is in
 *    Kafka or in the spool, -ETIMEDOUT or -EIO when some are in neither.
 *  - Records that went through the spool are not observed in clickd_event_to_sink_seconds
 *    (the spool keeps no receive time).
 * Acked records (write_acked, kafka.ack_mode=kafka): the token rides in the message opaque,
 * so no message needs an allocation. A delivery report that says delivered completes it
 * durable; one that failed for good completes it failed. A record that goes to the spool
 * (in write while spooling, or from the report of a delivery that failed for now) completes
 * durable once the spool has written it (spool.fsync=never) or written and synced it
 * (per_frame, interval): while such records wait, each poll writes the spool's batch and
 * syncs it (spool_sync) instead of waiting for its linger and fsync interval. A failed
 * delivery the spool refuses completes failed; in write,
 * a full spool answers -EAGAIN and the token stays the caller's.
 * Threads: write from any thread; poll, flush, ready and free from one thread (the main
 * loop), which also runs the delivery reports. */
struct spool;
struct ack_hub;
struct sink_kafka_property {
	const char *key;
	const char *value;
};
struct sink_kafka_options {
	const char *brokers;                   /* bootstrap.servers; NULL/empty: not set */
	const char *topics[SINK_STREAM_COUNT]; /* NULL/empty: that stream has no topic */
	/* [kafka.producer] pass-through, applied after our defaults (acks=all,
	 * enable.idempotence=true, compression.type=zstd, linger.ms=5 (0 with acks below),
	 * message.timeout.ms=300000, statistics.interval.ms=5000 which ready() relies on to
	 * notice brokers coming back, client.id=clickd). A bad key or value fails
	 * sink_kafka_new with "kafka.producer.<key>: <librdkafka's reason>". */
	const struct sink_kafka_property *producer;
	size_t producer_count;
	/* The disk spool, taken: the sink owns and closes it from this call on, also when
	 * sink_kafka_new fails. NULL: no spool. */
	struct spool *spool;
	/* spool.high_water: librdkafka queue length (messages) above which records go to the
	 * spool, and up to which replay fills the queue. 0: SINK_KAFKA_DEFAULT_HIGH_WATER. */
	uint64_t spool_high_water;
	/* kafka.ack_mode=kafka: where write_acked completes its tokens (borrowed; must outlive
	 * the sink). NULL: write_acked answers -ENOTSUP. */
	struct ack_hub *acks;
};
#define SINK_KAFKA_DEFAULT_HIGH_WATER 50000
struct sink *sink_kafka_new(const struct sink_kafka_options *opt, char *err, size_t errlen);

/* kafka.ack_mode=kafka: a file descriptor (an eventfd, owned by the sink, closed by free)
 * that librdkafka makes readable when delivery reports wait, so that the main loop serves
 * them at once with sink_kafka_serve_reports (main thread, as poll) rather than at its next
 * poll: an acknowledged request waits for its report. Made on the first call; -errno when
 * it cannot be. */
int sink_kafka_report_fd(struct sink *s);
void sink_kafka_serve_reports(struct sink *s);

#endif
