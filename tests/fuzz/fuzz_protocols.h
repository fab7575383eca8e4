/*
 * fuzz_protocols.h - what the tracker protocol harnesses (fuzz_snowplow.c, fuzz_segment.c,
 * fuzz_ga4.c) share, on top of fuzz_common.h (header-only):
 *
 *  - every emitted event keeps event.h's invariant and its record is JSON
 *    (fuzz_check_event), its JSON fields (properties, contexts) are JSON objects or arrays
 *    on their own, and its protocol is one the decoder may set;
 *  - every reject carries a documented code, a one-line reason and a payload, and its
 *    dead-letter record is JSON;
 *  - a call answers 0 or a documented code (-EINVAL, -EILSEQ, -E2BIG, -ENOSPC, -EACCES)
 *    with a one-line reason, and then has emitted nothing.
 */
#ifndef CLICKD_FUZZ_PROTOCOLS_H
#define CLICKD_FUZZ_PROTOCOLS_H

#include "clickd/protocols.h"

#include "fuzz_common.h"

#define FUZZ_DEAD_LETTER_PAYLOAD 512

struct fuzz_calls {
	size_t emits, rejects;
	const char *protocols[2]; /* the protocols an event may carry */
};

static inline void fuzz_check_json_field(const struct event *ev, enum event_field f)
{
	static char text[EVENT_ARENA_BYTES + 1];
	char err[128];
	size_t len;
	const char *s = event_get(ev, f, &len);
	yajl_val v;

	if (s == NULL)
		return;
	memcpy(text, s, len);
	text[len] = '\0';
	v = yajl_tree_parse(text, err, sizeof(err));
	if (v == NULL)
		fprintf(stderr, "field %s is not JSON (%s): %s\n", event_field_name(f), err, text);
	CHECK(v != NULL && (YAJL_IS_OBJECT(v) || YAJL_IS_ARRAY(v)));
	yajl_tree_free(v);
}

static inline int fuzz_on_emit(void *ud, struct event *ev)
{
	static char record[RECORD_EVENT_MAX_BYTES];
	struct fuzz_calls *c = ud;
	size_t len;
	const char *p = event_get(ev, EF_PROTOCOL, &len);
	bool known = false;

	c->emits++;
	fuzz_check_event(ev, record, sizeof(record));
	fuzz_check_json_field(ev, EF_PROPERTIES);
	fuzz_check_json_field(ev, EF_CONTEXTS);
	for (int i = 0; i < 2 && p != NULL; i++)
		known |= c->protocols[i] != NULL && strlen(c->protocols[i]) == len &&
		         memcmp(c->protocols[i], p, len) == 0;
	CHECK(known);
	return 0;
}

static inline void fuzz_dead_letter(const char *reason, const char *payload, size_t len)
{
	static char json[6 * FUZZ_DEAD_LETTER_PAYLOAD + 1024];
	int n = record_dead_letter_json(FUZZ_RECEIVED_AT_MS, reason, "fuzz", "192.0.2.1", payload,
	                                len, FUZZ_DEAD_LETTER_PAYLOAD, json, sizeof(json));

	CHECK(n > 0 && (size_t)n == strlen(json));
	fuzz_check_json(json);
}

static inline bool fuzz_protocol_code(int code)
{
	return code == -EINVAL || code == -EILSEQ || code == -E2BIG || code == -ENOSPC ||
	       code == -EACCES;
}

static inline void fuzz_on_reject(void *ud, int code, const char *payload, size_t len,
                                  const char *reason)
{
	struct fuzz_calls *c = ud;

	c->rejects++;
	CHECK(fuzz_protocol_code(code));
	CHECK(payload != NULL && len > 0);
	fuzz_check_reason(reason);
	fuzz_dead_letter(reason, payload, len);
}

/* The call's result: 0, or a documented code with its reason and nothing emitted. */
static inline void fuzz_check_protocol_result(int rc, const char *err, const struct fuzz_calls *c)
{
	CHECK(rc == 0 || fuzz_protocol_code(rc));
	if (rc != 0) {
		fuzz_check_reason(err);
		CHECK(c->emits == 0);
		fuzz_dead_letter(err, "x", 1);
	}
}

/* A request as the harnesses' decoders get it, with small limits the fuzzer can reach. */
static inline struct beacon_request fuzz_request(const char *protocol)
{
	struct beacon_request req = {
	    .received_at_ms = FUZZ_RECEIVED_AT_MS,
	    .client_ip = "198.51.100.7",
	    .user_agent = "Mozilla/5.0 (fuzz)",
	    .user_agent_len = 18,
	    .cookie_visitor_id = "cookie-vid",
	    .cookie_visitor_id_len = 10,
	    .protocol = protocol,
	};
	return req;
}

static const struct beacon_options fuzz_options = {
    .anonymize_ip = true, .max_fields = 16, .max_batch = 4, .max_json_depth = 4};

#endif
