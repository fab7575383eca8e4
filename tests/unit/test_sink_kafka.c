/*
 * test_sink_kafka.c - the Kafka sink (sink.h) against librdkafka's in-process mock cluster:
 * deliveries counted, bad properties named, and failed deliveries counted as failed (never
 * silent) under injected broker errors, with brokers down and with an unreachable broker.
 * The real-broker tests are in tests/integration.
 */
#include "clickd/metrics.h"
#include "clickd/sink.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static struct sink *new_sink(const char *brokers, const struct sink_kafka_property *props,
                             size_t count)
{
	struct sink_kafka_options opt = {
	    .brokers = brokers,
	    .topics = {"clickd.events", "clickd.touchpoints", "clickd.dead_letters"},
	    .producer = props,
	    .producer_count = count,
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
		cr_assert_eq(sink_write(s, stream, key, (size_t)klen, rec, (size_t)rlen), 0);
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
		rc = sink_write(s, SINK_EVENTS, NULL, 0, rec, 2);
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
	cr_assert_eq(sink_write(s, SINK_TOUCHPOINTS, NULL, 0, "{}", 2), -EINVAL);
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
