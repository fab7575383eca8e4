/*
 * pipeline.h - the ingest side of the pipeline: where one ingest thread puts what it
 * decoded.
 *
 * Events go to the shard that owns their visitor, shard = XXH3-64(visitor key) % shards,
 * through this thread's ring to that shard (one SPSC ring per ingest thread and shard):
 * claimed, copied in (the event's header and the used part of its arena, never a malloc),
 * published and the shard woken. A full ring is back-pressure: pipeline_submit answers
 * -EAGAIN and ingest answers 503 (HTTP) or counts a drop (UDP).
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

/* Puts one event into its shard's ring. Returns 0 (accepted: counted in
 * clickd_events_in_total) or -EAGAIN (the ring is full: answer 503 / count a UDP drop).
 * The event is borrowed (copied). */
int pipeline_submit(struct pipeline *pl, const struct event *ev);

/* The producer's end: closes this thread's rings (after their last events) and wakes the
 * shards, so they finish once every ingest thread has closed. */
void pipeline_close(struct pipeline *pl);

/* Writes a dead-letter record (always: a full sink is retried by the sink, never dropped
 * here silently) and counts it under `reason_class`. peer may be NULL. */
void pipeline_dead_letter(struct pipeline *pl, int64_t received_at_ms,
                          enum metrics_dead_letter_reason reason_class, const char *reason,
                          const char *protocol, const char *peer, const char *payload,
                          size_t payload_len);

/* Maps a decoder's negative code to its dead-letter reason class. */
enum metrics_dead_letter_reason pipeline_reason_class(int code);

#endif
