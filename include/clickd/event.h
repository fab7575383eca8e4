/*
 * event.h - the one in-memory shape of a tracking event.
 *
 * Every protocol decoder fills a `struct event`; every later stage (routing, dedup,
 * sessions, sinks) reads it. The struct is a fixed-size, self-contained record: all its
 * strings live in its own inline arena and are addressed by offset, so an event can be
 * copied with memcpy (into a ring slot, a pool) without fixing up pointers, and it never
 * needs a malloc. Whoever holds the struct owns all of it.
 *
 * Strings are valid UTF-8 without NUL bytes; a field with len 0 is absent (CONTRACTS.md:
 * absent values are omitted, never written as empty strings). A decoded event's strings
 * hold no control character either (C0, DEL, C1: text.h); the decoders see to it.
 */
#ifndef CLICKD_EVENT_H
#define CLICKD_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of string data one event can carry. Large enough for a long page URL, a long
 * referrer and a user agent together; http.max_url_bytes is bounded by it. */
#define EVENT_ARENA_BYTES 8192

/* The last bytes of the arena are kept for what the shard adds to a decoded event:
 * session_id (32) and channel (at most 25, "Mobile Push Notifications"). Decoders can fill
 * only EVENT_ARENA_BYTES - EVENT_ARENA_RESERVE; those two fields may use the rest. */
#define EVENT_ARENA_RESERVE 64

enum event_type {
	EVENT_PAGE_VIEW = 0, /* e=pv (default) */
	EVENT_CUSTOM,        /* e=ev */
	EVENT_CONVERSION,    /* e=cv */
};

/* The string fields, in the order CONTRACTS.md lists the event record. */
#define EVENT_STRING_FIELDS(X)                                                                     \
	X(EVENT_ID, "event_id")                                                                    \
	X(APP_ID, "app_id")                                                                        \
	X(NAME, "name")                                                                            \
	X(VISITOR_ID, "visitor_id")                                                                \
	X(USER_ID, "user_id")                                                                      \
	X(SESSION_ID, "session_id")                                                                \
	X(URL, "url")                                                                              \
	X(REFERRER, "referrer")                                                                    \
	X(REFERRER_HOST, "referrer_host")                                                          \
	X(SOURCE, "source")                                                                        \
	X(MEDIUM, "medium")                                                                        \
	X(CAMPAIGN, "campaign")                                                                    \
	X(TERM, "term")                                                                            \
	X(CONTENT, "content")                                                                      \
	X(UTM_ID, "utm_id")                                                                        \
	X(CLICK_ID_TYPE, "click_id_type")                                                          \
	X(CLICK_ID, "click_id")                                                                    \
	X(AFFILIATE_ID, "affiliate_id")                                                            \
	X(CHANNEL, "channel")                                                                      \
	X(CURRENCY, "currency")                                                                    \
	X(IP, "ip")                                                                                \
	X(USER_AGENT, "user_agent")                                                                \
	X(PROTOCOL, "protocol")                                                                    \
	X(CLIENT_SESSION_ID, "client_session_id")                                                  \
	X(PROPERTIES, "properties")                                                                \
	X(CONTEXTS, "contexts")

enum event_field {
#define EVENT_FIELD_ENUM(id, json) EF_##id,
	EVENT_STRING_FIELDS(EVENT_FIELD_ENUM)
#undef EVENT_FIELD_ENUM
	    EF__COUNT
};

/* A string inside the event's arena; len == 0 means absent. */
struct event_str {
	uint16_t off;
	uint16_t len;
};

struct event {
	int64_t received_at_ms; /* server receive time, ms since the epoch */
	int64_t client_at_ms;   /* client time (ts); EVENT_TIME_ABSENT when not given */
	enum event_type type;
	bool has_revenue;
	bool is_bot;
	bool visitor_from_cookie; /* visitor_id came from (or was minted for) our cookie */
	bool set_visitor_cookie;  /* ingest must answer with Set-Cookie for visitor_id */
	bool text_repaired; /* decoding replaced invalid UTF-8 or control characters with U+FFFD
	                       (text.h); ingest counts it, records do not carry it */
	double revenue;
	uint32_t session_index; /* 0 = not yet assigned (the shard sets it) */
	/* CLOCK_MONOTONIC microseconds when ingest handed the event to the pipeline: the
	 * shard merges its rings in this order (not written to records). */
	int64_t order_us;
	/* kafka.ack_mode=kafka: the token of the HTTP request waiting for this event to be
	 * durable (ack.h), set by the pipeline; 0 (ACK_TOKEN_NONE): nobody waits. Not written
	 * to records. */
	uint64_t ack_token;
	uint16_t arena_used;
	struct event_str str[EF__COUNT];
	char arena[EVENT_ARENA_BYTES];
};

#define EVENT_TIME_ABSENT INT64_MIN

/* The fields that hold JSON text (an object or array) instead of a string: records write
 * them as they are, so a decoder stores only what protocol_json_write produced (compact,
 * valid JSON, valid UTF-8). A record writes any other field as a JSON string. */
static inline bool event_field_is_json(int f)
{
	return f == EF_PROPERTIES || f == EF_CONTEXTS;
}

/* The protocols an event can arrive in (its `protocol` field, and the label of the
 * clickd_protocol_* metrics). */
#define EVENT_PROTOCOLS(X)                                                                         \
	X(NATIVE, "native")                                                                        \
	X(SNOWPLOW, "snowplow")                                                                    \
	X(SEGMENT, "segment")                                                                      \
	X(RUDDERSTACK, "rudderstack")                                                              \
	X(GA4, "ga4")                                                                              \
	X(GA4_MP, "ga4_mp")

enum event_protocol {
#define EVENT_PROTOCOL_ENUM(id, name) EVENT_PROTOCOL_##id,
	EVENT_PROTOCOLS(EVENT_PROTOCOL_ENUM)
#undef EVENT_PROTOCOL_ENUM
	    EVENT_PROTOCOL__COUNT
};

/* "native", "snowplow", ...; "?" out of range. */
const char *event_protocol_name(enum event_protocol p);
/* The protocol named `name` (NUL-terminated), or -1. */
int event_protocol_of(const char *name);

/* Resets `ev` to an empty event (all fields absent, arena empty). */
void event_init(struct event *ev);

/* Copies `len` bytes into the arena as field `f` (replacing any earlier value; the old
 * bytes are not reclaimed). Returns 0, or -ENOSPC when the arena is full (field left
 * unchanged): for every field but EF_SESSION_ID and EF_CHANNEL, full means
 * EVENT_ARENA_RESERVE bytes from the end. len == 0 clears the field. */
int event_set(struct event *ev, enum event_field f, const char *s, size_t len);

/* Borrowed view of field `f`: pointer into ev->arena (not NUL-terminated) and its length
 * in *len; NULL with *len = 0 when absent. */
const char *event_get(const struct event *ev, enum event_field f, size_t *len);

static inline bool event_has(const struct event *ev, enum event_field f)
{
	return ev->str[f].len != 0;
}

/* JSON key of field `f` ("event_id", ...). */
const char *event_field_name(enum event_field f);

/* "pv" / "ev" / "cv" style names used in records: "page_view", "custom", "conversion". */
const char *event_type_name(enum event_type t);

/* The visitor key "app_id\x1fvisitor_id" (app_id may be empty) written into buf; returns
 * its length, or -ENOSPC. Kafka messages are keyed by it. */
int event_visitor_key(const struct event *ev, char *buf, size_t cap);

/* XXH3-64 of the visitor key: routes an event to its shard and finds its visitor there. */
uint64_t event_visitor_hash(const struct event *ev);

#endif
