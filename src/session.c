/*
 * session.c - sessions per visitor on one shard (see session.h for the rules).
 *
 * Structures, all index-based (uint32_t, NONE = none) so that nothing holds a pointer
 * that a reallocation could move:
 * - visitors[]: one entry per remembered visitor (hash of the visitor key, LRU links,
 *   its open session, how many sessions it had). Allocated once for max_visitors with
 *   calloc, so pages are touched only as visitors arrive. A full table recycles its
 *   least recently seen entry.
 * - index[]: open addressing over visitors by key hash (linear probing, at most half
 *   full, backward-shift deletion).
 * - session slots: fixed-size, in chunks of CHUNK_SLOTS allocated when needed and kept
 *   for reuse through a free list.
 * - wheel[]: WHEEL_SLOTS lists of open sessions, each slot SESSION_TICK_MS wide (about 68
 *   minutes around); a session further out than that is visited once per turn and filed
 *   again.
 *
 * Session strings live in the slot's arena: the exit URL and the user ID, which change
 * during a session, in fixed regions at its start; the rest, set when the session opens,
 * appended after them, each cut to its bound and to what is left.
 */
#include "clickd/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define NONE        UINT32_MAX
#define WHEEL_SLOTS 16384 /* a power of two */
#define CHUNK_SLOTS 256
/* The append region holds the set-once strings: app and visitor IDs, landing URL and
 * referrer, referrer host and the touch fields. */
#define APPEND_FIXED_BYTES (2 * SESSION_ID_FIELD_BYTES + 2 * SESSION_TOUCH_FIELD_BYTES)

struct visitor {
	uint64_t key_hash;
	uint32_t lru_prev, lru_next; /* towards least / most recently seen */
	uint32_t session;            /* open session slot, or NONE */
	uint32_t sessions;           /* sessions so far */
};

struct session_table {
	struct session_options opt;
	session_close_fn on_close;
	void *ud;

	struct visitor *visitors; /* owned: opt.max_visitors */
	size_t visitor_count;
	uint32_t *index; /* owned: index_mask + 1 entries of visitor + 1 (0 = empty) */
	uint64_t index_mask;
	uint32_t lru_head, lru_tail; /* least and most recently seen */

	unsigned char **chunks; /* owned, each CHUNK_SLOTS * slot_bytes */
	size_t chunk_count;
	size_t slot_bytes;
	uint32_t free_slot;

	uint32_t wheel[WHEEL_SLOTS];
	int64_t next_tick; /* the next wheel tick to visit */
	bool wheel_started;

	struct session_stats stats;
};

static const char *const end_reason_names[SESSION_END__COUNT] = {
    [SESSION_END_INACTIVITY] = "inactivity",     [SESSION_END_NEW_CAMPAIGN] = "new_campaign",
    [SESSION_END_MAX_DURATION] = "max_duration", [SESSION_END_SHUTDOWN] = "shutdown",
    [SESSION_END_EVICTED] = "evicted",
};

const char *session_end_reason_name(enum session_end_reason r)
{
	return (unsigned)r < SESSION_END__COUNT ? end_reason_names[r] : "unknown";
}

size_t session_slot_bytes(size_t max_url_bytes)
{
	/* exit URL + user ID regions, then landing URL + referrer + the fixed-size rest. */
	size_t bytes = sizeof(struct session) + max_url_bytes + SESSION_ID_FIELD_BYTES +
	               2 * max_url_bytes + APPEND_FIXED_BYTES;
	return (bytes + 7) & ~(size_t)7;
}

const char *session_get(const struct session *s, enum session_field f, size_t *len)
{
	*len = s->str_len[f];
	return *len ? s->arena + s->str_off[f] : NULL;
}

/* ---- strings ---- */

/* The longest prefix of s[0..len) of at most cap bytes that ends on a UTF-8 boundary. */
static size_t cut_len(const char *s, size_t len, size_t cap)
{
	if (len <= cap)
		return len;
	len = cap;
	while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
		len--;
	return len;
}

static size_t exit_url_off(void)
{
	return 0;
}

static size_t user_id_off(const struct session_table *t)
{
	return t->opt.max_url_bytes;
}

static size_t append_start(const struct session_table *t)
{
	return t->opt.max_url_bytes + SESSION_ID_FIELD_BYTES;
}

static size_t arena_bytes(const struct session_table *t)
{
	return t->slot_bytes - sizeof(struct session);
}

static void put_fixed(struct session *s, enum session_field f, size_t off, size_t cap,
                      const char *v, size_t len)
{
	len = cut_len(v, len, cap);
	memcpy(s->arena + off, v, len);
	s->str_off[f] = (uint16_t)off;
	s->str_len[f] = (uint16_t)len;
}

static void put_append(const struct session_table *t, struct session *s, enum session_field f,
                       size_t cap, const char *v, size_t len)
{
	size_t left = arena_bytes(t) - s->arena_used;

	len = cut_len(v, len, cap < left ? cap : left);
	if (len == 0)
		return;
	memcpy(s->arena + s->arena_used, v, len);
	s->str_off[f] = s->arena_used;
	s->str_len[f] = (uint16_t)len;
	s->arena_used = (uint16_t)(s->arena_used + len);
}

static void put_from_event(const struct session_table *t, struct session *s, enum session_field f,
                           const struct event *ev, enum event_field ef, size_t cap)
{
	size_t len;
	const char *v = event_get(ev, ef, &len);

	if (v)
		put_append(t, s, f, cap, v, len);
}

/* Does the event's field equal the session's, as the session would have stored it? */
static bool same_field(const struct session *s, enum session_field f, const struct event *ev,
                       enum event_field ef, size_t cap)
{
	size_t a_len, b_len;
	const char *a = session_get(s, f, &a_len);
	const char *b = event_get(ev, ef, &b_len);

	b_len = b ? cut_len(b, b_len, cap) : 0;
	return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

static bool event_is_touch(const struct event *ev)
{
	size_t len;
	const char *source = event_get(ev, EF_SOURCE, &len);

	if (event_has(ev, EF_CAMPAIGN) || event_has(ev, EF_CLICK_ID) ||
	    event_has(ev, EF_AFFILIATE_ID))
		return true;
	if (source)
		return !(len == 8 && memcmp(source, "(direct)", 8) == 0);
	return event_has(ev, EF_MEDIUM);
}

static bool touch_differs(const struct session *s, const struct event *ev)
{
	return !same_field(s, SF_SOURCE, ev, EF_SOURCE, SESSION_TOUCH_FIELD_BYTES) ||
	       !same_field(s, SF_MEDIUM, ev, EF_MEDIUM, SESSION_TOUCH_FIELD_BYTES) ||
	       !same_field(s, SF_CAMPAIGN, ev, EF_CAMPAIGN, SESSION_TOUCH_FIELD_BYTES) ||
	       !same_field(s, SF_CLICK_ID, ev, EF_CLICK_ID, SESSION_TOUCH_FIELD_BYTES) ||
	       !same_field(s, SF_AFFILIATE_ID, ev, EF_AFFILIATE_ID, SESSION_TOUCH_FIELD_BYTES);
}

/* ---- session slots ---- */

static struct session *slot_at(const struct session_table *t, uint32_t i)
{
	return (struct session *)(t->chunks[i / CHUNK_SLOTS] +
	                          (size_t)(i % CHUNK_SLOTS) * t->slot_bytes);
}

static uint32_t slot_alloc(struct session_table *t)
{
	uint32_t i = t->free_slot;
	unsigned char **chunks, *chunk;

	if (i != NONE) {
		t->free_slot = slot_at(t, i)->next_free;
		return i;
	}
	if ((t->chunk_count + 1) * CHUNK_SLOTS > (size_t)NONE)
		return NONE;
	chunks = realloc(t->chunks, (t->chunk_count + 1) * sizeof(*chunks));
	if (!chunks)
		return NONE;
	t->chunks = chunks;
	chunk = malloc(CHUNK_SLOTS * t->slot_bytes);
	if (!chunk)
		return NONE;
	t->chunks[t->chunk_count] = chunk;
	/* Slot 0 of the chunk is handed out, the rest go on the free list. */
	i = (uint32_t)(t->chunk_count * CHUNK_SLOTS);
	t->chunk_count++;
	for (uint32_t k = CHUNK_SLOTS - 1; k >= 1; k--) {
		slot_at(t, i + k)->next_free = t->free_slot;
		t->free_slot = i + k;
	}
	return i;
}

static void slot_free(struct session_table *t, uint32_t i)
{
	slot_at(t, i)->next_free = t->free_slot;
	t->free_slot = i;
}

/* ---- the wheel ---- */

static int64_t deadline_of(const struct session_table *t, const struct session *s,
                           enum session_end_reason *why)
{
	int64_t idle = s->last_seen_ms + t->opt.timeout_ms;
	int64_t cap = s->started_at_ms + t->opt.max_duration_ms;

	*why = idle <= cap ? SESSION_END_INACTIVITY : SESSION_END_MAX_DURATION;
	return idle <= cap ? idle : cap;
}

static void wheel_start(struct session_table *t, int64_t now_ms)
{
	if (t->wheel_started)
		return;
	t->wheel_started = true;
	t->next_tick = now_ms / SESSION_TICK_MS;
}

static void wheel_insert(struct session_table *t, uint32_t i, int64_t deadline_ms)
{
	struct session *s = slot_at(t, i);
	int64_t due = (deadline_ms + SESSION_TICK_MS - 1) / SESSION_TICK_MS;
	uint32_t *head;

	if (due < t->next_tick)
		due = t->next_tick;
	s->due_tick = due;
	head = &t->wheel[due & (WHEEL_SLOTS - 1)];
	s->wheel_prev = NONE;
	s->wheel_next = *head;
	if (*head != NONE)
		slot_at(t, *head)->wheel_prev = i;
	*head = i;
}

static void wheel_remove(struct session_table *t, uint32_t i)
{
	struct session *s = slot_at(t, i);

	if (s->wheel_prev != NONE)
		slot_at(t, s->wheel_prev)->wheel_next = s->wheel_next;
	else
		t->wheel[s->due_tick & (WHEEL_SLOTS - 1)] = s->wheel_next;
	if (s->wheel_next != NONE)
		slot_at(t, s->wheel_next)->wheel_prev = s->wheel_prev;
}

/* ---- visitors ---- */

static uint32_t index_find(const struct session_table *t, uint64_t hash)
{
	for (uint64_t i = hash & t->index_mask;; i = (i + 1) & t->index_mask) {
		uint32_t v = t->index[i];
		if (v == 0)
			return NONE;
		if (t->visitors[v - 1].key_hash == hash)
			return v - 1;
	}
}

static void index_insert(struct session_table *t, uint64_t hash, uint32_t v)
{
	uint64_t i = hash & t->index_mask;

	while (t->index[i] != 0)
		i = (i + 1) & t->index_mask;
	t->index[i] = v + 1;
}

static void index_remove(struct session_table *t, uint64_t hash)
{
	uint64_t i = hash & t->index_mask;

	while (t->index[i] == 0 || t->visitors[t->index[i] - 1].key_hash != hash) {
		if (t->index[i] == 0)
			return;
		i = (i + 1) & t->index_mask;
	}
	/* Backward-shift deletion (as in dedup.c). */
	for (uint64_t j = (i + 1) & t->index_mask; t->index[j] != 0; j = (j + 1) & t->index_mask) {
		uint64_t home = t->visitors[t->index[j] - 1].key_hash & t->index_mask;
		if (((j - home) & t->index_mask) >= ((j - i) & t->index_mask)) {
			t->index[i] = t->index[j];
			i = j;
		}
	}
	t->index[i] = 0;
}

static void lru_unlink(struct session_table *t, uint32_t v)
{
	struct visitor *x = &t->visitors[v];

	if (x->lru_prev != NONE)
		t->visitors[x->lru_prev].lru_next = x->lru_next;
	else
		t->lru_head = x->lru_next;
	if (x->lru_next != NONE)
		t->visitors[x->lru_next].lru_prev = x->lru_prev;
	else
		t->lru_tail = x->lru_prev;
}

static void lru_append(struct session_table *t, uint32_t v)
{
	struct visitor *x = &t->visitors[v];

	x->lru_prev = t->lru_tail;
	x->lru_next = NONE;
	if (t->lru_tail != NONE)
		t->visitors[t->lru_tail].lru_next = v;
	else
		t->lru_head = v;
	t->lru_tail = v;
}

static void close_session(struct session_table *t, uint32_t v, enum session_end_reason reason)
{
	uint32_t i = t->visitors[v].session;

	wheel_remove(t, i);
	t->visitors[v].session = NONE;
	t->stats.open--;
	t->stats.ended[reason]++;
	t->on_close(t->ud, slot_at(t, i), reason);
	slot_free(t, i);
}

static uint32_t visitor_get(struct session_table *t, uint64_t hash)
{
	uint32_t v = index_find(t, hash);

	if (v != NONE) {
		lru_unlink(t, v);
		lru_append(t, v);
		return v;
	}
	if (t->visitor_count < t->opt.max_visitors) {
		v = (uint32_t)t->visitor_count++;
		t->stats.visitors++;
	} else {
		/* Full: the least recently seen visitor makes room (its session ends). */
		v = t->lru_head;
		if (t->visitors[v].session != NONE)
			close_session(t, v, SESSION_END_EVICTED);
		index_remove(t, t->visitors[v].key_hash);
		lru_unlink(t, v);
	}
	t->visitors[v].key_hash = hash;
	t->visitors[v].session = NONE;
	t->visitors[v].sessions = 0;
	index_insert(t, hash, v);
	lru_append(t, v);
	return v;
}

/* ---- sessions ---- */

static void session_id_make(struct session *s, uint64_t visitor_hash)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t in[3] = {visitor_hash, (uint64_t)s->started_at_ms, s->index};
	XXH128_hash_t h = XXH3_128bits(in, sizeof(in));
	uint64_t parts[2] = {h.high64, h.low64};

	for (int p = 0; p < 2; p++)
		for (int k = 0; k < 16; k++)
			s->id[p * 16 + k] = hex[(parts[p] >> (60 - 4 * k)) & 0xF];
	s->id[SESSION_ID_CHARS] = '\0';
}

static uint32_t open_session(struct session_table *t, uint32_t v, const struct event *ev,
                             int channel, int64_t now_ms)
{
	uint32_t i = slot_alloc(t);
	struct session *s;
	size_t url = t->opt.max_url_bytes;
	size_t cur_len;
	const char *cur;

	if (i == NONE)
		return NONE;
	s = slot_at(t, i);
	memset(s, 0, sizeof(*s));
	s->visitor = v;
	s->index = ++t->visitors[v].sessions;
	s->started_at_ms = s->last_seen_ms = now_ms;
	s->channel = channel;
	s->arena_used = (uint16_t)append_start(t);
	session_id_make(s, t->visitors[v].key_hash);
	put_from_event(t, s, SF_APP_ID, ev, EF_APP_ID, SESSION_ID_FIELD_BYTES);
	put_from_event(t, s, SF_VISITOR_ID, ev, EF_VISITOR_ID, SESSION_ID_FIELD_BYTES);
	put_from_event(t, s, SF_SOURCE, ev, EF_SOURCE, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_MEDIUM, ev, EF_MEDIUM, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_CAMPAIGN, ev, EF_CAMPAIGN, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_CLICK_ID_TYPE, ev, EF_CLICK_ID_TYPE, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_CLICK_ID, ev, EF_CLICK_ID, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_AFFILIATE_ID, ev, EF_AFFILIATE_ID, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_TERM, ev, EF_TERM, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_CONTENT, ev, EF_CONTENT, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_REFERRER_HOST, ev, EF_REFERRER_HOST, SESSION_TOUCH_FIELD_BYTES);
	put_from_event(t, s, SF_REFERRER, ev, EF_REFERRER, url);
	cur = event_get(ev, EF_CURRENCY, &cur_len);
	if (cur && cur_len < sizeof(s->currency))
		memcpy(s->currency, cur, cur_len);
	t->visitors[v].session = i;
	t->stats.open++;
	t->stats.started++;
	wheel_insert(t, i,
	             now_ms + (t->opt.timeout_ms < t->opt.max_duration_ms
	                           ? t->opt.timeout_ms
	                           : t->opt.max_duration_ms));
	return i;
}

static void count_event(struct session_table *t, struct session *s, const struct event *ev,
                        int64_t now_ms)
{
	size_t len;
	const char *v;

	s->events++;
	if (now_ms > s->last_seen_ms)
		s->last_seen_ms = now_ms;
	if (ev->type == EVENT_PAGE_VIEW)
		s->page_views++;
	if (ev->type == EVENT_CONVERSION) {
		s->conversions++;
		if (ev->has_revenue) {
			v = event_get(ev, EF_CURRENCY, &len);
			if (v && s->currency[0] == '\0' && len < sizeof(s->currency))
				memcpy(s->currency, v, len);
			if (!v ||
			    (len == strlen(s->currency) && memcmp(v, s->currency, len) == 0)) {
				s->revenue += ev->revenue;
				s->has_revenue = true;
			} else {
				t->stats.revenue_other_currency++;
			}
		}
	}
	v = event_get(ev, EF_URL, &len);
	if (v) {
		if (s->str_len[SF_LANDING_URL] == 0)
			put_append(t, s, SF_LANDING_URL, t->opt.max_url_bytes, v, len);
		put_fixed(s, SF_EXIT_URL, exit_url_off(), t->opt.max_url_bytes, v, len);
	}
	v = event_get(ev, EF_USER_ID, &len);
	if (v)
		put_fixed(s, SF_USER_ID, user_id_off(t), SESSION_ID_FIELD_BYTES, v, len);
}

const struct session *session_track(struct session_table *t, const struct event *ev, int channel)
{
	int64_t now = ev->received_at_ms;
	uint32_t v, i;
	struct session *s;

	if (!event_has(ev, EF_VISITOR_ID)) {
		t->stats.no_visitor++;
		return NULL;
	}
	wheel_start(t, now);
	v = visitor_get(t, event_visitor_hash(ev));
	i = t->visitors[v].session;
	if (i != NONE) {
		enum session_end_reason why;
		s = slot_at(t, i);
		if (now >= deadline_of(t, s, &why))
			close_session(t, v, why); /* before the wheel got there */
		else if (event_is_touch(ev) && touch_differs(s, ev))
			close_session(t, v, SESSION_END_NEW_CAMPAIGN);
		i = t->visitors[v].session;
	}
	if (i == NONE) {
		i = open_session(t, v, ev, channel, now);
		if (i == NONE)
			return NULL; /* out of memory for a new chunk of slots */
	}
	s = slot_at(t, i);
	count_event(t, s, ev, now);
	return s;
}

/* Visits one wheel slot: closes what is due, files the rest again. */
static void wheel_visit(struct session_table *t, uint32_t slot, int64_t now_ms)
{
	uint32_t i = t->wheel[slot];

	t->wheel[slot] = NONE;
	while (i != NONE) {
		struct session *s = slot_at(t, i);
		uint32_t next = s->wheel_next;
		enum session_end_reason why;
		int64_t deadline = deadline_of(t, s, &why);

		if (deadline <= now_ms) {
			/* Already unlinked from the wheel: close without wheel_remove. */
			uint32_t v = s->visitor;
			t->visitors[v].session = NONE;
			t->stats.open--;
			t->stats.ended[why]++;
			t->on_close(t->ud, s, why);
			slot_free(t, i);
		} else {
			wheel_insert(t, i, deadline);
		}
		i = next;
	}
}

void session_tick(struct session_table *t, int64_t now_ms)
{
	int64_t target = now_ms / SESSION_TICK_MS;
	size_t visited = 0;

	if (!t->wheel_started) {
		wheel_start(t, now_ms);
		return;
	}
	while (t->next_tick <= target) {
		int64_t tick = t->next_tick++;
		wheel_visit(t, (uint32_t)(tick & (WHEEL_SLOTS - 1)), now_ms);
		if (++visited == WHEEL_SLOTS) {
			/* A whole turn visited every slot once: the rest is done. */
			t->next_tick = target + 1;
			break;
		}
	}
}

void session_close_all(struct session_table *t, enum session_end_reason reason)
{
	for (uint32_t v = t->lru_head; v != NONE; v = t->visitors[v].lru_next)
		if (t->visitors[v].session != NONE)
			close_session(t, v, reason);
}

void session_get_stats(const struct session_table *t, struct session_stats *out)
{
	*out = t->stats;
}

/* ---- saving and restoring ---- */

bool session_saved_next(const struct session_table *t, uint64_t *cursor, struct session_saved *out)
{
	uint32_t v, next;
	const struct session *s;

	if (*cursor == UINT64_MAX)
		return false;
	v = *cursor == 0 ? t->lru_head : (uint32_t)(*cursor - 1);
	if (v == NONE) {
		*cursor = UINT64_MAX;
		return false;
	}
	next = t->visitors[v].lru_next;
	*cursor = next == NONE ? UINT64_MAX : (uint64_t)next + 1;
	memset(out, 0, sizeof(*out));
	out->visitor_hash = t->visitors[v].key_hash;
	out->sessions = t->visitors[v].sessions;
	if (t->visitors[v].session == NONE)
		return true;
	s = slot_at(t, t->visitors[v].session);
	out->has_session = true;
	memcpy(out->id, s->id, sizeof(out->id));
	out->index = s->index;
	out->started_at_ms = s->started_at_ms;
	out->last_seen_ms = s->last_seen_ms;
	out->events = s->events;
	out->page_views = s->page_views;
	out->conversions = s->conversions;
	out->has_revenue = s->has_revenue;
	out->revenue = s->revenue;
	memcpy(out->currency, s->currency, sizeof(out->currency));
	out->channel = s->channel;
	for (int f = 0; f < SF__COUNT; f++)
		out->str[f] = session_get(s, (enum session_field)f, &out->str_len[f]);
	return true;
}

static bool saved_id_ok(const char *id)
{
	for (int k = 0; k < SESSION_ID_CHARS; k++)
		if (!((id[k] >= '0' && id[k] <= '9') || (id[k] >= 'a' && id[k] <= 'f')))
			return false;
	return id[SESSION_ID_CHARS] == '\0';
}

static bool saved_ok(const struct session_saved *in)
{
	if (!in->has_session)
		return true;
	return in->index >= 1 && in->index <= in->sessions && in->events >= 1 &&
	       in->last_seen_ms >= in->started_at_ms && saved_id_ok(in->id) &&
	       in->currency[sizeof(in->currency) - 1] == '\0';
}

/* The saved strings into a fresh slot, in open_session's order and with its bounds, so the
 * arena is laid out as if the session had opened in this table. */
static void restore_strings(const struct session_table *t, struct session *s,
                            const struct session_saved *in)
{
	static const struct {
		enum session_field f;
		size_t cap; /* 0: max_url_bytes */
	} append[] = {
	    {SF_APP_ID, SESSION_ID_FIELD_BYTES},
	    {SF_VISITOR_ID, SESSION_ID_FIELD_BYTES},
	    {SF_SOURCE, SESSION_TOUCH_FIELD_BYTES},
	    {SF_MEDIUM, SESSION_TOUCH_FIELD_BYTES},
	    {SF_CAMPAIGN, SESSION_TOUCH_FIELD_BYTES},
	    {SF_CLICK_ID_TYPE, SESSION_TOUCH_FIELD_BYTES},
	    {SF_CLICK_ID, SESSION_TOUCH_FIELD_BYTES},
	    {SF_AFFILIATE_ID, SESSION_TOUCH_FIELD_BYTES},
	    {SF_TERM, SESSION_TOUCH_FIELD_BYTES},
	    {SF_CONTENT, SESSION_TOUCH_FIELD_BYTES},
	    {SF_REFERRER_HOST, SESSION_TOUCH_FIELD_BYTES},
	    {SF_REFERRER, 0},
	    {SF_LANDING_URL, 0},
	};
	size_t url = t->opt.max_url_bytes;

	s->arena_used = (uint16_t)append_start(t);
	for (size_t k = 0; k < sizeof(append) / sizeof(append[0]); k++) {
		enum session_field f = append[k].f;
		if (in->str_len[f])
			put_append(t, s, f, append[k].cap ? append[k].cap : url, in->str[f],
			           in->str_len[f]);
	}
	if (in->str_len[SF_EXIT_URL])
		put_fixed(s, SF_EXIT_URL, exit_url_off(), url, in->str[SF_EXIT_URL],
		          in->str_len[SF_EXIT_URL]);
	if (in->str_len[SF_USER_ID])
		put_fixed(s, SF_USER_ID, user_id_off(t), SESSION_ID_FIELD_BYTES,
		          in->str[SF_USER_ID], in->str_len[SF_USER_ID]);
}

int session_restore(struct session_table *t, const struct session_saved *in, int64_t now_ms)
{
	enum session_end_reason why;
	struct session *s;
	uint32_t v, i;

	if (!saved_ok(in))
		return -EINVAL;
	if (index_find(t, in->visitor_hash) != NONE)
		return -EEXIST;
	wheel_start(t, now_ms);
	v = visitor_get(t, in->visitor_hash);
	t->visitors[v].sessions = in->sessions;
	if (!in->has_session)
		return 0;
	i = slot_alloc(t);
	if (i == NONE)
		return -ENOMEM;
	s = slot_at(t, i);
	memset(s, 0, sizeof(*s));
	s->visitor = v;
	memcpy(s->id, in->id, sizeof(s->id));
	s->index = in->index;
	s->started_at_ms = in->started_at_ms;
	s->last_seen_ms = in->last_seen_ms;
	s->events = in->events;
	s->page_views = in->page_views;
	s->conversions = in->conversions;
	s->has_revenue = in->has_revenue;
	s->revenue = in->revenue;
	memcpy(s->currency, in->currency, sizeof(s->currency));
	s->channel = in->channel;
	restore_strings(t, s, in);
	t->visitors[v].session = i;
	t->stats.open++;
	t->stats.restored++;
	wheel_insert(t, i, deadline_of(t, s, &why));
	return 0;
}

struct session_table *session_table_new(const struct session_options *opt,
                                        session_close_fn on_close, void *ud)
{
	struct session_table *t;
	size_t cap = 16;

	if (opt->timeout_ms < 1 || opt->max_duration_ms < 1 || opt->max_visitors < 1 ||
	    opt->max_visitors > (1u << 31) || opt->max_url_bytes < 16 ||
	    opt->max_url_bytes > 8192 || !on_close)
		return NULL;
	while (cap < opt->max_visitors * 2)
		cap <<= 1;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->opt = *opt;
	t->on_close = on_close;
	t->ud = ud;
	t->visitors = calloc(opt->max_visitors, sizeof(*t->visitors));
	t->index = calloc(cap, sizeof(*t->index));
	if (!t->visitors || !t->index) {
		session_table_free(t);
		return NULL;
	}
	t->index_mask = cap - 1;
	t->lru_head = t->lru_tail = NONE;
	t->free_slot = NONE;
	t->slot_bytes = session_slot_bytes(opt->max_url_bytes);
	for (size_t k = 0; k < WHEEL_SLOTS; k++)
		t->wheel[k] = NONE;
	return t;
}

void session_table_free(struct session_table *t)
{
	if (!t)
		return;
	for (size_t k = 0; k < t->chunk_count; k++)
		free(t->chunks[k]);
	free(t->chunks);
	free(t->visitors);
	free(t->index);
	free(t);
}
