/*
 * ring_stress.h - the two-thread ring stress run, shared by the criterion test
 * (test_ring.c) and the ThreadSanitizer driver (tests/tsan/tsan_ring.c): criterion's
 * runner cannot start under TSan (Snaipe/Criterion#274), so the TSan build runs the same
 * code from a plain main().
 *
 * One producer pushes RING_STRESS_ITEMS numbered items in bulks of 1..16 (copied in with
 * ring_push_bulk, or claimed slot by slot and published), one consumer reads them in place
 * in bulks and checks order and content (a torn or stale slot would not match).
 */
#ifndef CLICKD_TEST_RING_STRESS_H
#define CLICKD_TEST_RING_STRESS_H

#include "clickd/ring.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>

struct ring_stress_item {
	uint64_t seq;
	uint64_t check; /* seq * a constant */
	char pad[48];   /* seq & 0x7f in every byte */
};

static inline struct ring_stress_item ring_stress_make(uint64_t seq)
{
	struct ring_stress_item it = {.seq = seq, .check = seq * 0x9E3779B97F4A7C15ULL};
	memset(it.pad, (int)(seq & 0x7f), sizeof(it.pad));
	return it;
}

static inline int ring_stress_valid(const struct ring_stress_item *it, uint64_t want)
{
	if (it->seq != want || it->check != want * 0x9E3779B97F4A7C15ULL)
		return 0;
	for (size_t i = 0; i < sizeof(it->pad); i++)
		if (it->pad[i] != (char)(want & 0x7f))
			return 0;
	return 1;
}

struct ring_stress {
	struct ring r;
	uint64_t items;    /* to send */
	uint64_t bad;      /* received out of order or torn */
	uint64_t received; /* in total */
};

static void *ring_stress_producer(void *arg)
{
	struct ring_stress *s = arg;
	uint64_t seq = 0, rnd = 88172645463325252ULL;

	while (seq < s->items) {
		if (ring_claim(&s->r) == NULL) {
			sched_yield(); /* full: let the consumer run */
			continue;
		}
		ring_unclaim(&s->r);
		rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
		size_t n = (size_t)(rnd % 16) + 1;
		if (seq + n > s->items)
			n = (size_t)(s->items - seq);
		if (rnd & 0x100) {
			struct ring_stress_item batch[16];
			for (size_t i = 0; i < n; i++)
				batch[i] = ring_stress_make(seq + i);
			seq += ring_push_bulk(&s->r, batch, n);
		} else {
			for (size_t i = 0; i < n; i++) {
				struct ring_stress_item *slot = ring_claim(&s->r);
				if (!slot)
					break;
				*slot = ring_stress_make(seq++);
			}
			ring_publish(&s->r);
		}
	}
	ring_close_producer(&s->r);
	return NULL;
}

static void *ring_stress_consumer(void *arg)
{
	struct ring_stress *s = arg;
	uint64_t want = 0;

	for (;;) {
		size_t n = ring_peek(&s->r, 13);
		if (n == 0) {
			/* Closed is checked before the last look, so nothing published before the
			 * close can be missed. */
			if (ring_producer_closed(&s->r) && ring_peek(&s->r, 1) == 0)
				break;
			sched_yield(); /* the producer may need this core */
			continue;
		}
		for (size_t i = 0; i < n; i++)
			if (!ring_stress_valid(ring_slot_read(&s->r, i), want++))
				s->bad++;
		ring_release(&s->r, n);
	}
	s->received = want;
	return NULL;
}

/* Runs producer and consumer on two threads over a ring of `capacity` slots. Returns 0
 * when both ran (check s->bad and s->received), or -1 when a thread could not start. */
static inline int ring_stress_run(struct ring_stress *s, size_t capacity, uint64_t items)
{
	pthread_t p, c;

	s->items = items;
	s->bad = s->received = 0;
	if (ring_init(&s->r, capacity, sizeof(struct ring_stress_item)) != 0)
		return -1;
	if (pthread_create(&c, NULL, ring_stress_consumer, s) != 0)
		return -1;
	if (pthread_create(&p, NULL, ring_stress_producer, s) != 0)
		return -1;
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	ring_close(&s->r);
	return 0;
}

#endif
