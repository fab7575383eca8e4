/*
 * config.c - the configuration table and everything derived from it.
 *
 * Each key is declared once in `options[]` (Redis / librdkafka habit): type, default,
 * bounds, reloadable, help. Loading applies defaults, then the INI file through libinih,
 * then --set overrides, validating each value against its entry, then derives the parsed
 * lists (CORS origins, trusted proxies). Called from main before any thread starts.
 */
#include "clickd/config.h"

#include "clickd/beacon.h"
#include "clickd/http.h"
#include "clickd/ingest.h"
#include "clickd/redirect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum option_type { OPT_STRING, OPT_INT, OPT_BOOL, OPT_ENUM, OPT_ADDRESS };

struct option {
	const char *key;
	enum option_type type;
	size_t offset;
	size_t size; /* for strings: buffer size */
	const char *default_value;
	int64_t min, max;    /* OPT_INT bounds */
	const char *choices; /* OPT_ENUM: "a|b|c" */
	bool reloadable;     /* can change with SIGHUP (reload lands with the ops issue) */
	const char *help;
};

#define STR(field)  OPT_STRING, offsetof(struct config, field), sizeof(((struct config *)0)->field)
#define ADDR(field) OPT_ADDRESS, offsetof(struct config, field), sizeof(((struct config *)0)->field)
#define INT(field)  OPT_INT, offsetof(struct config, field), sizeof(int64_t)
#define BOOL(field) OPT_BOOL, offsetof(struct config, field), sizeof(bool)
#define ENUM(field) OPT_ENUM, offsetof(struct config, field), sizeof(((struct config *)0)->field)

static const struct option options[] = {
    {"log.level", ENUM(log_level), "info", 0, 0, "error|warn|info|debug", true,
     "Least severe level written to stderr."},

    {"http.listen", ADDR(http_listen), "127.0.0.1:8080", 0, 0, NULL, false,
     "HTTP collect listener, host:port ([v6]:port for IPv6); empty disables HTTP."},
    {"http.max_connections", INT(http_max_connections), "10000", 1, 1000000, NULL, true,
     "Open HTTP connections at most; past it a new connection is closed at once and "
     "counted (clickd_http_connections_refused_total)."},
    {"http.max_header_bytes", INT(http_max_header_bytes), "8192", 1024, 1048576, NULL, true,
     "Bytes of request line plus headers at most; over it: 431."},
    {"http.max_headers", INT(http_max_headers), "100", 8, 10000, NULL, true,
     "Header fields per request at most (chunked trailers included); over it: 431."},
    {"http.max_url_bytes", INT(http_max_url_bytes), "4096", 256, 8192, NULL, true,
     "Bytes of request target (path and query) at most; over it: 414. At most 8192, "
     "which one event can hold."},
    {"http.max_body_bytes", INT(http_max_body_bytes), "1048576", 1024, 67108864, NULL, true,
     "Bytes of request body at most; over it: 413."},
    {"http.idle_timeout_ms", INT(http_idle_timeout_ms), "30000", 100, 3600000, NULL, true,
     "A connection with no complete request for this long is closed (408 when a "
     "request was half-sent, silently when idle between requests)."},
    {"http.retry_after_s", INT(http_retry_after_s), "1", 1, 3600, NULL, true,
     "Retry-After seconds sent with 503 when a sink is full."},
    {"http.cors_origins", STR(http_cors_origins), "*", 0, 0, NULL, true,
     "Comma-separated origins allowed for CORS (scheme://host[:port]); * allows any. The "
     "allowed origin is echoed, never a literal *. Empty: no CORS headers."},
    {"http.trusted_proxies", STR(http_trusted_proxies), "", 0, 0, NULL, true,
     "Comma-separated CIDRs (10.0.0.0/8, ::1/128) whose client IP header "
     "(http.real_ip_header) is believed; with X-Forwarded-For the client IP is the "
     "right-most address not in this list."},
    {"http.cookie_name", STR(http_cookie_name), "clickd_vid", 0, 0, NULL, true,
     "Name of the first-party visitor cookie set when a beacon has no vid."},
    {"http.cookie_domain", STR(http_cookie_domain), "", 0, 0, NULL, true,
     "Domain attribute of the visitor cookie; empty: host-only cookie."},
    {"http.cookie_secure", BOOL(http_cookie_secure), "true", 0, 0, NULL, true,
     "Mark the visitor cookie Secure; SameSite=None (true, for HTTPS behind a load "
     "balancer: browsers send it cross-site) or SameSite=Lax (false, plain HTTP)."},
    {"http.cookie_max_age_s", INT(http_cookie_max_age_s), "34128000", 0, 63072000, NULL, true,
     "Max-Age of the visitor cookie (default 395 days); 0: a session cookie."},
    {"http.gzip_max_ratio", INT(http_gzip_max_ratio), "100", 1, 10000, NULL, true,
     "A POST body sent with Content-Encoding: gzip is decompressed before it is decoded, "
     "up to http.max_body_bytes and up to this many times its compressed size, whichever "
     "is less; past either (a gzip bomb): 413 and a dead letter. A body that is not gzip: "
     "400. Content-Encoding other than gzip, x-gzip or identity (br, deflate, compress): "
     "415."},
    {"http.path_aliases", STR(http_path_aliases), "", 0, 0, NULL, true,
     "Comma-separated alias:route pairs serving a collect route on a path of the site's "
     "own, which ad blockers do not know, e.g. /t/p:/collect, /x/i:/i, /a/v1:/v1. An "
     "alias to a route (/collect, /pixel.gif, /r, /i, /ice.png, "
     "/com.snowplowanalytics.snowplow/tp2, /v1/<type>, /v1/m, /beacon/v1/batch, "
     "/g/collect, /mp/collect) is an exact path; an alias to /v1 is a prefix (/a/v1/t is "
     "/v1/t). Answers, metrics and dead letters are the route's. A target that is no "
     "route, an alias given twice, or an alias that is itself a route (or has routes "
     "below it, for a prefix) stops clickd at start."},
    {"http.redirect_allow", STR(http_redirect_allow), "", 0, 0, NULL, true,
     "Comma-separated hosts the click redirect GET /r?u=<url> may send to (302); "
     "*.example.com allows every subdomain of example.com (not example.com itself). The "
     "target must be an absolute http or https URL of printable ASCII without user info; "
     "any other target: 400 and a dead letter, never a redirect. Empty: /r answers 403 "
     "and records nothing."},
    {"http.real_ip_header", ENUM(http_real_ip_header), "x-forwarded-for", 0, 0,
     "x-forwarded-for|x-real-ip|cf-connecting-ip|true-client-ip|fastly-client-ip", true,
     "The header the client IP is read from, only when the peer is in "
     "http.trusted_proxies. x-forwarded-for: the right-most address not a trusted proxy; "
     "the others hold one address, set by the proxy or CDN in front. A missing, repeated "
     "or malformed value falls back to the peer address "
     "(clickd_http_real_ip_fallback_total)."},

    {"udp.listen", ADDR(udp_listen), "127.0.0.1:8125", 0, 0, NULL, false,
     "UDP collect listener, host:port; empty disables UDP."},
    {"udp.max_datagram_bytes", INT(udp_max_datagram_bytes), "65507", 512, 65507, NULL, true,
     "Datagrams longer than this are dead-lettered as too large."},
    {"udp.recv_buffer_bytes", INT(udp_recv_buffer_bytes), "4194304", 65536, 268435456, NULL, false,
     "SO_RCVBUF asked for the UDP socket (the kernel may cap it at rmem_max)."},

    {"admin.listen", ADDR(admin_listen), "127.0.0.1:9464", 0, 0, NULL, false,
     "Admin listener (/healthz, /readyz, /metrics), host:port; empty disables it."},

    {"limits.max_batch", INT(limits_max_batch), "500", 1, 100000, NULL, true,
     "Beacons per request (JSON array elements or body lines) at most; over it: 413."},
    {"limits.max_fields", INT(limits_max_fields), "64", 8, 1024, NULL, true,
     "Fields per beacon at most; over it the beacon is dead-lettered."},
    {"limits.max_json_depth", INT(limits_max_json_depth), "8", 2, 64, NULL, true,
     "Nesting depth of a JSON body at most; deeper: 400."},
    {"limits.max_string_bytes", INT(limits_max_string_bytes), "4096", 64, 8192, NULL, true,
     "Bytes of one field name or value of a beacon (query or JSON, as decoded) at most; a "
     "longer one: the beacon is dead-lettered (too_large). The User-Agent header is cut to "
     "this length instead (at a character boundary)."},
    {"limits.invalid_utf8", ENUM(limits_invalid_utf8), "reject", 0, 0, "reject|replace", true,
     "A beacon field that is not valid UTF-8: reject (the beacon is dead-lettered, "
     "not_utf8) or replace (each invalid sequence becomes U+FFFD, as browsers decode)."},
    {"limits.control_chars", ENUM(limits_control_chars), "replace", 0, 0, "reject|replace", true,
     "A beacon field holding a control character (C0 with NUL, tab and newline; DEL; C1): "
     "replace (each becomes U+FFFD) or reject (the beacon is dead-lettered, malformed). "
     "The User-Agent header is always repaired, never a reason to refuse a beacon."},
    {"limits.dead_letter_payload_bytes", INT(limits_dead_letter_payload_bytes), "4096", 64, 65536,
     NULL, true, "Bytes of the offending payload kept in a dead-letter record."},

    {"privacy.anonymize_ip", BOOL(privacy_anonymize_ip), "true", 0, 0, NULL, true,
     "Anonymise client IPs (IPv4 /24, IPv6 /48) before they are written."},
    {"privacy.honor_gpc", BOOL(privacy_honor_gpc), "true", 0, 0, NULL, true,
     "With Sec-GPC: 1 or DNT: 1, set no cookie and drop the IP."},

    {"sink.file.dir", STR(sink_file_dir), "./data", 0, 0, NULL, false,
     "Directory of the file sink (used when kafka.brokers is empty); created if missing."},
    {"sink.file.compress", ENUM(sink_file_compress), "none", 0, 0, "none|zstd", false,
     "none: .ndjson files; zstd: .ndjson.zst files, one zstd frame each."},
    {"sink.file.zstd_level", INT(sink_file_zstd_level), "3", 1, 19, NULL, false,
     "zstd compression level for sink.file.compress=zstd."},
    {"sink.file.rotate_bytes", INT(sink_file_rotate_bytes), "268435456", 4096,
     INT64_C(1099511627776), NULL, false,
     "A file is closed and a new one started past this many (uncompressed) bytes."},
    {"sink.file.rotate_s", INT(sink_file_rotate_s), "3600", 1, 604800, NULL, false,
     "A file is closed and a new one started when it is this old."},

    {"kafka.brokers", STR(kafka_brokers), "", 0, 0, NULL, false,
     "Bootstrap brokers (host:port,...). Empty: no Kafka, records go to the file sink."},
    {"kafka.topic.events", STR(kafka_topic_events), "clickd.events", 0, 0, NULL, false,
     "Topic of event records, keyed by visitor key."},
    {"kafka.topic.touchpoints", STR(kafka_topic_touchpoints), "clickd.touchpoints", 0, 0, NULL,
     false, "Topic of touchpoint records (one per session)."},
    {"kafka.topic.dead_letters", STR(kafka_topic_dead_letters), "clickd.dead_letters", 0, 0, NULL,
     false, "Topic of dead-letter records."},
    {"kafka.topic.attribution", STR(kafka_topic_attribution), "clickd.attribution", 0, 0, NULL,
     false, "Topic of attribution records (one per conversion), keyed by visitor key."},
    {"kafka.topic.rollups", STR(kafka_topic_rollups), "clickd.rollups", 0, 0, NULL, false,
     "Topic of rollup records (one per minute, shard and app, channel, source, medium and "
     "campaign), keyed by app, channel, source, medium and campaign (0x1F between them)."},
    {"kafka.flush_timeout_ms", INT(kafka_flush_timeout_ms), "30000", 0, 600000, NULL, true,
     "At stop, how long to wait for Kafka to acknowledge what is queued; what it has not "
     "acknowledged by then goes to the spool."},
    {"kafka.ack_mode", ENUM(kafka_ack_mode), "accept", 0, 0, "accept|kafka", false,
     "When an HTTP collect request is answered 2xx. accept: as soon as its events are in "
     "the rings to the shards (fastest; a crash of clickd loses what the shards, the Kafka "
     "queue and the spool's unwritten batch hold). kafka: only once every event of it is "
     "acknowledged by the Kafka brokers (acks=all) or written to the disk spool (synced as "
     "spool.fsync says), so a 2xx means durable; duplicates dedup drops count at once (their "
     "original is on its way), bad beacons (dead letters) do not hold the answer. Costs "
     "latency (README: Acknowledgement mode): the answer waits for the brokers' replication "
     "and the delivery report, or for the spool's write and sync; the producer's linger.ms "
     "defaults to 0 in this mode. Needs kafka.brokers. UDP is not acknowledged either way."},
    {"kafka.ack_timeout_ms", INT(kafka_ack_timeout_ms), "10000", 100, 600000, NULL, false,
     "With kafka.ack_mode=kafka: a request whose events are not all delivered or spooled "
     "by then is answered 503 with Retry-After (clickd_ack_timeouts_total). Its events may "
     "still arrive: the tracker's retry of the same eid is then dropped by dedup (within "
     "dedup.window_s, when it lands on the same shard: same vid or cookie)."},
    {"kafka.ack_max_pending", INT(kafka_ack_max_pending), "8192", 1, 65536, NULL, false,
     "With kafka.ack_mode=kafka: requests waiting for their acknowledgement at most, per "
     "ingest thread (clickd_ack_pending); past it a new request is answered 503 with "
     "Retry-After at once, nothing taken."},
    {"kafka.ack_max_pending_per_connection", INT(kafka_ack_max_pending_per_connection), "32", 1,
     65536, NULL, false,
     "With kafka.ack_mode=kafka: waiting requests per keep-alive connection (pipelining) at "
     "which clickd stops reading from it until answers go out; the requests of a read "
     "already made are still taken."},

    {"spool.dir", STR(spool_dir), "./spool", 0, 0, NULL, false,
     "Directory of the Kafka sink's disk spool, where records wait while Kafka is "
     "unreachable or its queue is past spool.high_water, and where failed deliveries go; "
     "replayed in order when Kafka is back, and first at start. Created if missing, locked "
     "against a second clickd. Relative paths start at the working directory "
     "(/var/lib/clickd/spool under systemd). Not used without kafka.brokers."},
    {"spool.max_bytes", INT(spool_max_bytes), "1073741824", 0, INT64_C(1125899906842624), NULL,
     false,
     "Bytes the spool may take on disk. When it is full, ingest answers 503 and /readyz is "
     "not ready, until Kafka takes records again. 0: no spool (records wait only in "
     "librdkafka's queue, and a failed delivery is lost, counted in "
     "clickd_sink_failures_total)."},
    {"spool.segment_bytes", INT(spool_segment_bytes), "67108864", 1048576, 1073741824, NULL, false,
     "A spool segment file is closed and the next one started past this size. A segment is "
     "deleted once every record in it is delivered; after a crash, the delivered records of "
     "the segments still there are sent again (at least once)."},
    {"spool.fsync", ENUM(spool_fsync), "interval", 0, 0, "never|per_frame|interval", false,
     "When spooled records are synced to disk. never: write(2) only (a crash of clickd "
     "loses nothing written, a crash of the machine the last seconds); per_frame: "
     "fdatasync after every frame of up to 64 KiB of records, on the thread that writes it; "
     "interval: at most every spool.fsync_interval_ms (a machine crash loses at most that "
     "much). Also at stop, unless never. With kafka.ack_mode=kafka, while requests wait "
     "for spooled records, the spool is written and (unless never) synced every 50 ms."},
    {"spool.fsync_interval_ms", INT(spool_fsync_interval_ms), "1000", 10, 600000, NULL, false,
     "With spool.fsync=interval: the longest time between syncs of spooled records."},
    {"spool.high_water", INT(spool_high_water), "50000", 1, 10000000, NULL, false,
     "Messages in librdkafka's queue (not yet sent or not yet acknowledged) above which new "
     "records go to the spool instead, and up to which replay fills the queue. Kept below "
     "[kafka.producer] queue.buffering.max.messages."},

    {"pipeline.ingest_threads", INT(pipeline_ingest_threads), "0", 0, 64, NULL, false,
     "Ingest threads, each with its own event loop and its own HTTP and UDP sockets on "
     "the same addresses (SO_REUSEPORT: the kernel spreads connections and datagrams). "
     "0: half the CPU cores, at least 1."},
    {"pipeline.shards", INT(pipeline_shards), "0", 0, 64, NULL, false,
     "Shard workers; each owns the sessions and dedup state of its share of the visitors "
     "(XXH3 of the visitor key). 0: half the CPU cores, at least 1."},
    {"pipeline.ring_slots", INT(pipeline_ring_slots), "1024", 16, 65536, NULL, false,
     "Events one ring (one per ingest thread and shard) holds, a power of two. A full "
     "ring is back-pressure: HTTP answers 503, UDP stops reading until there is room (the "
     "kernel buffer holds what arrives). Memory: ingest_threads x shards x "
     "ring_slots x 8.1 KiB (8.1 MiB per ring at 1024)."},
    {"pipeline.reorder_ms", INT(pipeline_reorder_ms), "50", 0, 10000, NULL, false,
     "With several ingest threads, a shard merges its rings in the order beacons arrived, "
     "holding each event this long so that an earlier beacon of the same visitor that "
     "came in through another thread cannot be overtaken. 0: merge what is there, no "
     "wait. Not used with one ingest thread."},

    {"dedup.window_s", INT(dedup_window_s), "3600", 1, 604800, NULL, false,
     "An event whose app_id and eid (or, without eid, whose whole decoded payload) was "
     "seen less than this long before is a duplicate: counted, not written."},
    {"dedup.max_entries", INT(dedup_max_entries), "1000000", 16, 1000000000, NULL, false,
     "Fingerprints remembered per shard, 32 bytes each (32 MB per shard at 1,000,000). "
     "When full before the window has passed, the oldest are forgotten first "
     "(clickd_dedup_evicted_total)."},

    {"session.timeout_s", INT(session_timeout_s), "1800", 1, 86400, NULL, false,
     "A session ends after this long without an event from its visitor (end_reason "
     "inactivity)."},
    {"session.max_duration_s", INT(session_max_duration_s), "86400", 1, 604800, NULL, false,
     "A session ends this long after it started, however active (end_reason "
     "max_duration)."},
    {"session.max_visitors", INT(session_max_visitors), "1000000", 1, 1000000000, NULL, false,
     "Visitors remembered (for session_index), over all shards; past it the least "
     "recently seen is forgotten, and its open session ends (end_reason evicted). Memory: "
     "about 40 bytes per visitor, plus per open session 2.6 KB at max_url_bytes=512 "
     "(3 x max_url_bytes + 1.1 KB)."},
    {"session.max_url_bytes", INT(session_max_url_bytes), "512", 64, 8192, NULL, false,
     "The landing URL, exit URL and referrer a session keeps are cut to this many bytes "
     "(at a UTF-8 character boundary)."},
    {"session.state_file", STR(session_state_file), "", 0, 0, NULL, false,
     "A file where a clean stop (TERM/INT) saves the open sessions instead of closing them "
     "as shutdown, with what they need to go on at the next start as if clickd had not "
     "stopped: same session_id and counters, each visitor's session_index, the dedup window "
     "and the attribution paths and user links (zstd, checksummed, written atomically; about "
     "as large as the open state). At start it is restored before ingest begins, whatever "
     "pipeline.shards is now, then removed; sessions whose timeout or max duration passed "
     "meanwhile end at once as inactivity or max_duration. A corrupt or unreadable file is "
     "logged, renamed to <file>.bad, and clickd starts empty. After kill -9 or a crash there "
     "is no file: the open sessions of that run are lost as sessions (no touchpoint), never "
     "as events. Its directory must exist and be writable (checked at start). Relative paths "
     "start at the working directory (/var/lib/clickd under systemd). Empty: open sessions "
     "close as shutdown at stop."},

    {"channel.sources_dir", STR(channel_sources_dir), "", 0, 0, NULL, true,
     "A directory with search.txt, social.txt, video.txt and shopping.txt replacing the "
     "source lists of the channel rules (conf/channels/ in the source tree, "
     "/etc/clickd/channels installed). Empty: the lists built into clickd."},

    {"attribution.lookback_days", INT(attribution_lookback_days), "30", 1, 365, NULL, false,
     "A conversion is credited to the touchpoints (sessions) of its visitor, and with a user "
     "ID of every device linked to the user, that started at most this many days before it. "
     "Older touchpoints, and visitors and users not seen for this long, are forgotten."},
    {"attribution.max_touchpoints", INT(attribution_max_touchpoints), "32", 1, 128, NULL, false,
     "Touchpoints kept per visitor (oldest first out), and credited per conversion (the "
     "most recent)."},
    {"attribution.half_life_days", INT(attribution_half_life_days), "7", 1, 365, NULL, false,
     "The time_decay model: a touchpoint's weight halves for every this many days between "
     "its start and the conversion."},
    {"attribution.conversion_events", STR(attribution_conversion_events), "", 0, 0, NULL, false,
     "Comma-separated event names (the en field, exact, without spaces) that count as "
     "conversions for attribution and rollups besides e=cv, for example purchase,sign_up. "
     "Their event records keep their type, and their sessions do not count them."},
    {"attribution.max_devices_per_user", INT(attribution_max_devices_per_user), "8", 1, 16, NULL,
     false,
     "Devices (visitor IDs) remembered per user ID, least recently linked first out. A "
     "conversion with a user ID is credited over the touchpoints of every device seen with "
     "that user within the lookback. Devices are linked on their visitor's shard: with "
     "pipeline.shards above 1, only the devices that share the converting visitor's shard "
     "count."},
    {"attribution.max_stored_touchpoints", INT(attribution_max_stored_touchpoints), "4000000", 0,
     1000000000, NULL, false,
     "Touchpoints held in all visitors' paths together, over all shards (about 312 bytes "
     "each: 1.2 GB at 4,000,000). Past it the least recently seen visitors' paths are "
     "forgotten (clickd_attribution_evicted_total). 0: no bound of its own (at most "
     "session.max_visitors x max_touchpoints)."},
    {"attribution.affiliate_params", STR(attribution_affiliate_params),
     BEACON_DEFAULT_AFFILIATE_PARAMS, 0, 0, NULL, true,
     "Comma-separated page-URL query parameters read as the affiliate ID (exact, "
     "case-sensitive names; of those the URL carries, the one listed first wins; an aff "
     "field in the beacon wins over all). The defaults: aff, affiliate, affiliate_id, aff_id "
     "(HasOffers/TUNE), affid, which carry the affiliate's own ID; then the click "
     "references networks append to the landing URL, which the network resolves to the "
     "publisher: awc (Awin), irclickid (Impact), cjevent (CJ), sscid (ShareASale), "
     "ranSiteID (Rakuten Advertising), tduid (Tradedoubler), clickref (Partnerize), "
     "admitad_uid (Admitad), rfsn (Refersion). An affiliate ID makes its session's channel "
     "Affiliates, and a new one starts a new session. Empty: none."},

    {"rollups.grace_s", INT(rollups_grace_s), "5", 0, 600, NULL, false,
     "A minute's rollup rows (by receive time) are written this long after the minute "
     "ends. A record that arrives later counts in the minute still open, and in its late."},
    {"rollups.max_keys_per_minute", INT(rollups_max_keys_per_minute), "10000", 1, 1048576, NULL,
     false,
     "Rollup rows (app, channel, source, medium, campaign) per minute and shard; past it "
     "records go to the minute's (other) row (clickd_rollup_other_total). Memory per shard: "
     "(grace_s / 60 + 2) x max_keys_per_minute x about 460 bytes (9 MB at 10,000)."},

    {"snowplow.cookie_name", STR(snowplow_cookie_name), "sp", 0, 0, NULL, true,
     "Name of the Snowplow network user ID cookie, set on every Snowplow answer as the "
     "reference collector does (Path=/, a year, SameSite=None; Secure; HttpOnly) unless "
     "the request says SP-Anonymous."},
    {"snowplow.cookie_domains", STR(snowplow_cookie_domains), "", 0, 0, NULL, true,
     "Comma-separated domains for the Snowplow cookie: its Domain is the first one that "
     "is the request's Origin host or a parent of it; none matching (or empty): a "
     "host-only cookie."},
    {"segment.write_keys", STR(segment_write_keys), "", 0, 0, NULL, true,
     "Comma-separated key:app_id pairs. When this or rudderstack.write_keys holds keys, "
     "Segment-shaped requests need one of them (Basic auth 'key:', or writeKey in the "
     "body or query), else 401, and their events take its app_id. Empty (both): no check, "
     "no app_id."},
    {"rudderstack.write_keys", STR(rudderstack_write_keys), "", 0, 0, NULL, true,
     "Comma-separated key:app_id pairs of RudderStack sources, checked like "
     "segment.write_keys (either list's keys are accepted on every Segment-shaped route); "
     "a key from this list marks the events protocol rudderstack."},
    {"ga4.api_secrets", STR(ga4_api_secrets), "", 0, 0, NULL, true,
     "Comma-separated measurement_id:api_secret:app_id triples. When set, Measurement "
     "Protocol requests (/mp/collect) need a matching measurement_id and api_secret, else "
     "401; the events take its app_id (else the measurement_id). A /g/collect tid listed "
     "here takes its app_id too (else the tid)."},

    {"shutdown.drain_timeout_ms", INT(shutdown_drain_timeout_ms), "5000", 0, 600000, NULL, true,
     "At stop, how long in-flight HTTP requests get to finish before their "
     "connections are closed."},
};
#define OPTION_COUNT (sizeof(options) / sizeof(options[0]))

static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static const struct option *option_find(const char *key)
{
	for (size_t i = 0; i < OPTION_COUNT; i++)
		if (strcmp(options[i].key, key) == 0)
			return &options[i];
	return NULL;
}

static bool choice_ok(const char *choices, const char *value)
{
	size_t vlen = strlen(value);
	const char *p = choices;
	while (*p) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);
		if (n == vlen && strncmp(p, value, n) == 0)
			return true;
		if (!bar)
			break;
		p = bar + 1;
	}
	return false;
}

static int parse_int(const char *value, int64_t *out)
{
	char *end;
	long long v;
	errno = 0;
	if (*value == '\0')
		return -EINVAL;
	v = strtoll(value, &end, 10);
	if (errno || *end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *value, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int config_parse_address(const char *s, struct sockaddr_storage *out, char *err, size_t errlen)
{
	char host[256];
	const char *colon;
	size_t host_len;
	int64_t port;

	memset(out, 0, sizeof(*out));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':') {
			fmt_err(err, errlen, "'%s' is not [ipv6]:port", s);
			return -EINVAL;
		}
		host_len = (size_t)(close - s - 1);
		colon = close + 1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (!colon) {
			fmt_err(err, errlen, "'%s' has no :port", s);
			return -EINVAL;
		}
		host_len = (size_t)(colon - s);
	}
	if (host_len == 0 || host_len >= sizeof(host)) {
		fmt_err(err, errlen, "'%s' has no host", s);
		return -EINVAL;
	}
	memcpy(host, s, host_len);
	host[host_len] = '\0';
	if (parse_int(colon + 1, &port) < 0 || port < 0 || port > 65535) {
		fmt_err(err, errlen, "'%s' has a bad port", colon + 1);
		return -EINVAL;
	}
	struct sockaddr_in *v4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	fmt_err(err, errlen, "'%s' is not an IP address (names are not resolved)", host);
	return -EINVAL;
}

static int option_set(struct config *cfg, const struct option *o, const char *value, char *err,
                      size_t errlen)
{
	char *field = (char *)cfg + o->offset;
	char why[256] = "";

	switch (o->type) {
	case OPT_STRING:
	case OPT_ADDRESS:
	case OPT_ENUM:
		if (strlen(value) >= o->size) {
			fmt_err(err, errlen, "%s: value longer than %zu bytes", o->key,
			        o->size - 1);
			return -EINVAL;
		}
		if (o->type == OPT_ENUM && !choice_ok(o->choices, value)) {
			fmt_err(err, errlen, "%s: '%s' is not one of %s", o->key, value,
			        o->choices);
			return -EINVAL;
		}
		if (o->type == OPT_ADDRESS && value[0] != '\0') {
			struct sockaddr_storage ss;
			if (config_parse_address(value, &ss, why, sizeof(why)) < 0) {
				fmt_err(err, errlen, "%s: %s", o->key, why);
				return -EINVAL;
			}
		}
		strcpy(field, value);
		return 0;
	case OPT_INT: {
		int64_t v;
		if (parse_int(value, &v) < 0) {
			fmt_err(err, errlen, "%s: '%s' is not an integer", o->key, value);
			return -EINVAL;
		}
		if (v < o->min || v > o->max) {
			fmt_err(err, errlen,
			        "%s: %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
			        o->key, v, o->min, o->max);
			return -EINVAL;
		}
		memcpy(field, &v, sizeof(v));
		return 0;
	}
	case OPT_BOOL: {
		bool b;
		if (parse_bool(value, &b) < 0) {
			fmt_err(err, errlen, "%s: '%s' is not a boolean (true/false)", o->key,
			        value);
			return -EINVAL;
		}
		memcpy(field, &b, sizeof(b));
		return 0;
	}
	}
	return -EINVAL;
}

static int producer_set(struct config *cfg, const char *key, const char *value, char *err,
                        size_t errlen)
{
	for (size_t i = 0; i < cfg->producer_count; i++) {
		if (strcmp(cfg->producer_keys[i], key) == 0) {
			char *v = strdup(value);
			if (!v)
				return -ENOMEM;
			free(cfg->producer_values[i]);
			cfg->producer_values[i] = v;
			return 0;
		}
	}
	if (cfg->producer_count == CONFIG_MAX_PRODUCER_PROPS) {
		fmt_err(err, errlen, "kafka.producer.%s: more than %d producer properties", key,
		        CONFIG_MAX_PRODUCER_PROPS);
		return -EINVAL;
	}
	if (key[0] == '\0') {
		fmt_err(err, errlen, "kafka.producer: empty property name");
		return -EINVAL;
	}
	char *k = strdup(key), *v = strdup(value);
	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	cfg->producer_keys[cfg->producer_count] = k;
	cfg->producer_values[cfg->producer_count] = v;
	cfg->producer_count++;
	return 0;
}

/* Sets "section.key" (or "kafka.producer.<librdkafka property>"). */
static int config_set(struct config *cfg, const char *key, const char *value, char *err,
                      size_t errlen)
{
	static const char producer_prefix[] = "kafka.producer.";
	const struct option *o;

	if (strncmp(key, producer_prefix, sizeof(producer_prefix) - 1) == 0)
		return producer_set(cfg, key + sizeof(producer_prefix) - 1, value, err, errlen);
	o = option_find(key);
	if (!o) {
		fmt_err(err, errlen, "%s: unknown key", key);
		return -EINVAL;
	}
	return option_set(cfg, o, value, err, errlen);
}

struct ini_state {
	struct config *cfg;
	char err[512];
	int rc;
};

static int config_ini_entry(void *user, const char *section, const char *name, const char *value)
{
	struct ini_state *st = user;
	char key[256];

	if (st->rc < 0)
		return 0;
	if (section[0] == '\0') {
		snprintf(st->err, sizeof(st->err), "%s: key outside a [section]", name);
		st->rc = -EINVAL;
		return 0;
	}
	if ((size_t)snprintf(key, sizeof(key), "%s.%s", section, name) >= sizeof(key)) {
		snprintf(st->err, sizeof(st->err), "%s.%s: key too long", section, name);
		st->rc = -EINVAL;
		return 0;
	}
	st->rc = config_set(st->cfg, key, value, st->err, sizeof(st->err));
	return st->rc == 0;
}

static int split_list(const char *s, char items[][256], size_t max, size_t *count, const char *key,
                      char *err, size_t errlen)
{
	*count = 0;
	while (*s) {
		while (*s == ' ' || *s == ',')
			s++;
		if (!*s)
			break;
		const char *end = s;
		while (*end && *end != ',' && *end != ' ')
			end++;
		size_t n = (size_t)(end - s);
		if (*count == max || n >= 256) {
			fmt_err(err, errlen, "%s: more than %zu entries or an entry too long", key,
			        max);
			return -EINVAL;
		}
		memcpy(items[*count], s, n);
		items[*count][n] = '\0';
		(*count)++;
		s = end;
	}
	return 0;
}

static int parse_cidr(const char *s, struct config_cidr *out)
{
	char addr[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	int64_t bits;

	if (n == 0 || n >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, n);
	addr[n] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		out->prefix_bits = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		out->prefix_bits = 128;
	} else {
		return -EINVAL;
	}
	if (slash) {
		if (parse_int(slash + 1, &bits) < 0 || bits < 0 || bits > out->prefix_bits)
			return -EINVAL;
		out->prefix_bits = (int)bits;
	}
	return 0;
}

/* Copies the n bytes at s into out (cap bytes with the NUL); false when empty or too long. */
static bool take_part(const char *s, size_t n, char *out, size_t cap)
{
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
}

/* "key:app_id,..." (with_id false) or "id:secret:app_id,..." (with_id true). */
static int parse_credentials(const char *s, const char *key, bool with_id,
                             struct config_credential *out, size_t *count, char *err, size_t errlen)
{
	char items[CONFIG_MAX_LIST][256];
	size_t n;

	if (split_list(s, items, CONFIG_MAX_LIST, &n, key, err, errlen) < 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		struct config_credential *c = &out[i];
		const char *a = items[i], *b = strchr(a, ':'), *d = b ? strchr(b + 1, ':') : NULL;
		bool ok;

		memset(c, 0, sizeof(*c));
		if (with_id)
			ok = b && d && strchr(d + 1, ':') == NULL &&
			     take_part(a, (size_t)(b - a), c->id, sizeof(c->id)) &&
			     take_part(b + 1, (size_t)(d - b - 1), c->secret, sizeof(c->secret)) &&
			     take_part(d + 1, strlen(d + 1), c->app_id, sizeof(c->app_id));
		else
			ok = b && d == NULL &&
			     take_part(a, (size_t)(b - a), c->secret, sizeof(c->secret)) &&
			     take_part(b + 1, strlen(b + 1), c->app_id, sizeof(c->app_id));
		if (!ok) {
			fmt_err(err, errlen, "%s: '%s' is not %s", key, items[i],
			        with_id ? "measurement_id:api_secret:app_id" : "key:app_id");
			return -EINVAL;
		}
	}
	*count = n;
	return 0;
}

static int config_derive(struct config *cfg, char *err, size_t errlen)
{
	char items[CONFIG_MAX_LIST][256];
	size_t n;

	if (split_list(cfg->http_cors_origins, cfg->cors_origins, CONFIG_MAX_LIST,
	               &cfg->cors_origin_count, "http.cors_origins", err, errlen) < 0)
		return -EINVAL;
	cfg->cors_any = false;
	for (size_t i = 0; i < cfg->cors_origin_count; i++) {
		if (strcmp(cfg->cors_origins[i], "*") == 0) {
			cfg->cors_any = true;
		} else if (strncmp(cfg->cors_origins[i], "http://", 7) != 0 &&
		           strncmp(cfg->cors_origins[i], "https://", 8) != 0) {
			fmt_err(err, errlen,
			        "http.cors_origins: '%s' is not * or scheme://host[:port]",
			        cfg->cors_origins[i]);
			return -EINVAL;
		}
	}
	if (split_list(cfg->http_trusted_proxies, items, CONFIG_MAX_LIST, &n,
	               "http.trusted_proxies", err, errlen) < 0)
		return -EINVAL;
	cfg->trusted_proxy_count = n;
	for (size_t i = 0; i < n; i++) {
		if (parse_cidr(items[i], &cfg->trusted_proxies[i]) < 0) {
			fmt_err(err, errlen, "http.trusted_proxies: '%s' is not an IP or CIDR",
			        items[i]);
			return -EINVAL;
		}
	}
	if (path_alias_parse(cfg->http_path_aliases, "http.path_aliases", ingest_route_kind,
	                     cfg->path_aliases, CONFIG_MAX_LIST, &cfg->path_alias_count, err,
	                     errlen) < 0)
		return -EINVAL;
	if (redirect_allow_parse(cfg->http_redirect_allow, "http.redirect_allow",
	                         cfg->redirect_allow, CONFIG_MAX_LIST, &cfg->redirect_allow_count,
	                         err, errlen) < 0)
		return -EINVAL;
	cfg->real_ip_header = -1;
	for (int i = 0; i < HTTP_IP_HEADER__COUNT; i++)
		if (strcmp(cfg->http_real_ip_header, http_ip_header_name((enum http_ip_header)i)) ==
		    0)
			cfg->real_ip_header = i;
	if (cfg->http_cookie_name[0] == '\0' ||
	    strpbrk(cfg->http_cookie_name, " ;,=\t\"") != NULL) {
		fmt_err(err, errlen, "http.cookie_name: '%s' is not a cookie name",
		        cfg->http_cookie_name);
		return -EINVAL;
	}
	if (strpbrk(cfg->http_cookie_domain, " ;,\t\"") != NULL) {
		fmt_err(err, errlen, "http.cookie_domain: '%s' is not a domain",
		        cfg->http_cookie_domain);
		return -EINVAL;
	}
	if (cfg->pipeline_ring_slots & (cfg->pipeline_ring_slots - 1)) {
		fmt_err(err, errlen, "pipeline.ring_slots: %lld is not a power of two",
		        (long long)cfg->pipeline_ring_slots);
		return -EINVAL;
	}
	if (split_list(cfg->attribution_conversion_events, cfg->conversion_events, CONFIG_MAX_LIST,
	               &cfg->conversion_event_count, "attribution.conversion_events", err,
	               errlen) < 0)
		return -EINVAL;
	if (split_list(cfg->attribution_affiliate_params, cfg->affiliate_params, CONFIG_MAX_LIST,
	               &cfg->affiliate_param_count, "attribution.affiliate_params", err,
	               errlen) < 0)
		return -EINVAL;
	for (size_t i = 0; i < cfg->affiliate_param_count; i++) {
		if (strpbrk(cfg->affiliate_params[i], "=&#?;") != NULL) {
			fmt_err(err, errlen,
			        "attribution.affiliate_params: '%s' is not a parameter name",
			        cfg->affiliate_params[i]);
			return -EINVAL;
		}
	}
	if (cfg->snowplow_cookie_name[0] == '\0' ||
	    strpbrk(cfg->snowplow_cookie_name, " ;,=\t\"") != NULL) {
		fmt_err(err, errlen, "snowplow.cookie_name: '%s' is not a cookie name",
		        cfg->snowplow_cookie_name);
		return -EINVAL;
	}
	if (split_list(cfg->snowplow_cookie_domains, cfg->snowplow_cookie_domains_list,
	               CONFIG_MAX_LIST, &cfg->snowplow_cookie_domain_count,
	               "snowplow.cookie_domains", err, errlen) < 0)
		return -EINVAL;
	for (size_t i = 0; i < cfg->snowplow_cookie_domain_count; i++) {
		if (strpbrk(cfg->snowplow_cookie_domains_list[i], ";\t\"=/:") != NULL) {
			fmt_err(err, errlen, "snowplow.cookie_domains: '%s' is not a domain",
			        cfg->snowplow_cookie_domains_list[i]);
			return -EINVAL;
		}
	}
	if (parse_credentials(cfg->segment_write_keys, "segment.write_keys", false,
	                      cfg->segment_keys, &cfg->segment_key_count, err, errlen) < 0 ||
	    parse_credentials(cfg->rudderstack_write_keys, "rudderstack.write_keys", false,
	                      cfg->rudderstack_keys, &cfg->rudderstack_key_count, err,
	                      errlen) < 0 ||
	    parse_credentials(cfg->ga4_api_secrets, "ga4.api_secrets", true, cfg->ga4_secrets,
	                      &cfg->ga4_secret_count, err, errlen) < 0)
		return -EINVAL;
	if (cfg->kafka_brokers[0] == '\0' && cfg->sink_file_dir[0] == '\0') {
		fmt_err(err, errlen, "sink.file.dir: empty while kafka.brokers is empty too");
		return -EINVAL;
	}
	if (strcmp(cfg->kafka_ack_mode, "kafka") == 0 && cfg->kafka_brokers[0] == '\0') {
		fmt_err(err, errlen,
		        "kafka.ack_mode: 'kafka' needs Kafka, but kafka.brokers is empty");
		return -EINVAL;
	}
	if (cfg->kafka_brokers[0] && cfg->spool_max_bytes > 0 && cfg->spool_dir[0] == '\0') {
		fmt_err(err, errlen,
		        "spool.dir: empty while the spool is on (spool.max_bytes > 0)");
		return -EINVAL;
	}
	return 0;
}

int config_load(struct config *cfg, const char *path, char *const *sets, size_t nsets, char *err,
                size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		if (option_set(cfg, &options[i], options[i].default_value, err, errlen) < 0)
			goto fail; /* a bad built-in default: caught by the unit tests */
	}
	if (path) {
		struct ini_state st = {.cfg = cfg};
		int line = ini_parse(path, config_ini_entry, &st);
		if (line == -1) {
			fmt_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
			goto fail;
		}
		if (line != 0) {
			if (st.rc < 0)
				fmt_err(err, errlen, "%s (%s line %d)", st.err, path, line);
			else
				fmt_err(err, errlen, "%s line %d: not INI syntax", path, line);
			goto fail;
		}
	}
	for (size_t i = 0; i < nsets; i++) {
		char key[256];
		const char *eq = strchr(sets[i], '=');
		size_t n = eq ? (size_t)(eq - sets[i]) : 0;
		if (!eq || n == 0 || n >= sizeof(key)) {
			fmt_err(err, errlen, "--set '%s': expected section.key=value", sets[i]);
			goto fail;
		}
		memcpy(key, sets[i], n);
		key[n] = '\0';
		if (config_set(cfg, key, eq + 1, err, errlen) < 0)
			goto fail;
	}
	if (config_derive(cfg, err, errlen) < 0)
		goto fail;
	return 0;
fail:
	config_close(cfg);
	return -EINVAL;
}

static size_t half_the_cores(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n >= 4 ? (size_t)n / 2 : 1;
}

size_t config_ingest_threads(const struct config *cfg)
{
	return cfg->pipeline_ingest_threads > 0 ? (size_t)cfg->pipeline_ingest_threads
	                                        : half_the_cores();
}

size_t config_shards(const struct config *cfg)
{
	return cfg->pipeline_shards > 0 ? (size_t)cfg->pipeline_shards : half_the_cores();
}

static bool option_equal(const struct config *a, const struct config *b, const struct option *o)
{
	const char *fa = (const char *)a + o->offset, *fb = (const char *)b + o->offset;

	if (o->type == OPT_STRING || o->type == OPT_ADDRESS || o->type == OPT_ENUM)
		return strcmp(fa, fb) == 0;
	return memcmp(fa, fb, o->size) == 0;
}

static bool producer_equal(const struct config *a, const struct config *b)
{
	if (a->producer_count != b->producer_count)
		return false;
	for (size_t i = 0; i < a->producer_count; i++)
		if (strcmp(a->producer_keys[i], b->producer_keys[i]) != 0 ||
		    strcmp(a->producer_values[i], b->producer_values[i]) != 0)
			return false;
	return true;
}

int config_merge_reload(struct config *next, const struct config *running,
                        void (*note)(void *ud, const char *key, bool applied), void *ud, char *err,
                        size_t errlen)
{
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option *o = &options[i];

		if (option_equal(next, running, o))
			continue;
		if (note)
			note(ud, o->key, o->reloadable);
		if (!o->reloadable)
			memcpy((char *)next + o->offset, (const char *)running + o->offset,
			       o->size);
	}
	if (!producer_equal(next, running)) {
		/* librdkafka takes its configuration when the producer is made. */
		if (note)
			note(ud, "kafka.producer", false);
		config_close(next);
		for (size_t i = 0; i < running->producer_count; i++)
			if (producer_set(next, running->producer_keys[i],
			                 running->producer_values[i], err, errlen) < 0)
				return -ENOMEM;
	}
	return config_derive(next, err, errlen);
}

void config_close(struct config *cfg)
{
	for (size_t i = 0; i < cfg->producer_count; i++) {
		free(cfg->producer_keys[i]);
		free(cfg->producer_values[i]);
	}
	cfg->producer_count = 0;
}

static void option_value(const struct config *cfg, const struct option *o, char *out, size_t cap)
{
	const char *field = (const char *)cfg + o->offset;
	switch (o->type) {
	case OPT_STRING:
	case OPT_ADDRESS:
	case OPT_ENUM:
		snprintf(out, cap, "%s", field);
		return;
	case OPT_INT: {
		int64_t v;
		memcpy(&v, field, sizeof(v));
		snprintf(out, cap, "%" PRId64, v);
		return;
	}
	case OPT_BOOL: {
		bool b;
		memcpy(&b, field, sizeof(b));
		snprintf(out, cap, "%s", b ? "true" : "false");
		return;
	}
	}
}

/* Calls emit for each section change and key, in table order. */
static void print_sections(FILE *out, const struct config *cfg, bool docs)
{
	char section[64] = "";
	char value[CONFIG_STR_MAX];

	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option *o = &options[i];
		const char *dot = strrchr(o->key, '.');
		size_t slen = (size_t)(dot - o->key);
		if (strlen(section) != slen || strncmp(section, o->key, slen) != 0) {
			memcpy(section, o->key, slen);
			section[slen] = '\0';
			fprintf(out, "%s[%s]\n", i ? "\n" : "", section);
		}
		if (docs) {
			/* Wrap the help text at ~90 columns as "# " comment lines. */
			const char *h = o->help;
			while (*h) {
				size_t n = strlen(h);
				if (n > 88) {
					n = 88;
					while (n > 0 && h[n] != ' ')
						n--;
					if (n == 0)
						n = 88;
				}
				fprintf(out, "# %.*s\n", (int)n, h);
				h += n;
				while (*h == ' ')
					h++;
			}
			/* Reload lands with the ops issue; until then every key needs a restart,
			 * so the docs do not print the reloadable flag yet. */
			if (o->type == OPT_INT)
				fprintf(out, "# Range %" PRId64 "..%" PRId64 ".\n", o->min, o->max);
			else if (o->type == OPT_ENUM)
				fprintf(out, "# One of %s.\n", o->choices);
			else if (o->type == OPT_BOOL)
				fprintf(out, "# true or false.\n");
			fprintf(out, "%s = %s\n", dot + 1, o->default_value);
		} else {
			option_value(cfg, o, value, sizeof(value));
			fprintf(out, "%s = %s\n", dot + 1, value);
		}
	}
}

void config_print(const struct config *cfg, FILE *out)
{
	print_sections(out, cfg, false);
	if (cfg->producer_count) {
		fprintf(out, "\n[kafka.producer]\n");
		for (size_t i = 0; i < cfg->producer_count; i++) {
			/* --check-config output lands in terminals and CI logs: hide secrets. */
			const char *k = cfg->producer_keys[i];
			bool secret = strstr(k, "password") || strstr(k, "secret") ||
			              strstr(k, "sasl.oauthbearer.config") || strstr(k, ".key.pem");
			fprintf(out, "%s = %s\n", k, secret ? "(hidden)" : cfg->producer_values[i]);
		}
	}
}

void config_dump_options(FILE *out)
{
	fprintf(
	    out,
	    "# clickd configuration: every key with its default.\n"
	    "#\n"
	    "# Generated by `clickd --dump-options` from the option table in src/config.c;\n"
	    "# a test keeps this file and the table equal. Any key can also be given on the\n"
	    "# command line as --set section.key=value (applied after this file).\n"
	    "# An unknown key or a bad value stops clickd at start (exit 2), naming the key.\n\n");
	print_sections(out, NULL, true);
	fprintf(out, "\n[kafka.producer]\n"
	             "# Every key here is handed to librdkafka as it is (see librdkafka's\n"
	             "# CONFIGURATION.md), after clickd's defaults: acks=all,\n"
	             "# enable.idempotence=true, compression.type=zstd, linger.ms=5 (0 with\n"
	             "# kafka.ack_mode=kafka). A property\n"
	             "# librdkafka does not know stops clickd at start. Example:\n"
	             "# queue.buffering.max.messages = 100000\n");
}

bool config_cors_allowed(const struct config *cfg, const char *origin, size_t len)
{
	if (cfg->cors_any)
		return true;
	for (size_t i = 0; i < cfg->cors_origin_count; i++)
		if (strlen(cfg->cors_origins[i]) == len &&
		    strncasecmp(cfg->cors_origins[i], origin, len) == 0)
			return true;
	return false;
}

static bool cidr_contains(const struct config_cidr *c, const uint8_t *addr)
{
	int full = c->prefix_bits / 8, rest = c->prefix_bits % 8;
	if (memcmp(c->addr, addr, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (c->addr[full] & mask) == (addr[full] & mask);
}

bool config_is_trusted_proxy(const struct config *cfg, const struct sockaddr *peer)
{
	const uint8_t *addr;
	int family = peer->sa_family;
	uint8_t mapped[4];

	if (family == AF_INET) {
		addr = (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr;
	} else if (family == AF_INET6) {
		addr = (const uint8_t *)&((const struct sockaddr_in6 *)peer)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr)) {
			memcpy(mapped, addr + 12, 4);
			addr = mapped;
			family = AF_INET;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < cfg->trusted_proxy_count; i++)
		if (cfg->trusted_proxies[i].family == family &&
		    cidr_contains(&cfg->trusted_proxies[i], addr))
			return true;
	return false;
}
