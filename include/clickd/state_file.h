/*
 * state_file.h - the open state of the shards saved at a clean stop and restored at the next
 * start (session.state_file), so that a restart does not cut sessions.
 *
 * What is kept, per visitor routed by the visitor key's hash exactly as the pipeline routes
 * events (pipeline_shard_of_hash), so a restart with another pipeline.shards puts every
 * visitor on the shard that will see its next event:
 *  - the session table: every remembered visitor (key hash and session count, for
 *    session_index) and its open session whole (ID, start, last event, counters, revenue,
 *    channel, strings): it goes on as if clickd had not stopped, same session_id;
 *  - the dedup window: every fingerprint with the time it was first seen (a tracker that
 *    retries across the restart is still caught). Fingerprints do not carry their visitor:
 *    with the same shard count each goes back to its own shard; with another, to every
 *    shard (each keeps at most dedup.max_entries, newest first), which catches every
 *    duplicate the old layout did;
 *  - attribution paths (touchpoints in the lookback) and identity links (users and their
 *    devices; a user's entry goes to each shard that holds one of its devices).
 * Not kept: the rollup minutes (they are written at stop as before; a minute cut by the
 * restart has two rows), held records (written or failed before the save), stats counters.
 *
 * A kill -9 (or a crash) writes nothing: the sessions of that run are lost as sessions (no
 * touchpoint), never as events, which were written as they came. A state file left from an
 * earlier run is still restored (and what expired meanwhile ends at once).
 *
 * ---- On disk (every integer little-endian) ----
 *
 * A file header of 32 bytes:
 *   0  4  magic "CKST"        4  2  version (STATE_FILE_VERSION)   6  2  flags, 0
 *   8  4  shards of the writer (1..STATE_FILE_MAX_SHARDS)          12 4  reserved, 0
 *  16  8  saved_at_ms         24 8  XXH3_64bits of bytes 0..23
 * then frames, each a 32-byte header and compressed_len bytes of payload:
 *   0  4  magic "CKSB"        4  4  compressed_len   8  4  uncompressed_len (<= 1 MiB)
 *  12  4  record_count >= 1  16  8  XXH3_64bits_withSeed(payload, frame number from 0)
 *  24  8  XXH3_64bits of bytes 0..23
 * The payload is zstd (one or more frames) of record_count records, each a type byte, a
 * u32 body length and the body; in type order:
 *   1 visitor   u64 visitor_hash, u32 sessions, u8 has_session; with a session: 32 bytes ID,
 *               u32 index, i64 started_at_ms, i64 last_seen_ms, u32 events, page_views,
 *               conversions, u8 has_revenue, f64 revenue, 4 bytes currency, u8 channel,
 *               u8 string count (SF__COUNT) and that many u16 length + bytes
 *               (session_field order). Least recently seen first: those without an open
 *               session, then those with one by their last event.
 *   2 dedup     u32 n, then n x {u16 writer's shard, u64 fingerprint, i64 seen_ms}, oldest
 *               first over all shards.
 *   3 path      u64 visitor_hash, u64 user_hash, i64 last_seen_ms, u8 + visitor ID, u8 count,
 *               count x {i64 started_at_ms, u8 channel, then u8 length + bytes of session
 *               ID, source, medium, campaign, click-ID type, affiliate ID}; by last seen.
 *   4 user      u64 user_hash, i64 last_seen_ms, u8 devices, devices x {u64 visitor_hash,
 *               i64 linked_ms}; by last seen.
 *   5 end       u64 visitors, sessions, dedup entries, paths, touchpoints, users, frames:
 *               the last record of the last frame; nothing may follow it.
 * A file is used only when every header, hash, length, count and field checks out and the
 * end record agrees with what came before it: it is read through once to check, then again
 * to restore, so a bad file restores nothing.
 *
 * ---- Writing (atomic) ----
 *
 * `<path>.tmp` is written, fsynced, renamed over `<path>`, and the directory fsynced: a
 * crash during the save leaves the previous state (or none), never half a file.
 *
 * Bounded: the file holds what the shards hold (session.max_visitors, dedup.max_entries,
 * the attribution bounds); the writer and the reader keep one frame (1 MiB) and its
 * compressed copy in memory, plus one item per shard for the merge.
 *
 * Pure: no libuv, no log, no clock (now_ms passed in). Called from the main thread while no
 * shard thread runs (before shard_start, after shard_join).
 */
#ifndef CLICKD_STATE_FILE_H
#define CLICKD_STATE_FILE_H

#include "clickd/attribution.h"
#include "clickd/dedup.h"
#include "clickd/session.h"

#include <stddef.h>
#include <stdint.h>

#define STATE_FILE_VERSION    1
#define STATE_FILE_MAX_SHARDS 1024

/* One shard's tables (borrowed). */
struct state_file_shard {
	struct session_table *sessions;
	struct dedup *dedup;
	struct attribution *attribution;
};

struct state_file_counts {
	uint64_t visitors; /* session-table visitors (session_index) */
	uint64_t sessions; /* open sessions among them */
	uint64_t dedup_entries;
	uint64_t paths; /* attribution visitors */
	uint64_t touchpoints;
	uint64_t users;
};

struct state_file_report {
	uint32_t shards;     /* the writer's shard count */
	int64_t saved_at_ms; /* when the file was written */
	uint64_t file_bytes;
	uint64_t payload_bytes;        /* the records before zstd */
	struct state_file_counts file; /* save: written; load: read */
	/* Load only. Restored: what went back into the tables (the rest had passed its
	 * window or lookback, or was over a bound). */
	struct state_file_counts restored;
	/* Sessions that ended at load (of the restored ones, plus any evicted to make room):
	 * [SESSION_END_INACTIVITY] and [SESSION_END_MAX_DURATION] ran out while clickd was
	 * down. */
	uint64_t sessions_ended[SESSION_END__COUNT];
	uint64_t sessions_resumed; /* still open after the load */
};

/*
 * Writes the tables of shards[0..count) to path atomically (see above). The tables are only
 * read. Returns 0, or a negative errno with the reason in err (nothing is left at path.tmp,
 * and what was at path stays).
 */
int state_file_save(const char *path, const struct state_file_shard *shards, size_t count,
                    int64_t now_ms, struct state_file_report *report, char *err, size_t errlen);

/*
 * Restores the file at path into shards[0..count) (empty tables, before any event), routing
 * every visitor by pipeline_shard_of_hash(hash, count), then ends the sessions whose timeout
 * or max duration has passed by now_ms (session_tick: their close callbacks run), and
 * removes the file (and a `<path>.tmp` left by a crash during a save).
 * Returns 0 when restored; -ENOENT when there is no file (nothing happens); else a
 * negative errno with the reason in err: the file is corrupt, truncated, of another version
 * or unreadable, nothing was restored, and it was renamed to `<path>.bad` (err ends with
 * where it went, or why it could not be moved); -ENOMEM leaves it in place. A read error between
 * the check and the restore (the disk) keeps what was restored so far, each item whole, and moves
 * the file aside too (it is never restored twice).
 */
int state_file_load(const char *path, const struct state_file_shard *shards, size_t count,
                    int64_t now_ms, struct state_file_report *report, char *err, size_t errlen);

/* Whether a state file can be written at path: its directory exists and is writable, and
 * path is not a directory. Returns 0 or a negative errno with the reason in err. */
int state_file_check(const char *path, char *err, size_t errlen);

#endif
