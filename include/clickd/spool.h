/*
 * spool.h - an on-disk FIFO of records (stream, key, record bytes), for the time Kafka
 * cannot take them: bounded, checksummed, replayed in order, deleted only once delivered.
 *
 * Pure and single-threaded: no libuv, no Kafka, no clock of its own (time is passed in),
 * one thread at a time per spool. Nothing here is on the per-event hot path of a healthy
 * pipeline: the Kafka sink appends only while Kafka is away or its queue is past its
 * high-water mark, and replays when it is back.
 *
 * ---- On disk ----
 *
 * `dir` holds segment files `spool-<16 lowercase hex digits>.seg`; the number is the
 * segment's sequence and orders them (names sort the same way). Other files are ignored. A
 * segment is a run of frames and nothing else (no file header). Every integer is
 * little-endian. A frame is a 40-byte header followed by compressed_len bytes of payload:
 *
 *   offset size  field
 *    0      4    magic "CKSP" (43 4b 53 50)
 *    4      2    version, 1
 *    6      2    flags, 0 (a reader refuses others)
 *    8      4    compressed_len: payload bytes after the header
 *   12      4    uncompressed_len: bytes of the decompressed payload
 *   16      4    record_count, >= 1
 *   20      4    reserved, 0
 *   24      8    payload_hash: XXH3_64bits (seed 0) of the compressed_len payload bytes
 *   32      8    header_hash: XXH3_64bits (seed 0) of header bytes 0..31
 *
 * The payload is one or more zstd frames that decompress to exactly uncompressed_len bytes:
 * record_count entries back to back, each
 *
 *    0      1    stream (enum sink_stream)
 *    1      1    flags, 0
 *    2      2    key_len (<= SPOOL_KEY_MAX_BYTES)
 *    4      4    record_len (<= SPOOL_RECORD_MAX_BYTES)
 *    8      key_len bytes of key, then record_len bytes of record
 *
 * A reader takes a frame only when the magic, version, flags, header hash, lengths
 * (uncompressed_len <= SPOOL_FRAME_MAX_BYTES, compressed_len <= its zstd bound, the frame
 * inside the file), payload hash, decompression and entries (in bounds, exactly filling
 * the payload, count as declared) all check out.
 *
 * ---- Writing ----
 *
 * spool_append copies a record into an in-memory batch. A frame is written (one write(2))
 * when the next record would take the batch past batch_bytes, on spool_flush, on
 * spool_poll once the batch has waited linger_ms, when spool_next catches up with the
 * batch, and at spool_close. A segment rotates (a new file, next sequence) before a frame
 * would take it past segment_bytes; a frame never spans two segments. After an open the
 * writer starts a new segment; the old ones are only read.
 *
 * Bound: the bytes of every segment on disk plus the worst-case size of the batch once
 * written (its zstd bound plus a header) never pass max_bytes. An append that would pass it
 * answers -ENOSPC (the caller answers 503 upstream) and takes nothing; space comes back as
 * segments are deleted. With compressible records the spool may refuse up to one batch
 * short of max_bytes. Segments found at open count from the start (if they alone pass
 * max_bytes, every append answers -ENOSPC until enough is delivered).
 *
 * Durability (option fsync), for records whose frame was written; records still in the
 * batch live in memory only and die with the process (spool_flush writes them):
 *  - SPOOL_FSYNC_NEVER: write(2) only. A crash of clickd loses nothing written; a crash of
 *    the machine (power, kernel) loses what the kernel had not written back (seconds), and
 *    may leave a torn tail, cut at the next open.
 *  - SPOOL_FSYNC_PER_FRAME: fdatasync after every frame (and the directory after a new
 *    segment is created): a written frame survives a machine crash. The cost is one sync
 *    per batch_bytes of records.
 *  - SPOOL_FSYNC_INTERVAL: frames are written at once but synced at most every
 *    fsync_interval_ms, checked on spool_flush and spool_poll with the time they are given
 *    (and always when a segment is sealed and at spool_close): a machine crash loses at
 *    most the frames of the last interval (plus the time between polls).
 *
 * ---- Reading, acks and nacks ----
 *
 * spool_next returns the oldest record not yet read, in exactly the order of spool_append,
 * across frames, segments and restarts, with a token. spool_ack(token) says it was
 * delivered; spool_nack(token) says delivery failed for now (Kafka's own retries are over)
 * and it must be delivered again.
 *
 * Nack rewinds; it does not re-append. After a nack, spool_next answers -EAGAIN until
 * every record in flight (read, neither acked nor nacked) is settled; then the reader goes
 * back to the oldest nacked record and reads forward again, skipping the records acked
 * meanwhile, so that the nacked records come back in their original order (with their
 * original tokens) and before any record not yet read. Why not append nacked records again
 * at the end: a failed record would then come after every newer record of its key, also
 * after those that arrived while Kafka was away, so every failure would reorder its key.
 * Rewinding keeps the append order among all records not yet delivered; the only reordering
 * left is between records in flight together (a nacked one and a later one acked), as
 * with any pipelined producer. max_unacked = 1 gives strict order at the cost of
 * throughput. A record that can never be delivered (too large for the broker, say) must be
 * acked by the caller once it has counted it as failed, or it comes back forever: nack
 * means "try again", which is what nothing lost needs.
 *
 * Segments are deleted oldest first, once every record in them was read and acked (a
 * fully delivered spool deletes its last segment too and takes no space). Acks are not
 * written anywhere: after a crash or a restart every record of the remaining segments is
 * read again, so delivery is at least once. The duplicates are the acked records of
 * segments not yet deleted: at most those from the oldest unacked record's segment up to
 * the read position, i.e. about one segment plus max_unacked records.
 *
 * Memory: the writer's batch (batch_bytes, or one record up to SPOOL_ENTRY_MAX_BYTES) and
 * its compressed copy; the reader's one decompressed frame (at most SPOOL_FRAME_MAX_BYTES)
 * and its compressed bytes; a 64 KiB scan buffer; one entry per segment; and the records in
 * flight, max_unacked slots of 24 bytes: spool_next answers -EAGAIN while the tokens from
 * the oldest unacked one to the newest read span max_unacked.
 *
 * ---- Opening after a crash ----
 *
 * spool_open lists the segments and counts their sizes. The newest one is checked frame
 * by frame (headers and payload hashes); if it ends with bytes that are not a valid frame
 * and no valid frame follows them (a torn last write: truncated, or garbage after it),
 * they are cut off with ftruncate, logged and counted in torn_tails_cut; a segment left
 * empty is deleted. A corrupt frame anywhere else is found when read: it is skipped,
 * logged and counted in corrupt_frames, and reading resumes at the next valid frame,
 * found by its magic and a valid header hash, length and payload hash (so one flipped
 * byte costs one frame, not the rest of a segment); with none, at the next segment. A
 * frame whose hashes hold but whose content does not (a writer bug) is skipped the same
 * way. The directory is locked (flock) against a second spool on it.
 */
#ifndef CLICKD_SPOOL_H
#define CLICKD_SPOOL_H

#include "clickd/sink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Format constants (see above); the fuzz harness uses them to forge frames. */
#define SPOOL_FRAME_MAGIC        0x50534b43u /* "CKSP" read as a little-endian u32 */
#define SPOOL_FRAME_VERSION      1
#define SPOOL_FRAME_HEADER_BYTES 40
#define SPOOL_ENTRY_HEADER_BYTES 8
/* Largest key and record spool_append takes (-EMSGSIZE beyond). Keys are visitor keys (a
 * few dozen bytes); records are JSON events and touchpoints (about 50 KiB at most), and
 * Kafka's default message.max.bytes is about 1 MB. */
#define SPOOL_KEY_MAX_BYTES    4096
#define SPOOL_RECORD_MAX_BYTES (1024 * 1024)
#define SPOOL_ENTRY_MAX_BYTES                                                                      \
	(SPOOL_ENTRY_HEADER_BYTES + SPOOL_KEY_MAX_BYTES + SPOOL_RECORD_MAX_BYTES)
/* Largest decompressed frame a reader takes: above anything this writer makes (a batch of
 * at most SPOOL_BATCH_MAX_BYTES, or one entry), with room to spare; bounds reader memory. */
#define SPOOL_FRAME_MAX_BYTES (2 * 1024 * 1024)
#define SPOOL_BATCH_MAX_BYTES (1024 * 1024)

#define SPOOL_DEFAULT_SEGMENT_BYTES     (64ull * 1024 * 1024)
#define SPOOL_DEFAULT_BATCH_BYTES       (64 * 1024)
#define SPOOL_DEFAULT_LINGER_MS         1000
#define SPOOL_DEFAULT_FSYNC_INTERVAL_MS 1000
#define SPOOL_DEFAULT_MAX_UNACKED       16384
#define SPOOL_MAX_UNACKED_LIMIT         (1u << 20)

enum spool_fsync { SPOOL_FSYNC_NEVER = 0, SPOOL_FSYNC_PER_FRAME, SPOOL_FSYNC_INTERVAL };

/* For each number, 0 means its default. */
struct spool_options {
	const char *dir;           /* spool.dir; created if missing */
	uint64_t max_bytes;        /* spool.max_bytes; required (> 0) */
	uint64_t segment_bytes;    /* rotate before a frame passes it; default 64 MiB */
	size_t batch_bytes;        /* uncompressed bytes per frame, <= SPOOL_BATCH_MAX_BYTES */
	int zstd_level;            /* 0: zstd's default */
	enum spool_fsync fsync;    /* default SPOOL_FSYNC_NEVER */
	int64_t fsync_interval_ms; /* SPOOL_FSYNC_INTERVAL only; default 1000 */
	int64_t linger_ms;         /* spool_poll writes a batch this old; default 1000 */
	uint32_t max_unacked;      /* records in flight, <= SPOOL_MAX_UNACKED_LIMIT */
};

/* Counters since spool_open (bytes and segments: now); for metrics. */
struct spool_stats {
	uint64_t bytes;            /* segment bytes on disk */
	uint64_t segments;         /* segment files */
	uint64_t batch_bytes;      /* uncompressed bytes waiting in the batch */
	uint64_t records_appended; /* taken by spool_append */
	uint64_t records_refused;  /* spool_append answered -ENOSPC */
	uint64_t records_read;     /* returned by spool_next, again after a nack included */
	uint64_t records_acked;
	uint64_t records_nacked;
	uint64_t records_in_flight; /* read, neither acked nor nacked */
	uint64_t frames_written;
	uint64_t segments_deleted;
	uint64_t corrupt_frames; /* corrupt regions skipped while reading */
	uint64_t corrupt_bytes;
	uint64_t torn_tails_cut; /* at open */
	uint64_t torn_bytes_cut;
	uint64_t fsyncs;
};

/* A record returned by spool_next. key, record: borrowed from the spool, valid until the
 * next spool_next or spool_close (key is NULL when key_len is 0). */
struct spool_record {
	enum sink_stream stream;
	const char *key;
	size_t key_len;
	const char *record;
	size_t record_len;
	uint64_t token; /* for spool_ack / spool_nack; never 0 */
};

struct spool;

/* Opens (creates) the spool in opt->dir: locks it, cuts a torn tail (see above). Named
 * open/close like a file: it allocates *out, which spool_close releases. Returns 0, or a
 * negative errno with a reason in err (-EINVAL bad option, -EBUSY locked, the disk's). */
int spool_open(struct spool **out, const struct spool_options *opt, char *err, size_t errlen);

/* Writes the batch, syncs (unless SPOOL_FSYNC_NEVER), closes and frees. Records not acked
 * stay on disk for the next open. NULL is fine. Returns 0 or the -errno of the last write
 * or sync (the spool is freed either way). */
int spool_close(struct spool *s);

/* Takes one record (copied). Returns 0; -EMSGSIZE (key or record too long); -EINVAL (bad
 * stream); -ENOSPC (the spool is full, see above); or the disk's -errno when writing the
 * previous batch failed (then this record is not taken, the batch is kept and retried). */
int spool_append(struct spool *s, enum sink_stream stream, const char *key, size_t key_len,
                 const char *record, size_t record_len);

/* Writes the batch as a frame, and syncs as the fsync policy says (per_frame: done with
 * the frame; interval: if due at now_ms). Returns 0 or the disk's -errno. */
int spool_flush(struct spool *s, int64_t now_ms);

/* Writes the batch as a frame and, unless fsync is never, syncs now whatever the interval
 * (which then starts again): what kafka.ack_mode=kafka does while requests wait for
 * spooled records. Returns 0 or the disk's -errno. */
int spool_sync(struct spool *s, int64_t now_ms);

/* Periodic work: writes a batch that has waited linger_ms, syncs if the interval is due.
 * now_ms: any monotonic clock, the same one every time. Returns 0 or the disk's -errno. */
int spool_poll(struct spool *s, int64_t now_ms);

/* The oldest record not yet read (see above). Returns 0; -ENODATA when every record has
 * been read (some may be in flight); -EAGAIN when max_unacked records are in flight or a
 * nack waits for the records in flight to settle; or the disk's -errno. */
int spool_next(struct spool *s, struct spool_record *out);

/* Marks a record delivered (and deletes the segments that are done). Returns 0, or
 * -ENOENT for a token that is not in flight (unknown, already acked or nacked). */
int spool_ack(struct spool *s, uint64_t token);

/* Marks a record failed, to be read again in order (see above). Returns 0 or -ENOENT. */
int spool_nack(struct spool *s, uint64_t token);

/* Records spool_append took since spool_open: the append sequence of the last one (the
 * first is 1). */
uint64_t spool_appended(const struct spool *s);

/* How many of the records taken since spool_open are durable as option fsync says: the
 * record with append sequence n is once this is >= n. never: its frame was written (it
 * survives a crash of clickd); per_frame and interval: written and synced (it survives a
 * crash of the machine). Records still in the batch are not (spool_flush writes them).
 * kafka.ack_mode=kafka answers a request when its spooled records are durable. */
uint64_t spool_durable(const struct spool *s);

/* True when the spool holds no record at all: none on disk, none in the batch. */
bool spool_empty(const struct spool *s);

/* True when an append of one record of record_len bytes (no key) would be taken now, by
 * the same test spool_append makes: what a sink asks at start, when segments found on disk
 * may already fill max_bytes. */
bool spool_has_room(const struct spool *s, size_t record_len);

void spool_stats(const struct spool *s, struct spool_stats *out);

#endif
