/*
 * fuzz_ga4.c - libFuzzer harness for the GA4 decoders. First byte even: gtag's
 * ga4_decode_collect, the input after it split at its first NUL byte into the query and
 * the body (no NUL: all query, no body); odd: the Measurement Protocol ga4_decode_mp with
 * the query "measurement_id=G-1&api_secret=s" and the rest as the JSON body, against a
 * configured secret when the first byte's bit 1 is set. Invariants: fuzz_protocols.h; at
 * most max_batch events (collect) or 25 (Measurement Protocol) come out of one call.
 */
#include "fuzz_protocols.h"

static const struct config_credential secrets[] = {{"G-1", "s", "shop"}};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_calls calls = {.protocols = {"ga4", "ga4_mp"}};
	struct beacon_request req = fuzz_request(NULL);
	struct protocol_keys keys = {secrets, (data != NULL && size > 0 && (data[0] & 2)) ? 1 : 0};
	char err[160] = "";
	const char *text;
	size_t len;
	int rc;

	if (size < 1)
		return 0;
	text = (const char *)data + 1;
	len = size - 1;
	if ((data[0] & 1) == 0) {
		const char *nul = memchr(text, '\0', len);
		size_t qlen = nul ? (size_t)(nul - text) : len;

		rc = ga4_decode_collect(text, qlen, nul ? nul + 1 : NULL, nul ? len - qlen - 1 : 0,
		                        &keys, &req, &fuzz_options, fuzz_on_emit, fuzz_on_reject,
		                        &calls, err, sizeof(err));
		fuzz_check_protocol_result(rc, err, &calls);
		CHECK(rc != -EACCES);
		CHECK(calls.emits + calls.rejects <= fuzz_options.max_batch);
		return 0;
	}
	rc = ga4_decode_mp("measurement_id=G-1&api_secret=s", 31, text, len, &keys, &req,
	                   &fuzz_options, fuzz_on_emit, fuzz_on_reject, &calls, err, sizeof(err));
	fuzz_check_protocol_result(rc, err, &calls);
	CHECK(rc != -EACCES);
	CHECK(calls.emits + calls.rejects <= GA4_MP_MAX_EVENTS);
	return 0;
}
