/*
 * event.c - the fixed-size event record and its inline string arena (see event.h).
 * Pure functions, no allocation; called from any thread on the event it owns.
 */
#include "clickd/event.h"

#include <errno.h>
#include <string.h>
/* Inlined: hashed per event, on ingest and on the shard. */
#define XXH_INLINE_ALL
#include <xxhash.h>

static const char *const field_names[EF__COUNT] = {
#define EVENT_FIELD_NAME(id, json) [EF_##id] = json,
    EVENT_STRING_FIELDS(EVENT_FIELD_NAME)
#undef EVENT_FIELD_NAME
};

void event_init(struct event *ev)
{
	/* Only the header is cleared: the arena bytes are never read past arena_used. */
	memset(ev, 0, offsetof(struct event, arena));
	ev->client_at_ms = EVENT_TIME_ABSENT;
}

int event_set(struct event *ev, enum event_field f, const char *s, size_t len)
{
	if (len == 0) {
		ev->str[f].off = 0;
		ev->str[f].len = 0;
		return 0;
	}
	size_t limit = f == EF_SESSION_ID || f == EF_CHANNEL
	                   ? EVENT_ARENA_BYTES
	                   : EVENT_ARENA_BYTES - EVENT_ARENA_RESERVE;

	if (ev->arena_used > limit || len > limit - ev->arena_used)
		return -ENOSPC;
	memcpy(ev->arena + ev->arena_used, s, len);
	ev->str[f].off = ev->arena_used;
	ev->str[f].len = (uint16_t)len;
	ev->arena_used = (uint16_t)(ev->arena_used + len);
	return 0;
}

const char *event_get(const struct event *ev, enum event_field f, size_t *len)
{
	*len = ev->str[f].len;
	if (*len == 0)
		return NULL;
	return ev->arena + ev->str[f].off;
}

const char *event_field_name(enum event_field f)
{
	return (unsigned)f < EF__COUNT ? field_names[f] : "?";
}

static const char *const protocol_names[EVENT_PROTOCOL__COUNT] = {
#define EVENT_PROTOCOL_NAME(id, name) [EVENT_PROTOCOL_##id] = name,
    EVENT_PROTOCOLS(EVENT_PROTOCOL_NAME)
#undef EVENT_PROTOCOL_NAME
};

const char *event_protocol_name(enum event_protocol p)
{
	return (unsigned)p < EVENT_PROTOCOL__COUNT ? protocol_names[p] : "?";
}

int event_protocol_of(const char *name)
{
	for (int p = 0; name != NULL && p < EVENT_PROTOCOL__COUNT; p++)
		if (strcmp(name, protocol_names[p]) == 0)
			return p;
	return -1;
}

const char *event_type_name(enum event_type t)
{
	switch (t) {
	case EVENT_PAGE_VIEW:
		return "page_view";
	case EVENT_CUSTOM:
		return "custom";
	case EVENT_CONVERSION:
		return "conversion";
	}
	return "page_view";
}

int event_visitor_key(const struct event *ev, char *buf, size_t cap)
{
	size_t app_len, vis_len;
	const char *app = event_get(ev, EF_APP_ID, &app_len);
	const char *vis = event_get(ev, EF_VISITOR_ID, &vis_len);
	size_t need = app_len + 1 + vis_len;

	if (need > cap)
		return -ENOSPC;
	if (app_len)
		memcpy(buf, app, app_len);
	buf[app_len] = '\x1f';
	if (vis_len)
		memcpy(buf + app_len + 1, vis, vis_len);
	return (int)need;
}

uint64_t event_visitor_hash(const struct event *ev)
{
	/* One shot from a stack copy for the usual short keys: XXH3's streaming state costs
	 * more than hashing a few dozen bytes. */
	char buf[512];
	int len = event_visitor_key(ev, buf, sizeof(buf));
	XXH3_state_t st;
	size_t app_len, vid_len;
	const char *app, *vid;

	if (len >= 0)
		return XXH3_64bits(buf, (size_t)len);
	app = event_get(ev, EF_APP_ID, &app_len);
	vid = event_get(ev, EF_VISITOR_ID, &vid_len);
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, app ? app : "", app_len);
	XXH3_64bits_update(&st, "\x1f", 1);
	XXH3_64bits_update(&st, vid ? vid : "", vid_len);
	return XXH3_64bits_digest(&st);
}
