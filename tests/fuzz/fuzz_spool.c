/*
 * fuzz_spool.c - libFuzzer harness for the spool's reader (spool.h): the input is a segment
 * file, opened and replayed the way clickd does after a restart.
 *
 * Checksums stop random bytes at the header, so each input runs twice, in a fresh
 * directory each time, with two segments: the input as it is, and the input "repaired"
 * (walked as frames, with the magic, version, compressed_len clamped to the input and both
 * hashes recomputed), so that decompression and the entry checks see fuzzed bytes too.
 * Run 1 has the raw input as the older segment (read-time skipping of corrupt frames) and
 * the repaired one as the newest (the torn-tail check at open); run 2 the other way round.
 *
 * Invariants checked (abort on failure, so the fuzzer reports a crash):
 *  - spool_open takes any segment content; spool_next answers only 0 or -ENODATA (records
 *    are acked at once, so never -EAGAIN), and ends;
 *  - every record has a known stream, a key and a record within SPOOL_KEY_MAX_BYTES and
 *    SPOOL_RECORD_MAX_BYTES, readable to the last byte (ASan), key NULL exactly when empty;
 *  - a nack (of every 3rd record, once) brings back that very record, with its token,
 *    before any other; every record read is acked or nacked exactly once;
 *  - after everything is read and acked the spool is empty and the directory holds no
 *    segment; a record appended then comes back intact;
 *  - no leak (LeakSanitizer) and no file descriptor left open.
 *
 * Seeds (tests/fuzz/corpus/spool/) are segments the spool itself wrote:
 *   FUZZ_SPOOL_WRITE_SEEDS=tests/fuzz/corpus/spool build-fuzz/tests/fuzz/fuzz_spool
 * writes them and exits.
 */
#include "clickd/log.h"
#include "clickd/spool.h"

#include "fuzz_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Where the runs make their directories: /dev/shm when there is one (no disk I/O). */
static const char *temp_root = "/tmp";

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

/* Makes every frame-sized run of the input a frame whose hashes hold. */
static void repair(unsigned char *d, size_t n)
{
	size_t off = 0;

	while (n - off >= SPOOL_FRAME_HEADER_BYTES) {
		unsigned char *h = d + off;
		size_t room = n - off - SPOOL_FRAME_HEADER_BYTES;
		uint32_t clen = get32(h + 8);

		if (clen > room) {
			clen = (uint32_t)room;
			put32(h + 8, clen);
		}
		put32(h, SPOOL_FRAME_MAGIC);
		h[4] = SPOOL_FRAME_VERSION;
		h[5] = 0;
		put64(h + 24, XXH3_64bits(h + SPOOL_FRAME_HEADER_BYTES, clen));
		put64(h + 32, XXH3_64bits(h, 32));
		off += SPOOL_FRAME_HEADER_BYTES + clen;
	}
}

static void write_file(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	CHECK(fd >= 0);
	CHECK(n == 0 || write(fd, data, n) == (ssize_t)n);
	close(fd);
}

static int count_entries(const char *path, const char *prefix)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	CHECK(d != NULL);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

static void check_record(const struct spool_record *r)
{
	uint8_t sum = 0;

	CHECK((unsigned)r->stream < SINK_STREAM_COUNT);
	CHECK(r->key_len <= SPOOL_KEY_MAX_BYTES);
	CHECK(r->record_len <= SPOOL_RECORD_MAX_BYTES);
	CHECK((r->key == NULL) == (r->key_len == 0));
	CHECK(r->record != NULL);
	CHECK(r->token != 0);
	for (size_t i = 0; i < r->key_len; i++)
		sum ^= (uint8_t)r->key[i];
	for (size_t i = 0; i < r->record_len; i++)
		sum ^= (uint8_t)r->record[i];
	(void)sum;
}

/* Replays everything, acking each record; nacks every third one once first. */
static void replay(struct spool *s)
{
	struct spool_stats st;
	struct spool_record r;
	uint64_t read = 0, nacked = 0, last_nacked = 0;
	int rc;

	while ((rc = spool_next(s, &r)) == 0) {
		check_record(&r);
		read++;
		CHECK(read < 10 * 1000 * 1000);
		if (read % 3 == 0 && r.token > last_nacked) {
			uint64_t token = r.token;
			size_t len = r.record_len;

			last_nacked = token;
			nacked++;
			CHECK(spool_nack(s, token) == 0);
			CHECK(spool_ack(s, token) == -ENOENT);
			CHECK(spool_next(s, &r) == 0);
			check_record(&r);
			read++;
			CHECK(r.token == token && r.record_len == len);
		}
		CHECK(spool_ack(s, r.token) == 0);
		CHECK(spool_ack(s, r.token) == -ENOENT);
	}
	CHECK(rc == -ENODATA);
	spool_stats(s, &st);
	CHECK(st.records_read == read);
	CHECK(st.records_nacked == nacked);
	CHECK(st.records_acked == read - nacked);
	CHECK(st.records_in_flight == 0);
	CHECK(spool_empty(s));
	CHECK(st.bytes == 0 && st.segments == 0);
}

static void run(const unsigned char *older, size_t older_len, const unsigned char *newest,
                size_t newest_len)
{
	char dir[128], path[192], err[256];
	struct spool_options opt = {
	    .max_bytes = 1ull << 30,
	    .segment_bytes = 1 << 20,
	    .batch_bytes = 4096,
	    .max_unacked = 64,
	};
	struct spool *s;
	struct spool_record r;
	int rc;

	snprintf(dir, sizeof(dir), "%s/clickd-fuzz-spool-XXXXXX", temp_root);
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/spool-0000000000000001.seg", dir);
	write_file(path, older, older_len);
	snprintf(path, sizeof(path), "%s/spool-0000000000000002.seg", dir);
	write_file(path, newest, newest_len);

	opt.dir = dir;
	rc = spool_open(&s, &opt, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "spool_open: %s\n", err);
	CHECK(rc == 0);
	replay(s);
	CHECK(spool_append(s, SINK_TOUCHPOINTS, "k", 1, "{\"a\":1}", 7) == 0);
	CHECK(spool_next(s, &r) == 0);
	CHECK(r.stream == SINK_TOUCHPOINTS && r.key_len == 1 && r.record_len == 7 &&
	      memcmp(r.record, "{\"a\":1}", 7) == 0);
	CHECK(spool_ack(s, r.token) == 0);
	CHECK(spool_empty(s));
	CHECK(spool_close(s) == 0);
	CHECK(count_entries(dir, "") == 0);
	CHECK(rmdir(dir) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *fixed = malloc(size ? size : 1);
	int fds = count_entries("/proc/self/fd", "");

	if (size)
		memcpy(fixed, data, size);
	repair(fixed, size);
	run(data, size, fixed, size);
	run(fixed, size, data, size);
	free(fixed);
	CHECK(count_entries("/proc/self/fd", "") == fds);
	return 0;
}

/* ---- seeds ---- */

static void seed_segment(const char *out_dir, const char *name, int records, size_t batch_bytes,
                         size_t record_bytes, size_t cut)
{
	char dir[128], path[256], seg[192];
	struct spool_options opt = {.max_bytes = 1ull << 30, .batch_bytes = batch_bytes};
	struct spool *s;
	char err[256], *rec = malloc(record_bytes + 1);
	unsigned char *buf;
	struct stat st;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/clickd-fuzz-spool-XXXXXX", temp_root);
	CHECK(mkdtemp(dir) != NULL);
	opt.dir = dir;
	CHECK(spool_open(&s, &opt, err, sizeof(err)) == 0);
	for (int i = 0; i < records; i++) {
		char key[32];
		int kl = i % 5 == 4 ? 0 : snprintf(key, sizeof(key), "app1|visitor-%d", i % 7);
		size_t rl = record_bytes ? (size_t)(i * 31) % (record_bytes + 1) : 0;

		for (size_t j = 0; j < rl; j++)
			rec[j] =
			    "{\"event_id\":\"e1\",\"url\":\"https://x.example/\"}"[(i + j) % 44];
		CHECK(spool_append(s, (enum sink_stream)(i % SINK_STREAM_COUNT), kl ? key : NULL,
		                   (size_t)kl, rec, rl) == 0);
	}
	CHECK(spool_close(s) == 0);
	snprintf(seg, sizeof(seg), "%s/spool-0000000000000001.seg", dir);
	CHECK(stat(seg, &st) == 0 && (size_t)st.st_size > cut);
	buf = malloc((size_t)st.st_size);
	f = fopen(seg, "rb");
	CHECK(f && fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s", out_dir, name);
	write_file(path, buf, (size_t)st.st_size - cut);
	unlink(seg);
	rmdir(dir);
	free(buf);
	free(rec);
}

static void write_seeds(const char *out_dir)
{
	seed_segment(out_dir, "one-frame", 5, 0, 64, 0);
	seed_segment(out_dir, "many-frames", 200, 512, 200, 0);
	seed_segment(out_dir, "empty-records", 40, 128, 0, 0);
	seed_segment(out_dir, "large-record", 3, 0, 20000, 0);
	seed_segment(out_dir, "torn-tail", 100, 512, 120, 7);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("FUZZ_SPOOL_WRITE_SEEDS");

	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR); /* corrupt frames are expected here: no warn lines */
	if (access("/dev/shm", W_OK) == 0)
		temp_root = "/dev/shm";
	if (seeds) {
		write_seeds(seeds);
		exit(0);
	}
	return 0;
}
