/*
 * sink_file.c - the file sink: NDJSON files, optionally zstd-compressed (see sink.h).
 *
 * One file set per stream in opt->dir: `<stream>-<YYYYmmddTHHMMSSZ>-[<tag>-]<seq>.ndjson[.zst]`,
 * the time being the UTC wall clock when the file was opened, tag the instance's name_tag
 * (each thread that writes has its own instance: "s0" a shard, "i1" an ingest thread, so
 * two instances never race for a name) and seq a per-stream counter of the instance (so
 * names sort in write order). Each record is one line. While a file is
 * being written it is named `<final name>.open`; it gets its final name only once it is
 * complete (every byte written, the zstd frame ended, the file and the directory fsynced).
 * So a shipper may pick up `*.ndjson` and `*.ndjson.zst` at any time and never sees half a
 * file. A `.open` file left by a crash is never renamed or reused; new_ logs how many there
 * are and they are the operator's to look at.
 *
 * Files are opened lazily on the first record (no empty files) and closed ("rotated") when
 * the next record would take the file past rotate_bytes of uncompressed data, when the
 * file is rotate_age_ms old by the clock given to poll, and at flush/free. Each .zst file is
 * one complete zstd frame (with checksum), readable by `zstd -d`.
 *
 * Memory, per stream, owned by the sink: a staging buffer of FILE_STAGE_BYTES where records
 * are appended whole, and for zstd a compressed output buffer; write(2) happens when the
 * staging buffer is full, when data has waited FILE_PUSH_AFTER_MS (checked in poll), and at
 * rotation. A record is either taken whole into the staging buffer or refused whole, so a
 * failing disk never leaves half a line: when the disk refuses, what is buffered stays
 * buffered and is retried, and a record that does not fit is refused with the disk's
 * error (counted in clickd_sink_failures_total, logged at most once a second).
 *
 * Counting: clickd_records_out_total{sink="file"} is bumped when a record is taken into
 * the staging buffer. A disk failure after that (at rotation or shutdown) is logged with the
 * number of bytes lost.
 *
 * Time: rotation by age and the periodic push use only the now_ms given to poll (any clock,
 * as long as it is the same one each time); a file opened between two polls is stamped at
 * the next poll. Called from one thread at a time (sink.h).
 */
#include "clickd/sink.h"

#include "clickd/log.h"
#include "clickd/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

/* Largest line (record + '\n') the sink takes; a record event (RECORD_EVENT_MAX_BYTES,
 * about 50 KiB) always fits. Also the size of each write(2) under load. */
#define FILE_STAGE_BYTES (128 * 1024)
/* Data waits in memory at most about this long before poll pushes it to the file. */
#define FILE_PUSH_AFTER_MS   1000
#define FILE_LOG_INTERVAL_MS 1000
#define FILE_TIME_UNKNOWN    INT64_MIN
#define FILE_OPEN_SUFFIX     ".open"
#define FILE_NAME_BYTES      128

struct file_rate_limit {
	int64_t next_ms;     /* monotonic ms before which lines are suppressed */
	uint64_t suppressed; /* events not logged since the last line */
};

struct file_stream {
	enum sink_stream stream;
	int fd;                     /* the open file, -1 when none */
	char name[FILE_NAME_BYTES]; /* final name (in dir) of the open file */
	unsigned seq;               /* sequence number of the next file */
	uint64_t file_bytes;        /* uncompressed bytes taken into the open file */
	int64_t opened_at_ms;       /* poll clock; FILE_TIME_UNKNOWN until the next poll */
	int64_t pending_since_ms;   /* poll clock when unpushed data was first seen */
	bool unpushed;              /* records taken since the last e_flush/e_end push */
	char *stage;                /* owned: FILE_STAGE_BYTES of records not yet written */
	size_t stage_len;
	char *out; /* owned (zstd only): compressed bytes not yet written */
	size_t out_len;
	size_t out_cap;
	ZSTD_CCtx *zc; /* owned; NULL when uncompressed */
};

struct sink_file {
	struct sink base;
	char *dir; /* owned copy of opt->dir */
	int dir_fd;
	bool compress_zstd;
	uint64_t rotate_bytes; /* 0: no rotation by size */
	int64_t rotate_age_ms; /* 0: no rotation by age */
	int64_t now_ms;        /* last clock given to poll */
	char tag[24];          /* "<name_tag>-" or "" */
	/* The last disk operation failed (ready() is false). Atomic: ready() is asked from
	 * the main thread while the owning thread writes. */
	_Atomic bool disk_failing;
	struct file_rate_limit fail_log;
	struct file_stream streams[SINK_STREAM_COUNT];
};

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when a line may be logged now; *suppressed gets how many were held back. */
static bool rate_limit_pass(struct file_rate_limit *rl, uint64_t *suppressed)
{
	int64_t now = monotonic_ms();

	if (now < rl->next_ms) {
		rl->suppressed++;
		return false;
	}
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->next_ms = now + FILE_LOG_INTERVAL_MS;
	return true;
}

static const char *file_suffix(const struct sink_file *s)
{
	return s->compress_zstd ? ".ndjson.zst" : ".ndjson";
}

/* Counts a refused record and logs it, at most once a second. Returns rc. */
static int file_fail(struct sink_file *s, struct file_stream *fs, int rc)
{
	uint64_t suppressed;

	metrics_sink_failed(METRICS_SINK_FILE, fs->stream, 1);
	if (rate_limit_pass(&s->fail_log, &suppressed))
		log_error("file", "write failed dir=%s stream=%s err=\"%s\" more_failures=%" PRIu64,
		          s->dir, sink_stream_name(fs->stream), strerror(-rc), suppressed);
	return rc;
}

/* Writes buf[0..*len) to fd. On failure the unwritten tail moves to the front of buf and
 * *len shrinks to it. Returns 0 or -errno. */
static int write_front(struct sink_file *s, int fd, char *buf, size_t *len)
{
	size_t done = 0;
	int rc = 0;

	while (done < *len) {
		ssize_t n = write(fd, buf + done, *len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)n;
	}
	if (done > 0 && done < *len)
		memmove(buf, buf + done, *len - done);
	*len -= done;
	s->disk_failing = rc != 0;
	return rc;
}

/*
 * Moves the staged records into the file. For zstd, `end` says how far the frame must go:
 * ZSTD_e_continue (the compressor may keep some data back, only full output buffers are
 * written), ZSTD_e_flush (everything taken so far is decodable from the file), ZSTD_e_end
 * (the frame is complete). Returns 0 or -errno; whatever was not written stays buffered.
 */
static int stream_push(struct sink_file *s, struct file_stream *fs, ZSTD_EndDirective end)
{
	ZSTD_inBuffer in = {fs->stage, fs->stage_len, 0};
	int rc = 0;

	if (!fs->zc)
		return write_front(s, fs->fd, fs->stage, &fs->stage_len);
	for (;;) {
		ZSTD_outBuffer out;
		size_t left;

		if (fs->out_len == fs->out_cap) {
			rc = write_front(s, fs->fd, fs->out, &fs->out_len);
			if (rc)
				break;
		}
		out = (ZSTD_outBuffer){fs->out, fs->out_cap, fs->out_len};
		left = ZSTD_compressStream2(fs->zc, &out, &in, end);
		fs->out_len = out.pos;
		if (ZSTD_isError(left)) {
			log_error("file", "zstd failed stream=%s err=\"%s\"",
			          sink_stream_name(fs->stream), ZSTD_getErrorName(left));
			rc = -EIO;
			break;
		}
		if (end == ZSTD_e_continue ? in.pos == in.size : left == 0)
			break;
	}
	if (in.pos > 0) {
		memmove(fs->stage, fs->stage + in.pos, fs->stage_len - in.pos);
		fs->stage_len -= in.pos;
	}
	if (rc == 0 && end != ZSTD_e_continue)
		rc = write_front(s, fs->fd, fs->out, &fs->out_len);
	return rc;
}

/* Opens a new `.open` file for fs under a name no file in dir has yet. */
static int stream_open(struct sink_file *s, struct file_stream *fs)
{
	char tmp[FILE_NAME_BYTES + sizeof(FILE_OPEN_SUFFIX)];
	struct timespec ts;
	struct tm tm;
	char stamp[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	/* A name already taken (a file of an earlier run in the same second) moves seq on. */
	for (int attempt = 0; attempt < 1000; attempt++) {
		int fd;

		snprintf(fs->name, sizeof(fs->name), "%s-%s-%s%06u%s", sink_stream_name(fs->stream),
		         stamp, s->tag, fs->seq++, file_suffix(s));
		snprintf(tmp, sizeof(tmp), "%s%s", fs->name, FILE_OPEN_SUFFIX);
		if (faccessat(s->dir_fd, fs->name, F_OK, 0) == 0)
			continue;
		fd = openat(s->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0) {
			s->disk_failing = true;
			return -errno;
		}
		fs->fd = fd;
		fs->file_bytes = 0;
		fs->opened_at_ms = FILE_TIME_UNKNOWN;
		if (fs->zc)
			ZSTD_CCtx_reset(fs->zc, ZSTD_reset_session_only);
		return 0;
	}
	return -EEXIST;
}

/* Completes the open file: frame ended, data written and fsynced, renamed to its final name,
 * directory fsynced. Returns 0, or -errno with the file still open and its data buffered
 * (the next call tries again). */
static int stream_close(struct sink_file *s, struct file_stream *fs)
{
	char tmp[FILE_NAME_BYTES + sizeof(FILE_OPEN_SUFFIX)];
	int rc;

	if (fs->fd < 0)
		return 0;
	rc = stream_push(s, fs, ZSTD_e_end);
	if (rc)
		return rc;
	/* A failed fsync cannot be retried meaningfully (the kernel may have dropped the dirty
	 * pages): say so and carry on. */
	if (fsync(fs->fd) != 0)
		log_error("file", "fsync failed file=%s/%s err=\"%s\"", s->dir, fs->name,
		          strerror(errno));
	close(fs->fd);
	fs->fd = -1;
	fs->unpushed = false;
	fs->pending_since_ms = FILE_TIME_UNKNOWN;
	snprintf(tmp, sizeof(tmp), "%s%s", fs->name, FILE_OPEN_SUFFIX);
	if (renameat(s->dir_fd, tmp, s->dir_fd, fs->name) != 0) {
		rc = -errno;
		log_error("file", "rename failed file=%s/%s err=\"%s\"", s->dir, tmp,
		          strerror(errno));
		return rc;
	}
	if (fsync(s->dir_fd) != 0)
		log_error("file", "fsync failed dir=%s err=\"%s\"", s->dir, strerror(errno));
	return 0;
}

static bool stream_aged(const struct sink_file *s, const struct file_stream *fs)
{
	return s->rotate_age_ms > 0 && fs->opened_at_ms != FILE_TIME_UNKNOWN &&
	       s->now_ms != FILE_TIME_UNKNOWN && s->now_ms - fs->opened_at_ms >= s->rotate_age_ms;
}

static int file_write(struct sink *base, enum sink_stream stream, const char *key, size_t key_len,
                      const char *record, size_t record_len)
{
	struct sink_file *s = (struct sink_file *)base;
	struct file_stream *fs;
	size_t line_len = record_len + 1;
	int rc;

	if ((unsigned)stream >= SINK_STREAM_COUNT)
		return -EINVAL;
	fs = &s->streams[stream];
	if (line_len > FILE_STAGE_BYTES)
		return file_fail(s, fs, -EMSGSIZE);
	if (fs->fd >= 0 && fs->file_bytes > 0 &&
	    ((s->rotate_bytes > 0 && fs->file_bytes + line_len > s->rotate_bytes) ||
	     stream_aged(s, fs))) {
		rc = stream_close(s, fs);
		if (rc)
			return file_fail(s, fs, rc);
	}
	if (fs->fd < 0) {
		rc = stream_open(s, fs);
		if (rc)
			return file_fail(s, fs, rc);
	}
	if (fs->stage_len + line_len > FILE_STAGE_BYTES) {
		rc = stream_push(s, fs, ZSTD_e_continue);
		if (rc && fs->stage_len + line_len > FILE_STAGE_BYTES)
			return file_fail(s, fs, rc);
	}
	memcpy(fs->stage + fs->stage_len, record, record_len);
	fs->stage[fs->stage_len + record_len] = '\n';
	fs->stage_len += line_len;
	fs->file_bytes += line_len;
	fs->unpushed = true;
	metrics_sink_out(METRICS_SINK_FILE, stream, 1);
	return 0;
}

static int file_poll(struct sink *base, int64_t now_ms)
{
	struct sink_file *s = (struct sink_file *)base;
	int ret = 0;

	s->now_ms = now_ms;
	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		struct file_stream *fs = &s->streams[i];
		uint64_t suppressed;
		int rc = 0;

		if (fs->fd < 0)
			continue;
		if (fs->opened_at_ms == FILE_TIME_UNKNOWN)
			fs->opened_at_ms = now_ms;
		if (stream_aged(s, fs)) {
			rc = stream_close(s, fs);
		} else if (fs->unpushed || fs->stage_len > 0 || fs->out_len > 0) {
			if (fs->pending_since_ms == FILE_TIME_UNKNOWN) {
				fs->pending_since_ms = now_ms;
			} else if (now_ms - fs->pending_since_ms >= FILE_PUSH_AFTER_MS) {
				rc = stream_push(s, fs, ZSTD_e_flush);
				if (rc == 0) {
					fs->unpushed = false;
					fs->pending_since_ms = FILE_TIME_UNKNOWN;
				}
			}
		}
		if (rc && rate_limit_pass(&s->fail_log, &suppressed))
			log_error("file",
			          "write failed dir=%s stream=%s err=\"%s\" "
			          "more_failures=%" PRIu64,
			          s->dir, sink_stream_name(fs->stream), strerror(-rc), suppressed);
		if (rc && ret == 0)
			ret = rc;
	}
	return ret;
}

/* Shutdown flush: completes every open file (see the top of the file). The timeout is not
 * used: local disk writes are not interruptible anyway. */
static int file_flush(struct sink *base, int timeout_ms)
{
	struct sink_file *s = (struct sink_file *)base;
	int ret = 0;

	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		int rc = stream_close(s, &s->streams[i]);
		if (rc) {
			log_error("file", "close failed dir=%s stream=%s err=\"%s\"", s->dir,
			          sink_stream_name((enum sink_stream)i), strerror(-rc));
			if (ret == 0)
				ret = rc;
		}
	}
	return ret;
}

static bool file_ready(struct sink *base)
{
	struct sink_file *s = (struct sink_file *)base;

	return !s->disk_failing && faccessat(s->dir_fd, ".", W_OK, AT_EACCESS) == 0;
}

static void stream_release(struct sink_file *s, struct file_stream *fs)
{
	if (fs->fd >= 0 && stream_close(s, fs) != 0) {
		/* The .open name stays: the file is incomplete and no shipper should take it. */
		log_error("file", "data lost file=%s/%s%s lost_bytes=%zu", s->dir, fs->name,
		          FILE_OPEN_SUFFIX, fs->stage_len + fs->out_len);
		close(fs->fd);
		fs->fd = -1;
	}
	ZSTD_freeCCtx(fs->zc);
	free(fs->stage);
	free(fs->out);
}

static void file_free(struct sink *base)
{
	struct sink_file *s = (struct sink_file *)base;

	if (!s)
		return;
	for (int i = 0; i < SINK_STREAM_COUNT; i++)
		stream_release(s, &s->streams[i]);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	free(s->dir);
	free(s);
}

static const struct sink_ops file_ops = {
    .name = "file",
    .write = file_write,
    .poll = file_poll,
    .flush = file_flush,
    .ready = file_ready,
    .free = file_free,
};

/* mkdir -p: creates each missing component of path. Returns 0 or -errno. */
static int make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -errno;
		buf[i] = path[i];
	}
	return 0;
}

/* Logs how many `.open` files an earlier run left behind (a crash or a kill -9). */
static void warn_leftovers(struct sink_file *s)
{
	int fd = dup(s->dir_fd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	size_t n = 0, suffix = strlen(FILE_OPEN_SUFFIX);

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len > suffix && strcmp(de->d_name + len - suffix, FILE_OPEN_SUFFIX) == 0)
			n++;
	}
	closedir(d);
	if (n > 0)
		log_warn("file",
		         "incomplete files from an earlier run dir=%s count=%zu "
		         "hint=\"*.open files are never picked up; inspect or remove them\"",
		         s->dir, n);
}

static int stream_init(struct sink_file *s, struct file_stream *fs, int zstd_level)
{
	size_t ret;

	fs->fd = -1;
	fs->pending_since_ms = FILE_TIME_UNKNOWN;
	fs->opened_at_ms = FILE_TIME_UNKNOWN;
	fs->stage = malloc(FILE_STAGE_BYTES);
	if (!fs->stage)
		return -ENOMEM;
	if (!s->compress_zstd)
		return 0;
	fs->out_cap = ZSTD_CStreamOutSize();
	fs->out = malloc(fs->out_cap);
	fs->zc = ZSTD_createCCtx();
	if (!fs->out || !fs->zc)
		return -ENOMEM;
	ret = ZSTD_CCtx_setParameter(fs->zc, ZSTD_c_compressionLevel,
	                             zstd_level ? zstd_level : ZSTD_CLEVEL_DEFAULT);
	if (ZSTD_isError(ret))
		return -EINVAL;
	ret = ZSTD_CCtx_setParameter(fs->zc, ZSTD_c_checksumFlag, 1);
	if (ZSTD_isError(ret))
		return -EINVAL;
	return 0;
}

struct sink *sink_file_new(const struct sink_file_options *opt, char *err, size_t errlen)
{
	struct sink_file *s = calloc(1, sizeof(*s));
	int rc;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->base.ops = &file_ops;
	s->dir_fd = -1;
	s->compress_zstd = opt->compress_zstd;
	s->rotate_bytes = opt->rotate_bytes;
	s->rotate_age_ms = opt->rotate_age_ms > 0 ? opt->rotate_age_ms : 0;
	s->now_ms = FILE_TIME_UNKNOWN;
	if (opt->name_tag && opt->name_tag[0])
		snprintf(s->tag, sizeof(s->tag), "%.*s-", (int)sizeof(s->tag) - 2, opt->name_tag);
	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		s->streams[i].stream = (enum sink_stream)i;
		s->streams[i].fd = -1;
	}
	s->dir = strdup(opt->dir ? opt->dir : "");
	if (!s->dir) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rc = make_dirs(s->dir);
	if (rc) {
		snprintf(err, errlen, "sink.file.dir=%s: cannot create: %s", s->dir, strerror(-rc));
		goto fail;
	}
	s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0) {
		snprintf(err, errlen, "sink.file.dir=%s: %s", s->dir, strerror(errno));
		goto fail;
	}
	if (faccessat(s->dir_fd, ".", W_OK, AT_EACCESS) != 0) {
		snprintf(err, errlen, "sink.file.dir=%s: not writable: %s", s->dir,
		         strerror(errno));
		goto fail;
	}
	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		rc = stream_init(s, &s->streams[i], opt->zstd_level);
		if (rc) {
			snprintf(err, errlen, "%s",
			         rc == -EINVAL ? "sink.file.zstd_level: out of range"
			                       : "out of memory");
			goto fail;
		}
	}
	warn_leftovers(s);
	return &s->base;
fail:
	file_free(&s->base);
	return NULL;
}
