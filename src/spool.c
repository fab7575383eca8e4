/*
 * spool.c - the disk spool (see spool.h for the format and the promises).
 *
 * Called from one thread (the Kafka sink's owner); pure: the time comes from the caller.
 *
 * State, all owned by the spool:
 *  - segs[]: the segment files, oldest first. Only the last one may be unsealed (the one
 *    being written, whose fd is wr_fd); the others are only read. A segment leaves the
 *    array (and the disk) from the front only, once the reader is past it and none of its
 *    records is unacked, so that a rewind after a nack always finds its segment.
 *  - the writer: the batch of encoded entries (uncompressed payload of the next frame) and
 *    a buffer for the frame (header + compressed payload) it becomes.
 *  - the reader: a position (rd_seq, rd_off: the next frame to load), the frame loaded
 *    (decompressed in rd_buf, entries checked once at load) and the next entry in it.
 *    rd_seq may name a deleted segment: the reader goes on with the first one after it.
 *  - tokens: every record the reader returns for the first time gets the next token
 *    (1, 2, ...), and a slot in a ring of max_unacked slots (token % max_unacked) with its
 *    position (segment, frame offset, index in the frame) and state. Tokens below tok_base
 *    are all acked; tok_high is one past the newest ever returned; tok_next is the token the
 *    record under the reader gets (below tok_high only while reading again after a
 *    rewind). Reading new records stops while tok_high - tok_base == max_unacked, so live
 *    tokens never share a slot.
 *
 * Corruption is never trusted for a length: a header is used only once its own hash holds,
 * a payload only once its hash holds, decompresses to exactly the declared length, and its
 * entries fill it exactly.
 */
#include "clickd/spool.h"

#include "clickd/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define SEG_PREFIX     "spool-"
#define SEG_SUFFIX     ".seg"
#define SEG_HEX_DIGITS 16
#define SEG_NAME_BYTES 32
/* Resynchronisation reads the file in chunks of this size looking for the magic. */
#define SCAN_CHUNK_BYTES     (64 * 1024)
#define COMPRESSED_MAX_BYTES ZSTD_COMPRESSBOUND(SPOOL_FRAME_MAX_BYTES)
#define TIME_UNKNOWN         INT64_MIN
#define OFFSET_NONE          UINT64_MAX

enum slot_state { SLOT_FREE = 0, SLOT_IN_FLIGHT, SLOT_ACKED, SLOT_NACKED };

/* Where a record is: what a rewind needs to read it again. */
struct spool_pos {
	uint64_t seq;
	uint64_t frame_off;
	uint32_t index;
};

/* A record in flight or settled, by token; flat so that it takes 24 bytes (spool.h). */
struct spool_slot {
	uint64_t seq;
	uint64_t frame_off;
	uint32_t index;
	uint8_t state; /* enum slot_state */
};
_Static_assert(sizeof(struct spool_slot) == 24, "spool.h documents 24 bytes per slot");

struct spool_segment {
	uint64_t seq;
	uint64_t size;    /* bytes of the file the spool reads and counts */
	uint64_t unacked; /* records of it returned by spool_next and not acked since open */
	bool sealed;      /* no more frames: every segment but the one being written */
};

struct frame_header {
	uint32_t compressed_len;
	uint32_t uncompressed_len;
	uint32_t record_count;
	uint64_t payload_hash;
};

enum frame_check { FRAME_OK = 0, FRAME_BAD_HEADER, FRAME_BAD_PAYLOAD };

struct spool {
	char *dir; /* owned */
	int dir_fd;
	uint64_t max_bytes, segment_bytes;
	size_t batch_bytes;
	enum spool_fsync fsync;
	int64_t fsync_interval_ms, linger_ms;
	uint32_t window; /* max_unacked */

	struct spool_segment *segs; /* owned, oldest first */
	size_t nsegs, segs_cap;
	uint64_t next_seq; /* 0: the sequence space is used up */
	uint64_t disk_bytes;

	/* writer */
	int wr_fd;            /* the last segment's, while it is not sealed; else -1 */
	bool wr_dirty;        /* frames written to wr_fd since its last sync */
	bool dir_dirty;       /* a segment created since the directory's last sync */
	unsigned char *batch; /* owned: entries of the next frame */
	size_t batch_len, batch_cap;
	uint32_t batch_records;
	int64_t batch_since_ms; /* poll clock when the batch was first seen; or TIME_UNKNOWN */
	int64_t last_sync_ms;
	/* Records (counted as records_appended counts them) whose frame was written, and
	 * whose frame was written and synced: spool_durable. */
	uint64_t records_written, records_synced;
	unsigned char *frame; /* owned: header + compressed payload being written */
	size_t frame_cap;
	ZSTD_CCtx *zc;

	/* reader */
	uint64_t rd_seq, rd_off;
	int rd_fd; /* open on segment rd_fd_seq, or -1 */
	uint64_t rd_fd_seq;
	unsigned char *rd_comp; /* owned: a frame's compressed payload */
	size_t rd_comp_cap;
	unsigned char *rd_buf; /* owned: the loaded frame, decompressed */
	size_t rd_buf_cap;
	bool rd_have; /* rd_buf holds the frame at rd_frame_off of rd_seq */
	uint64_t rd_frame_off;
	uint32_t rd_count, rd_index; /* entries in the frame, next entry */
	size_t rd_pos;               /* byte offset of entry rd_index */
	uint32_t rd_skip; /* after a rewind: entries to pass over in the frame at rd_off */
	/* The last corrupt region reported: reading it again after a rewind is not news. */
	uint64_t bad_seq, bad_off;
	bool bad_seen;
	unsigned char *scan; /* owned: SCAN_CHUNK_BYTES */
	ZSTD_DCtx *dc;

	/* tokens */
	struct spool_slot *slots; /* owned: window slots */
	uint64_t tok_base, tok_next, tok_high;
	uint64_t in_flight, nacked;
	bool rewind_pending;

	struct spool_stats st;
};

/* ---- little-endian fields ---- */

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

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- frames ---- */

/* Bytes a frame of n uncompressed payload bytes takes on disk at most. */
static uint64_t frame_bound(size_t n)
{
	return SPOOL_FRAME_HEADER_BYTES + (uint64_t)ZSTD_compressBound(n);
}

static void header_encode(unsigned char *h, const struct frame_header *fh)
{
	put32(h, SPOOL_FRAME_MAGIC);
	put16(h + 4, SPOOL_FRAME_VERSION);
	put16(h + 6, 0);
	put32(h + 8, fh->compressed_len);
	put32(h + 12, fh->uncompressed_len);
	put32(h + 16, fh->record_count);
	put32(h + 20, 0);
	put64(h + 24, fh->payload_hash);
	put64(h + 32, XXH3_64bits(h, 32));
}

/* Decodes and checks a header on its own (not yet against the file). */
static bool header_decode(const unsigned char *h, struct frame_header *fh)
{
	if (get32(h) != SPOOL_FRAME_MAGIC || get16(h + 4) != SPOOL_FRAME_VERSION ||
	    get16(h + 6) != 0 || get32(h + 20) != 0 || get64(h + 32) != XXH3_64bits(h, 32))
		return false;
	fh->compressed_len = get32(h + 8);
	fh->uncompressed_len = get32(h + 12);
	fh->record_count = get32(h + 16);
	fh->payload_hash = get64(h + 24);
	return fh->record_count >= 1 && fh->uncompressed_len <= SPOOL_FRAME_MAX_BYTES &&
	       fh->uncompressed_len / SPOOL_ENTRY_HEADER_BYTES >= fh->record_count &&
	       fh->compressed_len >= 1 && fh->compressed_len <= COMPRESSED_MAX_BYTES;
}

/* True when buf[len] is exactly count well-formed entries. */
static bool entries_check(const unsigned char *buf, size_t len, uint32_t count)
{
	size_t pos = 0;

	for (uint32_t i = 0; i < count; i++) {
		size_t key_len, record_len;

		if (len - pos < SPOOL_ENTRY_HEADER_BYTES)
			return false;
		key_len = get16(buf + pos + 2);
		record_len = get32(buf + pos + 4);
		if (buf[pos] >= SINK_STREAM_COUNT || buf[pos + 1] != 0 ||
		    key_len > SPOOL_KEY_MAX_BYTES || record_len > SPOOL_RECORD_MAX_BYTES)
			return false;
		pos += SPOOL_ENTRY_HEADER_BYTES;
		if (len - pos < key_len + record_len)
			return false;
		pos += key_len + record_len;
	}
	return pos == len;
}

/* ---- files ---- */

static void segment_name(char *buf, uint64_t seq)
{
	snprintf(buf, SEG_NAME_BYTES, SEG_PREFIX "%016" PRIx64 SEG_SUFFIX, seq);
}

/* Parses `spool-<16 lowercase hex>.seg`; anything else is not a segment. */
static bool segment_parse(const char *name, uint64_t *seq)
{
	size_t plen = strlen(SEG_PREFIX);
	uint64_t v = 0;

	if (strlen(name) != plen + SEG_HEX_DIGITS + strlen(SEG_SUFFIX) ||
	    strncmp(name, SEG_PREFIX, plen) != 0 ||
	    strcmp(name + plen + SEG_HEX_DIGITS, SEG_SUFFIX) != 0)
		return false;
	for (size_t i = plen; i < plen + SEG_HEX_DIGITS; i++) {
		char c = name[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*seq = v;
	return true;
}

/* Reads len bytes at off; returns the count read (short at the end of the file) or -errno. */
static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

static int grow(unsigned char **buf, size_t *cap, size_t need)
{
	unsigned char *p;

	if (need <= *cap)
		return 0;
	p = realloc(*buf, need);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = need;
	return 0;
}

/*
 * Checks the frame at off of fd (the segment's readable end at end): header, lengths
 * against end, payload hash. Leaves the payload in rd_comp. Returns FRAME_OK,
 * FRAME_BAD_HEADER (no trustworthy frame starts here), FRAME_BAD_PAYLOAD (the header holds,
 * so the frame's length is known, but the payload is corrupt) or -errno.
 */
static int frame_verify(struct spool *s, int fd, uint64_t off, uint64_t end,
                        struct frame_header *fh)
{
	unsigned char h[SPOOL_FRAME_HEADER_BYTES];
	ssize_t n;
	int rc;

	if (off > end || end - off < SPOOL_FRAME_HEADER_BYTES)
		return FRAME_BAD_HEADER;
	n = pread_full(fd, h, sizeof(h), off);
	if (n < 0)
		return (int)n;
	if ((size_t)n < sizeof(h) || !header_decode(h, fh))
		return FRAME_BAD_HEADER;
	if (fh->compressed_len > end - off - SPOOL_FRAME_HEADER_BYTES)
		return FRAME_BAD_HEADER;
	rc = grow(&s->rd_comp, &s->rd_comp_cap, fh->compressed_len);
	if (rc)
		return rc;
	n = pread_full(fd, s->rd_comp, fh->compressed_len, off + SPOOL_FRAME_HEADER_BYTES);
	if (n < 0)
		return (int)n;
	if ((size_t)n < fh->compressed_len)
		return FRAME_BAD_HEADER; /* the file is shorter than we were told */
	if (XXH3_64bits(s->rd_comp, fh->compressed_len) != fh->payload_hash)
		return FRAME_BAD_PAYLOAD;
	return FRAME_OK;
}

static uint64_t frame_end(uint64_t off, const struct frame_header *fh)
{
	return off + SPOOL_FRAME_HEADER_BYTES + fh->compressed_len;
}

/* Finds the first offset in [from, end) where a valid frame (header and payload) starts.
 * Sets *found (OFFSET_NONE: none). Returns 0 or -errno. */
static int frame_find(struct spool *s, int fd, uint64_t from, uint64_t end, uint64_t *found)
{
	unsigned char magic[4];
	uint64_t pos = from;

	put32(magic, SPOOL_FRAME_MAGIC);
	*found = OFFSET_NONE;
	while (pos < end && end - pos >= SPOOL_FRAME_HEADER_BYTES) {
		size_t want = end - pos < SCAN_CHUNK_BYTES ? (size_t)(end - pos) : SCAN_CHUNK_BYTES;
		ssize_t n = pread_full(fd, s->scan, want, pos);
		const unsigned char *p;
		size_t at = 0;

		if (n < 0)
			return (int)n;
		if (n < (ssize_t)sizeof(magic))
			return 0;
		while ((p = memmem(s->scan + at, (size_t)n - at, magic, sizeof(magic))) != NULL) {
			struct frame_header fh;
			uint64_t cand = pos + (uint64_t)(p - s->scan);
			int rc = frame_verify(s, fd, cand, end, &fh);

			if (rc < 0)
				return rc;
			if (rc == FRAME_OK) {
				*found = cand;
				return 0;
			}
			at = (size_t)(p - s->scan) + 1;
		}
		if ((size_t)n < want)
			return 0; /* the file ended early */
		/* The next chunk overlaps by 3 bytes: a magic across the boundary is found. */
		pos += (uint64_t)n - (sizeof(magic) - 1);
	}
	return 0;
}

/* mkdir -p. Returns 0 or -errno. */
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

/* ---- segments ---- */

/* Index of the first segment whose sequence is >= seq (nsegs: none). */
static size_t segment_lower_bound(const struct spool *s, uint64_t seq)
{
	size_t lo = 0, hi = s->nsegs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->segs[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct spool_segment *segment_find(struct spool *s, uint64_t seq)
{
	size_t i = segment_lower_bound(s, seq);

	return i < s->nsegs && s->segs[i].seq == seq ? &s->segs[i] : NULL;
}

static int segment_push(struct spool *s, uint64_t seq, uint64_t size, bool sealed)
{
	if (s->nsegs == s->segs_cap) {
		size_t cap = s->segs_cap ? 2 * s->segs_cap : 16;
		struct spool_segment *p = realloc(s->segs, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->segs = p;
		s->segs_cap = cap;
	}
	s->segs[s->nsegs++] = (struct spool_segment){.seq = seq, .size = size, .sealed = sealed};
	return 0;
}

static void reader_close_fd(struct spool *s)
{
	if (s->rd_fd >= 0)
		close(s->rd_fd);
	s->rd_fd = -1;
}

/* Removes segment i from the disk and the array. */
static void segment_delete(struct spool *s, size_t i)
{
	struct spool_segment *seg = &s->segs[i];
	char name[SEG_NAME_BYTES];

	if (s->rd_fd >= 0 && s->rd_fd_seq == seg->seq)
		reader_close_fd(s);
	if (!seg->sealed && s->wr_fd >= 0) {
		close(s->wr_fd);
		s->wr_fd = -1;
		s->wr_dirty = false;
	}
	segment_name(name, seg->seq);
	/* A file that stays (unlink failed) is read again at the next open: duplicates, not
	 * loss. */
	if (unlinkat(s->dir_fd, name, 0) != 0 && errno != ENOENT)
		log_error("spool", "cannot delete file=%s/%s err=\"%s\"", s->dir, name,
		          strerror(errno));
	s->disk_bytes -= seg->size;
	s->st.segments_deleted++;
	memmove(seg, seg + 1, (s->nsegs - i - 1) * sizeof(*seg));
	s->nsegs--;
}

/* True when the reader has nothing left to read in segment i. */
static bool reader_done_with(const struct spool *s, size_t i)
{
	size_t r = segment_lower_bound(s, s->rd_seq);
	const struct spool_segment *seg = &s->segs[i];
	uint64_t off;

	if (r != i)
		return r > i;
	off = seg->seq == s->rd_seq ? s->rd_off : 0;
	return off >= seg->size && !(s->rd_have && s->rd_index < s->rd_count);
}

/* Deletes the oldest segments while they are read and acked to the last record. The one
 * being written goes too when the whole spool is delivered and the batch is empty, so a
 * drained spool takes no space (the next frame starts a new segment). */
static void segments_collect(struct spool *s)
{
	while (s->nsegs > 0) {
		const struct spool_segment *seg = &s->segs[0];

		if (seg->unacked > 0 || !reader_done_with(s, 0))
			return;
		if (!seg->sealed && s->batch_records > 0)
			return;
		segment_delete(s, 0);
	}
}

/* ---- writer ---- */

static int dir_sync(struct spool *s)
{
	if (!s->dir_dirty)
		return 0;
	if (fsync(s->dir_fd) != 0)
		return -errno;
	s->dir_dirty = false;
	return 0;
}

/* fdatasync of the segment being written, and of the directory after a new segment. */
static int writer_sync(struct spool *s)
{
	int rc;

	if (s->wr_fd >= 0 && s->wr_dirty) {
		if (fdatasync(s->wr_fd) != 0) {
			rc = -errno;
			log_error("spool", "fdatasync failed dir=%s err=\"%s\"", s->dir,
			          strerror(-rc));
			return rc;
		}
		s->wr_dirty = false;
		s->st.fsyncs++;
	}
	rc = dir_sync(s);
	if (rc)
		log_error("spool", "directory fsync failed dir=%s err=\"%s\"", s->dir,
		          strerror(-rc));
	else
		s->records_synced = s->records_written;
	return rc;
}

/* Seals the segment being written: synced (unless fsync=never) and closed. A failed sync
 * is logged (its frames were written; they may not survive a machine crash). */
static void writer_seal(struct spool *s)
{
	if (s->wr_fd < 0)
		return;
	if (s->fsync != SPOOL_FSYNC_NEVER)
		writer_sync(s);
	close(s->wr_fd);
	s->wr_fd = -1;
	s->wr_dirty = false;
	s->segs[s->nsegs - 1].sealed = true;
}

static int writer_open_segment(struct spool *s)
{
	char name[SEG_NAME_BYTES];
	int fd, rc;

	if (s->next_seq == 0)
		return -EOVERFLOW;
	segment_name(name, s->next_seq);
	fd = openat(s->dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	rc = segment_push(s, s->next_seq, 0, false);
	if (rc) {
		close(fd);
		unlinkat(s->dir_fd, name, 0);
		return rc;
	}
	s->next_seq++;
	s->wr_fd = fd;
	s->dir_dirty = true;
	return 0;
}

/* Writes a frame to the segment being written (rotating first if it would pass
 * segment_bytes). On failure, cuts what was written of it; if even that fails, seals the
 * segment so that its torn tail is never followed by another frame. */
static int writer_put_frame(struct spool *s, const unsigned char *frame, size_t len)
{
	struct spool_segment *seg;
	int rc;

	if (s->wr_fd >= 0) {
		seg = &s->segs[s->nsegs - 1];
		if (seg->size > 0 && seg->size + len > s->segment_bytes)
			writer_seal(s);
	}
	if (s->wr_fd < 0) {
		rc = writer_open_segment(s);
		if (rc)
			return rc;
	}
	seg = &s->segs[s->nsegs - 1];
	rc = write_full(s->wr_fd, frame, len);
	if (rc) {
		if (ftruncate(s->wr_fd, (off_t)seg->size) != 0)
			writer_seal(s);
		return rc;
	}
	seg->size += len;
	s->disk_bytes += len;
	s->wr_dirty = true;
	s->st.frames_written++;
	return 0;
}

/* Writes the batch as one frame. Returns 0 or -errno (the batch is kept when the frame
 * could not be written; with fsync=per_frame, a failed sync is answered after the batch
 * was written). */
static int writer_write_batch(struct spool *s)
{
	struct frame_header fh;
	size_t csize;
	int rc;

	if (s->batch_records == 0)
		return 0;
	rc = grow(&s->frame, &s->frame_cap, (size_t)frame_bound(s->batch_len));
	if (rc)
		return rc;
	csize = ZSTD_compress2(s->zc, s->frame + SPOOL_FRAME_HEADER_BYTES,
	                       s->frame_cap - SPOOL_FRAME_HEADER_BYTES, s->batch, s->batch_len);
	if (ZSTD_isError(csize)) {
		log_error("spool", "zstd compression failed err=\"%s\"", ZSTD_getErrorName(csize));
		return -EIO;
	}
	fh.compressed_len = (uint32_t)csize;
	fh.uncompressed_len = (uint32_t)s->batch_len;
	fh.record_count = s->batch_records;
	fh.payload_hash = XXH3_64bits(s->frame + SPOOL_FRAME_HEADER_BYTES, csize);
	header_encode(s->frame, &fh);
	rc = writer_put_frame(s, s->frame, SPOOL_FRAME_HEADER_BYTES + csize);
	if (rc) {
		log_error("spool", "write failed dir=%s records=%" PRIu32 " err=\"%s\"", s->dir,
		          s->batch_records, strerror(-rc));
		return rc;
	}
	s->records_written += s->batch_records;
	s->batch_len = 0;
	s->batch_records = 0;
	s->batch_since_ms = TIME_UNKNOWN;
	if (s->fsync == SPOOL_FSYNC_PER_FRAME)
		return writer_sync(s);
	return 0;
}

static int sync_if_due(struct spool *s, int64_t now_ms)
{
	int rc;

	if (s->fsync != SPOOL_FSYNC_INTERVAL || (!s->wr_dirty && !s->dir_dirty))
		return 0;
	if (s->last_sync_ms != TIME_UNKNOWN && now_ms - s->last_sync_ms < s->fsync_interval_ms)
		return 0;
	rc = writer_sync(s);
	if (rc == 0)
		s->last_sync_ms = now_ms;
	return rc;
}

int spool_append(struct spool *s, enum sink_stream stream, const char *key, size_t key_len,
                 const char *record, size_t record_len)
{
	size_t entry = SPOOL_ENTRY_HEADER_BYTES + key_len + record_len;
	bool split;
	uint64_t need;
	unsigned char *p;
	int rc;

	if ((unsigned)stream >= SINK_STREAM_COUNT)
		return -EINVAL;
	if (key_len > SPOOL_KEY_MAX_BYTES || record_len > SPOOL_RECORD_MAX_BYTES)
		return -EMSGSIZE;
	split = s->batch_records > 0 && s->batch_len + entry > s->batch_bytes;
	need = s->disk_bytes + (split ? frame_bound(s->batch_len) + frame_bound(entry)
	                              : frame_bound(s->batch_len + entry));
	if (need > s->max_bytes) { /* the same test as spool_has_room */
		s->st.records_refused++;
		return -ENOSPC;
	}
	if (split) {
		rc = writer_write_batch(s);
		if (rc)
			return rc;
	}
	rc = grow(&s->batch, &s->batch_cap, s->batch_len + entry);
	if (rc)
		return rc;
	p = s->batch + s->batch_len;
	p[0] = (unsigned char)stream;
	p[1] = 0;
	put16(p + 2, (uint16_t)key_len);
	put32(p + 4, (uint32_t)record_len);
	if (key_len)
		memcpy(p + SPOOL_ENTRY_HEADER_BYTES, key, key_len);
	if (record_len)
		memcpy(p + SPOOL_ENTRY_HEADER_BYTES + key_len, record, record_len);
	s->batch_len += entry;
	s->batch_records++;
	s->st.records_appended++;
	return 0;
}

int spool_flush(struct spool *s, int64_t now_ms)
{
	int rc = writer_write_batch(s);

	if (rc)
		return rc;
	return sync_if_due(s, now_ms);
}

int spool_sync(struct spool *s, int64_t now_ms)
{
	int rc = writer_write_batch(s);

	if (rc || s->fsync == SPOOL_FSYNC_NEVER)
		return rc;
	rc = writer_sync(s);
	if (rc == 0)
		s->last_sync_ms = now_ms;
	return rc;
}

int spool_poll(struct spool *s, int64_t now_ms)
{
	int rc;

	if (s->batch_records > 0) {
		if (s->batch_since_ms == TIME_UNKNOWN)
			s->batch_since_ms = now_ms;
		else if (now_ms - s->batch_since_ms >= s->linger_ms) {
			rc = writer_write_batch(s);
			if (rc)
				return rc;
		}
	}
	return sync_if_due(s, now_ms);
}

/* ---- reader ---- */

static int reader_fd(struct spool *s, uint64_t seq)
{
	char name[SEG_NAME_BYTES];

	if (s->rd_fd >= 0 && s->rd_fd_seq == seq)
		return s->rd_fd;
	reader_close_fd(s);
	segment_name(name, seq);
	s->rd_fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (s->rd_fd < 0)
		return -errno;
	s->rd_fd_seq = seq;
	return s->rd_fd;
}

/* Counts and logs a corrupt region skipped by the reader, once. */
static void corrupt_skipped(struct spool *s, uint64_t seq, uint64_t off, uint64_t len,
                            const char *why)
{
	char name[SEG_NAME_BYTES];

	if (s->bad_seen && (seq < s->bad_seq || (seq == s->bad_seq && off <= s->bad_off)))
		return;
	s->bad_seen = true;
	s->bad_seq = seq;
	s->bad_off = off;
	segment_name(name, seq);
	s->st.corrupt_frames++;
	s->st.corrupt_bytes += len;
	log_warn("spool",
	         "skipped corrupt frame file=%s/%s offset=%" PRIu64 " bytes=%" PRIu64
	         " reason=\"%s\"",
	         s->dir, name, off, len, why);
}

/* Decompresses the verified frame (payload in rd_comp) into rd_buf and checks its
 * entries. Returns FRAME_OK, FRAME_BAD_PAYLOAD or -ENOMEM. */
static int reader_unpack(struct spool *s, const struct frame_header *fh)
{
	size_t n;

	if (grow(&s->rd_buf, &s->rd_buf_cap, fh->uncompressed_len) != 0)
		return -ENOMEM;
	n = ZSTD_decompressDCtx(s->dc, s->rd_buf, fh->uncompressed_len, s->rd_comp,
	                        fh->compressed_len);
	if (ZSTD_isError(n) || n != fh->uncompressed_len ||
	    !entries_check(s->rd_buf, n, fh->record_count))
		return FRAME_BAD_PAYLOAD;
	return FRAME_OK;
}

/* Passes over the first rd_skip entries of the frame just loaded (a rewind's target). */
static void reader_apply_skip(struct spool *s)
{
	while (s->rd_skip > 0 && s->rd_index < s->rd_count) {
		const unsigned char *p = s->rd_buf + s->rd_pos;
		s->rd_pos += SPOOL_ENTRY_HEADER_BYTES + get16(p + 2) + get32(p + 4);
		s->rd_index++;
		s->rd_skip--;
	}
	s->rd_skip = 0;
}

/* Loads the frame at rd_off of segment seg, or skips the corrupt bytes there. Returns 0
 * (loaded, or skipped: the caller loops) or -errno. */
static int reader_load_at(struct spool *s, struct spool_segment *seg)
{
	struct frame_header fh;
	uint64_t off = s->rd_off, next;
	int fd = reader_fd(s, seg->seq), rc;
	const char *why;

	if (fd == -ENOENT) { /* removed behind our back: nothing more to read there */
		corrupt_skipped(s, seg->seq, off, seg->size - off, "file missing");
		s->rd_off = seg->size;
		return 0;
	}
	if (fd < 0)
		return fd;
	rc = frame_verify(s, fd, off, seg->size, &fh);
	if (rc < 0)
		return rc;
	why = "payload checksum mismatch";
	if (rc == FRAME_OK) {
		rc = reader_unpack(s, &fh);
		if (rc < 0)
			return rc;
		why = "bad content";
	}
	s->rd_skip = rc == FRAME_OK ? s->rd_skip : 0;
	if (rc == FRAME_OK) {
		s->rd_have = true;
		s->rd_frame_off = off;
		s->rd_count = fh.record_count;
		s->rd_index = 0;
		s->rd_pos = 0;
		s->rd_off = frame_end(off, &fh);
		reader_apply_skip(s);
		return 0;
	}
	if (rc == FRAME_BAD_PAYLOAD) {
		/* The header holds, so its length does: skip exactly this frame. */
		s->rd_off = frame_end(off, &fh);
		corrupt_skipped(s, seg->seq, off, s->rd_off - off, why);
		return 0;
	}
	rc = frame_find(s, fd, off + 1, seg->size, &next);
	if (rc < 0)
		return rc;
	s->rd_off = next == OFFSET_NONE ? seg->size : next;
	corrupt_skipped(s, seg->seq, off, s->rd_off - off, "bad header");
	return 0;
}

/* Makes the reader hold a frame with entries left. Returns 0, -ENODATA (everything read)
 * or -errno. At the end of the data, writes the batch and goes on with it. */
static int reader_fill(struct spool *s)
{
	for (;;) {
		size_t i = segment_lower_bound(s, s->rd_seq);
		struct spool_segment *seg;
		int rc;

		if (s->rd_have && s->rd_index < s->rd_count)
			return 0;
		s->rd_have = false;
		if (i < s->nsegs && s->segs[i].seq != s->rd_seq) {
			s->rd_seq = s->segs[i].seq;
			s->rd_off = 0;
			s->rd_skip = 0;
		}
		if (i < s->nsegs && s->rd_off < s->segs[i].size) {
			seg = &s->segs[i];
			rc = reader_load_at(s, seg);
			if (rc)
				return rc;
			continue;
		}
		if (i + 1 < s->nsegs && s->segs[i].sealed) {
			s->rd_seq = s->segs[i + 1].seq;
			s->rd_off = 0;
			continue;
		}
		if (s->batch_records == 0)
			return -ENODATA;
		rc = writer_write_batch(s);
		if (rc)
			return rc;
	}
}

/* The next entry under the reader, and where it is. */
static int reader_next(struct spool *s, struct spool_record *out, struct spool_pos *pos)
{
	const unsigned char *p;
	int rc = reader_fill(s);

	if (rc)
		return rc;
	p = s->rd_buf + s->rd_pos;
	out->stream = (enum sink_stream)p[0];
	out->key_len = get16(p + 2);
	out->record_len = get32(p + 4);
	out->key = out->key_len ? (const char *)p + SPOOL_ENTRY_HEADER_BYTES : NULL;
	out->record = (const char *)p + SPOOL_ENTRY_HEADER_BYTES + out->key_len;
	pos->seq = s->rd_seq;
	pos->frame_off = s->rd_frame_off;
	pos->index = s->rd_index;
	s->rd_pos += SPOOL_ENTRY_HEADER_BYTES + out->key_len + out->record_len;
	s->rd_index++;
	return 0;
}

/* ---- tokens ---- */

static struct spool_slot *slot_of(const struct spool *s, uint64_t token)
{
	return &s->slots[token % s->window];
}

/* Moves tok_base past the acked tokens at its front, freeing their slots. */
static void advance_base(struct spool *s)
{
	while (s->tok_base < s->tok_high && slot_of(s, s->tok_base)->state == SLOT_ACKED) {
		slot_of(s, s->tok_base)->state = SLOT_FREE;
		s->tok_base++;
	}
}

/* Goes back to the oldest record not acked (a nacked one: nothing is in flight). */
static void rewind_to_base(struct spool *s)
{
	const struct spool_slot *sl = slot_of(s, s->tok_base);

	s->rd_seq = sl->seq;
	s->rd_off = sl->frame_off;
	s->rd_skip = sl->index;
	s->rd_have = false;
	s->tok_next = s->tok_base;
	s->rewind_pending = false;
}

/* The reader found the end before reading again every record up to tok_high: the files
 * changed under the spool (nothing it does itself). The nacked records it could not find
 * are given up, logged and counted as acked, so that their segments can go. */
static void abandon_reread(struct spool *s)
{
	uint64_t lost = 0;

	for (uint64_t t = s->tok_next > s->tok_base ? s->tok_next : s->tok_base; t < s->tok_high;
	     t++) {
		struct spool_slot *sl = slot_of(s, t);
		struct spool_segment *seg;

		if (sl->state != SLOT_NACKED)
			continue;
		sl->state = SLOT_ACKED;
		s->nacked--;
		lost++;
		seg = segment_find(s, sl->seq);
		if (seg && seg->unacked > 0)
			seg->unacked--;
	}
	s->tok_next = s->tok_high;
	advance_base(s);
	log_error("spool", "spooled records vanished dir=%s lost=%" PRIu64, s->dir, lost);
}

int spool_next(struct spool *s, struct spool_record *out)
{
	int rc;

	if (s->rewind_pending) {
		if (s->in_flight > 0)
			return -EAGAIN;
		rewind_to_base(s);
	}
	for (;;) {
		struct spool_pos pos;
		struct spool_slot *sl;
		uint64_t token;

		if (s->tok_next == s->tok_high && s->tok_high - s->tok_base >= s->window)
			return -EAGAIN;
		rc = reader_next(s, out, &pos);
		if (rc == -ENODATA && s->tok_next < s->tok_high) {
			abandon_reread(s);
			continue;
		}
		if (rc)
			break;
		token = s->tok_next++;
		sl = slot_of(s, token);
		if (token < s->tok_high) { /* reading again after a rewind */
			if (token < s->tok_base || sl->state != SLOT_NACKED)
				continue; /* acked meanwhile */
			s->nacked--;
		} else {
			struct spool_segment *seg = segment_find(s, pos.seq);

			s->tok_high = token + 1;
			sl->seq = pos.seq;
			sl->frame_off = pos.frame_off;
			sl->index = pos.index;
			if (seg)
				seg->unacked++;
		}
		sl->state = SLOT_IN_FLIGHT;
		s->in_flight++;
		s->st.records_read++;
		out->token = token;
		return 0;
	}
	segments_collect(s);
	return rc;
}

/* The slot of a token in flight, or NULL. */
static struct spool_slot *slot_in_flight(struct spool *s, uint64_t token)
{
	struct spool_slot *sl;

	if (token < s->tok_base || token >= s->tok_high)
		return NULL;
	sl = slot_of(s, token);
	return sl->state == SLOT_IN_FLIGHT ? sl : NULL;
}

int spool_ack(struct spool *s, uint64_t token)
{
	struct spool_slot *sl = slot_in_flight(s, token);
	struct spool_segment *seg;

	if (!sl)
		return -ENOENT;
	sl->state = SLOT_ACKED;
	s->in_flight--;
	s->st.records_acked++;
	seg = segment_find(s, sl->seq);
	if (seg && seg->unacked > 0)
		seg->unacked--;
	advance_base(s);
	segments_collect(s);
	return 0;
}

int spool_nack(struct spool *s, uint64_t token)
{
	struct spool_slot *sl = slot_in_flight(s, token);

	if (!sl)
		return -ENOENT;
	sl->state = SLOT_NACKED;
	s->in_flight--;
	s->nacked++;
	s->st.records_nacked++;
	s->rewind_pending = true;
	return 0;
}

uint64_t spool_appended(const struct spool *s)
{
	return s->st.records_appended;
}

uint64_t spool_durable(const struct spool *s)
{
	return s->fsync == SPOOL_FSYNC_NEVER ? s->records_written : s->records_synced;
}

bool spool_empty(const struct spool *s)
{
	return s->nsegs == 0 && s->batch_records == 0;
}

bool spool_has_room(const struct spool *s, size_t record_len)
{
	size_t entry = SPOOL_ENTRY_HEADER_BYTES + record_len;
	bool split = s->batch_records > 0 && s->batch_len + entry > s->batch_bytes;
	uint64_t need = s->disk_bytes + (split ? frame_bound(s->batch_len) + frame_bound(entry)
	                                       : frame_bound(s->batch_len + entry));

	return record_len <= SPOOL_RECORD_MAX_BYTES && need <= s->max_bytes;
}

void spool_stats(const struct spool *s, struct spool_stats *out)
{
	*out = s->st;
	out->bytes = s->disk_bytes;
	out->segments = s->nsegs;
	out->batch_bytes = s->batch_len;
	out->records_in_flight = s->in_flight;
}

/* ---- open and close ---- */

static int compare_segments(const void *a, const void *b)
{
	const struct spool_segment *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Lists the segment files (regular files with a segment's name) and their sizes. */
static int scan_dir(struct spool *s)
{
	int fd = dup(s->dir_fd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	int rc = 0;

	if (!d) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		uint64_t seq;

		if (!segment_parse(de->d_name, &seq))
			continue;
		if (fstatat(s->dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		rc = segment_push(s, seq, (uint64_t)st.st_size, true);
		if (rc)
			break;
	}
	closedir(d);
	if (rc == 0 && s->nsegs > 1)
		qsort(s->segs, s->nsegs, sizeof(s->segs[0]), compare_segments);
	return rc;
}

/*
 * The newest segment is the only one a crash can leave half-written. Walks its frames;
 * bytes that are not a valid frame and are followed by no valid frame are a torn tail:
 * cut. Bad bytes followed by a valid frame are left for the reader to skip and count.
 */
static int cut_torn_tail(struct spool *s, struct spool_segment *seg)
{
	char name[SEG_NAME_BYTES];
	uint64_t off = 0, cut = OFFSET_NONE;
	int fd, rc = 0;

	segment_name(name, seg->seq);
	fd = openat(s->dir_fd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (off < seg->size) {
		struct frame_header fh;
		uint64_t next;

		rc = frame_verify(s, fd, off, seg->size, &fh);
		if (rc < 0)
			goto out;
		if (rc == FRAME_OK) {
			off = frame_end(off, &fh);
			cut = OFFSET_NONE;
			continue;
		}
		if (cut == OFFSET_NONE)
			cut = off;
		if (rc == FRAME_BAD_PAYLOAD) {
			off = frame_end(off, &fh);
			continue;
		}
		rc = frame_find(s, fd, off + 1, seg->size, &next);
		if (rc < 0)
			goto out;
		if (next == OFFSET_NONE)
			break;
		off = next;
	}
	rc = 0;
	if (cut == OFFSET_NONE)
		goto out;
	if (ftruncate(fd, (off_t)cut) != 0) {
		rc = -errno;
		goto out;
	}
	if (s->fsync != SPOOL_FSYNC_NEVER)
		fdatasync(fd);
	log_warn("spool", "cut torn tail file=%s/%s offset=%" PRIu64 " bytes=%" PRIu64, s->dir,
	         name, cut, seg->size - cut);
	s->st.torn_tails_cut++;
	s->st.torn_bytes_cut += seg->size - cut;
	seg->size = cut;
out:
	close(fd);
	return rc;
}

/* Deletes empty segment files (nothing to read, nothing to keep). */
static void drop_empty_segments(struct spool *s)
{
	size_t i = 0;

	while (i < s->nsegs) {
		if (s->segs[i].size == 0)
			segment_delete(s, i);
		else
			i++;
	}
}

static int options_check(const struct spool_options *opt, char *err, size_t errlen)
{
	if (!opt->dir || !opt->dir[0])
		snprintf(err, errlen, "spool.dir: must be set");
	else if (opt->max_bytes == 0)
		snprintf(err, errlen, "spool.max_bytes: must be > 0");
	else if (opt->batch_bytes > SPOOL_BATCH_MAX_BYTES)
		snprintf(err, errlen, "spool.batch_bytes: must be at most %d",
		         SPOOL_BATCH_MAX_BYTES);
	else if (opt->max_unacked > SPOOL_MAX_UNACKED_LIMIT)
		snprintf(err, errlen, "spool.max_unacked: must be at most %u",
		         SPOOL_MAX_UNACKED_LIMIT);
	else if (opt->fsync != SPOOL_FSYNC_NEVER && opt->fsync != SPOOL_FSYNC_PER_FRAME &&
	         opt->fsync != SPOOL_FSYNC_INTERVAL)
		snprintf(err, errlen, "spool.fsync: must be never, per_frame or interval");
	else if (opt->fsync_interval_ms < 0 || opt->linger_ms < 0)
		snprintf(err, errlen, "spool.%s: must be >= 0",
		         opt->linger_ms < 0 ? "linger_ms" : "fsync_interval_ms");
	else if (opt->zstd_level != 0 &&
	         (opt->zstd_level < ZSTD_minCLevel() || opt->zstd_level > ZSTD_maxCLevel()))
		snprintf(err, errlen, "spool.zstd_level: must be in %d..%d", ZSTD_minCLevel(),
		         ZSTD_maxCLevel());
	else
		return 0;
	return -EINVAL;
}

static void spool_free(struct spool *s)
{
	if (s->wr_fd >= 0)
		close(s->wr_fd);
	reader_close_fd(s);
	if (s->dir_fd >= 0)
		close(s->dir_fd); /* releases the lock */
	ZSTD_freeCCtx(s->zc);
	ZSTD_freeDCtx(s->dc);
	free(s->segs);
	free(s->batch);
	free(s->frame);
	free(s->rd_comp);
	free(s->rd_buf);
	free(s->scan);
	free(s->slots);
	free(s->dir);
	free(s);
}

static void set_defaults(struct spool *s, const struct spool_options *opt)
{
	s->max_bytes = opt->max_bytes;
	s->segment_bytes = opt->segment_bytes ? opt->segment_bytes : SPOOL_DEFAULT_SEGMENT_BYTES;
	s->batch_bytes = opt->batch_bytes ? opt->batch_bytes : SPOOL_DEFAULT_BATCH_BYTES;
	s->fsync = opt->fsync;
	s->fsync_interval_ms =
	    opt->fsync_interval_ms ? opt->fsync_interval_ms : SPOOL_DEFAULT_FSYNC_INTERVAL_MS;
	s->linger_ms = opt->linger_ms ? opt->linger_ms : SPOOL_DEFAULT_LINGER_MS;
	s->window = opt->max_unacked ? opt->max_unacked : SPOOL_DEFAULT_MAX_UNACKED;
	s->dir_fd = s->wr_fd = s->rd_fd = -1;
	s->batch_since_ms = s->last_sync_ms = TIME_UNKNOWN;
	s->tok_base = s->tok_next = s->tok_high = 1;
}

/* Opens and locks the directory, allocates the fixed buffers. */
static int open_resources(struct spool *s, const struct spool_options *opt, char *err,
                          size_t errlen)
{
	int rc;

	s->dir = strdup(opt->dir);
	s->zc = ZSTD_createCCtx();
	s->dc = ZSTD_createDCtx();
	s->scan = malloc(SCAN_CHUNK_BYTES);
	s->slots = calloc(s->window, sizeof(*s->slots));
	if (!s->dir || !s->zc || !s->dc || !s->scan || !s->slots) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (opt->zstd_level)
		ZSTD_CCtx_setParameter(s->zc, ZSTD_c_compressionLevel, opt->zstd_level);
	rc = make_dirs(s->dir);
	if (rc) {
		snprintf(err, errlen, "spool.dir=%s: cannot create: %s", s->dir, strerror(-rc));
		return rc;
	}
	s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "spool.dir=%s: %s", s->dir, strerror(-rc));
		return rc;
	}
	if (flock(s->dir_fd, LOCK_EX | LOCK_NB) != 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(err, errlen, "spool.dir=%s: %s", s->dir,
		         rc == -EBUSY ? "in use by another spool" : strerror(-rc));
		return rc;
	}
	if (faccessat(s->dir_fd, ".", W_OK, AT_EACCESS) != 0) {
		rc = -errno;
		snprintf(err, errlen, "spool.dir=%s: not writable: %s", s->dir, strerror(-rc));
		return rc;
	}
	return 0;
}

int spool_open(struct spool **out, const struct spool_options *opt, char *err, size_t errlen)
{
	struct spool *s;
	int rc;

	*out = NULL;
	rc = options_check(opt, err, errlen);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	set_defaults(s, opt);
	rc = open_resources(s, opt, err, errlen);
	if (rc)
		goto fail;
	rc = scan_dir(s);
	if (rc == 0 && s->nsegs > 0)
		rc = cut_torn_tail(s, &s->segs[s->nsegs - 1]);
	if (rc) {
		snprintf(err, errlen, "spool.dir=%s: cannot read: %s", s->dir, strerror(-rc));
		goto fail;
	}
	/* 0 after UINT64_MAX: the names are used up (writing answers -EOVERFLOW). */
	s->next_seq = s->nsegs > 0 ? s->segs[s->nsegs - 1].seq + 1 : 1;
	drop_empty_segments(s);
	for (size_t i = 0; i < s->nsegs; i++)
		s->disk_bytes += s->segs[i].size;
	s->st.segments_deleted = 0;
	if (s->nsegs > 0)
		log_info("spool", "found spooled data dir=%s segments=%zu bytes=%" PRIu64, s->dir,
		         s->nsegs, s->disk_bytes);
	*out = s;
	return 0;
fail:
	spool_free(s);
	return rc;
}

int spool_close(struct spool *s)
{
	int rc, sync_rc = 0;
	uint32_t lost;

	if (!s)
		return 0;
	lost = s->batch_records;
	rc = writer_write_batch(s);
	if (rc)
		log_error("spool", "records lost at close dir=%s records=%" PRIu32 " err=\"%s\"",
		          s->dir, lost, strerror(-rc));
	if (s->fsync != SPOOL_FSYNC_NEVER)
		sync_rc = writer_sync(s);
	spool_free(s);
	return rc ? rc : sync_rc;
}
