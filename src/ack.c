/*
 * ack.c - waiter slots for kafka.ack_mode=kafka (see ack.h for the journey of a token).
 *
 * Shared between threads, per slot: the state word (generation << 32 | failed << 31 |
 * events still out) and the request's receive time; per table: the ready bitmap (one bit
 * per slot) and the wake flag. Owner-only, per slot: whether it is free, taken or armed, the
 * generation its token carries, its deadline and its links (the free list, and the list of
 * armed slots in arm order, which is deadline order since every request of a table waits
 * kafka.ack_timeout_ms).
 *
 * Memory order. Arm: received_at is stored, then the state word with release; the events
 * are published later (the ring's release store), so a completer that acquires the state
 * word sees received_at. Complete: a CAS (acq_rel) that checks the generation and takes one
 * from the count; the completer that takes it to zero sets the ready bit, then swaps the
 * wake flag to true and wakes the owner if it was false. Collect: the owner stores the wake
 * flag false, then reads and clears the bitmap words. All four are seq_cst, so in their
 * single total order either the owner's read of a word comes after a completer's bit (and
 * sees it), or the completer's swap comes after the owner's store (and sees false, so it
 * wakes): a ready slot is never left unseen. Release: a store of the next generation with
 * count 0, after which every CAS of the old generation fails.
 */
#include "clickd/ack.h"

#include "clickd/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define COUNT_MASK  UINT64_C(0x7fffffff)
#define FAILED_BIT  (UINT64_C(1) << 31)
#define NONE        UINT32_MAX
#define TOKEN_TABLE 48
#define TOKEN_SLOT  32

_Static_assert(ACK_TOKEN_BITS == TOKEN_TABLE + 8, "8 bits of table above the slot");

enum slot_use { SLOT_FREE = 0, SLOT_TAKEN, SLOT_ARMED };

/* Owner-only bookkeeping of a slot. */
struct slot_own {
	uint32_t gen;  /* the generation its token carries (the state word's, when not free) */
	uint32_t next; /* free list, or the armed list */
	uint32_t prev; /* the armed list */
	uint8_t use;   /* enum slot_use */
	int64_t deadline_ms;
};

struct ack_table {
	/* Shared. */
	_Atomic uint64_t *state;      /* owned: one per slot */
	_Atomic int64_t *received_at; /* owned: one per slot */
	_Atomic uint64_t *ready;      /* owned: ready_words bitmap words */
	size_t ready_words;
	uint32_t index, slots;
	alignas(64) _Atomic bool wake_pending;
	pthread_mutex_t wake_lock; /* guards wake, wake_arg against ack_table_set_wake */
	void (*wake)(void *arg);
	void *wake_arg;

	/* The owner's. */
	alignas(64) struct slot_own *own; /* owned: one per slot */
	uint32_t free_head;
	uint32_t armed_head, armed_tail;
	size_t armed;
};

struct ack_hub {
	size_t count;
	struct ack_table *tables; /* owned: count */
};

static uint64_t state_of(uint32_t gen, uint64_t events)
{
	return (uint64_t)gen << 32 | events;
}

static uint32_t next_gen(uint32_t gen)
{
	return gen + 1 ? gen + 1 : 1; /* 0 never: a token of 0 means none */
}

static int table_init(struct ack_table *t, uint32_t index, uint32_t slots)
{
	pthread_mutex_init(&t->wake_lock, NULL);
	t->index = index;
	t->slots = slots;
	t->ready_words = (slots + 63) / 64;
	t->state = calloc(slots, sizeof(*t->state));
	t->received_at = calloc(slots, sizeof(*t->received_at));
	t->ready = calloc(t->ready_words, sizeof(*t->ready));
	t->own = calloc(slots, sizeof(*t->own));
	if (!t->state || !t->received_at || !t->ready || !t->own)
		return -ENOMEM;
	for (uint32_t i = 0; i < slots; i++) {
		t->own[i].gen = 1;
		t->own[i].next = i + 1 < slots ? i + 1 : NONE;
		t->own[i].prev = NONE;
		atomic_init(&t->state[i], state_of(1, 0));
		atomic_init(&t->received_at[i], 0);
	}
	for (size_t w = 0; w < t->ready_words; w++)
		atomic_init(&t->ready[w], 0);
	t->free_head = 0;
	t->armed_head = t->armed_tail = NONE;
	atomic_init(&t->wake_pending, false);
	return 0;
}

static void table_close(struct ack_table *t)
{
	free(t->state);
	free(t->received_at);
	free(t->ready);
	free(t->own);
	pthread_mutex_destroy(&t->wake_lock);
}

struct ack_hub *ack_hub_new(size_t tables, size_t slots)
{
	struct ack_hub *hub;

	if (tables == 0 || tables > ACK_MAX_TABLES || slots == 0 || slots > ACK_MAX_SLOTS)
		return NULL;
	hub = calloc(1, sizeof(*hub));
	if (!hub)
		return NULL;
	hub->tables = calloc(tables, sizeof(*hub->tables));
	if (!hub->tables) {
		free(hub);
		return NULL;
	}
	for (size_t i = 0; i < tables; i++) {
		hub->count = i + 1;
		if (table_init(&hub->tables[i], (uint32_t)i, (uint32_t)slots) < 0) {
			ack_hub_free(hub);
			return NULL;
		}
	}
	return hub;
}

void ack_hub_free(struct ack_hub *hub)
{
	if (!hub)
		return;
	for (size_t i = 0; i < hub->count; i++)
		table_close(&hub->tables[i]);
	free(hub->tables);
	free(hub);
}

struct ack_table *ack_hub_table(struct ack_hub *hub, size_t index)
{
	return hub && index < hub->count ? &hub->tables[index] : NULL;
}

/* ---- any thread ---- */

static void mark_ready(struct ack_table *t, uint32_t slot)
{
	atomic_fetch_or_explicit(&t->ready[slot / 64], UINT64_C(1) << (slot % 64),
	                         memory_order_seq_cst);
	if (atomic_exchange_explicit(&t->wake_pending, true, memory_order_seq_cst))
		return; /* the owner was woken since it last collected */
	pthread_mutex_lock(&t->wake_lock);
	if (t->wake)
		t->wake(t->wake_arg);
	pthread_mutex_unlock(&t->wake_lock);
}

bool ack_complete(struct ack_hub *hub, uint64_t token, bool durable, int64_t *received_at_ms)
{
	uint32_t table = (uint32_t)(token >> TOKEN_TABLE), slot = (uint32_t)(token >> TOKEN_SLOT);
	uint32_t gen = (uint32_t)token;
	struct ack_table *t;
	uint64_t v, nv;
	int64_t at;

	slot &= 0xffff;
	if (!hub || token == ACK_TOKEN_NONE || gen == 0 || table >= hub->count)
		return false;
	t = &hub->tables[table];
	if (slot >= t->slots)
		return false;
	v = atomic_load_explicit(&t->state[slot], memory_order_acquire);
	do {
		if ((uint32_t)(v >> 32) != gen || (v & COUNT_MASK) == 0)
			return false; /* another request's now, or (cannot happen) none left */
		/* Read before the CAS: when the CAS succeeds the slot still held this
		 * generation, so this is its request's time (a re-arm bumps the generation). */
		at = atomic_load_explicit(&t->received_at[slot], memory_order_relaxed);
		nv = (v - 1) | (durable ? 0 : FAILED_BIT);
	} while (!atomic_compare_exchange_weak_explicit(
	    &t->state[slot], &v, nv, memory_order_acq_rel, memory_order_acquire));
	if (received_at_ms)
		*received_at_ms = at;
	if ((nv & COUNT_MASK) == 0)
		mark_ready(t, slot);
	return true;
}

/* ---- the owner ---- */

void ack_table_set_wake(struct ack_table *t, void (*wake)(void *arg), void *arg)
{
	pthread_mutex_lock(&t->wake_lock);
	t->wake = wake;
	t->wake_arg = arg;
	pthread_mutex_unlock(&t->wake_lock);
}

int ack_take(struct ack_table *t, uint64_t *token)
{
	uint32_t slot = t->free_head;
	struct slot_own *o;

	if (slot == NONE)
		return -EAGAIN;
	o = &t->own[slot];
	t->free_head = o->next;
	o->next = o->prev = NONE;
	o->use = SLOT_TAKEN;
	*token = (uint64_t)t->index << TOKEN_TABLE | (uint64_t)slot << TOKEN_SLOT | o->gen;
	return (int)slot;
}

static void armed_unlink(struct ack_table *t, uint32_t slot)
{
	struct slot_own *o = &t->own[slot];

	if (o->prev != NONE)
		t->own[o->prev].next = o->next;
	else
		t->armed_head = o->next;
	if (o->next != NONE)
		t->own[o->next].prev = o->prev;
	else
		t->armed_tail = o->prev;
	o->next = o->prev = NONE;
}

void ack_arm(struct ack_table *t, int slot, uint32_t events, int64_t received_at_ms,
             int64_t deadline_ms)
{
	struct slot_own *o = &t->own[slot];

	if (o->use != SLOT_TAKEN || events == 0 || events > ACK_MAX_EVENTS)
		return; /* a caller bug; the request then never completes and times out */
	atomic_store_explicit(&t->received_at[slot], received_at_ms, memory_order_relaxed);
	atomic_store_explicit(&t->state[slot], state_of(o->gen, events), memory_order_release);
	o->use = SLOT_ARMED;
	o->deadline_ms = deadline_ms;
	o->prev = t->armed_tail;
	o->next = NONE;
	if (t->armed_tail != NONE)
		t->own[t->armed_tail].next = (uint32_t)slot;
	else
		t->armed_head = (uint32_t)slot;
	t->armed_tail = (uint32_t)slot;
	t->armed++;
	metrics_gauge_add(GAUGE_ACK_PENDING, 1);
}

void ack_release(struct ack_table *t, int slot)
{
	struct slot_own *o;

	if (slot < 0 || (uint32_t)slot >= t->slots)
		return;
	o = &t->own[slot];
	if (o->use == SLOT_FREE)
		return;
	if (o->use == SLOT_ARMED) {
		armed_unlink(t, (uint32_t)slot);
		t->armed--;
		metrics_gauge_add(GAUGE_ACK_PENDING, -1);
	}
	/* From here on every completion of the old generation misses. */
	o->gen = next_gen(o->gen);
	atomic_store_explicit(&t->state[slot], state_of(o->gen, 0), memory_order_release);
	o->use = SLOT_FREE;
	o->next = t->free_head;
	o->prev = NONE;
	t->free_head = (uint32_t)slot;
}

/* The result of an armed slot whose events all completed; false while some are out. */
static bool slot_result(struct ack_table *t, uint32_t slot, enum ack_result *result)
{
	uint64_t v = atomic_load_explicit(&t->state[slot], memory_order_acquire);

	if ((uint32_t)(v >> 32) != t->own[slot].gen || (v & COUNT_MASK) != 0)
		return false;
	*result = v & FAILED_BIT ? ACK_FAILED : ACK_DURABLE;
	return true;
}

static void finish(struct ack_table *t, uint32_t slot, enum ack_result result, ack_done_fn done,
                   void *ud)
{
	ack_release(t, (int)slot);
	if (result == ACK_FAILED)
		metrics_add(METRIC_ACK_FAILURES, 1);
	else if (result == ACK_TIMED_OUT)
		metrics_add(METRIC_ACK_TIMEOUTS, 1);
	done(ud, (int)slot, result);
}

size_t ack_collect(struct ack_table *t, ack_done_fn done, void *ud)
{
	size_t n = 0;

	/* Before the bitmap (see the top of the file): a bit set after our look wakes us. */
	atomic_store_explicit(&t->wake_pending, false, memory_order_seq_cst);
	for (size_t w = 0; w < t->ready_words; w++) {
		uint64_t bits;

		if (atomic_load_explicit(&t->ready[w], memory_order_seq_cst) == 0)
			continue;
		bits = atomic_exchange_explicit(&t->ready[w], 0, memory_order_seq_cst);
		while (bits) {
			uint32_t slot = (uint32_t)(w * 64) + (uint32_t)__builtin_ctzll(bits);
			enum ack_result result;

			bits &= bits - 1;
			/* A bit of a slot released since (timed out, its client gone) or of an
			 * earlier generation: nothing to do. */
			if (t->own[slot].use != SLOT_ARMED || !slot_result(t, slot, &result))
				continue;
			finish(t, slot, result, done, ud);
			n++;
		}
	}
	return n;
}

size_t ack_expire(struct ack_table *t, int64_t now_ms, ack_done_fn done, void *ud)
{
	size_t n = 0;

	while (t->armed_head != NONE && t->own[t->armed_head].deadline_ms <= now_ms) {
		uint32_t slot = t->armed_head;
		enum ack_result result = ACK_TIMED_OUT;

		/* Completed but not collected yet: its answer is what it came to. */
		slot_result(t, slot, &result);
		finish(t, slot, result, done, ud);
		n++;
	}
	return n;
}

int64_t ack_next_deadline(const struct ack_table *t)
{
	return t->armed_head == NONE ? INT64_MAX : t->own[t->armed_head].deadline_ms;
}

size_t ack_armed(const struct ack_table *t)
{
	return t->armed;
}
