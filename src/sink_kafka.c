/*
 * sink_kafka.c - the Kafka sink: a librdkafka producer, with a disk spool for the time
 * Kafka cannot take the records (see sink.h, spool.h).
 *
 * Configuration: our defaults first (bootstrap.servers=opt->brokers, acks=all,
 * enable.idempotence=true, compression.type=zstd, linger.ms=5 (0 with acks),
 * message.timeout.ms=300000, statistics.interval.ms=5000, client.id=clickd), then every
 * [kafka.producer] property as it is, so the operator can override any of them. One
 * rd_kafka_topic_t per configured stream, made in _new, so write does no topic lookup.
 *
 * Counting: a record is counted once, when librdkafka reports on it: delivered ->
 * clickd_records_out_total{sink="kafka"} (and clickd_event_to_sink_seconds from the receive
 * time it carries); failed for good -> clickd_sink_failures_total plus a log line (at most
 * one a second, with the number held back); failed for now with a spool -> spooled
 * (clickd_spool_records_spooled_total), not a failure. A record librdkafka refuses at once
 * (other than queue full) is counted failed in write. Without a spool, records still
 * queued when the sink is freed are purged, and so reported failed, never dropped silently.
 *
 * The message opaque: each message carries 64 bits that librdkafka hands back with its
 * delivery report (m->_private), packed, so that no message needs an allocation or a table
 * shared between the writers and the main thread: bits 0-2 the stream, bit 3 "read from the
 * spool", bit 4 "acked", bits 5-63 the spool token (from the spool), the ack token of the
 * HTTP request waiting for it (acked: kafka.ack_mode=kafka, ack.h), or the event's receive
 * time in ms (written live; 0: none). Everything else the report needs, librdkafka gives
 * back itself: the payload and the key (RD_KAFKA_MSG_F_COPY made its own copy of both),
 * which is what a failed message is spooled from. 59 bits hold epoch milliseconds for
 * millions of years, more spool tokens than a disk can hold records, and an ack token
 * (ACK_TOKEN_BITS). An acked record's receive time comes back from ack_complete, for
 * clickd_event_to_sink_seconds; one whose request no longer waits is not observed.
 *
 * Acked records and the spool (kafka.ack_mode=kafka): a record spooled in write or from a
 * failed delivery's report leaves its ack token in `waiters`, a FIFO of (append sequence,
 * token) under the lock, in append order; the main thread's poll writes the spool's batch
 * while the FIFO is not empty (rather than after the spool's linger) and completes, oldest
 * first, every waiter whose record spool_durable() covers. While some wait, each poll also
 * syncs (spool_sync) rather than waiting for spool.fsync_interval_ms: a request should not
 * wait a second for a sync, and 20 syncs a second at most, only while Kafka is away, is
 * what that costs. The FIFO grows by doubling: it
 * holds at most the events of the requests waiting, which kafka.ack_max_pending and
 * limits.max_batch bound (plus stale tokens of requests that stopped waiting, which leave
 * as the spool makes them durable).
 *
 * The spool and its threads. write runs on many threads at once (the shards, and the
 * ingest threads for dead letters); poll, flush, ready and free run on the main thread,
 * and so do the delivery, error and statistics callbacks (inside rd_kafka_poll/flush).
 * The spool is single-threaded: every call on it is made under `lock`. Writers take the
 * lock only while `spooling` is on (or librdkafka answered "queue full"): a healthy
 * pipeline's per-event path is an atomic load and rd_kafka_producev, as before. The main
 * thread takes it for each poll (replay, the spool's linger and fsync timers, stats) and
 * for each delivery report of a spooled record (ack/nack) or a failed one (append).
 *
 * When records go to the spool (`spooling`, set under the lock, read by writers):
 *  - while the spool may hold records not yet read back (`backlog`): so a key's records
 *    keep their order, newer ones queue up behind the spooled ones (one shard writes all
 *    the records of a key, so "newer" is that thread's program order);
 *  - while all brokers are down (librdkafka's ALL_BROKERS_DOWN; cleared by a delivery or
 *    by the statistics seeing a broker UP), or after a fatal producer error;
 *  - while librdkafka's queue is past spool_high_water (looked at in each poll), or full
 *    (a writer that gets QUEUE_FULL turns spooling on and appends).
 * Spooling goes off only in poll, under the lock, when replay has read the last record of
 * the spool (spool_next: -ENODATA), Kafka is up and the queue is below the high water: every
 * spooled record has then been handed to librdkafka, in order, before any newer record of
 * its key, so librdkafka's per-partition order (idempotent producer) keeps them in order.
 * A writer that saw spooling on and waited for the lock looks again under it, and
 * produces when it went off meanwhile.
 *
 * Replay (poll, main thread): spool_next, rd_kafka_producev, until the spool is read to
 * the end, librdkafka's queue reaches the high water, or the turn's budget
 * (REPLAY_MAX_RECORDS records or REPLAY_MAX_BYTES bytes) is used. Delivered -> spool_ack
 * (a segment is deleted once all its records are acked); failed for now -> spool_nack (the
 * spool rewinds and gives them again, in order); failed for good -> counted, logged and
 * acked. Why on the main loop and not a thread of its own: the spool's I/O here is a pread
 * of compressed frames (64 KiB of records each), mostly from the page cache since they
 * were written recently, and their decompression, and rd_kafka_producev: the budget bounds
 * one turn to a few milliseconds of a 50 ms poll interval (measured against librdkafka's
 * mock cluster: 4 ms a turn on average, 6 ms at most, 160,000 records/s replayed, limited
 * by the spool's max_unacked records in flight rather than by the turn), and the main loop
 * only serves the admin listener and the delivery reports, which wait that long at most. The syncs
 * of spool.fsync=interval (at most one fdatasync per interval) run there too; per_frame syncs run
 * on whichever thread writes the frame, under the lock (the cost that setting names).
 *
 * Order, in short: a key's records leave in the order they were written, except that a
 * record librdkafka had already taken when Kafka went away and that then fails (after
 * message.timeout.ms) is spooled after the newer records spooled meanwhile, and a replayed
 * record that fails is sent again after those in flight with it; both as with any
 * pipelined producer. Delivery is at least once: acks are not on disk, so after a crash the
 * records of a segment not yet deleted are replayed again (spool.h).
 *
 * Readiness: false after a fatal error (permanent); with a spool, from an append the full
 * spool refused until a segment is deleted (Kafka took records back: hysteresis, so that
 * the load balancer does not see readiness flap at the edge), and from an append the disk
 * failed until one works; without a spool, while all brokers are down.
 */
#include "clickd/sink.h"

#include "clickd/ack.h"
#include "clickd/log.h"
#include "clickd/metrics.h"
#include "clickd/spool.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#define KAFKA_LOG_INTERVAL_MS 1000
/* How long flush and free wait for the reports of purged messages. */
#define KAFKA_PURGE_WAIT_MS 5000
/* One poll's replay at most (see above). */
#define REPLAY_MAX_RECORDS 20000
#define REPLAY_MAX_BYTES   (4u << 20)
/* Room a spool must have at start for clickd to be ready: one frame of records (a spool
 * with less takes a few records, then refuses: not worth a READY=1). */
#define SPOOL_START_ROOM_BYTES SPOOL_DEFAULT_BATCH_BYTES

/* The message opaque (see above). */
#define OPAQUE_STREAM_BITS 3
#define OPAQUE_STREAM_MASK ((UINT64_C(1) << OPAQUE_STREAM_BITS) - 1)
#define OPAQUE_FROM_SPOOL  (UINT64_C(1) << OPAQUE_STREAM_BITS)
#define OPAQUE_ACKED       (UINT64_C(1) << (OPAQUE_STREAM_BITS + 1))
#define OPAQUE_VALUE_SHIFT (OPAQUE_STREAM_BITS + 2)
#define OPAQUE_VALUE_MAX   (UINT64_MAX >> OPAQUE_VALUE_SHIFT)
_Static_assert(SINK_STREAM_COUNT <= 1 << OPAQUE_STREAM_BITS, "the stream travels in 3 bits");
_Static_assert(ACK_TOKEN_BITS <= 64 - OPAQUE_VALUE_SHIFT, "an ack token fits the opaque");
_Static_assert(UINTPTR_MAX >= UINT64_MAX, "the message opaque needs 64-bit pointers");

/* Atomic: write (and so its failure log) is called from several threads at once. */
struct kafka_rate_limit {
	_Atomic int64_t next_ms;     /* monotonic ms before which lines are suppressed */
	_Atomic uint64_t suppressed; /* events not logged since the last line */
};

struct sink_kafka {
	struct sink base;
	rd_kafka_t *rk;                              /* owned */
	rd_kafka_topic_t *topics[SINK_STREAM_COUNT]; /* owned; NULL: no topic configured */
	bool brokers_down;                           /* main thread */
	bool fatal;                                  /* main thread */
	struct kafka_rate_limit delivery_log;
	struct kafka_rate_limit error_log;
	struct kafka_rate_limit write_log;
	struct kafka_rate_limit spool_log;

	/* The spool (owned; NULL: none) and its state. */
	struct spool *spool;
	pthread_mutex_t lock; /* guards spool and backlog */
	bool backlog;         /* the spool may hold records replay has not read yet */
	_Atomic bool spooling;
	/* Not ready while either is set. full: an append found the spool full; cleared once
	 * Kafka took records back and a segment was deleted, not by the next append that fits
	 * (the slack of one batch would make readiness flap). failing: an append failed on the
	 * disk; cleared by the next append that works. */
	_Atomic bool spool_full;
	_Atomic bool spool_failing;
	uint64_t high_water;
	uint64_t unspooled; /* main thread: failed records the spool could not take */
	/* kafka.ack_mode=kafka (see above): where tokens are completed (borrowed; NULL: no
	 * write_acked), and the spooled records' waiters, a ring of waiters_cap (owned, under
	 * the lock). */
	struct ack_hub *acks;
	int report_fd; /* sink_kafka_report_fd's eventfd (owned), or -1 */
	struct spool_waiter {
		uint64_t seq;   /* spool_appended() of its record */
		uint64_t token; /* ack token */
	} * waiters;
	size_t waiters_cap, waiters_head, waiters_count;
	bool flushed;                 /* main thread: flush ran (the stop): no more replay */
	struct spool_stats published; /* main thread: what the metrics got so far */
};

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when a line may be logged now; *suppressed gets how many were held back. */
static bool rate_limit_pass(struct kafka_rate_limit *rl, uint64_t *suppressed)
{
	int64_t now = monotonic_ms();
	int64_t next = atomic_load_explicit(&rl->next_ms, memory_order_relaxed);

	/* One thread wins the interval; the others count themselves as suppressed. */
	if (now < next || !atomic_compare_exchange_strong_explicit(
	                      &rl->next_ms, &next, now + KAFKA_LOG_INTERVAL_MS,
	                      memory_order_relaxed, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
		return false;
	}
	*suppressed = atomic_exchange_explicit(&rl->suppressed, 0, memory_order_relaxed);
	return true;
}

/* A librdkafka message made fit for a quoted log value (no double quotes). */
static const char *quotable(const char *in, char *buf, size_t cap)
{
	size_t i = 0;

	for (; in && in[i] && i + 1 < cap; i++)
		buf[i] = in[i] == '"' ? '\'' : in[i];
	buf[i] = '\0';
	return buf;
}

static int errno_of(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR__QUEUE_FULL:
		return -EAGAIN;
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		return -EMSGSIZE;
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
		return -ENOENT;
	default:
		return -EIO;
	}
}

/* Failures that sending again cannot mend: the record itself, or the topic, is refused.
 * Anything else (timeouts, brokers away, purges at stop, a fatal producer) may pass and
 * goes to the spool. */
static bool fails_for_good(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR__INVALID_ARG:
		return true;
	default:
		return false;
	}
}

/* ---- the message opaque ---- */

static void *opaque_live(enum sink_stream stream, int64_t received_at_ms)
{
	uint64_t at = received_at_ms > 0 ? (uint64_t)received_at_ms : 0;

	if (at > OPAQUE_VALUE_MAX)
		at = 0;
	return (void *)(uintptr_t)((uint64_t)stream | at << OPAQUE_VALUE_SHIFT);
}

static void *opaque_spooled(enum sink_stream stream, uint64_t token)
{
	return (void *)(uintptr_t)((uint64_t)stream | OPAQUE_FROM_SPOOL |
	                           token << OPAQUE_VALUE_SHIFT);
}

static void *opaque_acked(enum sink_stream stream, uint64_t ack_token)
{
	return (void *)(uintptr_t)((uint64_t)stream | OPAQUE_ACKED |
	                           ack_token << OPAQUE_VALUE_SHIFT);
}

static bool opaque_is_acked(const void *opaque)
{
	return ((uintptr_t)opaque & OPAQUE_ACKED) != 0;
}

static enum sink_stream opaque_stream(const void *opaque)
{
	unsigned stream = (unsigned)((uintptr_t)opaque & OPAQUE_STREAM_MASK);

	/* Not ours: cannot happen, but never index out of range. */
	return stream < SINK_STREAM_COUNT ? (enum sink_stream)stream : SINK_EVENTS;
}

static bool opaque_from_spool(const void *opaque)
{
	return ((uintptr_t)opaque & OPAQUE_FROM_SPOOL) != 0;
}

static uint64_t opaque_value(const void *opaque)
{
	return (uint64_t)(uintptr_t)opaque >> OPAQUE_VALUE_SHIFT;
}

static rd_kafka_resp_err_t produce(struct sink_kafka *k, enum sink_stream stream, const char *key,
                                   size_t key_len, const char *record, size_t record_len,
                                   void *opaque)
{
	return rd_kafka_producev(
	    k->rk, RD_KAFKA_V_RKT(k->topics[stream]), RD_KAFKA_V_KEY(key_len ? key : NULL, key_len),
	    RD_KAFKA_V_VALUE((void *)record, record_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
	    RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
}

/* ---- spool: appending (any thread) ---- */

/* A spool append that failed: -ENOSPC (full) or the disk's error. Logs it at most once a
 * second. */
static void log_spool_refusal(struct sink_kafka *k, int rc, const char *what)
{
	uint64_t suppressed;

	if (rate_limit_pass(&k->spool_log, &suppressed))
		log_error(
		    "kafka", "msg=\"spool refuses records\" what=\"%s\" err=\"%s\" more=%" PRIu64,
		    what, rc == -ENOSPC ? "full (spool.max_bytes)" : strerror(-rc), suppressed);
}

/* Remembers that the request `token` waits for the spool's last record. Under the lock.
 * Returns 0 or -ENOMEM. */
static int waiter_push(struct sink_kafka *k, uint64_t token)
{
	if (k->waiters_count == k->waiters_cap) {
		size_t cap = k->waiters_cap ? k->waiters_cap * 2 : 1024;
		struct spool_waiter *w = malloc(cap * sizeof(*w));

		if (!w)
			return -ENOMEM;
		for (size_t i = 0; i < k->waiters_count; i++)
			w[i] = k->waiters[(k->waiters_head + i) % k->waiters_cap];
		free(k->waiters);
		k->waiters = w;
		k->waiters_cap = cap;
		k->waiters_head = 0;
	}
	k->waiters[(k->waiters_head + k->waiters_count) % k->waiters_cap] =
	    (struct spool_waiter){spool_appended(k->spool), token};
	k->waiters_count++;
	return 0;
}

/* Completes the waiters whose records the spool holds durably now, oldest first. Under the
 * lock (ack_complete takes no lock of ours). */
static void waiters_settle(struct sink_kafka *k)
{
	uint64_t durable = spool_durable(k->spool);

	while (k->waiters_count > 0 && k->waiters[k->waiters_head].seq <= durable) {
		ack_complete(k->acks, k->waiters[k->waiters_head].token, true, NULL);
		k->waiters_head = (k->waiters_head + 1) % k->waiters_cap;
		k->waiters_count--;
	}
}

/* Appends a record to the spool; an acked one (ack_token not 0) waits in `waiters` until
 * the spool has it durably. Under the lock. Returns spool_append's answer. */
static int spool_take_locked(struct sink_kafka *k, enum sink_stream stream, const char *key,
                             size_t key_len, const char *record, size_t record_len,
                             uint64_t ack_token)
{
	int rc = spool_append(k->spool, stream, key, key_len, record, record_len);

	if (rc == 0 && ack_token && waiter_push(k, ack_token) < 0)
		ack_complete(k->acks, ack_token, false, NULL); /* spooled, but none can wait */
	if (rc == 0) {
		k->backlog = true;
		atomic_store_explicit(&k->spool_failing, false, memory_order_relaxed);
	} else if (rc == -ENOSPC) {
		atomic_store_explicit(&k->spool_full, true, memory_order_relaxed);
	} else if (rc != -EMSGSIZE && rc != -EINVAL) {
		atomic_store_explicit(&k->spool_failing, true, memory_order_relaxed);
	}
	return rc;
}

#define SPOOLING_OFF 1 /* spool_write: spooling went off meanwhile, produce instead */

/*
 * A writer's record while spooling is on (or, with force, because librdkafka's queue is
 * full: then spooling goes on). Returns 0 (spooled), SPOOLING_OFF, -EAGAIN (the spool is
 * full or its disk fails: the caller holds the record) or a failure counted here.
 */
static int spool_write(struct sink_kafka *k, bool force, enum sink_stream stream, const char *key,
                       size_t key_len, const char *record, size_t record_len, uint64_t ack_token)
{
	uint64_t suppressed;
	int rc;

	pthread_mutex_lock(&k->lock);
	if (force) {
		atomic_store_explicit(&k->spooling, true, memory_order_relaxed);
	} else if (!atomic_load_explicit(&k->spooling, memory_order_relaxed)) {
		pthread_mutex_unlock(&k->lock);
		return SPOOLING_OFF;
	}
	rc = spool_take_locked(k, stream, key, key_len, record, record_len, ack_token);
	pthread_mutex_unlock(&k->lock);
	if (rc == 0)
		return 0;
	if (rc == -EMSGSIZE || rc == -EINVAL) {
		metrics_sink_failed(METRICS_SINK_KAFKA, stream, 1);
		if (rate_limit_pass(&k->write_log, &suppressed))
			log_error("kafka",
			          "msg=\"record too large for the spool\" stream=%s key_bytes=%zu "
			          "record_bytes=%zu more_failures=%" PRIu64,
			          sink_stream_name(stream), key_len, record_len, suppressed);
		return rc;
	}
	log_spool_refusal(k, rc, "new records; ingest answers 503");
	return -EAGAIN;
}

/* ---- delivery reports (main thread) ---- */

/* outcome: "spooled" (a warning: it is sent again later) or "lost" (an error). */
static void log_delivery_failure(struct sink_kafka *k, const rd_kafka_message_t *m,
                                 enum sink_stream stream, const char *outcome)
{
	uint64_t suppressed;
	char reason[256];

	if (rate_limit_pass(&k->delivery_log, &suppressed))
		log_write(strcmp(outcome, "lost") == 0 ? LOG_ERROR : LOG_WARN, "kafka",
		          "delivery failed topic=%s stream=%s err=\"%s\" outcome=%s "
		          "more_failures=%" PRIu64,
		          rd_kafka_topic_name(m->rkt), sink_stream_name(stream),
		          quotable(rd_kafka_err2str(m->err), reason, sizeof(reason)), outcome,
		          suppressed);
}

/* A message written live failed for now: to the spool (an acked one's request then waits
 * for the spool). Returns true when it took it. */
static bool spool_failed_message(struct sink_kafka *k, const rd_kafka_message_t *m,
                                 enum sink_stream stream, uint64_t ack_token)
{
	int rc;

	pthread_mutex_lock(&k->lock);
	/* Newer records of its key now queue up behind it (until replay has read it). */
	atomic_store_explicit(&k->spooling, true, memory_order_relaxed);
	rc = spool_take_locked(k, stream, m->key, m->key_len, m->payload, m->len, ack_token);
	pthread_mutex_unlock(&k->lock);
	if (rc == 0) {
		log_delivery_failure(k, m, stream, "spooled");
		return true;
	}
	k->unspooled++;
	log_spool_refusal(k, rc, "failed deliveries; they are lost");
	return false;
}

/* A record read from the spool was reported on. Returns true when the failure is dealt
 * with (acked or nacked for a retry); false when it failed for good (acked: counted by
 * the caller). */
static bool settle_spooled(struct sink_kafka *k, uint64_t token, rd_kafka_resp_err_t err)
{
	bool again = err != RD_KAFKA_RESP_ERR_NO_ERROR && !fails_for_good(err);

	pthread_mutex_lock(&k->lock);
	if (again) {
		spool_nack(k->spool, token);
		k->backlog = true; /* read again: the rewind makes them unread */
		atomic_store_explicit(&k->spooling, true, memory_order_relaxed);
	} else {
		spool_ack(k->spool, token);
	}
	pthread_mutex_unlock(&k->lock);
	return err == RD_KAFKA_RESP_ERR_NO_ERROR || again;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct sink_kafka *k = opaque;
	enum sink_stream stream = opaque_stream(m->_private);
	bool from_spool = opaque_from_spool(m->_private);
	uint64_t value = opaque_value(m->_private);
	uint64_t ack_token = opaque_is_acked(m->_private) ? value : 0;
	int64_t received_at_ms = ack_token ? 0 : (int64_t)value;

	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		k->brokers_down = false;
		metrics_sink_out(METRICS_SINK_KAFKA, stream, 1);
		if (from_spool) {
			settle_spooled(k, value, m->err);
			metrics_add(METRIC_SPOOL_REPLAYED, 1);
			return;
		}
		/* Durable in Kafka: the request may be answered (its receive time comes back). */
		if (ack_token)
			ack_complete(k->acks, ack_token, true, &received_at_ms);
		metrics_event_to_sink(HIST_EVENT_TO_SINK_KAFKA, received_at_ms);
		return;
	}
	if (from_spool) {
		if (settle_spooled(k, value, m->err))
			return;
	} else if (k->spool && !fails_for_good(m->err) &&
	           spool_failed_message(k, m, stream, ack_token)) {
		return;
	}
	ack_complete(k->acks, ack_token, false, NULL); /* neither in Kafka nor in the spool */
	metrics_sink_failed(METRICS_SINK_KAFKA, stream, 1);
	log_delivery_failure(k, m, stream, "lost");
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct sink_kafka *k = opaque;
	uint64_t suppressed;
	char buf[512], fatal[512];

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		/* The producer is unusable from now on; always worth a line. */
		rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
		k->fatal = true;
		if (k->spool)
			atomic_store_explicit(&k->spooling, true, memory_order_relaxed);
		log_error("kafka", "fatal error err=%s reason=\"%s\"", rd_kafka_err2name(orig),
		          quotable(fatal, buf, sizeof(buf)));
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
		k->brokers_down = true;
		/* Turning spooling on needs no lock: only the off switch must see the spool. */
		if (k->spool)
			atomic_store_explicit(&k->spooling, true, memory_order_relaxed);
	}
	/* Connection and name-resolution failures already make a librdkafka log line (which
	 * librdkafka itself de-duplicates): one line is enough. */
	if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__RESOLVE)
		return;
	if (rate_limit_pass(&k->error_log, &suppressed))
		log_error("kafka", "error err=%s reason=\"%s\" more_errors=%" PRIu64,
		          rd_kafka_err2name((rd_kafka_resp_err_t)err),
		          quotable(reason, buf, sizeof(buf)), suppressed);
}

/* librdkafka's own log lines, in our format. Called from librdkafka's threads too: log_write
 * is thread-safe. Syslog levels: 0-3 error, 4 warning, 5-6 notice/info, 7 debug. */
static void on_log(const rd_kafka_t *rk, int level, const char *facility, const char *line)
{
	enum log_level ours = level <= 3   ? LOG_ERROR
	                      : level == 4 ? LOG_WARN
	                      : level <= 6 ? LOG_INFO
	                                   : LOG_DEBUG;
	char buf[1024];

	if ((int)ours > (int)log_get_level())
		return;
	log_write(ours, "kafka", "librdkafka facility=%s msg=\"%s\"", facility,
	          quotable(line, buf, sizeof(buf)));
}

/* Statistics (every statistics.interval.ms): any real broker in state UP means Kafka is
 * reachable again. Internal and logical brokers do not count. */
static int on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
	struct sink_kafka *k = opaque;
	/* yajl_tree_get takes const char ** (not const char *const *). */
	const char *brokers_path[] = {"brokers", NULL};
	const char *source_path[] = {"source", NULL};
	const char *state_path[] = {"state", NULL};
	char *text = malloc(json_len + 1);
	yajl_val root, brokers;
	bool any = false, up = false;

	if (!text)
		return 0;
	memcpy(text, json, json_len);
	text[json_len] = '\0';
	root = yajl_tree_parse(text, NULL, 0);
	free(text);
	brokers = yajl_tree_get(root, brokers_path, yajl_t_object);
	for (size_t i = 0; brokers && i < brokers->u.object.len; i++) {
		yajl_val b = brokers->u.object.values[i];
		const char *source = YAJL_GET_STRING(yajl_tree_get(b, source_path, yajl_t_string));
		const char *state = YAJL_GET_STRING(yajl_tree_get(b, state_path, yajl_t_string));

		if (!state ||
		    (source && (!strcmp(source, "internal") || !strcmp(source, "logical"))))
			continue;
		any = true;
		up = up || strcmp(state, "UP") == 0;
	}
	yajl_tree_free(root);
	if (any)
		k->brokers_down = !up;
	return 0; /* librdkafka frees json */
}

/* ---- write (any thread) ---- */

/* write and write_acked (ack_token 0: write). */
static int write_record(struct sink_kafka *k, enum sink_stream stream, const char *key,
                        size_t key_len, const char *record, size_t record_len,
                        int64_t received_at_ms, uint64_t ack_token)
{
	rd_kafka_resp_err_t err;
	uint64_t suppressed;
	int rc;

	if ((unsigned)stream >= SINK_STREAM_COUNT)
		return -EINVAL;
	if (!k->topics[stream]) {
		metrics_sink_failed(METRICS_SINK_KAFKA, stream, 1);
		if (rate_limit_pass(&k->write_log, &suppressed))
			log_error("kafka", "no topic configured stream=%s more_failures=%" PRIu64,
			          sink_stream_name(stream), suppressed);
		return -EINVAL;
	}
	/* Acquire: pairs with the release of the poll that turned spooling off, after which
	 * every spooled record is in librdkafka's queue ahead of this one. */
	if (k->spool && atomic_load_explicit(&k->spooling, memory_order_acquire)) {
		rc = spool_write(k, false, stream, key, key_len, record, record_len, ack_token);
		if (rc != SPOOLING_OFF)
			return rc;
	}
	err = produce(k, stream, key, key_len, record, record_len,
	              ack_token ? opaque_acked(stream, ack_token)
	                        : opaque_live(stream, received_at_ms));
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
		return k->spool ? spool_write(k, true, stream, key, key_len, record, record_len,
		                              ack_token)
		                : -EAGAIN;
	metrics_sink_failed(METRICS_SINK_KAFKA, stream, 1);
	if (rate_limit_pass(&k->write_log, &suppressed))
		log_error("kafka", "produce failed topic=%s err=\"%s\" more_failures=%" PRIu64,
		          rd_kafka_topic_name(k->topics[stream]), rd_kafka_err2str(err),
		          suppressed);
	return errno_of(err);
}

static int kafka_write(struct sink *base, enum sink_stream stream, const char *key, size_t key_len,
                       const char *record, size_t record_len, int64_t received_at_ms)
{
	return write_record((struct sink_kafka *)base, stream, key, key_len, record, record_len,
	                    received_at_ms, 0);
}

static int kafka_write_acked(struct sink *base, enum sink_stream stream, const char *key,
                             size_t key_len, const char *record, size_t record_len,
                             int64_t received_at_ms, uint64_t ack_token)
{
	struct sink_kafka *k = (struct sink_kafka *)base;

	if (!k->acks || ack_token >> ACK_TOKEN_BITS)
		return -ENOTSUP;
	return write_record(k, stream, key, key_len, record, record_len, received_at_ms, ack_token);
}

/* ---- replay and the spool's periodic work (main thread) ---- */

/* A record read back from the spool that cannot be sent at all: counted failed, acked. */
static void replay_give_up(struct sink_kafka *k, const struct spool_record *r, const char *why)
{
	uint64_t suppressed;

	spool_ack(k->spool, r->token);
	metrics_sink_failed(METRICS_SINK_KAFKA, r->stream, 1);
	if (rate_limit_pass(&k->delivery_log, &suppressed))
		log_error(
		    "kafka",
		    "msg=\"spooled record dropped\" stream=%s reason=\"%s\" more_failures=%" PRIu64,
		    sink_stream_name(r->stream), why, suppressed);
}

/* Hands spooled records to librdkafka, oldest first, within the turn's budget and below
 * the high water (queue: messages in librdkafka's queue now). Under the lock. Returns how
 * many went. */
static uint64_t replay(struct sink_kafka *k, uint64_t queue)
{
	uint64_t sent = 0, bytes = 0;
	struct spool_record r;

	while (sent < REPLAY_MAX_RECORDS && bytes < REPLAY_MAX_BYTES &&
	       queue + sent < k->high_water) {
		rd_kafka_resp_err_t err;
		int rc = spool_next(k->spool, &r);

		if (rc == -ENODATA) {
			k->backlog = false; /* read to the end: every record is with librdkafka */
			break;
		}
		if (rc < 0) {
			/* -EAGAIN: max_unacked in flight, or a nack waits for them to settle. */
			if (rc != -EAGAIN)
				log_spool_refusal(k, rc, "replay cannot read");
			break;
		}
		if (!k->topics[r.stream]) {
			replay_give_up(k, &r, "no topic configured for its stream");
			continue;
		}
		err = produce(k, r.stream, r.key, r.key_len, r.record, r.record_len,
		              opaque_spooled(r.stream, r.token));
		if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			spool_nack(k->spool, r.token); /* read again, in order, once room is back */
			k->backlog = true;
			break;
		}
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			replay_give_up(k, &r, rd_kafka_err2str(err));
			continue;
		}
		sent++;
		bytes += r.key_len + r.record_len;
	}
	return sent;
}

/* Adds what changed in the spool since the last call to the process-wide metrics. Under
 * the lock. */
static void publish_spool_stats(struct sink_kafka *k)
{
	struct spool_stats st;
	struct spool_stats *p = &k->published;

	spool_stats(k->spool, &st);
	metrics_add(METRIC_SPOOL_SPOOLED, st.records_appended - p->records_appended);
	metrics_add(METRIC_SPOOL_FULL_REFUSALS, st.records_refused - p->records_refused);
	metrics_add(METRIC_SPOOL_CORRUPT_FRAMES, st.corrupt_frames - p->corrupt_frames);
	metrics_add(METRIC_SPOOL_TORN_TAILS_CUT, st.torn_tails_cut - p->torn_tails_cut);
	metrics_gauge_set(GAUGE_SPOOL_BYTES, (int64_t)st.bytes);
	metrics_gauge_set(GAUGE_SPOOL_SEGMENTS, (int64_t)st.segments);
	if (st.segments_deleted > p->segments_deleted) /* space came back */
		atomic_store_explicit(&k->spool_full, false, memory_order_relaxed);
	metrics_gauge_set(GAUGE_SPOOL_FULL,
	                  atomic_load_explicit(&k->spool_full, memory_order_relaxed) ||
	                      atomic_load_explicit(&k->spool_failing, memory_order_relaxed));
	metrics_gauge_set(GAUGE_SPOOL_ACTIVE,
	                  atomic_load_explicit(&k->spooling, memory_order_relaxed));
	*p = st;
}

/* The spool's clock is the sink's own (monotonic), in poll and flush alike. */
static void spool_tick(struct sink_kafka *k, uint64_t queue)
{
	int64_t now_ms = monotonic_ms();
	bool kafka_up = !k->fatal && !k->brokers_down;
	uint64_t sent = 0;
	int rc;

	pthread_mutex_lock(&k->lock);
	if (kafka_up && queue < k->high_water && !k->flushed)
		sent = replay(k, queue);
	rc = spool_poll(k->spool, now_ms);
	/* Requests wait for spooled records: write and sync them now rather than after the
	 * linger and the fsync interval (one sync per poll at most, while some wait). */
	if (rc == 0 && k->waiters_count > 0 && spool_durable(k->spool) < spool_appended(k->spool))
		rc = spool_sync(k->spool, now_ms);
	if (rc < 0)
		log_spool_refusal(k, rc, "writing or syncing the spool");
	waiters_settle(k);
	/* Release: a writer that sees spooling off sees every record replay handed over. */
	atomic_store_explicit(&k->spooling, k->backlog || !kafka_up || queue + sent > k->high_water,
	                      memory_order_release);
	publish_spool_stats(k);
	pthread_mutex_unlock(&k->lock);
}

static int kafka_poll(struct sink *base, int64_t now_ms)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	int queue;

	rd_kafka_poll(k->rk, 0);
	queue = rd_kafka_outq_len(k->rk);
	metrics_set_kafka_queue(queue);
	if (k->spool)
		spool_tick(k, queue > 0 ? (uint64_t)queue : 0);
	return 0;
}

/* What librdkafka still holds goes to the spool: purged, so that it is reported failed
 * (PURGE_QUEUE / PURGE_INFLIGHT, failures that may pass) and on_delivery appends it.
 * In-flight messages purged may have reached the broker: replayed at the next start, they
 * are duplicates (at least once). */
static void purge_to_spool(struct sink_kafka *k)
{
	rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	rd_kafka_flush(k->rk, KAFKA_PURGE_WAIT_MS);
}

static int kafka_flush(struct sink *base, int timeout_ms)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	uint64_t lost_before = k->unspooled;
	struct spool_stats st;
	int left, rc = 0;

	rd_kafka_flush(k->rk, timeout_ms);
	left = rd_kafka_outq_len(k->rk);
	if (k->spool) {
		/* The stop: what is spooled stays there for the next start. */
		k->flushed = true;
		if (left > 0) {
			log_info(
			    "kafka",
			    "msg=\"Kafka did not take every record in time: the rest goes to the "
			    "spool\" records=%d",
			    left);
			purge_to_spool(k);
			left = rd_kafka_outq_len(k->rk);
		}
		pthread_mutex_lock(&k->lock);
		rc = spool_flush(k->spool, monotonic_ms());
		waiters_settle(k);
		publish_spool_stats(k);
		spool_stats(k->spool, &st);
		pthread_mutex_unlock(&k->lock);
		if (rc < 0)
			log_spool_refusal(k, rc, "writing the spool at flush");
		if (st.bytes > 0)
			log_info("kafka",
			         "msg=\"records wait in the spool for Kafka\" segments=%" PRIu64
			         " bytes=%" PRIu64,
			         st.segments, st.bytes);
	}
	metrics_set_kafka_queue(left);
	if (left > 0)
		return -ETIMEDOUT;
	return rc < 0 ? rc : k->unspooled > lost_before ? -EIO : 0;
}

int sink_kafka_report_fd(struct sink *base)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	static const uint64_t one = 1; /* an eventfd takes 8-byte writes */
	rd_kafka_queue_t *q;

	if (k->report_fd >= 0)
		return k->report_fd;
	k->report_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (k->report_fd < 0)
		return -errno;
	/* Delivery reports are served from the main queue (rd_kafka_poll). */
	q = rd_kafka_queue_get_main(k->rk);
	rd_kafka_queue_io_event_enable(q, k->report_fd, &one, sizeof(one));
	rd_kafka_queue_destroy(q);
	return k->report_fd;
}

void sink_kafka_serve_reports(struct sink *base)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	uint64_t count;

	if (k->report_fd >= 0 && read(k->report_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_error("kafka", "msg=\"reading the report eventfd failed\" err=\"%s\"",
		          strerror(errno));
	rd_kafka_poll(k->rk, 0);
}

static bool kafka_ready(struct sink *base)
{
	struct sink_kafka *k = (struct sink_kafka *)base;

	if (k->fatal)
		return false;
	if (k->spool)
		return !atomic_load_explicit(&k->spool_full, memory_order_relaxed) &&
		       !atomic_load_explicit(&k->spool_failing, memory_order_relaxed);
	return !k->brokers_down;
}

static void kafka_free(struct sink *base)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	int left, rc;

	if (!k)
		return;
	if (k->rk && rd_kafka_outq_len(k->rk) > 0) {
		/* The caller's flush gave up (or never ran): with a spool, what is left goes
		 * there; without, it is reported failed, so the delivery callback counts every
		 * record. */
		purge_to_spool(k);
		left = rd_kafka_outq_len(k->rk);
		if (left > 0)
			log_error("kafka", "records left without a delivery report count=%d", left);
		metrics_set_kafka_queue(left);
	}
	for (int i = 0; i < SINK_STREAM_COUNT; i++)
		if (k->topics[i])
			rd_kafka_topic_destroy(k->topics[i]);
	if (k->rk)
		rd_kafka_destroy(k->rk);
	if (k->report_fd >= 0)
		close(k->report_fd); /* after librdkafka, which writes to it */
	if (k->spool) {
		rc = spool_close(k->spool);
		if (rc < 0)
			log_error("kafka", "closing the spool failed err=\"%s\"", strerror(-rc));
		pthread_mutex_destroy(&k->lock);
	}
	/* Requests still waiting for the spool at this point have been given up (their
	 * threads are gone): nothing to answer. */
	free(k->waiters);
	free(k);
}

static const struct sink_ops kafka_ops = {
    .name = "kafka",
    .write = kafka_write,
    .write_acked = kafka_write_acked,
    .poll = kafka_poll,
    .flush = kafka_flush,
    .ready = kafka_ready,
    .free = kafka_free,
};

/* Sets one property; on failure writes "<label><key>: <librdkafka's reason>" to err. */
static int conf_set(rd_kafka_conf_t *conf, const char *label, const char *key, const char *value,
                    char *err, size_t errlen)
{
	char reason[512];

	if (rd_kafka_conf_set(conf, key, value, reason, sizeof(reason)) == RD_KAFKA_CONF_OK)
		return 0;
	snprintf(err, errlen, "%s%s: %s", label, key, reason);
	return -EINVAL;
}

static rd_kafka_conf_t *make_conf(struct sink_kafka *k, const struct sink_kafka_options *opt,
                                  char *err, size_t errlen)
{
	static const struct sink_kafka_property defaults[] = {
	    {"acks", "all"},
	    {"enable.idempotence", "true"},
	    {"compression.type", "zstd"},
	    {"linger.ms", "5"},
	    /* Five minutes in librdkafka's queue, then the spool (or, without one, a counted
	     * failure); librdkafka's own default is 300000 too, stated here to be sure. */
	    {"message.timeout.ms", "300000"},
	    /* Feeds on_stats, which tells ready() and replay when brokers are back. */
	    {"statistics.interval.ms", "5000"},
	    {"client.id", "clickd"},
	};
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	if (opt->brokers && opt->brokers[0] &&
	    conf_set(conf, "kafka.", "bootstrap.servers", opt->brokers, err, errlen))
		goto fail;
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
		if (conf_set(conf, "", defaults[i].key, defaults[i].value, err, errlen))
			goto fail;
	/* kafka.ack_mode=kafka: every answer waits for its batch, so no batch waits for more
	 * records; librdkafka still batches what comes while a request is in flight. Measured
	 * (README, Acknowledgement mode): 5 ms of linger cost 5 ms per answer and half the
	 * throughput with many connections. [kafka.producer] linger.ms still wins. */
	if (opt->acks && conf_set(conf, "", "linger.ms", "0", err, errlen))
		goto fail;
	for (size_t i = 0; i < opt->producer_count; i++)
		if (conf_set(conf, "kafka.producer.", opt->producer[i].key,
		             opt->producer[i].value ? opt->producer[i].value : "", err, errlen))
			goto fail;
	rd_kafka_conf_set_opaque(conf, k);
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_error_cb(conf, on_error);
	rd_kafka_conf_set_stats_cb(conf, on_stats);
	rd_kafka_conf_set_log_cb(conf, on_log);
	return conf;
fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

/* The high water, kept below librdkafka's own queue bound (queue.buffering.max.messages),
 * so that replay stops before librdkafka answers "queue full". */
static uint64_t high_water_for(const struct sink_kafka_options *opt, rd_kafka_conf_t *conf)
{
	uint64_t hw = opt->spool_high_water ? opt->spool_high_water : SINK_KAFKA_DEFAULT_HIGH_WATER;
	char value[64];
	size_t size = sizeof(value);
	uint64_t max;

	if (rd_kafka_conf_get(conf, "queue.buffering.max.messages", value, &size) !=
	    RD_KAFKA_CONF_OK)
		return hw;
	max = strtoull(value, NULL, 10);
	if (max > 1 && hw >= max) {
		log_warn("kafka",
		         "msg=\"spool.high_water is not below queue.buffering.max.messages; using "
		         "90%% of it\" spool.high_water=%" PRIu64
		         " queue.buffering.max.messages=%" PRIu64,
		         hw, max);
		hw = max - max / 10;
	}
	return hw;
}

struct sink *sink_kafka_new(const struct sink_kafka_options *opt, char *err, size_t errlen)
{
	struct sink_kafka *k = calloc(1, sizeof(*k));
	rd_kafka_conf_t *conf;
	char reason[512];

	if (!k) {
		spool_close(opt->spool);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	k->base.ops = &kafka_ops;
	k->acks = opt->acks;
	k->report_fd = -1;
	if (opt->spool) {
		k->spool = opt->spool;
		pthread_mutex_init(&k->lock, NULL);
		/* Spooled records of an earlier run are replayed first: new ones queue up. */
		k->backlog = !spool_empty(k->spool);
		atomic_init(&k->spooling, k->backlog);
		/* Segments of an earlier run may fill max_bytes already: then clickd is not ready
		 * (and the first records are refused) until replay frees a segment, rather than
		 * ready until the first refusal. */
		if (!spool_has_room(k->spool, SPOOL_START_ROOM_BYTES)) {
			atomic_init(&k->spool_full, true);
			log_warn(
			    "kafka",
			    "msg=\"spool full at start: not ready until replay frees a segment\"");
		}
	}
	conf = make_conf(k, opt, err, errlen);
	if (!conf)
		goto fail;
	k->high_water = high_water_for(opt, conf);
	k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
	if (!k->rk) {
		rd_kafka_conf_destroy(conf); /* rd_kafka_new owns conf only on success */
		snprintf(err, errlen, "kafka: %s", reason);
		goto fail;
	}
	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		if (!opt->topics[i] || !opt->topics[i][0])
			continue;
		k->topics[i] = rd_kafka_topic_new(k->rk, opt->topics[i], NULL);
		if (!k->topics[i]) {
			snprintf(err, errlen, "kafka.topic.%s=%s: %s",
			         sink_stream_name((enum sink_stream)i), opt->topics[i],
			         rd_kafka_err2str(rd_kafka_last_error()));
			goto fail;
		}
	}
	return &k->base;
fail:
	kafka_free(&k->base);
	return NULL;
}
