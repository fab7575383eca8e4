/*
 * pipeline.h - where decoded events and dead letters go after ingest.
 *
 * Today (foundation) the pipeline serialises each record and hands it to the sink on the
 * calling loop's thread. The pipeline issue puts rings and shard workers behind this same
 * interface; ingest code does not change. Owned by the daemon; used from the loop thread.
 */
#ifndef CLICKD_PIPELINE_H
#define CLICKD_PIPELINE_H

#include "clickd/event.h"
#include "clickd/metrics.h"
#include "clickd/sink.h"

#include <stddef.h>
#include <stdint.h>

struct pipeline;

/* sink is borrowed (the daemon owns it); dead_letter_payload_bytes bounds payload copies. */
struct pipeline *pipeline_new(struct sink *sink, size_t dead_letter_payload_bytes);
void pipeline_free(struct pipeline *pl);

/* Takes one event. Returns 0 (accepted: counted in clickd_events_in_total), -EAGAIN (the
 * sink is full: answer 503 / count a UDP drop), or another negative code (the sink failed;
 * already counted and logged by the sink). The event is borrowed. */
int pipeline_submit(struct pipeline *pl, const struct event *ev);

/* Writes a dead-letter record (always: a full sink is retried by the sink, never dropped
 * here silently) and counts it under `reason_class`. peer may be NULL. */
void pipeline_dead_letter(struct pipeline *pl, int64_t received_at_ms,
                          enum metrics_dead_letter_reason reason_class, const char *reason,
                          const char *protocol, const char *peer, const char *payload,
                          size_t payload_len);

/* Maps a decoder's negative code to its dead-letter reason class. */
enum metrics_dead_letter_reason pipeline_reason_class(int code);

#endif
