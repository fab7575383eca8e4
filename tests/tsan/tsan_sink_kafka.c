/*
 * tsan_sink_kafka.c - the Kafka sink with its disk spool under ThreadSanitizer (and in every
 * build), against librdkafka's in-process mock cluster, from a plain main() since criterion
 * cannot run under TSan. Three writer threads (as shards are) write numbered records of
 * their own keys, holding and retrying a record the sink answers "full" (as a shard does),
 * while the main thread polls the sink (delivery reports, replay) and asks ready() as the
 * main loop does, and takes the broker down and up again twice: records go to librdkafka,
 * then to the spool, back again. At the end: every record is in the topic, and each key's
 * records are in the order they were written (duplicates, which at-least-once allows,
 * are counted and printed). Exits 0 on success; TSan makes it exit non-zero on a race.
 */
#include "c11_threads_shim.h" /* librdkafka's threads and locks, seen by TSan */
#include "clickd/log.h"
#include "clickd/metrics.h"
#include "clickd/sink.h"
#include "clickd/spool.h"

#include <dirent.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WRITERS        3
#define KEYS_PER       5
#define RECORDS        4000 /* per writer */
#define TOPIC          "tsan.events"
#define PARTITIONS     4
#define RUN_LIMIT_MS   120000
#define WRITE_PAUSE_US 1000 /* a writer's pace: RECORDS take about 4 s */

static char dir[64];
static struct sink *sink;
static _Atomic int writers_done;
static _Atomic unsigned full_answers;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

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

/* Writer w's record i: key w<w>k<i % KEYS_PER>, value {"w":w,"i":i}. */
static void *writer_main(void *arg)
{
	int w = (int)(intptr_t)arg;

	for (int i = 0; i < RECORDS; i++) {
		char key[16], rec[64];
		int klen = snprintf(key, sizeof(key), "w%dk%d", w, i % KEYS_PER);
		int rlen = snprintf(rec, sizeof(rec), "{\"w\":%d,\"i\":%d}", w, i);
		int rc;

		/* "Full" is "try again": the shard holds the record and retries it first. */
		while ((rc = sink_write(sink, SINK_EVENTS, key, (size_t)klen, rec, (size_t)rlen,
		                        1800000000000LL)) == -EAGAIN) {
			atomic_fetch_add(&full_answers, 1);
			pause_us(10000);
		}
		if (rc != 0) {
			fprintf(stderr, "tsan_sink_kafka: write failed: %d\n", rc);
			exit(1);
		}
		pause_us(WRITE_PAUSE_US);
	}
	atomic_fetch_add(&writers_done, 1);
	return NULL;
}

/* Polls for ms, as the main loop does every 50 ms (here more often). */
static void poll_for(int ms)
{
	int64_t until = now_ms() + ms;

	while (now_ms() < until) {
		sink->ops->poll(sink, now_ms());
		(void)sink->ops->ready(sink);
		pause_us(5000);
	}
}

/* Reads every partition from the start; checks completeness and per-key order. */
static int check_topic(rd_kafka_mock_cluster_t *cluster)
{
	static int last[WRITERS][KEYS_PER];
	static unsigned char seen[WRITERS][RECORDS];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
	int64_t deadline = now_ms() + 60000;
	unsigned total = 0, distinct = 0, duplicates = 0, out_of_order = 0;
	char err[256];
	rd_kafka_t *c;

	memset(last, 0xff, sizeof(last));
	rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(cluster), err,
	                  sizeof(err));
	rd_kafka_conf_set(conf, "group.id", "tsan", err, sizeof(err));
	rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	if (!c)
		return 1;
	for (int p = 0; p < PARTITIONS; p++)
		rd_kafka_topic_partition_list_add(parts, TOPIC, p)->offset =
		    RD_KAFKA_OFFSET_BEGINNING;
	rd_kafka_assign(c, parts);
	rd_kafka_topic_partition_list_destroy(parts);
	while (distinct < WRITERS * RECORDS && now_ms() < deadline) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
		char text[64];
		int w, i;

		if (!m)
			continue;
		if (!m->err && m->len < sizeof(text)) {
			memcpy(text, m->payload, m->len);
			text[m->len] = '\0';
			if (sscanf(text, "{\"w\":%d,\"i\":%d}", &w, &i) == 2 && w >= 0 &&
			    w < WRITERS && i >= 0 && i < RECORDS) {
				total++;
				if (seen[w][i]++) {
					duplicates++;
				} else {
					distinct++;
					/* First sight of each record: in order within its key. */
					if (i < last[w][i % KEYS_PER])
						out_of_order++;
					last[w][i % KEYS_PER] = i;
				}
			}
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(c);
	rd_kafka_destroy(c);
	printf("tsan_sink_kafka: %u records read, %u distinct of %u, %u duplicates, %u out of "
	       "order within their key, %u 'full' answers, %llu spooled, %llu replayed\n",
	       total, distinct, WRITERS * RECORDS, duplicates, out_of_order,
	       atomic_load(&full_answers), (unsigned long long)metrics_get(METRIC_SPOOL_SPOOLED),
	       (unsigned long long)metrics_get(METRIC_SPOOL_REPLAYED));
	return distinct == WRITERS * RECORDS && out_of_order == 0 ? 0 : 1;
}

int main(void)
{
	static const struct sink_kafka_property props[] = {{"statistics.interval.ms", "100"},
	                                                   {"reconnect.backoff.ms", "50"},
	                                                   {"reconnect.backoff.max.ms", "200"},
	                                                   {"message.timeout.ms", "3000"},
	                                                   {"log_level", "0"}};
	struct spool_options so = {
	    .max_bytes = 64 << 20, .segment_bytes = 64 * 1024, .batch_bytes = 8 * 1024};
	struct sink_kafka_options opt = {.producer = props,
	                                 .producer_count = sizeof(props) / sizeof(props[0]),
	                                 .topics = {TOPIC}};
	pthread_t writers[WRITERS];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_mock_cluster_t *cluster;
	struct spool *spool;
	char err[512];
	rd_kafka_t *host;
	int64_t deadline;
	int rc;

	log_set_level(LOG_WARN);
	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!host || !(cluster = rd_kafka_mock_cluster_new(host, 1)) ||
	    rd_kafka_mock_topic_create(cluster, TOPIC, PARTITIONS, 1) != 0) {
		fprintf(stderr, "tsan_sink_kafka: no mock cluster: %s\n", err);
		return 1;
	}
	strcpy(dir, "/tmp/clickd-tsan-kspool-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	so.dir = dir;
	if (spool_open(&spool, &so, err, sizeof(err)) != 0) {
		fprintf(stderr, "tsan_sink_kafka: %s\n", err);
		return 1;
	}
	opt.brokers = rd_kafka_mock_cluster_bootstraps(cluster);
	opt.spool = spool;
	sink = sink_kafka_new(&opt, err, sizeof(err));
	if (!sink) {
		fprintf(stderr, "tsan_sink_kafka: %s\n", err);
		return 1;
	}
	for (int w = 0; w < WRITERS; w++)
		if (pthread_create(&writers[w], NULL, writer_main, (void *)(intptr_t)w) != 0)
			return 1;
	/* Down and up twice while the writers write (about 4 s). */
	poll_for(500);
	rd_kafka_mock_broker_set_down(cluster, 1);
	poll_for(1500);
	rd_kafka_mock_broker_set_up(cluster, 1);
	poll_for(700);
	rd_kafka_mock_broker_set_down(cluster, 1);
	poll_for(800);
	rd_kafka_mock_broker_set_up(cluster, 1);
	/* Until the writers are done and everything is delivered, the spool empty. */
	deadline = now_ms() + RUN_LIMIT_MS;
	while (now_ms() < deadline &&
	       (atomic_load(&writers_done) < WRITERS ||
	        metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS) < WRITERS * RECORDS ||
	        metrics_gauge_get(GAUGE_SPOOL_BYTES) > 0))
		poll_for(50);
	for (int w = 0; w < WRITERS; w++)
		pthread_join(writers[w], NULL);
	rc = sink->ops->flush(sink, 10000);
	sink->ops->free(sink);
	if (rc != 0 || metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS) != 0) {
		fprintf(
		    stderr, "tsan_sink_kafka: flush %d, %llu failed, %llu delivered\n", rc,
		    (unsigned long long)metrics_sink_failed_get(METRICS_SINK_KAFKA, SINK_EVENTS),
		    (unsigned long long)metrics_sink_out_get(METRICS_SINK_KAFKA, SINK_EVENTS));
		return 1;
	}
	rc = check_topic(cluster);
	rd_kafka_mock_cluster_destroy(cluster);
	rd_kafka_destroy(host);
	remove_tree(dir);
	if (rc == 0)
		printf("tsan_sink_kafka: ok\n");
	return rc;
}
