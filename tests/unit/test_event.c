/* Unit tests for src/event.c: the fixed-size record and its arena. */
#include "clickd/event.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

static struct event ev;

Test(event, a_new_event_has_every_field_absent)
{
	size_t len;
	event_init(&ev);
	for (int f = 0; f < EF__COUNT; f++) {
		cr_assert(!event_has(&ev, (enum event_field)f));
		cr_assert_null(event_get(&ev, (enum event_field)f, &len));
		cr_assert_eq(len, 0);
	}
	cr_assert_eq(ev.client_at_ms, EVENT_TIME_ABSENT);
	cr_assert_eq(ev.type, EVENT_PAGE_VIEW);
}

Test(event, set_and_get_round_trip)
{
	size_t len;
	event_init(&ev);
	cr_assert_eq(event_set(&ev, EF_APP_ID, "shop", 4), 0);
	cr_assert_eq(event_set(&ev, EF_URL, "https://x/", 10), 0);
	const char *s = event_get(&ev, EF_APP_ID, &len);
	cr_assert_eq(len, 4);
	cr_assert(memcmp(s, "shop", 4) == 0);
	s = event_get(&ev, EF_URL, &len);
	cr_assert(len == 10 && memcmp(s, "https://x/", 10) == 0);
}

Test(event, an_empty_value_clears_the_field)
{
	event_init(&ev);
	event_set(&ev, EF_NAME, "x", 1);
	event_set(&ev, EF_NAME, "", 0);
	cr_assert(!event_has(&ev, EF_NAME));
}

Test(event, a_full_arena_refuses_and_keeps_the_old_value)
{
	static char big[EVENT_ARENA_BYTES];
	size_t len;
	memset(big, 'a', sizeof(big));
	event_init(&ev);
	cr_assert_eq(event_set(&ev, EF_NAME, "n", 1), 0);
	cr_assert_eq(event_set(&ev, EF_URL, big, sizeof(big) - EVENT_ARENA_RESERVE), -ENOSPC);
	cr_assert(!event_has(&ev, EF_URL));
	cr_assert_eq(event_set(&ev, EF_URL, big, sizeof(big) - EVENT_ARENA_RESERVE - 1), 0);
	cr_assert_eq(event_set(&ev, EF_REFERRER, "r", 1), -ENOSPC);
	event_get(&ev, EF_NAME, &len);
	cr_assert_eq(len, 1);
}

Test(event, a_copied_event_keeps_its_strings)
{
	static struct event copy;
	size_t len;
	event_init(&ev);
	event_set(&ev, EF_VISITOR_ID, "v-1", 3);
	memcpy(&copy, &ev, sizeof(ev));
	memset(&ev, 0, sizeof(ev));
	const char *s = event_get(&copy, EF_VISITOR_ID, &len);
	cr_assert(len == 3 && memcmp(s, "v-1", 3) == 0);
}

Test(event, the_visitor_key_joins_app_and_visitor)
{
	char key[64];
	event_init(&ev);
	event_set(&ev, EF_APP_ID, "shop", 4);
	event_set(&ev, EF_VISITOR_ID, "v1", 2);
	int n = event_visitor_key(&ev, key, sizeof(key));
	cr_assert_eq(n, 7);
	cr_assert(memcmp(key, "shop\x1fv1", 7) == 0);
	cr_assert_eq(event_visitor_key(&ev, key, 3), -ENOSPC);
}

Test(event, field_names_follow_the_contract)
{
	cr_assert_str_eq(event_field_name(EF_EVENT_ID), "event_id");
	cr_assert_str_eq(event_field_name(EF_CLICK_ID_TYPE), "click_id_type");
	cr_assert_str_eq(event_field_name(EF_PROTOCOL), "protocol");
	cr_assert_str_eq(event_type_name(EVENT_CONVERSION), "conversion");
}

Test(event, a_full_arena_still_has_room_for_the_session_and_the_channel)
{
	static char big[EVENT_ARENA_BYTES];

	memset(big, 'u', sizeof(big));
	event_init(&ev);
	cr_assert_eq(event_set(&ev, EF_URL, big, EVENT_ARENA_BYTES - EVENT_ARENA_RESERVE), 0);
	cr_assert_eq(event_set(&ev, EF_REFERRER, "x", 1), -ENOSPC, "decoders stop at the reserve");
	cr_assert_eq(event_set(&ev, EF_SESSION_ID, big, 32), 0);
	cr_assert_eq(event_set(&ev, EF_CHANNEL, "Mobile Push Notifications", 25), 0);
	cr_assert_eq(ev.arena_used, EVENT_ARENA_BYTES - EVENT_ARENA_RESERVE + 57);
}
