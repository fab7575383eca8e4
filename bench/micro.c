/*
 * micro.c - microbenchmarks of the pipeline's pieces, each next to an anchor run in the
 * same process on the same machine (bench/README.md: ratios, not verdicts):
 *
 *   ring      events/s through an SPSC ring between two threads, in bulks of 32, against
 *             the same transfer through a mutex + condition variable queue;
 *   decode    native beacons/s through beacon_decode_query (URL with UTM tags, referrer,
 *             user agent), against memchr scanning the same bytes for '&' (the least any
 *             decoder must do);
 *   dedup     lookups/s in a dedup table at its bound (half repeats), against a plain
 *             open-addressing probe of the same fingerprints without expiry;
 *   shard     events/s through shard_drain (dedup, channel, session, event record) into a
 *             sink that only counts, against record_event_json alone;
 *   attribution  attribution records/s: per conversion, three sessions touched on two
 *             devices of one user (100,000 users in turn), attribution_convert and
 *             record_attribution_json, against record_event_json of the conversion event.
 *             Also prints the bytes of one visitor path (attribution_path_bytes).
 *
 * Built with the project (target clickd_micro, Release flags of the build). Run:
 * build/bench/clickd_micro [seconds per measure, default 2]
 * [ring|decode|dedup|shard|attribution].
 * Prints one line per measure.
 */
#include "clickd/attribution.h"
#include "clickd/beacon.h"
#include "clickd/channel.h"
#include "clickd/dedup.h"
#include "clickd/record.h"
#include "clickd/ring.h"
#include "clickd/shard.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds = 2.0;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *what, double rate, const char *anchor, double anchor_rate)
{
	printf("%-8s %14.0f /s   anchor %-22s %14.0f /s   ratio %.3f\n", what, rate, anchor,
	       anchor_rate, anchor_rate > 0 ? rate / anchor_rate : 0.0);
	fflush(stdout);
}

/* ---- ring vs mutex queue ---- */

#define RING_ITEMS (1u << 20)
#define BULK       32

struct item {
	uint64_t seq;
	char payload[56]; /* a cache line per item */
};

static struct ring ring;
static _Atomic uint64_t ring_received;

static void *ring_consumer(void *arg)
{
	uint64_t got = 0, sum = 0;

	(void)arg;
	for (;;) {
		size_t n = ring_peek(&ring, BULK);
		if (n == 0) {
			if (ring_producer_closed(&ring) && ring_peek(&ring, 1) == 0)
				break;
			continue;
		}
		for (size_t i = 0; i < n; i++)
			sum += ((struct item *)ring_slot_read(&ring, i))->seq;
		ring_release(&ring, n);
		got += n;
	}
	atomic_store(&ring_received, got + (sum & 0)); /* sum keeps the reads */
	return NULL;
}

static double bench_ring(void)
{
	pthread_t t;
	uint64_t sent = 0;
	double t0, t1;

	ring_init(&ring, 4096, sizeof(struct item));
	pthread_create(&t, NULL, ring_consumer, NULL);
	t0 = now_s();
	while (now_s() - t0 < seconds) {
		for (int k = 0; k < 256; k++) {
			struct item *slot;
			for (int b = 0; b < BULK && (slot = ring_claim(&ring)) != NULL; b++)
				slot->seq = sent++;
			ring_publish(&ring);
		}
	}
	ring_close_producer(&ring);
	pthread_join(t, NULL);
	t1 = now_s();
	ring_close(&ring);
	return (double)atomic_load(&ring_received) / (t1 - t0);
}

struct mqueue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct item items[4096];
	size_t head, tail; /* free-running */
	int closed;
};

static struct mqueue mq = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
static uint64_t mq_received;

static void *mq_consumer(void *arg)
{
	uint64_t got = 0, sum = 0;

	(void)arg;
	pthread_mutex_lock(&mq.mu);
	for (;;) {
		while (mq.head == mq.tail && !mq.closed)
			pthread_cond_wait(&mq.cv, &mq.mu);
		if (mq.head == mq.tail && mq.closed)
			break;
		while (mq.head != mq.tail) {
			sum +=
			    mq.items[mq.head++ % 4096].seq; /* read each item, as the ring does */
			got++;
		}
		pthread_cond_signal(&mq.cv);
	}
	pthread_mutex_unlock(&mq.mu);
	mq_received = got + (sum & 0);
	return NULL;
}

static double bench_mutex_queue(void)
{
	pthread_t t;
	uint64_t sent = 0;
	double t0, t1;

	pthread_create(&t, NULL, mq_consumer, NULL);
	t0 = now_s();
	while (now_s() - t0 < seconds) {
		for (int k = 0; k < 256; k++) {
			pthread_mutex_lock(&mq.mu);
			while (mq.tail - mq.head > 4096 - BULK)
				pthread_cond_wait(&mq.cv, &mq.mu);
			for (int b = 0; b < BULK; b++)
				mq.items[mq.tail++ % 4096].seq = sent++;
			pthread_cond_signal(&mq.cv);
			pthread_mutex_unlock(&mq.mu);
		}
	}
	pthread_mutex_lock(&mq.mu);
	mq.closed = 1;
	pthread_cond_signal(&mq.cv);
	pthread_mutex_unlock(&mq.mu);
	pthread_join(t, NULL);
	t1 = now_s();
	return (double)mq_received / (t1 - t0);
}

/* ---- decode ---- */

static const char *const beacons[] = {
    "eid=6f1c0d1e-0001-4a2b-9c3d-000000000001&aid=shop&vid=v42&url=https%3A%2F%2Fshop.example"
    "%2Fp%2F123%3Futm_source%3Dnewsletter%26utm_medium%3Demail%26utm_campaign%3Dspring&ref="
    "https%3A%2F%2Fwww.google.com%2F&ts=1800000000000",
    "eid=6f1c0d1e-0002&aid=shop&vid=v7&url=https%3A%2F%2Fshop.example%2Fcart%3Fgclid%3Dabc123"
    "&ref=https%3A%2F%2Fshop.example%2Fp%2F123",
    "eid=6f1c0d1e-0003&aid=shop&vid=v9&e=cv&en=purchase&rev=49.90&cur=EUR&url=https%3A%2F%2F"
    "shop.example%2Fthanks",
    "eid=6f1c0d1e-0004&aid=shop&vid=v9&url=https%3A%2F%2Fshop.example%2Fp%2F9&ref=https%3A%2F%2F"
    "shop.example%2F",
};

/* The shard's mix, closer to real traffic than cycling through the beacons: 2% conversions,
 * 10% campaign landings (a new session each), the rest internal page views. */
static size_t proto_of(uint64_t i)
{
	if (i % 50 == 0)
		return 2;
	if (i % 10 == 5)
		return (i / 10) % 2;
	return 3;
}
#define BEACON_COUNT (sizeof(beacons) / sizeof(beacons[0]))

static double bench_decode(void)
{
	static struct event ev;
	struct beacon_options opt = {.anonymize_ip = true, .honor_gpc = true};
	struct beacon_request req = {
	    .received_at_ms = 1800000000000LL,
	    .client_ip = "203.0.113.7",
	    .user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120",
	    .protocol = "native",
	};
	char err[160];
	uint64_t n = 0, bad = 0;
	double t0 = now_s(), t1;

	req.user_agent_len = strlen(req.user_agent);
	while ((t1 = now_s()) - t0 < seconds)
		for (int k = 0; k < 1000; k++, n++) {
			const char *b = beacons[n % BEACON_COUNT];
			bad += beacon_decode_query(b, strlen(b), &req, &opt, &ev, err,
			                           sizeof(err)) != 0;
		}
	if (bad)
		fprintf(stderr, "decode: %llu failed: %s\n", (unsigned long long)bad, err);
	return (double)n / (t1 - t0);
}

static double bench_scan(void)
{
	uint64_t n = 0, amps = 0;
	double t0 = now_s(), t1;

	while ((t1 = now_s()) - t0 < seconds)
		for (int k = 0; k < 1000; k++, n++) {
			const char *b = beacons[n % BEACON_COUNT], *end = b + strlen(b), *p = b;
			while ((p = memchr(p, '&', (size_t)(end - p))) != NULL) {
				amps++;
				p++;
			}
		}
	if (amps == 0)
		fprintf(stderr, "scan: nothing found\n");
	return (double)n / (t1 - t0);
}

/* ---- dedup ---- */

#define DEDUP_ENTRIES 1000000

static uint64_t fingerprint(uint64_t i)
{
	/* splitmix64: uniform like XXH3 output; i / 2 so that half the lookups repeat */
	uint64_t z = (i / 2) + 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static double bench_dedup(void)
{
	struct dedup *d = dedup_new(DEDUP_ENTRIES, 3600000);
	uint64_t n = 0, dups = 0;
	double t0 = now_s(), t1;

	while ((t1 = now_s()) - t0 < seconds)
		for (int k = 0; k < 1000; k++, n++)
			dups +=
			    dedup_seen(d, fingerprint(n), 1800000000000LL + (int64_t)(n / 1000));
	dedup_free(d);
	if (dups == 0)
		fprintf(stderr, "dedup: no duplicates seen\n");
	return (double)n / (t1 - t0);
}

static double bench_probe(void)
{
	size_t cap = 1u << 21;
	uint64_t *slots = calloc(cap, sizeof(*slots)), n = 0, hits = 0, used = 0;
	double t0 = now_s(), t1;

	while ((t1 = now_s()) - t0 < seconds)
		for (int k = 0; k < 1000; k++, n++) {
			uint64_t fp = fingerprint(n) | 1, i = fp & (cap - 1);
			while (slots[i] != 0 && slots[i] != fp)
				i = (i + 1) & (cap - 1);
			if (slots[i] == fp) {
				hits++;
			} else if (used < DEDUP_ENTRIES) {
				slots[i] = fp;
				used++;
			}
		}
	free(slots);
	if (hits == 0)
		fprintf(stderr, "probe: no hits\n");
	return (double)n / (t1 - t0);
}

/* ---- shard ---- */

struct counting_sink {
	struct sink base;
	uint64_t records;
};

static int count_write(struct sink *s, enum sink_stream stream, const char *key, size_t key_len,
                       const char *record, size_t record_len, int64_t received_at_ms)
{
	(void)stream, (void)key, (void)key_len, (void)record, (void)record_len,
	    (void)received_at_ms;
	((struct counting_sink *)s)->records++;
	return 0;
}

static int count_poll(struct sink *s, int64_t now_ms)
{
	(void)s, (void)now_ms;
	return 0;
}

static int count_flush(struct sink *s, int timeout_ms)
{
	(void)s, (void)timeout_ms;
	return 0;
}

static const struct sink_ops count_ops = {
    .name = "count", .write = count_write, .poll = count_poll, .flush = count_flush};

/* The decoded beacons (in proto_of's mix), with unique event IDs and 10,000 visitors. */
static void make_event(struct event *ev, uint64_t i)
{
	static struct event proto[BEACON_COUNT];
	static int ready;
	char id[32], vid[16];
	int id_len = snprintf(id, sizeof(id), "e-%llu", (unsigned long long)i);
	int vid_len = snprintf(vid, sizeof(vid), "v%llu", (unsigned long long)(i % 10000));

	if (!ready) {
		struct beacon_options opt = {0};
		struct beacon_request req = {.received_at_ms = 1800000000000LL,
		                             .protocol = "native"};
		char err[160];
		for (size_t k = 0; k < BEACON_COUNT; k++)
			beacon_decode_query(beacons[k], strlen(beacons[k]), &req, &opt, &proto[k],
			                    err, sizeof(err));
		ready = 1;
	}
	memcpy(ev, &proto[proto_of(i)],
	       offsetof(struct event, arena) + proto[proto_of(i)].arena_used);
	event_set(ev, EF_EVENT_ID, id, (size_t)id_len);
	event_set(ev, EF_VISITOR_ID, vid, (size_t)vid_len);
	ev->received_at_ms = 1800000000000LL + (int64_t)(i / 100);
}

static double bench_shard(void)
{
	static struct ring in;
	struct ring *inputs[1] = {&in};
	struct counting_sink sink = {.base = {.ops = &count_ops}};
	char err[256];
	struct channel_lists *lists = channel_lists_new(NULL, err, sizeof(err));
	struct shard_options o = {
	    .inputs = inputs,
	    .input_count = 1,
	    .sink = &sink.base,
	    .channels = lists,
	    .dedup_max_entries = DEDUP_ENTRIES,
	    .dedup_window_ms = 3600000,
	    .session = {.timeout_ms = 1800000,
	                .max_duration_ms = 86400000,
	                .max_visitors = 100000,
	                .max_url_bytes = 512},
	};
	struct shard *sh;
	uint64_t n = 0;
	double t0, t1;

	ring_init(&in, 1024, sizeof(struct event));
	sh = shard_new(&o, err, sizeof(err));
	t0 = now_s();
	while ((t1 = now_s()) - t0 < seconds) {
		for (int k = 0; k < 512; k++, n++)
			make_event(ring_claim(&in), n);
		ring_publish(&in);
		shard_drain(sh);
		while (ring_fill(&in) > 0)
			shard_drain(sh);
	}
	shard_free(sh);
	ring_close(&in);
	channel_lists_free(lists);
	return (double)n / (t1 - t0);
}

static double bench_record(void)
{
	static struct event ev;
	static char buf[RECORD_EVENT_MAX_BYTES];
	uint64_t n = 0, bytes = 0;
	double t0 = now_s(), t1;

	while ((t1 = now_s()) - t0 < seconds)
		for (int k = 0; k < 512; k++, n++) {
			make_event(&ev, n);
			bytes += (uint64_t)record_event_json(&ev, buf, sizeof(buf));
		}
	if (bytes == 0)
		fprintf(stderr, "record: nothing written\n");
	return (double)n / (t1 - t0);
}

/* ---- attribution ---- */

#define ATTRIBUTION_USERS 100000

static double bench_attribution(void)
{
	static struct attribution_result result;
	static char buf[RECORD_ATTRIBUTION_MAX_BYTES];
	static struct event ev;
	struct attribution_options o;
	struct attribution *a;
	const char *channels[3][3] = {
	    {"(direct)", "(none)", "awc-1"}, {"newsletter", "email", ""}, {"google", "cpc", ""}};
	uint64_t n = 0, bytes = 0;
	double t0, t1;

	attribution_options_default(&o);
	o.max_visitors = 2 * ATTRIBUTION_USERS;
	o.max_users = ATTRIBUTION_USERS;
	a = attribution_new(&o);
	make_event(&ev, 0);
	ev.type = EVENT_CONVERSION;
	ev.has_revenue = true;
	ev.revenue = 120.5;
	t0 = now_s();
	while ((t1 = now_s()) - t0 < seconds) {
		for (int k = 0; k < 256; k++, n++) {
			int64_t at = 1800000000000LL + (int64_t)n * 10;
			uint64_t user = n % ATTRIBUTION_USERS;
			char vid[2][24];

			for (int t = 0; t < 3; t++) {
				struct attribution_touchpoint tp = {.started_at_ms = at + t,
				                                    .channel = (uint8_t)(t + 12)};
				struct attribution_ids ids = {.visitor_hash =
				                                  2 * user + (t == 2) + 1,
				                              .user_hash = t ? user + 1 : 0,
				                              .visitor_id = vid[t == 2]};

				ids.visitor_id_len =
				    (size_t)snprintf(vid[t == 2], sizeof(vid[0]), "v%llu-%d",
				                     (unsigned long long)user, t == 2);
				snprintf(tp.session_id, sizeof(tp.session_id), "%016llx%02d",
				         (unsigned long long)n, t);
				strcpy(tp.source, channels[t][0]);
				strcpy(tp.medium, channels[t][1]);
				strcpy(tp.affiliate_id, channels[t][2]);
				attribution_touch(a, &ids, &tp, at + t);
			}
			struct attribution_ids buyer = {.visitor_hash = 2 * user + 2,
			                                .user_hash = user + 1,
			                                .visitor_id = vid[1],
			                                .visitor_id_len = strlen(vid[1])};
			attribution_convert(a, &buyer, at + 5, 120.5, &result);
			bytes += (uint64_t)record_attribution_json(&ev, &result, buf, sizeof(buf));
		}
	}
	attribution_free(a);
	printf("attribution: %zu bytes per visitor path at most (%zu touchpoints of %zu B, "
	       "visitor %zu B), %zu B per user\n",
	       attribution_path_bytes(&o), o.max_touchpoints, attribution_touchpoint_bytes(),
	       attribution_visitor_bytes(), attribution_user_bytes(o.max_devices_per_user));
	if (bytes == 0)
		fprintf(stderr, "attribution: nothing written\n");
	return (double)n / (t1 - t0);
}

static double bench_conversion_record(void)
{
	static struct event ev;
	static char buf[RECORD_EVENT_MAX_BYTES];
	uint64_t n = 0, bytes = 0;
	double t0 = now_s(), t1;

	make_event(&ev, 0);
	ev.type = EVENT_CONVERSION;
	while ((t1 = now_s()) - t0 < seconds)
		for (int k = 0; k < 256; k++, n++)
			bytes += (uint64_t)record_event_json(&ev, buf, sizeof(buf));
	if (bytes == 0)
		fprintf(stderr, "record: nothing written\n");
	return (double)n / (t1 - t0);
}

int main(int argc, char **argv)
{
	const char *only = argc > 2 ? argv[2] : NULL;

	if (argc > 1)
		seconds = atof(argv[1]) > 0 ? atof(argv[1]) : seconds;
#define RUN(name, a, anchor, b)                                                                    \
	if (!only || strcmp(only, name) == 0)                                                      \
		report(name, a, anchor, b);
	RUN("ring", bench_ring(), "mutex+condvar queue", bench_mutex_queue());
	RUN("decode", bench_decode(), "memchr scan", bench_scan());
	RUN("dedup", bench_dedup(), "bare linear probe", bench_probe());
	RUN("shard", bench_shard(), "record_event_json", bench_record());
	RUN("attribution", bench_attribution(), "record_event_json", bench_conversion_record());
#undef RUN
	return 0;
}
