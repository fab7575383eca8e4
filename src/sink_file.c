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
 * Completion off the writer's thread. Ending a file has a fast part and a slow part. The
 * fast part stays with the writer: end the zstd frame and write(2) what is still buffered,
 * so every byte of the file is in the kernel in order. The slow part, fsync(2) of the file
 * (91 and 210 ms measured for 256 MB files, during which a shard's ring fills and ingest
 * answers 503), close, rename to the final name and fsync of the directory, runs on the
 * instance's completion thread. The writer hands the fd over through a bounded queue of
 * SINK_FILE_COMPLETIONS_MAX jobs (one mutex lock per rotation, none per record) and opens
 * the next file at once. The completion thread takes every job waiting, fsyncs, closes and
 * renames each file, then fsyncs the directory once for all of them; only then does it mark
 * them done, so flush and free, which wait for `completed`, return with every file durable
 * under its final name.
 *
 * One completion thread per instance, not one per process: an instance stays
 * self-contained (no process-wide state, start-up order or reference count; free joins its
 * own thread), a shard's slow fsync never queues behind another shard's (one shared thread
 * would sync the files of N shards rotating together one after the other, the last
 * waiting N fsyncs), and each instance's queue is its own back-pressure signal. The cost is
 * one thread per instance (shards + ingest threads, a handful), asleep on a condition
 * variable between rotations, with a small stack and every signal blocked.
 *
 * When the queue is full (the disk completes files slower than the writer fills them:
 * SINK_FILE_COMPLETIONS_MAX files already wait), the writer does not block: a write that
 * would rotate answers -EAGAIN without taking the record (sink.h's "full, try again": the
 * shard holds it, retries, counts clickd_shard_sink_full_total and stops draining its rings,
 * so ingest answers 503 once they fill), logged at most once a second; poll keeps an aged
 * file open until a later poll.
 * flush and free wait for a free slot instead (up to flush's timeout). So memory, open fds
 * and unsynced files stay bounded, and no file is ever dropped: a job leaves the queue only
 * once its file is complete or has failed. Ten: the five streams rotating together by age
 * still leave room for the previous round; more files waiting means the disk is behind.
 *
 * Completion failures (on the completion thread): when fsync or rename fails the file keeps
 * its `.open` name (not known to be on disk: a shipper must not take it), its records are
 * counted in clickd_sink_failures_total (they were counted out when taken), a line is logged
 * at most once a second, ready() is false until a later file completes, and the next flush
 * answers the error. A failed fsync is not retried (the kernel may have dropped the dirty
 * pages); a failed rename is not retried either, so a disk that keeps failing cannot hold
 * the queue full. A failed directory fsync is logged and turns ready() false, but the
 * files, complete under their final names, are not counted as failed.
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
 * the staging buffer, and clickd_event_to_sink_seconds{sink="file"} observed then (for
 * records with a receive time). A disk failure after that is logged with the number of bytes lost
 * (at shutdown), or counted per record (a file that cannot be completed).
 *
 * Time: rotation by age and the periodic push use only the now_ms given to poll (any clock,
 * as long as it is the same one each time); a file opened between two polls is stamped at
 * the next poll. write, poll, flush and free are called from one thread at a time (sink.h);
 * ready() from any thread (it reads only atomics and dir_fd). The completion thread touches
 * only the queue (under its lock), the jobs it was handed, dir, dir_fd, complete_failing and
 * its own log limiter.
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
#include <pthread.h>
#include <signal.h>
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
/* The completion thread's stack: it runs fsync/rename and a log line, nothing deep. */
#define FILE_COMPLETER_STACK_BYTES (256 * 1024)
#define FILE_NO_DEADLINE           INT64_MAX

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
	uint64_t file_records;      /* records taken into the open file */
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

/* A file handed to the completion thread, in a slot of the queue from the hand-off until
 * the thread is done with it (fd closed; the file renamed, or left `.open` on failure). */
struct file_completion {
	int fd;
	enum sink_stream stream;
	uint64_t records;           /* counted as failed when the file cannot be completed */
	char name[FILE_NAME_BYTES]; /* final name in dir; the file is `<name>.open` until then */
};

/*
 * The hand-off queue between the writer (the only producer) and the completion thread (the
 * only consumer): a ring of jobs indexed by two counters that only grow, both under `lock`.
 * Jobs [completed, queued) wait or are being completed. The thread reads those slots
 * without the lock: the writer filled each one before the unlock that published `queued`,
 * and does not touch it again until it has seen `completed` pass it, under the lock.
 */
struct file_completer {
	pthread_mutex_t lock;
	pthread_cond_t work; /* to the thread: a job was queued, or stop */
	pthread_cond_t done; /* to the writer: `completed` moved (CLOCK_MONOTONIC for waits) */
	uint64_t queued;     /* jobs ever queued */
	uint64_t completed;  /* jobs ever completed or failed */
	int first_error;     /* first completion failure since flush last took it */
	bool stop;           /* set by free: end once the queue is empty */
	struct file_completion jobs[SINK_FILE_COMPLETIONS_MAX];
	struct file_rate_limit fail_log; /* the thread's own */
	/* Set once in sink_file_new: */
	void (*before_complete)(void *arg, const char *name); /* test hook, usually NULL */
	void *before_complete_arg;
	char thread_name[16];
	pthread_t thread;
	bool sync_ready; /* lock and conditions initialised (destroy in free) */
	bool started;    /* the thread runs (join in free) */
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
	/* The writer's last disk operation failed (ready() is false). Atomic: ready() is asked
	 * from the main thread while the owning thread writes. */
	_Atomic bool disk_failing;
	/* The completion thread's last batch had a failure (ready() is false); set and cleared
	 * by that thread only. */
	_Atomic bool complete_failing;
	struct file_rate_limit fail_log; /* the writer's */
	struct file_rate_limit full_log; /* the writer's: completion queue full */
	struct file_completer completer;
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
		fs->file_records = 0;
		fs->opened_at_ms = FILE_TIME_UNKNOWN;
		if (fs->zc)
			ZSTD_CCtx_reset(fs->zc, ZSTD_reset_session_only);
		return 0;
	}
	return -EEXIST;
}

/* ---- the completion thread ---- */

/* Counts and logs (at most once a second) a file the thread could not complete. */
static void completion_failed(struct sink_file *s, const struct file_completion *job,
                              const char *step, int rc)
{
	uint64_t suppressed;

	metrics_sink_failed(METRICS_SINK_FILE, job->stream, job->records);
	if (rate_limit_pass(&s->completer.fail_log, &suppressed))
		log_error("file",
		          "complete failed step=%s file=%s/%s%s records=%" PRIu64 " err=\"%s\" "
		          "more_failures=%" PRIu64,
		          step, s->dir, job->name, FILE_OPEN_SUFFIX, job->records, strerror(-rc),
		          suppressed);
}

/* fsync, close and rename of one file. Returns 0 or -errno (the file stays `.open`). */
static int complete_one(struct sink_file *s, const struct file_completion *job)
{
	struct file_completer *c = &s->completer;
	char tmp[FILE_NAME_BYTES + sizeof(FILE_OPEN_SUFFIX)];
	int rc = 0;

	if (c->before_complete)
		c->before_complete(c->before_complete_arg, job->name);
	if (fsync(job->fd) != 0)
		rc = -errno;
	/* Once fsync has answered, close has nothing to add about the data on a local disk. */
	close(job->fd);
	if (rc) {
		completion_failed(s, job, "fsync", rc);
		return rc;
	}
	snprintf(tmp, sizeof(tmp), "%s%s", job->name, FILE_OPEN_SUFFIX);
	if (renameat(s->dir_fd, tmp, s->dir_fd, job->name) != 0) {
		rc = -errno;
		completion_failed(s, job, "rename", rc);
	}
	return rc;
}

/* Completes jobs [from, to), then fsyncs the directory once for all their renames. Returns
 * 0 or the first failure's -errno. */
static int complete_batch(struct sink_file *s, uint64_t from, uint64_t to)
{
	struct file_completer *c = &s->completer;
	size_t renamed = 0;
	uint64_t suppressed;
	int first = 0;

	for (uint64_t i = from; i < to; i++) {
		int rc = complete_one(s, &c->jobs[i % SINK_FILE_COMPLETIONS_MAX]);
		if (rc == 0)
			renamed++;
		else if (first == 0)
			first = rc;
	}
	if (renamed > 0 && fsync(s->dir_fd) != 0) {
		int rc = -errno;
		if (rate_limit_pass(&c->fail_log, &suppressed))
			log_error("file",
			          "fsync failed dir=%s files=%zu err=\"%s\" more_failures=%" PRIu64,
			          s->dir, renamed, strerror(-rc), suppressed);
		if (first == 0)
			first = rc;
	}
	s->complete_failing = first != 0;
	return first;
}

static void *completer_main(void *arg)
{
	struct sink_file *s = arg;
	struct file_completer *c = &s->completer;

	pthread_setname_np(pthread_self(), c->thread_name);
	pthread_mutex_lock(&c->lock);
	for (;;) {
		uint64_t from = c->completed, to = c->queued;
		int rc;

		if (from == to) {
			if (c->stop)
				break;
			pthread_cond_wait(&c->work, &c->lock);
			continue;
		}
		pthread_mutex_unlock(&c->lock);
		rc = complete_batch(s, from, to);
		pthread_mutex_lock(&c->lock);
		c->completed = to;
		if (rc && c->first_error == 0)
			c->first_error = rc;
		pthread_cond_broadcast(&c->done);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* ---- the writer's side of the queue ---- */

static uint64_t completer_queued(struct file_completer *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->queued;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* True when one more file fits in the queue. Only the writer queues, so the room it sees
 * stays until it uses it. */
static bool completer_has_room(struct file_completer *c)
{
	bool room;

	pthread_mutex_lock(&c->lock);
	room = c->queued - c->completed < SINK_FILE_COMPLETIONS_MAX;
	pthread_mutex_unlock(&c->lock);
	return room;
}

static void completer_queue(struct file_completer *c, const struct file_completion *job)
{
	pthread_mutex_lock(&c->lock);
	c->jobs[c->queued % SINK_FILE_COMPLETIONS_MAX] = *job;
	c->queued++;
	pthread_cond_signal(&c->work);
	pthread_mutex_unlock(&c->lock);
}

/* Waits until `target` jobs have ever completed, or until deadline_ms (monotonic;
 * FILE_NO_DEADLINE: no limit). True when they have. */
static bool completer_wait(struct file_completer *c, uint64_t target, int64_t deadline_ms)
{
	struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
	bool reached;

	pthread_mutex_lock(&c->lock);
	while (c->completed < target) {
		if (deadline_ms == FILE_NO_DEADLINE)
			pthread_cond_wait(&c->done, &c->lock);
		else if (pthread_cond_timedwait(&c->done, &c->lock, &ts) == ETIMEDOUT)
			break;
	}
	reached = c->completed >= target;
	pthread_mutex_unlock(&c->lock);
	return reached;
}

/* Waits for a free slot in the queue (one more job completed than leaves it full); see
 * completer_wait. */
static bool completer_wait_room(struct file_completer *c, int64_t deadline_ms)
{
	uint64_t queued = completer_queued(c);

	if (queued < SINK_FILE_COMPLETIONS_MAX)
		return true;
	return completer_wait(c, queued - SINK_FILE_COMPLETIONS_MAX + 1, deadline_ms);
}

/* The first completion failure since the last call (0: none). */
static int completer_take_error(struct file_completer *c)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = c->first_error;
	c->first_error = 0;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Ends the open file on the writer's side (zstd frame ended, every buffered byte written)
 * and hands its fd to the completion thread. Returns 0; -EAGAIN with the file untouched
 * when the queue is full; or the disk's -errno with the file still open and its data
 * buffered (the next call tries again). Room is checked first, so that a frame is never
 * ended in a file that then has to stay open. */
static int stream_hand_off(struct sink_file *s, struct file_stream *fs)
{
	struct file_completion job;
	int rc;

	if (fs->fd < 0)
		return 0;
	if (!completer_has_room(&s->completer))
		return -EAGAIN;
	rc = stream_push(s, fs, ZSTD_e_end);
	if (rc)
		return rc;
	job.fd = fs->fd;
	job.stream = fs->stream;
	job.records = fs->file_records;
	memcpy(job.name, fs->name, sizeof(job.name));
	completer_queue(&s->completer, &job);
	fs->fd = -1;
	fs->unpushed = false;
	fs->pending_since_ms = FILE_TIME_UNKNOWN;
	return 0;
}

/* stream_hand_off, waiting for room in the queue until deadline_ms: -ETIMEDOUT after. */
static int stream_hand_off_wait(struct sink_file *s, struct file_stream *fs, int64_t deadline_ms)
{
	int rc;

	while ((rc = stream_hand_off(s, fs)) == -EAGAIN) {
		if (!completer_wait_room(&s->completer, deadline_ms))
			return -ETIMEDOUT;
	}
	return rc;
}

/* The writer found the queue full: logs it at most once a second. Returns -EAGAIN. */
static int file_queue_full(struct sink_file *s, struct file_stream *fs)
{
	uint64_t suppressed;

	if (rate_limit_pass(&s->full_log, &suppressed))
		log_warn("file",
		         "completion queue full dir=%s stream=%s files_waiting=%d "
		         "hint=\"the disk completes files slower than they fill; records wait\" "
		         "more=%" PRIu64,
		         s->dir, sink_stream_name(fs->stream), SINK_FILE_COMPLETIONS_MAX,
		         suppressed);
	return -EAGAIN;
}

static bool stream_aged(const struct sink_file *s, const struct file_stream *fs)
{
	return s->rotate_age_ms > 0 && fs->opened_at_ms != FILE_TIME_UNKNOWN &&
	       s->now_ms != FILE_TIME_UNKNOWN && s->now_ms - fs->opened_at_ms >= s->rotate_age_ms;
}

static int file_write(struct sink *base, enum sink_stream stream, const char *key, size_t key_len,
                      const char *record, size_t record_len, int64_t received_at_ms)
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
		rc = stream_hand_off(s, fs);
		if (rc == -EAGAIN)
			return file_queue_full(s, fs);
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
	fs->file_records++;
	fs->unpushed = true;
	metrics_sink_out(METRICS_SINK_FILE, stream, 1);
	metrics_event_to_sink(HIST_EVENT_TO_SINK_FILE, received_at_ms);
	return 0;
}

/* Pushes the stream's buffered data to its file once it has waited FILE_PUSH_AFTER_MS. */
static int stream_push_due(struct sink_file *s, struct file_stream *fs, int64_t now_ms)
{
	int rc;

	if (!fs->unpushed && fs->stage_len == 0 && fs->out_len == 0)
		return 0;
	if (fs->pending_since_ms == FILE_TIME_UNKNOWN) {
		fs->pending_since_ms = now_ms;
		return 0;
	}
	if (now_ms - fs->pending_since_ms < FILE_PUSH_AFTER_MS)
		return 0;
	rc = stream_push(s, fs, ZSTD_e_flush);
	if (rc == 0) {
		fs->unpushed = false;
		fs->pending_since_ms = FILE_TIME_UNKNOWN;
	}
	return rc;
}

static int file_poll(struct sink *base, int64_t now_ms)
{
	struct sink_file *s = (struct sink_file *)base;
	int ret = 0;

	s->now_ms = now_ms;
	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		struct file_stream *fs = &s->streams[i];
		uint64_t suppressed;
		bool rotate;
		int rc = 0;

		if (fs->fd < 0)
			continue;
		if (fs->opened_at_ms == FILE_TIME_UNKNOWN)
			fs->opened_at_ms = now_ms;
		rotate = stream_aged(s, fs);
		if (rotate) {
			rc = stream_hand_off(s, fs);
			if (rc == -EAGAIN) { /* no room: rotated at a later poll */
				file_queue_full(s, fs);
				rotate = false;
				rc = 0;
			}
		}
		if (!rotate)
			rc = stream_push_due(s, fs, now_ms);
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

static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? FILE_NO_DEADLINE : monotonic_ms() + timeout_ms;
}

/* Hands every open file over and waits until every file handed over is complete (see the
 * top of the file), for at most timeout_ms (< 0: no limit). */
static int file_flush(struct sink *base, int timeout_ms)
{
	struct sink_file *s = (struct sink_file *)base;
	struct file_completer *c = &s->completer;
	int64_t deadline_ms = deadline_after(timeout_ms);
	int ret = 0, rc;

	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		rc = stream_hand_off_wait(s, &s->streams[i], deadline_ms);
		if (rc && rc != -ETIMEDOUT)
			log_error("file", "close failed dir=%s stream=%s err=\"%s\"", s->dir,
			          sink_stream_name((enum sink_stream)i), strerror(-rc));
		if (rc && ret == 0)
			ret = rc;
	}
	if (!completer_wait(c, completer_queued(c), deadline_ms) && ret == 0)
		ret = -ETIMEDOUT;
	rc = completer_take_error(c);
	if (rc && ret == 0)
		ret = rc;
	return ret;
}

static bool file_ready(struct sink *base)
{
	struct sink_file *s = (struct sink_file *)base;

	return !s->disk_failing && !s->complete_failing &&
	       faccessat(s->dir_fd, ".", W_OK, AT_EACCESS) == 0;
}

/* Hands the stream's open file over, waiting for room as long as it takes; if its last data
 * cannot be written, the file keeps its `.open` name and the loss is logged. */
static void stream_release(struct sink_file *s, struct file_stream *fs)
{
	if (fs->fd >= 0 && stream_hand_off_wait(s, fs, FILE_NO_DEADLINE) != 0) {
		/* The .open name stays: the file is incomplete and no shipper should take it. */
		log_error("file", "data lost file=%s/%s%s lost_bytes=%zu", s->dir, fs->name,
		          FILE_OPEN_SUFFIX, fs->stage_len + fs->out_len);
		close(fs->fd);
		fs->fd = -1;
	}
}

/* Lets the completion thread finish every job queued, then joins it. */
static void completer_stop(struct file_completer *c)
{
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_signal(&c->work);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	c->started = false;
}

static void file_free(struct sink *base)
{
	struct sink_file *s = (struct sink_file *)base;

	if (!s)
		return;
	/* Files are opened only once the thread runs (sink_file_new starts it first). */
	if (s->completer.started) {
		for (int i = 0; i < SINK_STREAM_COUNT; i++)
			stream_release(s, &s->streams[i]);
		completer_stop(&s->completer);
	}
	for (int i = 0; i < SINK_STREAM_COUNT; i++) {
		ZSTD_freeCCtx(s->streams[i].zc);
		free(s->streams[i].stage);
		free(s->streams[i].out);
	}
	if (s->completer.sync_ready) {
		pthread_mutex_destroy(&s->completer.lock);
		pthread_cond_destroy(&s->completer.work);
		pthread_cond_destroy(&s->completer.done);
	}
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

/* Initialises the queue's lock and conditions (`done` on CLOCK_MONOTONIC, for flush's timed
 * waits). Returns 0 or -errno. */
static int completer_init(struct file_completer *c)
{
	pthread_condattr_t cattr;
	int rc;

	rc = pthread_condattr_init(&cattr);
	if (rc)
		return -rc;
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&c->done, &cattr);
	pthread_condattr_destroy(&cattr);
	if (rc)
		return -rc;
	rc = pthread_cond_init(&c->work, NULL);
	if (rc)
		goto fail_work;
	rc = pthread_mutex_init(&c->lock, NULL);
	if (rc)
		goto fail_lock;
	c->sync_ready = true;
	return 0;
fail_lock:
	pthread_cond_destroy(&c->work);
fail_work:
	pthread_cond_destroy(&c->done);
	return -rc;
}

/* Starts the completion thread ("clickd-sync-<tag>"). Returns 0 or -errno. */
static int completer_start(struct sink_file *s, const struct sink_file_options *opt)
{
	struct file_completer *c = &s->completer;
	const char *tag = opt->name_tag ? opt->name_tag : "";
	pthread_attr_t attr;
	sigset_t all, old;
	int rc;

	c->before_complete = opt->before_complete;
	c->before_complete_arg = opt->before_complete_arg;
	snprintf(c->thread_name, sizeof(c->thread_name), "clickd-sync%s%.3s", tag[0] ? "-" : "",
	         tag);
	rc = completer_init(c);
	if (rc)
		return rc;
	rc = pthread_attr_init(&attr);
	if (rc)
		return -rc;
	pthread_attr_setstacksize(&attr, FILE_COMPLETER_STACK_BYTES);
	/* Signals are the main loop's (uv_signal): the thread starts with all of them blocked,
	 * so no handler ever runs on it. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&c->thread, &attr, completer_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc)
		return -rc;
	c->started = true;
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
	rc = completer_start(s, opt);
	if (rc) {
		snprintf(err, errlen, "cannot start the file completion thread: %s", strerror(-rc));
		goto fail;
	}
	warn_leftovers(s);
	return &s->base;
fail:
	file_free(&s->base);
	return NULL;
}
