/*
 * test_session.c - sessions: each end reason, internal referrers, campaign touches,
 * receive time over client time, the visitor bound, bounded strings, stable IDs, and the
 * timer wheel closing sessions on time without waiting for the next event.
 */
#include "clickd/session.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define MIN 60000LL
#define T0  1800000000000LL /* 2027-01-15 */

struct closed {
	char id[SESSION_ID_CHARS + 1];
	uint32_t index;
	enum session_end_reason reason;
	int64_t started, last_seen;
	uint32_t events, page_views, conversions;
	double revenue;
	bool has_revenue;
	char currency[4];
	char landing[600], exit[600], source[64], user[64], visitor[64], affiliate[64];
	int channel;
};

static struct closed closed[64];
static size_t nclosed;

static void copy_field(const struct session *s, enum session_field f, char *out, size_t cap)
{
	size_t len;
	const char *v = session_get(s, f, &len);

	snprintf(out, cap, "%.*s", (int)len, v ? v : "");
}

static void on_close(void *ud, const struct session *s, enum session_end_reason reason)
{
	struct closed *c = &closed[nclosed++ % 64]; /* the wheel test only counts */

	(void)ud;
	memcpy(c->id, s->id, sizeof(c->id));
	c->index = s->index;
	c->reason = reason;
	c->started = s->started_at_ms;
	c->last_seen = s->last_seen_ms;
	c->events = s->events;
	c->page_views = s->page_views;
	c->conversions = s->conversions;
	c->revenue = s->revenue;
	c->has_revenue = s->has_revenue;
	memcpy(c->currency, s->currency, sizeof(c->currency));
	c->channel = s->channel;
	copy_field(s, SF_LANDING_URL, c->landing, sizeof(c->landing));
	copy_field(s, SF_EXIT_URL, c->exit, sizeof(c->exit));
	copy_field(s, SF_SOURCE, c->source, sizeof(c->source));
	copy_field(s, SF_USER_ID, c->user, sizeof(c->user));
	copy_field(s, SF_VISITOR_ID, c->visitor, sizeof(c->visitor));
	copy_field(s, SF_AFFILIATE_ID, c->affiliate, sizeof(c->affiliate));
}

static struct session_table *table(int64_t timeout_ms, int64_t max_ms, size_t visitors)
{
	struct session_options o = {
	    .timeout_ms = timeout_ms,
	    .max_duration_ms = max_ms,
	    .max_visitors = visitors,
	    .max_url_bytes = 512,
	};
	struct session_table *t = session_table_new(&o, on_close, NULL);

	cr_assert_not_null(t);
	nclosed = 0;
	return t;
}

static struct event ev;

static void put(enum event_field f, const char *s)
{
	cr_assert_eq(event_set(&ev, f, s, strlen(s)), 0);
}

/* A page view of visitor `vid` at time `at` with source/medium (NULL: direct). */
static struct event *page(const char *vid, int64_t at, const char *source, const char *medium)
{
	event_init(&ev);
	ev.received_at_ms = at;
	put(EF_APP_ID, "shop");
	if (vid)
		put(EF_VISITOR_ID, vid);
	put(EF_URL, "https://shop.example/");
	put(EF_SOURCE, source ? source : "(direct)");
	put(EF_MEDIUM, medium ? medium : "(none)");
	return &ev;
}

Test(session, events_of_a_visitor_share_a_session_until_it_times_out)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);
	const struct session *s;
	char first_id[SESSION_ID_CHARS + 1];

	s = session_track(t, page("v1", T0, "news", "email"), 0);
	cr_assert_not_null(s);
	cr_assert_eq(s->index, 1);
	cr_assert_eq(strlen(s->id), SESSION_ID_CHARS);
	strcpy(first_id, s->id);
	s = session_track(t, page("v1", T0 + 29 * MIN, NULL, NULL), 0);
	cr_assert_str_eq(s->id, first_id, "29 min later, and direct: the same session");
	cr_assert_eq(s->events, 2);
	session_tick(t, T0 + 29 * MIN + 30 * MIN - 1);
	cr_assert_eq(nclosed, 0, "not a millisecond early");
	session_tick(t, T0 + 59 * MIN + SESSION_TICK_MS);
	cr_assert_eq(nclosed, 1, "closed by the wheel, with no event from the visitor");
	cr_assert_eq(closed[0].reason, SESSION_END_INACTIVITY);
	cr_assert_str_eq(closed[0].id, first_id);
	cr_assert_eq(closed[0].started, T0);
	cr_assert_eq(closed[0].last_seen, T0 + 29 * MIN);
	cr_assert_eq(closed[0].events, 2);
	cr_assert_str_eq(closed[0].source, "news");

	s = session_track(t, page("v1", T0 + 90 * MIN, NULL, NULL), 0);
	cr_assert_eq(s->index, 2, "the visitor's second session");
	cr_assert_str_neq(s->id, first_id);
	session_table_free(t);
}

Test(session, inactivity_is_noticed_at_the_next_event_before_the_wheel_gets_there)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);
	const struct session *s;

	session_track(t, page("v1", T0, NULL, NULL), 0);
	s = session_track(t, page("v1", T0 + 30 * MIN, NULL, NULL), 0);
	cr_assert_eq(nclosed, 1);
	cr_assert_eq(closed[0].reason, SESSION_END_INACTIVITY);
	cr_assert_eq(s->index, 2);
	cr_assert_eq(s->started_at_ms, T0 + 30 * MIN);
	session_table_free(t);
}

Test(session, a_new_campaign_touch_starts_a_new_session)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);
	const struct session *s;

	session_track(t, page("v1", T0, "google", "organic"), 0);
	session_track(t, page("v1", T0 + MIN, NULL, NULL), 0); /* internal navigation */
	session_track(t, page("v1", T0 + 2 * MIN, "google", "organic"), 0); /* same touch */
	cr_assert_eq(nclosed, 0);
	s = session_track(t, page("v1", T0 + 3 * MIN, "news", "email"), 0);
	cr_assert_eq(nclosed, 1);
	cr_assert_eq(closed[0].reason, SESSION_END_NEW_CAMPAIGN);
	cr_assert_eq(closed[0].events, 3);
	cr_assert_eq(closed[0].last_seen, T0 + 2 * MIN);
	cr_assert_eq(s->index, 2);
	session_table_free(t);
}

Test(session, campaign_and_click_id_changes_are_touches_too)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);

	page("v1", T0, "news", "email");
	put(EF_CAMPAIGN, "spring");
	session_track(t, &ev, 0);
	page("v1", T0 + MIN, "news", "email");
	put(EF_CAMPAIGN, "summer");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 1, "another campaign");

	page("v1", T0 + 2 * MIN, "google", "cpc");
	put(EF_CLICK_ID_TYPE, "gclid");
	put(EF_CLICK_ID, "abc");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 2);
	page("v1", T0 + 3 * MIN, "google", "cpc");
	put(EF_CLICK_ID_TYPE, "gclid");
	put(EF_CLICK_ID, "abc");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 2, "the same click again (a reload) is the same touch");
	page("v1", T0 + 4 * MIN, "google", "cpc");
	put(EF_CLICK_ID_TYPE, "gclid");
	put(EF_CLICK_ID, "def");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 3, "a new ad click");
	/* A direct event carrying a click ID (the in-app browser dropped the referrer). */
	page("v1", T0 + 5 * MIN, NULL, NULL);
	put(EF_CLICK_ID_TYPE, "fbclid");
	put(EF_CLICK_ID, "fb1");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 4);
	for (size_t i = 0; i < nclosed; i++)
		cr_assert_eq(closed[i].reason, SESSION_END_NEW_CAMPAIGN);
	session_table_free(t);
}

Test(session, an_affiliate_id_is_a_touch_and_a_new_one_starts_a_new_session)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);

	/* A direct landing carrying an affiliate ID (no referrer): a touch all the same. */
	session_track(t, page("v1", T0, NULL, NULL), 0);
	page("v1", T0 + MIN, NULL, NULL);
	put(EF_AFFILIATE_ID, "aff-1");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 1);
	cr_assert_eq(closed[0].reason, SESSION_END_NEW_CAMPAIGN);
	page("v1", T0 + 2 * MIN, NULL, NULL);
	put(EF_AFFILIATE_ID, "aff-1");
	session_track(t, &ev, 0);
	session_track(t, page("v1", T0 + 3 * MIN, NULL, NULL), 0); /* internal navigation */
	cr_assert_eq(nclosed, 1, "the same affiliate again, then no touch: one session");
	page("v1", T0 + 4 * MIN, NULL, NULL);
	put(EF_AFFILIATE_ID, "aff-2");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 2, "another affiliate");
	cr_assert_str_eq(closed[1].affiliate, "aff-1", "the session keeps its affiliate ID");
	session_close_all(t, SESSION_END_SHUTDOWN);
	cr_assert_str_eq(closed[2].affiliate, "aff-2");
	session_table_free(t);
}

Test(session, an_external_referrer_from_another_site_is_a_new_touch)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);

	page("v1", T0, "blog.example", "referral");
	put(EF_REFERRER, "https://blog.example/post");
	put(EF_REFERRER_HOST, "blog.example");
	session_track(t, &ev, 0);
	page("v1", T0 + MIN, "blog.example", "referral");
	put(EF_REFERRER, "https://blog.example/other");
	put(EF_REFERRER_HOST, "blog.example");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 0, "the same site again");
	page("v1", T0 + 2 * MIN, "forum.example", "referral");
	put(EF_REFERRER, "https://forum.example/t/1");
	put(EF_REFERRER_HOST, "forum.example");
	session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 1);
	cr_assert_eq(closed[0].reason, SESSION_END_NEW_CAMPAIGN);
	session_table_free(t);
}

Test(session, a_session_is_cut_at_its_maximum_duration)
{
	struct session_table *t = table(30 * MIN, 60 * MIN, 100);
	const struct session *s;

	for (int64_t m = 0; m < 60; m += 10)
		session_track(t, page("v1", T0 + m * MIN, NULL, NULL), 0);
	cr_assert_eq(nclosed, 0);
	session_tick(t, T0 + 60 * MIN + SESSION_TICK_MS);
	cr_assert_eq(nclosed, 1, "the wheel cuts it although the visitor is active");
	cr_assert_eq(closed[0].reason, SESSION_END_MAX_DURATION);
	cr_assert_eq(closed[0].events, 6);
	s = session_track(t, page("v1", T0 + 61 * MIN, NULL, NULL), 0);
	cr_assert_eq(s->index, 2);

	/* Noticed at the next event too. */
	session_track(t, page("v2", T0, NULL, NULL), 0);
	session_track(t, page("v2", T0 + 25 * MIN, NULL, NULL), 0);
	session_track(t, page("v2", T0 + 50 * MIN, NULL, NULL), 0);
	session_track(t, page("v2", T0 + 60 * MIN, NULL, NULL), 0);
	cr_assert_eq(nclosed, 2);
	cr_assert_eq(closed[1].reason, SESSION_END_MAX_DURATION);
	session_table_free(t);
}

Test(session, shutdown_closes_every_open_session)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);
	struct session_stats st;

	session_track(t, page("v1", T0, NULL, NULL), 0);
	session_track(t, page("v2", T0, NULL, NULL), 0);
	session_track(t, page("v3", T0, NULL, NULL), 0);
	session_get_stats(t, &st);
	cr_assert_eq(st.open, 3);
	session_close_all(t, SESSION_END_SHUTDOWN);
	cr_assert_eq(nclosed, 3);
	for (size_t i = 0; i < 3; i++)
		cr_assert_eq(closed[i].reason, SESSION_END_SHUTDOWN);
	session_get_stats(t, &st);
	cr_assert_eq(st.open, 0);
	cr_assert_eq(st.ended[SESSION_END_SHUTDOWN], 3);
	session_tick(t, T0 + 100 * MIN);
	cr_assert_eq(nclosed, 3, "nothing left on the wheel");
	session_table_free(t);
}

Test(session, sessions_run_on_receive_time_not_client_time)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 100);
	const struct session *s;

	/* Client clocks wildly off, and out of order: they do not matter. */
	page("v1", T0, NULL, NULL);
	ev.client_at_ms = T0 + 500 * MIN;
	session_track(t, &ev, 0);
	page("v1", T0 + MIN, NULL, NULL);
	ev.client_at_ms = T0 - 500 * MIN;
	s = session_track(t, &ev, 0);
	cr_assert_eq(nclosed, 0);
	cr_assert_eq(s->events, 2);
	/* A receive time slightly behind (another ingest thread) does not move last_seen back. */
	s = session_track(t, page("v1", T0 + MIN - 50, NULL, NULL), 0);
	cr_assert_eq(s->last_seen_ms, T0 + MIN);
	session_table_free(t);
}

Test(session, least_recently_seen_visitors_are_forgotten_at_the_bound)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 2);
	const struct session *s;
	struct session_stats st;

	session_track(t, page("v1", T0, NULL, NULL), 0);
	session_track(t, page("v2", T0 + 1, NULL, NULL), 0);
	session_track(t, page("v1", T0 + 2, NULL, NULL), 0); /* v2 is now the oldest */
	session_track(t, page("v3", T0 + 3, NULL, NULL), 0);
	cr_assert_eq(nclosed, 1);
	cr_assert_eq(closed[0].reason, SESSION_END_EVICTED);
	cr_assert_str_eq(closed[0].visitor, "v2");
	session_get_stats(t, &st);
	cr_assert_eq(st.visitors, 2);
	/* v2 comes back: forgotten, so its count starts again. */
	s = session_track(t, page("v2", T0 + 4, NULL, NULL), 0);
	cr_assert_eq(s->index, 1);
	cr_assert_eq(nclosed, 2);
	cr_assert_str_eq(closed[1].visitor, "v1");
	/* v3's closed session keeps its place in memory only as the visitor count. */
	session_table_free(t);
}

Test(session, session_index_counts_every_session_of_a_remembered_visitor)
{
	struct session_table *t = table(MIN, 24 * 60 * MIN, 10);
	const struct session *s = NULL;

	for (int i = 0; i < 5; i++)
		s = session_track(t, page("v1", T0 + i * 2 * MIN, NULL, NULL), 0);
	cr_assert_eq(s->index, 5);
	cr_assert_eq(nclosed, 4);
	session_table_free(t);
}

Test(session, conversions_add_up_revenue_in_one_currency)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 10);

	session_track(t, page("v1", T0, NULL, NULL), 0);
	page("v1", T0 + 1, NULL, NULL);
	ev.type = EVENT_CONVERSION;
	ev.has_revenue = true;
	ev.revenue = 49.5;
	put(EF_CURRENCY, "EUR");
	session_track(t, &ev, 0);
	page("v1", T0 + 2, NULL, NULL);
	ev.type = EVENT_CONVERSION;
	ev.has_revenue = true;
	ev.revenue = 10.25;
	put(EF_CURRENCY, "EUR");
	session_track(t, &ev, 0);
	page("v1", T0 + 3, NULL, NULL);
	ev.type = EVENT_CONVERSION;
	ev.has_revenue = true;
	ev.revenue = 1000;
	put(EF_CURRENCY, "USD");
	session_track(t, &ev, 0);
	session_close_all(t, SESSION_END_SHUTDOWN);
	cr_assert_eq(closed[0].conversions, 3);
	cr_assert_eq(closed[0].page_views, 1);
	cr_assert(closed[0].has_revenue);
	cr_assert_float_eq(closed[0].revenue, 59.75, 1e-9);
	cr_assert_str_eq(closed[0].currency, "EUR");
	session_table_free(t);
}

Test(session, landing_and_exit_urls_are_kept_and_cut_at_a_character_boundary)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 10);
	char url[700];
	size_t n;

	page("v1", T0, NULL, NULL);
	/* 510 ASCII bytes, then 3-byte characters: the cut at 512 falls inside the first. */
	n = (size_t)snprintf(url, sizeof(url), "https://shop.example/");
	memset(url + n, 'a', 510 - n);
	strcpy(url + 510, "\xe2\x82\xac\xe2\x82\xac");
	put(EF_URL, url);
	put(EF_USER_ID, "u-1");
	session_track(t, &ev, 0);
	page("v1", T0 + 1, NULL, NULL);
	put(EF_URL, "https://shop.example/cart");
	session_track(t, &ev, 0);
	session_close_all(t, SESSION_END_SHUTDOWN);
	cr_assert_eq(strlen(closed[0].landing), 510, "cut before the character that crosses 512");
	cr_assert_str_eq(closed[0].exit, "https://shop.example/cart");
	cr_assert_str_eq(closed[0].user, "u-1", "the user ID stays once seen");
	session_table_free(t);
}

Test(session, session_ids_are_stable_for_the_same_visitor_and_start)
{
	struct session_table *a = table(30 * MIN, 24 * 60 * MIN, 10);
	struct session_table *b = table(30 * MIN, 24 * 60 * MIN, 10);
	char id_a[SESSION_ID_CHARS + 1], id_b[SESSION_ID_CHARS + 1], id_c[SESSION_ID_CHARS + 1];

	strcpy(id_a, session_track(a, page("v1", T0, NULL, NULL), 0)->id);
	strcpy(id_b, session_track(b, page("v1", T0, NULL, NULL), 0)->id);
	strcpy(id_c, session_track(b, page("v2", T0, NULL, NULL), 0)->id);
	cr_assert_str_eq(id_a, id_b);
	cr_assert_str_neq(id_a, id_c);
	session_table_free(a);
	session_table_free(b);
}

Test(session, an_event_without_a_visitor_has_no_session)
{
	struct session_table *t = table(30 * MIN, 24 * 60 * MIN, 10);
	struct session_stats st;

	cr_assert_null(session_track(t, page(NULL, T0, NULL, NULL), 0));
	session_get_stats(t, &st);
	cr_assert_eq(st.no_visitor, 1);
	cr_assert_eq(st.open, 0);
	session_table_free(t);
}

Test(session, the_wheel_closes_each_session_at_its_own_deadline)
{
	struct session_table *t = table(10 * MIN, 24 * 60 * MIN, 2000);
	char vid[16];
	struct session_stats st;

	/* 1000 visitors, one a second, each seen once: session i is due at T0 + i s + 10 min.
	 * Ticked every 250 ms over 30 minutes, the wheel must have closed exactly the sessions
	 * whose deadline has come, none early and none late. */
	for (int i = 0; i < 1000; i++) {
		snprintf(vid, sizeof(vid), "v%d", i);
		session_track(t, page(vid, T0 + i * 1000LL, NULL, NULL), 0);
	}
	for (int64_t now = T0; now <= T0 + 30 * MIN; now += SESSION_TICK_MS) {
		int64_t past = now - (T0 + 10 * MIN); /* ms since session 0 was due */
		size_t want = past < 0 ? 0 : past / 1000 >= 999 ? 1000 : (size_t)(past / 1000) + 1;

		session_tick(t, now);
		cr_assert_eq(nclosed, want, "at +%lld ms: %zu closed, want %zu",
		             (long long)(now - T0), nclosed, want);
	}
	session_get_stats(t, &st);
	cr_assert_eq(st.ended[SESSION_END_INACTIVITY], 1000);
	cr_assert_eq(st.open, 0);
	session_table_free(t);
}

Test(session, a_long_silence_closes_everything_in_one_tick)
{
	struct session_table *t = table(30 * MIN, 48 * 60 * MIN, 100);
	struct session_stats st;

	session_track(t, page("v1", T0, NULL, NULL), 0);
	session_track(t, page("v2", T0 + 5 * MIN, NULL, NULL), 0);
	session_tick(t, T0 + 30 * 24 * 60 * MIN); /* a month later: far past a wheel turn */
	session_get_stats(t, &st);
	cr_assert_eq(st.open, 0);
	cr_assert_eq(nclosed, 2);
	session_table_free(t);
}
