/*
 * ack.h - waiting for durability: kafka.ack_mode=kafka answers an HTTP collect request only
 * once every event of it is durable (delivered to Kafka, or written to the disk spool).
 *
 * One `struct ack_hub` per process holds one `struct ack_table` per ingest thread; a table
 * has a fixed number of waiter slots (kafka.ack_max_pending), one per request waiting.
 * Nothing is allocated after ack_hub_new.
 *
 * The journey of a request (who owns what):
 *  1. The ingest thread that owns the connection takes a free slot (ack_take) and gets a
 *     64-bit token: table (8 bits) | slot (16 bits) | generation (32 bits, never 0). Every
 *     event of the request carries it (struct event.ack_token) through its ring to its
 *     shard, and from the shard to the sink (sink_write_acked); the Kafka sink carries it in
 *     the message opaque to the delivery report, or next to a spooled record until the
 *     spool has it durably. The token is a name, not a pointer: whoever holds it owns no
 *     memory, and a token that outlives its request is harmless.
 *  2. Before the events are published, the ingest thread arms the slot with the number of
 *     events (ack_arm): a release store of the slot's state word, so no completion can come
 *     before it.
 *  3. Each event is completed exactly once, from any thread (ack_complete): by its shard
 *     (a duplicate dedup drops: its original is already on its way; a record that could not
 *     be written), or by the Kafka sink (delivered, spooled durably, or failed for good).
 *     A completion is one compare-and-swap on the slot's state word, which holds the
 *     generation and the count of events still out: a completion of another generation
 *     (the request timed out, or its client went away, and the slot was reused) finds
 *     another generation and changes nothing. The completion that brings the count to zero
 *     sets the slot's bit in the table's ready bitmap and, when it is the first since the
 *     owner last looked, calls the table's wake function (uv_async_send on the ingest
 *     loop), under the table's lock so that the owner can switch it off at stop.
 *  4. The ingest thread, woken, collects the ready slots (ack_collect) and answers; a slot
 *     whose deadline (ack_arm's deadline_ms, kafka.ack_timeout_ms) passes first is expired
 *     (ack_expire) and answered 503. Either way the slot is released: its generation moves
 *     on, and later completions of the old one are ignored.
 *
 * Threads: ack_complete from any thread; the owner side (take, arm, release, collect,
 * expire, next deadline) from the table's ingest thread only; ack_table_set_wake from the
 * owner. The cost per event is the token copied along and one compare-and-swap; per
 * request a slot, a list link and, per burst of completions, one wake-up.
 */
#ifndef CLICKD_ACK_H
#define CLICKD_ACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A token fits in this many bits (the Kafka sink's message opaque has room for 59). */
#define ACK_TOKEN_BITS 56
#define ACK_MAX_TABLES 256
#define ACK_MAX_SLOTS  65536
#define ACK_MAX_EVENTS 0x7fffffffu /* events one request may wait for */
#define ACK_TOKEN_NONE 0

enum ack_result {
	ACK_DURABLE = 0, /* every event delivered or spooled durably (or a duplicate) */
	ACK_FAILED,      /* an event failed for good: neither in Kafka nor in the spool */
	ACK_TIMED_OUT,   /* the deadline passed first */
};

struct ack_hub;
struct ack_table;

/* tables: ingest threads (<= ACK_MAX_TABLES); slots: waiters per table (1..ACK_MAX_SLOTS).
 * NULL when out of memory or out of range. */
struct ack_hub *ack_hub_new(size_t tables, size_t slots);
/* After every thread that could complete is done (the sinks are freed first). NULL is
 * fine. */
void ack_hub_free(struct ack_hub *hub);
struct ack_table *ack_hub_table(struct ack_hub *hub, size_t index);

/* ---- any thread ---- */

/*
 * Completes one event of the request `token` names: durable (true) or failed for good.
 * Returns true when it counted (the request is still waiting), with the request's receive
 * time (wall clock ms, for clickd_event_to_sink_seconds) in *received_at_ms (may be NULL);
 * false when the token is none, malformed, or of a request no longer waiting.
 */
bool ack_complete(struct ack_hub *hub, uint64_t token, bool durable, int64_t *received_at_ms);

/* ---- the owner (the table's ingest thread) ---- */

/* wake(arg) is called, from the completing thread, when a slot becomes ready and the owner
 * has not been woken since it last collected. NULL: no more calls (at stop: once this
 * returns, wake is never called again). */
void ack_table_set_wake(struct ack_table *t, void (*wake)(void *arg), void *arg);

/* A free slot for a request: its index (>= 0), with the token its events carry in *token;
 * -EAGAIN when every slot waits (the caller answers 503). */
int ack_take(struct ack_table *t, uint64_t *token);
/* The request's events are about to be published: wait for `events` (1..ACK_MAX_EVENTS)
 * completions, until deadline_ms (the caller's monotonic clock). Counts
 * clickd_ack_pending. */
void ack_arm(struct ack_table *t, int slot, uint32_t events, int64_t received_at_ms,
             int64_t deadline_ms);
/* Gives a taken or armed slot back (its events, if any were published, are then ignored
 * when they complete). A free slot: nothing. */
void ack_release(struct ack_table *t, int slot);

/* done(ud, slot, result) for a slot collected or expired; the slot is already released
 * when it is called (its index stays the caller's to look up what it owes), and done may
 * release other slots. */
typedef void (*ack_done_fn)(void *ud, int slot, enum ack_result result);

/* Every armed slot whose events all completed: done with ACK_DURABLE or ACK_FAILED.
 * Returns how many. */
size_t ack_collect(struct ack_table *t, ack_done_fn done, void *ud);
/* Every armed slot whose deadline is <= now_ms, oldest first: done with ACK_TIMED_OUT
 * (counted in clickd_ack_timeouts_total), or with its result when its events completed
 * meanwhile. Returns how many. */
size_t ack_expire(struct ack_table *t, int64_t now_ms, ack_done_fn done, void *ud);
/* The earliest deadline of an armed slot; INT64_MAX when none is armed. */
int64_t ack_next_deadline(const struct ack_table *t);
/* Slots armed now. */
size_t ack_armed(const struct ack_table *t);

#endif
