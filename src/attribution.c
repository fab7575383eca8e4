/*
 * attribution.c - attribution paths, identity, the six models and per-minute rollups, on one
 * shard (see attribution.h for the rules and the memory figures).
 *
 * Structures, all index-based (uint32_t, NONE = none) so that nothing holds a pointer that a
 * reallocation could move:
 * - two LRU tables (struct lru), one of visitors and one of users: fixed-stride entries
 *   allocated once for their maximum with calloc (pages are touched only as entries arrive),
 *   an open-addressing index by key hash (linear probing, at most half full, backward-shift
 *   deletion) and a least-recently-seen list. This is session.c's visitor table made generic
 *   over the entry size: session.c keeps its own copy static, and sharing it would mean
 *   editing session.c, so the two stay independent for now (a shared lru.c is the obvious
 *   follow-up).
 * - touchpoint slots: fixed-size, in chunks of CHUNK_SLOTS allocated as paths grow and kept
 *   for reuse through a free list (as session slots are). A visitor's path is a doubly
 *   linked list of slots in time order; touches arrive nearly in time order, so inserting
 *   walks back from the newest and usually stops at once.
 * - a user holds its devices inline, most recently linked first (at most 16: moving one to
 *   the front is a short memmove).
 * - a conversion gathers its candidates (slot pointers: chunks never move) into scratch space
 *   sized for max_devices_per_user full paths, sorts them when they come from several
 *   devices, and keeps the max_touchpoints most recent.
 *
 * Rollups: one table per open minute, in a ring of grace_ms / 60000 + 2 tables (enough for
 * every minute that can be open at once, see rollup_slots). A table is a dense array of rows
 * in the order their keys appeared plus an open-addressing index; closing hands the rows to
 * the callback and clears the index.
 */
#include "clickd/attribution.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define NONE        UINT32_MAX
#define CHUNK_SLOTS 256
#define MINUTE_MS   60000
#define NO_MINUTE   INT64_MIN
#define USER_SEED   0x75736572ULL /* "user": user keys hash apart from visitor keys */

static const char *const model_names[ATTRIBUTION_MODEL__COUNT] = {
#define ATTRIBUTION_MODEL_NAME(id, json) [ATTRIBUTION_##id] = json,
    ATTRIBUTION_MODELS(ATTRIBUTION_MODEL_NAME)
#undef ATTRIBUTION_MODEL_NAME
};

const char *attribution_model_name(enum attribution_model m)
{
	return (unsigned)m < ATTRIBUTION_MODEL__COUNT ? model_names[m] : "unknown";
}

/* ---- strings ---- */

size_t attribution_set_string(char *dst, size_t dst_bytes, const char *s, size_t len)
{
	size_t cap = dst_bytes - 1;

	if (len > cap) {
		len = cap;
		/* Back off continuation bytes: the cut never splits a character. */
		while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
			len--;
	}
	if (len)
		memcpy(dst, s, len);
	dst[len] = '\0';
	return len;
}

uint64_t attribution_user_hash(const char *app_id, size_t app_id_len, const char *user_id,
                               size_t user_id_len)
{
	/* The app's hash seeds the user's: ("ab", "c") and ("a", "bc") differ. One-shot
	 * calls: XXH3's streaming state costs more for short keys. */
	uint64_t app = XXH3_64bits_withSeed(app_id ? app_id : "", app_id_len, USER_SEED);
	uint64_t h = XXH3_64bits_withSeed(user_id ? user_id : "", user_id_len, app);

	return h ? h : 1; /* 0 means "no user" */
}

/* ---- a generic LRU hash table (session.c's visitor table over any entry size) ---- */

/* The first member of every entry. */
struct lru_entry {
	uint64_t key_hash;
	uint32_t prev, next; /* towards least / most recently seen; next links the free list */
};

struct lru {
	unsigned char *entries; /* owned: max * stride bytes */
	size_t stride;
	size_t max;
	size_t count;    /* live entries */
	size_t handed;   /* entries ever handed out (the rest are untouched) */
	uint32_t *index; /* owned: mask + 1 slots of entry + 1 (0 = empty) */
	uint64_t mask;
	uint32_t head, tail; /* least and most recently seen */
	uint32_t free_list;
};

static size_t lru_index_slots(size_t max)
{
	size_t cap = 16;

	while (cap < max * 2)
		cap <<= 1;
	return cap;
}

static int lru_init(struct lru *l, size_t max, size_t stride)
{
	size_t cap = lru_index_slots(max);

	memset(l, 0, sizeof(*l));
	l->entries = calloc(max, stride);
	l->index = calloc(cap, sizeof(*l->index));
	if (!l->entries || !l->index)
		return -ENOMEM;
	l->stride = stride;
	l->max = max;
	l->mask = cap - 1;
	l->head = l->tail = l->free_list = NONE;
	return 0;
}

static void lru_close(struct lru *l)
{
	free(l->entries);
	free(l->index);
}

static size_t lru_bytes(const struct lru *l)
{
	return l->max * l->stride + (l->mask + 1) * sizeof(*l->index);
}

static struct lru_entry *lru_at(const struct lru *l, uint32_t i)
{
	return (struct lru_entry *)(l->entries + (size_t)i * l->stride);
}

static uint32_t lru_find(const struct lru *l, uint64_t hash)
{
	for (uint64_t i = hash & l->mask;; i = (i + 1) & l->mask) {
		uint32_t e = l->index[i];
		if (e == 0)
			return NONE;
		if (lru_at(l, e - 1)->key_hash == hash)
			return e - 1;
	}
}

static void lru_unlink(struct lru *l, uint32_t i)
{
	struct lru_entry *x = lru_at(l, i);

	if (x->prev != NONE)
		lru_at(l, x->prev)->next = x->next;
	else
		l->head = x->next;
	if (x->next != NONE)
		lru_at(l, x->next)->prev = x->prev;
	else
		l->tail = x->prev;
}

static void lru_append(struct lru *l, uint32_t i)
{
	struct lru_entry *x = lru_at(l, i);

	x->prev = l->tail;
	x->next = NONE;
	if (l->tail != NONE)
		lru_at(l, l->tail)->next = i;
	else
		l->head = i;
	l->tail = i;
}

/* Marks entry i as the most recently seen. */
static void lru_bump(struct lru *l, uint32_t i)
{
	if (l->tail == i)
		return;
	lru_unlink(l, i);
	lru_append(l, i);
}

/* Adds an entry for hash (not present; the table must not be full); its bytes after the
 * header are zero. */
static uint32_t lru_add(struct lru *l, uint64_t hash)
{
	uint32_t i;
	uint64_t k = hash & l->mask;
	struct lru_entry *x;

	if (l->free_list != NONE) {
		i = l->free_list;
		l->free_list = lru_at(l, i)->next;
	} else {
		i = (uint32_t)l->handed++;
	}
	x = lru_at(l, i);
	memset(x, 0, l->stride);
	x->key_hash = hash;
	while (l->index[k] != 0)
		k = (k + 1) & l->mask;
	l->index[k] = i + 1;
	lru_append(l, i);
	l->count++;
	return i;
}

/* Forgets entry i (its index slot, its place in the list). */
static void lru_remove(struct lru *l, uint32_t i)
{
	uint64_t k = lru_at(l, i)->key_hash & l->mask;

	while (l->index[k] != i + 1)
		k = (k + 1) & l->mask;
	/* Backward-shift deletion (as in dedup.c and session.c). */
	for (uint64_t j = (k + 1) & l->mask; l->index[j] != 0; j = (j + 1) & l->mask) {
		uint64_t home = lru_at(l, l->index[j] - 1)->key_hash & l->mask;
		if (((j - home) & l->mask) >= ((j - k) & l->mask)) {
			l->index[k] = l->index[j];
			k = j;
		}
	}
	l->index[k] = 0;
	lru_unlink(l, i);
	lru_at(l, i)->next = l->free_list;
	l->free_list = i;
	l->count--;
}

/* ---- the attribution state ---- */

struct tp_slot {
	struct attribution_touchpoint tp;
	uint32_t prev, next; /* in the visitor's path: older / newer; next links the free list */
};

struct visitor {
	struct lru_entry link;
	uint64_t user_hash; /* the user this device is linked to, 0 = none */
	int64_t last_seen_ms;
	uint32_t first, last; /* the path: oldest and newest slot */
	uint16_t count;       /* touchpoints in the path */
	uint8_t visitor_id_len;
	char visitor_id[ATTRIBUTION_VISITOR_ID_BYTES - 1]; /* not NUL-terminated */
};

struct device {
	uint64_t visitor_hash;
	int64_t linked_ms; /* last seen with the user */
};

struct user {
	struct lru_entry link;
	int64_t last_seen_ms;
	uint32_t devices;
	struct device device[]; /* max_devices_per_user, most recently linked first */
};

/* A conversion's candidate touchpoint (scratch). */
struct candidate {
	const struct attribution_touchpoint *tp;
	uint64_t visitor_hash;
	uint32_t visitor;
};

struct attribution {
	struct attribution_options opt;
	size_t slot_cap; /* max_stored_touchpoints, resolved */

	struct lru visitors;
	struct lru users;

	struct tp_slot **chunks; /* owned, each CHUNK_SLOTS slots */
	size_t chunk_count;
	uint32_t free_slot;
	size_t slots_used;

	struct candidate *scratch; /* owned: (max_devices_per_user + 1) * max_touchpoints */
	uint32_t sources[ATTRIBUTION_MAX_DEVICES + 1];

	struct attribution_stats stats;
};

size_t attribution_visitor_bytes(void)
{
	return sizeof(struct visitor);
}

size_t attribution_touchpoint_bytes(void)
{
	return sizeof(struct tp_slot);
}

static size_t user_stride(size_t max_devices)
{
	size_t bytes = sizeof(struct user) + max_devices * sizeof(struct device);

	return (bytes + 7) & ~(size_t)7;
}

size_t attribution_user_bytes(size_t max_devices_per_user)
{
	return user_stride(max_devices_per_user);
}

size_t attribution_path_bytes(const struct attribution_options *o)
{
	size_t index_bytes = lru_index_slots(o->max_visitors) * sizeof(uint32_t);
	size_t index_share = (index_bytes + o->max_visitors - 1) / o->max_visitors;

	return sizeof(struct visitor) + index_share + o->max_touchpoints * sizeof(struct tp_slot);
}

void attribution_options_default(struct attribution_options *o)
{
	memset(o, 0, sizeof(*o));
	o->lookback_ms = 30LL * 86400000;
	o->half_life_ms = 7LL * 86400000;
	o->max_touchpoints = 32;
	o->max_visitors = 100000;
	o->max_users = 100000;
	o->max_devices_per_user = 8;
	o->max_stored_touchpoints = 0;
}

static struct visitor *visitor_at(const struct attribution *a, uint32_t v)
{
	return (struct visitor *)lru_at(&a->visitors, v);
}

static struct user *user_at(const struct attribution *a, uint32_t u)
{
	return (struct user *)lru_at(&a->users, u);
}

/* ---- touchpoint slots ---- */

static struct tp_slot *slot_at(const struct attribution *a, uint32_t i)
{
	return &a->chunks[i / CHUNK_SLOTS][i % CHUNK_SLOTS];
}

static uint32_t slot_take(struct attribution *a)
{
	uint32_t i = a->free_slot;
	struct tp_slot **chunks, *chunk;

	if (i != NONE) {
		a->free_slot = slot_at(a, i)->next;
		a->slots_used++;
		return i;
	}
	chunks = realloc(a->chunks, (a->chunk_count + 1) * sizeof(*chunks));
	if (!chunks)
		return NONE;
	a->chunks = chunks;
	chunk = malloc(CHUNK_SLOTS * sizeof(*chunk));
	if (!chunk)
		return NONE;
	a->chunks[a->chunk_count] = chunk;
	/* Slot 0 of the chunk is handed out, the rest go on the free list. */
	i = (uint32_t)(a->chunk_count * CHUNK_SLOTS);
	a->chunk_count++;
	for (uint32_t k = CHUNK_SLOTS - 1; k >= 1; k--) {
		chunk[k].next = a->free_slot;
		a->free_slot = i + k;
	}
	a->slots_used++;
	return i;
}

static void slot_give(struct attribution *a, uint32_t i)
{
	slot_at(a, i)->next = a->free_slot;
	a->free_slot = i;
	a->slots_used--;
}

/* ---- paths ---- */

/* The stable order of touchpoints of one visitor: start time, then session ID. */
static int tp_cmp(const struct attribution_touchpoint *x, const struct attribution_touchpoint *y)
{
	if (x->started_at_ms != y->started_at_ms)
		return x->started_at_ms < y->started_at_ms ? -1 : 1;
	return strcmp(x->session_id, y->session_id);
}

static void path_remove(struct attribution *a, struct visitor *x, uint32_t i)
{
	struct tp_slot *s = slot_at(a, i);

	if (s->prev != NONE)
		slot_at(a, s->prev)->next = s->next;
	else
		x->first = s->next;
	if (s->next != NONE)
		slot_at(a, s->next)->prev = s->prev;
	else
		x->last = s->prev;
	x->count--;
	a->stats.touchpoints--;
	slot_give(a, i);
}

/* Links slot i into x's path at its place in time order, walking back from the newest. */
static void path_insert(struct attribution *a, struct visitor *x, uint32_t i)
{
	struct tp_slot *s = slot_at(a, i);
	uint32_t after = x->last;

	while (after != NONE && tp_cmp(&slot_at(a, after)->tp, &s->tp) > 0)
		after = slot_at(a, after)->prev;
	s->prev = after;
	s->next = after != NONE ? slot_at(a, after)->next : x->first;
	if (s->prev != NONE)
		slot_at(a, s->prev)->next = i;
	else
		x->first = i;
	if (s->next != NONE)
		slot_at(a, s->next)->prev = i;
	else
		x->last = i;
	x->count++;
	a->stats.touchpoints++;
}

/* Drops the touchpoints that started before `cut` (they are the oldest, at the front). */
static void path_prune(struct attribution *a, struct visitor *x, int64_t cut)
{
	while (x->first != NONE && slot_at(a, x->first)->tp.started_at_ms < cut) {
		path_remove(a, x, x->first);
		a->stats.touchpoints_expired++;
	}
}

static void path_clear(struct attribution *a, struct visitor *x)
{
	while (x->first != NONE)
		path_remove(a, x, x->first);
}

/* The slot of tp's session (same start and session ID), or NONE. The path is in time
 * order: walking back from the newest, only slots that started when tp did are compared,
 * so a new session (the usual touch: it started after everything in the path) costs one
 * look at the newest slot, not a string comparison per touchpoint of a full path. */
static uint32_t path_find_session(const struct attribution *a, const struct visitor *x,
                                  const struct attribution_touchpoint *tp)
{
	for (uint32_t i = x->last; i != NONE; i = slot_at(a, i)->prev) {
		const struct attribution_touchpoint *t = &slot_at(a, i)->tp;

		if (t->started_at_ms < tp->started_at_ms)
			return NONE;
		if (t->started_at_ms == tp->started_at_ms &&
		    strcmp(t->session_id, tp->session_id) == 0)
			return i;
	}
	return NONE;
}

/* ---- visitors and users ---- */

static void visitor_forget(struct attribution *a, uint32_t v)
{
	path_clear(a, visitor_at(a, v));
	lru_remove(&a->visitors, v);
	a->stats.visitors--;
}

/* The visitor of ids, as the most recently seen (added, pushing out the least recently
 * seen when the table is full). */
static uint32_t visitor_get(struct attribution *a, const struct attribution_ids *ids,
                            int64_t now_ms)
{
	uint32_t v = lru_find(&a->visitors, ids->visitor_hash);
	struct visitor *x;

	if (v != NONE) {
		lru_bump(&a->visitors, v);
	} else {
		if (a->visitors.count == a->visitors.max) {
			visitor_forget(a, a->visitors.head);
			a->stats.visitors_evicted++;
		}
		v = lru_add(&a->visitors, ids->visitor_hash);
		x = visitor_at(a, v);
		x->first = x->last = NONE;
		x->last_seen_ms = now_ms;
		a->stats.visitors++;
	}
	x = visitor_at(a, v);
	if (now_ms > x->last_seen_ms)
		x->last_seen_ms = now_ms;
	if (ids->visitor_id_len) {
		char id[ATTRIBUTION_VISITOR_ID_BYTES];
		size_t len =
		    attribution_set_string(id, sizeof(id), ids->visitor_id, ids->visitor_id_len);
		memcpy(x->visitor_id, id, len);
		x->visitor_id_len = (uint8_t)len;
	}
	return v;
}

static void device_remove(struct user *u, uint64_t visitor_hash)
{
	for (uint32_t k = 0; k < u->devices; k++) {
		if (u->device[k].visitor_hash != visitor_hash)
			continue;
		memmove(&u->device[k], &u->device[k + 1],
		        (u->devices - k - 1) * sizeof(u->device[0]));
		u->devices--;
		return;
	}
}

/* Puts the device at the front of u's list (most recently linked), pushing the least
 * recently linked out of a full list. */
static void device_link(struct attribution *a, struct user *u, uint64_t visitor_hash,
                        int64_t now_ms)
{
	uint32_t k = 0;

	while (k < u->devices && u->device[k].visitor_hash != visitor_hash)
		k++;
	if (k == u->devices) {
		if (u->devices == a->opt.max_devices_per_user) {
			a->stats.devices_dropped++;
			k = u->devices - 1; /* overwritten below */
		} else {
			u->devices++;
		}
	}
	memmove(&u->device[1], &u->device[0], k * sizeof(u->device[0]));
	u->device[0].visitor_hash = visitor_hash;
	u->device[0].linked_ms = now_ms;
}

static uint32_t user_get(struct attribution *a, uint64_t user_hash, int64_t now_ms)
{
	uint32_t u = lru_find(&a->users, user_hash);
	struct user *y;

	if (u != NONE) {
		lru_bump(&a->users, u);
	} else {
		if (a->users.count == a->users.max) {
			lru_remove(&a->users, a->users.head);
			a->stats.users--;
			a->stats.users_evicted++;
		}
		u = lru_add(&a->users, user_hash);
		user_at(a, u)->last_seen_ms = now_ms;
		a->stats.users++;
	}
	y = user_at(a, u);
	if (now_ms > y->last_seen_ms)
		y->last_seen_ms = now_ms;
	return u;
}

/* Links visitor v to user_hash: a device belongs to one user, the last one seen. */
static uint32_t link_user(struct attribution *a, uint32_t v, uint64_t user_hash, int64_t now_ms)
{
	struct visitor *x = visitor_at(a, v);
	uint32_t u;

	if (x->user_hash != 0 && x->user_hash != user_hash) {
		uint32_t old = lru_find(&a->users, x->user_hash);
		if (old != NONE)
			device_remove(user_at(a, old), x->link.key_hash);
	}
	x->user_hash = user_hash;
	u = user_get(a, user_hash, now_ms);
	device_link(a, user_at(a, u), x->link.key_hash, now_ms);
	return u;
}

/* A linked device seen without a user ID (logged out) is still its user's: its link is
 * refreshed, so its touchpoints keep counting for the user's conversions. */
static void refresh_link(struct attribution *a, const struct visitor *x, int64_t now_ms)
{
	uint32_t u = lru_find(&a->users, x->user_hash);

	if (u == NONE)
		return; /* the user was forgotten */
	lru_bump(&a->users, u);
	if (now_ms > user_at(a, u)->last_seen_ms)
		user_at(a, u)->last_seen_ms = now_ms;
	device_link(a, user_at(a, u), x->link.key_hash, now_ms);
}

/* ---- the public calls ---- */

struct attribution *attribution_new(const struct attribution_options *o)
{
	struct attribution *a;
	size_t stored = o->max_stored_touchpoints;
	size_t scratch;

	if (o->lookback_ms < 1 || o->half_life_ms < 1 || o->max_touchpoints < 1 ||
	    o->max_touchpoints > ATTRIBUTION_MAX_TOUCHPOINTS || o->max_visitors < 1 ||
	    o->max_visitors > (1u << 31) || o->max_users < 1 || o->max_users > (1u << 31) ||
	    o->max_devices_per_user < 1 || o->max_devices_per_user > ATTRIBUTION_MAX_DEVICES ||
	    (stored != 0 && stored < o->max_touchpoints))
		return NULL;
	if (stored == 0 || stored > (size_t)NONE - CHUNK_SLOTS) {
		/* Never more than every path full, and slot numbers must fit in 32 bits. */
		stored = o->max_visitors * o->max_touchpoints;
		if (stored > (size_t)NONE - CHUNK_SLOTS)
			stored = (size_t)NONE - CHUNK_SLOTS;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->opt = *o;
	a->slot_cap = stored;
	a->free_slot = NONE;
	scratch = (o->max_devices_per_user + 1) * o->max_touchpoints;
	a->scratch = calloc(scratch, sizeof(*a->scratch));
	if (!a->scratch || lru_init(&a->visitors, o->max_visitors, sizeof(struct visitor)) != 0 ||
	    lru_init(&a->users, o->max_users, user_stride(o->max_devices_per_user)) != 0) {
		attribution_free(a);
		return NULL;
	}
	return a;
}

void attribution_free(struct attribution *a)
{
	if (!a)
		return;
	for (size_t k = 0; k < a->chunk_count; k++)
		free(a->chunks[k]);
	free(a->chunks);
	free(a->scratch);
	lru_close(&a->visitors);
	lru_close(&a->users);
	free(a);
}

/* A slot for visitor v's new touchpoint: past the stored-touchpoint bound, the least
 * recently seen visitors (never v, the most recent) are forgotten to make room. */
static uint32_t slot_for(struct attribution *a, uint32_t v)
{
	uint32_t i;

	while (a->slots_used >= a->slot_cap && a->visitors.head != v) {
		visitor_forget(a, a->visitors.head);
		a->stats.visitors_evicted_for_space++;
	}
	i = slot_take(a);
	if (i == NONE)
		a->stats.out_of_memory++;
	return i;
}

int attribution_touch(struct attribution *a, const struct attribution_ids *ids,
                      const struct attribution_touchpoint *tp, int64_t now_ms)
{
	int64_t cut = now_ms - a->opt.lookback_ms;
	uint32_t v, i;
	struct visitor *x;
	struct tp_slot *s;

	a->stats.touches++;
	if (tp->started_at_ms < cut) {
		a->stats.touches_too_old++;
		return -ERANGE;
	}
	v = visitor_get(a, ids, now_ms);
	x = visitor_at(a, v);
	if (ids->user_hash != 0)
		link_user(a, v, ids->user_hash, now_ms);
	else if (x->user_hash != 0)
		refresh_link(a, x, now_ms);
	path_prune(a, x, cut);
	i = path_find_session(a, x, tp);
	if (i != NONE) {
		path_remove(a, x, i);
		a->stats.touches_same_session++;
	}
	if (x->count >= a->opt.max_touchpoints) {
		a->stats.touchpoints_dropped_full++;
		if (tp_cmp(tp, &slot_at(a, x->first)->tp) < 0)
			return -ERANGE; /* older than all of a full path: it is the one out */
		path_remove(a, x, x->first);
	}
	i = slot_for(a, v);
	if (i == NONE)
		return -ENOMEM;
	s = slot_at(a, i);
	s->tp = *tp;
	/* The caller's strings are ours now: make sure each one ends. */
	s->tp.session_id[sizeof(s->tp.session_id) - 1] = '\0';
	s->tp.source[sizeof(s->tp.source) - 1] = '\0';
	s->tp.medium[sizeof(s->tp.medium) - 1] = '\0';
	s->tp.campaign[sizeof(s->tp.campaign) - 1] = '\0';
	s->tp.click_id_type[sizeof(s->tp.click_id_type) - 1] = '\0';
	s->tp.affiliate_id[sizeof(s->tp.affiliate_id) - 1] = '\0';
	path_insert(a, x, i);
	return 0;
}

int attribution_link_user(struct attribution *a, const struct attribution_ids *ids, int64_t now_ms)
{
	if (ids->user_hash == 0)
		return -EINVAL;
	link_user(a, visitor_get(a, ids, now_ms), ids->user_hash, now_ms);
	return 0;
}

/* The visitors whose paths a conversion draws on, into a->sources; returns how many. */
static size_t conversion_sources(struct attribution *a, const struct attribution_ids *ids,
                                 int64_t converted_at_ms)
{
	int64_t window_start = converted_at_ms - a->opt.lookback_ms;
	uint32_t v, u;
	const struct user *y;
	size_t n = 0;

	if (ids->user_hash == 0) {
		v = lru_find(&a->visitors, ids->visitor_hash);
		if (v == NONE)
			return 0;
		lru_bump(&a->visitors, v);
		if (converted_at_ms > visitor_at(a, v)->last_seen_ms)
			visitor_at(a, v)->last_seen_ms = converted_at_ms;
		a->sources[n++] = v;
		return n;
	}
	v = visitor_get(a, ids, converted_at_ms);
	u = link_user(a, v, ids->user_hash, converted_at_ms);
	y = user_at(a, u);
	for (uint32_t k = 0; k < y->devices; k++) {
		uint32_t d;
		const struct visitor *x;

		if (y->device[k].linked_ms < window_start)
			continue; /* linked too long ago */
		d = lru_find(&a->visitors, y->device[k].visitor_hash);
		if (d == NONE)
			continue; /* forgotten */
		x = visitor_at(a, d);
		/* 0: the device was forgotten and came back before linking again. */
		if (x->user_hash != ids->user_hash && x->user_hash != 0)
			continue;
		a->sources[n++] = d;
	}
	return n;
}

static int candidate_cmp(const void *p, const void *q)
{
	const struct candidate *x = p, *y = q;
	int c = tp_cmp(x->tp, y->tp);

	if (c != 0)
		return c;
	return x->visitor_hash < y->visitor_hash ? -1 : x->visitor_hash > y->visitor_hash;
}

/* Gathers the touchpoints of the sources within the window into a->scratch, in order. */
static size_t conversion_candidates(struct attribution *a, size_t sources, int64_t converted_at_ms)
{
	int64_t window_start = converted_at_ms - a->opt.lookback_ms;
	size_t n = 0;

	for (size_t k = 0; k < sources; k++) {
		struct visitor *x = visitor_at(a, a->sources[k]);

		path_prune(a, x, window_start);
		for (uint32_t i = x->first; i != NONE; i = slot_at(a, i)->next) {
			const struct tp_slot *s = slot_at(a, i);
			if (s->tp.started_at_ms > converted_at_ms)
				break; /* after the conversion: not on its path */
			a->scratch[n].tp = &s->tp;
			a->scratch[n].visitor_hash = x->link.key_hash;
			a->scratch[n].visitor = a->sources[k];
			n++;
		}
	}
	if (sources > 1)
		qsort(a->scratch, n, sizeof(*a->scratch), candidate_cmp);
	return n;
}

int attribution_convert(struct attribution *a, const struct attribution_ids *ids,
                        int64_t converted_at_ms, double revenue, struct attribution_result *out)
{
	size_t sources = conversion_sources(a, ids, converted_at_ms);
	size_t n = conversion_candidates(a, sources, converted_at_ms);
	size_t from = n > a->opt.max_touchpoints ? n - a->opt.max_touchpoints : 0;
	uint64_t seen[ATTRIBUTION_MAX_DEVICES + 1];

	out->converted_at_ms = converted_at_ms;
	out->revenue = revenue;
	out->count = 0;
	out->devices = 0;
	out->cut = from;
	a->stats.conversions++;
	a->stats.touchpoints_cut += from;
	for (size_t k = from; k < n; k++) {
		struct attribution_credited *c = &out->touchpoints[out->count++];
		const struct visitor *x = visitor_at(a, a->scratch[k].visitor);
		size_t d = 0;

		c->tp = *a->scratch[k].tp;
		memcpy(c->visitor_id, x->visitor_id, x->visitor_id_len);
		c->visitor_id[x->visitor_id_len] = '\0';
		while (d < out->devices && seen[d] != x->link.key_hash)
			d++;
		if (d == out->devices)
			seen[out->devices++] = x->link.key_hash;
	}
	if (out->count == 0) {
		a->stats.conversions_empty++;
		return -ENOENT;
	}
	if (out->devices > 1)
		a->stats.conversions_merged++;
	attribution_credit(out, a->opt.half_life_ms);
	return 0;
}

void attribution_expire(struct attribution *a, int64_t now_ms)
{
	int64_t cut = now_ms - a->opt.lookback_ms;

	while (a->visitors.head != NONE && visitor_at(a, a->visitors.head)->last_seen_ms < cut) {
		visitor_forget(a, a->visitors.head);
		a->stats.visitors_expired++;
	}
	while (a->users.head != NONE && user_at(a, a->users.head)->last_seen_ms < cut) {
		lru_remove(&a->users, a->users.head);
		a->stats.users--;
		a->stats.users_expired++;
	}
}

void attribution_get_stats(const struct attribution *a, struct attribution_stats *out)
{
	*out = a->stats;
	out->bytes =
	    sizeof(*a) + lru_bytes(&a->visitors) + lru_bytes(&a->users) +
	    (a->opt.max_devices_per_user + 1) * a->opt.max_touchpoints * sizeof(*a->scratch) +
	    a->chunk_count * (CHUNK_SLOTS * sizeof(struct tp_slot) + sizeof(*a->chunks));
}

/* ---- saving and restoring ---- */

/* The LRU entry after *cursor (0: the least recently seen), advancing it; NONE past the end. */
static uint32_t lru_walk(const struct lru *l, uint64_t *cursor)
{
	uint32_t i;

	if (*cursor == UINT64_MAX)
		return NONE;
	i = *cursor == 0 ? l->head : (uint32_t)(*cursor - 1);
	if (i == NONE) {
		*cursor = UINT64_MAX;
		return NONE;
	}
	*cursor = lru_at(l, i)->next == NONE ? UINT64_MAX : (uint64_t)lru_at(l, i)->next + 1;
	return i;
}

bool attribution_saved_visitor_next(const struct attribution *a, uint64_t *cursor,
                                    struct attribution_saved_visitor *out)
{
	uint32_t v = lru_walk(&a->visitors, cursor);
	const struct visitor *x;

	if (v == NONE)
		return false;
	x = visitor_at(a, v);
	out->visitor_hash = x->link.key_hash;
	out->user_hash = x->user_hash;
	out->last_seen_ms = x->last_seen_ms;
	out->visitor_id_len = x->visitor_id_len;
	memcpy(out->visitor_id, x->visitor_id, x->visitor_id_len);
	out->visitor_id[x->visitor_id_len] = '\0';
	out->count = 0;
	for (uint32_t i = x->first; i != NONE && out->count < ATTRIBUTION_MAX_TOUCHPOINTS;
	     i = slot_at(a, i)->next)
		out->touchpoints[out->count++] = slot_at(a, i)->tp;
	return true;
}

bool attribution_saved_user_next(const struct attribution *a, uint64_t *cursor,
                                 struct attribution_saved_user *out)
{
	uint32_t u = lru_walk(&a->users, cursor);
	const struct user *y;

	if (u == NONE)
		return false;
	y = user_at(a, u);
	out->user_hash = y->link.key_hash;
	out->last_seen_ms = y->last_seen_ms;
	out->devices = y->devices;
	for (uint32_t k = 0; k < y->devices; k++) {
		out->device[k].visitor_hash = y->device[k].visitor_hash;
		out->device[k].linked_ms = y->device[k].linked_ms;
	}
	return true;
}

int attribution_restore_visitor(struct attribution *a, const struct attribution_saved_visitor *in,
                                int64_t now_ms)
{
	int64_t cut = now_ms - a->opt.lookback_ms;
	size_t from = in->count > a->opt.max_touchpoints ? in->count - a->opt.max_touchpoints : 0;
	struct visitor *x;
	uint32_t v;

	if (in->count > ATTRIBUTION_MAX_TOUCHPOINTS ||
	    in->visitor_id_len >= ATTRIBUTION_VISITOR_ID_BYTES)
		return -EINVAL;
	if (in->last_seen_ms < cut)
		return -ERANGE;
	if (lru_find(&a->visitors, in->visitor_hash) != NONE)
		return -EEXIST;
	if (a->visitors.count == a->visitors.max) {
		visitor_forget(a, a->visitors.head);
		a->stats.visitors_evicted++;
	}
	v = lru_add(&a->visitors, in->visitor_hash);
	x = visitor_at(a, v);
	x->first = x->last = NONE;
	x->user_hash = in->user_hash;
	x->last_seen_ms = in->last_seen_ms;
	memcpy(x->visitor_id, in->visitor_id, in->visitor_id_len);
	x->visitor_id_len = (uint8_t)in->visitor_id_len;
	a->stats.visitors++;
	for (size_t k = from; k < in->count; k++) {
		struct tp_slot *s;
		uint32_t i;

		if (in->touchpoints[k].started_at_ms < cut)
			continue;
		i = slot_for(a, v);
		if (i == NONE)
			return -ENOMEM;
		s = slot_at(a, i);
		s->tp = in->touchpoints[k];
		s->tp.session_id[sizeof(s->tp.session_id) - 1] = '\0';
		s->tp.source[sizeof(s->tp.source) - 1] = '\0';
		s->tp.medium[sizeof(s->tp.medium) - 1] = '\0';
		s->tp.campaign[sizeof(s->tp.campaign) - 1] = '\0';
		s->tp.click_id_type[sizeof(s->tp.click_id_type) - 1] = '\0';
		s->tp.affiliate_id[sizeof(s->tp.affiliate_id) - 1] = '\0';
		path_insert(a, x, i);
	}
	return 0;
}

int attribution_restore_user(struct attribution *a, const struct attribution_saved_user *in,
                             int64_t now_ms)
{
	struct user *y;
	uint32_t u;

	if (in->user_hash == 0 || in->devices > ATTRIBUTION_MAX_DEVICES)
		return -EINVAL;
	if (in->last_seen_ms < now_ms - a->opt.lookback_ms)
		return -ERANGE;
	if (lru_find(&a->users, in->user_hash) != NONE)
		return -EEXIST;
	if (a->users.count == a->users.max) {
		lru_remove(&a->users, a->users.head);
		a->stats.users--;
		a->stats.users_evicted++;
	}
	u = lru_add(&a->users, in->user_hash);
	y = user_at(a, u);
	y->last_seen_ms = in->last_seen_ms;
	y->devices =
	    (uint32_t)(in->devices < a->opt.max_devices_per_user ? in->devices
	                                                         : a->opt.max_devices_per_user);
	for (uint32_t k = 0; k < y->devices; k++) {
		y->device[k].visitor_hash = in->device[k].visitor_hash;
		y->device[k].linked_ms = in->device[k].linked_ms;
	}
	a->stats.users++;
	return 0;
}

/* ---- the models ----
 *
 * Each fills share[0..n) for touchpoints in time order. Shares are computed as exact
 * fractions where the model has them (1, 1/n, 0.4/0.2/(n-2)) and time decay is normalised
 * by its own sum, so every model sums to 1 within a few ulps x n, far inside 1e-9.
 */

static void model_single(double *share, size_t n, size_t winner)
{
	for (size_t i = 0; i < n; i++)
		share[i] = i == winner ? 1.0 : 0.0;
}

static size_t last_non_direct(const struct attribution_credited *t, size_t n)
{
	for (size_t i = n; i-- > 0;)
		if (t[i].tp.channel != CHANNEL_DIRECT)
			return i;
	return n - 1; /* all Direct: the last touch */
}

static void model_linear(double *share, size_t n)
{
	for (size_t i = 0; i < n; i++)
		share[i] = 1.0 / (double)n;
}

/* 2^(-age / half_life), computed against the youngest touchpoint (weight 1) so that no
 * weight underflows to 0 whatever the ages and half-life: the normalised shares are the
 * same. */
static void model_time_decay(double *share, const struct attribution_credited *t, size_t n,
                             int64_t converted_at_ms, int64_t half_life_ms)
{
	int64_t youngest = INT64_MAX;
	double sum = 0;

	for (size_t i = 0; i < n; i++) {
		int64_t age = converted_at_ms - t[i].tp.started_at_ms;
		if (age < youngest)
			youngest = age;
	}
	for (size_t i = 0; i < n; i++) {
		double age = (double)(converted_at_ms - t[i].tp.started_at_ms - youngest);
		share[i] = exp2(-age / (double)half_life_ms);
		sum += share[i];
	}
	for (size_t i = 0; i < n; i++)
		share[i] /= sum;
}

static void model_position_based(double *share, size_t n)
{
	if (n <= 2) {
		model_linear(share, n); /* one touch 100%, two touches 50/50 */
		return;
	}
	for (size_t i = 1; i + 1 < n; i++)
		share[i] = 0.2 / (double)(n - 2);
	share[0] = share[n - 1] = 0.4;
}

void attribution_credit(struct attribution_result *r, int64_t half_life_ms)
{
	struct attribution_credited *t = r->touchpoints;
	size_t n = r->count;
	double share[ATTRIBUTION_MAX_TOUCHPOINTS];

	if (n == 0)
		return;
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++) {
		switch ((enum attribution_model)m) {
		case ATTRIBUTION_FIRST_TOUCH:
			model_single(share, n, 0);
			break;
		case ATTRIBUTION_LAST_TOUCH:
			model_single(share, n, n - 1);
			break;
		case ATTRIBUTION_LAST_NON_DIRECT:
			model_single(share, n, last_non_direct(t, n));
			break;
		case ATTRIBUTION_LINEAR:
			model_linear(share, n);
			break;
		case ATTRIBUTION_TIME_DECAY:
			model_time_decay(share, t, n, r->converted_at_ms, half_life_ms);
			break;
		case ATTRIBUTION_POSITION_BASED:
		default:
			model_position_based(share, n);
			break;
		}
		for (size_t i = 0; i < n; i++) {
			t[i].credit[m] = share[i];
			t[i].revenue[m] = share[i] * r->revenue;
		}
	}
}

/* ---- rollups ---- */

struct rollup_entry {
	uint64_t hash;
	struct attribution_rollup_row row;
};

/* The rows of one open minute. */
struct rollup_minute {
	int64_t minute; /* the minute number held (ms / 60000), or NO_MINUTE */
	size_t used;
	uint32_t other;               /* the "(other)" row, or NONE */
	struct rollup_entry *entries; /* owned: max_keys + 1 (the "(other)" row) */
	uint32_t *index;              /* owned: index_mask + 1 slots of entry + 1 */
};

struct attribution_rollup {
	struct attribution_rollup_options opt;
	attribution_rollup_fn on_row;
	void *ud;
	int64_t clock_ms; /* the largest now_ms seen, or NO_MINUTE before the first */
	size_t nminutes;
	uint64_t index_mask;
	struct rollup_minute *minutes; /* owned: nminutes, minute m in slot m % nminutes */
	struct attribution_rollup_stats stats;
};

void attribution_rollup_options_default(struct attribution_rollup_options *o)
{
	o->grace_ms = 5000;
	o->max_keys = 10000;
}

static int64_t floor_div(int64_t x, int64_t d)
{
	int64_t q = x / d;

	return (x % d != 0 && (x < 0) != (d < 0)) ? q - 1 : q;
}

/*
 * Open minutes are (closed_upto, clock minute]: minute m closes when the clock reaches
 * (m + 1) * 60000 + grace, so the newest closed minute is floor((clock - grace) / 60000) - 1
 * and at most ceil(grace / 60000) + 1 <= grace / 60000 + 2 minutes are open at once: that
 * many slots hold every open minute at a distinct m % nminutes.
 */
static size_t rollup_slots(int64_t grace_ms)
{
	return (size_t)(grace_ms / MINUTE_MS) + 2;
}

static int64_t closed_upto(const struct attribution_rollup *r)
{
	if (r->clock_ms == NO_MINUTE)
		return NO_MINUTE;
	return floor_div(r->clock_ms - r->opt.grace_ms, MINUTE_MS) - 1;
}

struct attribution_rollup *attribution_rollup_new(const struct attribution_rollup_options *o,
                                                  attribution_rollup_fn on_row, void *ud)
{
	struct attribution_rollup *r;
	size_t cap = 16;

	if (!on_row || o->grace_ms < 0 || o->grace_ms > 600000 || o->max_keys < 1 ||
	    o->max_keys > (1u << 20))
		return NULL;
	while (cap < (o->max_keys + 1) * 2)
		cap <<= 1;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->opt = *o;
	r->on_row = on_row;
	r->ud = ud;
	r->clock_ms = NO_MINUTE;
	r->index_mask = cap - 1;
	r->nminutes = rollup_slots(o->grace_ms);
	r->minutes = calloc(r->nminutes, sizeof(*r->minutes));
	if (!r->minutes)
		goto fail;
	for (size_t k = 0; k < r->nminutes; k++) {
		struct rollup_minute *m = &r->minutes[k];
		m->minute = NO_MINUTE;
		m->other = NONE;
		m->entries = calloc(o->max_keys + 1, sizeof(*m->entries));
		m->index = calloc(cap, sizeof(*m->index));
		if (!m->entries || !m->index)
			goto fail;
	}
	return r;
fail:
	attribution_rollup_free(r);
	return NULL;
}

void attribution_rollup_free(struct attribution_rollup *r)
{
	if (!r)
		return;
	for (size_t k = 0; r->minutes && k < r->nminutes; k++) {
		free(r->minutes[k].entries);
		free(r->minutes[k].index);
	}
	free(r->minutes);
	free(r);
}

/* Hands minute slot m's rows to the callback and empties it. */
static void rollup_close_minute(struct attribution_rollup *r, struct rollup_minute *m)
{
	for (size_t k = 0; k < m->used; k++)
		r->on_row(r->ud, &m->entries[k].row);
	r->stats.rows_closed += m->used;
	r->stats.open_rows -= m->used;
	r->stats.minutes_closed++;
	memset(m->index, 0, (r->index_mask + 1) * sizeof(*m->index));
	m->used = 0;
	m->other = NONE;
	m->minute = NO_MINUTE;
}

/* Closes the held minutes at or before `upto`, oldest first. */
static void rollup_close_upto(struct attribution_rollup *r, int64_t upto)
{
	for (;;) {
		struct rollup_minute *oldest = NULL;

		for (size_t k = 0; k < r->nminutes; k++) {
			struct rollup_minute *m = &r->minutes[k];
			if (m->minute != NO_MINUTE && m->minute <= upto &&
			    (!oldest || m->minute < oldest->minute))
				oldest = m;
		}
		if (!oldest)
			return;
		rollup_close_minute(r, oldest);
	}
}

void attribution_rollup_tick(struct attribution_rollup *r, int64_t now_ms)
{
	if (r->clock_ms != NO_MINUTE && now_ms <= r->clock_ms)
		return;
	r->clock_ms = now_ms;
	rollup_close_upto(r, closed_upto(r));
}

void attribution_rollup_flush(struct attribution_rollup *r)
{
	rollup_close_upto(r, INT64_MAX);
}

static const char other_name[] = "(other)";

/* Appends the string s and its NUL to buf at *len (the NULs separate the fields, so
 * ("ab", "c") and ("a", "bc") differ). */
static void key_append(unsigned char *buf, size_t *len, const char *s)
{
	size_t n = strlen(s) + 1;

	memcpy(buf + *len, s, n);
	*len += n;
}

/* The key cut into row form (the strings a row keeps) and its hash. */
static uint64_t rollup_key_row(const struct attribution_rollup_key *key,
                               struct attribution_rollup_row *row)
{
	unsigned char buf[1 + sizeof(row->app_id) + sizeof(row->source) + sizeof(row->medium) +
	                  sizeof(row->campaign)];
	size_t len = 1;

	attribution_set_string(row->app_id, sizeof(row->app_id), key->app_id, key->app_id_len);
	attribution_set_string(row->source, sizeof(row->source), key->source, key->source_len);
	attribution_set_string(row->medium, sizeof(row->medium), key->medium, key->medium_len);
	attribution_set_string(row->campaign, sizeof(row->campaign), key->campaign,
	                       key->campaign_len);
	row->channel = key->channel;
	buf[0] = (unsigned char)key->channel;
	key_append(buf, &len, row->app_id);
	key_append(buf, &len, row->source);
	key_append(buf, &len, row->medium);
	key_append(buf, &len, row->campaign);
	return XXH3_64bits(buf, len);
}

static bool rollup_same_key(const struct attribution_rollup_row *x,
                            const struct attribution_rollup_row *y)
{
	return !x->other && x->channel == y->channel && strcmp(x->app_id, y->app_id) == 0 &&
	       strcmp(x->source, y->source) == 0 && strcmp(x->medium, y->medium) == 0 &&
	       strcmp(x->campaign, y->campaign) == 0;
}

static struct attribution_rollup_row *rollup_new_row(struct rollup_minute *m, int64_t minute)
{
	struct attribution_rollup_row *row = &m->entries[m->used].row;

	memset(row, 0, sizeof(*row));
	row->minute_ms = minute * MINUTE_MS;
	return row;
}

static struct attribution_rollup_row *rollup_other_row(struct attribution_rollup *r,
                                                       struct rollup_minute *m)
{
	struct attribution_rollup_row *row;

	if (m->other != NONE)
		return &m->entries[m->other].row;
	row = rollup_new_row(m, m->minute);
	row->other = true;
	row->channel = -1;
	memcpy(row->app_id, other_name, sizeof(other_name));
	memcpy(row->source, other_name, sizeof(other_name));
	memcpy(row->medium, other_name, sizeof(other_name));
	memcpy(row->campaign, other_name, sizeof(other_name));
	m->other = (uint32_t)m->used++;
	r->stats.open_rows++;
	return row;
}

/* The row of key in minute slot m: found, added, or the "(other)" row past max_keys. */
static struct attribution_rollup_row *rollup_row(struct attribution_rollup *r,
                                                 struct rollup_minute *m,
                                                 const struct attribution_rollup_key *key)
{
	struct attribution_rollup_row want;
	uint64_t hash = rollup_key_row(key, &want);
	uint64_t k = hash & r->index_mask;
	struct attribution_rollup_row *row;

	for (; m->index[k] != 0; k = (k + 1) & r->index_mask) {
		struct rollup_entry *e = &m->entries[m->index[k] - 1];
		if (e->hash == hash && rollup_same_key(&e->row, &want))
			return &e->row;
	}
	if (m->used - (m->other != NONE) >= r->opt.max_keys) {
		r->stats.other_records++;
		return rollup_other_row(r, m);
	}
	m->entries[m->used].hash = hash;
	row = rollup_new_row(m, m->minute);
	row->channel = want.channel;
	memcpy(row->app_id, want.app_id, sizeof(want.app_id));
	memcpy(row->source, want.source, sizeof(want.source));
	memcpy(row->medium, want.medium, sizeof(want.medium));
	memcpy(row->campaign, want.campaign, sizeof(want.campaign));
	m->index[k] = (uint32_t)++m->used;
	r->stats.open_rows++;
	return row;
}

/* The slot of the minute at_ms counts in (see attribution.h), set up for it. */
static struct rollup_minute *rollup_minute_for(struct attribution_rollup *r, int64_t at_ms,
                                               bool *late)
{
	int64_t minute = floor_div(at_ms, MINUTE_MS);
	int64_t now_minute = floor_div(r->clock_ms, MINUTE_MS);
	struct rollup_minute *m;

	*late = minute <= closed_upto(r);
	if (*late || minute > now_minute)
		minute = now_minute;
	m = &r->minutes[(uint64_t)minute % r->nminutes];
	if (m->minute != minute) {
		/* What the slot held is closed already (rollup_slots), so this stays a guard. */
		if (m->minute != NO_MINUTE)
			rollup_close_minute(r, m);
		m->minute = minute;
	}
	return m;
}

void attribution_rollup_add(struct attribution_rollup *r, const struct attribution_rollup_key *key,
                            const struct attribution_rollup_counts *c, int64_t at_ms,
                            int64_t now_ms)
{
	bool late;
	struct rollup_minute *m;
	struct attribution_rollup_row *row;

	attribution_rollup_tick(r, now_ms);
	m = rollup_minute_for(r, at_ms, &late);
	row = rollup_row(r, m, key);
	row->counts.sessions += c->sessions;
	row->counts.page_views += c->page_views;
	row->counts.conversions += c->conversions;
	row->counts.revenue += c->revenue;
	for (int k = 0; k < ATTRIBUTION_MODEL__COUNT; k++)
		row->counts.attributed_revenue[k] += c->attributed_revenue[k];
	r->stats.records++;
	if (late) {
		row->late++;
		r->stats.late++;
	}
}

struct attribution_rollup_key attribution_rollup_key_of(const struct attribution_touchpoint *tp,
                                                        const char *app_id, size_t app_id_len)
{
	struct attribution_rollup_key key = {
	    .app_id = app_id,
	    .app_id_len = app_id_len,
	    .channel = tp->channel,
	    .source = tp->source,
	    .source_len = strlen(tp->source),
	    .medium = tp->medium,
	    .medium_len = strlen(tp->medium),
	    .campaign = tp->campaign,
	    .campaign_len = strlen(tp->campaign),
	};

	return key;
}

void attribution_rollup_add_result(struct attribution_rollup *r, const char *app_id,
                                   size_t app_id_len, const struct attribution_result *res,
                                   int64_t now_ms)
{
	for (size_t i = 0; i < res->count; i++) {
		const struct attribution_credited *t = &res->touchpoints[i];
		struct attribution_rollup_key key =
		    attribution_rollup_key_of(&t->tp, app_id, app_id_len);
		struct attribution_rollup_counts c = {0};

		memcpy(c.attributed_revenue, t->revenue, sizeof(c.attributed_revenue));
		attribution_rollup_add(r, &key, &c, res->converted_at_ms, now_ms);
	}
}

void attribution_rollup_get_stats(const struct attribution_rollup *r,
                                  struct attribution_rollup_stats *out)
{
	*out = r->stats;
	out->bytes =
	    sizeof(*r) + r->nminutes * (sizeof(*r->minutes) +
	                                (r->opt.max_keys + 1) * sizeof(struct rollup_entry) +
	                                (r->index_mask + 1) * sizeof(uint32_t));
}
