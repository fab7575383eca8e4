/*
 * rudderstack.c - RudderStack's HTTP API (@rudderstack/analytics-js v3), which is
 * Segment-shaped: the same routes and message layout (segment.c decodes both), plus
 * POST /beacon/v1/batch?writeKey=... with a text/plain JSON body (sendBeacon).
 *
 * What differs is this file: the mapping table (RudderStack puts its session ID in
 * context.sessionId, which becomes the event's client_session_id; "$direct" as a referrer
 * means none, which segment.c skips for every table) and how a message shows it is
 * RudderStack's when no write key says so.
 */
#include "clickd/protocols.h"

#include <string.h>

/* The mapping table of RudderStack messages: Segment's, plus the session ID. */
const struct segment_mapping rudderstack__table[] = {
    {"messageId", EF_EVENT_ID},
    {"anonymousId", EF_VISITOR_ID},
    {"userId", EF_VISITOR_ID},
    {"userId", EF_USER_ID},
    {"context.sessionId", EF_CLIENT_SESSION_ID},
    {"context.page.url", EF_URL},
    {"properties.url", EF_URL},
    {"context.page.referrer", EF_REFERRER},
    {"properties.referrer", EF_REFERRER},
    {"context.campaign.source", EF_SOURCE},
    {"context.campaign.medium", EF_MEDIUM},
    {"context.campaign.name", EF_CAMPAIGN},
    {"context.campaign.term", EF_TERM},
    {"context.campaign.content", EF_CONTENT},
    {"context.campaign.id", EF_UTM_ID},
    {"context.campaign.utm_id", EF_UTM_ID},
};
const size_t rudderstack__table_len = sizeof(rudderstack__table) / sizeof(rudderstack__table[0]);

bool rudderstack__message_is_ours(yajl_val message)
{
	yajl_val library, name;
	const char *text;
	size_t len = 0;

	if (protocol_json_get(message, "rudderId") != NULL)
		return true;
	library = protocol_json_get(protocol_json_get(message, "context"), "library");
	name = protocol_json_get(library, "name");
	text = protocol_json_text(name, &len);
	return text != NULL && len >= 6 && strncmp(text, "Rudder", 6) == 0;
}
