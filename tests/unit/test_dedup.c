/*
 * test_dedup.c - duplicate suppression: the window, the memory bound and its eviction
 * order, expiry, the hash set under heavy churn (against a naive model), and the
 * fingerprint of events with and without an event ID.
 */
#include "clickd/dedup.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

Test(dedup, refuses_nonsense_bounds)
{
	cr_assert_null(dedup_new(0, 1000));
	cr_assert_null(dedup_new(10, 0));
}

Test(dedup, a_second_sighting_inside_the_window_is_a_duplicate)
{
	struct dedup *d = dedup_new(100, 1000);
	struct dedup_stats st;

	cr_assert_not(dedup_seen(d, 42, 10000));
	cr_assert(dedup_seen(d, 42, 10500));
	cr_assert(dedup_seen(d, 42, 10999));
	cr_assert_not(dedup_seen(d, 43, 10999));
	dedup_get_stats(d, 0, &st);
	cr_assert_eq(st.duplicates, 2);
	cr_assert_eq(st.entries, 2);
	dedup_get_stats(d, 10999, &st);
	cr_assert_eq(st.covered_ms, 1000, "not full: the whole window");
	dedup_free(d);
}

Test(dedup, forgets_ids_older_than_the_window)
{
	struct dedup *d = dedup_new(100, 1000);
	struct dedup_stats st;

	cr_assert_not(dedup_seen(d, 42, 10000));
	/* The window counts from the first sighting; a duplicate does not extend it. */
	cr_assert(dedup_seen(d, 42, 10900));
	cr_assert_not(dedup_seen(d, 42, 11000), "exactly one window later it is new again");
	dedup_get_stats(d, 0, &st);
	cr_assert_eq(st.expired, 1);
	cr_assert_eq(st.entries, 1);
	dedup_free(d);
}

Test(dedup, expire_alone_releases_entries_when_traffic_stops)
{
	struct dedup *d = dedup_new(100, 1000);
	struct dedup_stats st;

	for (uint64_t fp = 1; fp <= 50; fp++)
		dedup_seen(d, fp, 5000 + (int64_t)fp);
	dedup_expire(d, 6020);
	dedup_get_stats(d, 0, &st);
	cr_assert_eq(st.entries, 30, "entries seen at 5001..5020 are past the window");
	dedup_expire(d, 100000);
	dedup_get_stats(d, 0, &st);
	cr_assert_eq(st.entries, 0);
	cr_assert_eq(st.expired, 50);
	dedup_free(d);
}

Test(dedup, when_full_the_oldest_entries_go_first_and_are_counted)
{
	struct dedup *d = dedup_new(4, 60000);
	struct dedup_stats st;

	for (uint64_t fp = 1; fp <= 4; fp++)
		cr_assert_not(dedup_seen(d, fp, 1000));
	cr_assert_not(dedup_seen(d, 5, 1001)); /* evicts 1 */
	cr_assert_not(dedup_seen(d, 6, 1002)); /* evicts 2 */
	dedup_get_stats(d, 0, &st);
	cr_assert_eq(st.evicted, 2);
	cr_assert_eq(st.entries, 4);
	dedup_get_stats(d, 1010, &st);
	cr_assert_eq(st.covered_ms, 1010 - 1000, "full: as far back as the oldest kept");
	cr_assert(dedup_seen(d, 3, 1003));
	cr_assert(dedup_seen(d, 6, 1003));
	cr_assert_not(dedup_seen(d, 1, 1003), "the oldest was forgotten"); /* evicts 3 */
	dedup_free(d);
}

Test(dedup, time_going_backwards_is_treated_as_the_last_time_seen)
{
	struct dedup *d = dedup_new(10, 1000);

	cr_assert_not(dedup_seen(d, 1, 5000));
	cr_assert_not(dedup_seen(d, 2, 4000)); /* filed at 5000 */
	cr_assert(dedup_seen(d, 2, 5999));
	cr_assert_not(dedup_seen(d, 2, 6000));
	dedup_free(d);
}

Test(dedup, fingerprint_zero_is_still_remembered)
{
	struct dedup *d = dedup_new(10, 1000);

	cr_assert_not(dedup_seen(d, 0, 1));
	cr_assert(dedup_seen(d, 0, 2));
	dedup_free(d);
}

/* The hash set under churn: colliding low bits, removals from the middle of probe runs;
 * every answer checked against a naive list of (fp, time). */
Test(dedup, agrees_with_a_naive_model_under_heavy_churn)
{
	enum { MAX = 64, WINDOW = 500, STEPS = 200000 };
	struct dedup *d = dedup_new(MAX, WINDOW);
	uint64_t model_fp[MAX];
	int64_t model_t[MAX];
	size_t model_n = 0;
	uint64_t rnd = 0x2545F4914F6CDD1DULL;
	int64_t now = 0;

	for (int step = 0; step < STEPS; step++) {
		rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
		/* Few distinct values whose low bits collide a lot: long probe runs. */
		uint64_t fp = ((rnd % 200) << 7) | 5;
		bool want = false;
		size_t k;

		now += (int64_t)(rnd >> 60); /* 0..15 ms per step */
		/* Model: expire, look up, evict, insert. */
		while (model_n > 0 && now - model_t[0] >= WINDOW) {
			memmove(model_fp, model_fp + 1, (model_n - 1) * sizeof(*model_fp));
			memmove(model_t, model_t + 1, (model_n - 1) * sizeof(*model_t));
			model_n--;
		}
		for (k = 0; k < model_n; k++)
			if (model_fp[k] == fp)
				want = true;
		if (!want) {
			if (model_n == MAX) {
				memmove(model_fp, model_fp + 1, (MAX - 1) * sizeof(*model_fp));
				memmove(model_t, model_t + 1, (MAX - 1) * sizeof(*model_t));
				model_n--;
			}
			model_fp[model_n] = fp;
			model_t[model_n++] = now;
		}
		cr_assert_eq(dedup_seen(d, fp, now), want, "step %d fp %llu", step,
		             (unsigned long long)fp);
	}
	dedup_free(d);
}

static void set(struct event *ev, enum event_field f, const char *s)
{
	cr_assert_eq(event_set(ev, f, s, strlen(s)), 0);
}

Test(dedup, the_fingerprint_of_an_event_id_is_scoped_by_app)
{
	static struct event a, b;

	event_init(&a);
	event_init(&b);
	set(&a, EF_APP_ID, "shop");
	set(&a, EF_EVENT_ID, "e-1");
	set(&a, EF_URL, "https://a.example/");
	set(&b, EF_APP_ID, "shop");
	set(&b, EF_EVENT_ID, "e-1");
	set(&b, EF_URL, "https://b.example/other");
	cr_assert_eq(dedup_fingerprint(&a), dedup_fingerprint(&b),
	             "same app and event ID: same event, whatever the payload");
	set(&b, EF_APP_ID, "blog");
	cr_assert_neq(dedup_fingerprint(&a), dedup_fingerprint(&b));
	/* The separator keeps "ab"+"c" apart from "a"+"bc". */
	set(&a, EF_APP_ID, "ab");
	set(&a, EF_EVENT_ID, "c");
	set(&b, EF_APP_ID, "a");
	set(&b, EF_EVENT_ID, "bc");
	cr_assert_neq(dedup_fingerprint(&a), dedup_fingerprint(&b));
}

Test(dedup, without_an_event_id_the_payload_is_the_fingerprint)
{
	static struct event a, b;

	event_init(&a);
	set(&a, EF_APP_ID, "shop");
	set(&a, EF_VISITOR_ID, "v1");
	set(&a, EF_URL, "https://a.example/");
	a.client_at_ms = 1700000000000;
	b = a;
	b.received_at_ms = a.received_at_ms + 5000;
	cr_assert_eq(dedup_fingerprint(&a), dedup_fingerprint(&b), "receive time is not payload");
	set(&b, EF_SESSION_ID, "s");
	set(&b, EF_CHANNEL, "Direct");
	cr_assert_eq(dedup_fingerprint(&a), dedup_fingerprint(&b),
	             "what the pipeline adds is not payload");
	b.client_at_ms++;
	cr_assert_neq(dedup_fingerprint(&a), dedup_fingerprint(&b));
	b = a;
	b.type = EVENT_CONVERSION;
	cr_assert_neq(dedup_fingerprint(&a), dedup_fingerprint(&b));
	b = a;
	set(&b, EF_URL, "https://a.example/x");
	cr_assert_neq(dedup_fingerprint(&a), dedup_fingerprint(&b));
	/* Field boundaries matter: url "ab" + referrer "" differs from url "a" + referrer "b". */
	event_init(&a);
	event_init(&b);
	set(&a, EF_URL, "ab");
	set(&b, EF_URL, "a");
	set(&b, EF_REFERRER, "b");
	cr_assert_neq(dedup_fingerprint(&a), dedup_fingerprint(&b));
}
