/*
 * ring.h - a single-producer, single-consumer ring of fixed-size slots (C11 atomics).
 *
 * Events travel from an ingest thread to a shard worker through one ring per (ingest
 * thread, shard) pair. No mutex, no allocation after ring_init, no syscall.
 *
 * Who owns what:
 * - The ring owns its slot memory: ring_init allocates it, ring_close frees it (after both
 *   threads are done with the ring).
 * - A slot belongs to the producer from the moment the consumer releases it until the
 *   producer publishes it, and to the consumer from publish until release. Neither side
 *   ever touches a slot it does not own, so slot contents need no atomics: the release
 *   store of `tail` (publish) and of `head` (release) hand the bytes over, paired with the
 *   acquire loads on the other side.
 * - `head` is written only by the consumer, `tail` only by the producer. Each sits on its
 *   own cache line next to that side's private copy of the other index (cached_tail,
 *   cached_head), so a side re-reads the other's line only when its cached view says the
 *   ring is empty (consumer) or full (producer).
 * - `closed` is set once by the producer after its last publish: the consumer may stop
 *   when it sees closed and then finds the ring empty.
 *
 * Indices are free-running 64-bit counters (slot = index & mask); they never wrap in
 * practice. Capacity is a power of two.
 *
 * Producer side: ring_claim (a slot to fill, in order) ... ring_publish (make every
 * claimed slot visible at once: a bulk push), or ring_push_bulk to copy items in.
 * Consumer side: ring_peek (how many are readable), ring_slot_read(i), ring_release(n)
 * (a bulk pop, processed in place), or ring_pop_bulk to copy items out.
 */
#ifndef CLICKD_RING_H
#define CLICKD_RING_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RING_CACHE_LINE 64

struct ring {
	/* The consumer's line. */
	alignas(RING_CACHE_LINE) _Atomic uint64_t head; /* next slot to read */
	uint64_t cached_tail;                           /* consumer's last view of tail */

	/* The producer's line. */
	alignas(RING_CACHE_LINE) _Atomic uint64_t tail; /* next slot to publish */
	uint64_t cached_head;                           /* producer's last view of head */
	uint64_t claimed;                               /* claimed, not yet published */
	_Atomic bool closed;

	/* Read-only after ring_init. */
	alignas(RING_CACHE_LINE) uint64_t mask;
	size_t slot_bytes;
	unsigned char *slots; /* owned: (mask + 1) * slot_bytes */
};

/* capacity: a power of two >= 2; slot_bytes > 0. Returns 0, -EINVAL or -ENOMEM. */
int ring_init(struct ring *r, size_t capacity, size_t slot_bytes);
/* Frees the slots; both threads must be done with the ring. */
void ring_close(struct ring *r);

static inline size_t ring_capacity(const struct ring *r)
{
	return (size_t)r->mask + 1;
}

static inline void *ring__slot(const struct ring *r, uint64_t index)
{
	return r->slots + (size_t)(index & r->mask) * r->slot_bytes;
}

/* ---- producer ---- */

/* The next free slot to fill (after those already claimed), or NULL when the ring is
 * full. The slot is not visible to the consumer until ring_publish. */
static inline void *ring_claim(struct ring *r)
{
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint64_t next = tail + r->claimed;

	if (next - r->cached_head > r->mask) {
		/* Acquire: the consumer's reads of the slots it released happened before. */
		r->cached_head = atomic_load_explicit(&r->head, memory_order_acquire);
		if (next - r->cached_head > r->mask)
			return NULL;
	}
	r->claimed++;
	return ring__slot(r, next);
}

/* Gives back the last claimed slot (not published): a claim that was not used. */
static inline void ring_unclaim(struct ring *r)
{
	if (r->claimed > 0)
		r->claimed--;
}

/* Gives back every claimed slot (none was published): an all-or-nothing batch that
 * could not be taken whole. */
static inline void ring_unclaim_all(struct ring *r)
{
	r->claimed = 0;
}

/* Makes every claimed slot visible to the consumer, in claim order. Returns how many. */
static inline size_t ring_publish(struct ring *r)
{
	uint64_t n = r->claimed;

	if (n == 0)
		return 0;
	/* Release: the slot contents written before are visible to whoever acquires tail. */
	atomic_store_explicit(&r->tail, atomic_load_explicit(&r->tail, memory_order_relaxed) + n,
	                      memory_order_release);
	r->claimed = 0;
	return (size_t)n;
}

/* Copies up to n items of slot_bytes each and publishes them (with anything claimed
 * before). Returns how many were copied: fewer than n when the ring is full. */
size_t ring_push_bulk(struct ring *r, const void *items, size_t n);

/* The producer's last word: after it, nothing more is published. */
static inline void ring_close_producer(struct ring *r)
{
	ring_publish(r);
	atomic_store_explicit(&r->closed, true, memory_order_release);
}

/* ---- consumer ---- */

/* How many published slots are readable now (up to max). */
static inline size_t ring_peek(struct ring *r, size_t max)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t avail = r->cached_tail - head;

	if (avail < max) {
		/* Acquire: pairs with the producer's release in ring_publish. */
		r->cached_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
		avail = r->cached_tail - head;
	}
	return avail < max ? (size_t)avail : max;
}

/* The i-th readable slot (i < what ring_peek returned). */
static inline void *ring_slot_read(const struct ring *r, size_t i)
{
	return ring__slot(r, atomic_load_explicit(&r->head, memory_order_relaxed) + i);
}

/* Hands the first n readable slots back to the producer. */
static inline void ring_release(struct ring *r, size_t n)
{
	/* Release: our reads of those slots are done before the producer may reuse them. */
	atomic_store_explicit(&r->head, atomic_load_explicit(&r->head, memory_order_relaxed) + n,
	                      memory_order_release);
}

/* Copies up to max items out and releases them. Returns how many. */
size_t ring_pop_bulk(struct ring *r, void *out, size_t max);

/* True once the producer has closed the ring (check emptiness after this). */
static inline bool ring_producer_closed(struct ring *r)
{
	return atomic_load_explicit(&r->closed, memory_order_acquire);
}

/* ---- any thread ---- */

/* Published slots not yet released, as seen now (a gauge; exact only when both sides
 * are quiet). */
static inline size_t ring_fill(struct ring *r)
{
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);

	return tail >= head ? (size_t)(tail - head) : 0;
}

#endif
