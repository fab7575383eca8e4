/*
 * ring.c - set-up and the copying bulk operations of the SPSC ring (see ring.h for the
 * ownership rules and the memory order). The claim/publish/peek/release fast path is
 * inline in the header.
 */
#include "clickd/ring.h"

#include <errno.h>
#include <stdlib.h>

int ring_init(struct ring *r, size_t capacity, size_t slot_bytes)
{
	memset(r, 0, sizeof(*r));
	if (capacity < 2 || (capacity & (capacity - 1)) != 0 || slot_bytes == 0 ||
	    capacity > SIZE_MAX / slot_bytes)
		return -EINVAL;
	/* Slots start on a cache line, so two threads never share a slot's first line. */
	r->slots = aligned_alloc(RING_CACHE_LINE, (capacity * slot_bytes + RING_CACHE_LINE - 1) &
	                                              ~(size_t)(RING_CACHE_LINE - 1));
	if (!r->slots)
		return -ENOMEM;
	r->mask = capacity - 1;
	r->slot_bytes = slot_bytes;
	atomic_init(&r->head, 0);
	atomic_init(&r->tail, 0);
	atomic_init(&r->closed, false);
	return 0;
}

void ring_close(struct ring *r)
{
	free(r->slots);
	r->slots = NULL;
}

size_t ring_push_bulk(struct ring *r, const void *items, size_t n)
{
	const unsigned char *src = items;
	size_t done = 0;

	for (; done < n; done++) {
		void *slot = ring_claim(r);
		if (!slot)
			break;
		memcpy(slot, src + done * r->slot_bytes, r->slot_bytes);
	}
	ring_publish(r);
	return done;
}

size_t ring_pop_bulk(struct ring *r, void *out, size_t max)
{
	unsigned char *dst = out;
	size_t n = ring_peek(r, max);

	for (size_t i = 0; i < n; i++)
		memcpy(dst + i * r->slot_bytes, ring_slot_read(r, i), r->slot_bytes);
	ring_release(r, n);
	return n;
}
