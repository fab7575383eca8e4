/*
 * attribution.h - multi-touch attribution paths and per-minute rollups, on one shard.
 *
 * Paths. Each visitor (keyed as sessions are, by the visitor key's hash) has a path: the
 * touchpoints of its recent sessions, in time order. The shard calls attribution_touch when a
 * session starts, with the session's touch (source, medium, campaign, channel, click-ID type,
 * affiliate ID). A path keeps at most max_touchpoints (oldest first out) and only touchpoints
 * within lookback_ms of the conversion (older ones never count and are pruned). Visitors are
 * remembered up to max_visitors, least recently seen first out, and the touchpoint slots of
 * all paths together up to max_stored_touchpoints (past it, least recently seen visitors are
 * forgotten to make room); visitors and users not seen within the lookback are forgotten by
 * attribution_expire.
 *
 * Identity. An event with a user ID links its visitor (device) to the user: a conversion by
 * that user is credited over the touchpoints of every device linked to the user within the
 * lookback, merged in time order (and cut to the max_touchpoints most recent). A device
 * belongs to one user at a time (the last one seen); a linked device touched without a user
 * ID (logged out) stays linked, and that touch counts as seeing it with its user. A device
 * is "linked within the lookback" when it was last seen with its user no earlier than
 * conversion time - lookback. Users are remembered up to max_users
 * (LRU), each with up to max_devices_per_user devices (least recently linked first out). A
 * conversion without a user ID is credited over its visitor's own path only.
 *
 * Order. Touchpoints are ordered by start time, then by session ID (bytewise), then by
 * visitor hash: ties in time get one stable order whatever the order they arrived in, so
 * first_touch and last_touch are deterministic.
 *
 * Models (each gives shares summing to 1 within 1e-9; credited revenue = share x revenue):
 * first_touch, last_touch, last_non_direct (the last touchpoint whose channel is not Direct;
 * the last Direct one when the path has nothing else), linear (1/n each), time_decay (weight
 * 2^(-age/half_life), age = conversion time - touchpoint start, normalised), position_based
 * (40% first, 40% last, 20% shared by the middle; one touch 100%; two touches 50/50).
 *
 * Empty path. The caller touches the conversion's own session before converting (the shard
 * touches every session as it opens), so a path holds at least that session. When it still
 * comes out empty (the touchpoint was refused as too old, or memory bounds dropped it),
 * attribution_convert answers -ENOENT with count 0: no touchpoint is invented, and the caller
 * writes the record with an empty touchpoints array and credits nothing.
 *
 * Memory (sizes from sizeof on x86-64, checked by the unit tests):
 *   per visitor remembered: attribution_visitor_bytes() = 176 bytes, plus 8..16 bytes of hash
 *     index (at most half full, a power of two: 4 bytes x 2..4 slots per max_visitors);
 *   per touchpoint in a path: attribution_touchpoint_bytes() = 312 bytes (slots allocated in
 *     chunks of 256 as paths grow, kept for reuse);
 *   so a full path of the default 32 touchpoints: 176 + 32 x 312 = 10160 bytes + index;
 *   attribution_path_bytes() gives the exact worst case for a set of options;
 *   per user remembered: attribution_user_bytes(max_devices_per_user) = 32 + 16 x devices
 *     (160 bytes for the default 8) + 8..16 bytes of index.
 *
 * Not thread-safe: one instance per shard, used by its thread only. No clock: every time
 * is passed in (receive times, ms since the epoch). No libuv.
 */
#ifndef CLICKD_ATTRIBUTION_H
#define CLICKD_ATTRIBUTION_H

#include "clickd/channel.h"
#include "clickd/session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* String bounds, each including the terminating NUL. Values are cut at a UTF-8 boundary
 * (attribution_set_string). The session ID fits whole; the touch fields are cut shorter
 * than the touchpoint record's (SESSION_TOUCH_FIELD_BYTES) to keep paths small. */
#define ATTRIBUTION_SESSION_ID_BYTES    (SESSION_ID_CHARS + 1)
#define ATTRIBUTION_SOURCE_BYTES        64
#define ATTRIBUTION_MEDIUM_BYTES        32
#define ATTRIBUTION_CAMPAIGN_BYTES      96
#define ATTRIBUTION_CLICK_ID_TYPE_BYTES 16
#define ATTRIBUTION_AFFILIATE_ID_BYTES  48
/* Visitor IDs as sessions keep them (SESSION_ID_FIELD_BYTES), so records agree. */
#define ATTRIBUTION_VISITOR_ID_BYTES (SESSION_ID_FIELD_BYTES + 1)
#define ATTRIBUTION_APP_ID_BYTES     (SESSION_ID_FIELD_BYTES + 1)

/* Upper bounds of the options (they size struct attribution_result and scratch space). */
#define ATTRIBUTION_MAX_TOUCHPOINTS 128
#define ATTRIBUTION_MAX_DEVICES     16

/* The models, in CONTRACTS.md order: X(id, JSON key). */
#define ATTRIBUTION_MODELS(X)                                                                      \
	X(FIRST_TOUCH, "first_touch")                                                              \
	X(LAST_TOUCH, "last_touch")                                                                \
	X(LAST_NON_DIRECT, "last_non_direct")                                                      \
	X(LINEAR, "linear")                                                                        \
	X(TIME_DECAY, "time_decay")                                                                \
	X(POSITION_BASED, "position_based")

enum attribution_model {
#define ATTRIBUTION_MODEL_ENUM(id, json) ATTRIBUTION_##id,
	ATTRIBUTION_MODELS(ATTRIBUTION_MODEL_ENUM)
#undef ATTRIBUTION_MODEL_ENUM
	    ATTRIBUTION_MODEL__COUNT
};

/* "first_touch", ... (static storage); "unknown" when out of range. */
const char *attribution_model_name(enum attribution_model m);

/* One touchpoint: a session's start and touch. Plain value, owns its strings (NUL-terminated,
 * "" when absent). The visitor ID is kept once per visitor, not per touchpoint. */
struct attribution_touchpoint {
	int64_t started_at_ms;
	char session_id[ATTRIBUTION_SESSION_ID_BYTES];
	char source[ATTRIBUTION_SOURCE_BYTES];
	char medium[ATTRIBUTION_MEDIUM_BYTES];
	char campaign[ATTRIBUTION_CAMPAIGN_BYTES];
	char click_id_type[ATTRIBUTION_CLICK_ID_TYPE_BYTES];
	char affiliate_id[ATTRIBUTION_AFFILIATE_ID_BYTES];
	uint8_t channel; /* enum channel */
};

/* Copies s[0..len) into dst (dst_bytes with its NUL), cut at a UTF-8 boundary to fit; s may be
 * NULL when len is 0. Returns the bytes copied. */
size_t attribution_set_string(char *dst, size_t dst_bytes, const char *s, size_t len);

/* Who an event is about. Borrowed for the call. */
struct attribution_ids {
	uint64_t visitor_hash;  /* event_visitor_hash(): the visitor key's hash */
	uint64_t user_hash;     /* attribution_user_hash(); 0 = no user ID */
	const char *visitor_id; /* as written in records; cut to ATTRIBUTION_VISITOR_ID_BYTES */
	size_t visitor_id_len;
};

/* The user key's hash (app and user ID, like the visitor key), never 0. */
uint64_t attribution_user_hash(const char *app_id, size_t app_id_len, const char *user_id,
                               size_t user_id_len);

struct attribution_options {
	int64_t lookback_ms;           /* attribution.lookback_days (30) x 86400000; >= 1 */
	int64_t half_life_ms;          /* attribution.half_life_days (7) x 86400000; >= 1 */
	size_t max_touchpoints;        /* per path (32): 1..ATTRIBUTION_MAX_TOUCHPOINTS */
	size_t max_visitors;           /* this shard's share of session.max_visitors: 1..2^31 */
	size_t max_users;              /* 1..2^31 */
	size_t max_devices_per_user;   /* (8) 1..ATTRIBUTION_MAX_DEVICES */
	size_t max_stored_touchpoints; /* all paths together; 0 = max_visitors x max_touchpoints;
	                                  else >= max_touchpoints */
};

/* The defaults above, with max_visitors = max_users = 100000 and no stored-touchpoint cap. */
void attribution_options_default(struct attribution_options *o);

/* Memory figures (see the header comment). */
size_t attribution_visitor_bytes(void);
size_t attribution_touchpoint_bytes(void);
size_t attribution_user_bytes(size_t max_devices_per_user);
/* Worst case for one visitor's path under o: the visitor entry, its share of the hash index
 * (rounded up) and max_touchpoints slots. */
size_t attribution_path_bytes(const struct attribution_options *o);

/* One touchpoint of a conversion with its credit. */
struct attribution_credited {
	struct attribution_touchpoint tp;
	char visitor_id[ATTRIBUTION_VISITOR_ID_BYTES];
	double credit[ATTRIBUTION_MODEL__COUNT];  /* shares, summing to 1 per model */
	double revenue[ATTRIBUTION_MODEL__COUNT]; /* credit x the conversion's revenue */
};

/* A conversion's attribution. Owned by the caller (large, about 68 KB: keep one per shard on
 * the heap and reuse it); attribution_convert overwrites it. */
struct attribution_result {
	int64_t converted_at_ms;
	double revenue;
	size_t count;   /* touchpoints[0..count), in time order */
	size_t devices; /* distinct visitor IDs the touchpoints come from */
	size_t cut;     /* touchpoints in the window left out past max_touchpoints (oldest) */
	struct attribution_credited touchpoints[ATTRIBUTION_MAX_TOUCHPOINTS];
};

/* Fills credit[] and revenue[] of r->touchpoints[0..count) (already in time order) from
 * r->converted_at_ms and r->revenue. The models only, no state: what attribution_convert
 * calls, exposed for tests and tools. count 0 is a no-op. half_life_ms >= 1. */
void attribution_credit(struct attribution_result *r, int64_t half_life_ms);

struct attribution_stats {
	size_t visitors;    /* remembered now */
	size_t users;       /* remembered now */
	size_t touchpoints; /* in paths now */
	size_t bytes;       /* allocated now: tables, index, touchpoint chunks, scratch */
	uint64_t touches;
	uint64_t touches_too_old;            /* started before now - lookback: refused */
	uint64_t touches_same_session;       /* a session touched again: its touchpoint replaced */
	uint64_t touchpoints_dropped_full;   /* oldest first out at max_touchpoints */
	uint64_t touchpoints_expired;        /* pruned: older than the lookback */
	uint64_t visitors_evicted;           /* LRU at max_visitors */
	uint64_t visitors_evicted_for_space; /* LRU at max_stored_touchpoints */
	uint64_t visitors_expired;           /* not seen within the lookback */
	uint64_t users_evicted;              /* LRU at max_users */
	uint64_t users_expired;
	uint64_t devices_dropped; /* least recently linked out at max_devices_per_user */
	uint64_t conversions;
	uint64_t conversions_empty;  /* -ENOENT: no touchpoint in the window */
	uint64_t conversions_merged; /* credited over touchpoints of two or more devices */
	uint64_t touchpoints_cut;    /* merged paths cut to max_touchpoints */
	uint64_t out_of_memory;      /* a chunk of touchpoint slots could not be allocated */
};

struct attribution;

/* NULL when out of memory or an option is out of range. */
struct attribution *attribution_new(const struct attribution_options *o);
void attribution_free(struct attribution *a);

/*
 * Adds tp (copied) to the path of ids->visitor_hash, remembering the visitor (and linking it
 * to ids->user_hash when not 0). A touchpoint with the session ID and start time of one
 * already in the path replaces it (a session comes back with its start: clickd derives
 * session IDs from it). Returns 0; -ERANGE when tp started before now_ms - lookback, or is older
 * than every touchpoint of a full path (not stored, counted); -ENOMEM.
 */
int attribution_touch(struct attribution *a, const struct attribution_ids *ids,
                      const struct attribution_touchpoint *tp, int64_t now_ms);

/* Links ids->visitor_hash (remembered, with an empty path if new) to ids->user_hash (not 0).
 * Returns 0 or -EINVAL (user_hash 0). */
int attribution_link_user(struct attribution *a, const struct attribution_ids *ids, int64_t now_ms);

/*
 * Attributes a conversion at converted_at_ms worth revenue (0 when none) into *out: the
 * touchpoints of the visitor (and, when ids->user_hash is not 0, of every device linked to
 * the user within the lookback: the visitor is linked first) that started in
 * [converted_at_ms - lookback, converted_at_ms], in time order, at most max_touchpoints
 * (the most recent), credited by every model. Paths are pruned of touchpoints older than
 * the lookback on the way. Returns 0, or -ENOENT with out->count 0 when no touchpoint
 * qualifies.
 */
int attribution_convert(struct attribution *a, const struct attribution_ids *ids,
                        int64_t converted_at_ms, double revenue, struct attribution_result *out);

/* Forgets visitors and users last seen before now_ms - lookback, least recently seen first
 * (call it from the shard's tick). Work is proportional to what it forgets. */
void attribution_expire(struct attribution *a, int64_t now_ms);

void attribution_get_stats(const struct attribution *a, struct attribution_stats *out);

/* ---- saving and restoring (session.state_file, see state_file.h) ----
 *
 * Paths and identity links survive a clean restart: every remembered visitor (its key hash,
 * visitor ID, user link, last seen time and path) and every user (last seen time and
 * devices with their link times). Walks go least recently seen first, and restoring in that
 * order rebuilds the same LRU order. Stats counters are not saved.
 */
struct attribution_saved_visitor {
	uint64_t visitor_hash;
	uint64_t user_hash; /* 0: not linked */
	int64_t last_seen_ms;
	size_t visitor_id_len;
	char visitor_id[ATTRIBUTION_VISITOR_ID_BYTES]; /* NUL-terminated */
	size_t count;
	struct attribution_touchpoint touchpoints[ATTRIBUTION_MAX_TOUCHPOINTS]; /* oldest first */
};

struct attribution_saved_user {
	uint64_t user_hash;
	int64_t last_seen_ms;
	size_t devices;
	struct attribution_saved_device {
		uint64_t visitor_hash;
		int64_t linked_ms;
	} device[ATTRIBUTION_MAX_DEVICES]; /* most recently linked first */
};

/* Walks the visitors (users), least recently seen first: *cursor is 0 to begin; each call
 * fills *out and returns true, or returns false past the last. The instance must not change
 * during the walk. */
bool attribution_saved_visitor_next(const struct attribution *a, uint64_t *cursor,
                                    struct attribution_saved_visitor *out);
bool attribution_saved_user_next(const struct attribution *a, uint64_t *cursor,
                                 struct attribution_saved_user *out);

/*
 * Remembers a saved visitor (user) as the most recently seen, making room as a touch would
 * (least recently seen out; touchpoint slots past max_stored_touchpoints). Touchpoints older
 * than now_ms - lookback are left out, and of the rest the max_touchpoints most recent
 * kept; a user keeps its max_devices_per_user most recently linked devices.
 * Returns 0; -ERANGE when last seen before now_ms - lookback (forgotten, as
 * attribution_expire would); -EEXIST when already known (nothing changes); -EINVAL for
 * counts past the bounds or user hash 0; -ENOMEM when a touchpoint slot could not be
 * allocated (the visitor stays with what fitted).
 */
int attribution_restore_visitor(struct attribution *a, const struct attribution_saved_visitor *v,
                                int64_t now_ms);
int attribution_restore_user(struct attribution *a, const struct attribution_saved_user *u,
                             int64_t now_ms);

/* ---- rollups ----
 *
 * Per-minute aggregates per (app, channel, source, medium, campaign). A record counted at
 * time at_ms belongs to minute floor(at_ms / 60000). The clock is the largest now_ms seen
 * (receive time, never the client's); minute m closes once the clock reaches
 * (m + 1) x 60000 + grace_ms, and the callback then gets each of its rows (in the order
 * their keys first appeared). A record for a closed minute goes to the clock's minute and
 * counts as late there (the row's `late`); a record from past the clock's minute goes to
 * the clock's minute too. A minute holds at most max_keys rows; past it, records go to that
 * minute's one "(other)" row (app, channel, source, medium and campaign all "(other)"),
 * counted in other_records.
 */

struct attribution_rollup_options {
	int64_t grace_ms; /* 0..600000 (default 5000) */
	size_t max_keys;  /* rows per minute before "(other)": 1..2^20 (default 10000) */
};

/* A key, borrowed for the call; strings are cut to the touchpoint bounds (app to
 * ATTRIBUTION_APP_ID_BYTES). A NULL pointer with length 0 is an absent field. */
struct attribution_rollup_key {
	const char *app_id;
	size_t app_id_len;
	int channel; /* enum channel */
	const char *source;
	size_t source_len;
	const char *medium;
	size_t medium_len;
	const char *campaign;
	size_t campaign_len;
};

/* The key of a touchpoint of app app_id (borrows the strings of tp and app_id). */
struct attribution_rollup_key attribution_rollup_key_of(const struct attribution_touchpoint *tp,
                                                        const char *app_id, size_t app_id_len);

struct attribution_rollup_counts {
	uint64_t sessions;
	uint64_t page_views;
	uint64_t conversions;
	double revenue;
	double attributed_revenue[ATTRIBUTION_MODEL__COUNT];
};

/* One closed (minute, key) aggregate, borrowed by the callback for the call. */
struct attribution_rollup_row {
	int64_t minute_ms; /* start of the minute */
	bool other;        /* the "(other)" row: strings "(other)", channel -1 */
	int channel;       /* enum channel, or -1 */
	char app_id[ATTRIBUTION_APP_ID_BYTES];
	char source[ATTRIBUTION_SOURCE_BYTES];
	char medium[ATTRIBUTION_MEDIUM_BYTES];
	char campaign[ATTRIBUTION_CAMPAIGN_BYTES];
	struct attribution_rollup_counts counts;
	uint64_t late; /* records counted here that belonged to a minute already closed */
};

typedef void (*attribution_rollup_fn)(void *ud, const struct attribution_rollup_row *row);

struct attribution_rollup_stats {
	size_t open_rows; /* rows in open minutes now */
	size_t bytes;     /* allocated now */
	uint64_t records;
	uint64_t late;
	uint64_t other_records; /* records past max_keys, into "(other)" */
	uint64_t rows_closed;   /* rows handed to the callback */
	uint64_t minutes_closed;
};

struct attribution_rollup;

void attribution_rollup_options_default(struct attribution_rollup_options *o);

/* NULL when out of memory or an option is out of range; on_row is required. */
struct attribution_rollup *attribution_rollup_new(const struct attribution_rollup_options *o,
                                                  attribution_rollup_fn on_row, void *ud);
/* Frees without closing (call attribution_rollup_flush first to emit the open minutes). */
void attribution_rollup_free(struct attribution_rollup *r);

/* Advances the clock to now_ms (closing what is due), then adds c to the row of key in the
 * minute of at_ms (see above). */
void attribution_rollup_add(struct attribution_rollup *r, const struct attribution_rollup_key *key,
                            const struct attribution_rollup_counts *c, int64_t at_ms,
                            int64_t now_ms);

/* Adds a conversion's attributed revenue: each touchpoint's revenue per model to the row of
 * its own key (app app_id), in the minute of res->converted_at_ms. Conversions and revenue
 * themselves are the caller's to add (under the key it chooses). */
void attribution_rollup_add_result(struct attribution_rollup *r, const char *app_id,
                                   size_t app_id_len, const struct attribution_result *res,
                                   int64_t now_ms);

/* Advances the clock to now_ms and closes the minutes that are due. */
void attribution_rollup_tick(struct attribution_rollup *r, int64_t now_ms);

/* Closes every open minute, oldest first (shutdown). */
void attribution_rollup_flush(struct attribution_rollup *r);

void attribution_rollup_get_stats(const struct attribution_rollup *r,
                                  struct attribution_rollup_stats *out);

#endif
