/*
 * held.h - records a sink refused with "full" (-EAGAIN), kept in order until it takes
 * them (STYLE rule 13: "try again" is not "error").
 *
 * A held queue is a byte buffer of (stream, receive time, key, record) entries, written in the
 * order they came and retried in that order, so a visitor's records never overtake each other.
 * Bounded by max_bytes (0: grows as needed; the caller bounds it another way, as the shard
 * does by stopping its intake while records are held). Owned by one thread.
 */
#ifndef CLICKD_HELD_H
#define CLICKD_HELD_H

struct ack_hub;

#include "clickd/sink.h"

#include <stdbool.h>
#include <stddef.h>

struct held {
	char *buf; /* owned: entries, in order */
	size_t len, cap;
	size_t count;     /* entries held */
	size_t max_bytes; /* 0: no bound */
	/* kafka.ack_mode=kafka: where the ack token of a held record the sink then refuses for
	 * good is completed as failed (borrowed; NULL: none). Set by the owner. */
	struct ack_hub *acks;
};

/* Initialises an empty queue; max_bytes 0 means no bound. */
void held_init(struct held *h, size_t max_bytes);
void held_close(struct held *h);

/* Adds one record at the end (copied), with its event's receive time (sink.h's write; 0:
 * none). Returns 0, -ENOSPC past max_bytes, -ENOMEM. */
int held_push(struct held *h, enum sink_stream stream, const char *key, size_t key_len,
              const char *record, size_t record_len, int64_t received_at_ms);

/* Writes held records to sink, in order, until it answers "full" again (records it
 * refuses for good are dropped from the queue: the sink has counted and logged them).
 * Returns true when none are left. */
bool held_retry(struct held *h, struct sink *sink);

/* Writes a record, or holds it when the sink is full or records are already held (so
 * order is kept). Returns 0 (written or held), or the sink's failure (counted and logged
 * by the sink), or held_push's error when it could not be held. */
int held_write(struct held *h, struct sink *sink, enum sink_stream stream, const char *key,
               size_t key_len, const char *record, size_t record_len, int64_t received_at_ms);

/* held_write for a record an HTTP request waits for (sink_write_acked; ack_token 0: none).
 * The token is held with the record and handed to the sink with it. On 0 the token is the
 * sink's or the queue's; on an error it stays the caller's. */
int held_write_acked(struct held *h, struct sink *sink, enum sink_stream stream, const char *key,
                     size_t key_len, const char *record, size_t record_len, int64_t received_at_ms,
                     uint64_t ack_token);

#endif
