/*
 * session.h - sessions per visitor, on one shard: open, extend, cut, expire.
 *
 * A session is keyed by the visitor key (app_id, visitor_id). It ends:
 * - after session.timeout_s without an event (inactivity),
 * - when an event brings a different campaign touch (new_campaign): the touch of an event
 *   is its (source, medium, campaign, click_id, affiliate_id); an event is a touch when
 *   its source is not "(direct)", or it carries a campaign, a click ID or an affiliate
 *   ID. A referrer from the page's own host is decoded as (direct), so internal
 *   navigation never cuts a session;
 * - session.max_duration_s after it started (max_duration),
 * - when clickd stops (shutdown), or when its visitor is pushed out of the table by the
 *   session.max_visitors bound (evicted: the least recently seen visitor goes).
 * Times are receive times (ms), passed in: client clocks never decide.
 *
 * Expiry runs on a hashed timer wheel (SESSION_TICK_MS per slot): each open session sits
 * in the slot of its earliest possible deadline; session_tick visits only the slots whose
 * time has come and either closes a session or files it again at its real deadline
 * (activity since it was filed moves the deadline later, never earlier). No scan of all
 * sessions, and expiry does not wait for the visitor's next event.
 *
 * Visitors are remembered (for session_index) up to max_visitors, least recently seen
 * first out. Memory, fixed at creation except the session slots, which are allocated in
 * chunks as sessions open:
 *   per visitor remembered: 24 bytes + 8 bytes of hash index (at most half full, so 16
 *   bytes per max_visitors) ; per open session: session_slot_bytes(max_url_bytes).
 * Strings are cut (at a UTF-8 boundary) to fixed bounds: URLs to max_url_bytes, IDs to
 * SESSION_ID_FIELD_BYTES, touch fields to SESSION_TOUCH_FIELD_BYTES.
 *
 * Not thread-safe: one table per shard, used by its thread only. The close callback runs
 * inside session_track, session_tick and session_close_all; the session it gets is
 * borrowed for the call.
 */
#ifndef CLICKD_SESSION_H
#define CLICKD_SESSION_H

#include "clickd/event.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_TICK_MS           250
#define SESSION_ID_CHARS          32 /* hex of a 128-bit hash */
#define SESSION_ID_FIELD_BYTES    128
#define SESSION_TOUCH_FIELD_BYTES 255

enum session_end_reason {
	SESSION_END_INACTIVITY = 0,
	SESSION_END_NEW_CAMPAIGN,
	SESSION_END_MAX_DURATION,
	SESSION_END_SHUTDOWN,
	SESSION_END_EVICTED,
	SESSION_END__COUNT
};

/* "inactivity", "new_campaign", "max_duration", "shutdown", "evicted". */
const char *session_end_reason_name(enum session_end_reason r);

/* The strings a session keeps (touchpoint record fields). */
#define SESSION_STRING_FIELDS(X)                                                                   \
	X(APP_ID, "app_id")                                                                        \
	X(VISITOR_ID, "visitor_id")                                                                \
	X(USER_ID, "user_id")                                                                      \
	X(LANDING_URL, "landing_url")                                                              \
	X(EXIT_URL, "exit_url")                                                                    \
	X(REFERRER, "referrer")                                                                    \
	X(REFERRER_HOST, "referrer_host")                                                          \
	X(SOURCE, "source")                                                                        \
	X(MEDIUM, "medium")                                                                        \
	X(CAMPAIGN, "campaign")                                                                    \
	X(TERM, "term")                                                                            \
	X(CONTENT, "content")                                                                      \
	X(CLICK_ID_TYPE, "click_id_type")                                                          \
	X(CLICK_ID, "click_id")                                                                    \
	X(AFFILIATE_ID, "affiliate_id")

enum session_field {
#define SESSION_FIELD_ENUM(id, json) SF_##id,
	SESSION_STRING_FIELDS(SESSION_FIELD_ENUM)
#undef SESSION_FIELD_ENUM
	    SF__COUNT
};

/* One session, as the close callback and session_track's caller see it. */
struct session {
	char id[SESSION_ID_CHARS + 1];
	uint32_t index; /* the visitor's n-th session, from 1 */
	int64_t started_at_ms;
	int64_t last_seen_ms;
	uint32_t events;
	uint32_t page_views;
	uint32_t conversions;
	bool has_revenue;
	double revenue;   /* conversions in `currency` (or without one) */
	char currency[4]; /* the first currency seen; "" when none */
	int channel;      /* the touch's channel (enum channel), set by the caller */
	/* Internal: the wheel and the owner. */
	uint32_t wheel_prev, wheel_next;
	int64_t due_tick;
	uint32_t visitor;
	uint32_t next_free;
	/* Strings: offsets into arena. */
	uint16_t str_off[SF__COUNT];
	uint16_t str_len[SF__COUNT];
	uint16_t arena_used;
	char arena[]; /* session_slot_bytes() - sizeof(struct session) */
};

/* Borrowed view of a session string (not NUL-terminated); NULL and 0 when absent. */
const char *session_get(const struct session *s, enum session_field f, size_t *len);

struct session_options {
	int64_t timeout_ms;      /* session.timeout_s * 1000 */
	int64_t max_duration_ms; /* session.max_duration_s * 1000 */
	size_t max_visitors;     /* this shard's share of session.max_visitors */
	size_t max_url_bytes;    /* session.max_url_bytes */
};

/* Bytes one open session takes (the per-session memory figure). */
size_t session_slot_bytes(size_t max_url_bytes);

typedef void (*session_close_fn)(void *ud, const struct session *s, enum session_end_reason reason);

struct session_stats {
	size_t open;       /* sessions open now */
	size_t visitors;   /* visitors remembered now */
	uint64_t started;  /* sessions opened */
	uint64_t restored; /* sessions open again from a saved state (session_restore) */
	uint64_t ended[SESSION_END__COUNT];
	uint64_t no_visitor;             /* events without a visitor ID: no session */
	uint64_t revenue_other_currency; /* conversions not summed: another currency */
};

struct session_table;

/* NULL when out of memory or an option is out of range (timeouts >= 1 ms, max_visitors
 * in 1..2^31, max_url_bytes in 16..8192). on_close is called for every session that ends. */
struct session_table *session_table_new(const struct session_options *opt,
                                        session_close_fn on_close, void *ud);
/* Frees without closing (call session_close_all first to emit them). */
void session_table_free(struct session_table *t);

/*
 * Files one event (received at ev->received_at_ms) into its visitor's session: may end
 * the open session (inactivity or max_duration noticed before the wheel got there, or a
 * new campaign touch), opens a new one when needed (channel is the event's channel:
 * used as the session's when the event opens it), and counts the event. Returns the
 * session the event belongs to (borrowed until the next call), or NULL when the event has
 * no visitor_id (counted in no_visitor).
 */
const struct session *session_track(struct session_table *t, const struct event *ev, int channel);

/* Closes every session whose deadline is at or before now_ms (call every tick). */
void session_tick(struct session_table *t, int64_t now_ms);

/* Closes every open session with `reason` (shutdown). */
void session_close_all(struct session_table *t, enum session_end_reason reason);

void session_get_stats(const struct session_table *t, struct session_stats *out);

/* ---- saving and restoring (session.state_file, see state_file.h) ----
 *
 * What a resumed session needs to go on exactly as if clickd had not stopped: the visitor's
 * key hash and session count (so the next session gets the next session_index), and its
 * open session whole: ID, start, last event, counters, revenue, channel and strings. The
 * wheel and slot links are not kept: they are rebuilt.
 */
struct session_saved {
	uint64_t visitor_hash; /* event_visitor_hash(): the visitor key's hash */
	uint32_t sessions;     /* sessions so far; the next one gets index sessions + 1 */
	bool has_session;
	/* The open session, when has_session (as struct session has them). */
	char id[SESSION_ID_CHARS + 1];
	uint32_t index;
	int64_t started_at_ms;
	int64_t last_seen_ms;
	uint32_t events;
	uint32_t page_views;
	uint32_t conversions;
	bool has_revenue;
	double revenue;
	char currency[4];
	int channel;
	const char *str[SF__COUNT]; /* borrowed; NULL with length 0 when absent */
	size_t str_len[SF__COUNT];
};

/* Walks the remembered visitors, least recently seen first. *cursor is 0 to begin; each
 * call fills *out (strings borrowed from the table until it changes) and returns true, or
 * returns false past the last. The table must not change during the walk. */
bool session_saved_next(const struct session_table *t, uint64_t *cursor, struct session_saved *out);

/*
 * Remembers a saved visitor as the most recently seen (so restore least recently seen
 * first), with its open session if it has one: same ID, index, times, counters and
 * strings (cut to this table's bounds). A full table makes room as session_track does (the
 * least recently seen goes, its session ends as evicted). The session goes on the wheel at
 * its deadline under this table's timeouts; one already past (the timeout or max duration
 * passed while clickd was down) ends at the next session_tick (call session_tick(t, now_ms)
 * after restoring) with end_reason inactivity or max_duration and its own last event as its
 * end, as it would have without the stop. Call before any session_track.
 * Returns 0; -EEXIST when the visitor is known already (nothing changes); -EINVAL when
 * the saved fields do not hold together (index 0 or above sessions, no event, last event
 * before the start, an ID that is not 32 lowercase hex digits); -ENOMEM when no session
 * slot could be allocated (the visitor is remembered, without the session).
 */
int session_restore(struct session_table *t, const struct session_saved *saved, int64_t now_ms);

#endif
