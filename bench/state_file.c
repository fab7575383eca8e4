/*
 * state_file.c - what session.state_file costs: bytes per saved session and the time to save
 * and restore N open sessions (state_file.h). Not a test: figures for the docs.
 *
 * The state is what a shard holds after N visitors each sent a landing (a third with UTM
 * tags and a click ID, an external referrer for another third) and an internal page, some
 * logged in: N open sessions with realistic strings, 2N dedup fingerprints, N attribution
 * paths of one touchpoint and the user links. Two files are measured: sessions only (the
 * dedup and attribution tables left empty), and everything. Each is saved from S shards and
 * restored into S shards and into S + 1 (another shard count).
 *
 * Run: build/bench/clickd_state_bench [sessions, default 100000] [shards, default 4]
 * [directory for the file, default /tmp]. Prints one line per measure.
 */
#include "clickd/pipeline.h"
#include "clickd/state_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define MIN_MS 60000LL
#define T0_MS  1800000000000LL

struct world {
	size_t count;
	struct state_file_shard *shards;
};

static void on_close(void *ud, const struct session *s, enum session_end_reason reason)
{
	(void)s;
	(void)reason;
	(*(size_t *)ud)++;
}

static size_t closed;

static struct world world_new(size_t count, size_t visitors)
{
	struct world w = {count, calloc(count, sizeof(*w.shards))};
	struct session_options so = {
	    .timeout_ms = 30 * MIN_MS,
	    .max_duration_ms = 24 * 60 * MIN_MS,
	    .max_visitors = visitors / count * 2 + 16,
	    .max_url_bytes = 512,
	};
	struct attribution_options ao;

	attribution_options_default(&ao);
	ao.max_visitors = ao.max_users = so.max_visitors;
	for (size_t s = 0; s < count; s++) {
		w.shards[s].sessions = session_table_new(&so, on_close, &closed);
		w.shards[s].dedup = dedup_new(so.max_visitors * 2, 60 * MIN_MS);
		w.shards[s].attribution = attribution_new(&ao);
		if (!w.shards[s].sessions || !w.shards[s].dedup || !w.shards[s].attribution) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
	}
	return w;
}

static void world_free(struct world *w)
{
	for (size_t s = 0; s < w->count; s++) {
		session_table_free(w->shards[s].sessions);
		dedup_free(w->shards[s].dedup);
		attribution_free(w->shards[s].attribution);
	}
	free(w->shards);
}

static void set(struct event *ev, enum event_field f, const char *s)
{
	event_set(ev, f, s, strlen(s));
}

static void uuid(char *out, size_t cap, size_t i, int salt)
{
	uint64_t a = XXH3_64bits_withSeed(&i, sizeof(i), (uint64_t)salt);
	uint64_t b = XXH3_64bits_withSeed(&a, sizeof(a), (uint64_t)salt);

	snprintf(out, cap, "%08x-%04x-4%03x-a%03x-%012llx", (unsigned)(a >> 32),
	         (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(b >> 52) & 0xfff,
	         (unsigned long long)(b & 0xffffffffffffULL));
}

/* N visitors, two events each; with_rest: dedup and attribution too. */
static void populate(struct world *w, size_t n, bool with_rest)
{
	static struct event ev;
	char vid[64], eid[64], url[256], ref[128], uid[32];

	for (size_t i = 0; i < n; i++) {
		for (int k = 0; k < 2; k++) {
			struct state_file_shard *sh;
			const struct session *s;

			event_init(&ev);
			ev.received_at_ms = T0_MS + (int64_t)i * 10 + k * MIN_MS;
			/* Random UUIDs, as trackers make them: they do not compress. */
			uuid(vid, sizeof(vid), i, 0);
			uuid(eid, sizeof(eid), i, k + 1);
			set(&ev, EF_APP_ID, "shop-eu");
			set(&ev, EF_VISITOR_ID, vid);
			set(&ev, EF_EVENT_ID, eid);
			if (k == 0 && i % 3 == 0) {
				snprintf(
				    url, sizeof(url),
				    "https://shop.example.com/collections/summer-sale?utm_source="
				    "newsletter&utm_medium=email&utm_campaign=summer_%zu&gclid="
				    "Cj0KCQjw%zu",
				    i % 40, i);
				set(&ev, EF_SOURCE, "newsletter");
				set(&ev, EF_MEDIUM, "email");
				snprintf(ref, sizeof(ref), "summer_%zu", i % 40);
				set(&ev, EF_CAMPAIGN, ref);
			} else if (k == 0 && i % 3 == 1) {
				snprintf(url, sizeof(url),
				         "https://shop.example.com/products/item-%zu", i % 5000);
				snprintf(ref, sizeof(ref),
				         "https://www.google.com/search?q=item+%zu", i % 5000);
				set(&ev, EF_REFERRER, ref);
				set(&ev, EF_REFERRER_HOST, "www.google.com");
				set(&ev, EF_SOURCE, "google");
				set(&ev, EF_MEDIUM, "organic");
			} else {
				snprintf(url, sizeof(url), "https://shop.example.com/cart?step=%d",
				         k);
				set(&ev, EF_SOURCE, "(direct)");
				set(&ev, EF_MEDIUM, "(none)");
			}
			set(&ev, EF_URL, url);
			if (i % 5 == 0) {
				snprintf(uid, sizeof(uid), "user-%zu", i / 5);
				set(&ev, EF_USER_ID, uid);
			}
			sh = &w->shards[pipeline_shard_of(&ev, w->count)];
			if (with_rest)
				dedup_seen(sh->dedup, dedup_fingerprint(&ev), ev.received_at_ms);
			s = session_track(sh->sessions, &ev, 3);
			if (with_rest && s->events == 1) {
				struct attribution_ids ids = {.visitor_hash =
				                                  event_visitor_hash(&ev),
				                              .visitor_id = vid,
				                              .visitor_id_len = strlen(vid)};
				struct attribution_touchpoint tp = {
				    .started_at_ms = s->started_at_ms, .channel = 3};
				size_t len;
				const char *v;

				if (i % 5 == 0)
					ids.user_hash =
					    attribution_user_hash("shop-eu", 7, uid, strlen(uid));
				memcpy(tp.session_id, s->id, sizeof(s->id));
				v = session_get(s, SF_SOURCE, &len);
				attribution_set_string(tp.source, sizeof(tp.source), v, len);
				v = session_get(s, SF_MEDIUM, &len);
				attribution_set_string(tp.medium, sizeof(tp.medium), v, len);
				attribution_touch(sh->attribution, &ids, &tp, ev.received_at_ms);
			}
		}
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void measure(const char *what, size_t n, size_t shards, const char *path, bool with_rest)
{
	struct world a = world_new(shards, n);
	struct state_file_report r;
	char err[512];
	double t;

	populate(&a, n, with_rest);
	t = now_s();
	if (state_file_save(path, a.shards, a.count, T0_MS + 2 * MIN_MS, &r, err, sizeof(err))) {
		fprintf(stderr, "save: %s\n", err);
		exit(1);
	}
	t = now_s() - t;
	printf("%-14s save    %zu sessions, %zu shards: %.1f MB, %.0f bytes/session (%.0f before "
	       "zstd), %.0f ms (visitors %llu, dedup %llu, paths %llu, users %llu)\n",
	       what, n, shards, (double)r.file_bytes / 1e6, (double)r.file_bytes / (double)n,
	       (double)r.payload_bytes / (double)n, t * 1000, (unsigned long long)r.file.visitors,
	       (unsigned long long)r.file.dedup_entries, (unsigned long long)r.file.paths,
	       (unsigned long long)r.file.users);
	for (size_t to = shards; to <= shards + 1; to++) {
		struct world b = world_new(to, n);

		/* Saved again for the second restore (a restore removes the file). */
		if (to != shards && state_file_save(path, a.shards, a.count, T0_MS + 2 * MIN_MS, &r,
		                                    err, sizeof(err))) {
			fprintf(stderr, "save: %s\n", err);
			exit(1);
		}
		t = now_s();
		if (state_file_load(path, b.shards, b.count, T0_MS + 3 * MIN_MS, &r, err,
		                    sizeof(err))) {
			fprintf(stderr, "load: %s\n", err);
			exit(1);
		}
		t = now_s() - t;
		printf("%-14s restore into %zu shards: %.0f ms (resumed %llu)\n", what, to,
		       t * 1000, (unsigned long long)r.sessions_resumed);
		world_free(&b);
	}
	world_free(&a);
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? (size_t)atol(argv[1]) : 100000;
	size_t shards = argc > 2 ? (size_t)atol(argv[2]) : 4;
	const char *dir = argc > 3 ? argv[3] : "/tmp";
	char path[512];

	if (n < 1 || shards < 1 || shards >= STATE_FILE_MAX_SHARDS) {
		fprintf(stderr, "usage: %s [sessions] [shards] [dir]\n", argv[0]);
		return 2;
	}
	snprintf(path, sizeof(path), "%s/clickd-state-bench-%d", dir, (int)getpid());
	measure("sessions only", n, shards, path, false);
	measure("everything", n, shards, path, true);
	unlink(path);
	return 0;
}
