/*
 * dedup.h - exact duplicate suppression over a time window, in bounded memory.
 *
 * One table per shard, used by that shard's thread only (no locks). Events are
 * identified by a 64-bit XXH3 fingerprint (dedup_fingerprint). A fingerprint is a
 * duplicate when the same one was first seen less than window_ms before; the first
 * sighting is what counts (a duplicate does not extend the window).
 *
 * Memory: at most max_entries fingerprints, 32 bytes each (an open-addressing table at
 * most half full, 16 bytes per entry, plus a FIFO of (fingerprint, time), 16 bytes), so
 * dedup.max_entries = 1,000,000 costs 32 MB per shard at most; the pages are touched only
 * as entries arrive. When the table is full before the window has passed, the oldest
 * entries go first (and are counted: dedup_stats.evicted), so the window effectively
 * shrinks under a flood instead of memory growing.
 *
 * Time is passed in (receive time, ms). The FIFO assumes times that do not go backwards;
 * a time earlier than the last one seen is treated as the last one (events from several
 * ingest threads reach a shard a little out of order).
 */
#ifndef CLICKD_DEDUP_H
#define CLICKD_DEDUP_H

#include "clickd/event.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dedup;

struct dedup_stats {
	size_t entries;      /* fingerprints remembered now */
	uint64_t duplicates; /* dedup_seen answered true */
	uint64_t expired;    /* forgotten because the window passed */
	uint64_t evicted;    /* forgotten early because max_entries was reached */
	int64_t covered_ms;  /* how far back duplicates are caught now: the window, or the
	                        age of the oldest entry when the table is full */
};

/* max_entries >= 1, window_ms >= 1. NULL when out of memory. */
struct dedup *dedup_new(size_t max_entries, int64_t window_ms);
void dedup_free(struct dedup *d);

/* True when fp was first seen less than the window before now_ms (a duplicate). Else
 * remembers fp as seen at now_ms (evicting the oldest entry when full) and returns false. */
bool dedup_seen(struct dedup *d, uint64_t fp, int64_t now_ms);

/* Forgets what the window has passed; dedup_seen does this too. For the shard's tick, so
 * memory drops when traffic stops. */
void dedup_expire(struct dedup *d, int64_t now_ms);

/* now_ms: for covered_ms. */
void dedup_get_stats(const struct dedup *d, int64_t now_ms, struct dedup_stats *out);

/* ---- saving and restoring (session.state_file, see state_file.h) ---- */

/* Walks the remembered fingerprints, oldest first: *cursor is 0 to begin; each call gives
 * one (fp and the time it was first seen) and returns true, or returns false past the
 * last. The table must not change during the walk. */
bool dedup_saved_next(const struct dedup *d, uint64_t *cursor, uint64_t *fp, int64_t *seen_ms);

/* Remembers fp as first seen at seen_ms, as dedup_seen would have (restore oldest first;
 * a time earlier than the last one restored counts as that one), evicting the oldest when
 * full. Nothing happens when fp is there already or when the window has passed by now_ms.
 * Counts no duplicate. Returns true when fp was remembered. */
bool dedup_restore(struct dedup *d, uint64_t fp, int64_t seen_ms, int64_t now_ms);

/* The event's fingerprint: XXH3-64 of app_id, 0x1F, event_id; without an event_id, of the
 * normalised payload (type, client time, revenue and every decoded string field but the
 * ones the pipeline adds later: session_id and channel). Never 0. */
uint64_t dedup_fingerprint(const struct event *ev);

#endif
