/*
 * test_state_file.c - session.state_file (state_file.h): a saved state comes back whole
 * (sessions with their IDs, counters and strings; session_index; the dedup window;
 * attribution paths and user links), also into another shard count; sessions that ran out
 * during the downtime end at load with their reason and their own end; a smaller table keeps
 * the most recently seen; a corrupt, truncated, foreign or other-version file restores
 * nothing and is moved aside; a save is atomic.
 *
 * A "world" stands for the shards of a daemon: per shard a session table, a dedup table and
 * an attribution instance, fed as the shard feeds them (dedup, session, a touch when a
 * session opens, a user link), with events routed by pipeline_shard_of_hash.
 */
#include "clickd/state_file.h"

#include "clickd/pipeline.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define MIN        60000LL
#define T0         1800000000000LL /* 2027-01-15 */
#define MAX_SHARDS 8
#define MAX_CLOSED 128

/* ---- a session as it closed ---- */

struct closed {
	size_t shard;
	enum session_end_reason reason;
	char id[SESSION_ID_CHARS + 1];
	uint32_t index;
	int64_t started, last_seen;
	uint32_t events, page_views, conversions;
	bool has_revenue;
	double revenue;
	char currency[4];
	int channel;
	char str[SF__COUNT][520]; /* max_url_bytes 512 */
};

struct world {
	size_t count;
	struct state_file_shard shards[MAX_SHARDS];
	size_t shard_no[MAX_SHARDS]; /* the close callback's ud */
	struct closed *closed;       /* MAX_CLOSED */
	size_t nclosed;
	struct session_options opt;
};

static struct world *current; /* the world whose tables call on_close */

static void on_close(void *ud, const struct session *s, enum session_end_reason reason)
{
	struct closed *c;

	cr_assert_lt(current->nclosed, MAX_CLOSED);
	c = &current->closed[current->nclosed++];
	c->shard = *(size_t *)ud;
	c->reason = reason;
	memcpy(c->id, s->id, sizeof(c->id));
	c->index = s->index;
	c->started = s->started_at_ms;
	c->last_seen = s->last_seen_ms;
	c->events = s->events;
	c->page_views = s->page_views;
	c->conversions = s->conversions;
	c->has_revenue = s->has_revenue;
	c->revenue = s->revenue;
	memcpy(c->currency, s->currency, sizeof(c->currency));
	c->channel = s->channel;
	for (int f = 0; f < SF__COUNT; f++) {
		size_t len;
		const char *v = session_get(s, (enum session_field)f, &len);
		snprintf(c->str[f], sizeof(c->str[f]), "%.*s", (int)len, v ? v : "");
	}
}

static struct world *world_new_with(size_t count, const struct session_options *opt,
                                    size_t dedup_entries, size_t attribution_visitors)
{
	struct world *w = calloc(1, sizeof(*w));
	struct attribution_options ao;

	cr_assert_not_null(w);
	w->closed = calloc(MAX_CLOSED, sizeof(*w->closed));
	cr_assert_not_null(w->closed);
	w->count = count;
	w->opt = *opt;
	attribution_options_default(&ao);
	ao.max_visitors = ao.max_users = attribution_visitors;
	for (size_t s = 0; s < count; s++) {
		w->shard_no[s] = s;
		w->shards[s].sessions = session_table_new(opt, on_close, &w->shard_no[s]);
		w->shards[s].dedup = dedup_new(dedup_entries, 60 * MIN);
		w->shards[s].attribution = attribution_new(&ao);
		cr_assert_not_null(w->shards[s].sessions);
		cr_assert_not_null(w->shards[s].dedup);
		cr_assert_not_null(w->shards[s].attribution);
	}
	current = w;
	return w;
}

static struct world *world_new(size_t count)
{
	struct session_options o = {
	    .timeout_ms = 30 * MIN,
	    .max_duration_ms = 24 * 60 * MIN,
	    .max_visitors = 1000,
	    .max_url_bytes = 512,
	};
	return world_new_with(count, &o, 1000, 1000);
}

static void world_free(struct world *w)
{
	for (size_t s = 0; s < w->count; s++) {
		session_table_free(w->shards[s].sessions);
		dedup_free(w->shards[s].dedup);
		attribution_free(w->shards[s].attribution);
	}
	free(w->closed);
	free(w);
}

static size_t open_sessions(const struct world *w)
{
	size_t n = 0;

	for (size_t s = 0; s < w->count; s++) {
		struct session_stats st;
		session_get_stats(w->shards[s].sessions, &st);
		n += st.open;
	}
	return n;
}

static void close_all(struct world *w)
{
	current = w;
	for (size_t s = 0; s < w->count; s++)
		session_close_all(w->shards[s].sessions, SESSION_END_SHUTDOWN);
}

static const struct closed *closed_by_id(const struct world *w, const char *id)
{
	for (size_t i = 0; i < w->nclosed; i++)
		if (strcmp(w->closed[i].id, id) == 0)
			return &w->closed[i];
	return NULL;
}

/* ---- events, fed as a shard feeds them ---- */

static struct event ev;

static void put(enum event_field f, const char *s)
{
	if (s)
		cr_assert_eq(event_set(&ev, f, s, strlen(s)), 0);
}

struct beacon {
	const char *vid, *eid, *uid, *url, *source, *medium, *campaign, *currency;
	int64_t at;
	enum event_type type;
	double revenue;
};

static uint64_t visitor_hash_of(const char *vid)
{
	event_init(&ev);
	put(EF_APP_ID, "shop");
	put(EF_VISITOR_ID, vid);
	return event_visitor_hash(&ev);
}

static size_t shard_of(const struct world *w, const char *vid)
{
	return pipeline_shard_of_hash(visitor_hash_of(vid), w->count);
}

/* Files a beacon; returns its session (NULL: a duplicate). */
static const struct session *track(struct world *w, const struct beacon *b)
{
	struct state_file_shard *sh;
	const struct session *s;
	struct attribution_ids ids;

	event_init(&ev);
	ev.received_at_ms = b->at;
	ev.type = b->type;
	put(EF_APP_ID, "shop");
	put(EF_VISITOR_ID, b->vid);
	put(EF_EVENT_ID, b->eid);
	put(EF_USER_ID, b->uid);
	put(EF_URL, b->url ? b->url : "https://shop.example/");
	put(EF_SOURCE, b->source ? b->source : "(direct)");
	put(EF_MEDIUM, b->medium ? b->medium : "(none)");
	put(EF_CAMPAIGN, b->campaign);
	put(EF_CURRENCY, b->currency);
	if (b->revenue) {
		ev.has_revenue = true;
		ev.revenue = b->revenue;
	}
	sh = &w->shards[pipeline_shard_of(&ev, w->count)];
	current = w;
	if (dedup_seen(sh->dedup, dedup_fingerprint(&ev), b->at))
		return NULL;
	s = session_track(sh->sessions, &ev, b->source ? CHANNEL_EMAIL : CHANNEL_DIRECT);
	cr_assert_not_null(s);
	ids.visitor_hash = event_visitor_hash(&ev);
	ids.user_hash = b->uid ? attribution_user_hash("shop", 4, b->uid, strlen(b->uid)) : 0;
	ids.visitor_id = b->vid;
	ids.visitor_id_len = strlen(b->vid);
	if (s->events == 1) {
		struct attribution_touchpoint tp = {.started_at_ms = s->started_at_ms,
		                                    .channel = (uint8_t)s->channel};
		size_t len;
		const char *v;

		memcpy(tp.session_id, s->id, SESSION_ID_CHARS + 1);
		v = session_get(s, SF_SOURCE, &len);
		attribution_set_string(tp.source, sizeof(tp.source), v, len);
		v = session_get(s, SF_MEDIUM, &len);
		attribution_set_string(tp.medium, sizeof(tp.medium), v, len);
		v = session_get(s, SF_CAMPAIGN, &len);
		attribution_set_string(tp.campaign, sizeof(tp.campaign), v, len);
		attribution_touch(sh->attribution, &ids, &tp, b->at);
	} else if (b->uid) {
		attribution_link_user(sh->attribution, &ids, b->at);
	}
	return s;
}

static const struct session *page(struct world *w, const char *vid, const char *eid, int64_t at)
{
	struct beacon b = {.vid = vid, .eid = eid, .at = at};
	return track(w, &b);
}

/* ---- files ---- */

static char dir[64], path[128];

static void setup(void)
{
	strcpy(dir, "/tmp/clickd-test-state-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state", dir);
}

static void teardown(void)
{
	char p[160];

	unlink(path);
	snprintf(p, sizeof(p), "%s.bad", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s.tmp", path);
	rmdir(p);
	unlink(p);
	rmdir(dir);
}

TestSuite(state_file, .init = setup, .fini = teardown);

static bool exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static unsigned char *slurp(const char *p, size_t *len)
{
	FILE *f = fopen(p, "rb");
	unsigned char *buf;
	long n;

	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void spit(const char *p, const unsigned char *buf, size_t len)
{
	FILE *f = fopen(p, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static void save(struct world *w, int64_t now, struct state_file_report *r)
{
	char err[256] = "";

	cr_assert_eq(state_file_save(path, w->shards, w->count, now, r, err, sizeof(err)), 0, "%s",
	             err);
}

static int load(struct world *w, int64_t now, struct state_file_report *r, char *err, size_t errlen)
{
	current = w;
	return state_file_load(path, w->shards, w->count, now, r, err, errlen);
}

/* A busy little world: campaign landings, internal pages, a logged-in user with a
 * conversion, a visitor with a closed session before its current one. */
static void populate(struct world *w, int visitors)
{
	char vid[32], eid[32], url[128];

	for (int i = 0; i < visitors; i++) {
		struct beacon b = {.vid = vid, .eid = eid, .url = url, .at = T0 + i};

		snprintf(vid, sizeof(vid), "v%d", i);
		snprintf(eid, sizeof(eid), "e%d-a", i);
		snprintf(url, sizeof(url), "https://shop.example/landing/%d?utm_source=news", i);
		if (i % 3 == 0) {
			b.source = "news";
			b.medium = "email";
			b.campaign = "spring";
		}
		track(w, &b);
		snprintf(eid, sizeof(eid), "e%d-b", i);
		snprintf(url, sizeof(url), "https://shop.example/page/%d", i);
		b.source = b.medium = b.campaign = NULL;
		b.at = T0 + MIN + i;
		if (i % 4 == 0) {
			b.uid = "u-42";
			b.type = EVENT_CONVERSION;
			b.revenue = 19.5;
			b.currency = "EUR";
		}
		track(w, &b);
	}
}

/* ---- round trips ---- */

Test(state_file, a_round_trip_gives_back_every_session_whole)
{
	struct world *a = world_new(2), *b = world_new(2);
	struct state_file_report r, l;
	char err[256] = "";
	size_t n;

	populate(a, 50);
	save(a, T0 + 2 * MIN, &r);
	cr_assert_eq(r.file.sessions, 50);
	cr_assert_eq(r.file.visitors, 50);
	cr_assert_eq(r.file.dedup_entries, 100);
	cr_assert_eq(r.file.paths, 50);
	cr_assert_geq(r.file.users, 1);
	cr_assert_eq(load(b, T0 + 3 * MIN, &l, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(err[0], '\0', "%s", err);
	cr_assert_eq(l.file.sessions, 50);
	cr_assert_eq(l.restored.sessions, 50);
	cr_assert_eq(l.sessions_resumed, 50);
	cr_assert_eq(l.restored.dedup_entries, 100);
	cr_assert_eq(l.restored.paths, 50);
	cr_assert_eq(l.shards, 2);
	cr_assert_eq(l.saved_at_ms, T0 + 2 * MIN);
	cr_assert_eq(l.file_bytes, r.file_bytes);
	cr_assert_not(exists(path), "a restored file is removed");

	close_all(a);
	close_all(b);
	cr_assert_eq(a->nclosed, 50);
	cr_assert_eq(b->nclosed, 50);
	n = 0;
	for (size_t i = 0; i < a->nclosed; i++) {
		const struct closed *x = &a->closed[i], *y = closed_by_id(b, x->id);

		cr_assert_not_null(y, "session %s came back", x->id);
		cr_assert_eq(y->shard, x->shard);
		cr_assert_eq(y->index, x->index);
		cr_assert_eq(y->started, x->started);
		cr_assert_eq(y->last_seen, x->last_seen);
		cr_assert_eq(y->events, x->events);
		cr_assert_eq(y->page_views, x->page_views);
		cr_assert_eq(y->conversions, x->conversions);
		cr_assert_eq(y->has_revenue, x->has_revenue);
		cr_assert_eq(y->revenue, x->revenue);
		cr_assert_str_eq(y->currency, x->currency);
		cr_assert_eq(y->channel, x->channel);
		for (int f = 0; f < SF__COUNT; f++)
			cr_assert_str_eq(y->str[f], x->str[f], "field %d of %s", f, x->id);
		n += x->conversions;
	}
	cr_assert_eq(n, 13, "the conversions are in the sessions compared");
	world_free(a);
	world_free(b);
}

Test(state_file, a_resumed_session_goes_on_with_its_id_and_counters)
{
	struct world *a = world_new(3), *b;
	struct state_file_report r;
	char id[SESSION_ID_CHARS + 1], err[256] = "";
	const struct session *s;

	page(a, "alice", "a1", T0);
	s = page(a, "alice", "a2", T0 + MIN);
	memcpy(id, s->id, sizeof(id));
	cr_assert_eq(s->events, 2);
	save(a, T0 + 2 * MIN, &r);
	world_free(a);

	b = world_new(3);
	cr_assert_eq(load(b, T0 + 10 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_null(page(b, "alice", "a2", T0 + 11 * MIN),
	               "a retry across the restart is a duplicate");
	s = page(b, "alice", "a3", T0 + 12 * MIN);
	cr_assert_str_eq(s->id, id);
	cr_assert_eq(s->index, 1);
	cr_assert_eq(s->events, 3);
	cr_assert_eq(s->started_at_ms, T0);
	cr_assert_eq(b->nclosed, 0, "nothing was cut");
	world_free(b);
}

Test(state_file, a_visitor_without_an_open_session_keeps_its_session_index)
{
	struct world *a = world_new(1), *b;
	struct state_file_report r;
	char err[256] = "";
	const struct session *s;

	page(a, "bob", "b1", T0);
	session_tick(a->shards[0].sessions, T0 + 31 * MIN); /* session 1 ends */
	cr_assert_eq(a->nclosed, 1);
	save(a, T0 + 32 * MIN, &r);
	cr_assert_eq(r.file.visitors, 1);
	cr_assert_eq(r.file.sessions, 0);
	world_free(a);

	b = world_new(1);
	cr_assert_eq(load(b, T0 + 40 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	s = page(b, "bob", "b2", T0 + 41 * MIN);
	cr_assert_eq(s->index, 2, "the second session of bob, not a first one again");
	world_free(b);
}

/* Every visitor lands on the shard that will see its next event, whatever the counts. */
static void check_reshard(size_t from, size_t to)
{
	struct world *a = world_new(from), *b;
	struct state_file_report r;
	char vid[16], eid[16], ids[40][SESSION_ID_CHARS + 1], err[256] = "";

	for (int i = 0; i < 40; i++) {
		snprintf(vid, sizeof(vid), "r%d", i);
		snprintf(eid, sizeof(eid), "x%d", i);
		memcpy(ids[i], page(a, vid, eid, T0 + i)->id, SESSION_ID_CHARS + 1);
	}
	save(a, T0 + MIN, &r);
	cr_assert_eq(r.shards, from);
	world_free(a);

	b = world_new(to);
	cr_assert_eq(load(b, T0 + 2 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.shards, from);
	cr_assert_eq(open_sessions(b), 40);
	for (int i = 0; i < 40; i++) {
		const struct session *s;
		struct session_stats st;

		snprintf(vid, sizeof(vid), "r%d", i);
		snprintf(eid, sizeof(eid), "x%d", i);
		cr_assert_null(page(b, vid, eid, T0 + 3 * MIN), "%s: its shard knows the eid", vid);
		snprintf(eid, sizeof(eid), "y%d", i);
		s = page(b, vid, eid, T0 + 3 * MIN);
		cr_assert_str_eq(s->id, ids[i], "%s %zu -> %zu shards", vid, from, to);
		cr_assert_eq(s->events, 2);
		session_get_stats(b->shards[shard_of(b, vid)].sessions, &st);
		cr_assert_eq(st.started, 0, "no shard opened a session of its own");
	}
	cr_assert_eq(open_sessions(b), 40);
	world_free(b);
}

Test(state_file, another_shard_count_routes_every_visitor_to_its_new_shard)
{
	check_reshard(3, 2);
	check_reshard(2, 5);
	check_reshard(1, 4);
	check_reshard(4, 1);
}

/* ---- the downtime ---- */

Test(state_file, sessions_that_ran_out_during_the_downtime_end_at_load_with_their_reason)
{
	struct session_options o = {
	    .timeout_ms = 30 * MIN,
	    .max_duration_ms = 60 * MIN,
	    .max_visitors = 100,
	    .max_url_bytes = 512,
	};
	struct world *a = world_new_with(2, &o, 100, 100), *b;
	struct state_file_report r;
	char err[256] = "";
	const struct closed *c;
	const struct session *s;
	char idle_id[SESSION_ID_CHARS + 1], long_id[SESSION_ID_CHARS + 1],
	    live_id[SESSION_ID_CHARS + 1];

	/* idle: last event at T0, its 30 minutes pass at T0 + 30. */
	memcpy(idle_id, page(a, "idle", "i1", T0)->id, sizeof(idle_id));
	/* long: started at T0 - 40, active until T0 + 10: its hour ends at T0 + 20. */
	page(a, "long", "l1", T0 - 40 * MIN);
	page(a, "long", "l2", T0 - 15 * MIN);
	memcpy(long_id, page(a, "long", "l3", T0 + 10 * MIN)->id, sizeof(long_id));
	/* live: last event at T0 + 20, on until T0 + 50. */
	memcpy(live_id, page(a, "live", "v1", T0 + 20 * MIN)->id, sizeof(live_id));
	save(a, T0 + 21 * MIN, &r);
	world_free(a);

	b = world_new_with(3, &o, 100, 100);
	cr_assert_eq(load(b, T0 + 31 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.restored.sessions, 3);
	cr_assert_eq(r.sessions_ended[SESSION_END_INACTIVITY], 1);
	cr_assert_eq(r.sessions_ended[SESSION_END_MAX_DURATION], 1);
	cr_assert_eq(r.sessions_resumed, 1);
	cr_assert_eq(b->nclosed, 2, "ended at load, not at some later tick");
	c = closed_by_id(b, idle_id);
	cr_assert_not_null(c);
	cr_assert_eq(c->reason, SESSION_END_INACTIVITY);
	cr_assert_eq(c->last_seen, T0, "its end is its last event, as without the stop");
	c = closed_by_id(b, long_id);
	cr_assert_not_null(c);
	cr_assert_eq(c->reason, SESSION_END_MAX_DURATION);
	cr_assert_eq(c->started, T0 - 40 * MIN);
	cr_assert_eq(c->last_seen, T0 + 10 * MIN);
	cr_assert_eq(c->events, 3);
	s = page(b, "live", "v2", T0 + 32 * MIN);
	cr_assert_str_eq(s->id, live_id);
	s = page(b, "idle", "i2", T0 + 33 * MIN);
	cr_assert_str_neq(s->id, idle_id);
	cr_assert_eq(s->index, 2);
	/* The wheel has the resumed one: it ends 30 minutes after its last event. */
	for (size_t k = 0; k < b->count; k++)
		session_tick(b->shards[k].sessions, T0 + 62 * MIN);
	c = closed_by_id(b, live_id);
	cr_assert_not_null(c);
	cr_assert_eq(c->reason, SESSION_END_INACTIVITY);
	cr_assert_eq(c->last_seen, T0 + 32 * MIN);
	world_free(b);
}

Test(state_file, the_dedup_window_and_paths_past_their_time_are_not_restored)
{
	struct world *a = world_new(2), *b;
	struct state_file_report r;
	char err[256] = "";

	page(a, "old", "o1", T0);
	page(a, "new", "n1", T0 + 50 * MIN);
	save(a, T0 + 51 * MIN, &r);
	cr_assert_eq(r.file.dedup_entries, 2);
	world_free(a);
	b = world_new(2);
	/* The dedup window is an hour: o1 is past it at T0 + 61, n1 is not. */
	cr_assert_eq(load(b, T0 + 61 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.restored.dedup_entries, 1);
	cr_assert_not_null(page(b, "old", "o1", T0 + 62 * MIN), "past the window: not a duplicate");
	cr_assert_null(page(b, "new", "n1", T0 + 62 * MIN));
	world_free(b);

	/* Attribution forgets after its lookback (30 days). */
	a = world_new(1);
	page(a, "ancient", "x1", T0);
	save(a, T0 + MIN, &r);
	world_free(a);
	b = world_new(1);
	cr_assert_eq(load(b, T0 + 31LL * 24 * 60 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.file.paths, 1);
	cr_assert_eq(r.restored.paths, 0);
	cr_assert_eq(r.sessions_ended[SESSION_END_INACTIVITY], 1);
	world_free(b);
}

/* ---- attribution ---- */

/* Two visitor IDs that share a shard under both counts (a user's devices link only there). */
static void two_devices(size_t c1, size_t c2, char *a, char *b)
{
	char v[16];
	int found = 0;

	for (int i = 0; found < 2 && i < 10000; i++) {
		uint64_t h;

		snprintf(v, sizeof(v), "d%d", i);
		h = visitor_hash_of(v);
		if (pipeline_shard_of_hash(h, c1) == 0 && pipeline_shard_of_hash(h, c2) == 0)
			strcpy(found++ ? b : a, v);
	}
	cr_assert_eq(found, 2);
}

Test(state_file, attribution_paths_and_user_links_come_back)
{
	struct world *a = world_new(3), *b;
	struct attribution_result *res = malloc(sizeof(*res));
	struct attribution_ids ids;
	struct state_file_report r;
	char phone[16], laptop[16], err[256] = "";
	struct beacon x = {0};

	cr_assert_not_null(res);
	two_devices(3, 2, phone, laptop);
	/* The phone: two sessions (a campaign, then direct a day later), logged in. */
	x = (struct beacon){.vid = phone,
	                    .eid = "p1",
	                    .uid = "carol",
	                    .at = T0,
	                    .source = "news",
	                    .medium = "email",
	                    .campaign = "spring"};
	track(a, &x);
	x = (struct beacon){.vid = phone, .eid = "p2", .uid = "carol", .at = T0 + 24 * 60 * MIN};
	track(a, &x);
	/* The laptop: one session, logged in as the same user. */
	x = (struct beacon){.vid = laptop,
	                    .eid = "l1",
	                    .uid = "carol",
	                    .at = T0 + 25 * 60 * MIN,
	                    .source = "google",
	                    .medium = "cpc"};
	track(a, &x);
	save(a, T0 + 26 * 60 * MIN, &r);
	cr_assert_eq(r.file.paths, 2);
	cr_assert_eq(r.file.touchpoints, 3);
	cr_assert_eq(r.file.users, 1);
	world_free(a);

	b = world_new(2);
	cr_assert_eq(load(b, T0 + 27 * 60 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.restored.paths, 2);
	cr_assert_eq(r.restored.touchpoints, 3);
	cr_assert_eq(r.restored.users, 1);
	/* A conversion by carol on the laptop is credited over both devices' touchpoints. */
	ids.visitor_hash = visitor_hash_of(laptop);
	ids.user_hash = attribution_user_hash("shop", 4, "carol", 5);
	ids.visitor_id = laptop;
	ids.visitor_id_len = strlen(laptop);
	cr_assert_eq(
	    attribution_convert(b->shards[0].attribution, &ids, T0 + 28 * 60 * MIN, 100, res), 0);
	cr_assert_eq(res->count, 3);
	cr_assert_eq(res->devices, 2);
	cr_assert_str_eq(res->touchpoints[0].tp.source, "news");
	cr_assert_str_eq(res->touchpoints[0].tp.campaign, "spring");
	cr_assert_str_eq(res->touchpoints[0].visitor_id, phone);
	cr_assert_str_eq(res->touchpoints[2].tp.source, "google");
	cr_assert_str_eq(res->touchpoints[2].visitor_id, laptop);
	free(res);
	world_free(b);
}

/* ---- bounds ---- */

Test(state_file, a_smaller_table_keeps_the_most_recently_seen_visitors)
{
	struct session_options o = {
	    .timeout_ms = 30 * MIN,
	    .max_duration_ms = 24 * 60 * MIN,
	    .max_visitors = 100,
	    .max_url_bytes = 512,
	};
	struct world *a = world_new_with(4, &o, 100, 100), *b;
	struct state_file_report r;
	char vid[16], eid[16], err[256] = "";

	/* 10 visitors without a session any more, then 20 with one, seen one after another. */
	for (int i = 0; i < 10; i++) {
		snprintf(vid, sizeof(vid), "gone%d", i);
		snprintf(eid, sizeof(eid), "g%d", i);
		page(a, vid, eid, T0 + i);
	}
	for (size_t k = 0; k < a->count; k++)
		session_tick(a->shards[k].sessions, T0 + 31 * MIN);
	for (int i = 0; i < 20; i++) {
		snprintf(vid, sizeof(vid), "here%d", i);
		snprintf(eid, sizeof(eid), "h%d", i);
		page(a, vid, eid, T0 + 40 * MIN + i * 1000);
	}
	save(a, T0 + 41 * MIN, &r);
	cr_assert_eq(r.file.visitors, 30);
	cr_assert_eq(r.file.sessions, 20);
	world_free(a);

	/* One shard that remembers 15 visitors: the 10 idle ones go first, then the 5 seen
	 * least recently (their sessions end as evicted). */
	o.max_visitors = 15;
	b = world_new_with(1, &o, 100, 100);
	cr_assert_eq(load(b, T0 + 42 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.sessions_ended[SESSION_END_EVICTED], 5);
	cr_assert_eq(r.sessions_resumed, 15);
	for (size_t i = 0; i < b->nclosed; i++) {
		int n;
		cr_assert_eq(b->closed[i].reason, SESSION_END_EVICTED);
		cr_assert_eq(sscanf(b->closed[i].str[SF_VISITOR_ID], "here%d", &n), 1);
		cr_assert_lt(n, 5, "%s was seen recently", b->closed[i].str[SF_VISITOR_ID]);
	}
	world_free(b);
}

/* ---- bad files ---- */

static void check_refused(const char *what, int expect_rc)
{
	struct session_options o = {
	    .timeout_ms = 30 * MIN,
	    .max_duration_ms = 24 * 60 * MIN,
	    .max_visitors = 64,
	    .max_url_bytes = 512,
	};
	struct world *b = world_new_with(2, &o, 64, 64); /* small: it runs for every cut */
	struct state_file_report r;
	char err[256] = "", bad[160];
	int rc = load(b, T0 + 3 * MIN, &r, err, sizeof(err));
	struct session_stats st;
	struct dedup_stats ds;
	struct attribution_stats as;

	cr_assert_lt(rc, 0, "%s: refused", what);
	if (expect_rc)
		cr_assert_eq(rc, expect_rc, "%s: %d (%s)", what, rc, err);
	cr_assert_neq(err[0], '\0', "%s: a reason", what);
	snprintf(bad, sizeof(bad), "%s.bad", path);
	cr_assert(exists(bad), "%s: moved aside", what);
	cr_assert_not(exists(path), "%s: not at its path any more", what);
	unlink(bad);
	for (size_t s = 0; s < b->count; s++) {
		session_get_stats(b->shards[s].sessions, &st);
		dedup_get_stats(b->shards[s].dedup, T0, &ds);
		attribution_get_stats(b->shards[s].attribution, &as);
		cr_assert_eq(st.visitors + st.open + ds.entries + as.visitors + as.users, 0,
		             "%s: nothing restored (%s)", what, err);
	}
	cr_assert_eq(b->nclosed, 0);
	world_free(b);
}

static unsigned char *good_file(size_t *len, int visitors)
{
	struct world *a = world_new(2);
	struct state_file_report r;
	unsigned char *buf;

	populate(a, visitors);
	save(a, T0 + 2 * MIN, &r);
	world_free(a);
	buf = slurp(path, len);
	cr_assert_eq(*len, r.file_bytes);
	return buf;
}

Test(state_file, a_missing_file_is_no_error_and_changes_nothing)
{
	struct world *b = world_new(2);
	struct state_file_report r;
	char err[256] = "";

	cr_assert_eq(load(b, T0, &r, err, sizeof(err)), -ENOENT);
	cr_assert_eq(open_sessions(b), 0);
	world_free(b);
}

Test(state_file, a_flipped_bit_anywhere_restores_nothing)
{
	size_t len;
	unsigned char *good = good_file(&len, 30);
	char what[64];

	/* Every byte of the header and the first frame header, then a stride over the rest. */
	for (size_t off = 0; off < len; off += off < 64 ? 1 : 7) {
		unsigned char *buf = malloc(len);

		memcpy(buf, good, len);
		buf[off] ^= 0x10;
		spit(path, buf, len);
		snprintf(what, sizeof(what), "bit flipped at %zu of %zu", off, len);
		check_refused(what, 0);
		free(buf);
	}
	free(good);
}

Test(state_file, a_truncated_file_restores_nothing)
{
	size_t len;
	unsigned char *good = good_file(&len, 30);
	char what[64];

	for (size_t cut = 0; cut < len; cut++) {
		spit(path, good, cut);
		snprintf(what, sizeof(what), "cut at %zu of %zu", cut, len);
		check_refused(what, 0);
	}
	/* And garbage after a whole file. */
	{
		unsigned char *buf = malloc(len + 40);
		memcpy(buf, good, len);
		memset(buf + len, 'x', 40);
		spit(path, buf, len + 40);
		check_refused("garbage after the end", 0);
		free(buf);
	}
	free(good);
}

Test(state_file, another_version_or_another_kind_of_file_is_refused)
{
	size_t len;
	unsigned char *buf = good_file(&len, 3);
	uint64_t h;
	char err[256] = "";
	struct state_file_report r;
	struct world *b;

	/* Version 2 with a valid header checksum. */
	buf[4] = 2;
	h = XXH3_64bits(buf, 24);
	for (int k = 0; k < 8; k++)
		buf[24 + k] = (unsigned char)(h >> (8 * k));
	spit(path, buf, len);
	b = world_new(2);
	cr_assert_eq(load(b, T0, &r, err, sizeof(err)), -EPROTO);
	cr_assert(strstr(err, "version 2") != NULL, "%s", err);
	world_free(b);
	cr_assert_not(exists(path));
	{
		char bad[160];
		snprintf(bad, sizeof(bad), "%s.bad", path);
		unlink(bad);
	}
	spit(path, (const unsigned char *)"timeout_s = 1800\n", 17);
	check_refused("a config file", -EBADMSG);
	spit(path, (const unsigned char *)"", 0);
	check_refused("an empty file", -EBADMSG);
	free(buf);
}

/* ---- writing ---- */

Test(state_file, a_save_that_fails_leaves_the_previous_file_and_no_temp_file)
{
	struct world *a = world_new(2);
	struct state_file_report r;
	char tmp[160], err[256] = "";
	size_t len1, len2;
	unsigned char *before, *after;

	populate(a, 5);
	save(a, T0 + 2 * MIN, &r);
	before = slurp(path, &len1);
	/* A directory where the temporary file goes: it cannot be created. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	cr_assert_eq(mkdir(tmp, 0700), 0);
	populate(a, 10);
	cr_assert_lt(state_file_save(path, a->shards, a->count, T0 + 3 * MIN, &r, err, sizeof(err)),
	             0);
	cr_assert(strstr(err, ".tmp") != NULL, "%s", err);
	after = slurp(path, &len2);
	cr_assert_eq(len1, len2);
	cr_assert_eq(memcmp(before, after, len1), 0, "the previous state is intact");
	cr_assert_eq(rmdir(tmp), 0);
	/* A save in a directory that does not exist fails and says so. */
	cr_assert_lt(state_file_save("/nonexistent-clickd/state", a->shards, a->count, T0, &r, err,
	                             sizeof(err)),
	             0);
	cr_assert(strstr(err, "/nonexistent-clickd/state.tmp") != NULL, "%s", err);
	free(before);
	free(after);
	world_free(a);
}

Test(state_file, a_crash_during_a_save_leaves_a_temp_file_that_the_load_ignores)
{
	struct world *a = world_new(1), *b;
	struct state_file_report r;
	char tmp[160], err[256] = "";

	page(a, "dave", "d1", T0);
	save(a, T0 + MIN, &r);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	spit(tmp, (const unsigned char *)"half a file", 11);
	world_free(a);
	b = world_new(1);
	cr_assert_eq(load(b, T0 + 2 * MIN, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.sessions_resumed, 1);
	cr_assert_not(exists(tmp));
	world_free(b);
}

Test(state_file, check_wants_a_writable_directory)
{
	char err[256] = "";

	cr_assert_eq(state_file_check(path, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(state_file_check("relative-name", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(state_file_check("/nonexistent-clickd/state", err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "/nonexistent-clickd") != NULL, "%s", err);
	cr_assert_eq(state_file_check(dir, err, sizeof(err)), -EISDIR);
}

Test(state_file, an_empty_state_round_trips)
{
	struct world *a = world_new(2), *b;
	struct state_file_report r;
	char err[256] = "";

	save(a, T0, &r);
	cr_assert_eq(r.file.visitors + r.file.dedup_entries + r.file.paths, 0);
	world_free(a);
	b = world_new(3);
	cr_assert_eq(load(b, T0, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.sessions_resumed, 0);
	world_free(b);
}
