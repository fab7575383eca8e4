/*
 * fuzz_segment.c - libFuzzer harness for segment_decode (Segment and RudderStack). The
 * first byte picks the route (its value modulo 7: track, page, identify, group, alias,
 * screen, batch), its bit 3 the RudderStack beacon route, bit 4 configured write keys
 * (segment "wk-seg", RudderStack "wk-rs"); the second byte's low bit sends
 * "Authorization: Basic d2stcnM6" (wk-rs:). The rest is the body. Invariants:
 * fuzz_protocols.h; without keys configured the call never answers -EACCES; a single
 * message never goes to reject (its failure is the call's).
 */
#include "fuzz_protocols.h"

static const struct config_credential segment_keys[] = {{"", "wk-seg", "shop"}};
static const struct config_credential rudderstack_keys[] = {{"", "wk-rs", "shop-rs"}};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_calls calls = {.protocols = {"segment", "rudderstack"}};
	struct beacon_request req = fuzz_request(NULL);
	struct segment_request sreq;
	bool keys;
	char err[160] = "";
	int rc;

	if (size < 2)
		return 0;
	keys = data[0] & 16;
	memset(&sreq, 0, sizeof(sreq));
	sreq.route = (enum segment_route)(data[0] % 7);
	sreq.rudderstack_route = data[0] & 8;
	if (sreq.rudderstack_route)
		sreq.route = SEGMENT_BATCH;
	if (keys) {
		sreq.segment_keys = (struct protocol_keys){segment_keys, 1};
		sreq.rudderstack_keys = (struct protocol_keys){rudderstack_keys, 1};
	}
	if (data[1] & 1) {
		sreq.authorization = "Basic d2stcnM6";
		sreq.authorization_len = 14;
	}
	rc = segment_decode((const char *)data + 2, size - 2, &sreq, &req, &fuzz_options,
	                    fuzz_on_emit, fuzz_on_reject, &calls, err, sizeof(err));
	fuzz_check_protocol_result(rc, err, &calls);
	CHECK(keys || rc != -EACCES);
	CHECK(sreq.route == SEGMENT_BATCH || calls.rejects == 0);
	CHECK(calls.emits + calls.rejects <= fuzz_options.max_batch);
	return 0;
}
