/*
 * test_held.c - records a full sink refused: kept in order, written when the sink takes
 * them again, bounded, and passed straight through when nothing is held.
 */
#include "clickd/held.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_sink.h"

static struct fake_sink sink;

static void setup(void)
{
	fake_sink_reset(&sink);
}

static void teardown(void)
{
	fake_sink_reset(&sink);
}

TestSuite(held, .init = setup, .fini = teardown);

static int write_n(struct held *h, int i)
{
	char rec[32], key[16];
	int rl = snprintf(rec, sizeof(rec), "{\"n\":%d}", i);
	int kl = snprintf(key, sizeof(key), "k%d", i);

	/* The receive time travels with the record, also while it is held. */
	return held_write(h, &sink.base, SINK_EVENTS, key, (size_t)kl, rec, (size_t)rl,
	                  1800000000000LL + i);
}

Test(held, a_record_goes_straight_to_a_sink_that_takes_it)
{
	struct held h;

	held_init(&h, 0);
	cr_assert_eq(write_n(&h, 1), 0);
	cr_assert_eq(h.count, 0);
	cr_assert_eq(sink.count[SINK_EVENTS], 1);
	cr_assert_str_eq(sink.records[SINK_EVENTS][0].key, "k1");
	held_close(&h);
}

Test(held, refused_records_are_kept_in_order_and_written_later)
{
	struct held h;

	held_init(&h, 0);
	sink.answer = -EAGAIN;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(write_n(&h, i), 0);
	cr_assert_eq(h.count, 3);
	cr_assert_not(held_retry(&h, &sink.base), "still full");
	sink.answer = 0;
	/* While records are held a new one queues behind them, even if the sink would take
	 * it, so order is kept. */
	cr_assert_eq(write_n(&h, 3), 0);
	cr_assert_eq(sink.count[SINK_EVENTS], 0);
	cr_assert(held_retry(&h, &sink.base));
	cr_assert_eq(sink.count[SINK_EVENTS], 4);
	for (int i = 0; i < 4; i++) {
		char want[32];
		snprintf(want, sizeof(want), "{\"n\":%d}", i);
		cr_assert_str_eq(sink.records[SINK_EVENTS][i].text, want);
		cr_assert_eq(sink.records[SINK_EVENTS][i].received_at_ms, 1800000000000LL + i,
		             "a held record keeps its event's receive time");
	}
	held_close(&h);
}

Test(held, a_bound_refuses_what_does_not_fit)
{
	struct held h;
	int i = 0;

	held_init(&h, 256);
	sink.answer = -EAGAIN;
	while (write_n(&h, i) == 0)
		i++;
	cr_assert_eq(write_n(&h, i), -ENOSPC);
	cr_assert_gt(i, 3);
	cr_assert_leq(h.len, 256);
	held_close(&h);
}

Test(held, a_record_the_sink_fails_for_good_is_not_held)
{
	struct held h;

	held_init(&h, 0);
	sink.answer = -EIO;
	cr_assert_eq(write_n(&h, 1), -EIO);
	cr_assert_eq(h.count, 0);
	held_close(&h);
}
