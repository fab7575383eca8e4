/*
 * fuzz_snowplow.c - libFuzzer harness for the Snowplow tracker protocol decoders:
 * snowplow_decode_query (GET /i) when the first byte is even, snowplow_decode_post (POST
 * tp2) when it is odd, the rest of the input being the query or the body; the second
 * byte's low bit asks for SP-Anonymous. Invariants: fuzz_protocols.h (and for the query
 * path, a failure comes with a reason and no event).
 */
#include "fuzz_protocols.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct event ev;
	struct fuzz_calls calls = {.protocols = {"snowplow", NULL}};
	struct beacon_request req = fuzz_request("snowplow");
	char err[160] = "";
	const char *text;
	size_t len;
	int rc;

	if (size < 2)
		return 0;
	req.anonymous = data[1] & 1;
	text = (const char *)data + 2;
	len = size - 2;
	if ((data[0] & 1) == 0) {
		rc = snowplow_decode_query(text, len, &req, &fuzz_options, &ev, err, sizeof(err));
		if (rc == 0)
			fuzz_on_emit(&calls, &ev);
		else
			fuzz_check_protocol_result(rc, err, &calls);
		CHECK(rc != -EACCES); /* -E2BIG: more parameters than one event takes */
		return 0;
	}
	rc = snowplow_decode_post(text, len, &req, &fuzz_options, fuzz_on_emit, fuzz_on_reject,
	                          &calls, err, sizeof(err));
	fuzz_check_protocol_result(rc, err, &calls);
	CHECK(rc != -EACCES);
	CHECK(calls.emits + calls.rejects <= fuzz_options.max_batch);
	return 0;
}
