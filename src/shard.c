/*
 * shard.c - the shard worker thread (see shard.h).
 *
 * Loop: drain the input rings in batches (processing each event in its ring slot, which
 * the shard owns until it releases it), tick every SHARD_TICK_MS, sleep on a futex when
 * there is nothing to do. The sleep/wake handshake is Dekker's: the shard stores
 * `sleeping = 1`, fences, and looks at the rings once more before it waits; a producer
 * publishes (a release store of the ring's tail), fences, and looks at `sleeping`. With a
 * seq_cst fence on both sides at least one of them sees the other's store, so a wake-up is
 * never lost; the futex wait itself re-checks `sleeping` atomically.
 *
 * Held records: when the sink answers -EAGAIN the record is copied into `held` (in order)
 * and the shard stops draining rings until `held` is written out again, retrying every
 * HELD_RETRY_MS. While records are held the session wheel does not advance either, so a
 * long sink outage cannot pile up touchpoints in memory; sessions expire once it is over.
 * Bounded: draining stops with at most one batch's records held, plus one tick's worth of
 * touchpoints (and of rollup rows, which close on the tick only while nothing is held).
 *
 * Attribution and rollups (see shard.h) are the shard's too: attribute_event runs after
 * the session is known, and writes the attribution record of a conversion after its event
 * record. Rollup rows are written from the rollups' callback, into a buffer of their own,
 * whenever the rollup clock closes a minute (an event's receive time or the tick).
 */
#include "clickd/shard.h"

#include "clickd/ack.h"
#include "clickd/dedup.h"
#include "clickd/held.h"
#include "clickd/log.h"
#include "clickd/metrics.h"
#include "clickd/record.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHARD_BATCH   64  /* events taken from one ring before looking at the next */
#define MERGE_BUDGET  512 /* events merged from several rings in one drain */
#define HELD_RETRY_MS 10
#define KEY_MAX_BYTES (2 * EVENT_ARENA_BYTES + 1)

struct shard {
	struct shard_options opt;
	struct ring **inputs; /* owned array of borrowed rings */
	struct dedup *dedup;
	struct session_table *sessions;

	char *record; /* owned: RECORD_EVENT_MAX_BYTES */
	char *key;    /* owned: KEY_MAX_BYTES */

	struct attribution *attribution;
	struct attribution_rollup *rollups;
	struct attribution_result *result; /* owned: one conversion's credits, reused */
	char *attribution_record;          /* owned: RECORD_ATTRIBUTION_MAX_BYTES */
	char rollup_record[RECORD_ROLLUP_MAX_BYTES];
	/* attribution.conversion_events, copied: views into conversion_names (owned). */
	struct conversion_name {
		const char *s;
		size_t len;
	} * conversion_events;
	size_t conversion_event_count;
	char *conversion_names;

	struct held held; /* records the sink refused with "full", in order */
	int64_t next_retry_ms;

	/* What was last added to the process-wide metrics (they get deltas). */
	struct dedup_stats dedup_published;
	struct session_stats session_published;
	struct attribution_stats attribution_published;
	struct attribution_rollup_stats rollup_published;

	/* Several rings: events merged in order_us order (see shard_drain). */
	size_t *pending;          /* owned: per ring, events seen but left for later */
	int64_t next_eligible_us; /* when the oldest left event may go; 0: none left */

	_Atomic int64_t dedup_covered_ms; /* read by the main thread for the gauge */
	_Atomic int64_t heartbeat_ms;     /* CLOCK_MONOTONIC of the last tick (watchdog) */
	/* A reload hands new channel lists over: taken at the next tick. */
	_Atomic(const struct channel_lists *) channels_next;
	_Atomic(const struct channel_lists *) channels_in_use;

	pthread_t thread;
	bool started;
	_Atomic uint32_t sleeping; /* the futex word */
	void (*done)(void *arg);
	void *done_arg;
};

static int64_t wall_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- writing records ---- */

/* Writes a record, or holds it while the sink is full. received_at_ms: the receive time of
 * the event it comes from (0: none), for clickd_event_to_sink_seconds. Returns true when
 * the sink took the record now (not held back, not failed). */
/* ack_token: the waiter of the request the event came from (0: none), handed to the sink
 * with the record (or held with it); completed here as failed when neither can take it. */
static bool emit_at(struct shard *sh, enum sink_stream stream, int64_t received_at_ms,
                    uint64_t ack_token, const char *key, size_t key_len, const char *rec,
                    size_t rec_len)
{
	size_t before = sh->held.count;
	int rc = held_write_acked(&sh->held, sh->opt.sink, stream, key, key_len, rec, rec_len,
	                          received_at_ms, ack_token);

	if (sh->held.count > before)
		metrics_add(METRIC_SHARD_SINK_FULL, 1);
	if (rc == -ENOMEM) {
		sink_count_failed(sh->opt.sink, stream, 1);
		log_error("shard",
		          "msg=\"out of memory holding a record for a full sink\" shard=%u",
		          sh->opt.index);
	}
	if (rc < 0 && ack_token)
		ack_complete(sh->opt.acks, ack_token, false, NULL);
	return rc == 0 && sh->held.count == 0;
}

/* A record that comes from no single event (touchpoints, ...). */
static bool emit(struct shard *sh, enum sink_stream stream, const char *key, size_t key_len,
                 const char *rec, size_t rec_len)
{
	return emit_at(sh, stream, 0, 0, key, key_len, rec, rec_len);
}

/* The waiter of ev's request, if it has one and this clickd waits (kafka.ack_mode). */
static uint64_t ack_token_of(const struct shard *sh, const struct event *ev)
{
	return sh->opt.acks ? ev->ack_token : 0;
}

/* ---- events and sessions ---- */

static void on_session_closed(void *ud, const struct session *s, enum session_end_reason reason)
{
	struct shard *sh = ud;
	size_t app_len, vid_len;
	const char *app = session_get(s, SF_APP_ID, &app_len);
	const char *vid = session_get(s, SF_VISITOR_ID, &vid_len);
	int len = record_touchpoint_json(s, reason, channel_name((enum channel)s->channel),
	                                 sh->record, RECORD_EVENT_MAX_BYTES);

	if (len < 0)
		return; /* cannot happen: a session's strings are bounded far below the buffer */
	if (app_len)
		memcpy(sh->key, app, app_len);
	sh->key[app_len] = '\x1f';
	if (vid_len)
		memcpy(sh->key + app_len + 1, vid, vid_len);
	emit(sh, SINK_TOUCHPOINTS, sh->key, app_len + 1 + vid_len, sh->record, (size_t)len);
}

/* ---- attribution and rollups ---- */

static bool is_conversion(const struct shard *sh, const struct event *ev)
{
	size_t len;
	const char *name;

	if (ev->type == EVENT_CONVERSION)
		return true;
	name = event_get(ev, EF_NAME, &len);
	for (size_t i = 0; name && i < sh->conversion_event_count; i++)
		if (sh->conversion_events[i].len == len &&
		    memcmp(sh->conversion_events[i].s, name, len) == 0)
			return true;
	return false;
}

/* Who the event is about, for attribution: its visitor (keyed as sessions are) and user. */
static void ids_of(const struct event *ev, struct attribution_ids *ids)
{
	size_t app_len, uid_len;
	const char *app = event_get(ev, EF_APP_ID, &app_len);
	const char *uid = event_get(ev, EF_USER_ID, &uid_len);

	ids->visitor_hash = event_visitor_hash(ev);
	ids->user_hash = uid ? attribution_user_hash(app, app_len, uid, uid_len) : 0;
	ids->visitor_id = event_get(ev, EF_VISITOR_ID, &ids->visitor_id_len);
}

static void touch_string(char *dst, size_t dst_bytes, const struct session *s, enum session_field f)
{
	size_t len;
	const char *v = session_get(s, f, &len);

	attribution_set_string(dst, dst_bytes, v, len);
}

/* The session's touchpoint (its start and touch). */
static void touchpoint_of(const struct session *s, struct attribution_touchpoint *tp)
{
	tp->started_at_ms = s->started_at_ms;
	tp->channel = (uint8_t)s->channel;
	attribution_set_string(tp->session_id, sizeof(tp->session_id), s->id, SESSION_ID_CHARS);
	touch_string(tp->source, sizeof(tp->source), s, SF_SOURCE);
	touch_string(tp->medium, sizeof(tp->medium), s, SF_MEDIUM);
	touch_string(tp->campaign, sizeof(tp->campaign), s, SF_CAMPAIGN);
	touch_string(tp->click_id_type, sizeof(tp->click_id_type), s, SF_CLICK_ID_TYPE);
	touch_string(tp->affiliate_id, sizeof(tp->affiliate_id), s, SF_AFFILIATE_ID);
}

/* The rollup key of a session: its touch (cut to the rollup bounds as the touchpoint's
 * strings are, so that a touchpoint's attributed revenue lands in its session's row). */
static struct attribution_rollup_key session_rollup_key(const struct session *s)
{
	struct attribution_rollup_key key = {.channel = s->channel};

	key.app_id = session_get(s, SF_APP_ID, &key.app_id_len);
	key.source = session_get(s, SF_SOURCE, &key.source_len);
	key.medium = session_get(s, SF_MEDIUM, &key.medium_len);
	key.campaign = session_get(s, SF_CAMPAIGN, &key.campaign_len);
	return key;
}

/* The rollup key of an event without a session: its own touch. */
static struct attribution_rollup_key event_rollup_key(const struct event *ev, enum channel ch)
{
	struct attribution_rollup_key key = {.channel = (int)ch};

	key.app_id = event_get(ev, EF_APP_ID, &key.app_id_len);
	key.source = event_get(ev, EF_SOURCE, &key.source_len);
	key.medium = event_get(ev, EF_MEDIUM, &key.medium_len);
	key.campaign = event_get(ev, EF_CAMPAIGN, &key.campaign_len);
	return key;
}

/* Writes one closed rollup row (the rollups' callback), keyed by its key's strings. */
static void on_rollup_row(void *ud, const struct attribution_rollup_row *row)
{
	struct shard *sh = ud;
	const char *channel = row->other ? "(other)" : channel_name((enum channel)row->channel);
	const char *parts[5] = {row->app_id, channel, row->source, row->medium, row->campaign};
	char key[sizeof(row->app_id) + sizeof(row->source) + sizeof(row->medium) +
	         sizeof(row->campaign) + 32];
	size_t key_len = 0;
	int len = record_rollup_json(row, sh->rollup_record, sizeof(sh->rollup_record));

	if (len < 0)
		return; /* cannot happen: a row's strings are bounded far below the buffer */
	for (int i = 0; i < 5; i++) {
		size_t n = strlen(parts[i]);

		if (i)
			key[key_len++] = '\x1f';
		memcpy(key + key_len, parts[i], n);
		key_len += n;
	}
	emit(sh, SINK_ROLLUPS, key, key_len, sh->rollup_record, (size_t)len);
}

/* Credits conversion ev (ids NULL: it has no visitor, so no path) and writes its
 * attribution record; its attributed revenue goes to the rollups. */
static void convert(struct shard *sh, const struct event *ev, const struct attribution_ids *ids)
{
	struct attribution_result *r = sh->result;
	double revenue = ev->has_revenue ? ev->revenue : 0;
	size_t app_len;
	const char *app = event_get(ev, EF_APP_ID, &app_len);
	int key_len, len, rc = -ENOENT;

	if (ids) {
		rc = attribution_convert(sh->attribution, ids, ev->received_at_ms, revenue, r);
	} else {
		r->converted_at_ms = ev->received_at_ms;
		r->revenue = revenue;
		r->count = r->devices = r->cut = 0;
	}
	if (rc < 0)
		metrics_add(METRIC_CONVERSIONS_WITHOUT_PATH, 1);
	else
		attribution_rollup_add_result(sh->rollups, app, app_len, r, ev->received_at_ms);
	len = record_attribution_json(ev, r, sh->attribution_record, RECORD_ATTRIBUTION_MAX_BYTES);
	key_len = event_visitor_key(ev, sh->key, KEY_MAX_BYTES);
	if (len < 0 || key_len < 0)
		return; /* cannot happen: both buffers hold the worst case */
	emit(sh, SINK_ATTRIBUTION, sh->key, (size_t)key_len, sh->attribution_record, (size_t)len);
	metrics_add(METRIC_ATTRIBUTION_RECORDS, 1);
}

/*
 * The event's part in attribution and rollups. s is its session (NULL: no visitor ID),
 * ch its channel. A session that this event opened (events == 1) is touched into the
 * visitor's path, and so is a conversion's session, again: a path touched at the start of
 * its session may have lost it since (a memory bound), and a conversion must find its own
 * session. Other events with a user ID link their visitor to the user.
 */
static void attribute_event(struct shard *sh, const struct event *ev, const struct session *s,
                            enum channel ch)
{
	bool conversion = is_conversion(sh, ev);
	int64_t now = ev->received_at_ms;
	struct attribution_rollup_counts c = {0};
	struct attribution_rollup_key key;
	struct attribution_touchpoint tp;
	struct attribution_ids ids;

	if (s) {
		key = session_rollup_key(s);
		c.sessions = s->events == 1;
		if (s->events == 1 || conversion) {
			ids_of(ev, &ids);
			touchpoint_of(s, &tp);
			attribution_touch(sh->attribution, &ids, &tp, now);
		} else if (event_has(ev, EF_USER_ID)) {
			ids_of(ev, &ids);
			attribution_link_user(sh->attribution, &ids, now);
		}
	} else {
		key = event_rollup_key(ev, ch);
	}
	c.page_views = ev->type == EVENT_PAGE_VIEW;
	if (conversion) {
		c.conversions = 1;
		c.revenue = ev->has_revenue ? ev->revenue : 0;
	}
	if (c.sessions || c.page_views || c.conversions)
		attribution_rollup_add(sh->rollups, &key, &c, now, now);
	if (conversion)
		convert(sh, ev, s ? &ids : NULL);
}

static void handle_event(struct shard *sh, struct event *ev)
{
	size_t source_len, medium_len, campaign_len, affiliate_len;
	const char *source, *medium, *campaign, *affiliate, *name;
	const struct session *s;
	enum channel ch;
	int key_len, len;

	if (dedup_seen(sh->dedup, dedup_fingerprint(ev), ev->received_at_ms)) {
		/* A duplicate: its original is already on its way (delivered, spooled, or in
		 * Kafka's queue), so its request need not wait for it (ack.h). */
		ack_complete(sh->opt.acks, ack_token_of(sh, ev), true, NULL);
		return;
	}
	source = event_get(ev, EF_SOURCE, &source_len);
	medium = event_get(ev, EF_MEDIUM, &medium_len);
	campaign = event_get(ev, EF_CAMPAIGN, &campaign_len);
	affiliate = event_get(ev, EF_AFFILIATE_ID, &affiliate_len);
	ch = channel_classify(sh->opt.channels, source, source_len, medium, medium_len, campaign,
	                      campaign_len, affiliate, affiliate_len);
	name = channel_name(ch);
	/* The arena keeps EVENT_ARENA_RESERVE bytes for these two: they always fit. */
	event_set(ev, EF_CHANNEL, name, strlen(name));
	s = session_track(sh->sessions, ev, (int)ch);
	if (s) {
		event_set(ev, EF_SESSION_ID, s->id, SESSION_ID_CHARS);
		ev->session_index = s->index;
	}
	key_len = event_visitor_key(ev, sh->key, KEY_MAX_BYTES);
	len = record_event_json(ev, sh->record, RECORD_EVENT_MAX_BYTES);
	if (key_len < 0 || len < 0) {
		/* cannot happen: both buffers hold the worst case */
		ack_complete(sh->opt.acks, ack_token_of(sh, ev), false, NULL);
		return;
	}
	emit_at(sh, SINK_EVENTS, ev->received_at_ms, ack_token_of(sh, ev), sh->key, (size_t)key_len,
	        sh->record, (size_t)len);
	attribute_event(sh, ev, s, ch);
}

static int64_t monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool all_inputs_closed(struct shard *sh)
{
	for (size_t r = 0; r < sh->opt.input_count; r++)
		if (!ring_producer_closed(sh->inputs[r]))
			return false;
	return true;
}

/*
 * Several ingest threads feed a shard, one ring each, and a visitor's beacons may come
 * through any of them (one connection each). Taking the rings one after the other would
 * let a later beacon overtake an earlier one that was published a moment after the shard
 * looked at its ring: enough to open a session with an internal page view before the
 * campaign landing it followed. So the rings are merged by order_us (when ingest handed
 * each event over; every ring is in that order), and an event goes only once it is
 * reorder_us old: any event stamped before it has been published by then (publishing
 * takes microseconds; reorder_us is a generous bound for a descheduled ingest thread),
 * so it is in its ring and the merge takes it first. Once every ring is closed nothing
 * more can come, and the rest goes at once.
 */
static size_t drain_merged(struct shard *sh)
{
	size_t n = sh->opt.input_count, total = 0;
	size_t avail[64], idx[64];
	int64_t horizon = all_inputs_closed(sh) ? INT64_MAX : monotonic_us() - sh->opt.reorder_us;

	sh->next_eligible_us = 0;
	for (size_t r = 0; r < n; r++) {
		avail[r] = ring_peek(sh->inputs[r], SHARD_BATCH);
		idx[r] = 0;
	}
	while (total < MERGE_BUDGET && sh->held.count == 0) {
		size_t best = n;
		int64_t best_order = INT64_MAX;

		for (size_t r = 0; r < n; r++) {
			const struct event *e;
			if (idx[r] == avail[r])
				continue;
			e = ring_slot_read(sh->inputs[r], idx[r]);
			if (e->order_us < best_order) {
				best_order = e->order_us;
				best = r;
			}
		}
		if (best == n)
			break;
		if (best_order > horizon) {
			sh->next_eligible_us = best_order + sh->opt.reorder_us;
			break;
		}
		handle_event(sh, ring_slot_read(sh->inputs[best], idx[best]));
		total++;
		if (++idx[best] == avail[best]) {
			/* This ring's batch is used up: look at what it has next before merging on.
			 */
			ring_release(sh->inputs[best], idx[best]);
			idx[best] = 0;
			avail[best] = ring_peek(sh->inputs[best], SHARD_BATCH);
		}
	}
	for (size_t r = 0; r < n; r++) {
		if (idx[r])
			ring_release(sh->inputs[r], idx[r]);
		sh->pending[r] = ring_peek(sh->inputs[r], SIZE_MAX);
	}
	return total;
}

size_t shard_drain(struct shard *sh)
{
	size_t total = 0;

	if (sh->held.count > 0)
		return 0;
	if (sh->opt.input_count > 1)
		return drain_merged(sh);
	for (size_t r = 0; r < sh->opt.input_count; r++) {
		struct ring *ring = sh->inputs[r];
		size_t n = ring_peek(ring, SHARD_BATCH);

		for (size_t i = 0; i < n; i++)
			handle_event(sh, ring_slot_read(ring, i));
		if (n)
			ring_release(ring, n);
		total += n;
	}
	return total;
}

bool shard_inputs_done(struct shard *sh)
{
	for (size_t r = 0; r < sh->opt.input_count; r++) {
		/* Closed first, then empty: nothing published before the close is missed. */
		if (!ring_producer_closed(sh->inputs[r]) || ring_peek(sh->inputs[r], 1) != 0)
			return false;
	}
	return true;
}

static void publish_attribution_stats(struct shard *sh)
{
	struct attribution_stats a;
	struct attribution_rollup_stats r;
	struct attribution_stats *pa = &sh->attribution_published;
	struct attribution_rollup_stats *pr = &sh->rollup_published;

	attribution_get_stats(sh->attribution, &a);
	attribution_rollup_get_stats(sh->rollups, &r);
	metrics_add(METRIC_ATTRIBUTION_EVICTED, a.visitors_evicted + a.visitors_evicted_for_space -
	                                            pa->visitors_evicted -
	                                            pa->visitors_evicted_for_space);
	metrics_gauge_add(GAUGE_ATTRIBUTION_PATHS, (int64_t)a.visitors - (int64_t)pa->visitors);
	metrics_gauge_add(GAUGE_ATTRIBUTION_TOUCHPOINTS,
	                  (int64_t)a.touchpoints - (int64_t)pa->touchpoints);
	metrics_add(METRIC_ROLLUP_ROWS, r.rows_closed - pr->rows_closed);
	metrics_add(METRIC_ROLLUP_LATE, r.late - pr->late);
	metrics_add(METRIC_ROLLUP_OTHER, r.other_records - pr->other_records);
	*pa = a;
	*pr = r;
}

/* Adds what changed since the last call to the process-wide metrics. */
static void publish_stats(struct shard *sh)
{
	struct dedup_stats d;
	struct session_stats s;
	struct dedup_stats *pd = &sh->dedup_published;
	struct session_stats *ps = &sh->session_published;

	dedup_get_stats(sh->dedup, wall_clock_ms(), &d);
	atomic_store_explicit(&sh->dedup_covered_ms, d.covered_ms, memory_order_relaxed);
	session_get_stats(sh->sessions, &s);
	metrics_add(METRIC_DUPLICATES, d.duplicates - pd->duplicates);
	metrics_add(METRIC_DEDUP_EVICTED, d.evicted - pd->evicted);
	metrics_gauge_add(GAUGE_DEDUP_ENTRIES, (int64_t)d.entries - (int64_t)pd->entries);
	metrics_add(METRIC_SESSIONS_STARTED, s.started - ps->started);
	metrics_add(METRIC_EVENTS_WITHOUT_SESSION, s.no_visitor - ps->no_visitor);
	metrics_add(METRIC_REVENUE_OTHER_CURRENCY,
	            s.revenue_other_currency - ps->revenue_other_currency);
	for (int r = 0; r < SESSION_END__COUNT; r++)
		metrics_session_ended(r, s.ended[r] - ps->ended[r]);
	metrics_gauge_add(GAUGE_SESSIONS_OPEN, (int64_t)s.open - (int64_t)ps->open);
	metrics_gauge_add(GAUGE_VISITORS, (int64_t)s.visitors - (int64_t)ps->visitors);
	*pd = d;
	*ps = s;
	publish_attribution_stats(sh);
}

void shard_tick(struct shard *sh, int64_t now_ms)
{
	const struct channel_lists *next =
	    atomic_exchange_explicit(&sh->channels_next, NULL, memory_order_acquire);

	if (next) {
		sh->opt.channels = next;
		atomic_store_explicit(&sh->channels_in_use, next, memory_order_release);
	}
	if (sh->held.count == 0 || held_retry(&sh->held, sh->opt.sink)) {
		session_tick(sh->sessions, now_ms);
		attribution_rollup_tick(sh->rollups, now_ms);
	}
	dedup_expire(sh->dedup, now_ms);
	attribution_expire(sh->attribution, now_ms);
	if (sh->opt.sink_owned)
		sh->opt.sink->ops->poll(sh->opt.sink, now_ms);
	publish_stats(sh);
	atomic_store_explicit(&sh->heartbeat_ms, monotonic_us() / 1000, memory_order_relaxed);
}

int shard_finish(struct shard *sh)
{
	int64_t deadline = wall_clock_ms() + sh->opt.stop_timeout_ms;
	int rc = 0;

	if (!sh->opt.keep_sessions_at_stop)
		session_close_all(sh->sessions, SESSION_END_SHUTDOWN);
	attribution_rollup_flush(sh->rollups);
	while (sh->held.count > 0 && !held_retry(&sh->held, sh->opt.sink)) {
		struct timespec pause = {0, HELD_RETRY_MS * 1000000L};
		if (wall_clock_ms() >= deadline) {
			log_error("shard",
			          "msg=\"sink still full at stop; records not written\" shard=%u "
			          "count=%zu",
			          sh->opt.index, sh->held.count);
			rc = -ETIMEDOUT;
			break;
		}
		nanosleep(&pause, NULL); /* the shard's own thread, at its very end */
	}
	if (sh->opt.sink_owned && sh->opt.sink->ops->flush(sh->opt.sink, -1) < 0)
		rc = -EIO;
	publish_stats(sh);
	return rc;
}

void shard_get_state(struct shard *sh, struct shard_state *out)
{
	out->sessions = sh->sessions;
	out->dedup = sh->dedup;
	out->attribution = sh->attribution;
}

int shard_close_sessions(struct shard *sh)
{
	sh->opt.keep_sessions_at_stop = false;
	return shard_finish(sh);
}

/* ---- the thread ---- */

static long futex(_Atomic uint32_t *word, int op, uint32_t value, const struct timespec *timeout)
{
	return syscall(SYS_futex, (uint32_t *)word, op, value, timeout, NULL, 0);
}

/* Is there something the last drain did not see: new events, or every ring closed? */
static bool any_input_ready(struct shard *sh)
{
	for (size_t r = 0; r < sh->opt.input_count; r++)
		if (ring_peek(sh->inputs[r], SIZE_MAX) > sh->pending[r])
			return true;
	return all_inputs_closed(sh);
}

static void shard_sleep(struct shard *sh, int64_t us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};

	atomic_store_explicit(&sh->sleeping, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	if (sh->held.count == 0 && any_input_ready(sh)) {
		atomic_store_explicit(&sh->sleeping, 0, memory_order_relaxed);
		return;
	}
	futex(&sh->sleeping, FUTEX_WAIT_PRIVATE, 1, &ts);
	atomic_store_explicit(&sh->sleeping, 0, memory_order_relaxed);
}

void shard_wake(struct shard *sh)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&sh->sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&sh->sleeping, 0, memory_order_relaxed))
		futex(&sh->sleeping, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void *shard_main(void *arg)
{
	struct shard *sh = arg;
	int64_t next_tick = 0;
	char name[16];

	snprintf(name, sizeof(name), "clickd-shard%u", sh->opt.index);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		size_t n = shard_drain(sh);
		int64_t now = wall_clock_ms();

		if (now >= next_tick || (sh->held.count > 0 && now >= sh->next_retry_ms)) {
			shard_tick(sh, now);
			if (now >= next_tick)
				next_tick = now + SHARD_TICK_MS;
			sh->next_retry_ms = now + HELD_RETRY_MS;
		}
		int64_t wait_us;

		if (n > 0)
			continue;
		if (sh->held.count == 0 && shard_inputs_done(sh))
			break;
		wait_us = sh->held.count > 0 ? HELD_RETRY_MS * 1000 : (next_tick - now) * 1000;
		if (sh->next_eligible_us > 0 && sh->next_eligible_us - monotonic_us() < wait_us)
			wait_us = sh->next_eligible_us - monotonic_us();
		shard_sleep(sh, wait_us > 0 ? wait_us : 0);
	}
	shard_finish(sh);
	if (sh->done)
		sh->done(sh->done_arg);
	return NULL;
}

int shard_start(struct shard *sh, void (*done)(void *arg), void *arg)
{
	int rc;

	sh->done = done;
	sh->done_arg = arg;
	rc = pthread_create(&sh->thread, NULL, shard_main, sh);
	if (rc != 0)
		return -rc;
	sh->started = true;
	return 0;
}

int64_t shard_dedup_covered_ms(struct shard *sh)
{
	return atomic_load_explicit(&sh->dedup_covered_ms, memory_order_relaxed);
}

int64_t shard_heartbeat_ms(struct shard *sh)
{
	return atomic_load_explicit(&sh->heartbeat_ms, memory_order_relaxed);
}

void shard_join(struct shard *sh)
{
	if (sh->started) {
		pthread_join(sh->thread, NULL);
		sh->started = false;
	}
}

/* ---- set-up ---- */

/* Copies the conversion event names into the shard's own storage. */
static int copy_conversion_events(struct shard *sh, const struct shard_options *opt)
{
	size_t bytes = 1, off = 0;

	for (size_t i = 0; i < opt->conversion_event_count; i++)
		bytes += strlen(opt->conversion_events[i]) + 1;
	sh->conversion_names = malloc(bytes);
	sh->conversion_events =
	    calloc(opt->conversion_event_count ? opt->conversion_event_count : 1,
	           sizeof(*sh->conversion_events));
	if (!sh->conversion_names || !sh->conversion_events)
		return -ENOMEM;
	for (size_t i = 0; i < opt->conversion_event_count; i++) {
		size_t n = strlen(opt->conversion_events[i]);

		memcpy(sh->conversion_names + off, opt->conversion_events[i], n + 1);
		sh->conversion_events[i].s = sh->conversion_names + off;
		sh->conversion_events[i].len = n;
		off += n + 1;
	}
	sh->conversion_event_count = opt->conversion_event_count;
	sh->opt.conversion_events = NULL; /* borrowed for shard_new only */
	return 0;
}

/* The attribution instance, rollups and buffers, from the options (0: the defaults). */
static int attribution_init(struct shard *sh, const struct shard_options *opt, char *err,
                            size_t errlen)
{
	struct attribution_options ao = opt->attribution;
	struct attribution_rollup_options ro = opt->rollups;

	if (ao.lookback_ms == 0) {
		attribution_options_default(&ao);
		ao.max_visitors = ao.max_users = opt->session.max_visitors;
	}
	if (ro.max_keys == 0)
		attribution_rollup_options_default(&ro);
	if (copy_conversion_events(sh, opt) < 0)
		goto nomem;
	sh->result = malloc(sizeof(*sh->result));
	sh->attribution_record = malloc(RECORD_ATTRIBUTION_MAX_BYTES);
	if (!sh->result || !sh->attribution_record)
		goto nomem;
	sh->attribution = attribution_new(&ao);
	if (!sh->attribution) {
		snprintf(err, errlen,
		         "shard %u: attribution paths of %zu visitors: out of memory or bad bounds",
		         opt->index, ao.max_visitors);
		return -EINVAL;
	}
	sh->rollups = attribution_rollup_new(&ro, on_rollup_row, sh);
	if (!sh->rollups) {
		snprintf(err, errlen,
		         "shard %u: rollups of %zu keys per minute: out of memory or bad bounds",
		         opt->index, ro.max_keys);
		return -EINVAL;
	}
	return 0;
nomem:
	snprintf(err, errlen, "shard %u: out of memory", opt->index);
	return -ENOMEM;
}

struct shard *shard_new(const struct shard_options *opt, char *err, size_t errlen)
{
	struct shard *sh = calloc(1, sizeof(*sh));

	if (!sh)
		goto nomem;
	sh->opt = *opt;
	if (opt->input_count > 64) {
		snprintf(err, errlen, "shard %u: more than 64 input rings", opt->index);
		free(sh);
		return NULL;
	}
	sh->inputs = calloc(opt->input_count ? opt->input_count : 1, sizeof(*sh->inputs));
	sh->pending = calloc(opt->input_count ? opt->input_count : 1, sizeof(*sh->pending));
	sh->record = malloc(RECORD_EVENT_MAX_BYTES);
	sh->key = malloc(KEY_MAX_BYTES);
	if (!sh->inputs || !sh->pending || !sh->record || !sh->key)
		goto nomem;
	for (size_t i = 0; i < opt->input_count; i++)
		sh->inputs[i] = opt->inputs[i];
	sh->opt.inputs = sh->inputs;
	sh->dedup = dedup_new(opt->dedup_max_entries, opt->dedup_window_ms);
	if (!sh->dedup) {
		snprintf(err, errlen,
		         "shard %u: dedup table of %zu entries: out of memory or bad bounds",
		         opt->index, opt->dedup_max_entries);
		shard_free(sh);
		return NULL;
	}
	sh->sessions = session_table_new(&opt->session, on_session_closed, sh);
	if (!sh->sessions) {
		snprintf(err, errlen,
		         "shard %u: session table of %zu visitors: out of memory or bad bounds",
		         opt->index, opt->session.max_visitors);
		shard_free(sh);
		return NULL;
	}
	if (attribution_init(sh, opt, err, errlen) < 0) {
		shard_free(sh);
		return NULL;
	}
	held_init(&sh->held, 0); /* bounded by the shard stopping its intake while it holds */
	sh->held.acks = opt->acks;
	atomic_init(&sh->sleeping, 0);
	atomic_init(&sh->dedup_covered_ms, opt->dedup_window_ms);
	atomic_init(&sh->heartbeat_ms, monotonic_us() / 1000); /* as if it ticked at birth */
	atomic_init(&sh->channels_next, NULL);
	atomic_init(&sh->channels_in_use, opt->channels);
	return sh;
nomem:
	snprintf(err, errlen, "shard %u: out of memory", opt->index);
	shard_free(sh);
	return NULL;
}

void shard_free(struct shard *sh)
{
	if (!sh)
		return;
	dedup_free(sh->dedup);
	session_table_free(sh->sessions);
	attribution_free(sh->attribution);
	attribution_rollup_free(sh->rollups);
	free(sh->result);
	free(sh->attribution_record);
	free(sh->conversion_events);
	free(sh->conversion_names);
	free(sh->inputs);
	free(sh->pending);
	free(sh->record);
	free(sh->key);
	held_close(&sh->held);
	free(sh);
}

void shard_set_channels(struct shard *sh, const struct channel_lists *lists)
{
	atomic_store_explicit(&sh->channels_next, lists, memory_order_release);
	shard_wake(sh);
}

const struct channel_lists *shard_channels_in_use(struct shard *sh)
{
	return atomic_load_explicit(&sh->channels_in_use, memory_order_acquire);
}
