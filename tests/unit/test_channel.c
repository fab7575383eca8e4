/*
 * test_channel.c - the GA4 default channel group (channel.h): the rule table driven by
 * tests/data/channels.tsv (every channel at least twice, rule order, case, host prefixes,
 * absent fields), the hand-written regexes, and the source-list loader (format, refusals
 * with file:line, bounds, the built-in lists, a directory replacing them).
 *
 * Data files are found through CLICKD_TEST_DATA (data_table.h reads channels.tsv) and the
 * repo through CLICKD_SOURCE_DIR, which ctest sets.
 */
#include "clickd/channel.h"

#include "data_table.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct channel_lists *builtin(void)
{
	char err[256] = "";
	struct channel_lists *l = channel_lists_new(NULL, err, sizeof(err));

	cr_assert_not_null(l, "built-in lists: %s", err);
	return l;
}

static enum channel classify(const struct channel_lists *l, const char *source, const char *medium,
                             const char *campaign)
{
	return channel_classify(l, source, strlen(source), medium, strlen(medium), campaign,
	                        strlen(campaign), NULL, 0);
}

static enum channel channel_by_name(const char *name)
{
	for (int c = 0; c < CHANNEL__COUNT; c++)
		if (strcmp(channel_name((enum channel)c), name) == 0)
			return (enum channel)c;
	return CHANNEL__COUNT;
}

/* ------------------------------------------------------------ the channels.tsv table */

/* A case: source, medium and campaign (an empty column is an absent field; escapes as in
 * data_table.h), then the name of the channel they must get, which this returns; an
 * optional fifth column is the touch's affiliate ID. */
static enum channel expected_channel(const struct table_row *r)
{
	enum channel c;

	cr_assert(r->columns == 4 || r->columns == 5, "channels.tsv:%d: %zu columns, want 4 or 5",
	          r->line, r->columns);
	c = channel_by_name(r->col[3]);
	cr_assert_neq(c, CHANNEL__COUNT, "channels.tsv:%d: no channel named '%s'", r->line,
	              r->col[3]);
	return c;
}

Test(channel, every_case_in_channels_tsv_gets_its_expected_channel)
{
	struct channel_lists *l = builtin();
	struct table t;
	int failures = 0;

	table_open(&t, "channels.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;) {
		enum channel want = expected_channel(r);
		const char *affiliate = r->columns == 5 ? r->col[4] : NULL;
		size_t affiliate_len = r->columns == 5 ? r->len[4] : 0;
		enum channel got = channel_classify(l, r->col[0], r->len[0], r->col[1], r->len[1],
		                                    r->col[2], r->len[2], affiliate, affiliate_len);

		if (got != want) {
			failures++;
			cr_log_error(
			    "channels.tsv:%d: '%s' / '%s' / '%s' / affiliate '%s' gave %s, "
			    "want %s",
			    r->line, r->col[0], r->col[1], r->col[2], affiliate ? affiliate : "",
			    channel_name(got), channel_name(want));
		}
	}
	cr_expect_eq(failures, 0, "%d of %zu cases failed (see above)", failures, t.rows);
	table_close(&t);
	channel_lists_free(l);
}

Test(channel, channels_tsv_covers_every_channel_at_least_twice)
{
	int seen[CHANNEL__COUNT] = {0};
	struct table t;

	table_open(&t, "channels.tsv");
	for (struct table_row *r = NULL; (r = table_next(&t, r)) != NULL;)
		seen[expected_channel(r)]++;
	for (int c = 0; c < CHANNEL__COUNT; c++)
		cr_expect_geq(seen[c], 2, "channels.tsv has %d case(s) for %s", seen[c],
		              channel_name((enum channel)c));
	table_close(&t);
}

/* ------------------------------------------------------------------------ the rules */

Test(channel, every_channel_is_named_as_ga4_writes_it)
{
	static const char *const names[CHANNEL__COUNT] = {
	    "Direct",         "Cross-network", "Paid Shopping",
	    "Paid Search",    "Paid Social",   "Paid Video",
	    "Display",        "Paid Other",    "Organic Shopping",
	    "Organic Social", "Organic Video", "Organic Search",
	    "Referral",       "Email",         "Affiliates",
	    "Audio",          "SMS",           "Mobile Push Notifications",
	    "Unassigned"};

	for (int c = 0; c < CHANNEL__COUNT; c++) {
		cr_expect_str_eq(channel_name((enum channel)c), names[c]);
		cr_expect(strlen(channel_rule((enum channel)c)) > 0);
	}
	cr_expect_str_eq(channel_name(CHANNEL__COUNT), "Unassigned");
	cr_expect_str_eq(channel_name((enum channel) - 1), "Unassigned");
}

Test(channel, paid_search_needs_a_search_source_and_a_paid_medium)
{
	struct channel_lists *l = builtin();

	cr_expect_eq(classify(l, "google", "cpc", ""), CHANNEL_PAID_SEARCH);
	cr_expect_eq(classify(l, "google", "organic", ""), CHANNEL_ORGANIC_SEARCH);
	cr_expect_eq(classify(l, "example.com", "cpc", ""), CHANNEL_PAID_OTHER);
	channel_lists_free(l);
}

Test(channel, the_paid_medium_regex_is_contains_cp_or_ppc_or_retargeting_or_starts_with_paid)
{
	static const char *const paid[] = {"cpc", "CPM",  "cpv",         "xcpx",       "ppc",
	                                   "PPC", "paid", "Paid_Social", "retargeting"};
	static const char *const not_paid[] = {"pc-p", "ppcx", "prepaid", "retarget",
	                                       "c p",  "pc",   "c-p",     "retargeting2"};

	for (size_t i = 0; i < sizeof(paid) / sizeof(paid[0]); i++)
		cr_expect_eq(classify(NULL, "example.com", paid[i], ""),
		             strcmp(paid[i], "CPM") == 0 ? CHANNEL_DISPLAY : CHANNEL_PAID_OTHER,
		             "medium '%s'", paid[i]);
	for (size_t i = 0; i < sizeof(not_paid) / sizeof(not_paid[0]); i++)
		cr_expect_eq(classify(NULL, "example.com", not_paid[i], ""), CHANNEL_UNASSIGNED,
		             "medium '%s'", not_paid[i]);
}

Test(channel, a_shop_campaign_is_shopping_anywhere_or_shop_at_a_word_start)
{
	static const char *const shop[] = {"shop",     "Shop-Now",    "summer_shop", "eshop",
	                                   "E-SHOP",   "2shop",       "shopping",    "myshopping",
	                                   "x.shop.y", "\xc3\xa9shop"};
	static const char *const not_shop[] = {"workshop", "bishop", "sho", "shpo", "s hop"};

	for (size_t i = 0; i < sizeof(shop) / sizeof(shop[0]); i++)
		cr_expect_eq(classify(NULL, "example.com", "referral", shop[i]),
		             CHANNEL_ORGANIC_SHOPPING, "campaign '%s'", shop[i]);
	for (size_t i = 0; i < sizeof(not_shop) / sizeof(not_shop[0]); i++)
		cr_expect_eq(classify(NULL, "example.com", "referral", not_shop[i]),
		             CHANNEL_REFERRAL, "campaign '%s'", not_shop[i]);
}

Test(channel, a_newline_keeps_a_value_from_matching_the_anchored_regexes)
{
	struct channel_lists *l = builtin();

	/* ^(.*cp.*|...)$, ^(.*video.*)$ and the shop regex need one line ... */
	cr_expect_eq(classify(l, "example.com", "cpc\n", ""), CHANNEL_UNASSIGNED);
	cr_expect_eq(classify(l, "example.com", "paid\nx", ""), CHANNEL_UNASSIGNED);
	cr_expect_eq(classify(l, "example.com", "video\n", ""), CHANNEL_UNASSIGNED);
	cr_expect_eq(classify(l, "google", "cpc", "summer\nshop"), CHANNEL_PAID_SEARCH);
	cr_expect_eq(classify(l, "google", "cpc\nx", ""), CHANNEL_ORGANIC_SEARCH);
	/* ... "contains", "ends with" and "exactly" conditions do not. */
	cr_expect_eq(classify(l, "example.com", "x\nmobile", ""), CHANNEL_MOBILE_PUSH);
	cr_expect_eq(classify(l, "example.com", "x\npush", ""), CHANNEL_MOBILE_PUSH);
	cr_expect_eq(classify(l, "google", "cpc", "a\ncross-network"), CHANNEL_CROSS_NETWORK);
	channel_lists_free(l);
}

Test(channel, absent_fields_read_as_not_set_and_may_be_null)
{
	struct channel_lists *l = builtin();

	cr_expect_eq(channel_classify(l, "(direct)", 8, NULL, 0, NULL, 0, NULL, 0), CHANNEL_DIRECT);
	cr_expect_eq(channel_classify(l, NULL, 0, NULL, 0, NULL, 0, NULL, 0), CHANNEL_UNASSIGNED);
	cr_expect_eq(channel_classify(l, NULL, 0, "cpc", 3, NULL, 0, NULL, 0), CHANNEL_PAID_OTHER);
	cr_expect_eq(channel_classify(l, NULL, 0, NULL, 0, "shop", 4, NULL, 0),
	             CHANNEL_ORGANIC_SHOPPING);
	/* An absent affiliate ID is no affiliate ID, never "(not set)". */
	cr_expect_eq(channel_classify(l, NULL, 0, NULL, 0, NULL, 0, "", 0), CHANNEL_UNASSIGNED);
	cr_expect_eq(channel_classify(l, NULL, 0, NULL, 0, NULL, 0, "a1", 2), CHANNEL_AFFILIATES);
	/* Lengths are honoured: nothing past them is read. */
	cr_expect_eq(channel_classify(l, "googleXYZ", 6, "cpcXYZ", 3, "", 0, NULL, 0),
	             CHANNEL_PAID_SEARCH);
	channel_lists_free(l);
}

Test(channel, without_lists_only_the_medium_and_campaign_rules_apply)
{
	cr_expect_eq(classify(NULL, "google", "cpc", ""), CHANNEL_PAID_OTHER);
	cr_expect_eq(classify(NULL, "facebook", "referral", ""), CHANNEL_REFERRAL);
	cr_expect_eq(classify(NULL, "(direct)", "(none)", ""), CHANNEL_DIRECT);
	cr_expect_not(channel_lists_contains(NULL, CHANNEL_LIST_SOCIAL, "facebook", 8));
	cr_expect_eq(channel_lists_count(NULL, CHANNEL_LIST_SOCIAL), 0);
}

/* -------------------------------------------------------------- matching the lists */

static bool in_list(const struct channel_lists *l, enum channel_list which, const char *s)
{
	return channel_lists_contains(l, which, s, strlen(s));
}

Test(channel, hosts_match_with_and_without_the_usual_prefixes)
{
	struct channel_lists *l = builtin();
	static const char *const facebook[] = {
	    "facebook.com",     "FaceBook.COM",     "www.facebook.com",    "l.facebook.com",
	    "lm.facebook.com",  "m.facebook.com",   "mobile.facebook.com", "touch.facebook.com",
	    "web.facebook.com", "amp.facebook.com", "www.m.facebook.com",  "facebook.com."};

	for (size_t i = 0; i < sizeof(facebook) / sizeof(facebook[0]); i++)
		cr_expect(in_list(l, CHANNEL_LIST_SOCIAL, facebook[i]), "'%s'", facebook[i]);
	/* GA4 lists m.search.naver.com only: its bare host and www. form match too. */
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "search.naver.com"));
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "www.search.naver.com"));
	cr_expect(in_list(l, CHANNEL_LIST_VIDEO, "m.youtube.com"));
	cr_expect(in_list(l, CHANNEL_LIST_VIDEO, "www.youtube.com"));
	cr_expect(in_list(l, CHANNEL_LIST_SHOPPING, "Google Shopping"));
	cr_expect(in_list(l, CHANNEL_LIST_SHOPPING, "igshopping"));
	channel_lists_free(l);
}

Test(channel, other_subdomains_suffixes_and_partial_names_do_not_match)
{
	struct channel_lists *l = builtin();
	static const char *const no[] = {"de-de.facebook.com",
	                                 "facebook.com.example.net",
	                                 "facebookcom",
	                                 "acebook.com",
	                                 "facebook.com:443",
	                                 "facebook.com..",
	                                 "www.facebook",
	                                 "m.",
	                                 ".",
	                                 ""};

	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_expect_not(in_list(l, CHANNEL_LIST_SOCIAL, no[i]), "'%s'", no[i]);
	/* A bare name matches only itself: GA4 lists "duckduckgo", not its host. */
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "duckduckgo"));
	cr_expect_not(in_list(l, CHANNEL_LIST_SOCIAL, "messenger.co"));
	channel_lists_free(l);
}

Test(channel, a_source_longer_than_any_entry_never_matches_and_costs_no_allocation)
{
	struct channel_lists *l = builtin();
	static char big[8192];

	memset(big, 'm', sizeof(big));
	for (size_t i = 1; i < sizeof(big); i += 2)
		big[i] = '.';
	memcpy(big + sizeof(big) - 12, "facebook.com", 12);
	/* "m.m.m....facebook.com" strips down to facebook.com: prefixes, again and again. */
	cr_expect(channel_lists_contains(l, CHANNEL_LIST_SOCIAL, big, sizeof(big)));
	big[0] = 'x';
	cr_expect_not(channel_lists_contains(l, CHANNEL_LIST_SOCIAL, big, sizeof(big)));
	cr_expect_eq(channel_classify(l, big, sizeof(big), "referral", 8, NULL, 0, NULL, 0),
	             CHANNEL_REFERRAL);
	channel_lists_free(l);
}

/* ------------------------------------------------------------------- loading lists */

static struct channel_lists *empty_lists(void)
{
	struct channel_lists *l = channel_lists_new_empty();

	cr_assert_not_null(l);
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++)
		cr_assert_eq(channel_lists_count(l, (enum channel_list)w), 0);
	return l;
}

static int add(struct channel_lists *l, const char *text, char *err, size_t errlen)
{
	return channel_lists_add(l, CHANNEL_LIST_SEARCH, text, strlen(text), "t.txt", err, errlen);
}

Test(channel, the_built_in_lists_hold_all_of_ga4s_sources)
{
	struct channel_lists *l = builtin();

	/* GA4's 819 sources: 131 search, 590 social, 46 video, 52 shopping. Entries that are
	 * equal once normalised count once (l.facebook.com is facebook.com); the search list
	 * has six clickd additions. */
	cr_expect_gt(channel_lists_count(l, CHANNEL_LIST_SEARCH), 100);
	cr_expect_gt(channel_lists_count(l, CHANNEL_LIST_SOCIAL), 500);
	cr_expect_gt(channel_lists_count(l, CHANNEL_LIST_VIDEO), 30);
	cr_expect_gt(channel_lists_count(l, CHANNEL_LIST_SHOPPING), 40);
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++)
		cr_expect_leq(channel_lists_count(l, (enum channel_list)w),
		              CHANNEL_LIST_MAX_ENTRIES);
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "google"));
	cr_expect(in_list(l, CHANNEL_LIST_SOCIAL, "zooppa.com"));
	cr_expect(in_list(l, CHANNEL_LIST_VIDEO, "youtube"));
	cr_expect(in_list(l, CHANNEL_LIST_SHOPPING, "walmart.com"));
	channel_lists_free(l);
}

Test(channel, the_built_in_lists_are_the_conf_channels_files)
{
	const char *src = getenv("CLICKD_SOURCE_DIR");
	struct channel_lists *a = builtin(), *b;
	char dir[1024], err[256] = "";

	snprintf(dir, sizeof(dir), "%s/conf/channels", src ? src : ".");
	b = channel_lists_new(dir, err, sizeof(err));
	cr_assert_not_null(b, "%s", err);
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++)
		cr_expect_eq(channel_lists_count(a, (enum channel_list)w),
		             channel_lists_count(b, (enum channel_list)w), "%s",
		             channel_list_name((enum channel_list)w));
	channel_lists_free(a);
	channel_lists_free(b);
}

Test(channel, comments_blank_lines_blanks_and_crlf_are_ignored)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";
	size_t before = channel_lists_count(l, CHANNEL_LIST_SEARCH);

	cr_assert_eq(add(l,
	                 "# a comment\n"
	                 "\n"
	                 "   \t  \n"
	                 "  one.test  \n"
	                 "two.test # trailing comment\n"
	                 "three.test\r\n"
	                 "#four.test\n"
	                 "five.test",
	                 err, sizeof(err)),
	             0, "%s", err);
	cr_expect_eq(channel_lists_count(l, CHANNEL_LIST_SEARCH), before + 4);
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "one.test"));
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "two.test"));
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "three.test"));
	cr_expect_not(in_list(l, CHANNEL_LIST_SEARCH, "four.test"));
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "five.test"));
	cr_expect_eq(add(l, "", err, sizeof(err)), 0);
	/* A UTF-8 byte-order mark at the start is not part of the first entry. */
	cr_expect_eq(add(l,
	                 "\xef\xbb\xbf"
	                 "bom.test\n",
	                 err, sizeof(err)),
	             0, "%s", err);
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "bom.test"));
	channel_lists_free(l);
}

Test(channel, entries_are_lowercased_and_counted_once)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";
	size_t before = channel_lists_count(l, CHANNEL_LIST_SEARCH);

	cr_assert_eq(add(l, "Example.TEST\nexample.test\nwww.example.test\nL.Example.Test.\n", err,
	                 sizeof(err)),
	             0, "%s", err);
	cr_expect_eq(channel_lists_count(l, CHANNEL_LIST_SEARCH), before + 1);
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "EXAMPLE.test"));
	channel_lists_free(l);
}

Test(channel, a_space_inside_an_entry_is_refused_with_file_and_line)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";

	cr_expect_eq(add(l, "ok.test\n\nbad entry.test\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:3:") != NULL, "%s", err);
	cr_expect(strstr(err, "space") != NULL, "%s", err);
	cr_expect_eq(add(l, "tab\tinside\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:1:") != NULL, "%s", err);
	channel_lists_free(l);
}

Test(channel, a_control_character_is_refused_with_file_and_line)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";
	static const char nul_text[] = "ok.test\nnul\0here.test\n";

	cr_expect_eq(add(l, "a.test\nb\x07.test\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:2:") != NULL, "%s", err);
	cr_expect(strstr(err, "control") != NULL, "%s", err);
	/* The excerpt in the message shows it as '?', keeping the log line clean. */
	cr_expect(strstr(err, "'b?.test'") != NULL, "%s", err);
	cr_expect_eq(channel_lists_add(l, CHANNEL_LIST_SOCIAL, nul_text, sizeof(nul_text) - 1,
	                               "n.txt", err, sizeof(err)),
	             -EINVAL);
	cr_expect(strstr(err, "n.txt:2:") != NULL, "%s", err);
	cr_expect_eq(add(l, "x.test\nescaped%0a.test\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:2:") != NULL, "%s", err);
	channel_lists_free(l);
}

Test(channel, an_entry_over_253_bytes_is_refused)
{
	struct channel_lists *l = empty_lists();
	char text[1024], err[256] = "";

	memset(text, 'a', 253);
	strcpy(text + 253, "\n");
	cr_expect_eq(add(l, text, err, sizeof(err)), 0, "%s", err);
	memset(text, 'b', 254);
	strcpy(text + 254, "\n");
	cr_expect_eq(add(l, text, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:1:") != NULL && strstr(err, "253") != NULL, "%s", err);
	/* Escapes count decoded: 100 x "%41" is 100 bytes, fine. */
	text[0] = '\0';
	for (int i = 0; i < 100; i++)
		strcat(text, "%41");
	cr_expect_eq(add(l, text, err, sizeof(err)), 0, "%s", err);
	channel_lists_free(l);
}

Test(channel, percent_escapes_write_spaces_and_bad_ones_are_refused)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";

	cr_assert_eq(add(l, "My%20Source\n100%25.test\n", err, sizeof(err)), 0, "%s", err);
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "my source"));
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH, "100%.test"));
	cr_expect_eq(add(l, "ok.test\n50%.test\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:2:") != NULL && strstr(err, "%-escape") != NULL, "%s", err);
	cr_expect_eq(add(l, "nul%00.test\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:1:") != NULL, "%s", err);
	channel_lists_free(l);
}

Test(channel, bytes_that_are_not_utf8_are_refused)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";

	cr_expect_eq(add(l,
	                 "b\xc3\xbc"
	                 "cher.test\n",
	                 err, sizeof(err)),
	             0, "%s", err);
	cr_expect(in_list(l, CHANNEL_LIST_SEARCH,
	                  "B\xc3\xbc"
	                  "CHER.test"));
	cr_expect_eq(add(l, "ok.test\nbad\xff.test\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:2:") != NULL && strstr(err, "UTF-8") != NULL, "%s", err);
	cr_expect_eq(add(l, "bad%C0%AF.test\n", err, sizeof(err)), -EINVAL);
	channel_lists_free(l);
}

Test(channel, an_entry_that_normalises_to_nothing_is_refused)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";

	cr_expect_eq(add(l, ".\n", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "t.txt:1:") != NULL, "%s", err);
	channel_lists_free(l);
}

Test(channel, a_list_holds_at_most_CHANNEL_LIST_MAX_ENTRIES)
{
	struct channel_lists *l = builtin();
	size_t cap = (CHANNEL_LIST_MAX_ENTRIES + 10) * 16;
	char *text = malloc(cap), err[256] = "";
	size_t used = 0, before = channel_lists_count(l, CHANNEL_LIST_VIDEO);
	int room = CHANNEL_LIST_MAX_ENTRIES - (int)before;

	cr_assert_not_null(text);
	for (int i = 0; i < room; i++)
		used += (size_t)snprintf(text + used, cap - used, "v%d.test\n", i);
	cr_assert_eq(
	    channel_lists_add(l, CHANNEL_LIST_VIDEO, text, used, "v.txt", err, sizeof(err)), 0,
	    "%s", err);
	cr_expect_eq(channel_lists_count(l, CHANNEL_LIST_VIDEO), CHANNEL_LIST_MAX_ENTRIES);
	/* A duplicate still fits; one more distinct entry does not. */
	cr_expect_eq(
	    channel_lists_add(l, CHANNEL_LIST_VIDEO, "v0.test\n", 8, "v.txt", err, sizeof(err)), 0,
	    "%s", err);
	cr_expect_eq(channel_lists_add(l, CHANNEL_LIST_VIDEO, "# x\none-more.test\n", 18, "w.txt",
	                               err, sizeof(err)),
	             -E2BIG);
	cr_expect(strstr(err, "w.txt:2:") != NULL && strstr(err, "4096") != NULL, "%s", err);
	cr_expect(in_list(l, CHANNEL_LIST_VIDEO, "youtube"));
	cr_expect(in_list(l, CHANNEL_LIST_VIDEO, "v0.test"));
	channel_lists_free(l);
	free(text);
}

Test(channel, bad_arguments_are_refused)
{
	struct channel_lists *l = empty_lists();
	char err[256] = "";

	cr_expect_eq(channel_lists_add(NULL, CHANNEL_LIST_SEARCH, "a", 1, "x", err, sizeof(err)),
	             -EINVAL);
	cr_expect_eq(channel_lists_add(l, CHANNEL_LIST__COUNT, "a", 1, "x", err, sizeof(err)),
	             -EINVAL);
	cr_expect_eq(channel_lists_add(l, CHANNEL_LIST_SEARCH, NULL, 1, "x", err, sizeof(err)),
	             -EINVAL);
	cr_expect_eq(channel_lists_add(l, CHANNEL_LIST_SEARCH, NULL, 0, NULL, NULL, 0), 0);
	cr_expect_null(channel_list_name(CHANNEL_LIST__COUNT));
	cr_expect_str_eq(channel_list_name(CHANNEL_LIST_SHOPPING), "shopping");
	channel_lists_free(l);
	channel_lists_free(NULL);
}

Test(channel, a_custom_dir_replaces_the_built_in_lists)
{
	char dir[1024], err[256] = "";
	struct channel_lists *l, *empty_dir;

	snprintf(dir, sizeof(dir), "%s/channels_custom", table_data_dir());
	l = channel_lists_new(dir, err, sizeof(err));
	cr_assert_not_null(l, "%s", err);
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++)
		cr_expect_eq(channel_lists_count(l, (enum channel_list)w), 1);
	cr_expect_eq(classify(l, "www.example-social.test", "referral", ""),
	             CHANNEL_ORGANIC_SOCIAL);
	cr_expect_eq(classify(l, "example-search.test", "cpc", ""), CHANNEL_PAID_SEARCH);
	cr_expect_eq(classify(l, "example-video.test", "", ""), CHANNEL_ORGANIC_VIDEO);
	cr_expect_eq(classify(l, "example-shopping.test", "ppc", ""), CHANNEL_PAID_SHOPPING);
	/* GA4's lists are gone: facebook is just a referrer now. */
	cr_expect_eq(classify(l, "facebook", "referral", ""), CHANNEL_REFERRAL);
	cr_expect_eq(classify(l, "google", "cpc", ""), CHANNEL_PAID_OTHER);
	channel_lists_free(l);

	/* "" is the built-in lists, like NULL. */
	empty_dir = channel_lists_new("", err, sizeof(err));
	cr_assert_not_null(empty_dir, "%s", err);
	cr_expect_eq(classify(empty_dir, "facebook", "referral", ""), CHANNEL_ORGANIC_SOCIAL);
	channel_lists_free(empty_dir);
}

Test(channel, a_missing_file_is_an_error_that_names_it)
{
	char dir[1024], err[512] = "";

	snprintf(dir, sizeof(dir), "%s/channels_partial", table_data_dir());
	cr_expect_null(channel_lists_new(dir, err, sizeof(err)));
	cr_expect(strstr(err, "channels_partial/social.txt") != NULL, "%s", err);
	cr_expect(strstr(err, "No such file") != NULL, "%s", err);

	snprintf(dir, sizeof(dir), "%s/no_such_dir", table_data_dir());
	cr_expect_null(channel_lists_new(dir, err, sizeof(err)));
	cr_expect(strstr(err, "no_such_dir/search.txt") != NULL, "%s", err);
}

Test(channel, a_bad_entry_in_a_file_names_the_file_and_line)
{
	char dir[1024], err[512] = "";

	snprintf(dir, sizeof(dir), "%s/channels_bad", table_data_dir());
	cr_expect_null(channel_lists_new(dir, err, sizeof(err)));
	cr_expect(strstr(err, "channels_bad/social.txt:4:") != NULL, "%s", err);
	cr_expect(strstr(err, "'bad entry'") != NULL, "%s", err);
}

/* ------------------------------------------------------------------------- threads */

struct worker {
	const struct channel_lists *l;
	int mismatches;
};

static void *classify_many(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 20000; i++) {
		w->mismatches += classify(w->l, "l.facebook.com", "cpc", "") != CHANNEL_PAID_SOCIAL;
		w->mismatches += classify(w->l, "google", "organic", "") != CHANNEL_ORGANIC_SEARCH;
		w->mismatches += classify(w->l, "example.com", "email", "") != CHANNEL_EMAIL;
	}
	return NULL;
}

Test(channel, many_threads_classify_against_one_set_of_lists)
{
	struct channel_lists *l = builtin();
	struct worker w[4];
	pthread_t t[4];

	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){l, 0};
		cr_assert_eq(pthread_create(&t[i], NULL, classify_many, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(w[i].mismatches, 0);
	}
	channel_lists_free(l);
}
