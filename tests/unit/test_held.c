/*
 * test_held.c - records a full sink refused: kept in order, written when the sink takes
 * them again, bounded, and passed straight through when nothing is held; a held record's
 * ack token goes to the sink with it, or is completed as failed when the sink refuses the
 * record for good.
 */
#include "clickd/held.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_sink.h"

#include "clickd/ack.h"

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

static void count_failed(void *ud, int slot, enum ack_result result)
{
	(void)slot;
	if (result == ACK_FAILED)
		(*(int *)ud)++;
}

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

Test(held, a_held_record_keeps_its_ack_token_and_a_refusal_for_good_fails_it)
{
	struct held h;
	struct ack_hub *hub = ack_hub_new(1, 4);
	struct ack_table *t = ack_hub_table(hub, 0);
	uint64_t kept, refused;
	int a = ack_take(t, &kept), b = ack_take(t, &refused);
	int failed = 0;

	ack_arm(t, a, 1, 1, INT64_MAX);
	ack_arm(t, b, 1, 1, INT64_MAX);
	/* (The sink keeps the tokens it takes: these two are never completed here.) */
	held_init(&h, 0);
	h.acks = hub;
	sink.answer = -EAGAIN;
	cr_assert_eq(held_write_acked(&h, &sink.base, SINK_EVENTS, "k", 1, "one", 3, 5, kept), 0);
	cr_assert_eq(held_write_acked(&h, &sink.base, SINK_EVENTS, "k", 1, "two", 3, 5, refused),
	             0);
	cr_assert_eq(h.count, 2);
	sink.answer = 0;
	/* The first goes, with its token (the sink's now); then the sink fails one for good. */
	cr_assert_eq(held_write_acked(&h, &sink.base, SINK_EVENTS, "k", 1, "three", 5, 5, 0), 0);
	cr_assert_eq(h.count, 3, "behind the held ones, in order");
	sink.answer = 0;
	cr_assert(held_retry(&h, &sink.base));
	cr_assert_eq(sink.count[SINK_EVENTS], 3);
	cr_assert_eq(sink.records[SINK_EVENTS][0].ack_token, kept);
	cr_assert_eq(sink.records[SINK_EVENTS][1].ack_token, refused);
	cr_assert_eq(sink.records[SINK_EVENTS][2].ack_token, 0);

	/* A held record the sink then refuses for good: its request is answered failed. */
	sink.answer = -EAGAIN;
	b = ack_take(t, &refused);
	cr_assert_geq(b, 0);
	ack_arm(t, b, 1, 1, INT64_MAX);
	cr_assert_eq(held_write_acked(&h, &sink.base, SINK_EVENTS, "k", 1, "four", 4, 5, refused),
	             0);
	cr_assert_eq(h.count, 1);
	sink.answer = -EIO;
	cr_assert(held_retry(&h, &sink.base), "dropped: the sink counted it");
	cr_assert_eq(ack_collect(t, count_failed, &failed), 1);
	cr_assert_eq(failed, 1);
	held_close(&h);
	ack_hub_free(hub);
}
