/*
 * tsan_ack.c - ack.h's waiter slots under ThreadSanitizer (criterion cannot run under
 * TSan): one owner thread takes, arms, collects and now and then releases early (a timeout,
 * a client gone) waiter slots of a small table, so that slots are reused all the time,
 * while three threads complete the events of every request. Exits 0 when every request
 * that was not released early was answered exactly once, durable, and no request was
 * answered while one of its events was still out; TSan makes it exit non-zero on a race.
 */
#include "clickd/ack.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define SLOTS      64
#define REQUESTS   20000
#define EVENTS     4
#define COMPLETERS 3

static struct ack_hub *hub;
static uint64_t tokens[REQUESTS];
static _Atomic int published; /* requests armed so far (tokens[] written before) */
static _Atomic uint32_t events_done[REQUESTS];
static int request_of_slot[SLOTS];
static bool released_early[REQUESTS];
static long answered, wrong;
static _Atomic long wakes;

static void wake(void *arg)
{
	(void)arg;
	atomic_fetch_add_explicit(&wakes, 1, memory_order_relaxed);
}

static void *completer(void *arg)
{
	int me = (int)(intptr_t)arg;

	for (int i = 0; i < REQUESTS; i++) {
		while (atomic_load_explicit(&published, memory_order_acquire) <= i)
			sched_yield(); /* 2 cores shared: let the owner run */
		for (int e = 0; e < EVENTS; e++) {
			if ((i + e) % COMPLETERS != me)
				continue;
			/* Counted before the completion: a request answered with an event not
			 * counted here would be answered too early. */
			atomic_fetch_add_explicit(&events_done[i], 1, memory_order_relaxed);
			ack_complete(hub, tokens[i], true, NULL);
		}
	}
	return NULL;
}

static void on_done(void *ud, int slot, enum ack_result result)
{
	int i = request_of_slot[slot];

	(void)ud;
	if (result != ACK_DURABLE || released_early[i] ||
	    atomic_load_explicit(&events_done[i], memory_order_relaxed) != EVENTS)
		wrong++;
	answered++;
}

int main(void)
{
	struct ack_table *t;
	pthread_t th[COMPLETERS];
	long expected = 0;

	hub = ack_hub_new(1, SLOTS);
	if (!hub)
		return 1;
	t = ack_hub_table(hub, 0);
	ack_table_set_wake(t, wake, NULL);
	for (int c = 0; c < COMPLETERS; c++)
		if (pthread_create(&th[c], NULL, completer, (void *)(intptr_t)c) != 0)
			return 1;
	for (int i = 0; i < REQUESTS; i++) {
		int slot;

		while ((slot = ack_take(t, &tokens[i])) < 0) {
			ack_collect(t, on_done, NULL);
			sched_yield();
		}
		request_of_slot[slot] = i;
		ack_arm(t, slot, EVENTS, 1, INT64_MAX);
		atomic_store_explicit(&published, i + 1, memory_order_release);
		if (i % 7 == 3) {
			released_early[i] = true; /* its completions must change nothing now */
			ack_release(t, slot);
		} else {
			expected++;
		}
		if (i % 5 == 0)
			ack_collect(t, on_done, NULL);
	}
	for (int c = 0; c < COMPLETERS; c++)
		pthread_join(th[c], NULL);
	ack_collect(t, on_done, NULL);
	if (wrong != 0 || answered != expected || ack_armed(t) != 0) {
		fprintf(stderr, "tsan_ack: %ld answered of %ld, %ld wrongly, %zu still armed\n",
		        answered, expected, wrong, ack_armed(t));
		return 1;
	}
	ack_table_set_wake(t, NULL, NULL);
	ack_hub_free(hub);
	printf("tsan_ack: ok (%ld requests answered, %ld released early, %ld wake-ups)\n", answered,
	       (long)REQUESTS - expected, atomic_load(&wakes));
	return 0;
}
