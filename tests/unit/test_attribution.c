/*
 * test_attribution.c - attribution paths and models (attribution.h): the hand-computed cases
 * of tests/data/attribution.tsv (paths of 1, 2, 3 and 7 touchpoints, all-Direct paths, ties
 * in time, the lookback window), identity across devices, every bound (visitors, users,
 * devices, touchpoints per path and in all), expiry, the memory figures, a property test
 * that every model's shares sum to 1 on thousands of random paths, and the per-minute
 * rollups (closing, grace, late records, the "(other)" row, attributed revenue).
 */
#include "clickd/attribution.h"

#include "data_table.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define SEC  1000LL
#define MIN  60000LL
#define HOUR 3600000LL
#define DAY  86400000LL
#define T0   1800000000000LL /* 2027-01-15: every conversion here */

#define EPS 1e-12

static struct attribution_options options(int64_t lookback_days, int64_t half_life_days)
{
	struct attribution_options o;

	attribution_options_default(&o);
	o.lookback_ms = lookback_days * DAY;
	o.half_life_ms = half_life_days * DAY;
	o.max_visitors = 1000;
	o.max_users = 1000;
	return o;
}

static struct attribution *make(const struct attribution_options *o)
{
	struct attribution *a = attribution_new(o);

	cr_assert_not_null(a);
	return a;
}

static struct attribution_result *result(void)
{
	struct attribution_result *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	return r;
}

/* The ids of visitor `vid` (app "shop"), with user `uid` (NULL: none). */
static struct attribution_ids ids(const char *vid, const char *uid)
{
	struct attribution_ids i = {
	    .visitor_hash = XXH3_64bits(vid, strlen(vid)),
	    .user_hash = uid ? attribution_user_hash("shop", 4, uid, strlen(uid)) : 0,
	    .visitor_id = vid,
	    .visitor_id_len = strlen(vid),
	};

	return i;
}

static struct attribution_touchpoint touchpoint(const char *session, int64_t started_at_ms,
                                                enum channel channel, const char *source)
{
	struct attribution_touchpoint tp;

	memset(&tp, 0, sizeof(tp));
	tp.started_at_ms = started_at_ms;
	tp.channel = (uint8_t)channel;
	attribution_set_string(tp.session_id, sizeof(tp.session_id), session, strlen(session));
	attribution_set_string(tp.source, sizeof(tp.source), source, strlen(source));
	return tp;
}

/* Touches `session` for visitor vid (user uid or NULL) at its own start time. */
static int touch(struct attribution *a, const char *vid, const char *uid, const char *session,
                 int64_t at, enum channel channel)
{
	struct attribution_ids who = ids(vid, uid);
	struct attribution_touchpoint tp = touchpoint(session, at, channel, "src");

	return attribution_touch(a, &who, &tp, at);
}

static int convert(struct attribution *a, const char *vid, const char *uid, int64_t at,
                   double revenue, struct attribution_result *r)
{
	struct attribution_ids who = ids(vid, uid);

	return attribution_convert(a, &who, at, revenue, r);
}

/* Each model's shares sum to 1 and revenue = share x revenue. */
static void assert_sound(const struct attribution_result *r, const char *where)
{
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++) {
		double sum = 0;
		for (size_t i = 0; i < r->count; i++) {
			const struct attribution_credited *t = &r->touchpoints[i];
			cr_assert(t->credit[m] >= 0 && t->credit[m] <= 1, "%s: %s share %g", where,
			          attribution_model_name(m), t->credit[m]);
			cr_assert(fabs(t->revenue[m] - t->credit[m] * r->revenue) <= EPS * 1e3,
			          "%s: %s revenue", where, attribution_model_name(m));
			sum += t->credit[m];
		}
		cr_assert(fabs(sum - 1) <= 1e-9, "%s: %s sums to %.17g", where,
		          attribution_model_name(m), sum);
	}
}

/* ------------------------------------------------------- the attribution.tsv table */

static enum channel channel_by_name(const char *name)
{
	for (int c = 0; c < CHANNEL__COUNT; c++)
		if (strcmp(channel_name((enum channel)c), name) == 0)
			return (enum channel)c;
	cr_assert_fail("no channel named '%s'", name);
	return CHANNEL__COUNT;
}

/* "3d", "12h", "90m", "5s", "7ms", "0", "-1h" as ms. */
static int64_t parse_age(const char *s, const char *where)
{
	char *end;
	long long n = strtoll(s, &end, 10);

	if (strcmp(end, "") == 0 && n == 0)
		return 0;
	if (strcmp(end, "d") == 0)
		return n * DAY;
	if (strcmp(end, "h") == 0)
		return n * HOUR;
	if (strcmp(end, "m") == 0)
		return n * MIN;
	if (strcmp(end, "s") == 0)
		return n * SEC;
	if (strcmp(end, "ms") == 0)
		return n;
	cr_assert_fail("%s: bad age '%s'", where, s);
	return 0;
}

/* "1/7" or "0.4". */
static double parse_share(const char *s, const char *where)
{
	char *end;
	double v = strtod(s, &end);

	if (*end == '/')
		v /= strtod(end + 1, &end);
	cr_assert_eq(*end, '\0', "%s: bad credit '%s'", where, s);
	return v;
}

struct tsv_touch {
	char session[32];
	int64_t started_at_ms;
	enum channel channel;
	int position; /* -1: not on the path */
	double credit[ATTRIBUTION_MODEL__COUNT];
	char where[192];
};

struct tsv_case {
	char where[192];
	struct attribution_options opt;
	double revenue;
	size_t n;
	struct tsv_touch touch[16];
};

/* Touches the case's touchpoints at their own start times, in the file's order (what the
 * shard does as sessions open), converts at T0 and checks every credit. Returns the
 * touchpoints checked. */
static size_t run_case(const struct tsv_case *k)
{
	struct attribution *a = make(&k->opt);
	struct attribution_result *r = result();
	size_t on_path = 0, checked = 0;

	for (size_t i = 0; i < k->n; i++) {
		const struct tsv_touch *x = &k->touch[i];
		cr_assert_eq(touch(a, "v", NULL, x->session, x->started_at_ms, x->channel), 0, "%s",
		             x->where);
		on_path += x->position >= 0;
	}
	cr_assert_eq(convert(a, "v", NULL, T0, k->revenue, r), on_path ? 0 : -ENOENT, "%s",
	             k->where);
	cr_assert_eq(r->count, on_path, "%s: %zu on the path, want %zu", k->where, r->count,
	             on_path);
	for (size_t i = 0; i < k->n; i++) {
		const struct tsv_touch *x = &k->touch[i];
		const struct attribution_credited *got;

		if (x->position < 0)
			continue;
		cr_assert_lt((size_t)x->position, r->count, "%s", x->where);
		got = &r->touchpoints[x->position];
		cr_assert_str_eq(got->tp.session_id, x->session, "%s: at position %d", x->where,
		                 x->position);
		cr_assert_str_eq(got->visitor_id, "v");
		cr_assert_eq(got->tp.channel, x->channel, "%s", x->where);
		for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++) {
			cr_assert(fabs(got->credit[m] - x->credit[m]) <= EPS,
			          "%s: %s gave %.15g, want %.15g", x->where,
			          attribution_model_name(m), got->credit[m], x->credit[m]);
			cr_assert(fabs(got->revenue[m] - x->credit[m] * k->revenue) <= 1e-9,
			          "%s: %s revenue %.15g", x->where, attribution_model_name(m),
			          got->revenue[m]);
		}
		checked++;
	}
	assert_sound(r, k->where);
	attribution_free(a);
	free(r);
	return checked;
}

static void read_touch(struct table *t, const struct table_row *r, struct tsv_case *k)
{
	struct tsv_touch *x;
	char case_where[sizeof(k->where)];

	cr_assert_eq(r->columns, 11, "%s: a tp line has 11 columns", table_where(t, r));
	cr_assert_lt(k->n, 16, "%s: too many touchpoints in a case", table_where(t, r));
	memcpy(case_where, k->where, sizeof(case_where));
	x = &k->touch[k->n++];
	snprintf(x->where, sizeof(x->where), "%.150s %.30s", case_where, r->col[1]);
	snprintf(x->session, sizeof(x->session), "%s", r->col[1]);
	x->started_at_ms = T0 - parse_age(r->col[2], x->where);
	x->channel = channel_by_name(r->col[3]);
	x->position = strcmp(r->col[4], "-") == 0 ? -1 : atoi(r->col[4]);
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++) {
		if (x->position < 0)
			cr_assert_str_eq(r->col[5 + m], "-", "%s: off the path, no credit",
			                 x->where);
		else
			x->credit[m] = parse_share(r->col[5 + m], x->where);
	}
}

Test(attribution, every_case_in_attribution_tsv_gets_its_hand_computed_credits)
{
	struct table t;
	struct tsv_case *k = calloc(1, sizeof(*k));
	size_t cases = 0, checked = 0;

	cr_assert_not_null(k);
	table_open(&t, "attribution.tsv");
	for (struct table_row *r = table_next(&t, NULL); r != NULL; r = table_next(&t, r)) {
		if (strcmp(r->col[0], "tp") == 0) {
			cr_assert_neq(k->where[0], '\0', "%s: a tp before any case",
			              table_where(&t, r));
			read_touch(&t, r, k);
			continue;
		}
		cr_assert_str_eq(r->col[0], "case", "%s: a line is a case or a tp",
		                 table_where(&t, r));
		cr_assert_eq(r->columns, 5, "%s: a case line has 5 columns", table_where(&t, r));
		if (k->where[0] != '\0') {
			checked += run_case(k);
			cases++;
		}
		memset(k, 0, sizeof(*k));
		snprintf(k->where, sizeof(k->where), "attribution.tsv:%d (%s)", r->line, r->col[1]);
		k->opt = options(atoll(r->col[2]), atoll(r->col[3]));
		k->revenue = strtod(r->col[4], NULL);
	}
	checked += run_case(k);
	cases++;
	table_close(&t);
	free(k);
	cr_assert_geq(cases, 18, "cases run: %zu", cases);
	cr_assert_geq(checked, 55, "touchpoints checked: %zu", checked);
}

/* ------------------------------------------------------------------- identity */

/* The story of the issue: an affiliate link and an email on a laptop, then a login on a
 * phone via paid search, and a purchase there. */
Test(attribution, a_user_conversion_is_credited_over_the_paths_of_every_linked_device)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();
	struct attribution_stats st;

	cr_assert_eq(touch(a, "laptop", NULL, "s1", T0 - 14 * DAY, CHANNEL_AFFILIATES), 0);
	cr_assert_eq(touch(a, "laptop", "ann", "s2", T0 - 7 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "phone", "ann", "s3", T0, CHANNEL_PAID_SEARCH), 0);
	cr_assert_eq(convert(a, "phone", "ann", T0, 70, r), 0);
	cr_assert_eq(r->count, 3);
	cr_assert_eq(r->devices, 2);
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "s1");
	cr_assert_str_eq(r->touchpoints[0].visitor_id, "laptop");
	cr_assert_str_eq(r->touchpoints[1].tp.session_id, "s2");
	cr_assert_str_eq(r->touchpoints[2].tp.session_id, "s3");
	cr_assert_str_eq(r->touchpoints[2].visitor_id, "phone");
	cr_assert_float_eq(r->touchpoints[0].credit[ATTRIBUTION_FIRST_TOUCH], 1, EPS);
	cr_assert_float_eq(r->touchpoints[2].credit[ATTRIBUTION_LAST_TOUCH], 1, EPS);
	cr_assert_float_eq(r->touchpoints[2].credit[ATTRIBUTION_LAST_NON_DIRECT], 1, EPS);
	cr_assert_float_eq(r->touchpoints[1].revenue[ATTRIBUTION_LINEAR], 70.0 / 3, 1e-9);
	cr_assert_float_eq(r->touchpoints[0].revenue[ATTRIBUTION_TIME_DECAY], 10, 1e-9);
	cr_assert_float_eq(r->touchpoints[1].revenue[ATTRIBUTION_TIME_DECAY], 20, 1e-9);
	cr_assert_float_eq(r->touchpoints[2].revenue[ATTRIBUTION_TIME_DECAY], 40, 1e-9);
	cr_assert_float_eq(r->touchpoints[1].credit[ATTRIBUTION_POSITION_BASED], 0.2, EPS);
	assert_sound(r, "merged");
	attribution_get_stats(a, &st);
	cr_assert_eq(st.conversions_merged, 1);
	cr_assert_eq(st.users, 1);

	/* Without the user ID, the phone's own path only. */
	cr_assert_eq(convert(a, "phone", NULL, T0, 70, r), 0);
	cr_assert_eq(r->count, 1);
	cr_assert_eq(r->devices, 1);
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "s3");
	attribution_free(a);
	free(r);
}

Test(attribution, a_conversion_links_its_visitor_to_the_user_it_carries)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();

	cr_assert_eq(touch(a, "laptop", "bob", "s1", T0 - 2 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "phone", NULL, "s2", T0 - DAY, CHANNEL_PAID_SOCIAL), 0);
	cr_assert_eq(convert(a, "phone", "bob", T0, 10, r), 0);
	cr_assert_eq(r->count, 2, "the phone joined bob's devices as it converted");
	cr_assert_str_eq(r->touchpoints[0].visitor_id, "laptop");
	cr_assert_str_eq(r->touchpoints[1].visitor_id, "phone");
	attribution_free(a);
	free(r);
}

Test(attribution, ties_across_devices_are_ordered_by_session_id)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();

	cr_assert_eq(touch(a, "d1", "u", "sb", T0 - DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "d2", "u", "sa", T0 - DAY, CHANNEL_REFERRAL), 0);
	cr_assert_eq(convert(a, "d1", "u", T0, 1, r), 0);
	cr_assert_eq(r->count, 2);
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "sa");
	cr_assert_str_eq(r->touchpoints[0].visitor_id, "d2");
	cr_assert_float_eq(r->touchpoints[0].credit[ATTRIBUTION_FIRST_TOUCH], 1, EPS);
	attribution_free(a);
	free(r);
}

Test(attribution, a_device_linked_before_the_lookback_is_not_merged)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();

	cr_assert_eq(touch(a, "old", "u", "s1", T0 - 40 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "new", "u", "s2", T0 - DAY, CHANNEL_PAID_SEARCH), 0);
	cr_assert_eq(convert(a, "new", "u", T0, 1, r), 0);
	cr_assert_eq(r->count, 1);
	cr_assert_eq(r->devices, 1);
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "s2");
	attribution_free(a);
	free(r);
}

Test(attribution, a_linked_device_visiting_logged_out_stays_its_users)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();

	cr_assert_eq(touch(a, "laptop", "ann", "s1", T0 - 60 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "laptop", NULL, "s2", T0 - 2 * DAY, CHANNEL_AFFILIATES), 0);
	cr_assert_eq(touch(a, "phone", "ann", "s3", T0 - DAY, CHANNEL_PAID_SEARCH), 0);
	cr_assert_eq(convert(a, "phone", "ann", T0, 1, r), 0);
	cr_assert_eq(r->count, 2, "the laptop's logged-out visit counts for ann");
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "s2");
	cr_assert_str_eq(r->touchpoints[0].visitor_id, "laptop");
	attribution_free(a);
	free(r);
}

Test(attribution, a_device_belongs_to_the_last_user_seen_on_it)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();

	cr_assert_eq(touch(a, "shared", "ann", "s1", T0 - 3 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "ann-phone", "ann", "s2", T0 - 2 * DAY, CHANNEL_DISPLAY), 0);
	cr_assert_eq(touch(a, "shared", "bob", "s3", T0 - DAY, CHANNEL_REFERRAL), 0);
	cr_assert_eq(convert(a, "ann-phone", "ann", T0, 1, r), 0);
	cr_assert_eq(r->count, 1, "the shared device went to bob");
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "s2");
	cr_assert_eq(convert(a, "shared", "bob", T0, 1, r), 0);
	cr_assert_eq(r->count, 2, "bob's conversion takes the device's whole path");
	attribution_free(a);
	free(r);
}

Test(attribution, a_user_keeps_at_most_max_devices_the_least_recently_linked_out)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a;
	struct attribution_result *r = result();
	struct attribution_stats st;

	o.max_devices_per_user = 2;
	a = make(&o);
	cr_assert_eq(touch(a, "d1", "u", "s1", T0 - 3 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "d2", "u", "s2", T0 - 2 * DAY, CHANNEL_DISPLAY), 0);
	cr_assert_eq(touch(a, "d3", "u", "s3", T0 - DAY, CHANNEL_REFERRAL), 0);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.devices_dropped, 1);
	cr_assert_eq(convert(a, "d3", "u", T0, 1, r), 0);
	cr_assert_eq(r->count, 2);
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "s2");
	cr_assert_str_eq(r->touchpoints[1].tp.session_id, "s3");
	attribution_free(a);
	free(r);
}

Test(attribution, a_merged_path_keeps_the_most_recent_max_touchpoints)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a;
	struct attribution_result *r = result();
	struct attribution_stats st;
	char session[8];

	o.max_touchpoints = 4;
	a = make(&o);
	for (int k = 0; k < 3; k++) {
		snprintf(session, sizeof(session), "a%d", k);
		cr_assert_eq(touch(a, "d1", "u", session, T0 - (10 - 2 * k) * DAY, CHANNEL_EMAIL),
		             0);
		snprintf(session, sizeof(session), "b%d", k);
		cr_assert_eq(touch(a, "d2", "u", session, T0 - (9 - 2 * k) * DAY, CHANNEL_DISPLAY),
		             0);
	}
	cr_assert_eq(convert(a, "d2", "u", T0, 1, r), 0);
	cr_assert_eq(r->count, 4);
	cr_assert_eq(r->cut, 2);
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "a1");
	cr_assert_str_eq(r->touchpoints[3].tp.session_id, "b2");
	assert_sound(r, "cut");
	attribution_get_stats(a, &st);
	cr_assert_eq(st.touchpoints_cut, 2);
	attribution_free(a);
	free(r);
}

Test(attribution, link_user_refuses_no_user_and_links_a_visitor_without_touchpoints)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();
	struct attribution_ids who = ids("phone", NULL);

	cr_assert_eq(attribution_link_user(a, &who, T0), -EINVAL);
	who = ids("phone", "u");
	cr_assert_eq(attribution_link_user(a, &who, T0 - 2 * DAY), 0);
	cr_assert_eq(touch(a, "laptop", "u", "s1", T0 - DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(convert(a, "phone", "u", T0, 1, r), 0);
	cr_assert_eq(r->count, 1);
	cr_assert_str_eq(r->touchpoints[0].visitor_id, "laptop");
	cr_assert_neq(attribution_user_hash("shop", 4, "u", 1),
	              attribution_user_hash("sho", 3, "pu", 2));
	cr_assert_neq(attribution_user_hash("a", 1, "u", 1), attribution_user_hash("b", 1, "u", 1));
	attribution_free(a);
	free(r);
}

/* --------------------------------------------------------------------- bounds */

Test(attribution, a_path_keeps_max_touchpoints_oldest_first_out)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a;
	struct attribution_result *r = result();
	struct attribution_stats st;
	char session[8];

	o.max_touchpoints = 3;
	a = make(&o);
	for (int k = 0; k < 5; k++) {
		snprintf(session, sizeof(session), "s%d", k);
		cr_assert_eq(touch(a, "v", NULL, session, T0 - (5 - k) * DAY, CHANNEL_EMAIL), 0);
	}
	attribution_get_stats(a, &st);
	cr_assert_eq(st.touchpoints_dropped_full, 2);
	cr_assert_eq(st.touchpoints, 3);
	/* Older than every touchpoint of the full path: it is the one out. */
	cr_assert_eq(touch(a, "v", NULL, "older", T0 - 20 * DAY, CHANNEL_EMAIL), -ERANGE);
	cr_assert_eq(convert(a, "v", NULL, T0, 1, r), 0);
	cr_assert_eq(r->count, 3);
	cr_assert_str_eq(r->touchpoints[0].tp.session_id, "s2");
	cr_assert_str_eq(r->touchpoints[2].tp.session_id, "s4");
	attribution_free(a);
	free(r);
}

Test(attribution, a_touch_older_than_the_lookback_is_refused)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_ids who = ids("v", NULL);
	struct attribution_touchpoint tp = touchpoint("s", T0 - 31 * DAY, CHANNEL_EMAIL, "x");
	struct attribution_stats st;

	cr_assert_eq(attribution_touch(a, &who, &tp, T0), -ERANGE);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.touches_too_old, 1);
	cr_assert_eq(st.visitors, 0);
	attribution_free(a);
}

Test(attribution, a_session_touched_again_replaces_its_touchpoint)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();
	struct attribution_stats st;

	cr_assert_eq(touch(a, "v", NULL, "s1", T0 - 2 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v", NULL, "s1", T0 - 2 * DAY, CHANNEL_AFFILIATES), 0);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.touches_same_session, 1);
	cr_assert_eq(st.touchpoints, 1);
	cr_assert_eq(convert(a, "v", NULL, T0, 1, r), 0);
	cr_assert_eq(r->count, 1);
	cr_assert_eq(r->touchpoints[0].tp.channel, CHANNEL_AFFILIATES);
	attribution_free(a);
	free(r);
}

Test(attribution, visitors_past_max_visitors_are_forgotten_least_recently_seen_first)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a;
	struct attribution_result *r = result();
	struct attribution_stats st;

	o.max_visitors = 3;
	a = make(&o);
	cr_assert_eq(touch(a, "v1", NULL, "s1", T0 - 4 * HOUR, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v2", NULL, "s2", T0 - 3 * HOUR, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v3", NULL, "s3", T0 - 2 * HOUR, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v1", NULL, "s4", T0 - 90 * MIN, CHANNEL_EMAIL), 0); /* seen again */
	cr_assert_eq(touch(a, "v4", NULL, "s5", T0 - HOUR, CHANNEL_EMAIL), 0);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.visitors, 3);
	cr_assert_eq(st.visitors_evicted, 1);
	cr_assert_eq(st.touchpoints, 4);
	cr_assert_eq(convert(a, "v2", NULL, T0, 1, r), -ENOENT, "v2 was the least recently seen");
	cr_assert_eq(r->count, 0);
	cr_assert_eq(convert(a, "v1", NULL, T0, 1, r), 0);
	cr_assert_eq(r->count, 2);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.conversions, 2);
	cr_assert_eq(st.conversions_empty, 1);
	attribution_free(a);
	free(r);
}

Test(attribution, users_past_max_users_are_forgotten_least_recently_seen_first)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a;
	struct attribution_result *r = result();
	struct attribution_stats st;

	o.max_users = 1;
	a = make(&o);
	cr_assert_eq(touch(a, "laptop", "ann", "s1", T0 - 3 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "other", "bob", "s2", T0 - 2 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "phone", "ann", "s3", T0 - DAY, CHANNEL_PAID_SEARCH), 0);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.users, 1);
	cr_assert_eq(st.users_evicted, 2);
	cr_assert_eq(convert(a, "phone", "ann", T0, 1, r), 0);
	cr_assert_eq(r->count, 1, "ann was forgotten with her laptop link");
	attribution_free(a);
	free(r);
}

Test(attribution, stored_touchpoints_past_their_bound_push_out_least_recent_visitors)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a;
	struct attribution_result *r = result();
	struct attribution_stats st;

	o.max_touchpoints = 2;
	o.max_stored_touchpoints = 4;
	a = make(&o);
	cr_assert_eq(touch(a, "v1", NULL, "a", T0 - 6 * HOUR, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v1", NULL, "b", T0 - 5 * HOUR, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v2", NULL, "c", T0 - 4 * HOUR, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v2", NULL, "d", T0 - 3 * HOUR, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v3", NULL, "e", T0 - 2 * HOUR, CHANNEL_EMAIL), 0);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.visitors_evicted_for_space, 1);
	cr_assert_eq(st.touchpoints, 3);
	cr_assert_eq(convert(a, "v1", NULL, T0, 1, r), -ENOENT);
	cr_assert_eq(convert(a, "v2", NULL, T0, 1, r), 0);
	cr_assert_eq(r->count, 2);
	o.max_stored_touchpoints = 1; /* below max_touchpoints: refused */
	cr_assert_null(attribution_new(&o));
	attribution_free(a);
	free(r);
}

Test(attribution, visitors_and_users_not_seen_within_the_lookback_expire)
{
	struct attribution_options o = options(7, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();
	struct attribution_stats st;

	cr_assert_eq(touch(a, "old", "ann", "s1", T0 - 10 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "new", NULL, "s2", T0 - DAY, CHANNEL_EMAIL), 0);
	attribution_expire(a, T0);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.visitors, 1);
	cr_assert_eq(st.visitors_expired, 1);
	cr_assert_eq(st.users, 0);
	cr_assert_eq(st.users_expired, 1);
	cr_assert_eq(st.touchpoints, 1);
	cr_assert_eq(convert(a, "new", NULL, T0, 1, r), 0);
	attribution_expire(a, T0 + 30 * DAY);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.visitors, 0);
	cr_assert_eq(st.touchpoints, 0);
	attribution_free(a);
	free(r);
}

Test(attribution, a_conversion_prunes_touchpoints_older_than_its_lookback)
{
	struct attribution_options o = options(7, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();
	struct attribution_stats st;

	cr_assert_eq(touch(a, "v", NULL, "s1", T0 - 6 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v", NULL, "s2", T0 - DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(convert(a, "v", NULL, T0 + 2 * DAY, 1, r), 0);
	cr_assert_eq(r->count, 1);
	attribution_get_stats(a, &st);
	cr_assert_eq(st.touchpoints_expired, 1);
	cr_assert_eq(st.touchpoints, 1);
	attribution_free(a);
	free(r);
}

Test(attribution, an_unknown_visitor_converts_with_an_empty_path)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();

	r->count = 99;
	cr_assert_eq(convert(a, "nobody", NULL, T0, 5, r), -ENOENT);
	cr_assert_eq(r->count, 0);
	cr_assert_eq(r->devices, 0);
	cr_assert_eq(convert(a, "nobody", "someone", T0, 5, r), -ENOENT);
	cr_assert_eq(r->count, 0);
	attribution_free(a);
	free(r);
}

Test(attribution, options_out_of_range_are_refused)
{
	struct attribution_options o;

	attribution_options_default(&o);
	cr_assert_eq(o.lookback_ms, 30 * DAY);
	cr_assert_eq(o.half_life_ms, 7 * DAY);
	cr_assert_eq(o.max_touchpoints, 32);
	o.max_touchpoints = ATTRIBUTION_MAX_TOUCHPOINTS + 1;
	cr_assert_null(attribution_new(&o));
	attribution_options_default(&o);
	o.max_devices_per_user = 0;
	cr_assert_null(attribution_new(&o));
	attribution_options_default(&o);
	o.half_life_ms = 0;
	cr_assert_null(attribution_new(&o));
	attribution_options_default(&o);
	o.max_visitors = 0;
	cr_assert_null(attribution_new(&o));
}

Test(attribution, strings_are_cut_to_their_bounds_at_a_character_boundary)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *r = result();
	struct attribution_touchpoint tp;
	char long_id[300], campaign[200];
	struct attribution_ids who;

	memset(long_id, 'x', sizeof(long_id));
	memset(&tp, 0, sizeof(tp));
	/* 95 ASCII bytes then a 2-byte character: it would end at byte 97, past the 95 kept. */
	memset(campaign, 'c', 94);
	memcpy(campaign + 94, "\xc3\xa9zz", 4);
	cr_assert_eq(attribution_set_string(tp.campaign, sizeof(tp.campaign), campaign, 98), 94);
	cr_assert_eq(strlen(tp.campaign), 94);
	cr_assert_eq(attribution_set_string(tp.session_id, sizeof(tp.session_id), long_id, 300),
	             SESSION_ID_CHARS);
	tp.started_at_ms = T0 - DAY;
	who = ids("v", NULL);
	who.visitor_id = long_id;
	who.visitor_id_len = sizeof(long_id);
	cr_assert_eq(attribution_touch(a, &who, &tp, T0 - DAY), 0);
	cr_assert_eq(attribution_convert(a, &who, T0, 1, r), 0);
	cr_assert_eq(strlen(r->touchpoints[0].visitor_id), ATTRIBUTION_VISITOR_ID_BYTES - 1);
	cr_assert_eq(strlen(r->touchpoints[0].tp.session_id), SESSION_ID_CHARS);
	attribution_free(a);
	free(r);
}

Test(attribution, memory_per_visitor_path_is_what_the_header_states)
{
	struct attribution_options o;

	cr_assert_eq(sizeof(struct attribution_touchpoint), 304);
	cr_assert_eq(attribution_visitor_bytes(), 176);
	cr_assert_eq(attribution_touchpoint_bytes(), 312);
	cr_assert_eq(attribution_user_bytes(8), 160);
	attribution_options_default(&o);
	/* 100000 visitors: an index of 262144 slots x 4 bytes, 10.49 bytes each, rounded up. */
	cr_assert_eq(attribution_path_bytes(&o), 176 + 11 + 32 * 312);
	cr_assert_eq(attribution_path_bytes(&o), 10171);
}

Test(attribution, model_names_follow_the_contract)
{
	static const char *const want[] = {"first_touch", "last_touch", "last_non_direct",
	                                   "linear",      "time_decay", "position_based"};

	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++)
		cr_assert_str_eq(attribution_model_name(m), want[m]);
	cr_assert_str_eq(attribution_model_name(ATTRIBUTION_MODEL__COUNT), "unknown");
}

/* ------------------------------------------------------------- property tests */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* splitmix64: deterministic from its seed. */
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

Test(attribution, every_model_sums_to_one_on_thousands_of_random_paths)
{
	struct attribution_result *r = result();
	size_t paths = 0;

	rng_state = 20270115;
	for (int k = 0; k < 20000; k++) {
		size_t n = 1 + rng() % (k % 4 == 0 ? ATTRIBUTION_MAX_TOUCHPOINTS : 8);
		bool all_direct = rng() % 5 == 0;
		int64_t half_life = 1 + (int64_t)(rng() % (60 * DAY));
		int64_t t = T0 - (int64_t)(rng() % (365 * DAY));
		size_t nondirect = n;

		memset(r, 0, sizeof(*r));
		r->converted_at_ms = T0;
		r->revenue = (double)(rng() % 100000) / 100;
		r->count = n;
		for (size_t i = 0; i < n; i++) {
			struct attribution_touchpoint *tp = &r->touchpoints[i].tp;
			/* Ties are frequent: a step of 0 one time in three. */
			t += rng() % 3 == 0 ? 0 : (int64_t)(rng() % (3 * DAY));
			if (t > T0)
				t = T0;
			tp->started_at_ms = t;
			tp->channel =
			    all_direct ? CHANNEL_DIRECT : (uint8_t)(rng() % CHANNEL__COUNT);
			if (tp->channel != CHANNEL_DIRECT)
				nondirect = i;
		}
		attribution_credit(r, half_life);
		assert_sound(r, "random path");
		cr_assert_float_eq(r->touchpoints[0].credit[ATTRIBUTION_FIRST_TOUCH], 1, 0);
		cr_assert_float_eq(r->touchpoints[n - 1].credit[ATTRIBUTION_LAST_TOUCH], 1, 0);
		cr_assert_float_eq(r->touchpoints[nondirect == n ? n - 1 : nondirect]
		                       .credit[ATTRIBUTION_LAST_NON_DIRECT],
		                   1, 0);
		for (size_t i = 1; i < n; i++)
			cr_assert_geq(r->touchpoints[i].credit[ATTRIBUTION_TIME_DECAY],
			              r->touchpoints[i - 1].credit[ATTRIBUTION_TIME_DECAY],
			              "later touchpoints never weigh less");
		paths++;
	}
	cr_assert_eq(paths, 20000);
	free(r);
}

/* The same property through the whole API: random touches on random devices of random
 * users, with every bound small enough to be hit, then conversions. */
Test(attribution, random_histories_through_the_api_always_credit_soundly)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a;
	struct attribution_result *r = result();
	struct attribution_stats st;
	size_t converted = 0;
	int64_t now = T0;

	o.max_visitors = 64;
	o.max_users = 16;
	o.max_devices_per_user = 3;
	o.max_touchpoints = 7;
	o.max_stored_touchpoints = 200;
	a = make(&o);
	rng_state = 42;
	for (int k = 0; k < 20000; k++) {
		char vid[16], uid[16], session[24];
		bool with_user = rng() % 3 == 0;

		now += (int64_t)(rng() % (2 * HOUR));
		snprintf(vid, sizeof(vid), "v%u", (unsigned)(rng() % 100));
		snprintf(uid, sizeof(uid), "u%u", (unsigned)(rng() % 24));
		if (rng() % 8 == 0) {
			int rc = convert(a, vid, with_user ? uid : NULL, now, 10, r);
			cr_assert(rc == 0 || rc == -ENOENT);
			cr_assert_leq(r->count, o.max_touchpoints);
			cr_assert_leq(r->devices, o.max_devices_per_user);
			for (size_t i = 1; i < r->count; i++)
				cr_assert_leq(r->touchpoints[i - 1].tp.started_at_ms,
				              r->touchpoints[i].tp.started_at_ms, "time order");
			for (size_t i = 0; i < r->count; i++)
				cr_assert_geq(r->touchpoints[i].tp.started_at_ms,
				              now - o.lookback_ms);
			if (rc == 0) {
				assert_sound(r, "api");
				converted++;
			}
			continue;
		}
		snprintf(session, sizeof(session), "s%d", k);
		cr_assert_eq(touch(a, vid, with_user ? uid : NULL, session, now,
		                   (enum channel)(rng() % CHANNEL__COUNT)),
		             0);
		if (rng() % 64 == 0)
			attribution_expire(a, now);
		attribution_get_stats(a, &st);
		cr_assert_leq(st.visitors, o.max_visitors);
		cr_assert_leq(st.users, o.max_users);
		cr_assert_leq(st.touchpoints, o.max_stored_touchpoints);
	}
	cr_assert_gt(converted, 1000, "conversions credited: %zu", converted);
	attribution_get_stats(a, &st);
	cr_assert_gt(st.conversions_merged, 0);
	cr_assert_gt(st.visitors_evicted + st.visitors_evicted_for_space, 0);
	cr_assert_gt(st.devices_dropped + st.users_evicted, 0);
	attribution_free(a);
	free(r);
}

/* -------------------------------------------------------------------- rollups */

#define MAX_ROWS 64

static struct attribution_rollup_row rows[MAX_ROWS];
static size_t nrows;

static void on_row(void *ud, const struct attribution_rollup_row *row)
{
	(void)ud;
	cr_assert_lt(nrows, MAX_ROWS);
	rows[nrows++] = *row;
}

static struct attribution_rollup *rollup(int64_t grace_ms, size_t max_keys)
{
	struct attribution_rollup_options o = {.grace_ms = grace_ms, .max_keys = max_keys};
	struct attribution_rollup *r = attribution_rollup_new(&o, on_row, NULL);

	cr_assert_not_null(r);
	nrows = 0;
	return r;
}

static struct attribution_rollup_key key(const char *source, enum channel channel)
{
	struct attribution_rollup_key k = {
	    .app_id = "shop",
	    .app_id_len = 4,
	    .channel = channel,
	    .source = source,
	    .source_len = strlen(source),
	    .medium = "cpc",
	    .medium_len = 3,
	    .campaign = NULL,
	    .campaign_len = 0,
	};

	return k;
}

static void add_session(struct attribution_rollup *r, const char *source, int64_t at, int64_t now)
{
	struct attribution_rollup_key k = key(source, CHANNEL_PAID_SEARCH);
	struct attribution_rollup_counts c = {.sessions = 1, .page_views = 2};

	attribution_rollup_add(r, &k, &c, at, now);
}

#define M0 (T0 / MIN * MIN) /* a minute's start */

Test(attribution_rollup, a_minute_closes_when_the_clock_passes_it_and_the_grace)
{
	struct attribution_rollup *r = rollup(5 * SEC, 100);
	struct attribution_rollup_counts c = {.conversions = 1, .revenue = 19.5};
	struct attribution_rollup_key k = key("google", CHANNEL_PAID_SEARCH);
	struct attribution_rollup_stats st;

	add_session(r, "google", M0 + 10 * SEC, M0 + 10 * SEC);
	add_session(r, "google", M0 + 20 * SEC, M0 + 20 * SEC);
	attribution_rollup_add(r, &k, &c, M0 + 30 * SEC, M0 + 30 * SEC);
	add_session(r, "bing", M0 + 40 * SEC, M0 + 40 * SEC);
	/* Within the grace a record of the last minute still counts there, not late. */
	add_session(r, "google", M0 + 59 * SEC, M0 + 63 * SEC);
	attribution_rollup_tick(r, M0 + MIN + 5 * SEC - 1);
	cr_assert_eq(nrows, 0, "not a millisecond early");
	attribution_rollup_tick(r, M0 + MIN + 5 * SEC);
	cr_assert_eq(nrows, 2);
	cr_assert_eq(rows[0].minute_ms, M0);
	cr_assert_str_eq(rows[0].source, "google");
	cr_assert_str_eq(rows[0].app_id, "shop");
	cr_assert_str_eq(rows[0].medium, "cpc");
	cr_assert_str_eq(rows[0].campaign, "");
	cr_assert_eq(rows[0].channel, CHANNEL_PAID_SEARCH);
	cr_assert_not(rows[0].other);
	cr_assert_eq(rows[0].counts.sessions, 3);
	cr_assert_eq(rows[0].counts.page_views, 6);
	cr_assert_eq(rows[0].counts.conversions, 1);
	cr_assert_float_eq(rows[0].counts.revenue, 19.5, EPS);
	cr_assert_eq(rows[0].late, 0);
	cr_assert_str_eq(rows[1].source, "bing");
	cr_assert_eq(rows[1].counts.sessions, 1);
	attribution_rollup_get_stats(r, &st);
	cr_assert_eq(st.rows_closed, 2);
	cr_assert_eq(st.minutes_closed, 1);
	cr_assert_eq(st.records, 5);
	cr_assert_eq(st.open_rows, 0);
	attribution_rollup_free(r);
}

Test(attribution_rollup, a_record_for_a_closed_minute_goes_to_the_open_one_as_late)
{
	struct attribution_rollup *r = rollup(5 * SEC, 100);
	struct attribution_rollup_stats st;

	add_session(r, "google", M0 + 10 * SEC, M0 + 10 * SEC);
	add_session(r, "google", M0 + 30 * SEC, M0 + MIN + 10 * SEC); /* minute 0 closed */
	cr_assert_eq(nrows, 1);
	cr_assert_eq(rows[0].counts.sessions, 1);
	attribution_rollup_tick(r, M0 + 2 * MIN + 5 * SEC);
	cr_assert_eq(nrows, 2);
	cr_assert_eq(rows[1].minute_ms, M0 + MIN);
	cr_assert_eq(rows[1].counts.sessions, 1);
	cr_assert_eq(rows[1].late, 1);
	attribution_rollup_get_stats(r, &st);
	cr_assert_eq(st.late, 1);
	attribution_rollup_free(r);
}

Test(attribution_rollup, a_record_from_past_the_clock_counts_in_the_clocks_minute)
{
	struct attribution_rollup *r = rollup(0, 100);

	add_session(r, "google", M0 + 5 * MIN, M0 + 10 * SEC);
	attribution_rollup_tick(r, M0 + MIN);
	cr_assert_eq(nrows, 1);
	cr_assert_eq(rows[0].minute_ms, M0);
	cr_assert_eq(rows[0].late, 0);
	attribution_rollup_free(r);
}

Test(attribution_rollup, past_max_keys_records_go_to_the_other_row)
{
	struct attribution_rollup *r = rollup(5 * SEC, 2);
	struct attribution_rollup_stats st;

	add_session(r, "a", M0, M0);
	add_session(r, "b", M0 + 1, M0 + 1);
	add_session(r, "c", M0 + 2, M0 + 2);
	add_session(r, "d", M0 + 3, M0 + 3);
	add_session(r, "a", M0 + 4, M0 + 4); /* a known key still counts on its own row */
	attribution_rollup_get_stats(r, &st);
	cr_assert_eq(st.other_records, 2);
	cr_assert_eq(st.open_rows, 3);
	attribution_rollup_flush(r);
	cr_assert_eq(nrows, 3);
	cr_assert_str_eq(rows[0].source, "a");
	cr_assert_eq(rows[0].counts.sessions, 2);
	cr_assert_str_eq(rows[1].source, "b");
	cr_assert(rows[2].other);
	cr_assert_eq(rows[2].channel, -1);
	cr_assert_str_eq(rows[2].app_id, "(other)");
	cr_assert_str_eq(rows[2].source, "(other)");
	cr_assert_str_eq(rows[2].medium, "(other)");
	cr_assert_str_eq(rows[2].campaign, "(other)");
	cr_assert_eq(rows[2].counts.sessions, 2);
	cr_assert_eq(rows[2].minute_ms, M0);
	attribution_rollup_free(r);
}

Test(attribution_rollup, keys_differ_by_every_field)
{
	struct attribution_rollup *r = rollup(0, 100);
	struct attribution_rollup_key k = key("ab", CHANNEL_PAID_SEARCH);
	struct attribution_rollup_counts c = {.sessions = 1};

	attribution_rollup_add(r, &k, &c, M0, M0);
	k.channel = CHANNEL_DISPLAY;
	attribution_rollup_add(r, &k, &c, M0, M0);
	k = key("a", CHANNEL_PAID_SEARCH);
	k.medium = "bcpc"; /* ("a", "bcpc") against ("ab", "cpc") */
	k.medium_len = 4;
	attribution_rollup_add(r, &k, &c, M0, M0);
	k = key("ab", CHANNEL_PAID_SEARCH);
	k.app_id = "blog";
	attribution_rollup_add(r, &k, &c, M0, M0);
	k = key("ab", CHANNEL_PAID_SEARCH);
	k.campaign = "spring";
	k.campaign_len = 6;
	attribution_rollup_add(r, &k, &c, M0, M0);
	attribution_rollup_add(r, &k, &c, M0, M0);
	attribution_rollup_flush(r);
	cr_assert_eq(nrows, 5);
	cr_assert_eq(rows[4].counts.sessions, 2);
	attribution_rollup_free(r);
}

Test(attribution_rollup, minutes_close_in_order_and_a_jump_of_the_clock_closes_them_all)
{
	struct attribution_rollup *r = rollup(90 * SEC, 100);

	add_session(r, "m0", M0, M0);
	add_session(r, "m1", M0 + MIN, M0 + MIN);
	add_session(r, "m2", M0 + 2 * MIN, M0 + 2 * MIN + 10 * SEC);
	cr_assert_eq(nrows, 0, "grace 90 s: minutes 0 to 2 all open");
	add_session(r, "m0-late", M0 + 30 * SEC, M0 + 2 * MIN + 31 * SEC);
	cr_assert_eq(nrows, 1, "minute 0 closed at 2:30");
	cr_assert_str_eq(rows[0].source, "m0");
	attribution_rollup_tick(r, M0 + 3 * DAY);
	cr_assert_eq(nrows, 4);
	cr_assert_str_eq(rows[1].source, "m1");
	cr_assert_str_eq(rows[2].source, "m2");
	cr_assert_str_eq(rows[3].source, "m0-late");
	cr_assert_eq(rows[3].minute_ms, M0 + 2 * MIN);
	cr_assert_eq(rows[3].late, 1);
	attribution_rollup_free(r);
}

Test(attribution_rollup, attributed_revenue_goes_to_each_touchpoints_key_in_the_conversion_minute)
{
	struct attribution_options o = options(30, 7);
	struct attribution *a = make(&o);
	struct attribution_result *res = result();
	struct attribution_rollup *r = rollup(5 * SEC, 100);
	double total[ATTRIBUTION_MODEL__COUNT] = {0};

	cr_assert_eq(touch(a, "v", NULL, "s1", T0 - 14 * DAY, CHANNEL_AFFILIATES), 0);
	cr_assert_eq(touch(a, "v", NULL, "s2", T0 - 7 * DAY, CHANNEL_EMAIL), 0);
	cr_assert_eq(touch(a, "v", NULL, "s3", T0, CHANNEL_DIRECT), 0);
	cr_assert_eq(convert(a, "v", NULL, M0 + 10 * SEC, 70, res), 0);
	attribution_rollup_add_result(r, "shop", 4, res, M0 + 11 * SEC);
	attribution_rollup_flush(r);
	cr_assert_eq(nrows, 3);
	for (size_t i = 0; i < nrows; i++) {
		cr_assert_eq(rows[i].minute_ms, M0);
		cr_assert_str_eq(rows[i].source, "src");
		for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++)
			total[m] += rows[i].counts.attributed_revenue[m];
	}
	cr_assert_eq(rows[0].channel, CHANNEL_AFFILIATES);
	cr_assert_float_eq(rows[0].counts.attributed_revenue[ATTRIBUTION_FIRST_TOUCH], 70, 1e-9);
	cr_assert_float_eq(rows[1].counts.attributed_revenue[ATTRIBUTION_LAST_NON_DIRECT], 70,
	                   1e-9);
	cr_assert_float_eq(rows[2].counts.attributed_revenue[ATTRIBUTION_TIME_DECAY], 40, 1e-9);
	for (int m = 0; m < ATTRIBUTION_MODEL__COUNT; m++)
		cr_assert_float_eq(total[m], 70, 1e-9, "%s", attribution_model_name(m));
	attribution_rollup_free(r);
	attribution_free(a);
	free(res);
}

Test(attribution_rollup, options_out_of_range_are_refused)
{
	struct attribution_rollup_options o;

	attribution_rollup_options_default(&o);
	cr_assert_eq(o.grace_ms, 5000);
	cr_assert_eq(o.max_keys, 10000);
	cr_assert_null(attribution_rollup_new(&o, NULL, NULL));
	o.max_keys = 0;
	cr_assert_null(attribution_rollup_new(&o, on_row, NULL));
	attribution_rollup_options_default(&o);
	o.grace_ms = -1;
	cr_assert_null(attribution_rollup_new(&o, on_row, NULL));
}
