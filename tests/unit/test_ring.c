/*
 * test_ring.c - the SPSC ring: capacity, order, wrap-around, bulk operations, the
 * claim/publish protocol, and a two-thread stress test (also run under ThreadSanitizer:
 * the tsan build of dev.sh test).
 */
#include "clickd/ring.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "ring_stress.h"

static void check_item(const struct ring_stress_item *it, uint64_t want)
{
	cr_assert(ring_stress_valid(it, want), "got seq %llu, want %llu",
	          (unsigned long long)it->seq, (unsigned long long)want);
}

Test(ring, rejects_a_capacity_that_is_not_a_power_of_two)
{
	struct ring r;
	cr_assert_eq(ring_init(&r, 0, 8), -EINVAL);
	cr_assert_eq(ring_init(&r, 1, 8), -EINVAL);
	cr_assert_eq(ring_init(&r, 6, 8), -EINVAL);
	cr_assert_eq(ring_init(&r, 8, 0), -EINVAL);
	cr_assert_eq(ring_init(&r, 8, 8), 0);
	cr_assert_eq(ring_capacity(&r), 8);
	ring_close(&r);
}

Test(ring, holds_exactly_its_capacity_and_keeps_order)
{
	struct ring r;
	struct ring_stress_item it, out[16];

	cr_assert_eq(ring_init(&r, 8, sizeof(struct ring_stress_item)), 0);
	for (uint64_t i = 0; i < 8; i++) {
		it = ring_stress_make(i);
		cr_assert_eq(ring_push_bulk(&r, &it, 1), 1);
	}
	it = ring_stress_make(99);
	cr_assert_eq(ring_push_bulk(&r, &it, 1), 0, "a full ring takes nothing");
	cr_assert_null(ring_claim(&r));
	cr_assert_eq(ring_fill(&r), 8);
	cr_assert_eq(ring_pop_bulk(&r, out, 16), 8);
	for (uint64_t i = 0; i < 8; i++)
		check_item(&out[i], i);
	cr_assert_eq(ring_pop_bulk(&r, out, 16), 0, "an empty ring gives nothing");
	cr_assert_eq(ring_fill(&r), 0);
	ring_close(&r);
}

Test(ring, wraps_around_many_times)
{
	struct ring r;
	struct ring_stress_item in[5], out[5];
	uint64_t next_in = 0, next_out = 0;

	cr_assert_eq(ring_init(&r, 8, sizeof(struct ring_stress_item)), 0);
	for (int round = 0; round < 1000; round++) {
		size_t n = (size_t)(round % 5) + 1, pushed, popped;
		for (size_t i = 0; i < n; i++)
			in[i] = ring_stress_make(next_in + i);
		pushed = ring_push_bulk(&r, in, n);
		next_in += pushed;
		popped = ring_pop_bulk(&r, out, (size_t)(round % 3) + 1);
		for (size_t i = 0; i < popped; i++)
			check_item(&out[i], next_out++);
	}
	while (ring_pop_bulk(&r, out, 1) == 1)
		check_item(&out[0], next_out++);
	cr_assert_eq(next_out, next_in);
	cr_assert_gt(next_in, 1000);
	ring_close(&r);
}

Test(ring, claimed_slots_stay_invisible_until_published)
{
	struct ring r;
	struct ring_stress_item *slot;

	cr_assert_eq(ring_init(&r, 4, sizeof(struct ring_stress_item)), 0);
	for (uint64_t i = 0; i < 3; i++) {
		slot = ring_claim(&r);
		cr_assert_not_null(slot);
		*slot = ring_stress_make(i);
	}
	cr_assert_eq(ring_peek(&r, 10), 0);
	cr_assert_eq(ring_publish(&r), 3);
	cr_assert_eq(ring_peek(&r, 10), 3);
	for (size_t i = 0; i < 3; i++)
		check_item(ring_slot_read(&r, i), i);
	ring_release(&r, 2);
	cr_assert_eq(ring_peek(&r, 10), 1);
	check_item(ring_slot_read(&r, 0), 2);
	ring_release(&r, 1);
	ring_close(&r);
}

Test(ring, an_unclaimed_slot_is_reused_by_the_next_claim)
{
	struct ring r;
	struct ring_stress_item *a, *b;

	cr_assert_eq(ring_init(&r, 4, sizeof(struct ring_stress_item)), 0);
	a = ring_claim(&r);
	ring_unclaim(&r);
	b = ring_claim(&r);
	cr_assert_eq(a, b);
	*b = ring_stress_make(7);
	cr_assert_eq(ring_publish(&r), 1);
	check_item(ring_slot_read(&r, 0), 7);
	ring_close(&r);
}

Test(ring, a_closed_producer_is_seen_after_its_last_items)
{
	struct ring r;
	struct ring_stress_item it = ring_stress_make(0), out;

	cr_assert_eq(ring_init(&r, 4, sizeof(struct ring_stress_item)), 0);
	cr_assert_not(ring_producer_closed(&r));
	*(struct ring_stress_item *)ring_claim(&r) = it;
	ring_close_producer(&r); /* publishes what was claimed */
	cr_assert(ring_producer_closed(&r));
	cr_assert_eq(ring_pop_bulk(&r, &out, 1), 1);
	check_item(&out, 0);
	ring_close(&r);
}

Test(ring, two_threads_move_two_million_items_in_order_without_tearing, .timeout = 120)
{
	static struct ring_stress s;

	cr_assert_eq(ring_stress_run(&s, 64, 2000000), 0);
	cr_assert_eq(s.bad, 0, "%llu items out of order or torn", (unsigned long long)s.bad);
	cr_assert_eq(s.received, s.items);
}

Test(ring, two_threads_agree_on_a_ring_of_two_slots, .timeout = 120)
{
	static struct ring_stress s;

	cr_assert_eq(ring_stress_run(&s, 2, 200000), 0);
	cr_assert_eq(s.bad, 0);
	cr_assert_eq(s.received, s.items);
}
