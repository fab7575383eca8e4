/*
 * fuzz_state_file.c - libFuzzer harness for the state file's reader and restore
 * (state_file.h, session.state_file).
 *
 * The input is a record stream: what the frames of a state file hold once decompressed,
 * without the end record. Checksums stop random bytes at the header, so each input runs
 * twice, each time into fresh tables of 3 shards:
 *  1. as it is, as a whole file (the header and frame checks see fuzzed bytes);
 *  2. wrapped as the format says (state_file.h): a valid header naming 2 or 3 writer
 *     shards, one frame with valid hashes holding the input and an end record with the
 *     counts the input's records claim, so that the record parser and the restore (also
 *     the routing to another shard count) see fuzzed records.
 *
 * Invariants checked (abort on failure, so the fuzzer reports a crash):
 *  - state_file_load answers 0, or < 0 with a one-line reason and the file moved aside to
 *    .bad, and then restores nothing (every table empty);
 *  - after a successful load the tables work: events tracked, everything ended by a tick
 *    far ahead; and before that, what was restored saves and loads again into the same
 *    layout with the same counts (visitors, open sessions, dedup entries, paths,
 *    touchpoints, users): a restore is a fixed point;
 *  - no leak (LeakSanitizer), no file left behind.
 *
 * Seeds (tests/fuzz/corpus/state_file/) are record streams the saver itself wrote:
 *   FUZZ_STATE_FILE_WRITE_SEEDS=tests/fuzz/corpus/state_file build-fuzz/tests/fuzz/fuzz_state_file
 * writes them and exits.
 */
#include "clickd/pipeline.h"
#include "clickd/state_file.h"

#include "fuzz_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define SHARDS 3
#define NOW_MS 1800000000000LL
#define MIN_MS 60000LL

int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char *temp_root = "/tmp";
static char dir[256], path[300];

struct tables {
	struct state_file_shard shards[SHARDS];
	uint64_t closed;
};

static void on_close(void *ud, const struct session *s, enum session_end_reason reason)
{
	struct tables *t = ud;

	CHECK(s->events >= 1 && s->index >= 1 && (unsigned)reason < SESSION_END__COUNT);
	t->closed++;
}

static void tables_init(struct tables *t)
{
	struct session_options so = {
	    .timeout_ms = 30 * MIN_MS,
	    .max_duration_ms = 24 * 60 * MIN_MS,
	    .max_visitors = 64,
	    .max_url_bytes = 256,
	};
	struct attribution_options ao;

	memset(t, 0, sizeof(*t));
	attribution_options_default(&ao);
	ao.max_visitors = ao.max_users = 64;
	ao.max_touchpoints = 8;
	ao.max_devices_per_user = 4;
	for (int s = 0; s < SHARDS; s++) {
		t->shards[s].sessions = session_table_new(&so, on_close, t);
		t->shards[s].dedup = dedup_new(256, 60 * MIN_MS);
		t->shards[s].attribution = attribution_new(&ao);
		CHECK(t->shards[s].sessions && t->shards[s].dedup && t->shards[s].attribution);
	}
}

static void tables_free(struct tables *t)
{
	for (int s = 0; s < SHARDS; s++) {
		session_table_free(t->shards[s].sessions);
		dedup_free(t->shards[s].dedup);
		attribution_free(t->shards[s].attribution);
	}
}

/* What the tables hold. */
static void tables_count(const struct tables *t, struct state_file_counts *c)
{
	memset(c, 0, sizeof(*c));
	for (int s = 0; s < SHARDS; s++) {
		struct session_stats st;
		struct dedup_stats ds;
		struct attribution_stats as;

		session_get_stats(t->shards[s].sessions, &st);
		dedup_get_stats(t->shards[s].dedup, NOW_MS, &ds);
		attribution_get_stats(t->shards[s].attribution, &as);
		c->visitors += st.visitors;
		c->sessions += st.open;
		c->dedup_entries += ds.entries;
		c->paths += as.visitors;
		c->touchpoints += as.touchpoints;
		c->users += as.users;
	}
}

static bool counts_equal(const struct state_file_counts *a, const struct state_file_counts *b)
{
	return a->visitors == b->visitors && a->sessions == b->sessions &&
	       a->dedup_entries == b->dedup_entries && a->paths == b->paths &&
	       a->touchpoints == b->touchpoints && a->users == b->users;
}

static void write_file(const char *p, const unsigned char *d, size_t n)
{
	FILE *f = fopen(p, "wb");

	CHECK(f != NULL);
	CHECK(n == 0 || fwrite(d, 1, n, f) == n);
	CHECK(fclose(f) == 0);
}

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Walks the records (type byte, u32 length, body) and counts what they claim, as the
 * loader counts them; returns the records walked. */
static uint32_t claims(const unsigned char *d, size_t n, uint64_t c[6])
{
	size_t off = 0;
	uint32_t records = 0;

	memset(c, 0, 6 * sizeof(uint64_t));
	while (n - off >= 5) {
		uint8_t type = d[off];
		size_t len = get32(d + off + 1);
		const unsigned char *b = d + off + 5;

		if (len > n - off - 5)
			break;
		records++;
		if (type == 1) {
			c[0]++;
			c[1] += len >= 13 && b[12] == 1;
		} else if (type == 2 && len >= 4) {
			c[2] += get32(b);
		} else if (type == 3) {
			c[3]++;
			if (len >= 25 && 25 + (size_t)b[24] < len)
				c[4] += b[25 + b[24]];
		} else if (type == 4) {
			c[5]++;
		}
		off += 5 + len;
	}
	return records;
}

/* The input as a valid file: header, one frame (input + end record), hashes that hold. */
static unsigned char *wrap(const unsigned char *d, size_t n, uint32_t writer_shards,
                           size_t *out_len)
{
	uint64_t c[6];
	uint32_t records = claims(d, n, c) + 1;
	size_t raw_len = n + 5 + 56, cap = ZSTD_compressBound(raw_len);
	unsigned char *raw = malloc(raw_len), *out = malloc(64 + cap), *h = out, *f = out + 32;
	size_t clen;

	CHECK(raw && out);
	memcpy(raw, d, n);
	raw[n] = 5;
	put32(raw + n + 1, 56);
	for (int k = 0; k < 6; k++)
		put64(raw + n + 5 + 8 * k, c[k]);
	put64(raw + n + 5 + 48, 1);
	memcpy(h, "CKST", 4);
	put16(h + 4, STATE_FILE_VERSION);
	put16(h + 6, 0);
	put32(h + 8, writer_shards);
	put32(h + 12, 0);
	put64(h + 16, (uint64_t)(NOW_MS - 10 * MIN_MS));
	put64(h + 24, XXH3_64bits(h, 24));
	clen = ZSTD_compress(f + 32, cap, raw, raw_len, 1);
	CHECK(!ZSTD_isError(clen));
	memcpy(f, "CKSB", 4);
	put32(f + 4, (uint32_t)clen);
	put32(f + 8, (uint32_t)raw_len);
	put32(f + 12, records);
	put64(f + 16, XXH3_64bits_withSeed(f + 32, clen, 0));
	put64(f + 24, XXH3_64bits(f, 24));
	free(raw);
	*out_len = 64 + clen;
	return out;
}

static bool exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

/* Tracks a few events through the restored tables and ends everything. */
static void exercise(struct tables *t)
{
	static struct event ev;
	const char *vids[] = {"a", "b", "c", "d"};

	for (size_t i = 0; i < sizeof(vids) / sizeof(vids[0]); i++) {
		size_t s;

		event_init(&ev);
		ev.received_at_ms = NOW_MS + MIN_MS;
		event_set(&ev, EF_APP_ID, "shop", 4);
		event_set(&ev, EF_VISITOR_ID, vids[i], 1);
		event_set(&ev, EF_SOURCE, "(direct)", 8);
		s = pipeline_shard_of(&ev, SHARDS);
		dedup_seen(t->shards[s].dedup, dedup_fingerprint(&ev), ev.received_at_ms);
		CHECK(session_track(t->shards[s].sessions, &ev, 0) != NULL);
	}
	for (int s = 0; s < SHARDS; s++) {
		struct session_stats st;

		session_tick(t->shards[s].sessions, NOW_MS + 30LL * 24 * 60 * MIN_MS);
		session_get_stats(t->shards[s].sessions, &st);
		CHECK(st.open == 0);
		dedup_expire(t->shards[s].dedup, NOW_MS + 30LL * 24 * 60 * MIN_MS);
		attribution_expire(t->shards[s].attribution, NOW_MS + 60LL * 24 * 60 * MIN_MS);
	}
}

static void run(const unsigned char *file, size_t len)
{
	struct tables t, again;
	struct state_file_report r;
	struct state_file_counts before, after;
	char err[512] = "", bad[320];
	int rc;

	write_file(path, file, len);
	tables_init(&t);
	rc = state_file_load(path, t.shards, SHARDS, NOW_MS, &r, err, sizeof(err));
	snprintf(bad, sizeof(bad), "%s.bad", path);
	if (rc < 0) {
		CHECK(rc != -ENOENT);
		CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
		CHECK(!exists(path) && exists(bad));
		unlink(bad);
		tables_count(&t, &before);
		CHECK(before.visitors + before.sessions + before.dedup_entries + before.paths +
		          before.users ==
		      0);
		CHECK(t.closed == 0);
		tables_free(&t);
		return;
	}
	CHECK(rc == 0 && !exists(path));
	/* A fixed point: the restored state saves and restores the same. */
	tables_count(&t, &before);
	CHECK(state_file_save(path, t.shards, SHARDS, NOW_MS, &r, err, sizeof(err)) == 0);
	tables_init(&again);
	CHECK(state_file_load(path, again.shards, SHARDS, NOW_MS, &r, err, sizeof(err)) == 0);
	tables_count(&again, &after);
	CHECK(counts_equal(&before, &after));
	CHECK(again.closed == 0);
	exercise(&t);
	tables_free(&t);
	tables_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *file;
	size_t len;

	snprintf(dir, sizeof(dir), "%s/clickd-fuzz-state-XXXXXX", temp_root);
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/state", dir);
	run(data, size);
	file = wrap(data, size, size % 2 ? SHARDS : 2, &len);
	run(file, len);
	free(file);
	CHECK(rmdir(dir) == 0); /* nothing left behind */
	return 0;
}

/* ---- seeds: record streams the saver wrote ---- */

static void populate(struct tables *t, int visitors, bool with_user)
{
	static struct event ev;
	char vid[16], eid[16];

	for (int i = 0; i < visitors; i++) {
		for (int k = 0; k < 2; k++) {
			struct attribution_ids ids;
			const struct session *s;
			size_t sh;

			snprintf(vid, sizeof(vid), "v%d", i);
			snprintf(eid, sizeof(eid), "e%d-%d", i, k);
			event_init(&ev);
			ev.received_at_ms = NOW_MS - 5 * MIN_MS + i * 1000 + k;
			event_set(&ev, EF_APP_ID, "shop", 4);
			event_set(&ev, EF_VISITOR_ID, vid, strlen(vid));
			event_set(&ev, EF_EVENT_ID, eid, strlen(eid));
			event_set(&ev, EF_URL, "https://shop.example/?utm_source=news", 37);
			event_set(&ev, EF_SOURCE, k ? "(direct)" : "news", k ? 8 : 4);
			if (with_user && i % 2 == 0)
				event_set(&ev, EF_USER_ID, "u1", 2);
			sh = pipeline_shard_of(&ev, SHARDS);
			dedup_seen(t->shards[sh].dedup, dedup_fingerprint(&ev), ev.received_at_ms);
			s = session_track(t->shards[sh].sessions, &ev, 13);
			ids.visitor_hash = event_visitor_hash(&ev);
			ids.user_hash =
			    with_user && i % 2 == 0 ? attribution_user_hash("shop", 4, "u1", 2) : 0;
			ids.visitor_id = vid;
			ids.visitor_id_len = strlen(vid);
			if (s->events == 1) {
				struct attribution_touchpoint tp = {
				    .started_at_ms = s->started_at_ms, .channel = 13};
				memcpy(tp.session_id, s->id, sizeof(s->id));
				strcpy(tp.source, "news");
				attribution_touch(t->shards[sh].attribution, &ids, &tp,
				                  ev.received_at_ms);
			} else if (ids.user_hash) {
				attribution_link_user(t->shards[sh].attribution, &ids,
				                      ev.received_at_ms);
			}
		}
	}
}

/* The record stream of a saved file: its frames decompressed, the end record cut off. */
static void write_seed(const char *seeds, const char *name, int visitors, bool with_user)
{
	struct tables t;
	struct state_file_report r;
	char err[256], out[512];
	unsigned char *file, *raw = malloc(1 << 20);
	size_t off = 32, raw_len = 0;
	long n;
	FILE *f;

	tables_init(&t);
	populate(&t, visitors, with_user);
	CHECK(state_file_save(path, t.shards, SHARDS, NOW_MS, &r, err, sizeof(err)) == 0);
	tables_free(&t);
	f = fopen(path, "rb");
	CHECK(f && raw);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	file = malloc((size_t)n);
	CHECK(file && fread(file, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	unlink(path);
	while (off + 32 <= (size_t)n) {
		uint32_t clen = get32(file + off + 4);
		size_t got =
		    ZSTD_decompress(raw + raw_len, (1 << 20) - raw_len, file + off + 32, clen);
		CHECK(!ZSTD_isError(got));
		raw_len += got;
		off += 32 + clen;
	}
	CHECK(raw_len >= 61);
	snprintf(out, sizeof(out), "%s/%s", seeds, name);
	write_file(out, raw, raw_len - 61); /* without the end record */
	free(file);
	free(raw);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("FUZZ_STATE_FILE_WRITE_SEEDS");

	(void)argc;
	(void)argv;
	if (access("/dev/shm", W_OK) == 0)
		temp_root = "/dev/shm";
	if (seeds) {
		snprintf(dir, sizeof(dir), "%s/clickd-fuzz-state-XXXXXX", temp_root);
		CHECK(mkdtemp(dir) != NULL);
		snprintf(path, sizeof(path), "%s/state", dir);
		write_seed(seeds, "one-visitor", 1, false);
		write_seed(seeds, "visitors-and-a-user", 6, true);
		write_seed(seeds, "many-visitors", 40, true);
		rmdir(dir);
		exit(0);
	}
	return 0;
}
