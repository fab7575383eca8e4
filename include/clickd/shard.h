/*
 * shard.h - a shard worker: the thread that owns a share of the visitors.
 *
 * Each shard reads the rings its ingest threads fill (one ring per ingest thread), and for
 * each event, in order: drops duplicates (dedup.h), classifies the channel (channel.h),
 * files it into its visitor's session (session.h), and writes the event record; closed
 * sessions become touchpoint records. Sessions also close on the shard's own tick (the
 * timer wheel), without waiting for events. All of that state is the shard's alone: no
 * lock anywhere.
 *
 * Attribution (attribution.h), one instance per shard: every session is touched into its
 * visitor's path as it opens, an event with a user ID links its visitor to the user, and a
 * conversion (e=cv, or an event name in conversion_events) touches its own session again
 * (so it is on the path), is credited, and becomes one attribution record keyed by the
 * visitor key (an empty touchpoints array when it has no visitor ID or no touchpoint in the
 * lookback). Rollups: sessions (as they open), page views and conversions with their
 * revenue count under their session's touch (an event without a session: its own touch),
 * attributed revenue under each credited touchpoint's; each minute's rows are written when
 * it closes (on events and on the tick) and the open minutes at the finish. A user's
 * devices are linked only when they land on the same shard (visitors are routed by
 * visitor key).
 *
 * Sink: the shard writes to `sink` (borrowed). With sink_owned it is the shard's own
 * (a file sink: polled and flushed by the shard thread); otherwise it is shared and
 * thread-safe for writes (Kafka), polled and flushed by the main thread. A sink that
 * answers "full" (-EAGAIN) makes the shard hold the record and stop taking events until
 * the sink takes it again: the rings fill and ingest answers 503. Nothing accepted is
 * dropped.
 *
 * Waking: the shard sleeps on a futex when its rings are empty, for at most one tick;
 * producers call shard_wake after publishing, which costs a fence and a load unless the
 * shard is asleep (then one futex wake).
 *
 * Stop: once every input ring is closed by its producer and empty, the shard closes its
 * open sessions (end_reason shutdown), writes what it holds, flushes an owned sink, and
 * its thread ends (calling `done`). With keep_sessions_at_stop (session.state_file) the
 * sessions stay open instead: the daemon saves them after shard_join (state_file.h) and,
 * should that fail, closes them with shard_close_sessions.
 */
#ifndef CLICKD_SHARD_H
#define CLICKD_SHARD_H

#include "clickd/ack.h"
#include "clickd/attribution.h"
#include "clickd/channel.h"
#include "clickd/ring.h"
#include "clickd/session.h"
#include "clickd/sink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How often a shard ticks (session expiry, dedup expiry, stats, an owned sink's poll). */
#define SHARD_TICK_MS SESSION_TICK_MS

struct shard_options {
	unsigned index;
	struct ring *const *inputs; /* borrowed: input_count rings of struct event slots */
	size_t input_count;
	struct sink *sink;                    /* borrowed */
	bool sink_owned;                      /* poll and flush it from the shard thread */
	const struct channel_lists *channels; /* borrowed; NULL: no source lists */
	size_t dedup_max_entries;
	int64_t dedup_window_ms;
	struct session_options session;
	int64_t stop_timeout_ms; /* at stop, how long held records may wait for the sink */
	/* With several input rings, an event waits until it is this old (µs since ingest
	 * handed it over) before it is merged, so no earlier one can still be on its way
	 * (pipeline.reorder_ms). Not used with one ring. */
	int64_t reorder_us;
	/* Attribution paths; lookback_ms 0: attribution_options_default() with max_visitors
	 * and max_users from session.max_visitors. */
	struct attribution_options attribution;
	struct attribution_rollup_options rollups; /* max_keys 0: the defaults */
	/* Event names that count as conversions besides e=cv (attribution.conversion_events);
	 * borrowed for shard_new only (copied). */
	const char *const *conversion_events;
	size_t conversion_event_count;
	/* At stop, leave the open sessions open (they are saved: session.state_file). */
	bool keep_sessions_at_stop;
	/* kafka.ack_mode=kafka: the waiters of HTTP requests (ack.h; borrowed). Each event's
	 * ack token goes to the sink with its record (sink_write_acked); a duplicate dedup
	 * drops is completed at once (its original is already on its way), a record that
	 * cannot be written as failed. NULL: nobody waits (tokens are ignored). */
	struct ack_hub *acks;
};

struct shard;

/* NULL with a reason in err when out of memory or an option is out of range. */
struct shard *shard_new(const struct shard_options *opt, char *err, size_t errlen);
/* After shard_join (or when never started). */
void shard_free(struct shard *sh);

/* Starts the thread; done(arg) is called from it as its last act. Returns 0 or -errno. */
int shard_start(struct shard *sh, void (*done)(void *arg), void *arg);
/* Called by a producer after it published to (or closed) one of the shard's rings. */
void shard_wake(struct shard *sh);
/* How far back this shard catches duplicates now (dedup_stats.covered_ms as of its last
 * tick); any thread. */
int64_t shard_dedup_covered_ms(struct shard *sh);
/* When the shard last ticked (CLOCK_MONOTONIC, ms): its heartbeat, which the watchdog reads
 * (it ticks every SHARD_TICK_MS, busy or idle, and every few ms while the sink is full); any
 * thread. */
int64_t shard_heartbeat_ms(struct shard *sh);

/* A reload: the shard classifies with `lists` from its next tick on (any thread; lists
 * is borrowed and must outlive the shard or be retired only once
 * shard_channels_in_use(sh) returns it for every shard). */
void shard_set_channels(struct shard *sh, const struct channel_lists *lists);
const struct channel_lists *shard_channels_in_use(struct shard *sh);

/* Waits for the thread to end (after every input ring was closed). */
void shard_join(struct shard *sh);

/* The work itself, for the thread and for tests that drive a shard without one. */
/* Takes what the rings hold (unless records are held back); returns how many events. */
size_t shard_drain(struct shard *sh);
/* Session, dedup and attribution expiry at now_ms, closed rollup minutes, retry of held
 * records, stats, owned sink's poll. */
void shard_tick(struct shard *sh, int64_t now_ms);
/* Closes every open session as `shutdown` (unless keep_sessions_at_stop), writes the open
 * rollup minutes and flushes (the end of the thread). Returns 0, or -ETIMEDOUT when held records
 * could not be written within stop_timeout_ms. */
int shard_finish(struct shard *sh);
/* True once every input ring is closed and empty. */
bool shard_inputs_done(struct shard *sh);

struct dedup;

/* The state a shard owns, for saving it at stop and restoring it at start
 * (state_file.h): only while its thread does not run (before shard_start, after
 * shard_join). Borrowed. */
struct shard_state {
	struct session_table *sessions;
	struct dedup *dedup;
	struct attribution *attribution;
};
void shard_get_state(struct shard *sh, struct shard_state *out);

/* After shard_join with keep_sessions_at_stop, when the sessions could not be saved: closes
 * them as `shutdown` after all and flushes, as shard_finish does (from the joining thread).
 * Returns what shard_finish returns. */
int shard_close_sessions(struct shard *sh);

#endif
