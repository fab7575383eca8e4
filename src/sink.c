/*
 * sink.c - what every sink backend shares (see sink.h); the backends are sink_file.c and
 * sink_kafka.c.
 */
#include "clickd/sink.h"

const char *sink_stream_name(enum sink_stream stream)
{
	switch (stream) {
	case SINK_EVENTS:
		return "events";
	case SINK_TOUCHPOINTS:
		return "touchpoints";
	case SINK_DEAD_LETTERS:
		return "dead_letters";
	case SINK_STREAM_COUNT:
		break;
	}
	return "unknown";
}
