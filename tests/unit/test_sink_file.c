/*
 * test_sink_file.c - the file sink (sink.h): NDJSON lines in order, plain and zstd, rotation
 * by size and by age (the clock driven through poll), `.open` names only until a file is
 * complete, records counted as they are taken. Completion runs on the sink's own thread:
 * a test hook (before_complete) holds it back at a gate, so the tests see, without any
 * timing, that the writer goes on while files wait, that the queue of waiting files is
 * bounded (write answers -EAGAIN), and that flush and free wait for every file.
 */
#include "clickd/metrics.h"
#include "clickd/sink.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

static char dir[64];

static void make_temp_dir(void)
{
	strcpy(dir, "/tmp/clickd-test-sink-file-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_temp_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[512];

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) != 0)
			rmdir(path); /* a rename target made impossible on purpose */
	}
	closedir(d);
	rmdir(dir);
}

TestSuite(sink_file, .init = make_temp_dir, .fini = remove_temp_dir);

/* flush's timeout in the tests: a bound against hanging, not a measure of speed. */
#define FLUSH_TIMEOUT_MS 30000

struct names {
	char (*name)[128]; /* owned */
	size_t count;
	size_t cap;
};

static void names_free(struct names *n)
{
	free(n->name);
	n->name = NULL;
	n->count = n->cap = 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Names in dir starting with prefix and ending with suffix, sorted. */
static void list_files(const char *prefix, const char *suffix, struct names *out)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	cr_assert_not_null(d);
	*out = (struct names){0};
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name), slen = strlen(suffix);
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0 || len < slen ||
		    strcmp(de->d_name + len - slen, suffix) != 0)
			continue;
		if (out->count == out->cap) {
			out->cap = out->cap ? 2 * out->cap : 64;
			out->name = realloc(out->name, out->cap * sizeof(out->name[0]));
			cr_assert_not_null(out->name);
		}
		snprintf(out->name[out->count++], 128, "%s", de->d_name);
	}
	closedir(d);
	if (out->count > 0)
		qsort(out->name, out->count, sizeof(out->name[0]), compare_names);
}

static char *read_file(const char *name, size_t *len)
{
	char path[512];
	FILE *f;
	long size;
	char *data;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = malloc((size_t)size + 1);
	cr_assert_eq(fread(data, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	data[size] = '\0';
	*len = (size_t)size;
	return data;
}

/* Decompresses with the streaming API; also proves the file is whole frames only. */
static char *unzstd(const char *in, size_t in_len, size_t *out_len)
{
	ZSTD_DStream *ds = ZSTD_createDStream();
	size_t cap = 1 << 20, len = 0, last = 1;
	char *out = malloc(cap);
	ZSTD_inBuffer ib = {in, in_len, 0};

	while (ib.pos < ib.size) {
		ZSTD_outBuffer ob;
		if (cap - len < ZSTD_DStreamOutSize()) {
			cap *= 2;
			out = realloc(out, cap);
		}
		ob = (ZSTD_outBuffer){out, cap, len};
		last = ZSTD_decompressStream(ds, &ob, &ib);
		cr_assert(!ZSTD_isError(last), "%s", ZSTD_getErrorName(last));
		len = ob.pos;
	}
	cr_assert_eq(last, 0, "the file ends inside a zstd frame");
	ZSTD_freeDStream(ds);
	out = realloc(out, len + 1);
	out[len] = '\0';
	*out_len = len;
	return out;
}

/* Record i: some entropy (a hash of i) so that zstd output is not trivially small. */
static void make_record(char *buf, size_t cap, int i)
{
	uint32_t h = (uint32_t)i * 2654435761u;

	snprintf(buf, cap, "{\"event_id\":\"e%06d\",\"h\":\"%08x%08x\",\"pad\":\"%.*s\"}", i, h,
	         h ^ (h >> 13) * 40503u, i % 50,
	         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
}

/* Writes one record, trying again while the sink answers "full" (SINK_FILE_COMPLETIONS_MAX
 * files wait for the disk). Returns how many times it was full. */
static unsigned write_retrying(struct sink *s, enum sink_stream stream, const char *rec)
{
	const struct timespec pause = {0, 1000000};
	unsigned full = 0;
	int rc;

	while ((rc = sink_write(s, stream, "k", 1, rec, strlen(rec), 0)) == -EAGAIN) {
		full++;
		nanosleep(&pause, NULL);
	}
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	return full;
}

static void write_records(struct sink *s, enum sink_stream stream, int from, int to)
{
	char rec[128];

	for (int i = from; i < to; i++) {
		make_record(rec, sizeof(rec), i);
		write_retrying(s, stream, rec);
	}
}

/* Reads every final file of the stream in name order and checks that their lines are
 * exactly records 0..n-1. Returns the number of files. */
static size_t check_lines(const char *stream, bool zstd, int n)
{
	struct names files;
	char prefix[64], rec[128];
	size_t count;
	int next = 0;

	snprintf(prefix, sizeof(prefix), "%s-", stream);
	list_files(prefix, zstd ? ".ndjson.zst" : ".ndjson", &files);
	for (size_t f = 0; f < files.count; f++) {
		size_t len;
		char *data = read_file(files.name[f], &len), *text = data, *line, *save = NULL;

		if (zstd) {
			text = unzstd(data, len, &len);
			free(data);
		}
		cr_assert_gt(len, 0, "empty file %s", files.name[f]);
		cr_assert_eq(text[len - 1], '\n', "%s does not end with a newline", files.name[f]);
		for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			make_record(rec, sizeof(rec), next);
			cr_assert_str_eq(line, rec, "file %s", files.name[f]);
			next++;
		}
		free(text);
	}
	cr_assert_eq(next, n);
	count = files.count;
	names_free(&files);
	return count;
}

static struct sink *new_sink_hooked(bool zstd, uint64_t rotate_bytes, int64_t rotate_age_ms,
                                    void (*hook)(void *, const char *), void *hook_arg)
{
	struct sink_file_options opt = {
	    .dir = dir,
	    .compress_zstd = zstd,
	    .zstd_level = 3,
	    .rotate_bytes = rotate_bytes,
	    .rotate_age_ms = rotate_age_ms,
	    .before_complete = hook,
	    .before_complete_arg = hook_arg,
	};
	char err[256] = "";
	struct sink *s = sink_file_new(&opt, err, sizeof(err));

	cr_assert_not_null(s, "%s", err);
	return s;
}

static struct sink *new_sink(bool zstd, uint64_t rotate_bytes, int64_t rotate_age_ms)
{
	return new_sink_hooked(zstd, rotate_bytes, rotate_age_ms, NULL, NULL);
}

static size_t count_files(const char *suffix)
{
	struct names files;
	size_t n;

	list_files("", suffix, &files);
	n = files.count;
	names_free(&files);
	return n;
}

Test(sink_file, writes_every_record_as_one_line_in_order)
{
	struct sink *s = new_sink(false, 0, 0);

	write_records(s, SINK_EVENTS, 0, 5000);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS), 5000);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	s->ops->free(s);
	cr_assert_eq(check_lines("events", false, 5000), 1);
	cr_assert_eq(count_files(".open"), 0);
}

Test(sink_file, writes_zstd_files_that_decompress_to_the_same_lines)
{
	struct sink *s = new_sink(true, 0, 0);

	write_records(s, SINK_EVENTS, 0, 20000);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	s->ops->free(s);
	cr_assert_eq(check_lines("events", true, 20000), 1);
}

Test(sink_file, keeps_streams_in_separate_files)
{
	struct sink *s = new_sink(false, 0, 0);

	write_records(s, SINK_EVENTS, 0, 10);
	write_records(s, SINK_DEAD_LETTERS, 0, 3);
	s->ops->free(s); /* free alone completes the files */
	cr_assert_eq(check_lines("events", false, 10), 1);
	cr_assert_eq(check_lines("dead_letters", false, 3), 1);
	cr_assert_eq(check_lines("touchpoints", false, 0), 0);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_DEAD_LETTERS), 3);
}

static void rotates_by_size(bool zstd)
{
	struct sink *s = new_sink(zstd, 16 * 1024, 0);
	size_t files;

	write_records(s, SINK_EVENTS, 0, 3000);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	write_records(s, SINK_EVENTS, 3000, 3500); /* after a flush: new files, same order */
	s->ops->free(s);
	files = check_lines("events", zstd, 3500);
	/* About 70 bytes a line: some 250 KB in 16 KiB files. */
	cr_assert_gt(files, 10, "only %zu files", files);
}

Test(sink_file, rotates_by_size_into_files_whose_lines_are_the_input_in_order)
{
	rotates_by_size(false);
}

Test(sink_file, rotates_zstd_files_by_size_each_a_complete_frame)
{
	rotates_by_size(true);
}

Test(sink_file, keeps_each_file_under_the_rotate_size)
{
	struct sink *s = new_sink(false, 4096, 0);
	struct names files;
	struct stat st;
	char path[512];

	write_records(s, SINK_EVENTS, 0, 1000);
	s->ops->free(s);
	list_files("events-", ".ndjson", &files);
	for (size_t i = 0; i < files.count; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files.name[i]);
		cr_assert_eq(stat(path, &st), 0);
		cr_assert_leq(st.st_size, 4096);
	}
	names_free(&files);
}

Test(sink_file, rotates_by_age_on_the_clock_given_to_poll)
{
	struct sink *s = new_sink(false, 0, 60000);

	cr_assert_eq(s->ops->poll(s, 1000000), 0);
	write_records(s, SINK_EVENTS, 0, 10);
	cr_assert_eq(s->ops->poll(s, 1000000), 0); /* stamps the new file */
	cr_assert_eq(s->ops->poll(s, 1059999), 0);
	cr_assert_eq(count_files(".ndjson.open"), 1);
	cr_assert_eq(count_files(".ndjson"), 0);

	cr_assert_eq(s->ops->poll(s, 1060000), 0);           /* hands the file over */
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0); /* waits for it to complete */
	cr_assert_eq(count_files(".ndjson.open"), 0);
	cr_assert_eq(count_files(".ndjson"), 1);
	cr_assert_eq(check_lines("events", false, 10), 1);

	write_records(s, SINK_EVENTS, 10, 20);
	cr_assert_eq(s->ops->poll(s, 1070000), 0);
	cr_assert_eq(s->ops->poll(s, 1129999), 0);
	cr_assert_eq(count_files(".ndjson"), 1);
	cr_assert_eq(s->ops->poll(s, 1130000), 0);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	cr_assert_eq(count_files(".ndjson"), 2);
	cr_assert_eq(count_files(".open"), 0);
	s->ops->free(s);
	cr_assert_eq(check_lines("events", false, 20), 2);
}

Test(sink_file, names_a_file_open_only_while_it_is_written)
{
	struct sink *s = new_sink(true, 0, 0);
	struct names files;

	cr_assert_eq(count_files(""), 0, "no empty file before the first record");
	write_records(s, SINK_TOUCHPOINTS, 0, 1);
	list_files("touchpoints-", ".ndjson.zst.open", &files);
	cr_assert_eq(files.count, 1);
	names_free(&files);
	cr_assert_eq(count_files(".ndjson.zst"), 0);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	cr_assert_eq(count_files(".open"), 0);
	cr_assert_eq(count_files(".ndjson.zst"), 1);
	s->ops->free(s);
	cr_assert_eq(count_files(""), 1);
}

Test(sink_file, pushes_buffered_records_to_the_open_file_within_a_second_of_poll_time)
{
	struct sink *s = new_sink(true, 0, 0);
	struct names files;
	char *data, *text;
	size_t len;

	write_records(s, SINK_EVENTS, 0, 5);
	s->ops->poll(s, 0);
	s->ops->poll(s, 1000);
	list_files("events-", ".open", &files);
	cr_assert_eq(files.count, 1);
	/* The open file holds a flushed (not ended) frame: a streaming reader gets all five
	 * lines already. */
	data = read_file(files.name[0], &len);
	names_free(&files);
	ZSTD_DStream *ds = ZSTD_createDStream();
	text = calloc(1, 4096);
	ZSTD_inBuffer ib = {data, len, 0};
	ZSTD_outBuffer ob = {text, 4095, 0};
	size_t r = ZSTD_decompressStream(ds, &ob, &ib);
	cr_assert(!ZSTD_isError(r));
	cr_assert_eq(ib.pos, len);
	size_t lines = 0;
	for (size_t i = 0; i < ob.pos; i++)
		lines += text[i] == '\n';
	cr_assert_eq(lines, 5);
	ZSTD_freeDStream(ds);
	free(data);
	free(text);
	s->ops->free(s);
	check_lines("events", true, 5);
}

Test(sink_file, does_not_overwrite_files_of_an_earlier_run)
{
	struct sink *s = new_sink(false, 0, 0);

	write_records(s, SINK_EVENTS, 0, 4);
	s->ops->free(s);
	s = new_sink(false, 0, 0); /* seq starts again at 0, in the same second */
	write_records(s, SINK_EVENTS, 4, 8);
	s->ops->free(s);
	cr_assert_eq(check_lines("events", false, 8), 2);
}

Test(sink_file, refuses_a_record_larger_than_its_buffer_and_counts_it)
{
	struct sink *s = new_sink(false, 0, 0);
	size_t big = 1 << 20;
	char *rec = malloc(big);

	memset(rec, 'x', big);
	cr_assert_eq(sink_write(s, SINK_EVENTS, NULL, 0, rec, big, 0), -EMSGSIZE);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_FILE, SINK_EVENTS), 1);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS), 0);
	free(rec);
	s->ops->free(s);
}

Test(sink_file, creates_missing_directories_and_is_ready)
{
	char sub[128];
	struct sink_file_options opt = {0};
	char err[256];
	struct sink *s;

	snprintf(sub, sizeof(sub), "%s/a/b", dir);
	opt.dir = sub;
	s = sink_file_new(&opt, err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	cr_assert(s->ops->ready(s));
	s->ops->free(s);
	rmdir(sub);
	snprintf(sub, sizeof(sub), "%s/a", dir);
	rmdir(sub);
}

Test(sink_file, names_the_directory_when_it_cannot_be_created)
{
	struct sink_file_options opt = {.dir = "/proc/clickd-cannot-exist/x"};
	char err[256] = "";

	cr_assert_null(sink_file_new(&opt, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "/proc/clickd-cannot-exist/x"), "%s", err);
}

/* Writes records 0..n-1, remembering which ones the sink took; returns how many. */
static int write_some(struct sink *s, int n, bool *taken, int *first_error)
{
	char rec[128];
	int count = 0;

	for (int i = 0; i < n; i++) {
		make_record(rec, sizeof(rec), i);
		int rc = sink_write(s, SINK_EVENTS, NULL, 0, rec, strlen(rec), 0);
		taken[i] = rc == 0;
		count += rc == 0;
		if (rc && !*first_error)
			*first_error = rc;
	}
	return count;
}

/* A disk that refuses (here: RLIMIT_FSIZE, so write(2) fails with EFBIG) makes the sink
 * refuse records with the error, count them and turn unready; buffered data is kept and
 * retried, so once the disk takes data again the file holds exactly the taken records. */
static void survives_a_disk_that_refuses_for_a_while(bool zstd)
{
	struct rlimit lim;
	static bool taken[40000];
	int first_error = 0, n = 40000, count;
	struct sink *s = new_sink(zstd, 0, 0);
	struct names files;

	signal(SIGXFSZ, SIG_IGN);
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &lim), 0);
	rlim_t hard = lim.rlim_max;
	lim.rlim_cur = 50 * 1000;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);

	count = write_some(s, n, taken, &first_error);
	cr_assert_eq(first_error, -EFBIG);
	cr_assert_lt(count, n);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS), (uint64_t)count);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_FILE, SINK_EVENTS),
	             (uint64_t)(n - count));
	cr_assert_not(s->ops->ready(s));
	cr_assert_neq(s->ops->flush(s, 1000), 0, "cannot complete the file yet");

	lim.rlim_cur = hard;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	cr_assert(s->ops->ready(s));
	s->ops->free(s);

	list_files("events-", zstd ? ".ndjson.zst" : ".ndjson", &files);
	cr_assert_eq(files.count, 1);
	cr_assert_eq(count_files(".open"), 0);
	size_t len;
	char *text = read_file(files.name[0], &len), *line, *save = NULL;
	names_free(&files);
	if (zstd) {
		char *plain = unzstd(text, len, &len);
		free(text);
		text = plain;
	}
	int i = 0;
	char rec[128];
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		while (i < n && !taken[i])
			i++;
		cr_assert_lt(i, n);
		make_record(rec, sizeof(rec), i);
		cr_assert_str_eq(line, rec);
		i++;
		count--;
	}
	cr_assert_eq(count, 0, "%d taken records missing from the file", count);
	free(text);
}

Test(sink_file, keeps_buffered_records_and_counts_refused_ones_while_the_disk_fails)
{
	survives_a_disk_that_refuses_for_a_while(false);
}

Test(sink_file, keeps_a_zstd_frame_whole_while_the_disk_fails)
{
	survives_a_disk_that_refuses_for_a_while(true);
}

/* ---- completion on the sink's own thread ---- */

/* The before_complete hook: holds the completion thread before each file's fsync until the
 * test opens the gate, and notes where it was called from. */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
	int entered;      /* files that reached the hook */
	int on_writer;    /* ... on the writer's (the test's) thread */
	pthread_t writer; /* the test's thread */
};

static void gate_init(struct gate *g)
{
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->open = false;
	g->entered = 0;
	g->on_writer = 0;
	g->writer = pthread_self();
}

static void gate_hook(void *arg, const char *name)
{
	struct gate *g = arg;

	(void)name;
	pthread_mutex_lock(&g->lock);
	g->entered++;
	pthread_cond_broadcast(&g->cond); /* to gate_wait_entered */
	/* Called on the writer's thread (completion not moved off it), the hook must not
	 * wait: the test would hang instead of failing on on_writer. */
	if (pthread_equal(pthread_self(), g->writer))
		g->on_writer++;
	else
		while (!g->open)
			pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static int gate_entered(struct gate *g)
{
	int n;

	pthread_mutex_lock(&g->lock);
	n = g->entered;
	pthread_mutex_unlock(&g->lock);
	return n;
}

/* Waits until the completion thread has reached the hook n times. */
static void gate_wait_entered(struct gate *g, int n)
{
	pthread_mutex_lock(&g->lock);
	while (g->entered < n)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
}

/* Opens the gate from another thread, a little later: the test is then (most likely) waiting
 * in flush or free. Whichever comes first, the outcome checked is the same. */
static void *gate_open_later(void *arg)
{
	const struct timespec pause = {0, 20 * 1000000};

	nanosleep(&pause, NULL);
	gate_open(arg);
	return NULL;
}

/* Records from..to-1, each taken at once (the queue has room). */
static void write_records_now(struct sink *s, enum sink_stream stream, int from, int to)
{
	char rec[128];

	for (int i = from; i < to; i++) {
		make_record(rec, sizeof(rec), i);
		cr_assert_eq(sink_write(s, stream, "k", 1, rec, strlen(rec), 0), 0, "record %d", i);
	}
}

Test(sink_file, goes_on_writing_while_a_rotated_file_waits_for_its_fsync)
{
	struct gate g;
	struct sink *s;
	size_t open_files;

	gate_init(&g);
	s = new_sink_hooked(false, 4096, 0, gate_hook, &g);
	/* About 75 bytes a line: 200 lines fill three 4 KiB files and start a fourth. */
	write_records_now(s, SINK_EVENTS, 0, 200);
	gate_wait_entered(&g, 1); /* the completion thread holds the first file before fsync */
	cr_assert_eq(g.on_writer, 0, "a file was completed on the writer's thread");
	cr_assert_eq(count_files(".ndjson"), 0, "no file may be complete before its fsync");
	open_files = count_files(".ndjson.open");
	cr_assert_geq(open_files, 4, "three rotated files and the current one: %zu", open_files);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS), 200);

	gate_open(&g);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	cr_assert_eq(g.on_writer, 0);
	cr_assert_eq((size_t)gate_entered(&g), open_files, "every file completed by the thread");
	s->ops->free(s);
	cr_assert_eq(check_lines("events", false, 200), open_files);
	cr_assert_eq(count_files(".open"), 0);
}

Test(sink_file, flush_waits_for_every_pending_completion_and_says_when_some_are_left)
{
	struct gate g;
	struct sink *s;
	pthread_t opener;

	gate_init(&g);
	s = new_sink_hooked(true, 4096, 0, gate_hook, &g);
	write_records_now(s, SINK_EVENTS, 0, 200);
	cr_assert_eq(s->ops->flush(s, 0), -ETIMEDOUT);
	cr_assert_eq(s->ops->flush(s, 10), -ETIMEDOUT, "the gate is closed: nothing completes");
	cr_assert_eq(count_files(".ndjson.zst"), 0);

	cr_assert_eq(pthread_create(&opener, NULL, gate_open_later, &g), 0);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	cr_assert_eq(count_files(".open"), 0, "flush returned before every file was complete");
	pthread_join(opener, NULL);
	cr_assert_eq(g.on_writer, 0);

	write_records(s, SINK_EVENTS, 200, 300); /* after a flush: new files, same order */
	s->ops->free(s);
	check_lines("events", true, 300);
}

Test(sink_file, free_waits_until_every_file_is_complete)
{
	struct gate g;
	struct sink *s;
	pthread_t opener;

	gate_init(&g);
	s = new_sink_hooked(false, 4096, 0, gate_hook, &g);
	write_records_now(s, SINK_EVENTS, 0, 200);
	write_records_now(s, SINK_DEAD_LETTERS, 0, 3);
	cr_assert_eq(pthread_create(&opener, NULL, gate_open_later, &g), 0);
	s->ops->free(s);
	cr_assert_eq(count_files(".open"), 0, "free returned before every file was complete");
	pthread_join(opener, NULL);
	check_lines("events", false, 200);
	cr_assert_eq(check_lines("dead_letters", false, 3), 1);
}

Test(sink_file, answers_full_while_too_many_files_wait_and_takes_the_record_once_one_is_done)
{
	struct gate g;
	struct sink *s;
	char rec[128];
	int rc = 0, taken;

	gate_init(&g);
	s = new_sink_hooked(false, 4096, 60000, gate_hook, &g);
	for (taken = 0; taken < 100000; taken++) {
		make_record(rec, sizeof(rec), taken);
		rc = sink_write(s, SINK_EVENTS, "k", 1, rec, strlen(rec), 0);
		if (rc)
			break;
	}
	cr_assert_eq(rc, -EAGAIN, "%s", strerror(-rc));
	cr_assert_eq(count_files(".ndjson.open"), SINK_FILE_COMPLETIONS_MAX + 1,
	             "the files waiting and the one being written");
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS), (uint64_t)taken);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_FILE, SINK_EVENTS), 0,
	             "full is not a failure");
	cr_assert_eq(sink_write(s, SINK_EVENTS, "k", 1, rec, strlen(rec), 0), -EAGAIN);
	cr_assert(s->ops->ready(s), "a full queue is not a failing disk");

	/* Rotation by age waits for room too: the aged file stays open. */
	cr_assert_eq(s->ops->poll(s, 0), 0);
	cr_assert_eq(s->ops->poll(s, 60000), 0);
	cr_assert_eq(count_files(".ndjson.open"), SINK_FILE_COMPLETIONS_MAX + 1);
	cr_assert_eq(count_files(".ndjson"), 0);

	gate_open(&g);
	write_retrying(s, SINK_EVENTS, rec); /* the refused record, taken now */
	write_records(s, SINK_EVENTS, taken + 1, taken + 500);
	s->ops->free(s);
	check_lines("events", false, taken + 500);
	cr_assert_eq(count_files(".open"), 0);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_FILE, SINK_EVENTS), 0);
	cr_assert_eq(g.on_writer, 0);
}

Test(sink_file, stays_bounded_and_loses_nothing_over_many_rotations_in_a_row)
{
	struct sink *s = new_sink(true, 1024, 0);
	char rec[128];
	size_t files;
	int touchpoints = 0;

	for (int i = 0; i < 3000; i++) {
		make_record(rec, sizeof(rec), i);
		write_retrying(s, SINK_EVENTS, rec);
		if (i % 3 == 0) {
			make_record(rec, sizeof(rec), touchpoints++);
			write_retrying(s, SINK_TOUCHPOINTS, rec);
		}
		if (i % 50 == 0)
			cr_assert_leq(count_files(".open"),
			              SINK_FILE_COMPLETIONS_MAX + SINK_STREAM_COUNT,
			              "more files wait than the queue holds");
	}
	s->ops->free(s);
	cr_assert_eq(count_files(".open"), 0);
	files = check_lines("events", true, 3000);
	cr_assert_gt(files, 100, "only %zu files", files);
	check_lines("touchpoints", true, touchpoints);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS), 3000);
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_FILE, SINK_EVENTS), 0);
}

/* A rename onto an existing directory fails (EISDIR) even for root, unlike a read-only
 * directory: the completion thread must report it and leave the file `.open`. */
Test(sink_file, reports_a_file_it_cannot_complete_and_leaves_it_open)
{
	struct sink *s = new_sink(false, 0, 0);
	struct names files;
	char blocker[512], open_path[512], rec[128];
	struct stat st;
	size_t len;
	int rc;

	write_records(s, SINK_EVENTS, 0, 5);
	list_files("events-", ".ndjson.open", &files);
	cr_assert_eq(files.count, 1);
	len = strlen(files.name[0]) - strlen(".open");
	snprintf(open_path, sizeof(open_path), "%s/%s", dir, files.name[0]);
	snprintf(blocker, sizeof(blocker), "%s/%.*s", dir, (int)len, files.name[0]);
	names_free(&files);
	cr_assert_eq(mkdir(blocker, 0755), 0, "%s", strerror(errno));

	rc = s->ops->flush(s, FLUSH_TIMEOUT_MS);
	cr_assert_eq(rc, -EISDIR, "%s", strerror(-rc));
	cr_assert_eq(stat(open_path, &st), 0, "the incomplete file keeps its .open name");
	cr_assert_eq(metrics_sink_failed_get(METRICS_SINK_FILE, SINK_EVENTS), 5);
	cr_assert_eq(metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS), 5);
	cr_assert_not(s->ops->ready(s));

	/* The next file completes: ready again, and the failure was reported once. */
	write_records(s, SINK_EVENTS, 5, 8);
	cr_assert_eq(s->ops->flush(s, FLUSH_TIMEOUT_MS), 0);
	cr_assert(s->ops->ready(s));
	s->ops->free(s);

	list_files("events-", ".ndjson", &files);
	cr_assert_eq(files.count, 2, "the directory in the way and the new file");
	for (size_t f = 0; f < files.count; f++) {
		char path[512], *text;
		size_t text_len;

		snprintf(path, sizeof(path), "%s/%s", dir, files.name[f]);
		cr_assert_eq(stat(path, &st), 0);
		if (S_ISDIR(st.st_mode))
			continue;
		text = read_file(files.name[f], &text_len);
		for (int i = 5; i < 8; i++) {
			make_record(rec, sizeof(rec), i);
			cr_assert_not_null(strstr(text, rec), "record %d missing", i);
		}
		cr_assert_null(strstr(text, "\"e000000\""), "record 0 in the new file");
		free(text);
	}
	names_free(&files);
	unlink(open_path);
	rmdir(blocker);
}
