/*
 * test_spool.c - the disk spool (spool.h): records come back in append order over frames,
 * segments and reopens; segments go only once read and acked; a torn tail is cut and a
 * corrupt frame skipped and counted; the bound answers -ENOSPC and recovers; nacks rewind;
 * the fsync policies sync when they say; the on-disk layout is the documented one.
 * Each test has its own temporary directory, removed at the end.
 */
#include "clickd/spool.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

static char dir[64];

static void make_temp_dir(void)
{
	strcpy(dir, "/tmp/clickd-test-spool-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
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

static void remove_temp_dir(void)
{
	remove_tree(dir);
}

TestSuite(spool, .init = make_temp_dir, .fini = remove_temp_dir);

/* Small frames and segments, so that a few thousand records make many of each. */
static struct spool_options small_options(void)
{
	return (struct spool_options){
	    .dir = dir,
	    .max_bytes = 64ull << 20,
	    .segment_bytes = 4096,
	    .batch_bytes = 512,
	};
}

static struct spool *open_spool(const struct spool_options *opt)
{
	struct spool *s;
	char err[256] = "";
	int rc = spool_open(&s, opt, err, sizeof(err));

	cr_assert_eq(rc, 0, "spool_open: %s (%s)", strerror(-rc), err);
	return s;
}

static struct spool_stats stats_of(const struct spool *s)
{
	struct spool_stats st;

	spool_stats(s, &st);
	return st;
}

/* Record i: 0..300 bytes of noise (zstd cannot shrink it, so sizes are predictable);
 * record 0 is empty. Its key is one of 13 visitors, its stream i % SINK_STREAM_COUNT. */
static size_t make_record(char *buf, int i)
{
	size_t len = (size_t)((i * 37) % 301);
	uint32_t x = (uint32_t)i * 2654435761u + 1;

	for (size_t j = 0; j < len; j++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[j] = (char)x;
	}
	return len;
}

static size_t make_key(char *buf, int i)
{
	return (size_t)snprintf(buf, 32, "visitor-%d", i % 13);
}

static void append_range(struct spool *s, int from, int to)
{
	char rec[512], key[32];

	for (int i = from; i < to; i++) {
		size_t rl = make_record(rec, i), kl = make_key(key, i);
		int rc =
		    spool_append(s, (enum sink_stream)(i % SINK_STREAM_COUNT), key, kl, rec, rl);
		cr_assert_eq(rc, 0, "append %d: %s", i, strerror(-rc));
	}
}

static void check_record(const struct spool_record *r, int i)
{
	char rec[512], key[32];
	size_t rl = make_record(rec, i), kl = make_key(key, i);

	cr_assert_eq(r->stream, (enum sink_stream)(i % SINK_STREAM_COUNT), "record %d: stream", i);
	cr_assert_eq(r->key_len, kl, "record %d: key length", i);
	cr_assert_eq(memcmp(r->key, key, kl), 0, "record %d: key", i);
	cr_assert_eq(r->record_len, rl, "record %d: length %zu, not %zu", i, r->record_len, rl);
	cr_assert(rl == 0 || memcmp(r->record, rec, rl) == 0, "record %d: bytes", i);
	cr_assert_neq(r->token, 0);
}

/* Reads the next record, which must be record i; returns its token. */
static uint64_t expect_next(struct spool *s, int i)
{
	struct spool_record r;
	int rc = spool_next(s, &r);

	cr_assert_eq(rc, 0, "next, expecting record %d: %s", i, strerror(-rc));
	check_record(&r, i);
	return r.token;
}

/* Reads records from..to-1 in order, acking each when ack. */
static void expect_range(struct spool *s, int from, int to, bool ack)
{
	for (int i = from; i < to; i++) {
		uint64_t token = expect_next(s, i);
		if (ack)
			cr_assert_eq(spool_ack(s, token), 0);
	}
}

static void expect_no_data(struct spool *s)
{
	struct spool_record r;

	cr_assert_eq(spool_next(s, &r), -ENODATA);
}

struct names {
	char name[256][64];
	size_t count;
};

static int compare_names(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Files in dir whose name starts with "spool-" and ends with ".seg", sorted. */
static void list_segments(struct names *out)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	cr_assert_not_null(d);
	out->count = 0;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (strncmp(de->d_name, "spool-", 6) != 0 || len < 4 ||
		    strcmp(de->d_name + len - 4, ".seg") != 0)
			continue;
		cr_assert_lt(out->count, 256);
		snprintf(out->name[out->count++], 64, "%s", de->d_name);
	}
	closedir(d);
	qsort(out->name, out->count, sizeof(out->name[0]), compare_names);
}

static void path_of(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", dir, name);
}

static off_t file_size(const char *name)
{
	char path[512];
	struct stat st;

	path_of(path, sizeof(path), name);
	cr_assert_eq(stat(path, &st), 0, "%s", path);
	return st.st_size;
}

static unsigned char *read_file(const char *name, size_t *len)
{
	char path[512];
	FILE *f;
	unsigned char *data;
	long size;

	path_of(path, sizeof(path), name);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = malloc((size_t)size + 1);
	cr_assert_eq(fread(data, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	*len = (size_t)size;
	return data;
}

static void write_at(const char *name, off_t off, const void *buf, size_t len)
{
	char path[512];
	int fd;

	path_of(path, sizeof(path), name);
	fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(pwrite(fd, buf, len, off), (ssize_t)len);
	close(fd);
}

static void flip_byte(const char *name, off_t off)
{
	size_t len;
	unsigned char *data = read_file(name, &len);
	unsigned char b;

	cr_assert_lt((size_t)off, len);
	b = data[off] ^ 0x5a;
	free(data);
	write_at(name, off, &b, 1);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* The frames of a segment file, from their headers. */
struct frames {
	off_t off[512];
	uint32_t records[512];
	size_t count;
	off_t end; /* after the last frame */
};

static void list_frames(const char *name, struct frames *out)
{
	size_t len, off = 0;
	unsigned char *data = read_file(name, &len);

	out->count = 0;
	while (off + SPOOL_FRAME_HEADER_BYTES <= len) {
		cr_assert_eq(le32(data + off), SPOOL_FRAME_MAGIC, "%s: frame at %zu", name, off);
		cr_assert_lt(out->count, 512);
		out->off[out->count] = (off_t)off;
		out->records[out->count++] = le32(data + off + 16);
		off += SPOOL_FRAME_HEADER_BYTES + le32(data + off + 8);
	}
	cr_assert_eq(off, len, "%s: the last frame does not end the file", name);
	out->end = (off_t)off;
	free(data);
}

Test(spool, replays_records_in_append_order_over_many_frames_and_segments)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	struct spool_stats st;
	struct names segs;

	append_range(s, 0, 3000);
	cr_assert_eq(spool_flush(s, 0), 0);
	st = stats_of(s);
	cr_assert_eq(st.records_appended, 3000);
	cr_assert_gt(st.frames_written, 100);
	cr_assert_gt(st.segments, 20);
	list_segments(&segs);
	cr_assert_eq(segs.count, st.segments);
	expect_range(s, 0, 3000, true);
	expect_no_data(s);
	st = stats_of(s);
	cr_assert_eq(st.records_read, 3000);
	cr_assert_eq(st.records_acked, 3000);
	cr_assert_eq(st.corrupt_frames, 0);
	cr_assert(spool_empty(s));
	cr_assert_eq(st.bytes, 0);
	list_segments(&segs);
	cr_assert_eq(segs.count, 0, "a delivered spool leaves no segment");
	cr_assert_eq(spool_close(s), 0);
}

Test(spool, rotates_segments_before_a_frame_would_pass_segment_bytes)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	struct names segs;
	uint64_t total = 0;

	append_range(s, 0, 1000);
	cr_assert_eq(spool_close(s), 0);
	list_segments(&segs);
	cr_assert_gt(segs.count, 5);
	for (size_t i = 0; i < segs.count; i++) {
		char want[64];
		struct frames fr;

		snprintf(want, sizeof(want), "spool-%016zx.seg", i + 1);
		cr_assert_str_eq(segs.name[i], want, "sequences count up from 1");
		cr_assert_leq(file_size(segs.name[i]), 4096);
		list_frames(segs.name[i], &fr); /* whole frames, none spanning two files */
		cr_assert_gt(fr.count, 0);
		total += (uint64_t)file_size(segs.name[i]);
	}
	s = open_spool(&opt);
	cr_assert_eq(stats_of(s).bytes, total, "sizes on disk are counted at open");
	cr_assert_eq(stats_of(s).segments, segs.count);
	spool_close(s);
}

Test(spool, keeps_the_order_across_close_and_reopen)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);

	append_range(s, 0, 500);
	cr_assert_eq(spool_close(s), 0); /* writes the batch */
	s = open_spool(&opt);
	append_range(s, 500, 1000);
	cr_assert_eq(spool_close(s), 0);
	s = open_spool(&opt);
	append_range(s, 1000, 1200); /* still in the batch: read after what is on disk */
	expect_range(s, 0, 1200, true);
	expect_no_data(s);
	cr_assert(spool_empty(s));
	spool_close(s);
}

Test(spool, deletes_a_segment_only_when_every_record_in_it_is_read_and_acked)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	static uint64_t tokens[1000];
	uint64_t segments;

	append_range(s, 0, 1000);
	cr_assert_eq(spool_flush(s, 0), 0);
	segments = stats_of(s).segments;
	cr_assert_gt(segments, 5);
	for (int i = 0; i < 1000; i++)
		tokens[i] = expect_next(s, i);
	/* Every record but the very first acked, from the newest: the first segment still
	 * waits, and so do all the others (segments go oldest first). */
	for (int i = 999; i >= 1; i--)
		cr_assert_eq(spool_ack(s, tokens[i]), 0);
	cr_assert_eq(stats_of(s).segments, segments);
	cr_assert_eq(stats_of(s).records_in_flight, 1);
	cr_assert_eq(spool_ack(s, tokens[0]), 0);
	cr_assert_eq(stats_of(s).segments, 0);
	cr_assert(spool_empty(s));
	spool_close(s);

	/* Acked in order: the count of segments only falls, one segment at a time as its last
	 * record is acked, and never before a record of it is acked. */
	s = open_spool(&opt);
	append_range(s, 0, 1000);
	cr_assert_eq(spool_flush(s, 0), 0);
	for (int i = 0; i < 1000; i++)
		tokens[i] = expect_next(s, i);
	segments = stats_of(s).segments;
	for (int i = 0; i < 1000; i++) {
		uint64_t now;

		cr_assert_eq(spool_ack(s, tokens[i]), 0);
		now = stats_of(s).segments;
		cr_assert(now == segments || now == segments - 1, "record %d", i);
		segments = now;
		if (i < 999)
			cr_assert_gt(now, 0);
	}
	cr_assert_eq(segments, 0);
	spool_close(s);
}

Test(spool, replays_unacked_records_after_a_reopen)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	static uint64_t tokens[1000];
	struct spool_record r;
	int first;

	append_range(s, 0, 1000);
	for (int i = 0; i < 1000; i++)
		tokens[i] = expect_next(s, i);
	for (int i = 0; i < 600; i++)
		cr_assert_eq(spool_ack(s, tokens[i]), 0);
	cr_assert_gt(stats_of(s).segments_deleted, 0);
	cr_assert_eq(spool_close(s), 0); /* 400 in flight: not delivered, kept */

	s = open_spool(&opt);
	cr_assert_eq(spool_next(s, &r), 0);
	/* The segment of record 600 and all after it are read again (the acked records of
	 * that segment too: at least once). */
	for (first = 0; first < 1000; first++) {
		char rec[512];
		size_t rl = make_record(rec, first);
		if (r.record_len == rl && (rl == 0 || memcmp(r.record, rec, rl) == 0))
			break;
	}
	cr_assert_leq(first, 600);
	cr_assert_gt(first, 0, "fully acked segments were deleted");
	check_record(&r, first);
	cr_assert_eq(spool_ack(s, r.token), 0);
	expect_range(s, first + 1, 1000, true);
	expect_no_data(s);
	cr_assert(spool_empty(s));
	spool_close(s);
}

/* Writes records 0..n-1 into segments and closes; returns the newest segment's name. */
static void fill_and_close(int n, struct names *segs)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);

	append_range(s, 0, n);
	cr_assert_eq(spool_close(s), 0);
	list_segments(segs);
	cr_assert_gt(segs->count, 0);
}

Test(spool, cuts_a_truncated_last_frame_and_keeps_the_records_before_it)
{
	struct spool_options opt = small_options();
	struct names segs;
	struct frames fr;
	const char *last;
	int lost;
	struct spool *s;
	char path[512];

	fill_and_close(200, &segs);
	last = segs.name[segs.count - 1];
	list_frames(last, &fr);
	lost = (int)fr.records[fr.count - 1];
	path_of(path, sizeof(path), last);
	cr_assert_eq(truncate(path, fr.end - 3), 0);

	s = open_spool(&opt);
	cr_assert_eq(stats_of(s).torn_tails_cut, 1);
	cr_assert_eq(stats_of(s).torn_bytes_cut, (uint64_t)(fr.end - 3 - fr.off[fr.count - 1]));
	cr_assert_eq(file_size(last), fr.off[fr.count - 1], "cut at the last good frame");
	expect_range(s, 0, 200 - lost, true);
	expect_no_data(s);
	cr_assert_eq(stats_of(s).corrupt_frames, 0);
	spool_close(s);
}

Test(spool, cuts_garbage_after_the_last_frame)
{
	struct spool_options opt = small_options();
	struct names segs;
	struct frames fr;
	unsigned char junk[100];
	struct spool *s;

	fill_and_close(200, &segs);
	list_frames(segs.name[segs.count - 1], &fr);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 7 + 1);
	memcpy(junk + 10, "CKSP", 4); /* a magic alone does not make a frame */
	write_at(segs.name[segs.count - 1], fr.end, junk, sizeof(junk));

	s = open_spool(&opt);
	cr_assert_eq(stats_of(s).torn_tails_cut, 1);
	cr_assert_eq(stats_of(s).torn_bytes_cut, sizeof(junk));
	cr_assert_eq(file_size(segs.name[segs.count - 1]), fr.end);
	expect_range(s, 0, 200, true);
	expect_no_data(s);
	spool_close(s);
}

Test(spool, deletes_a_newest_segment_that_holds_only_a_torn_frame)
{
	struct spool_options opt = small_options();
	struct names segs, after;
	struct frames fr;
	struct spool *s;
	char path[512];
	int lost;

	fill_and_close(200, &segs);
	list_frames(segs.name[segs.count - 1], &fr);
	lost = 0;
	for (size_t i = 0; i < fr.count; i++)
		lost += (int)fr.records[i];
	path_of(path, sizeof(path), segs.name[segs.count - 1]);
	cr_assert_eq(truncate(path, 20), 0);

	s = open_spool(&opt);
	list_segments(&after);
	cr_assert_eq(after.count, segs.count - 1);
	expect_range(s, 0, 200 - lost, true);
	expect_no_data(s);
	spool_close(s);
}

/* Damages frame 1 of the oldest segment with damage(name, frame offset); the records of
 * that frame, and only those, are skipped and counted. */
static void check_middle_frame_skipped(off_t delta, bool in_newest)
{
	struct spool_options opt = small_options();
	struct names segs;
	struct frames fr;
	struct spool *s;
	const char *name;
	int before = 0, skipped;

	fill_and_close(400, &segs);
	cr_assert_geq(segs.count, 2);
	name = segs.name[in_newest ? segs.count - 1 : 0];
	if (in_newest)
		for (size_t i = 0; i + 1 < segs.count; i++) {
			struct frames f;
			list_frames(segs.name[i], &f);
			for (size_t j = 0; j < f.count; j++)
				before += (int)f.records[j];
		}
	list_frames(name, &fr);
	cr_assert_geq(fr.count, 3);
	before += (int)fr.records[0];
	skipped = (int)fr.records[1];
	flip_byte(name, fr.off[1] + delta);

	s = open_spool(&opt);
	cr_assert_eq(stats_of(s).torn_tails_cut, 0, "valid frames follow: not a torn tail");
	expect_range(s, 0, before, true);
	expect_range(s, before + skipped, 400, true);
	expect_no_data(s);
	cr_assert_eq(stats_of(s).corrupt_frames, 1);
	cr_assert_eq(stats_of(s).corrupt_bytes, (uint64_t)(fr.off[2] - fr.off[1]));
	cr_assert(spool_empty(s), "segments with a corrupt frame go once read and acked");
	spool_close(s);
}

Test(spool, skips_and_counts_a_frame_whose_payload_was_damaged)
{
	check_middle_frame_skipped(SPOOL_FRAME_HEADER_BYTES + 5, false);
}

Test(spool, skips_and_counts_a_frame_whose_header_was_damaged)
{
	check_middle_frame_skipped(9, false); /* compressed_len: found again by its magic */
}

Test(spool, skips_a_damaged_frame_in_the_middle_of_the_newest_segment)
{
	check_middle_frame_skipped(SPOOL_FRAME_HEADER_BYTES + 1, true);
}

Test(spool, counts_a_corrupt_frame_once_when_a_nack_reads_past_it_again)
{
	struct spool_options opt = small_options();
	struct names segs;
	struct frames fr;
	struct spool *s;
	static uint64_t t[400];
	int before, skipped, n = 0;

	fill_and_close(400, &segs);
	list_frames(segs.name[0], &fr);
	before = (int)fr.records[0];
	skipped = (int)fr.records[1];
	flip_byte(segs.name[0], fr.off[1] + SPOOL_FRAME_HEADER_BYTES + 3);
	s = open_spool(&opt);
	for (int i = 0; i < 400; i++)
		if (i < before || i >= before + skipped)
			t[n++] = expect_next(s, i);
	cr_assert_eq(stats_of(s).corrupt_frames, 1);
	cr_assert_eq(spool_nack(s, t[0]), 0);
	for (int i = 1; i < n; i++)
		cr_assert_eq(spool_ack(s, t[i]), 0);
	cr_assert_eq(spool_ack(s, expect_next(s, 0)), 0);
	expect_no_data(s);
	cr_assert_eq(stats_of(s).corrupt_frames, 1);
	cr_assert(spool_empty(s));
	spool_close(s);
}

Test(spool, answers_enospc_when_full_and_takes_records_again_once_acks_free_space)
{
	struct spool_options opt = small_options();
	struct spool *s;
	struct names segs;
	uint64_t on_disk = 0;
	int n = 0, rc;

	opt.max_bytes = 16384;
	s = open_spool(&opt);
	for (;;) {
		char rec[512], key[32];
		size_t rl = make_record(rec, n), kl = make_key(key, n);

		rc = spool_append(s, (enum sink_stream)(n % SINK_STREAM_COUNT), key, kl, rec, rl);
		if (rc != 0)
			break;
		n++;
		cr_assert_lt(n, 10000);
	}
	cr_assert_eq(rc, -ENOSPC);
	cr_assert_gt(n, 20);
	cr_assert_eq(stats_of(s).records_refused, 1);
	cr_assert_eq(spool_flush(s, 0), 0);
	list_segments(&segs);
	for (size_t i = 0; i < segs.count; i++)
		on_disk += (uint64_t)file_size(segs.name[i]);
	cr_assert_leq(on_disk, opt.max_bytes, "the bound holds on disk");
	cr_assert_eq(on_disk, stats_of(s).bytes);

	/* Deliver the first half: the oldest segments go and records fit again. */
	expect_range(s, 0, n / 2, true);
	cr_assert_lt(stats_of(s).bytes, on_disk);
	append_range(s, n, n + 5);
	expect_range(s, n / 2, n + 5, true);
	expect_no_data(s);
	cr_assert(spool_empty(s));
	spool_close(s);
}

Test(spool, counts_the_segments_found_at_open_towards_max_bytes)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	char rec[100] = {0};

	append_range(s, 0, 300);
	spool_close(s);
	opt.max_bytes = 4096; /* less than what is already there */
	s = open_spool(&opt);
	cr_assert_gt(stats_of(s).bytes, opt.max_bytes);
	cr_assert_not(spool_has_room(s, sizeof(rec)), "no room said before any append");
	cr_assert_eq(spool_append(s, SINK_EVENTS, NULL, 0, rec, sizeof(rec)), -ENOSPC);
	expect_range(s, 0, 300, true);
	cr_assert(spool_has_room(s, sizeof(rec)), "room again once delivered");
	cr_assert_not(spool_has_room(s, SPOOL_RECORD_MAX_BYTES + 1));
	cr_assert_eq(spool_append(s, SINK_EVENTS, NULL, 0, rec, sizeof(rec)), 0);
	spool_close(s);
}

Test(spool, takes_empty_and_maximum_records_and_refuses_longer_ones)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	char *big = malloc(SPOOL_RECORD_MAX_BYTES + 1);
	char *key = malloc(SPOOL_KEY_MAX_BYTES + 1);
	struct spool_record r;

	for (size_t i = 0; i <= SPOOL_RECORD_MAX_BYTES; i++)
		big[i] = (char)(i * 131 + (i >> 9));
	memset(key, 'k', SPOOL_KEY_MAX_BYTES + 1);
	cr_assert_eq(spool_append(s, SINK_EVENTS, NULL, 0, "", 0), 0);
	cr_assert_eq(spool_append(s, SINK_TOUCHPOINTS, key, SPOOL_KEY_MAX_BYTES, big,
	                          SPOOL_RECORD_MAX_BYTES),
	             0);
	cr_assert_eq(spool_append(s, SINK_EVENTS, NULL, 0, big, SPOOL_RECORD_MAX_BYTES + 1),
	             -EMSGSIZE);
	cr_assert_eq(spool_append(s, SINK_EVENTS, key, SPOOL_KEY_MAX_BYTES + 1, "x", 1), -EMSGSIZE);
	cr_assert_eq(spool_append(s, SINK_STREAM_COUNT, NULL, 0, "x", 1), -EINVAL);
	cr_assert_eq(spool_append(s, SINK_DEAD_LETTERS, "k", 1, "", 0), 0);
	cr_assert_eq(stats_of(s).records_appended, 3);
	cr_assert_eq(spool_close(s), 0);

	s = open_spool(&opt);
	cr_assert_eq(spool_next(s, &r), 0);
	cr_assert_eq(r.stream, SINK_EVENTS);
	cr_assert_eq(r.key_len, 0);
	cr_assert_null(r.key);
	cr_assert_eq(r.record_len, 0);
	cr_assert_eq(spool_ack(s, r.token), 0);
	cr_assert_eq(spool_next(s, &r), 0);
	cr_assert_eq(r.stream, SINK_TOUCHPOINTS);
	cr_assert_eq(r.key_len, SPOOL_KEY_MAX_BYTES);
	cr_assert_eq(memcmp(r.key, key, SPOOL_KEY_MAX_BYTES), 0);
	cr_assert_eq(r.record_len, SPOOL_RECORD_MAX_BYTES);
	cr_assert_eq(memcmp(r.record, big, SPOOL_RECORD_MAX_BYTES), 0);
	cr_assert_eq(spool_ack(s, r.token), 0);
	cr_assert_eq(spool_next(s, &r), 0);
	cr_assert_eq(r.stream, SINK_DEAD_LETTERS);
	cr_assert_eq(r.key_len, 1);
	cr_assert_eq(r.record_len, 0);
	cr_assert_eq(spool_ack(s, r.token), 0);
	expect_no_data(s);
	cr_assert(spool_empty(s));
	spool_close(s);
	free(big);
	free(key);
}

Test(spool, ignores_files_that_are_not_segments)
{
	static const char *foreign[] = {
	    "README",
	    "spool-0000000000000001.seg.tmp",
	    "spool-00000000000000zz.seg",
	    "spool-000000000000000A.seg",
	    "spool-1.seg",
	    "spool-00000000000000001.seg",
	};
	struct spool_options opt = small_options();
	struct spool *s;
	char path[512];
	struct names segs;

	for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
		FILE *f;
		path_of(path, sizeof(path), foreign[i]);
		f = fopen(path, "w");
		cr_assert_not_null(f);
		fputs("not a segment\n", f);
		fclose(f);
	}
	path_of(path, sizeof(path), "spool-00000000000000f0.seg"); /* a directory */
	cr_assert_eq(mkdir(path, 0755), 0);
	path_of(path, sizeof(path), "spool-00000000000000f1.seg"); /* a symlink */
	cr_assert_eq(symlink("/etc/hostname", path), 0);

	s = open_spool(&opt);
	cr_assert_eq(stats_of(s).segments, 0);
	cr_assert_eq(stats_of(s).bytes, 0);
	cr_assert(spool_empty(s));
	append_range(s, 0, 300);
	expect_range(s, 0, 300, true);
	expect_no_data(s);
	cr_assert_eq(stats_of(s).corrupt_frames, 0);
	spool_close(s);
	for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++)
		cr_assert_gt(file_size(foreign[i]), 0, "%s left alone", foreign[i]);
	list_segments(&segs);
	cr_assert_eq(segs.count, 6, "the foreign look-alikes, the directory and the symlink");
}

Test(spool, a_nack_rewinds_to_the_oldest_nacked_record_once_nothing_is_in_flight)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	uint64_t t[12];
	struct spool_record r;

	append_range(s, 0, 11);
	for (int i = 0; i < 10; i++)
		t[i] = expect_next(s, i);
	for (int i = 0; i < 10; i++)
		if (i != 3 && i != 7)
			cr_assert_eq(spool_ack(s, t[i]), 0);
	cr_assert_eq(spool_nack(s, t[3]), 0);
	cr_assert_eq(spool_next(s, &r), -EAGAIN, "record 7 is still in flight");
	cr_assert_eq(spool_nack(s, t[7]), 0);
	cr_assert_eq(stats_of(s).records_nacked, 2);
	/* 3 and 7 again, in their order and with their tokens; acked ones skipped; then 10. */
	cr_assert_eq(expect_next(s, 3), t[3]);
	cr_assert_eq(expect_next(s, 7), t[7]);
	t[10] = expect_next(s, 10);
	expect_no_data(s);
	/* A record that fails again comes back again, before anything newer. */
	cr_assert_eq(spool_nack(s, t[7]), 0);
	cr_assert_eq(spool_ack(s, t[3]), 0);
	cr_assert_eq(spool_next(s, &r), -EAGAIN, "record 10 is still in flight");
	cr_assert_eq(spool_ack(s, t[10]), 0);
	append_range(s, 11, 12);
	cr_assert_eq(expect_next(s, 7), t[7]);
	t[11] = expect_next(s, 11);
	cr_assert_eq(spool_ack(s, t[7]), 0);
	cr_assert_eq(spool_ack(s, t[11]), 0);
	expect_no_data(s);
	cr_assert(spool_empty(s));
	cr_assert_eq(stats_of(s).records_read, 15);
	spool_close(s);
}

Test(spool, a_nack_rewinds_across_segments)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	static uint64_t t[600];

	append_range(s, 0, 600);
	for (int i = 0; i < 600; i++)
		t[i] = expect_next(s, i);
	cr_assert_gt(stats_of(s).segments, 3);
	for (int i = 0; i < 600; i++)
		if (i % 100 == 50)
			cr_assert_eq(spool_nack(s, t[i]), 0);
		else
			cr_assert_eq(spool_ack(s, t[i]), 0);
	for (int i = 50; i < 600; i += 100)
		cr_assert_eq(spool_ack(s, expect_next(s, i)), 0);
	expect_no_data(s);
	cr_assert(spool_empty(s));
	spool_close(s);
}

Test(spool, bounds_the_records_in_flight_by_max_unacked)
{
	struct spool_options opt = small_options();
	struct spool *s;
	struct spool_record r;
	uint64_t t[7];

	opt.max_unacked = 4;
	s = open_spool(&opt);
	append_range(s, 0, 7);
	for (int i = 0; i < 4; i++)
		t[i] = expect_next(s, i);
	cr_assert_eq(spool_next(s, &r), -EAGAIN);
	cr_assert_eq(spool_ack(s, t[1]), 0); /* not the oldest: the span stays 4 */
	cr_assert_eq(spool_next(s, &r), -EAGAIN);
	cr_assert_eq(spool_ack(s, t[0]), 0); /* the span starts at record 2 now */
	t[4] = expect_next(s, 4);
	t[5] = expect_next(s, 5);
	cr_assert_eq(spool_next(s, &r), -EAGAIN);
	cr_assert_eq(stats_of(s).records_in_flight, 4);
	cr_assert_eq(spool_ack(s, t[2]), 0);
	t[6] = expect_next(s, 6);
	for (int i = 3; i < 7; i++)
		cr_assert_eq(spool_ack(s, t[i]), 0);
	expect_no_data(s);
	cr_assert(spool_empty(s));
	spool_close(s);
}

Test(spool, refuses_tokens_that_are_not_in_flight)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	uint64_t t;

	append_range(s, 0, 2);
	cr_assert_eq(spool_ack(s, 0), -ENOENT);
	cr_assert_eq(spool_ack(s, 1), -ENOENT, "not read yet");
	t = expect_next(s, 0);
	cr_assert_eq(spool_ack(s, t + 100), -ENOENT);
	cr_assert_eq(spool_ack(s, t), 0);
	cr_assert_eq(spool_ack(s, t), -ENOENT, "twice");
	cr_assert_eq(spool_nack(s, t), -ENOENT, "after an ack");
	t = expect_next(s, 1);
	cr_assert_eq(spool_nack(s, t), 0);
	cr_assert_eq(spool_nack(s, t), -ENOENT, "twice");
	cr_assert_eq(spool_ack(s, t), -ENOENT, "nacked: it must be read again first");
	cr_assert_eq(spool_ack(s, expect_next(s, 1)), 0);
	cr_assert(spool_empty(s));
	spool_close(s);
}

Test(spool, next_writes_the_batch_when_it_catches_up_with_it)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);

	append_range(s, 0, 3);
	cr_assert_eq(stats_of(s).frames_written, 0);
	expect_range(s, 0, 3, false);
	cr_assert_eq(stats_of(s).frames_written, 1);
	expect_no_data(s);
	spool_close(s);
}

Test(spool, a_drained_spool_deletes_its_last_segment_and_starts_a_new_one)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	struct names segs;

	append_range(s, 0, 3);
	expect_range(s, 0, 3, true);
	cr_assert(spool_empty(s));
	list_segments(&segs);
	cr_assert_eq(segs.count, 0);
	append_range(s, 3, 6);
	cr_assert_eq(spool_flush(s, 0), 0);
	list_segments(&segs);
	cr_assert_eq(segs.count, 1);
	cr_assert_str_eq(segs.name[0], "spool-0000000000000002.seg", "names are never reused");
	expect_range(s, 3, 6, true);
	spool_close(s);
}

Test(spool, poll_writes_a_batch_once_it_has_waited_linger_ms)
{
	struct spool_options opt = small_options();
	struct spool *s;

	opt.linger_ms = 100;
	s = open_spool(&opt);
	append_range(s, 0, 2);
	cr_assert_eq(spool_poll(s, 1000), 0);
	cr_assert_eq(spool_poll(s, 1099), 0);
	cr_assert_eq(stats_of(s).frames_written, 0);
	cr_assert_gt(stats_of(s).batch_bytes, 0);
	cr_assert_eq(spool_poll(s, 1100), 0);
	cr_assert_eq(stats_of(s).frames_written, 1);
	cr_assert_eq(stats_of(s).batch_bytes, 0);
	spool_close(s);
}

Test(spool, fsync_per_frame_syncs_every_frame)
{
	struct spool_options opt = small_options();
	struct spool *s;

	opt.fsync = SPOOL_FSYNC_PER_FRAME;
	s = open_spool(&opt);
	append_range(s, 0, 100);
	cr_assert_eq(spool_flush(s, 0), 0);
	cr_assert_gt(stats_of(s).frames_written, 5);
	cr_assert_eq(stats_of(s).fsyncs, stats_of(s).frames_written);
	spool_close(s);
}

Test(spool, fsync_never_does_not_sync)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);

	append_range(s, 0, 100);
	cr_assert_eq(spool_flush(s, 0), 0);
	cr_assert_eq(spool_poll(s, 100000), 0);
	spool_close(s);
	s = open_spool(&opt);
	cr_assert_eq(stats_of(s).fsyncs, 0);
	expect_range(s, 0, 100, true);
	cr_assert_eq(stats_of(s).fsyncs, 0);
	spool_close(s);
}

Test(spool, fsync_interval_syncs_at_most_once_per_interval)
{
	struct spool_options opt = small_options();
	struct spool *s;

	opt.fsync = SPOOL_FSYNC_INTERVAL;
	opt.fsync_interval_ms = 1000;
	opt.segment_bytes = 1 << 20; /* no sealing (which syncs) in this test */
	s = open_spool(&opt);
	append_range(s, 0, 5);
	cr_assert_eq(spool_flush(s, 10000), 0);
	cr_assert_eq(stats_of(s).fsyncs, 1, "nothing synced yet: due at once");
	append_range(s, 5, 10);
	cr_assert_eq(spool_flush(s, 10500), 0);
	cr_assert_eq(spool_poll(s, 10999), 0);
	cr_assert_eq(stats_of(s).fsyncs, 1);
	cr_assert_eq(spool_poll(s, 11000), 0);
	cr_assert_eq(stats_of(s).fsyncs, 2);
	cr_assert_eq(spool_poll(s, 50000), 0);
	cr_assert_eq(stats_of(s).fsyncs, 2, "nothing written since");
	spool_close(s);
}

Test(spool, counts_records_durable_as_the_fsync_policy_says)
{
	struct spool_options opt = small_options();
	struct spool *s;

	/* interval: written is not durable; the sync makes it so. */
	opt.fsync = SPOOL_FSYNC_INTERVAL;
	opt.fsync_interval_ms = 1000;
	opt.segment_bytes = 1 << 20;
	opt.batch_bytes = 1 << 16; /* every record fits the batch */
	s = open_spool(&opt);
	append_range(s, 0, 3);
	cr_assert_eq(spool_appended(s), 3);
	cr_assert_eq(spool_durable(s), 0, "in the batch: memory only");
	cr_assert_eq(spool_flush(s, 10000), 0);
	cr_assert_eq(spool_durable(s), 3, "written and synced (the first sync is due at once)");
	append_range(s, 3, 5);
	cr_assert_eq(spool_flush(s, 10100), 0);
	cr_assert_eq(stats_of(s).frames_written, 2);
	cr_assert_eq(spool_durable(s), 3, "written, the sync not due yet");
	/* spool_sync (ack mode) syncs whatever the interval, and the interval starts again. */
	cr_assert_eq(spool_sync(s, 10200), 0);
	cr_assert_eq(spool_durable(s), 5);
	append_range(s, 5, 6);
	cr_assert_eq(spool_flush(s, 10300), 0);
	cr_assert_eq(spool_durable(s), 5);
	cr_assert_eq(spool_poll(s, 11200), 0);
	cr_assert_eq(spool_durable(s), 6);
	spool_close(s);
	remove_tree(dir);
	cr_assert_eq(mkdir(dir, 0700), 0);

	/* never: written is durable (it survives a crash of clickd); spool_sync only writes. */
	opt.fsync = SPOOL_FSYNC_NEVER;
	s = open_spool(&opt);
	append_range(s, 0, 4);
	cr_assert_eq(spool_durable(s), 0);
	cr_assert_eq(spool_sync(s, 0), 0);
	cr_assert_eq(spool_durable(s), 4);
	cr_assert_eq(stats_of(s).fsyncs, 0);
	spool_close(s);
	remove_tree(dir);
	cr_assert_eq(mkdir(dir, 0700), 0);

	/* per_frame: each frame is synced as it is written. */
	opt.fsync = SPOOL_FSYNC_PER_FRAME;
	s = open_spool(&opt);
	append_range(s, 0, 2);
	cr_assert_eq(spool_flush(s, 0), 0);
	cr_assert_eq(spool_durable(s), 2);
	cr_assert_eq(stats_of(s).fsyncs, 1);
	spool_close(s);
}

Test(spool, keeps_what_was_flushed_when_the_process_dies_without_closing)
{
	struct spool_options opt = small_options();
	pid_t pid = fork();
	int status;
	struct spool *s;

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct spool *c;
		char err[128];
		char rec[8] = "lost";

		opt.fsync = SPOOL_FSYNC_PER_FRAME;
		if (spool_open(&c, &opt, err, sizeof(err)) != 0)
			_exit(1);
		for (int i = 0; i < 100; i++) {
			char r[512], key[32];
			size_t rl = make_record(r, i), kl = make_key(key, i);
			if (spool_append(c, (enum sink_stream)(i % SINK_STREAM_COUNT), key, kl, r,
			                 rl) != 0)
				_exit(2);
		}
		if (spool_flush(c, 0) != 0)
			_exit(3);
		spool_append(c, SINK_EVENTS, NULL, 0, rec, 4); /* batch only: dies with us */
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	s = open_spool(&opt); /* the lock went with the process */
	expect_range(s, 0, 100, true);
	expect_no_data(s);
	spool_close(s);
}

Test(spool, refuses_a_second_spool_on_the_same_directory)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt), *t;
	char err[256] = "";

	cr_assert_eq(spool_open(&t, &opt, err, sizeof(err)), -EBUSY);
	cr_assert_null(t);
	cr_assert_not_null(strstr(err, "in use"), "%s", err);
	spool_close(s);
	s = open_spool(&opt);
	spool_close(s);
}

Test(spool, refuses_bad_options_with_the_key_named)
{
	struct spool_options opt = small_options();
	struct spool *s;
	char err[256];

	opt.max_bytes = 0;
	cr_assert_eq(spool_open(&s, &opt, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "spool.max_bytes"), "%s", err);
	opt = small_options();
	opt.batch_bytes = SPOOL_BATCH_MAX_BYTES + 1;
	cr_assert_eq(spool_open(&s, &opt, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "spool.batch_bytes"), "%s", err);
	opt = small_options();
	opt.max_unacked = SPOOL_MAX_UNACKED_LIMIT + 1;
	cr_assert_eq(spool_open(&s, &opt, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "spool.max_unacked"), "%s", err);
	opt = small_options();
	opt.fsync = (enum spool_fsync)7;
	cr_assert_eq(spool_open(&s, &opt, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "spool.fsync"), "%s", err);
	opt = small_options();
	opt.zstd_level = 1000;
	cr_assert_eq(spool_open(&s, &opt, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "spool.zstd_level"), "%s", err);
	opt = small_options();
	opt.dir = NULL;
	cr_assert_eq(spool_open(&s, &opt, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "spool.dir"), "%s", err);
}

Test(spool, writes_the_documented_layout)
{
	struct spool_options opt = small_options();
	struct spool *s = open_spool(&opt);
	struct names segs;
	unsigned char *data, out[64];
	size_t len, n;
	uint32_t clen;

	cr_assert_eq(spool_append(s, SINK_TOUCHPOINTS, "ab", 2, "{}", 2), 0);
	cr_assert_eq(spool_append(s, SINK_EVENTS, NULL, 0, "x", 1), 0);
	cr_assert_eq(spool_close(s), 0);
	list_segments(&segs);
	cr_assert_eq(segs.count, 1);
	cr_assert_str_eq(segs.name[0], "spool-0000000000000001.seg");
	data = read_file(segs.name[0], &len);
	cr_assert_eq(memcmp(data, "CKSP", 4), 0);
	cr_assert_eq(data[4], 1);
	cr_assert_eq(data[5], 0);
	cr_assert_eq(le32(data + 4) >> 16, 0, "flags");
	clen = le32(data + 8);
	cr_assert_eq(len, SPOOL_FRAME_HEADER_BYTES + clen);
	cr_assert_eq(le32(data + 12), 2 * SPOOL_ENTRY_HEADER_BYTES + 2 + 2 + 1);
	cr_assert_eq(le32(data + 16), 2, "record count");
	cr_assert_eq(le32(data + 20), 0, "reserved");
	cr_assert_eq(le64(data + 24), XXH3_64bits(data + SPOOL_FRAME_HEADER_BYTES, clen));
	cr_assert_eq(le64(data + 32), XXH3_64bits(data, 32));
	n = ZSTD_decompress(out, sizeof(out), data + SPOOL_FRAME_HEADER_BYTES, clen);
	cr_assert(!ZSTD_isError(n));
	cr_assert_eq(n, 21);
	cr_assert_eq(memcmp(out,
	                    "\x01\x00\x02\x00\x02\x00\x00\x00"
	                    "ab{}"
	                    "\x00\x00\x00\x00\x01\x00\x00\x00"
	                    "x",
	                    21),
	             0);
	free(data);
}
