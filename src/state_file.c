/*
 * state_file.c - saving the shards' open state at stop and restoring it at start (see
 * state_file.h for what is kept and the format).
 *
 * Writing: one frame buffer is filled with records and compressed into a frame when the
 * next record might not fit. The items of all shards are merged into one order per record
 * type with a small binary heap over the shards (each shard's walk is already in its own
 * order): least recently seen first, so that restoring them one after the other (each
 * becomes the most recently seen) rebuilds the LRU order whatever the new shard count, and
 * a table smaller than before drops the least recently seen ones.
 *
 * Reading: the whole file is read twice, first only to check it (every hash, length, field
 * and the end record), then to restore; both passes run the same parser, so the second
 * cannot meet anything the first did not accept.
 */
#include "clickd/state_file.h"

#include "clickd/channel.h"
#include "clickd/pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define FILE_MAGIC          0x54534B43u /* "CKST" */
#define FRAME_MAGIC         0x42534B43u /* "CKSB" */
#define HEADER_BYTES        32
#define FRAME_HEADER_BYTES  32
#define FRAME_MAX_BYTES     (1u << 20)
#define COMPRESSED_MAX      ZSTD_COMPRESSBOUND(FRAME_MAX_BYTES)
#define RECORD_HEADER_BYTES 5
/* A record's body, at most: a session with three URLs of 8 KiB is about 26 KiB, a path of
 * 128 touchpoints about 38 KiB, a dedup run 54 KiB. */
#define RECORD_MAX_BYTES   (64u * 1024)
#define DEDUP_RUN_MAX      3000
#define DEDUP_ENTRY_BYTES  18
#define SESSION_STRING_MAX 8192                     /* session.max_url_bytes at most */
#define TIME_MAX_MS        INT64_C(253402300799999) /* 9999-12-31 */
#define ZSTD_LEVEL         1                        /* the stop waits for it: speed first */
#define TOUCH_STRINGS      6

enum record_type {
	REC_VISITOR = 1,
	REC_DEDUP,
	REC_PATH,
	REC_USER,
	REC_END,
};

static const char *const record_names[] = {"", "visitor", "dedup", "path", "user", "end"};

static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- little-endian integers ---- */

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- files ---- */

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Reads up to n bytes; returns how many (fewer only at the end of the file) or -errno. */
static ssize_t read_full(int fd, unsigned char *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = read(fd, p + got, n - got);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		got += (size_t)k;
	}
	return (ssize_t)got;
}

/* The directory of path (".", when it has none) into buf. */
static void dir_of(const char *path, char *buf, size_t cap)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(buf, cap, ".");
	else if (slash == path)
		snprintf(buf, cap, "/");
	else
		snprintf(buf, cap, "%.*s", (int)(slash - path), path);
}

static int sync_dir(const char *path)
{
	char dir[4096];
	int fd, rc = 0;

	dir_of(path, dir, sizeof(dir));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

int state_file_check(const char *path, char *err, size_t errlen)
{
	char dir[4096];
	struct stat st;

	if (strlen(path) + 5 >= sizeof(dir)) {
		fmt_err(err, errlen, "path too long");
		return -ENAMETOOLONG;
	}
	dir_of(path, dir, sizeof(dir));
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fmt_err(err, errlen, "directory %s does not exist", dir);
		return -ENOENT;
	}
	if (access(dir, W_OK | X_OK) != 0) {
		int rc = -errno;
		fmt_err(err, errlen, "directory %s is not writable: %s", dir, strerror(-rc));
		return rc;
	}
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		fmt_err(err, errlen, "%s is a directory", path);
		return -EISDIR;
	}
	return 0;
}

/* ---- writing ---- */

struct writer {
	int fd;
	ZSTD_CCtx *zc;
	unsigned char *raw; /* owned: FRAME_MAX_BYTES, the records of the next frame */
	size_t raw_len;
	uint32_t raw_records;
	unsigned char *frame; /* owned: header + COMPRESSED_MAX */
	uint64_t frames;
	uint64_t bytes;
	uint64_t payload_bytes;
	size_t rec_start; /* the record being built: its header */
	size_t run_count; /* the open dedup run: its entries so far */
	size_t run_count_at;
	struct state_file_counts counts;
	int rc; /* the first failure; later writes do nothing */
	char *err;
	size_t errlen;
};

static int frame_flush(struct writer *w)
{
	unsigned char *h = w->frame;
	size_t c;

	if (w->rc || w->raw_records == 0)
		return w->rc;
	c = ZSTD_compressCCtx(w->zc, w->frame + FRAME_HEADER_BYTES, COMPRESSED_MAX, w->raw,
	                      w->raw_len, ZSTD_LEVEL);
	if (ZSTD_isError(c)) {
		fmt_err(w->err, w->errlen, "zstd: %s", ZSTD_getErrorName(c));
		return w->rc = -EIO;
	}
	put32(h, FRAME_MAGIC);
	put32(h + 4, (uint32_t)c);
	put32(h + 8, (uint32_t)w->raw_len);
	put32(h + 12, w->raw_records);
	put64(h + 16, XXH3_64bits_withSeed(w->frame + FRAME_HEADER_BYTES, c, w->frames));
	put64(h + 24, XXH3_64bits(h, 24));
	w->rc = write_all(w->fd, w->frame, FRAME_HEADER_BYTES + c);
	if (w->rc) {
		fmt_err(w->err, w->errlen, "write: %s", strerror(-w->rc));
		return w->rc;
	}
	w->frames++;
	w->bytes += FRAME_HEADER_BYTES + c;
	w->payload_bytes += w->raw_len;
	w->raw_len = 0;
	w->raw_records = 0;
	return 0;
}

/* Starts a record; room for its largest body is made first. */
static void rec_begin(struct writer *w, enum record_type type)
{
	if (w->raw_len + RECORD_HEADER_BYTES + RECORD_MAX_BYTES > FRAME_MAX_BYTES)
		frame_flush(w);
	if (w->rc)
		return;
	w->rec_start = w->raw_len;
	w->raw[w->raw_len] = (unsigned char)type;
	w->raw_len += RECORD_HEADER_BYTES;
}

static void rec_end(struct writer *w)
{
	size_t body = w->raw_len - w->rec_start - RECORD_HEADER_BYTES;

	if (w->rc)
		return;
	if (body > RECORD_MAX_BYTES) {
		fmt_err(w->err, w->errlen, "a %s record of %zu bytes",
		        record_names[w->raw[w->rec_start]], body);
		w->rc = -EOVERFLOW; /* cannot happen: the bounds keep records far smaller */
	}
	put32(w->raw + w->rec_start + 1, (uint32_t)body);
	w->raw_records++;
}

/* Appends n bytes to the record being built (never past the frame buffer: rec_begin left
 * RECORD_MAX_BYTES, and rec_end fails a record that took more). */
static void w_bytes(struct writer *w, const void *p, size_t n)
{
	if (w->rc)
		return;
	if (w->raw_len + n > FRAME_MAX_BYTES) {
		if (!w->rc) {
			fmt_err(w->err, w->errlen, "record too large");
			w->rc = -EOVERFLOW;
		}
		return;
	}
	if (n)
		memcpy(w->raw + w->raw_len, p, n);
	w->raw_len += n;
}

static void w_u8(struct writer *w, uint8_t v)
{
	w_bytes(w, &v, 1);
}

static void w_u16(struct writer *w, uint16_t v)
{
	unsigned char b[2];
	put16(b, v);
	w_bytes(w, b, 2);
}

static void w_u32(struct writer *w, uint32_t v)
{
	unsigned char b[4];
	put32(b, v);
	w_bytes(w, b, 4);
}

static void w_u64(struct writer *w, uint64_t v)
{
	unsigned char b[8];
	put64(b, v);
	w_bytes(w, b, 8);
}

static void w_f64(struct writer *w, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof(bits));
	w_u64(w, bits);
}

static void w_str8(struct writer *w, const char *s)
{
	size_t n = strlen(s);
	w_u8(w, (uint8_t)n);
	w_bytes(w, s, n);
}

static void put_visitor(struct writer *w, const struct session_saved *v)
{
	rec_begin(w, REC_VISITOR);
	w_u64(w, v->visitor_hash);
	w_u32(w, v->sessions);
	w_u8(w, v->has_session);
	if (v->has_session) {
		w_bytes(w, v->id, SESSION_ID_CHARS);
		w_u32(w, v->index);
		w_u64(w, (uint64_t)v->started_at_ms);
		w_u64(w, (uint64_t)v->last_seen_ms);
		w_u32(w, v->events);
		w_u32(w, v->page_views);
		w_u32(w, v->conversions);
		w_u8(w, v->has_revenue);
		w_f64(w, v->revenue);
		w_bytes(w, v->currency, sizeof(v->currency));
		w_u8(w, (uint8_t)v->channel);
		w_u8(w, SF__COUNT);
		for (int f = 0; f < SF__COUNT; f++) {
			w_u16(w, (uint16_t)v->str_len[f]);
			w_bytes(w, v->str[f], v->str_len[f]);
		}
		w->counts.sessions++;
	}
	rec_end(w);
	w->counts.visitors++;
}

static void dedup_run_end(struct writer *w)
{
	if (w->run_count == 0)
		return;
	if (!w->rc)
		put32(w->raw + w->run_count_at, (uint32_t)w->run_count);
	rec_end(w);
	w->run_count = 0;
}

static void put_dedup(struct writer *w, size_t shard, uint64_t fp, int64_t seen_ms)
{
	if (w->run_count == 0) {
		rec_begin(w, REC_DEDUP);
		w->run_count_at = w->raw_len;
		w_u32(w, 0); /* the count, set by dedup_run_end */
	}
	w_u16(w, (uint16_t)shard);
	w_u64(w, fp);
	w_u64(w, (uint64_t)seen_ms);
	w->counts.dedup_entries++;
	if (++w->run_count == DEDUP_RUN_MAX)
		dedup_run_end(w);
}

static void put_path(struct writer *w, const struct attribution_saved_visitor *v)
{
	rec_begin(w, REC_PATH);
	w_u64(w, v->visitor_hash);
	w_u64(w, v->user_hash);
	w_u64(w, (uint64_t)v->last_seen_ms);
	w_u8(w, (uint8_t)v->visitor_id_len);
	w_bytes(w, v->visitor_id, v->visitor_id_len);
	w_u8(w, (uint8_t)v->count);
	for (size_t k = 0; k < v->count; k++) {
		const struct attribution_touchpoint *tp = &v->touchpoints[k];
		w_u64(w, (uint64_t)tp->started_at_ms);
		w_u8(w, tp->channel);
		w_str8(w, tp->session_id);
		w_str8(w, tp->source);
		w_str8(w, tp->medium);
		w_str8(w, tp->campaign);
		w_str8(w, tp->click_id_type);
		w_str8(w, tp->affiliate_id);
	}
	rec_end(w);
	w->counts.paths++;
	w->counts.touchpoints += v->count;
}

static void put_user(struct writer *w, const struct attribution_saved_user *u)
{
	rec_begin(w, REC_USER);
	w_u64(w, u->user_hash);
	w_u64(w, (uint64_t)u->last_seen_ms);
	w_u8(w, (uint8_t)u->devices);
	for (size_t k = 0; k < u->devices; k++) {
		w_u64(w, u->device[k].visitor_hash);
		w_u64(w, (uint64_t)u->device[k].linked_ms);
	}
	rec_end(w);
	w->counts.users++;
}

static void put_end(struct writer *w)
{
	const struct state_file_counts *c = &w->counts;

	rec_begin(w, REC_END);
	w_u64(w, c->visitors);
	w_u64(w, c->sessions);
	w_u64(w, c->dedup_entries);
	w_u64(w, c->paths);
	w_u64(w, c->touchpoints);
	w_u64(w, c->users);
	w_u64(w, w->frames + 1); /* with the frame this record ends */
	rec_end(w);
}

/* ---- merging the shards' walks ---- */

struct source {
	uint64_t cursor;
	int64_t key; /* the current item's place in the order; in/out for next() */
	bool has;
	void *item;
};

struct source_ops {
	size_t item_bytes;
	/* The shard's next item into item with its key; false past the last. */
	bool (*next)(const struct state_file_shard *sh, uint64_t *cursor, void *item, int64_t *key);
	void (*put)(struct writer *w, const void *item, size_t shard);
};

static void heap_down(size_t *heap, size_t n, size_t i, const struct source *src)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i, t;

		if (l < n && src[heap[l]].key < src[heap[m]].key)
			m = l;
		if (r < n && src[heap[r]].key < src[heap[m]].key)
			m = r;
		if (m == i)
			return;
		t = heap[i];
		heap[i] = heap[m];
		heap[m] = t;
		i = m;
	}
}

/* Writes the items of every shard, smallest key first. */
static int merge(struct writer *w, const struct state_file_shard *shards, size_t count,
                 const struct source_ops *ops)
{
	struct source *src = calloc(count, sizeof(*src));
	unsigned char *items = calloc(count, ops->item_bytes);
	size_t *heap = calloc(count, sizeof(*heap));
	size_t n = 0;

	if (!src || !items || !heap) {
		fmt_err(w->err, w->errlen, "out of memory");
		w->rc = w->rc ? w->rc : -ENOMEM;
		goto out;
	}
	for (size_t s = 0; s < count; s++) {
		src[s].item = items + s * ops->item_bytes;
		src[s].has = ops->next(&shards[s], &src[s].cursor, src[s].item, &src[s].key);
		if (src[s].has)
			heap[n++] = s;
	}
	for (size_t i = n / 2; i-- > 0;)
		heap_down(heap, n, i, src);
	while (n > 0 && !w->rc) {
		size_t s = heap[0];

		ops->put(w, src[s].item, s);
		src[s].has = ops->next(&shards[s], &src[s].cursor, src[s].item, &src[s].key);
		if (!src[s].has)
			heap[0] = heap[--n];
		heap_down(heap, n, 0, src);
	}
out:
	free(src);
	free(items);
	free(heap);
	return w->rc;
}

/* Visitors without an open session: by their place in their shard's LRU order (so the
 * shards take turns); they come before every visitor with a session, who was seen within
 * the session timeout. */
static bool next_idle_visitor(const struct state_file_shard *sh, uint64_t *cursor, void *item,
                              int64_t *key)
{
	struct session_saved *v = item;

	while (session_saved_next(sh->sessions, cursor, v)) {
		if (!v->has_session) {
			(*key)++;
			return true;
		}
	}
	return false;
}

/* Visitors with an open session, by their last event. */
static bool next_open_visitor(const struct state_file_shard *sh, uint64_t *cursor, void *item,
                              int64_t *key)
{
	struct session_saved *v = item;

	while (session_saved_next(sh->sessions, cursor, v)) {
		if (v->has_session) {
			*key = v->last_seen_ms;
			return true;
		}
	}
	return false;
}

static void put_visitor_item(struct writer *w, const void *item, size_t shard)
{
	(void)shard;
	put_visitor(w, item);
}

struct dedup_item {
	uint64_t fp;
	int64_t seen_ms;
};

static bool next_dedup(const struct state_file_shard *sh, uint64_t *cursor, void *item,
                       int64_t *key)
{
	struct dedup_item *d = item;

	if (!dedup_saved_next(sh->dedup, cursor, &d->fp, &d->seen_ms))
		return false;
	*key = d->seen_ms;
	return true;
}

static void put_dedup_item(struct writer *w, const void *item, size_t shard)
{
	const struct dedup_item *d = item;
	put_dedup(w, shard, d->fp, d->seen_ms);
}

static bool next_path(const struct state_file_shard *sh, uint64_t *cursor, void *item, int64_t *key)
{
	struct attribution_saved_visitor *v = item;

	if (!attribution_saved_visitor_next(sh->attribution, cursor, v))
		return false;
	*key = v->last_seen_ms;
	return true;
}

static void put_path_item(struct writer *w, const void *item, size_t shard)
{
	(void)shard;
	put_path(w, item);
}

static bool next_user(const struct state_file_shard *sh, uint64_t *cursor, void *item, int64_t *key)
{
	struct attribution_saved_user *u = item;

	if (!attribution_saved_user_next(sh->attribution, cursor, u))
		return false;
	*key = u->last_seen_ms;
	return true;
}

static void put_user_item(struct writer *w, const void *item, size_t shard)
{
	(void)shard;
	put_user(w, item);
}

static int write_body(struct writer *w, const struct state_file_shard *shards, size_t count)
{
	static const struct source_ops idle = {sizeof(struct session_saved), next_idle_visitor,
	                                       put_visitor_item};
	static const struct source_ops open = {sizeof(struct session_saved), next_open_visitor,
	                                       put_visitor_item};
	static const struct source_ops dedup = {sizeof(struct dedup_item), next_dedup,
	                                        put_dedup_item};
	static const struct source_ops paths = {sizeof(struct attribution_saved_visitor), next_path,
	                                        put_path_item};
	static const struct source_ops users = {sizeof(struct attribution_saved_user), next_user,
	                                        put_user_item};

	if (merge(w, shards, count, &idle) || merge(w, shards, count, &open) ||
	    merge(w, shards, count, &dedup))
		return w->rc;
	dedup_run_end(w);
	if (merge(w, shards, count, &paths) || merge(w, shards, count, &users))
		return w->rc;
	put_end(w);
	return frame_flush(w);
}

static int write_header(struct writer *w, size_t count, int64_t now_ms)
{
	unsigned char h[HEADER_BYTES];

	put32(h, FILE_MAGIC);
	put16(h + 4, STATE_FILE_VERSION);
	put16(h + 6, 0);
	put32(h + 8, (uint32_t)count);
	put32(h + 12, 0);
	put64(h + 16, (uint64_t)now_ms);
	put64(h + 24, XXH3_64bits(h, 24));
	w->rc = write_all(w->fd, h, sizeof(h));
	if (w->rc)
		fmt_err(w->err, w->errlen, "write: %s", strerror(-w->rc));
	w->bytes += sizeof(h);
	return w->rc;
}

int state_file_save(const char *path, const struct state_file_shard *shards, size_t count,
                    int64_t now_ms, struct state_file_report *report, char *err, size_t errlen)
{
	char tmp[4096];
	struct writer w = {.fd = -1, .err = err, .errlen = errlen};
	int rc;

	memset(report, 0, sizeof(*report));
	if (count < 1 || count > STATE_FILE_MAX_SHARDS) {
		fmt_err(err, errlen, "%zu shards: 1..%d", count, STATE_FILE_MAX_SHARDS);
		return -EINVAL;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		fmt_err(err, errlen, "path too long");
		return -ENAMETOOLONG;
	}
	w.zc = ZSTD_createCCtx();
	w.raw = malloc(FRAME_MAX_BYTES);
	w.frame = malloc(FRAME_HEADER_BYTES + COMPRESSED_MAX);
	if (!w.zc || !w.raw || !w.frame) {
		fmt_err(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w.fd < 0) {
		rc = -errno;
		fmt_err(err, errlen, "cannot create %s: %s", tmp, strerror(-rc));
		goto out;
	}
	rc = write_header(&w, count, now_ms);
	if (rc == 0)
		rc = write_body(&w, shards, count);
	if (rc == 0 && fsync(w.fd) != 0) {
		rc = -errno;
		fmt_err(err, errlen, "fsync %s: %s", tmp, strerror(-rc));
	}
	if (close(w.fd) != 0 && rc == 0) {
		rc = -errno;
		fmt_err(err, errlen, "close %s: %s", tmp, strerror(-rc));
	}
	w.fd = -1;
	if (rc == 0 && rename(tmp, path) != 0) {
		rc = -errno;
		fmt_err(err, errlen, "rename %s to %s: %s", tmp, path, strerror(-rc));
	}
	if (rc == 0 && (rc = sync_dir(path)) != 0)
		fmt_err(err, errlen, "fsync of the directory of %s: %s", path, strerror(-rc));
	if (rc != 0)
		unlink(tmp);
out:
	if (w.fd >= 0) {
		close(w.fd);
		unlink(tmp);
	}
	ZSTD_freeCCtx(w.zc);
	free(w.raw);
	free(w.frame);
	report->shards = (uint32_t)count;
	report->saved_at_ms = now_ms;
	report->file_bytes = w.bytes;
	report->payload_bytes = w.payload_bytes;
	report->file = w.counts;
	return rc;
}

/* ---- reading ---- */

struct reader {
	int fd;
	ZSTD_DCtx *dc;
	unsigned char *comp; /* owned: COMPRESSED_MAX */
	unsigned char *raw;  /* owned: FRAME_MAX_BYTES */
	size_t raw_len, raw_pos;
	uint32_t records_left;
	uint64_t frames;
	uint64_t bytes;
	uint64_t payload_bytes;
	uint32_t shards;
	int64_t saved_at_ms;
	char *err;
	size_t errlen;
};

static int bad(struct reader *r, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fmt_err(r->err, r->errlen, "frame %llu: %s", (unsigned long long)r->frames, what);
	return -EBADMSG;
}

static int read_header(struct reader *r)
{
	unsigned char h[HEADER_BYTES];
	ssize_t n = read_full(r->fd, h, sizeof(h));

	if (n < 0) {
		fmt_err(r->err, r->errlen, "read: %s", strerror((int)-n));
		return (int)n;
	}
	if (n >= 4 && get32(h) != FILE_MAGIC) {
		fmt_err(r->err, r->errlen, "not a clickd state file (bad magic)");
		return -EBADMSG;
	}
	if ((size_t)n < sizeof(h)) {
		fmt_err(r->err, r->errlen, "truncated: %zd bytes, no whole header", n);
		return -EBADMSG;
	}
	if (get64(h + 24) != XXH3_64bits(h, 24)) {
		fmt_err(r->err, r->errlen, "header checksum mismatch");
		return -EBADMSG;
	}
	if (get16(h + 4) != STATE_FILE_VERSION) {
		fmt_err(r->err, r->errlen, "version %u; this clickd reads version %d", get16(h + 4),
		        STATE_FILE_VERSION);
		return -EPROTO;
	}
	r->shards = get32(h + 8);
	r->saved_at_ms = (int64_t)get64(h + 16);
	if (get16(h + 6) != 0 || get32(h + 12) != 0 || r->shards < 1 ||
	    r->shards > STATE_FILE_MAX_SHARDS || r->saved_at_ms < 0 ||
	    r->saved_at_ms > TIME_MAX_MS) {
		fmt_err(r->err, r->errlen, "bad header fields");
		return -EBADMSG;
	}
	r->bytes = sizeof(h);
	return 0;
}

/* Loads the next frame: 1, 0 at the end of the file, or < 0. */
static int read_frame(struct reader *r)
{
	unsigned char h[FRAME_HEADER_BYTES];
	ssize_t n = read_full(r->fd, h, sizeof(h));
	uint32_t clen, ulen, records;
	size_t got;

	if (n < 0) {
		fmt_err(r->err, r->errlen, "read: %s", strerror((int)-n));
		return (int)n;
	}
	if (n == 0)
		return 0;
	if ((size_t)n < sizeof(h))
		return bad(r, "truncated: %zd bytes of a frame header", n);
	if (get32(h) != FRAME_MAGIC || get64(h + 24) != XXH3_64bits(h, 24))
		return bad(r, "bad frame header (magic or checksum)");
	clen = get32(h + 4);
	ulen = get32(h + 8);
	records = get32(h + 12);
	if (clen < 1 || clen > COMPRESSED_MAX || ulen < RECORD_HEADER_BYTES ||
	    ulen > FRAME_MAX_BYTES || records < 1 || records > ulen / RECORD_HEADER_BYTES)
		return bad(r, "bad frame lengths");
	n = read_full(r->fd, r->comp, clen);
	if (n < 0) {
		fmt_err(r->err, r->errlen, "read: %s", strerror((int)-n));
		return (int)n;
	}
	if ((size_t)n < clen)
		return bad(r, "truncated: %zd of %u payload bytes", n, clen);
	if (XXH3_64bits_withSeed(r->comp, clen, r->frames) != get64(h + 16))
		return bad(r, "payload checksum mismatch");
	got = ZSTD_decompressDCtx(r->dc, r->raw, FRAME_MAX_BYTES, r->comp, clen);
	if (ZSTD_isError(got) || got != ulen)
		return bad(r, "payload does not decompress to its %u bytes", ulen);
	r->raw_len = ulen;
	r->raw_pos = 0;
	r->records_left = records;
	r->frames++;
	r->bytes += sizeof(h) + clen;
	r->payload_bytes += ulen;
	return 1;
}

/* The next record: 1, 0 at the end of the file, or < 0. */
static int read_record(struct reader *r, enum record_type *type, const unsigned char **body,
                       size_t *len)
{
	int rc;

	if (r->records_left == 0) {
		if (r->raw_pos != r->raw_len)
			return bad(r, "bytes after the last record of the frame");
		rc = read_frame(r);
		if (rc <= 0)
			return rc;
	}
	if (r->raw_len - r->raw_pos < RECORD_HEADER_BYTES)
		return bad(r, "fewer records than the frame header says");
	*type = (enum record_type)r->raw[r->raw_pos];
	*len = get32(r->raw + r->raw_pos + 1);
	r->raw_pos += RECORD_HEADER_BYTES;
	if (*len > RECORD_MAX_BYTES || *len > r->raw_len - r->raw_pos)
		return bad(r, "a record longer than its frame");
	*body = r->raw + r->raw_pos;
	r->raw_pos += *len;
	r->records_left--;
	if (r->records_left == 0 && r->raw_pos != r->raw_len)
		return bad(r, "bytes after the last record of the frame");
	return 1;
}

/* A record body being parsed: any read past its end marks it bad. */
struct cursor {
	const unsigned char *p;
	size_t left;
	bool bad;
};

static const unsigned char *c_take(struct cursor *c, size_t n)
{
	const unsigned char *p = c->p;

	if (c->bad || n > c->left) {
		c->bad = true;
		return NULL;
	}
	c->p += n;
	c->left -= n;
	return p;
}

static uint8_t c_u8(struct cursor *c)
{
	const unsigned char *p = c_take(c, 1);
	return p ? p[0] : 0;
}

static uint16_t c_u16(struct cursor *c)
{
	const unsigned char *p = c_take(c, 2);
	return p ? get16(p) : 0;
}

static uint32_t c_u32(struct cursor *c)
{
	const unsigned char *p = c_take(c, 4);
	return p ? get32(p) : 0;
}

static uint64_t c_u64(struct cursor *c)
{
	const unsigned char *p = c_take(c, 8);
	return p ? get64(p) : 0;
}

/* A time in [0, year 9999]: no arithmetic on it can overflow. */
static int64_t c_time(struct cursor *c)
{
	uint64_t v = c_u64(c);

	if (v > (uint64_t)TIME_MAX_MS)
		c->bad = true;
	return (int64_t)v;
}

/* A u8-length string into dst (dst_bytes with its NUL). */
static void c_str8(struct cursor *c, char *dst, size_t dst_bytes)
{
	size_t n = c_u8(c);
	const unsigned char *p = c_take(c, n);

	if (!p || n >= dst_bytes) {
		c->bad = true;
		dst[0] = '\0';
		return;
	}
	memcpy(dst, p, n);
	dst[n] = '\0';
}

static bool hex_id(const char *id)
{
	for (int k = 0; k < SESSION_ID_CHARS; k++)
		if (!((id[k] >= '0' && id[k] <= '9') || (id[k] >= 'a' && id[k] <= 'f')))
			return false;
	return true;
}

static bool parse_session(struct cursor *c, struct session_saved *v)
{
	const unsigned char *p = c_take(c, SESSION_ID_CHARS);
	uint64_t bits;

	if (p)
		memcpy(v->id, p, SESSION_ID_CHARS);
	v->id[SESSION_ID_CHARS] = '\0';
	v->index = c_u32(c);
	v->started_at_ms = c_time(c);
	v->last_seen_ms = c_time(c);
	v->events = c_u32(c);
	v->page_views = c_u32(c);
	v->conversions = c_u32(c);
	v->has_revenue = c_u8(c) != 0;
	bits = c_u64(c);
	memcpy(&v->revenue, &bits, sizeof(bits));
	p = c_take(c, sizeof(v->currency));
	if (p)
		memcpy(v->currency, p, sizeof(v->currency));
	v->channel = c_u8(c);
	if (c_u8(c) != SF__COUNT)
		return false;
	for (int f = 0; f < SF__COUNT && !c->bad; f++) {
		v->str_len[f] = c_u16(c);
		v->str[f] = (const char *)c_take(c, v->str_len[f]);
		if (v->str_len[f] > SESSION_STRING_MAX)
			return false;
		if (v->str_len[f] == 0)
			v->str[f] = NULL;
	}
	return !c->bad && hex_id(v->id) && v->index >= 1 && v->index <= v->sessions &&
	       v->events >= 1 && v->page_views <= v->events && v->conversions <= v->events &&
	       v->last_seen_ms >= v->started_at_ms && isfinite(v->revenue) &&
	       v->currency[sizeof(v->currency) - 1] == '\0' && v->channel < CHANNEL__COUNT;
}

static int parse_visitor(struct reader *r, struct cursor *c, struct session_saved *v)
{
	uint8_t has;

	memset(v, 0, sizeof(*v));
	v->visitor_hash = c_u64(c);
	v->sessions = c_u32(c);
	has = c_u8(c);
	v->has_session = has == 1;
	if (has > 1 || (v->has_session && !parse_session(c, v)) || c->bad || c->left != 0)
		return bad(r, "bad visitor record");
	return 0;
}

static int parse_path(struct reader *r, struct cursor *c, struct attribution_saved_visitor *v)
{
	const unsigned char *p;

	v->visitor_hash = c_u64(c);
	v->user_hash = c_u64(c);
	v->last_seen_ms = c_time(c);
	v->visitor_id_len = c_u8(c);
	p = c_take(c, v->visitor_id_len);
	if (!p || v->visitor_id_len >= sizeof(v->visitor_id))
		return bad(r, "bad path record");
	memcpy(v->visitor_id, p, v->visitor_id_len);
	v->visitor_id[v->visitor_id_len] = '\0';
	v->count = c_u8(c);
	if (v->count > ATTRIBUTION_MAX_TOUCHPOINTS)
		return bad(r, "bad path record: %zu touchpoints", v->count);
	for (size_t k = 0; k < v->count && !c->bad; k++) {
		struct attribution_touchpoint *tp = &v->touchpoints[k];
		tp->started_at_ms = c_time(c);
		tp->channel = c_u8(c);
		c_str8(c, tp->session_id, sizeof(tp->session_id));
		c_str8(c, tp->source, sizeof(tp->source));
		c_str8(c, tp->medium, sizeof(tp->medium));
		c_str8(c, tp->campaign, sizeof(tp->campaign));
		c_str8(c, tp->click_id_type, sizeof(tp->click_id_type));
		c_str8(c, tp->affiliate_id, sizeof(tp->affiliate_id));
		if (tp->channel >= CHANNEL__COUNT)
			c->bad = true;
	}
	if (c->bad || c->left != 0)
		return bad(r, "bad path record");
	return 0;
}

static int parse_user(struct reader *r, struct cursor *c, struct attribution_saved_user *u)
{
	u->user_hash = c_u64(c);
	u->last_seen_ms = c_time(c);
	u->devices = c_u8(c);
	if (u->user_hash == 0 || u->devices > ATTRIBUTION_MAX_DEVICES)
		return bad(r, "bad user record");
	for (size_t k = 0; k < u->devices; k++) {
		u->device[k].visitor_hash = c_u64(c);
		u->device[k].linked_ms = c_time(c);
	}
	if (c->bad || c->left != 0)
		return bad(r, "bad user record");
	return 0;
}

/* ---- loading ---- */

struct loader {
	struct reader r;
	const struct state_file_shard *shards;
	size_t count;
	int64_t now_ms;
	bool apply;
	struct state_file_counts read; /* what the records held so far */
	struct session_saved visitor;
	struct attribution_saved_visitor *path;   /* owned */
	struct attribution_saved_user user;       /* scratch */
	struct attribution_saved_user user_share; /* one shard's part of it */
};

static int load_visitor(struct loader *L, struct cursor *c)
{
	int rc = parse_visitor(&L->r, c, &L->visitor);

	if (rc)
		return rc;
	L->read.visitors++;
	L->read.sessions += L->visitor.has_session;
	if (L->apply) {
		size_t s = pipeline_shard_of_hash(L->visitor.visitor_hash, L->count);
		session_restore(L->shards[s].sessions, &L->visitor, L->now_ms);
	}
	return 0;
}

static int load_dedup(struct loader *L, struct cursor *c)
{
	uint32_t n = c_u32(c);

	if (n < 1 || n > DEDUP_RUN_MAX || c->left != (size_t)n * DEDUP_ENTRY_BYTES)
		return bad(&L->r, "bad dedup record");
	for (uint32_t k = 0; k < n; k++) {
		uint16_t shard = c_u16(c);
		uint64_t fp = c_u64(c);
		int64_t seen_ms = c_time(c);

		if (c->bad || shard >= L->r.shards)
			return bad(&L->r, "bad dedup entry");
		L->read.dedup_entries++;
		if (!L->apply)
			continue;
		/* Same layout: back to its shard. Another: fingerprints do not say whose they
		 * are, so every shard gets them all. */
		if (L->r.shards == L->count) {
			dedup_restore(L->shards[shard].dedup, fp, seen_ms, L->now_ms);
		} else {
			for (size_t s = 0; s < L->count; s++)
				dedup_restore(L->shards[s].dedup, fp, seen_ms, L->now_ms);
		}
	}
	return 0;
}

static int load_path(struct loader *L, struct cursor *c)
{
	int rc = parse_path(&L->r, c, L->path);

	if (rc)
		return rc;
	L->read.paths++;
	L->read.touchpoints += L->path->count;
	if (L->apply) {
		size_t s = pipeline_shard_of_hash(L->path->visitor_hash, L->count);
		attribution_restore_visitor(L->shards[s].attribution, L->path, L->now_ms);
	}
	return 0;
}

/* A user goes to every shard that holds one of its devices, with those devices. */
static int load_user(struct loader *L, struct cursor *c)
{
	const struct attribution_saved_user *u = &L->user;
	struct attribution_saved_user *part = &L->user_share;
	int rc = parse_user(&L->r, c, &L->user);

	if (rc)
		return rc;
	L->read.users++;
	if (!L->apply)
		return 0;
	for (size_t s = 0; s < L->count; s++) {
		part->user_hash = u->user_hash;
		part->last_seen_ms = u->last_seen_ms;
		part->devices = 0;
		for (size_t k = 0; k < u->devices; k++)
			if (pipeline_shard_of_hash(u->device[k].visitor_hash, L->count) == s)
				part->device[part->devices++] = u->device[k];
		if (part->devices > 0)
			attribution_restore_user(L->shards[s].attribution, part, L->now_ms);
	}
	return 0;
}

static int load_end(struct loader *L, struct cursor *c)
{
	const struct state_file_counts *n = &L->read;
	uint64_t v[7];

	for (int k = 0; k < 7; k++)
		v[k] = c_u64(c);
	if (c->bad || c->left != 0)
		return bad(&L->r, "bad end record");
	if (v[0] != n->visitors || v[1] != n->sessions || v[2] != n->dedup_entries ||
	    v[3] != n->paths || v[4] != n->touchpoints || v[5] != n->users)
		return bad(&L->r, "the end record's counts disagree with the records read");
	if (v[6] != L->r.frames || L->r.records_left != 0)
		return bad(&L->r, "the end record is not the last record of the last frame");
	return 0;
}

/* One pass over the file from its start: checks it (apply false) or restores it. */
static int load_pass(struct loader *L)
{
	enum record_type type = 0, last = 0;
	const unsigned char *body = NULL;
	size_t len = 0;
	bool ended = false;
	int rc;

	if (lseek(L->r.fd, 0, SEEK_SET) != 0) {
		rc = -errno;
		fmt_err(L->r.err, L->r.errlen, "seek: %s", strerror(-rc));
		return rc;
	}
	L->r.frames = 0;
	L->r.payload_bytes = 0;
	L->r.records_left = 0;
	L->r.raw_len = L->r.raw_pos = 0;
	memset(&L->read, 0, sizeof(L->read));
	if ((rc = read_header(&L->r)) < 0)
		return rc;
	while ((rc = read_record(&L->r, &type, &body, &len)) > 0) {
		struct cursor c = {body, len, false};

		if (ended)
			return bad(&L->r, "records after the end record");
		if (type < REC_VISITOR || type > REC_END || type < last)
			return bad(&L->r, "record type %d out of place", (int)type);
		last = type;
		switch (type) {
		case REC_VISITOR:
			rc = load_visitor(L, &c);
			break;
		case REC_DEDUP:
			rc = load_dedup(L, &c);
			break;
		case REC_PATH:
			rc = load_path(L, &c);
			break;
		case REC_USER:
			rc = load_user(L, &c);
			break;
		case REC_END:
		default:
			rc = load_end(L, &c);
			ended = true;
			break;
		}
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return rc;
	if (!ended)
		return bad(&L->r, "truncated: no end record");
	return 0;
}

static void sum_ended(const struct state_file_shard *shards, size_t count,
                      uint64_t ended[SESSION_END__COUNT])
{
	memset(ended, 0, sizeof(uint64_t) * SESSION_END__COUNT);
	for (size_t s = 0; s < count; s++) {
		struct session_stats st;
		session_get_stats(shards[s].sessions, &st);
		for (int k = 0; k < SESSION_END__COUNT; k++)
			ended[k] += st.ended[k];
	}
}

/* What the tables hold after the restore, and what ended at load (before: the sessions
 * ended before it). */
static void report_restored(const struct state_file_shard *shards, size_t count, int64_t now_ms,
                            const uint64_t before[SESSION_END__COUNT],
                            struct state_file_report *report)
{
	uint64_t after[SESSION_END__COUNT];
	struct state_file_counts *c = &report->restored;

	for (size_t s = 0; s < count; s++) {
		struct session_stats st;
		struct dedup_stats ds;
		struct attribution_stats as;

		session_get_stats(shards[s].sessions, &st);
		dedup_get_stats(shards[s].dedup, now_ms, &ds);
		attribution_get_stats(shards[s].attribution, &as);
		c->visitors += st.visitors;
		c->sessions += st.restored;
		c->dedup_entries += ds.entries;
		c->paths += as.visitors;
		c->touchpoints += as.touchpoints;
		c->users += as.users;
		session_tick(shards[s].sessions, now_ms); /* what ran out while clickd was down */
		session_get_stats(shards[s].sessions, &st);
		report->sessions_resumed += st.open;
	}
	sum_ended(shards, count, after);
	for (int k = 0; k < SESSION_END__COUNT; k++)
		report->sessions_ended[k] = after[k] - before[k];
}

/* Renames a file that cannot be used to <path>.bad, adding what happened to err. */
static void move_aside(const char *path, char *err, size_t errlen)
{
	char bad_path[4096];
	size_t used = err ? strlen(err) : 0;

	if ((size_t)snprintf(bad_path, sizeof(bad_path), "%s.bad", path) >= sizeof(bad_path) ||
	    rename(path, bad_path) != 0) {
		if (err && used < errlen)
			snprintf(err + used, errlen - used, "; could not move it aside: %s",
			         strerror(errno));
		return;
	}
	sync_dir(path);
	if (err && used < errlen)
		snprintf(err + used, errlen - used, "; moved to %s", bad_path);
}

int state_file_load(const char *path, const struct state_file_shard *shards, size_t count,
                    int64_t now_ms, struct state_file_report *report, char *err, size_t errlen)
{
	struct loader L = {.r = {.fd = -1, .err = err, .errlen = errlen},
	                   .shards = shards,
	                   .count = count,
	                   .now_ms = now_ms};
	uint64_t ended_before[SESSION_END__COUNT];
	char tmp[4096];
	int rc;

	memset(report, 0, sizeof(*report));
	if (err && errlen)
		err[0] = '\0';
	if (count < 1) {
		fmt_err(err, errlen, "no shards");
		return -EINVAL;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) < sizeof(tmp))
		unlink(tmp); /* a save that a crash cut short: never renamed, never valid */
	L.r.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (L.r.fd < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			return rc;
		fmt_err(err, errlen, "cannot open: %s", strerror(-rc));
		goto fail;
	}
	L.r.dc = ZSTD_createDCtx();
	L.r.comp = malloc(COMPRESSED_MAX);
	L.r.raw = malloc(FRAME_MAX_BYTES);
	L.path = malloc(sizeof(*L.path));
	if (!L.r.dc || !L.r.comp || !L.r.raw || !L.path) {
		fmt_err(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out; /* not the file's fault: it stays */
	}
	rc = load_pass(&L);
	if (rc < 0)
		goto fail;
	report->file = L.read;
	report->file_bytes = L.r.bytes;
	report->payload_bytes = L.r.payload_bytes;
	report->shards = L.r.shards;
	report->saved_at_ms = L.r.saved_at_ms;
	L.apply = true;
	sum_ended(shards, count, ended_before);
	rc = load_pass(&L);
	report_restored(shards, count, now_ms, ended_before, report);
	if (rc < 0)
		goto fail; /* the disk failed between the passes: what was restored stays */
	close(L.r.fd);
	L.r.fd = -1;
	if (unlink(path) != 0 || sync_dir(path) != 0)
		fmt_err(err, errlen, "restored, but could not remove the file: %s",
		        strerror(errno));
	goto out;
fail:
	if (L.r.fd >= 0) {
		close(L.r.fd);
		L.r.fd = -1;
	}
	move_aside(path, err, errlen);
out:
	if (L.r.fd >= 0)
		close(L.r.fd);
	ZSTD_freeDCtx(L.r.dc);
	free(L.r.comp);
	free(L.r.raw);
	free(L.path);
	return rc;
}
