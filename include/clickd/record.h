/*
 * record.h - the JSON records clickd writes (CONTRACTS.md "What clickd writes").
 *
 * Serialisers into caller-owned buffers: no allocation, any thread. Times are RFC 3339 UTC
 * with milliseconds; absent values are omitted; strings are escaped so that control
 * characters never reach the output as raw bytes.
 */
#ifndef CLICKD_RECORD_H
#define CLICKD_RECORD_H

#include "clickd/attribution.h"
#include "clickd/event.h"
#include "clickd/session.h"

#include <stddef.h>
#include <stdint.h>

/* Size of a buffer that always holds one event record (every string escaped at worst). */
#define RECORD_EVENT_MAX_BYTES (EVENT_ARENA_BYTES * 6 + 2048)

/* Writes `ev` as one JSON object (no trailing newline), NUL-terminated: cap must leave one
 * byte for the NUL. Keys in CONTRACTS.md order; absent strings, client_at when absent,
 * session_index 0 and revenue without has_revenue (or not finite) are omitted; type,
 * received_at and is_bot are always there. Bytes that are not valid UTF-8 (which decoders
 * should never let through) become U+FFFD. Returns the length without the NUL, or -ENOSPC
 * (buf then holds no promise). A buffer of RECORD_EVENT_MAX_BYTES always suffices. */
int record_event_json(const struct event *ev, char *buf, size_t cap);

/* Writes a dead-letter record, NUL-terminated like record_event_json. payload is cut to at
 * most max_payload of its bytes (at a UTF-8 character boundary: a character crossing the
 * limit is left out whole), each byte that is not valid UTF-8 becomes U+FFFD, and so does
 * each control character but tab, LF and CR (escaped), so the record is always valid JSON
 * and its payload never carries NUL, ESC, DEL or C1 to whoever prints it; it needs at most
 * 6 * max_payload + 256 + the escaped lengths of reason, protocol and peer. reason,
 * protocol and peer may be NULL, and an empty payload is omitted (CONTRACTS.md: absent,
 * never empty). Returns the length without the NUL, or -ENOSPC. */
int record_dead_letter_json(int64_t received_at_ms, const char *reason, const char *protocol,
                            const char *peer, const char *payload, size_t payload_len,
                            size_t max_payload, char *buf, size_t cap);

/* Writes the touchpoint record of a closed session (CONTRACTS.md "Touchpoint"),
 * NUL-terminated like record_event_json: ended_at is the time of the session's last event,
 * duration_ms the span from its first; channel is the session's channel name. Absent
 * strings, revenue without conversions that carried one, and an empty currency are
 * omitted. Returns the length without the NUL, or -ENOSPC. */
int record_touchpoint_json(const struct session *s, enum session_end_reason reason,
                           const char *channel, char *buf, size_t cap);

/* Bytes one touchpoint of an attribution record takes at most (its strings escaped at
 * worst, twelve numbers, keys), and a buffer that always holds one attribution record:
 * the conversion's own fields (bounded like an event record) and
 * ATTRIBUTION_MAX_TOUCHPOINTS of them. */
#define RECORD_ATTRIBUTION_TOUCHPOINT_MAX_BYTES 4096
#define RECORD_ATTRIBUTION_MAX_BYTES                                                               \
	(RECORD_EVENT_MAX_BYTES +                                                                  \
	 ATTRIBUTION_MAX_TOUCHPOINTS * RECORD_ATTRIBUTION_TOUCHPOINT_MAX_BYTES)

/* Writes the attribution record of conversion `ev` (CONTRACTS.md "Attribution"),
 * NUL-terminated like record_event_json: conversion_event_id, app_id, visitor_id, user_id,
 * name and currency from the event (omitted when absent), converted_at from
 * r->converted_at_ms, revenue when the event has one, then `touchpoints`, r's in time
 * order, each {session_id, visitor_id, started_at, channel, source, medium, campaign,
 * click_id_type, affiliate_id (empty strings omitted), credit, revenue}: credit and
 * revenue are objects keyed by model in ATTRIBUTION_MODELS order, revenue only when the
 * event has one. r->count 0 writes an empty array. Returns the length without the NUL, or
 * -ENOSPC; RECORD_ATTRIBUTION_MAX_BYTES always suffices. */
int record_attribution_json(const struct event *ev, const struct attribution_result *r, char *buf,
                            size_t cap);

/* A buffer that always holds one rollup record. */
#define RECORD_ROLLUP_MAX_BYTES 4096

/* Writes a closed rollup row (CONTRACTS.md "Rollup"), NUL-terminated like
 * record_event_json: minute (its start), app_id, channel (its GA4 name, "(other)" for the
 * "(other)" row), source, medium, campaign (empty strings omitted), then the counts, all
 * always there: sessions, page_views, conversions, revenue, attributed_revenue (an object
 * keyed by model, ATTRIBUTION_MODELS order) and late. Returns the length without the NUL,
 * or -ENOSPC; RECORD_ROLLUP_MAX_BYTES always suffices. */
int record_rollup_json(const struct attribution_rollup_row *row, char *buf, size_t cap);

/* Formats ms since the epoch as "2026-11-23T09:31:26.123Z" (24 chars + NUL), UTC; times
 * before 1970 are fine, and times outside years 0000..9999 are clamped to them. */
void record_format_time(int64_t ms, char out[32]);

#endif
