/*
 * pipeline.h - the ingest side of the pipeline: where one ingest thread puts what it
 * decoded.
 *
 * Events go to the shard that owns their visitor, shard = XXH3-64(visitor key) % shards,
 * through this thread's ring to that shard (one SPSC ring per ingest thread and shard).
 * A request's events are taken all or nothing: pipeline_submit claims a slot and copies
 * the event in (its header and the used part of its arena, never a malloc), then
 * pipeline_commit publishes them all at once, or pipeline_abort gives every slot back
 * when one did not fit. So a 503 means nothing of the request was taken, and the
 * tracker's retry cannot duplicate anything. A full ring is back-pressure: -EAGAIN, and
 * ingest answers 503 (HTTP) or holds the datagram (UDP).
 *
 * Waking: commit marks the shards it published to; pipeline_wake, called once per turn of
 * the ingest loop, wakes them, so a burst of requests costs one wake-up per shard.
 *
 * Dead letters do not cross a ring: they are written by the ingest thread to its own
 * dead-letter sink (its own file sink, or the shared Kafka sink).
 *
 * One pipeline per ingest thread, used from that thread only. It borrows the rings, the
 * shards and the sink; the daemon owns them.
 */
#ifndef CLICKD_PIPELINE_H
#define CLICKD_PIPELINE_H

#include "clickd/event.h"
#include "clickd/metrics.h"
#include "clickd/ring.h"
#include "clickd/shard.h"
#include "clickd/sink.h"

#include <stddef.h>
#include <stdint.h>

struct pipeline;

/* rings[i] (an array of shard_count rings of struct event slots) leads to shards[i].
 * dead_letter_sink is where pipeline_dead_letter writes; dead_letter_payload_bytes
 * bounds the payload kept. NULL when out of memory. */
struct pipeline *pipeline_new(struct ring *rings, struct shard *const *shards, size_t shard_count,
                              struct sink *dead_letter_sink, size_t dead_letter_payload_bytes);
void pipeline_free(struct pipeline *pl);

/* The shard an event belongs to: XXH3-64 of its visitor key, modulo shard_count. */
size_t pipeline_shard_of(const struct event *ev, size_t shard_count);
/* The same from the visitor key's hash (event_visitor_hash): where saved state goes. */
size_t pipeline_shard_of_hash(uint64_t visitor_hash, size_t shard_count);

/* Copies one event into a claimed slot of its shard's ring, not yet visible to the shard.
 * Returns 0, or -EAGAIN when the ring is full (then abort the batch). The event is
 * borrowed (copied). */
int pipeline_submit(struct pipeline *pl, const struct event *ev);

/* kafka.ack_mode=kafka: every event submitted from now on carries `token` (ack.h), the
 * waiter of the request being decoded; ACK_TOKEN_NONE (0) after it. */
void pipeline_set_ack(struct pipeline *pl, uint64_t token);

/* Publishes every event submitted since the last commit or abort (counted in
 * clickd_events_in_total) and marks their shards for pipeline_wake. Returns how many. */
size_t pipeline_commit(struct pipeline *pl);

/* Gives back every slot claimed since the last commit or abort: none of those events is
 * taken. Returns how many. */
size_t pipeline_abort(struct pipeline *pl);

/* Wakes the shards that got events since the last call. */
void pipeline_wake(struct pipeline *pl);

/* The producer's end: closes this thread's rings (after their last events) and wakes the
 * shards, so they finish once every ingest thread has closed. */
void pipeline_close(struct pipeline *pl);

/* Dead letters a full sink refused are held, in order, up to this many bytes per ingest
 * thread; past it they are counted as sink failures and logged. */
#define PIPELINE_HELD_DEAD_LETTER_BYTES (4u << 20)

/* Writes a dead-letter record and counts it under `reason_class`; when the sink answers
 * "full" the record is held and written by pipeline_retry (call it from the ingest
 * thread's timer). peer may be NULL. */
void pipeline_dead_letter(struct pipeline *pl, int64_t received_at_ms,
                          enum metrics_dead_letter_reason reason_class, const char *reason,
                          const char *protocol, const char *peer, const char *payload,
                          size_t payload_len);

/* Writes held dead letters; true when none are left. pipeline_close tries once more and
 * counts what is still held as failed. */
bool pipeline_retry(struct pipeline *pl);

/* Maps a decoder's negative code to its dead-letter reason class. */
enum metrics_dead_letter_reason pipeline_reason_class(int code);

#endif
