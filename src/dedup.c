/*
 * dedup.c - exact duplicate suppression (see dedup.h for the contract).
 *
 * Two structures over the same entries:
 * - `slots`: an open-addressing hash set of fingerprints with linear probing, capacity a
 *   power of two at least twice max_entries (so probes stay short). Fingerprints are
 *   already uniform hashes, so the low bits index directly; 0 marks an empty slot
 *   (dedup_fingerprint never returns 0). Removal uses backward-shift deletion, so there
 *   are no tombstones and lookups never degrade.
 * - `fifo`: the entries in the order they were added, with their time. Expiry and
 *   eviction both take from its head: O(1) per entry, never a scan.
 */
#include "clickd/dedup.h"

#include <stdlib.h>
#include <string.h>
/* Inlined: fingerprints are computed per event on the shard. */
#define XXH_INLINE_ALL
#include <xxhash.h>

struct fifo_entry {
	uint64_t fp;
	int64_t seen_ms;
};

struct dedup {
	uint64_t *slots; /* owned: mask + 1 */
	uint64_t mask;
	struct fifo_entry *fifo; /* owned: max_entries */
	size_t max_entries;
	size_t fifo_head; /* oldest entry */
	size_t count;
	int64_t window_ms;
	int64_t last_ms;
	struct dedup_stats stats;
};

struct dedup *dedup_new(size_t max_entries, int64_t window_ms)
{
	struct dedup *d;
	size_t cap = 16;

	if (max_entries == 0 || window_ms <= 0 || max_entries > (SIZE_MAX >> 3))
		return NULL;
	while (cap < max_entries * 2)
		cap <<= 1;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	/* calloc: large blocks come from mmap, so untouched pages cost nothing. */
	d->slots = calloc(cap, sizeof(*d->slots));
	d->fifo = calloc(max_entries, sizeof(*d->fifo));
	if (!d->slots || !d->fifo) {
		dedup_free(d);
		return NULL;
	}
	d->mask = cap - 1;
	d->max_entries = max_entries;
	d->window_ms = window_ms;
	d->last_ms = INT64_MIN;
	return d;
}

void dedup_free(struct dedup *d)
{
	if (!d)
		return;
	free(d->slots);
	free(d->fifo);
	free(d);
}

static bool table_contains(const struct dedup *d, uint64_t fp)
{
	for (uint64_t i = fp & d->mask;; i = (i + 1) & d->mask) {
		if (d->slots[i] == fp)
			return true;
		if (d->slots[i] == 0)
			return false;
	}
}

static void table_insert(struct dedup *d, uint64_t fp)
{
	uint64_t i = fp & d->mask;

	while (d->slots[i] != 0)
		i = (i + 1) & d->mask;
	d->slots[i] = fp;
}

/* Backward-shift deletion: after emptying slot i, move later members of the probe run
 * back into the hole when their home slot allows it, so no lookup ever stops early. */
static void table_remove(struct dedup *d, uint64_t fp)
{
	uint64_t i = fp & d->mask;

	while (d->slots[i] != fp) {
		if (d->slots[i] == 0)
			return; /* not there: cannot happen, the FIFO and the table agree */
		i = (i + 1) & d->mask;
	}
	for (uint64_t j = (i + 1) & d->mask;; j = (j + 1) & d->mask) {
		uint64_t home;

		if (d->slots[j] == 0)
			break;
		home = d->slots[j] & d->mask;
		/* Move j into the hole i when home is not cyclically in (i, j]. */
		if (((j - home) & d->mask) >= ((j - i) & d->mask)) {
			d->slots[i] = d->slots[j];
			i = j;
		}
	}
	d->slots[i] = 0;
}

static void drop_oldest(struct dedup *d)
{
	table_remove(d, d->fifo[d->fifo_head].fp);
	d->fifo_head = (d->fifo_head + 1) % d->max_entries;
	d->count--;
}

void dedup_expire(struct dedup *d, int64_t now_ms)
{
	while (d->count > 0 && now_ms - d->fifo[d->fifo_head].seen_ms >= d->window_ms) {
		drop_oldest(d);
		d->stats.expired++;
	}
}

bool dedup_seen(struct dedup *d, uint64_t fp, int64_t now_ms)
{
	size_t tail;

	if (fp == 0)
		fp = 1;
	if (now_ms < d->last_ms)
		now_ms = d->last_ms;
	d->last_ms = now_ms;
	dedup_expire(d, now_ms);
	if (table_contains(d, fp)) {
		d->stats.duplicates++;
		return true;
	}
	if (d->count == d->max_entries) {
		drop_oldest(d);
		d->stats.evicted++;
	}
	tail = (d->fifo_head + d->count) % d->max_entries;
	d->fifo[tail].fp = fp;
	d->fifo[tail].seen_ms = now_ms;
	d->count++;
	table_insert(d, fp);
	return false;
}

bool dedup_saved_next(const struct dedup *d, uint64_t *cursor, uint64_t *fp, int64_t *seen_ms)
{
	const struct fifo_entry *e;

	if (*cursor >= d->count)
		return false;
	e = &d->fifo[(d->fifo_head + *cursor) % d->max_entries];
	*fp = e->fp;
	*seen_ms = e->seen_ms;
	(*cursor)++;
	return true;
}

bool dedup_restore(struct dedup *d, uint64_t fp, int64_t seen_ms, int64_t now_ms)
{
	size_t tail;

	if (fp == 0)
		fp = 1;
	if (now_ms - seen_ms >= d->window_ms)
		return false;
	if (seen_ms < d->last_ms)
		seen_ms = d->last_ms;
	if (table_contains(d, fp))
		return false;
	d->last_ms = seen_ms;
	if (d->count == d->max_entries) {
		drop_oldest(d);
		d->stats.evicted++;
	}
	tail = (d->fifo_head + d->count) % d->max_entries;
	d->fifo[tail].fp = fp;
	d->fifo[tail].seen_ms = seen_ms;
	d->count++;
	table_insert(d, fp);
	return true;
}

void dedup_get_stats(const struct dedup *d, int64_t now_ms, struct dedup_stats *out)
{
	*out = d->stats;
	out->entries = d->count;
	out->covered_ms = d->window_ms;
	if (d->count == d->max_entries && now_ms - d->fifo[d->fifo_head].seen_ms < d->window_ms)
		out->covered_ms = now_ms - d->fifo[d->fifo_head].seen_ms;
}

uint64_t dedup_fingerprint(const struct event *ev)
{
	XXH3_state_t st;
	size_t len;
	const char *s;
	uint64_t fp;

	if (event_has(ev, EF_EVENT_ID)) {
		/* app_id 0x1F event_id, hashed in one go from a stack copy. */
		char buf[2 * 512 + 1];
		size_t app_len, id_len;
		const char *app = event_get(ev, EF_APP_ID, &app_len);
		const char *id = event_get(ev, EF_EVENT_ID, &id_len);
		if (app_len + 1 + id_len <= sizeof(buf)) {
			if (app_len)
				memcpy(buf, app, app_len);
			buf[app_len] = '\x1f';
			memcpy(buf + app_len + 1, id, id_len);
			fp = XXH3_64bits(buf, app_len + 1 + id_len);
			return fp ? fp : 1;
		}
		XXH3_64bits_reset(&st);
		XXH3_64bits_update(&st, app ? app : "", app_len);
		XXH3_64bits_update(&st, "\x1f", 1);
		XXH3_64bits_update(&st, id, id_len);
		fp = XXH3_64bits_digest(&st);
		return fp ? fp : 1;
	}
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, &ev->type, sizeof(ev->type));
	XXH3_64bits_update(&st, &ev->client_at_ms, sizeof(ev->client_at_ms));
	if (ev->has_revenue)
		XXH3_64bits_update(&st, &ev->revenue, sizeof(ev->revenue));
	for (int f = 0; f < EF__COUNT; f++) {
		uint16_t n;
		if (f == EF_SESSION_ID || f == EF_CHANNEL)
			continue;
		s = event_get(ev, (enum event_field)f, &len);
		n = (uint16_t)len;
		/* The length first, so field boundaries cannot shift into each other. */
		XXH3_64bits_update(&st, &n, sizeof(n));
		if (len)
			XXH3_64bits_update(&st, s, len);
	}
	fp = XXH3_64bits_digest(&st);
	return fp ? fp : 1;
}
