/*
 * sink_kafka.c - the Kafka sink: a librdkafka producer (see sink.h).
 *
 * Configuration: our defaults first (bootstrap.servers=opt->brokers, acks=all,
 * enable.idempotence=true, compression.type=zstd, linger.ms=5, message.timeout.ms=300000,
 * statistics.interval.ms=5000, client.id=clickd), then every [kafka.producer] property as
 * it is, so the operator can override any of them. One rd_kafka_topic_t per configured
 * stream, made in _new, so write does no topic lookup.
 *
 * Counting: a record is counted once, when librdkafka reports on it: delivered ->
 * clickd_records_out_total{sink="kafka"}, failed -> clickd_sink_failures_total plus a log
 * line (at most one a second, with the number held back). A record librdkafka refuses at
 * once (other than queue full) is counted failed in write. Queue full is not a failure:
 * write answers -EAGAIN and the caller retries or answers 503. Records still queued when
 * the sink is freed are purged, and so reported failed, never dropped silently.
 *
 * Threads: write may be called from several threads at once (the shards and the ingest
 * threads share one producer: rd_kafka_producev is thread-safe, and so is our failure
 * log's rate limit). poll, flush, ready and free come from the main thread only; the
 * delivery, error and statistics callbacks run inside rd_kafka_poll/rd_kafka_flush on that
 * thread, so the fields they touch need no locks.
 *
 * Readiness: false after a fatal error (idempotent producer; permanent), and while all
 * brokers are down: set by librdkafka's ALL_BROKERS_DOWN error, cleared by a delivered
 * message or by the statistics callback seeing a broker UP (so an idle producer taken out
 * of the load balancer still comes back once Kafka does).
 */
#include "clickd/sink.h"

#include "clickd/log.h"
#include "clickd/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#define KAFKA_LOG_INTERVAL_MS 1000
/* How long free waits for the reports of purged messages. */
#define KAFKA_PURGE_WAIT_MS 1000

/* Atomic: write (and so its failure log) is called from several threads at once. */
struct kafka_rate_limit {
	_Atomic int64_t next_ms;     /* monotonic ms before which lines are suppressed */
	_Atomic uint64_t suppressed; /* events not logged since the last line */
};

struct sink_kafka {
	struct sink base;
	rd_kafka_t *rk;                              /* owned */
	rd_kafka_topic_t *topics[SINK_STREAM_COUNT]; /* owned; NULL: no topic configured */
	bool brokers_down;
	bool fatal;
	struct kafka_rate_limit delivery_log;
	struct kafka_rate_limit error_log;
	struct kafka_rate_limit write_log;
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

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct sink_kafka *k = opaque;
	enum sink_stream stream = (enum sink_stream)metrics_handoff_tag(m->_private);
	uint64_t suppressed;
	char reason[256];

	if ((unsigned)stream >= SINK_STREAM_COUNT)
		stream = SINK_EVENTS; /* not ours: cannot happen, but never index out of range */
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		k->brokers_down = false;
		metrics_sink_out(METRICS_SINK_KAFKA, stream, 1);
		metrics_handoff_delivered(HIST_EVENT_TO_SINK_KAFKA, m->_private);
		return;
	}
	metrics_sink_failed(METRICS_SINK_KAFKA, stream, 1);
	if (rate_limit_pass(&k->delivery_log, &suppressed))
		log_error("kafka",
		          "delivery failed topic=%s stream=%s err=\"%s\" more_failures=%" PRIu64,
		          rd_kafka_topic_name(m->rkt), sink_stream_name(stream),
		          quotable(rd_kafka_err2str(m->err), reason, sizeof(reason)), suppressed);
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
		log_error("kafka", "fatal error err=%s reason=\"%s\"", rd_kafka_err2name(orig),
		          quotable(fatal, buf, sizeof(buf)));
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
		k->brokers_down = true;
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

static int kafka_write(struct sink *base, enum sink_stream stream, const char *key, size_t key_len,
                       const char *record, size_t record_len)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	rd_kafka_resp_err_t err;
	uint64_t suppressed;

	if ((unsigned)stream >= SINK_STREAM_COUNT)
		return -EINVAL;
	if (!k->topics[stream]) {
		metrics_sink_failed(METRICS_SINK_KAFKA, stream, 1);
		if (rate_limit_pass(&k->write_log, &suppressed))
			log_error("kafka", "no topic configured stream=%s more_failures=%" PRIu64,
			          sink_stream_name(stream), suppressed);
		return -EINVAL;
	}
	err = rd_kafka_producev(
	    k->rk, RD_KAFKA_V_RKT(k->topics[stream]), RD_KAFKA_V_KEY(key_len ? key : NULL, key_len),
	    RD_KAFKA_V_VALUE((void *)record, record_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
	    /* The stream, and the event's receive time for clickd_event_to_sink_seconds. */
	    RD_KAFKA_V_OPAQUE(metrics_handoff_claim((unsigned)stream)), RD_KAFKA_V_END);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
		return -EAGAIN;
	metrics_sink_failed(METRICS_SINK_KAFKA, stream, 1);
	if (rate_limit_pass(&k->write_log, &suppressed))
		log_error("kafka", "produce failed topic=%s err=\"%s\" more_failures=%" PRIu64,
		          rd_kafka_topic_name(k->topics[stream]), rd_kafka_err2str(err),
		          suppressed);
	return errno_of(err);
}

static int kafka_poll(struct sink *base, int64_t now_ms)
{
	struct sink_kafka *k = (struct sink_kafka *)base;

	rd_kafka_poll(k->rk, 0);
	metrics_set_kafka_queue(rd_kafka_outq_len(k->rk));
	return 0;
}

static int kafka_flush(struct sink *base, int timeout_ms)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	int left;

	rd_kafka_flush(k->rk, timeout_ms);
	left = rd_kafka_outq_len(k->rk);
	metrics_set_kafka_queue(left);
	return left > 0 ? -ETIMEDOUT : 0;
}

static bool kafka_ready(struct sink *base)
{
	struct sink_kafka *k = (struct sink_kafka *)base;

	return !k->fatal && !k->brokers_down;
}

static void kafka_free(struct sink *base)
{
	struct sink_kafka *k = (struct sink_kafka *)base;
	int left;

	if (!k)
		return;
	if (k->rk && rd_kafka_outq_len(k->rk) > 0) {
		/* The caller's flush gave up: fail what is left, so the delivery callback counts
		 * every record. */
		rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		rd_kafka_flush(k->rk, KAFKA_PURGE_WAIT_MS);
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
	free(k);
}

static const struct sink_ops kafka_ops = {
    .name = "kafka",
    .write = kafka_write,
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
	    /* Five minutes in librdkafka's queue, then a counted failure (and later the
	     * spool); librdkafka's own default is 300000 too, stated here to be sure. */
	    {"message.timeout.ms", "300000"},
	    /* Feeds on_stats, which tells ready() when brokers are back. */
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

struct sink *sink_kafka_new(const struct sink_kafka_options *opt, char *err, size_t errlen)
{
	struct sink_kafka *k = calloc(1, sizeof(*k));
	rd_kafka_conf_t *conf;
	char reason[512];

	if (!k) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	k->base.ops = &kafka_ops;
	conf = make_conf(k, opt, err, errlen);
	if (!conf)
		goto fail;
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
