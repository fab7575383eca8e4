/*
 * beacon.h - the native beacon protocol: fields (query string or JSON) to struct event.
 *
 * Decoding and enrichment happen here, on the ingest thread, without libuv types and with
 * the receive time passed in (a pure core that unit tests and fuzzers drive directly):
 * field parsing, UTM tags, click IDs and the affiliate ID from the page URL (explicit
 * fields win), referrer host, source/medium by the rules in CONTRACTS.md, the visitor ID
 * (field, cookie or a freshly minted one), IP anonymisation, GPC/DNT and the bot check.
 */
#ifndef CLICKD_BEACON_H
#define CLICKD_BEACON_H

#include "clickd/event.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The page-URL query parameters read as the affiliate ID by default
 * (attribution.affiliate_params), in priority order: the generic names sites and affiliate
 * platforms (HasOffers/TUNE's aff_id) put the affiliate's own ID in, then the click
 * references networks append to the landing URL (Awin awc, Impact irclickid, CJ cjevent,
 * ShareASale sscid, Rakuten ranSiteID, Tradedoubler tduid, Partnerize clickref, Admitad
 * admitad_uid, Refersion rfsn). conf/clickd.conf documents each one.
 */
#define BEACON_DEFAULT_AFFILIATE_PARAMS                                                            \
	"aff,affiliate,affiliate_id,aff_id,affid,awc,irclickid,cjevent,sscid,ranSiteID,tduid,"     \
	"clickref,admitad_uid,rfsn"

/* Read-only options, from the config snapshot. */
struct beacon_options {
	bool anonymize_ip;     /* privacy.anonymize_ip: IPv4 /24, IPv6 /48 */
	bool honor_gpc;        /* privacy.honor_gpc: Sec-GPC/DNT drop the IP and the cookie */
	size_t max_fields;     /* limits.max_fields: fields per beacon */
	size_t max_batch;      /* limits.max_batch: beacons per JSON array */
	size_t max_json_depth; /* limits.max_json_depth */
	/* limits.max_string_bytes: bytes of one field name or value, as decoded (and
	 * repaired); a longer one refuses the beacon (-ENOSPC). The User-Agent header is cut
	 * to it instead. 0: 4096. */
	size_t max_string_bytes;
	bool replace_invalid_utf8; /* limits.invalid_utf8=replace: U+FFFD; else -EILSEQ */
	bool reject_controls;      /* limits.control_chars=reject: -EINVAL; else U+FFFD */
	/* attribution.affiliate_params: page-URL query parameters (exact, case-sensitive
	 * names) whose value is the affiliate ID, in priority order; borrowed. 0: none. */
	const char *const *affiliate_params;
	size_t affiliate_param_count;
};

/* What the ingest layer knows about the request the beacon came in. Borrowed. */
struct beacon_request {
	int64_t received_at_ms;
	const char *client_ip; /* textual IPv4/IPv6, already resolved through trusted proxies;
	                          NULL when unknown (UDP without peer, say) */
	const char *user_agent;
	size_t user_agent_len;
	const char *cookie_visitor_id; /* value of our visitor cookie; NULL when absent */
	size_t cookie_visitor_id_len;
	const char *minted_visitor_id; /* a fresh ID to use (and set as a cookie) when the
	                                  beacon has no vid and no cookie; NULL: never mint */
	size_t minted_visitor_id_len;
	bool gpc;             /* the request carried Sec-GPC: 1 or DNT: 1 */
	bool anonymous;       /* the tracker asks for anonymity (Snowplow's SP-Anonymous):
	                         no IP, no cookie visitor, nothing minted */
	const char *protocol; /* "native", "snowplow", ... (EVENT_PROTOCOLS) */
};

/*
 * Text (text.h): every field name and value, as decoded, must be valid UTF-8 without
 * control characters (C0 with NUL, tab and newline; DEL; C1). What is not is refused or
 * replaced with U+FFFD as the options say (replace_invalid_utf8, reject_controls), and
 * ev->text_repaired tells that something was replaced. The User-Agent header is not the
 * beacon's data: it is always repaired (and cut to max_string_bytes), never a reason to
 * refuse the beacon.
 *
 * Decodes one beacon given as a query string (the part after '?', or one line of a
 * text/plain or form body) into *ev. Returns 0, or a negative code with a one-line reason
 * in err: -EINVAL malformed (bad escape, empty field name, unknown e=, bad ts/rev, cur not
 * three letters, repeated field with another value, a control character refused),
 * -EILSEQ not UTF-8 (refused), -E2BIG too many fields, -ENOSPC strings too long (a field
 * over max_string_bytes, too long for the event, or the beacon for the decoder).
 */
int beacon_decode_query(const char *q, size_t len, const struct beacon_request *req,
                        const struct beacon_options *opt, struct event *ev, char *err,
                        size_t errlen);

/* Called for each beacon of a JSON body that decoded well. The event is borrowed: copy
 * what you keep. A non-zero return stops decoding and is returned. */
typedef int (*beacon_emit_fn)(void *ud, struct event *ev);
/* Called for each element of a JSON body that did not decode; code is the decoder's
 * negative code for it (as beacon_decode_query's: -EINVAL, -EILSEQ, -E2BIG, -ENOSPC),
 * payload that element's raw text (borrowed), reason a short string such as
 * "field ts: not a number". */
typedef void (*beacon_reject_fn)(void *ud, int code, const char *payload, size_t payload_len,
                                 const char *reason);

/* Decodes a JSON body: one object, or an array of objects. Values may be strings, numbers
 * (ts, rev) or null (absent); booleans and nested objects/arrays inside a beacon are
 * rejected for that beacon, and so are the field rules of the query path (empty field
 * name, repeats, ...) and \u escapes that do not pair their UTF-16 surrogates (-EILSEQ).
 * For an array, each good beacon goes to emit, each bad element to reject, and the call
 * returns 0 when the document itself was well-formed (whatever its elements). A lone
 * object is one beacon, like a query beacon: emitted, or its failure is the call's code
 * with the reason in err (reject is not called). Otherwise -EINVAL with err filled when
 * the body is not JSON (or not an object/array of objects, or deeper than max_json_depth),
 * -EMSGSIZE when the array holds more than max_batch elements (a code of its own: a lone
 * object with too many fields is -E2BIG, a bad beacon, not an oversized body); nothing is
 * emitted then. */
int beacon_decode_json(const char *body, size_t len, const struct beacon_request *req,
                       const struct beacon_options *opt, beacon_emit_fn emit,
                       beacon_reject_fn reject, void *ud, char *err, size_t errlen);

/* The enrichment every protocol shares, for a decoder (src/protocols/) that has filled
 * *ev (event_init, received_at_ms, its own fields): when visitor_id is absent, the
 * request's cookie visitor or a minted one (not under GPC/anonymous); UTM tags, click ID
 * and affiliate ID from the page URL (fields already set win); referrer_host;
 * source/medium by CONTRACTS.md's rules; the IP; the user agent and is_bot;
 * req->protocol. Returns 0, or -ENOSPC with err filled when the arena is full. */
int beacon_finish(struct event *ev, const struct beacon_request *req,
                  const struct beacon_options *opt, char *err, size_t errlen);

/* Writes the anonymised form of a textual IP into out (IPv4: last octet 0; IPv6: all
 * but the first 48 bits zero). Returns its length, or -EINVAL when ip is not an IP. */
int beacon_anonymize_ip(const char *ip, char *out, size_t cap);

#endif
