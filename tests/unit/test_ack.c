/*
 * test_ack.c - waiter slots for kafka.ack_mode=kafka (ack.h): a request is answered once
 * every event completed, failed when one failed, timed out at its deadline; completions of
 * a request no longer waiting (timed out, client gone, slot reused) change nothing; the
 * owner is woken once per burst; completions from several threads at once count each
 * event exactly once.
 */
#include "clickd/ack.h"
#include "clickd/metrics.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define T0 1800000000000LL

struct seen {
	int count;
	int slot[64];
	enum ack_result result[64];
};

static void on_done(void *ud, int slot, enum ack_result result)
{
	struct seen *s = ud;

	if (s->count < 64) {
		s->slot[s->count] = slot;
		s->result[s->count] = result;
	}
	s->count++;
}

static int wakes;
static void on_wake(void *arg)
{
	(void)arg;
	wakes++;
}

/* Takes a slot and arms it for `events` events; returns the slot, the token in *token. */
static int arm(struct ack_table *t, uint32_t events, int64_t deadline, uint64_t *token)
{
	int slot = ack_take(t, token);

	cr_assert_geq(slot, 0);
	cr_assert_neq(*token, ACK_TOKEN_NONE);
	ack_arm(t, slot, events, T0, deadline);
	return slot;
}

Test(ack, a_request_is_durable_once_every_event_completed)
{
	struct ack_hub *hub = ack_hub_new(2, 8);
	struct ack_table *t = ack_hub_table(hub, 1);
	struct seen seen = {0};
	uint64_t token;
	int64_t at = 0;
	int slot = arm(t, 3, 100, &token);

	cr_assert_eq(ack_armed(t), 1);
	cr_assert(ack_complete(hub, token, true, &at));
	cr_assert_eq(at, T0, "the request's receive time comes back with each completion");
	cr_assert(ack_complete(hub, token, true, NULL));
	cr_assert_eq(ack_collect(t, on_done, &seen), 0, "one event is still out");
	cr_assert(ack_complete(hub, token, true, NULL));
	cr_assert_eq(ack_collect(t, on_done, &seen), 1);
	cr_assert_eq(seen.slot[0], slot);
	cr_assert_eq(seen.result[0], ACK_DURABLE);
	cr_assert_eq(ack_armed(t), 0);
	cr_assert_not(ack_complete(hub, token, true, NULL), "a fourth completion does not count");
	cr_assert_eq(ack_next_deadline(t), INT64_MAX);
	ack_hub_free(hub);
}

Test(ack, one_failed_event_fails_the_request)
{
	struct ack_hub *hub = ack_hub_new(1, 4);
	struct ack_table *t = ack_hub_table(hub, 0);
	struct seen seen = {0};
	uint64_t token;

	arm(t, 2, 100, &token);
	cr_assert(ack_complete(hub, token, false, NULL));
	cr_assert(ack_complete(hub, token, true, NULL));
	cr_assert_eq(ack_collect(t, on_done, &seen), 1);
	cr_assert_eq(seen.result[0], ACK_FAILED);
	ack_hub_free(hub);
}

Test(ack, completions_of_a_request_no_longer_waiting_change_nothing)
{
	struct ack_hub *hub = ack_hub_new(1, 1);
	struct ack_table *t = ack_hub_table(hub, 0);
	struct seen seen = {0};
	uint64_t old, fresh;
	int slot = arm(t, 2, 100, &old);

	/* The client went away: the slot is released and taken by the next request. */
	ack_release(t, slot);
	cr_assert_eq(arm(t, 2, 200, &fresh), slot, "the one slot is reused");
	cr_assert_neq(fresh, old, "with another generation");
	cr_assert_not(ack_complete(hub, old, true, NULL));
	cr_assert_not(ack_complete(hub, old, true, NULL));
	cr_assert_eq(ack_collect(t, on_done, &seen), 0, "the old events did not count");
	cr_assert(ack_complete(hub, fresh, true, NULL));
	cr_assert(ack_complete(hub, fresh, true, NULL));
	cr_assert_eq(ack_collect(t, on_done, &seen), 1);
	ack_hub_free(hub);
}

Test(ack, ignores_tokens_that_name_no_slot)
{
	struct ack_hub *hub = ack_hub_new(1, 4);

	cr_assert_not(ack_complete(hub, ACK_TOKEN_NONE, true, NULL));
	cr_assert_not(ack_complete(hub, (uint64_t)7 << 48 | 1, true, NULL), "no table 7");
	cr_assert_not(ack_complete(hub, (uint64_t)9 << 32 | 1, true, NULL), "no slot 9");
	cr_assert_not(ack_complete(hub, (uint64_t)1 << 32, true, NULL), "generation 0");
	cr_assert_not(ack_complete(NULL, 1, true, NULL));
	ack_hub_free(hub);
}

Test(ack, answers_eagain_when_every_slot_waits)
{
	struct ack_hub *hub = ack_hub_new(1, 2);
	struct ack_table *t = ack_hub_table(hub, 0);
	uint64_t token;
	int a = ack_take(t, &token), b = ack_take(t, &token);

	cr_assert_geq(a, 0);
	cr_assert_geq(b, 0);
	cr_assert_eq(ack_take(t, &token), -EAGAIN);
	ack_release(t, a); /* taken, never armed: given back */
	cr_assert_eq(ack_take(t, &token), a);
	ack_hub_free(hub);
}

Test(ack, expires_requests_at_their_deadline_oldest_first)
{
	struct ack_hub *hub = ack_hub_new(1, 8);
	struct ack_table *t = ack_hub_table(hub, 0);
	struct seen seen = {0};
	uint64_t t1, t2, t3;
	int s1 = arm(t, 1, 100, &t1), s2 = arm(t, 1, 200, &t2), s3 = arm(t, 1, 300, &t3);
	uint64_t before = metrics_get(METRIC_ACK_TIMEOUTS);

	cr_assert_eq(ack_next_deadline(t), 100);
	cr_assert_eq(ack_expire(t, 99, on_done, &seen), 0);
	/* The second one's events completed, but it was not collected yet: at its deadline
	 * it is answered with its result, not as timed out. */
	cr_assert(ack_complete(hub, t2, true, NULL));
	cr_assert_eq(ack_expire(t, 250, on_done, &seen), 2);
	cr_assert_eq(seen.slot[0], s1);
	cr_assert_eq(seen.result[0], ACK_TIMED_OUT);
	cr_assert_eq(seen.slot[1], s2);
	cr_assert_eq(seen.result[1], ACK_DURABLE);
	cr_assert_eq(metrics_get(METRIC_ACK_TIMEOUTS), before + 1);
	cr_assert_eq(ack_next_deadline(t), 300);
	cr_assert_not(ack_complete(hub, t1, true, NULL), "a late completion is ignored");
	cr_assert_eq(ack_collect(t, on_done, &seen), 0, "the second is not answered twice");
	ack_release(t, s3);
	cr_assert_eq(ack_next_deadline(t), INT64_MAX);
	cr_assert_eq(ack_armed(t), 0);
	ack_hub_free(hub);
}

Test(ack, wakes_the_owner_once_per_burst)
{
	struct ack_hub *hub = ack_hub_new(1, 8);
	struct ack_table *t = ack_hub_table(hub, 0);
	struct seen seen = {0};
	uint64_t tok[4];

	wakes = 0;
	ack_table_set_wake(t, on_wake, NULL);
	for (int i = 0; i < 4; i++)
		arm(t, 1, 100, &tok[i]);
	for (int i = 0; i < 3; i++)
		cr_assert(ack_complete(hub, tok[i], true, NULL));
	cr_assert_eq(wakes, 1);
	cr_assert_eq(ack_collect(t, on_done, &seen), 3);
	cr_assert(ack_complete(hub, tok[3], true, NULL));
	cr_assert_eq(wakes, 2, "a slot ready after the collect wakes again");
	ack_table_set_wake(t, NULL, NULL);
	cr_assert_eq(ack_collect(t, on_done, &seen), 1);
	ack_hub_free(hub);
}

Test(ack, the_pending_gauge_follows_armed_requests)
{
	struct ack_hub *hub = ack_hub_new(1, 8);
	struct ack_table *t = ack_hub_table(hub, 0);
	int64_t before = metrics_gauge_get(GAUGE_ACK_PENDING);
	uint64_t token;
	int slot = arm(t, 5, 100, &token);

	cr_assert_eq(metrics_gauge_get(GAUGE_ACK_PENDING), before + 1);
	ack_release(t, slot);
	ack_release(t, slot); /* twice: nothing more */
	cr_assert_eq(metrics_gauge_get(GAUGE_ACK_PENDING), before);
	ack_hub_free(hub);
}

/* ---- several completing threads ---- */

#define THREADS  4
#define REQUESTS 2000
#define EVENTS   8

struct race {
	struct ack_hub *hub;
	uint64_t tokens[REQUESTS];
	_Atomic int armed;  /* requests armed so far: a completer waits for them */
	_Atomic int missed; /* completions that did not count (none should) */
};

/* Each thread completes two of each request's eight events (one slot = one request). */
static void *completer(void *arg)
{
	struct race *r = arg;
	for (int i = 0; i < REQUESTS; i++) {
		while (atomic_load(&r->armed) <= i)
			;
		for (int e = 0; e < EVENTS / THREADS; e++)
			if (!ack_complete(r->hub, r->tokens[i], true, NULL))
				atomic_fetch_add(&r->missed, 1);
	}
	return NULL;
}

Test(ack, counts_each_event_once_when_threads_complete_at_once)
{
	static struct race r;
	struct ack_table *t;
	struct seen seen = {0};
	pthread_t th[THREADS];
	size_t done = 0;

	memset(&r, 0, sizeof(r));
	r.hub = ack_hub_new(1, REQUESTS);
	t = ack_hub_table(r.hub, 0);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, completer, &r);
	for (int i = 0; i < REQUESTS; i++) {
		int slot = ack_take(t, &r.tokens[i]);
		cr_assert_geq(slot, 0);
		ack_arm(t, slot, EVENTS, T0, 100);
		atomic_store(&r.armed, i + 1);
		done += ack_collect(t, on_done, &seen); /* the owner collects meanwhile */
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	done += ack_collect(t, on_done, &seen);
	cr_assert_eq(atomic_load(&r.missed), 0);
	cr_assert_eq(done, REQUESTS, "each request answered once");
	cr_assert_eq(ack_armed(t), 0);
	ack_hub_free(r.hub);
}
