/*
 * test_sink_kafka.c - the Kafka sink (sink.h) against librdkafka's in-process mock cluster:
 * deliveries counted, bad properties named, and failed deliveries counted as failed (never
 * silent) under injected broker errors, with brokers down and with an unreachable broker;
 * with the disk spool (sink_kafka_spool): records spooled while the broker is down and
 * replayed in order, failed deliveries spooled, a full spool answered "full", the spool of
 * a last run replayed first, and what the stop leaves spooled; with ack tokens
 * (kafka.ack_mode=kafka, sink_kafka_ack): completed when delivered, failed when refused for
 * good, and, through the spool, only once the spool has the record on disk. The real-broker
 * tests are in tests/integration.
 */
#include "clickd/ack.h"
#include "clickd/metrics.h"
#include "clickd/sink.h"
#include "clickd/spool.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Timeouts scale with CLICKD_TEST_TIMEOUT_MULTIPLIER, for slow machines. */
static int scaled_ms(int ms)
{
	const char *m = getenv("CLICKD_TEST_TIMEOUT_MULTIPLIER");
	int k = m ? atoi(m) : 1;

	return ms * (k > 0 ? k : 1);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Where the sinks made by the tests complete ack tokens (kafka.ack_mode; NULL: none). */
static struct ack_hub *test_acks;

static struct sink *new_sink(const char *brokers, const struct sink_kafka_property *props,
                             size_t count)
{
	struct sink_kafka_options opt = {
	    .brokers = brokers,
	    .topics = {"clickd.events", "clickd.touchpoints", "clickd.dead_letters"},
	    .producer = props,
	    .producer_count = count,
	    .acks = test_acks,
	};
	char err[512] = "";
	struct sink *s = sink_kafka_new(&opt, err, sizeof(err));

	cr_assert_not_null(s, "%s", err);
	return s;
}

static void produce(struct sink *s, enum sink_stream stream, int n)
{
	char rec[64], key[16];

	for (int i = 0; i < n; i++) {
		int klen = snprintf(key, sizeof(key), "v%d", i % 7);
		int rlen = snprintf(rec, sizeof(rec), "{\"event_id\":\"e%d\"}", i);
		cr_assert_eq(sink_write(s, stream, key, (size_t)klen, rec, (size_t)rlen, 0), 0);
	}
}

/* Polls until delivered + failed reaches n or the deadline passes. */
static void poll_until_reported(struct sink *s, enum sink_stream stream, uint64_t n, int ms)
{
	int64_t deadline = now_ms() + scaled_ms(ms);

	while (now_ms() < deadline && metrics_sink_out_get(METRICS_SINK_KAFKA, stream) +
	                                      metrics_sink_failed_get(METRICS_SINK_KAFKA, stream) <
	                                  n) {
		s->ops->poll(s, now_ms());
		struct timespec pause = {0, 10 * 1000000};
		nanosleep(&pause, NULL);
	}
}

Test(sink_kafka, counts_every_delivered_record)
{
	const struct sink_kafka_property props[] = {{"test.mock.num.brokers", "1"}};
	struct sink *s = new_sink("", props, 1);

	produce(s, SINK_EVENTS, 500);
	produce(s, SINK_DEAD_LETTERS, 20);
	cr_assert_eq(s->ops->flush(s, scaled_ms(20000)), 0);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 500);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_DEAD_LETTERS), 20);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);
	cr_assert(s->ops->ready(s));
	s->ops->free(s);
}

Test(sink_kafka, lets_pass_through_properties_override_the_defaults)
{
	/* acks=1 overrides our acks=all, which idempotence then refuses: proof that the
	 * pass-through comes last; librdkafka's reason names the conflict. */
	const struct sink_kafka_property props[] = {{"test.mock.num.brokers", "1"}, {"acks", "1"}};
	struct sink_kafka_options opt = {.producer = props, .producer_count = 2};
	char err[512] = "";

	cr_assert_null(sink_kafka_new(&opt, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "acks"), "%s", err);

	const struct sink_kafka_property ok[] = {
	    {"test.mock.num.brokers", "1"}, {"acks", "1"}, {"enable.idempotence", "false"}};
	struct sink *s = new_sink("", ok, 3);
	produce(s, SINK_EVENTS, 10);
	cr_assert_eq(s->ops->flush(s, scaled_ms(20000)), 0);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 10);
	s->ops->free(s);
}

Test(sink_kafka, names_an_unknown_property)
{
	const struct sink_kafka_property props[] = {{"linger.ms", "5"}, {"no.such.property", "1"}};
	struct sink_kafka_options opt = {
	    .brokers = "127.0.0.1:1", .producer = props, .producer_count = 2};
	char err[512] = "";

	cr_assert_null(sink_kafka_new(&opt, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "kafka.producer.no.such.property"), "%s", err);
}

Test(sink_kafka, names_a_property_with_a_bad_value)
{
	const struct sink_kafka_property props[] = {{"compression.type", "rot13"}};
	struct sink_kafka_options opt = {
	    .brokers = "127.0.0.1:1", .producer = props, .producer_count = 1};
	char err[512] = "";

	cr_assert_null(sink_kafka_new(&opt, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "kafka.producer.compression.type"), "%s", err);
}

/* The Produce request's ApiKey in the Kafka protocol (librdkafka's RD_KAFKAP_Produce is
 * not in its public headers). */
#define KAFKA_API_PRODUCE 0

/* A mock cluster of our own, so the test can inject faults into it. */
struct mock {
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *cluster;
};

static void mock_start(struct mock *m)
{
	char err[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	cr_assert_not_null(m->rk, "%s", err);
	m->cluster = rd_kafka_mock_cluster_new(m->rk, 1);
	cr_assert_not_null(m->cluster);
	cr_assert_eq(rd_kafka_mock_topic_create(m->cluster, "clickd.events", 1, 1), 0);
}

static void mock_stop(struct mock *m)
{
	rd_kafka_mock_cluster_destroy(m->cluster);
	rd_kafka_destroy(m->rk);
}

Test(sink_kafka, counts_a_delivery_refused_by_the_broker_as_failed)
{
	struct mock m;
	mock_start(&m);
	/* Not retriable: each of these produce requests fails its message for good. */
	rd_kafka_mock_push_request_errors(
	    m.cluster, KAFKA_API_PRODUCE, 3, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
	    RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
	struct sink *s = new_sink(rd_kafka_mock_cluster_bootstraps(m.cluster), NULL, 0);
	produce(s, SINK_EVENTS, 1);
	poll_until_reported(s, SINK_EVENTS, 1, 20000);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 1);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);

	/* The failure is per message: the next ones, once the errors are used up, go through. */
	rd_kafka_mock_clear_request_errors(m.cluster, KAFKA_API_PRODUCE);
	produce(s, SINK_EVENTS, 5);
	cr_assert_eq(s->ops->flush(s, scaled_ms(20000)), 0);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 5);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 1);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka, counts_records_that_time_out_while_the_broker_is_down)
{
	struct mock m;
	const struct sink_kafka_property props[] = {{"message.timeout.ms", "1500"}};

	mock_start(&m);
	struct sink *s = new_sink(rd_kafka_mock_cluster_bootstraps(m.cluster), props, 1);
	produce(s, SINK_EVENTS, 3);
	cr_assert_eq(s->ops->flush(s, scaled_ms(20000)), 0);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 3);

	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	produce(s, SINK_EVENTS, 7);
	poll_until_reported(s, SINK_EVENTS, 10, 20000);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 7);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 3);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka, counts_failures_and_is_not_ready_with_an_unreachable_broker)
{
	const struct sink_kafka_property props[] = {{"message.timeout.ms", "1000"},
	                                            {"reconnect.backoff.ms", "50"}};
	struct sink *s = new_sink("127.0.0.1:1", props, 2);
	int64_t deadline;

	produce(s, SINK_EVENTS, 4);
	produce(s, SINK_TOUCHPOINTS, 2);
	cr_assert_eq(s->ops->flush(s, scaled_ms(20000)), 0);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 4);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_TOUCHPOINTS), 2);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);
	deadline = now_ms() + scaled_ms(10000);
	while (s->ops->ready(s) && now_ms() < deadline)
		s->ops->poll(s, now_ms());
	cr_assert_not(s->ops->ready(s));
	s->ops->free(s);
}

Test(sink_kafka, counts_records_still_queued_at_free_as_failed)
{
	struct sink *s = new_sink("127.0.0.1:1", NULL, 0);

	produce(s, SINK_EVENTS, 9);
	cr_assert_eq(s->ops->flush(s, 100), -ETIMEDOUT);
	s->ops->free(s);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 9);
}

Test(sink_kafka, answers_eagain_when_the_queue_is_full)
{
	const struct sink_kafka_property props[] = {{"queue.buffering.max.messages", "5"}};
	struct sink *s = new_sink("127.0.0.1:1", props, 1);
	const char rec[] = "{}";
	int rc = 0, i;

	for (i = 0; i < 100 && rc == 0; i++)
		rc = sink_write(s, SINK_EVENTS, NULL, 0, rec, 2, 0);
	cr_assert_eq(rc, -EAGAIN);
	cr_assert_eq(i, 6);
	/* Queue full is "try again", not a failure. */
	s->ops->free(s);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 5);
}

Test(sink_kafka, refuses_and_counts_a_stream_without_a_topic)
{
	struct sink_kafka_options opt = {.brokers = "127.0.0.1:1", .topics = {"clickd.events"}};
	char err[256] = "";
	struct sink *s = sink_kafka_new(&opt, err, sizeof(err));

	cr_assert_not_null(s, "%s", err);
	cr_assert_eq(sink_write(s, SINK_TOUCHPOINTS, NULL, 0, "{}", 2, 0), -EINVAL);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_TOUCHPOINTS), 1);
	s->ops->free(s);
}

/* Polls until ready() equals want or the deadline passes. */
static bool wait_ready(struct sink *s, bool want, int ms)
{
	int64_t deadline = now_ms() + scaled_ms(ms);

	while (s->ops->ready(s) != want && now_ms() < deadline) {
		s->ops->poll(s, now_ms());
		struct timespec pause = {0, 10 * 1000000};
		nanosleep(&pause, NULL);
	}
	return s->ops->ready(s) == want;
}

Test(sink_kafka, is_unready_while_all_brokers_are_down_and_ready_again_without_traffic)
{
	struct mock m;
	const struct sink_kafka_property props[] = {{"statistics.interval.ms", "100"},
	                                            {"reconnect.backoff.ms", "50"},
	                                            {"reconnect.backoff.max.ms", "200"}};

	mock_start(&m);
	struct sink *s = new_sink(rd_kafka_mock_cluster_bootstraps(m.cluster), props, 3);
	produce(s, SINK_EVENTS, 1);
	cr_assert_eq(s->ops->flush(s, scaled_ms(20000)), 0);
	cr_assert(s->ops->ready(s));

	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	cr_assert(wait_ready(s, false, 10000), "still ready with every broker down");
	/* No message in flight: only the statistics can tell that Kafka is back. */
	cr_assert_eq(rd_kafka_mock_broker_set_up(m.cluster, 1), 0);
	cr_assert(wait_ready(s, true, 10000), "not ready again after the broker came back");
	s->ops->free(s);
	mock_stop(&m);
}

/* ---- with the disk spool ---- */

static char spool_dir[64];

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char sub[512];

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		if (unlink(sub) != 0)
			remove_tree(sub);
	}
	closedir(d);
	rmdir(path);
}

static void make_spool_dir(void)
{
	strcpy(spool_dir, "/tmp/clickd-test-kspool-XXXXXX");
	cr_assert_not_null(mkdtemp(spool_dir));
}

static void remove_spool_dir(void)
{
	remove_tree(spool_dir);
}

static struct spool *open_spool(uint64_t max_bytes)
{
	struct spool_options o = {
	    .dir = spool_dir,
	    .max_bytes = max_bytes,
	    .segment_bytes = 32 * 1024, /* small segments: deleted as replay goes */
	    .batch_bytes = 8 * 1024,
	    .fsync = SPOOL_FSYNC_NEVER,
	};
	struct spool *sp;
	char err[256] = "";

	cr_assert_eq(spool_open(&sp, &o, err, sizeof(err)), 0, "%s", err);
	return sp;
}

/* A sink on the mock cluster that notices brokers going and coming within a second. */
static struct sink *new_spooled_sink(struct mock *m, struct spool *sp,
                                     const struct sink_kafka_property *more, size_t more_count)
{
	struct sink_kafka_property props[16] = {{"statistics.interval.ms", "100"},
	                                        {"reconnect.backoff.ms", "50"},
	                                        {"reconnect.backoff.max.ms", "200"},
	                                        {"log_level", "0"}};
	size_t n = 4;
	struct sink_kafka_options opt = {
	    .brokers = rd_kafka_mock_cluster_bootstraps(m->cluster),
	    .topics = {"clickd.events", "clickd.touchpoints", "clickd.dead_letters"},
	    .producer = props,
	    .spool = sp,
	    .acks = test_acks,
	};
	char err[512] = "";
	struct sink *s;

	for (size_t i = 0; i < more_count && n < 16; i++)
		props[n++] = more[i];
	opt.producer_count = n;
	s = sink_kafka_new(&opt, err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	return s;
}

/* Event n: key v<n % 7>, value {"n":n}. Returns the sink's answer. */
static int write_numbered(struct sink *s, int n)
{
	char rec[64], key[16];
	int klen = snprintf(key, sizeof(key), "v%d", n % 7);
	int rlen = snprintf(rec, sizeof(rec), "{\"n\":%d}", n);

	return sink_write(s, SINK_EVENTS, key, (size_t)klen, rec, (size_t)rlen, 0);
}

static void write_range(struct sink *s, int from, int to)
{
	for (int n = from; n < to; n++)
		cr_assert_eq(write_numbered(s, n), 0, "record %d", n);
}

static void pause_ms(int ms)
{
	struct timespec pause = {0, ms * 1000000L};
	nanosleep(&pause, NULL);
}

/* Polls until the spool takes new records (Kafka seen away) or the deadline passes. */
static bool wait_spooling(struct sink *s, bool want, int ms)
{
	int64_t deadline = now_ms() + scaled_ms(ms);

	for (;;) {
		s->ops->poll(s, now_ms());
		if ((metrics_gauge_get(GAUGE_SPOOL_ACTIVE) != 0) == want)
			return true;
		if (now_ms() >= deadline)
			return false;
		pause_ms(10);
	}
}

/* Polls until n events are delivered and the spool is empty, or the deadline passes. */
static bool wait_delivered(struct sink *s, uint64_t n, int ms)
{
	int64_t deadline = now_ms() + scaled_ms(ms);

	for (;;) {
		s->ops->poll(s, now_ms());
		if (metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS) >= n &&
		    metrics_gauge_get(GAUGE_SPOOL_BYTES) == 0)
			return true;
		if (now_ms() >= deadline)
			return false;
		pause_ms(10);
	}
}

/* Reads partition 0 of the topic from the start: the n of each {"n":n,...} value, in
 * order, until `expected` are read (or the deadline), then a little longer to catch any
 * record too many. Returns how many (at most cap). */
static size_t consume_numbers(struct mock *m, const char *topic, int *out, size_t cap,
                              size_t expected, int ms)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
	int64_t deadline = now_ms() + scaled_ms(ms);
	size_t n = 0;
	char err[256];
	rd_kafka_t *c;

	rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(m->cluster),
	                  err, sizeof(err));
	rd_kafka_conf_set(conf, "group.id", "test", err, sizeof(err));
	rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	cr_assert_eq(rd_kafka_assign(c, parts), 0);
	rd_kafka_topic_partition_list_destroy(parts);
	while (n < cap && now_ms() < deadline) {
		rd_kafka_message_t *msg = rd_kafka_consumer_poll(c, 100);
		char text[32];
		size_t len;

		if (n == expected && deadline > now_ms() + 500)
			deadline = now_ms() + 500; /* all in: only look for extras now */
		if (!msg)
			continue;
		if (!msg->err) {
			len = msg->len < sizeof(text) - 1 ? msg->len : sizeof(text) - 1;
			memcpy(text, msg->payload, len);
			text[len] = '\0';
			cr_assert_eq(sscanf(text, "{\"n\":%d", &out[n]), 1, "%s", text);
			n++;
		}
		rd_kafka_message_destroy(msg);
	}
	rd_kafka_consumer_close(c);
	rd_kafka_destroy(c);
	return n;
}

/* Every number 0..n-1 once, in order. */
static void assert_in_order(struct mock *m, int n)
{
	int *got = calloc((size_t)n + 16, sizeof(int));
	size_t count = consume_numbers(m, "clickd.events", got, (size_t)n + 16, (size_t)n, 20000);

	cr_assert_eq(count, (size_t)n, "records in the topic");
	for (int i = 0; i < n; i++)
		cr_assert_eq(got[i], i, "record %d of the topic is %d", i, got[i]);
	free(got);
}

TestSuite(sink_kafka_spool, .init = make_spool_dir, .fini = remove_spool_dir, .timeout = 120);

Test(sink_kafka_spool, a_sink_that_cannot_start_closes_the_spool_it_was_given)
{
	const struct sink_kafka_property props[] = {{"no.such.property", "1"}};
	struct sink_kafka_options opt = {.brokers = "127.0.0.1:1",
	                                 .producer = props,
	                                 .producer_count = 1,
	                                 .spool = open_spool(1 << 20)};
	char err[256] = "";

	cr_assert_null(sink_kafka_new(&opt, err, sizeof(err)));
	/* Closed, so unlocked: the directory opens again. */
	spool_close(open_spool(1 << 20));
}

Test(sink_kafka_spool, spools_while_the_broker_is_down_and_replays_in_order_when_it_is_back)
{
	struct mock m;
	struct sink *s;

	mock_start(&m);
	s = new_spooled_sink(&m, open_spool(64 << 20), NULL, 0);
	write_range(s, 0, 100);
	cr_assert(wait_delivered(s, 100, 20000));
	cr_assert_not(wait_spooling(s, true, 0), "no spooling while Kafka takes records");

	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	/* Records written before the sink notices wait in librdkafka's queue; after, they go to
	 * the spool. Either way they must come out in the order they were written. */
	int n = 100;
	int64_t deadline = now_ms() + scaled_ms(20000);
	while (metrics_gauge_get(GAUGE_SPOOL_ACTIVE) == 0 && now_ms() < deadline) {
		cr_assert_eq(write_numbered(s, n++), 0);
		s->ops->poll(s, now_ms());
		pause_ms(5);
	}
	cr_assert(metrics_gauge_get(GAUGE_SPOOL_ACTIVE), "never spooled with the broker down");
	int queued = n - 100;
	write_range(s, n, n + 3000);
	n += 3000;
	s->ops->poll(s, now_ms());
	cr_assert_geq(metrics_get(METRIC_SPOOL_SPOOLED), 3000);
	cr_assert_gt(metrics_gauge_get(GAUGE_SPOOL_BYTES), 0);
	cr_assert(s->ops->ready(s), "the spool takes records: still ready");
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 100);

	cr_assert_eq(rd_kafka_mock_broker_set_up(m.cluster, 1), 0);
	cr_assert(wait_delivered(s, (uint64_t)n, 30000), "delivered %llu of %d",
	          (unsigned long long)metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), n);
	cr_assert(wait_spooling(s, false, 10000), "spooling still on once the spool is empty");
	cr_assert_eq(metrics_get(METRIC_SPOOL_REPLAYED), metrics_get(METRIC_SPOOL_SPOOLED));
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);
	cr_assert_eq(metrics_gauge_get(GAUGE_SPOOL_SEGMENTS), 0);
	/* And new records go straight to Kafka again. */
	write_range(s, n, n + 10);
	n += 10;
	cr_assert(wait_delivered(s, (uint64_t)n, 20000));
	assert_in_order(&m, n);
	(void)queued;
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka_spool, spools_a_failed_delivery_and_delivers_it_when_kafka_is_back)
{
	const struct sink_kafka_property props[] = {{"message.timeout.ms", "1000"}};
	struct mock m;
	struct sink *s;

	mock_start(&m);
	s = new_spooled_sink(&m, open_spool(64 << 20), props, 1);
	write_range(s, 0, 1);
	cr_assert(wait_delivered(s, 1, 20000));
	/* Down, and written at once: librdkafka takes them, then gives up after 1 s. */
	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	write_range(s, 1, 6);
	int64_t deadline = now_ms() + scaled_ms(20000);
	while (metrics_get(METRIC_SPOOL_SPOOLED) < 5 && now_ms() < deadline) {
		s->ops->poll(s, now_ms());
		pause_ms(10);
	}
	cr_assert_eq(metrics_get(METRIC_SPOOL_SPOOLED), 5, "failed deliveries spooled");
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0,
	             "a spooled failure is no loss");
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 1);
	/* Newer records queue up behind them. */
	write_range(s, 6, 10);
	cr_assert_eq(rd_kafka_mock_broker_set_up(m.cluster, 1), 0);
	cr_assert(wait_delivered(s, 10, 30000));
	assert_in_order(&m, 10);
	s->ops->free(s);
	mock_stop(&m);
}

/* Records of about 1 KiB that zstd cannot shrink, so that the spool fills predictably. */
static int write_big(struct sink *s, int n)
{
	char rec[1100], key[16];
	int klen = snprintf(key, sizeof(key), "v%d", n % 7);
	int len = snprintf(rec, sizeof(rec), "{\"n\":%d,\"pad\":\"", n);
	uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(n + 1);

	while (len < 1024) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		rec[len++] = (char)('a' + x % 26);
	}
	len += snprintf(rec + len, sizeof(rec) - (size_t)len, "\"}");
	return sink_write(s, SINK_EVENTS, key, (size_t)klen, rec, (size_t)len, 0);
}

Test(sink_kafka_spool, answers_full_and_is_not_ready_while_the_spool_is_full)
{
	/* librdkafka's queue holds 10: the 11th record finds it full and goes to the spool. */
	const struct sink_kafka_property props[] = {{"queue.buffering.max.messages", "10"}};
	struct mock m;
	struct sink *s;
	int n = 0, rc = 0;

	mock_start(&m);
	s = new_spooled_sink(&m, open_spool(256 * 1024), props, 1);
	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	while (n < 10000 && (rc = write_big(s, n)) == 0)
		n++;
	cr_assert_eq(rc, -EAGAIN, "the sink says full, not failed");
	cr_assert_gt(n, 100, "only %d records before full", n);
	cr_assert_lt(n, 1000, "%d records in 256 KiB", n);
	s->ops->poll(s, now_ms());
	cr_assert_not(s->ops->ready(s), "ready with a full spool");
	cr_assert_eq(metrics_gauge_get(GAUGE_SPOOL_FULL), 1);
	cr_assert_geq(metrics_get(METRIC_SPOOL_FULL_REFUSALS), 1);
	cr_assert_eq(write_big(s, n), -EAGAIN, "still full");
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);

	/* Kafka back: replay frees segments, the refused record goes in, ready again. */
	cr_assert_eq(rd_kafka_mock_broker_set_up(m.cluster, 1), 0);
	int64_t deadline = now_ms() + scaled_ms(30000);
	while ((rc = write_big(s, n)) == -EAGAIN && now_ms() < deadline) {
		s->ops->poll(s, now_ms());
		pause_ms(10);
	}
	cr_assert_eq(rc, 0, "the spool never took records again");
	n++;
	cr_assert(s->ops->ready(s));
	cr_assert(wait_delivered(s, (uint64_t)n, 30000), "delivered %llu of %d",
	          (unsigned long long)metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), n);
	s->ops->poll(s, now_ms());
	cr_assert_eq(metrics_gauge_get(GAUGE_SPOOL_FULL), 0);
	assert_in_order(&m, n);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka_spool, replays_the_spool_of_the_last_run_before_new_records)
{
	struct mock m;
	struct sink *s;

	mock_start(&m);
	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	s = new_spooled_sink(&m, open_spool(64 << 20), NULL, 0);
	cr_assert(wait_spooling(s, true, 20000), "the first run never saw Kafka away");
	write_range(s, 0, 500);
	cr_assert_eq(s->ops->flush(s, 100), 0, "every record is in the spool");
	s->ops->free(s);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);

	/* The next run: Kafka is there, but the spool goes first. */
	cr_assert_eq(rd_kafka_mock_broker_set_up(m.cluster, 1), 0);
	s = new_spooled_sink(&m, open_spool(64 << 20), NULL, 0);
	write_range(s, 500, 600);
	cr_assert_eq(metrics_gauge_get(GAUGE_KAFKA_QUEUE), 0);
	s->ops->poll(s, now_ms());
	cr_assert_eq(metrics_get(METRIC_SPOOL_SPOOLED), 600, "new records queue up behind");
	cr_assert(wait_delivered(s, 600, 30000), "delivered %llu of 600",
	          (unsigned long long)metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS));
	assert_in_order(&m, 600);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka_spool, flush_at_stop_moves_what_kafka_did_not_take_to_the_spool)
{
	struct mock m;
	struct sink *s;

	mock_start(&m);
	s = new_spooled_sink(&m, open_spool(64 << 20), NULL, 0);
	write_range(s, 0, 1);
	cr_assert(wait_delivered(s, 1, 20000));
	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	write_range(s, 1, 50); /* in librdkafka's queue: the sink has not noticed yet */
	cr_assert_eq(s->ops->flush(s, 200), 0, "nothing lost: the rest is in the spool");
	s->ops->free(s);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);

	cr_assert_eq(rd_kafka_mock_broker_set_up(m.cluster, 1), 0);
	s = new_spooled_sink(&m, open_spool(64 << 20), NULL, 0);
	cr_assert(wait_delivered(s, 50, 30000));
	assert_in_order(&m, 50);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka_spool, drops_and_counts_a_spooled_record_the_broker_refuses_for_good)
{
	struct mock m;
	struct sink *s;

	mock_start(&m);
	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	s = new_spooled_sink(&m, open_spool(64 << 20), NULL, 0);
	cr_assert(wait_spooling(s, true, 20000));
	write_range(s, 0, 3);
	/* The first replayed produce request fails for good; the rest go through. */
	rd_kafka_mock_push_request_errors(m.cluster, KAFKA_API_PRODUCE, 1,
	                                  RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
	cr_assert_eq(rd_kafka_mock_broker_set_up(m.cluster, 1), 0);
	int64_t deadline = now_ms() + scaled_ms(30000);
	while (metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS) +
	               metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS) <
	           3 &&
	       now_ms() < deadline) {
		s->ops->poll(s, now_ms());
		pause_ms(10);
	}
	cr_assert_geq(metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS), 1);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS) +
	                 metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS),
	             3);
	cr_assert(wait_delivered(s, metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 10000),
	          "the spool empties: a record refused for good is not replayed forever");
	s->ops->free(s);
	mock_stop(&m);
}

/* ---- ack tokens (kafka.ack_mode=kafka) ---- */

struct ack_results {
	int count;
	enum ack_result last;
};

static void on_ack(void *ud, int slot, enum ack_result result)
{
	struct ack_results *r = ud;

	(void)slot;
	r->count++;
	r->last = result;
}

static void make_acks(void)
{
	make_spool_dir();
	test_acks = ack_hub_new(1, 16);
	cr_assert_not_null(test_acks);
}

static void free_acks(void)
{
	/* The sinks of a test are freed before it ends: nothing completes into it now. */
	ack_hub_free(test_acks);
	test_acks = NULL;
	remove_spool_dir();
}

TestSuite(sink_kafka_ack, .init = make_acks, .fini = free_acks, .timeout = 120);

/* A request waiting for `events` records: its slot in table 0, its token in *token. */
static int wait_for_events(uint32_t events, uint64_t *token)
{
	struct ack_table *t = ack_hub_table(test_acks, 0);
	int slot = ack_take(t, token);

	cr_assert_geq(slot, 0);
	ack_arm(t, slot, events, 1800000000000LL, INT64_MAX);
	return slot;
}

static int write_acked(struct sink *s, int n, uint64_t token)
{
	char rec[64], key[16];
	int klen = snprintf(key, sizeof(key), "v%d", n % 7);
	int rlen = snprintf(rec, sizeof(rec), "{\"n\":%d}", n);

	return sink_write_acked(s, SINK_EVENTS, key, (size_t)klen, rec, (size_t)rlen,
	                        1800000000000LL, token);
}

/* Polls the sink until the request is answered (or the deadline passes). */
static struct ack_results poll_until_answered(struct sink *s, int ms)
{
	struct ack_table *t = ack_hub_table(test_acks, 0);
	struct ack_results r = {0};
	int64_t deadline = now_ms() + scaled_ms(ms);

	while (r.count == 0 && now_ms() < deadline) {
		s->ops->poll(s, now_ms());
		ack_collect(t, on_ack, &r);
		if (r.count == 0)
			pause_ms(10);
	}
	return r;
}

Test(sink_kafka_ack, answers_a_request_once_kafka_has_delivered_each_of_its_records)
{
	const struct sink_kafka_property props[] = {{"test.mock.num.brokers", "1"}};
	struct sink *s = new_sink("", props, 1);
	struct ack_results r = {0};
	uint64_t token;
	uint64_t observed = metrics_histogram_count(HIST_EVENT_TO_SINK_KAFKA);

	wait_for_events(3, &token);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(write_acked(s, i, token), 0);
	/* Delivery reports are served by poll only: nothing can be answered before. */
	cr_assert_eq(ack_collect(ack_hub_table(test_acks, 0), on_ack, &r), 0);
	r = poll_until_answered(s, 20000);
	cr_assert_eq(r.count, 1);
	cr_assert_eq(r.last, ACK_DURABLE);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 3);
	cr_assert_eq(metrics_histogram_count(HIST_EVENT_TO_SINK_KAFKA), observed + 3,
	             "the receive time came back with the completions");
	s->ops->free(s);
}

Test(sink_kafka_ack, answers_failed_when_the_broker_refuses_a_record_for_good)
{
	struct mock m;
	uint64_t token;

	mock_start(&m);
	rd_kafka_mock_push_request_errors(m.cluster, KAFKA_API_PRODUCE, 1,
	                                  RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
	struct sink *s = new_sink(rd_kafka_mock_cluster_bootstraps(m.cluster), NULL, 0);
	wait_for_events(1, &token);
	cr_assert_eq(write_acked(s, 0, token), 0);
	struct ack_results r = poll_until_answered(s, 20000);
	cr_assert_eq(r.count, 1);
	cr_assert_eq(r.last, ACK_FAILED);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka_ack, answers_a_spooled_record_only_once_the_spool_has_it_on_disk)
{
	struct mock m;
	struct ack_table *t;
	struct ack_results r = {0};
	struct sink *s;
	uint64_t token;

	mock_start(&m);
	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	s = new_spooled_sink(&m, open_spool(64 << 20), NULL, 0);
	t = ack_hub_table(test_acks, 0);
	cr_assert(wait_spooling(s, true, 20000), "never saw Kafka away");
	wait_for_events(2, &token);
	cr_assert_eq(write_acked(s, 0, token), 0);
	cr_assert_eq(write_acked(s, 1, token), 0);
	/* In the spool's batch, in memory: not durable yet. */
	cr_assert_eq(ack_collect(t, on_ack, &r), 0);
	r = poll_until_answered(s, 20000); /* the poll writes the batch */
	cr_assert_eq(r.count, 1);
	cr_assert_eq(r.last, ACK_DURABLE);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);
	cr_assert_geq(metrics_get(METRIC_SPOOL_SPOOLED), 2);
	cr_assert_eq(metrics_gauge_get(GAUGE_ACK_PENDING), 0);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka_ack, answers_a_failed_delivery_once_it_is_spooled)
{
	const struct sink_kafka_property props[] = {{"message.timeout.ms", "1000"}};
	struct mock m;
	struct sink *s;
	uint64_t token;

	mock_start(&m);
	s = new_spooled_sink(&m, open_spool(64 << 20), props, 1);
	cr_assert(wait_delivered(s, 0, 20000));
	/* Down, and written at once: librdkafka takes it, gives up after 1 s, and the report
	 * spools it; the request is answered from the spool. */
	cr_assert_eq(rd_kafka_mock_broker_set_down(m.cluster, 1), 0);
	wait_for_events(1, &token);
	cr_assert_eq(write_acked(s, 0, token), 0);
	struct ack_results r = poll_until_answered(s, 30000);
	cr_assert_eq(r.count, 1);
	cr_assert_eq(r.last, ACK_DURABLE);
	cr_assert_eq(metrics_get(METRIC_SPOOL_SPOOLED), 1);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 0);
	s->ops->free(s);
	mock_stop(&m);
}

Test(sink_kafka_ack, ignores_the_completion_of_a_request_that_no_longer_waits)
{
	const struct sink_kafka_property props[] = {{"test.mock.num.brokers", "1"}};
	struct sink *s = new_sink("", props, 1);
	struct ack_table *t = ack_hub_table(test_acks, 0);
	struct ack_results r = {0};
	uint64_t token;
	int slot = wait_for_events(1, &token);

	cr_assert_eq(write_acked(s, 0, token), 0);
	ack_release(t, slot); /* timed out, or its client went away */
	cr_assert_eq(s->ops->flush(s, scaled_ms(20000)), 0);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS), 1);
	cr_assert_eq(ack_collect(t, on_ack, &r), 0);
	s->ops->free(s);
}
