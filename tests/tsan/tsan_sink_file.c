/*
 * tsan_sink_file.c - the file sink's completion thread under ThreadSanitizer (and in every
 * build), from a plain main() since criterion cannot run under TSan. Two writer threads,
 * each with its own sink (as shards have), write zstd records into two streams with tiny
 * rotate_bytes and rotation by age on a driven clock, so files are handed to the completion
 * threads all the time; they retry on -EAGAIN (queue full) and flush now and then. Another
 * thread asks ready() and the metrics meanwhile, as /readyz and /metrics do. After free,
 * checks that no file is left `.open`, that every file is one whole zstd frame and that
 * each writer's records are all there, once, in order. Exits 0 on success; TSan makes it
 * exit non-zero on a race.
 */
#include "clickd/log.h"
#include "clickd/metrics.h"
#include "clickd/sink.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define WRITERS 2
#define RECORDS 6000 /* per writer, over both streams */

static char dir[64];
static struct sink *sinks[WRITERS];
static _Atomic int writers_done;
static _Atomic unsigned completions;
static _Atomic unsigned full_answers;
static _Atomic int failed;

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "tsan_sink_file: %s %s\n", what, detail ? detail : "");
	atomic_store(&failed, 1);
}

static void on_before_complete(void *arg, const char *name)
{
	(void)arg;
	(void)name;
	atomic_fetch_add(&completions, 1);
}

static int make_record(char *buf, size_t cap, int writer, enum sink_stream stream, int i)
{
	uint32_t h = (uint32_t)i * 2654435761u;

	return snprintf(buf, cap, "{\"w\":%d,\"s\":%d,\"i\":%d,\"h\":\"%08x\",\"pad\":\"%.*s\"}",
	                writer, (int)stream, i, h, i % 40,
	                "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
}

static void *writer_main(void *arg)
{
	int w = (int)(intptr_t)arg;
	struct sink *s = sinks[w];
	const struct timespec pause = {0, 200000};
	int next[SINK_STREAM_COUNT] = {0};
	int64_t clock_ms = 0;
	char rec[160];

	for (int n = 0; n < RECORDS; n++) {
		enum sink_stream stream = n % 4 == 0 ? SINK_TOUCHPOINTS : SINK_EVENTS;
		int len = make_record(rec, sizeof(rec), w, stream, next[stream]);
		int rc;

		while ((rc = sink_write(s, stream, NULL, 0, rec, (size_t)len, 0)) == -EAGAIN) {
			atomic_fetch_add(&full_answers, 1);
			nanosleep(&pause, NULL);
		}
		if (rc != 0) {
			fail("write failed:", strerror(-rc));
			break;
		}
		next[stream]++;
		if (n % 50 == 0) {
			clock_ms += 7; /* files age: rotation by age in poll, too */
			s->ops->poll(s, clock_ms);
		}
		if (n % 2000 == 1999 && s->ops->flush(s, -1) != 0)
			fail("flush failed", NULL);
	}
	atomic_fetch_add(&writers_done, 1);
	return NULL;
}

/* /readyz and /metrics, from their own thread while the writers run. */
static void *observer_main(void *arg)
{
	const struct timespec pause = {0, 100000};
	unsigned long polls = 0;

	(void)arg;
	while (atomic_load(&writers_done) < WRITERS) {
		for (int w = 0; w < WRITERS; w++)
			if (!sinks[w]->ops->ready(sinks[w]))
				fail("a sink said it was not ready", NULL);
		(void)metrics_sink_out_get(METRICS_SINK_FILE, SINK_EVENTS);
		(void)metrics_sink_failed_get(METRICS_SINK_FILE, SINK_EVENTS);
		polls++;
		nanosleep(&pause, NULL);
	}
	return (void *)polls;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_whole(const char *name, size_t *len)
{
	char path[512];
	FILE *f;
	char *data;
	long size;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = malloc((size_t)size + 1);
	if (data && fread(data, 1, (size_t)size, f) != (size_t)size) {
		free(data);
		data = NULL;
	}
	fclose(f);
	*len = (size_t)size;
	return data;
}

/* Decompresses one file; NULL unless it is exactly one whole zstd frame. */
static char *unzstd(const char *in, size_t in_len, size_t *out_len)
{
	unsigned long long size = ZSTD_getFrameContentSize(in, in_len);
	size_t frame = ZSTD_findFrameCompressedSize(in, in_len);
	char *out;

	if (ZSTD_isError(frame) || frame != in_len || size == ZSTD_CONTENTSIZE_ERROR)
		return NULL;
	if (size == ZSTD_CONTENTSIZE_UNKNOWN)
		size = 1 << 20;
	out = malloc(size + 1);
	*out_len = ZSTD_decompress(out, size, in, in_len);
	if (ZSTD_isError(*out_len)) {
		free(out);
		return NULL;
	}
	out[*out_len] = '\0';
	return out;
}

/* Checks the files of one writer and stream: whole frames whose lines are records 0..n-1
 * in order. Returns n, or -1. */
static int check_stream(char **names, size_t count, int writer, enum sink_stream stream)
{
	char prefix[64], tag[16], rec[160];
	int next = 0;

	snprintf(prefix, sizeof(prefix), "%s-", sink_stream_name(stream));
	snprintf(tag, sizeof(tag), "-w%d-", writer);
	for (size_t f = 0; f < count; f++) {
		size_t len, text_len;
		char *data, *text, *line, *save = NULL;

		if (strncmp(names[f], prefix, strlen(prefix)) != 0 || !strstr(names[f], tag))
			continue;
		data = read_whole(names[f], &len);
		text = data ? unzstd(data, len, &text_len) : NULL;
		free(data);
		if (!text) {
			fail("not one whole zstd frame:", names[f]);
			return -1;
		}
		for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			make_record(rec, sizeof(rec), writer, stream, next++);
			if (strcmp(line, rec) != 0) {
				fail("unexpected line in", names[f]);
				free(text);
				return -1;
			}
		}
		free(text);
	}
	return next;
}

/* Lists dir, checks every writer's files, removes them. Returns 0 when all is well. */
static int check_and_clean(void)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL, path[512];
	size_t count = 0, cap = 0;
	int rc = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (count == cap) {
			cap = cap ? 2 * cap : 256;
			names = realloc(names, cap * sizeof(*names));
		}
		names[count++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, count, sizeof(*names), compare_names);
	for (size_t f = 0; f < count; f++)
		if (strstr(names[f], ".open")) {
			fail("left open:", names[f]);
			rc = -1;
		}
	for (int w = 0; w < WRITERS && rc == 0; w++) {
		int events = check_stream(names, count, w, SINK_EVENTS);
		int touchpoints = check_stream(names, count, w, SINK_TOUCHPOINTS);
		if (events < 0 || touchpoints < 0 || events + touchpoints != RECORDS) {
			fprintf(stderr, "tsan_sink_file: writer %d: %d + %d of %d records\n", w,
			        events, touchpoints, RECORDS);
			rc = -1;
		}
	}
	printf("tsan_sink_file: %zu files, %u completions, %u full answers\n", count,
	       atomic_load(&completions), atomic_load(&full_answers));
	if (rc == 0 && atomic_load(&completions) != count) {
		fprintf(stderr, "tsan_sink_file: %u completions for %zu files\n",
		        atomic_load(&completions), count);
		rc = -1;
	}
	for (size_t f = 0; f < count; f++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[f]);
		unlink(path);
		free(names[f]);
	}
	free(names);
	rmdir(dir);
	return rc;
}

int main(void)
{
	pthread_t writers[WRITERS], observer;
	char err[256], tag[8];

	/* log.c caches getenv("JOURNAL_STREAM") in a plain static on the first log line: two
	 * threads logging their first line at once race on it (reported separately). clickd
	 * logs from main before it starts threads; so does this driver. */
	log_info("tsan", "msg=start");
	strcpy(dir, "/tmp/clickd-tsan-sink-file-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("tsan_sink_file: mkdtemp");
		return 1;
	}
	for (int w = 0; w < WRITERS; w++) {
		struct sink_file_options opt = {
		    .dir = dir,
		    .compress_zstd = true,
		    .zstd_level = 1,
		    .rotate_bytes = 2048,
		    .rotate_age_ms = 100,
		    .name_tag = tag,
		    .before_complete = on_before_complete,
		};
		snprintf(tag, sizeof(tag), "w%d", w);
		sinks[w] = sink_file_new(&opt, err, sizeof(err));
		if (!sinks[w]) {
			fprintf(stderr, "tsan_sink_file: %s\n", err);
			return 1;
		}
	}
	if (pthread_create(&observer, NULL, observer_main, NULL) != 0)
		return 1;
	for (int w = 0; w < WRITERS; w++)
		if (pthread_create(&writers[w], NULL, writer_main, (void *)(intptr_t)w) != 0)
			return 1;
	for (int w = 0; w < WRITERS; w++)
		pthread_join(writers[w], NULL);
	pthread_join(observer, NULL);
	for (int w = 0; w < WRITERS; w++)
		sinks[w]->ops->free(sinks[w]);
	if (check_and_clean() != 0 || atomic_load(&failed)) {
		fprintf(stderr, "tsan_sink_file: FAILED\n");
		return 1;
	}
	printf("tsan_sink_file: ok\n");
	return 0;
}
