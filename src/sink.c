/*
 * sink.c - what every sink backend shares (see sink.h); the backends are sink_file.c and
 * sink_kafka.c.
 */
#include "clickd/sink.h"

#include "clickd/metrics.h"

#include <string.h>

const char *sink_stream_name(enum sink_stream stream)
{
	switch (stream) {
	case SINK_EVENTS:
		return "events";
	case SINK_TOUCHPOINTS:
		return "touchpoints";
	case SINK_DEAD_LETTERS:
		return "dead_letters";
	case SINK_ATTRIBUTION:
		return "attribution";
	case SINK_ROLLUPS:
		return "rollups";
	case SINK_STREAM_COUNT:
		break;
	}
	return "unknown";
}

void sink_count_failed(const struct sink *s, enum sink_stream stream, uint64_t n)
{
	metrics_sink_failed(
	    strcmp(s->ops->name, "kafka") == 0 ? METRICS_SINK_KAFKA : METRICS_SINK_FILE, stream, n);
}
