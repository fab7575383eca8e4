/*
 * config.h - the whole configuration, declared once as a table (src/config.c).
 *
 * Sources, in order: built-in defaults, the INI file (-c), then --set overrides. The
 * table gives each key its type, default, bounds, whether a reload can change it, and its
 * help text; parsing, validation, --check-config, --dump-options and conf/clickd.conf all
 * follow from it. A `struct config` is a plain value: fill it with config_load, read it
 * from any thread, release it with config_close.
 */
#ifndef CLICKD_CONFIG_H
#define CLICKD_CONFIG_H

#include "clickd/path_alias.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONFIG_STR_MAX            512
#define CONFIG_MAX_PRODUCER_PROPS 64
#define CONFIG_MAX_LIST           64

struct config_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	int prefix_bits;
};

/* A credential of a tracker protocol (segment.write_keys, rudderstack.write_keys,
 * ga4.api_secrets), as the decoders of protocols.h read it. */
struct config_credential {
	char id[128];
	char secret[128];
	char app_id[128];
};

struct config {
	char log_level[16];

	char http_listen[CONFIG_STR_MAX];
	int64_t http_max_connections;
	int64_t http_max_header_bytes;
	int64_t http_max_headers;
	int64_t http_max_url_bytes;
	int64_t http_max_body_bytes;
	int64_t http_idle_timeout_ms;
	int64_t http_retry_after_s;
	char http_cors_origins[CONFIG_STR_MAX];
	char http_trusted_proxies[CONFIG_STR_MAX];
	char http_cookie_name[64];
	char http_cookie_domain[256];
	int64_t http_cookie_max_age_s;
	bool http_cookie_secure;
	int64_t http_gzip_max_ratio;
	char http_path_aliases[4096];
	char http_redirect_allow[4096];
	char http_real_ip_header[32];

	char udp_listen[CONFIG_STR_MAX];
	int64_t udp_max_datagram_bytes;
	int64_t udp_recv_buffer_bytes;

	char admin_listen[CONFIG_STR_MAX];

	int64_t limits_max_batch;
	int64_t limits_max_fields;
	int64_t limits_max_json_depth;
	int64_t limits_max_string_bytes;
	char limits_invalid_utf8[16];  /* reject|replace */
	char limits_control_chars[16]; /* reject|replace */
	int64_t limits_dead_letter_payload_bytes;

	bool privacy_anonymize_ip;
	bool privacy_honor_gpc;

	char sink_file_dir[CONFIG_STR_MAX];
	char sink_file_compress[8];
	int64_t sink_file_zstd_level;
	int64_t sink_file_rotate_bytes;
	int64_t sink_file_rotate_s;

	char kafka_brokers[CONFIG_STR_MAX];
	char kafka_topic_events[256];
	char kafka_topic_touchpoints[256];
	char kafka_topic_dead_letters[256];
	char kafka_topic_attribution[256];
	char kafka_topic_rollups[256];
	int64_t kafka_flush_timeout_ms;
	char kafka_ack_mode[8]; /* accept|kafka */
	int64_t kafka_ack_timeout_ms;
	int64_t kafka_ack_max_pending;
	int64_t kafka_ack_max_pending_per_connection;

	char spool_dir[CONFIG_STR_MAX];
	int64_t spool_max_bytes; /* 0: no spool */
	int64_t spool_segment_bytes;
	char spool_fsync[16];
	int64_t spool_fsync_interval_ms;
	int64_t spool_high_water;

	int64_t shutdown_drain_timeout_ms;

	int64_t pipeline_ingest_threads; /* 0: derived from the cores (config_threads) */
	int64_t pipeline_shards;
	int64_t pipeline_ring_slots;
	int64_t pipeline_reorder_ms;
	int64_t dedup_window_s;
	int64_t dedup_max_entries;
	int64_t session_timeout_s;
	int64_t session_max_duration_s;
	int64_t session_max_visitors;
	int64_t session_max_url_bytes;
	char session_state_file[CONFIG_STR_MAX]; /* empty: sessions close as shutdown at stop */
	char channel_sources_dir[CONFIG_STR_MAX];

	int64_t attribution_lookback_days;
	int64_t attribution_max_touchpoints;
	int64_t attribution_half_life_days;
	char attribution_conversion_events[CONFIG_STR_MAX];
	int64_t attribution_max_devices_per_user;
	int64_t attribution_max_stored_touchpoints; /* over all shards; 0: no cap of its own */
	char attribution_affiliate_params[CONFIG_STR_MAX];
	int64_t rollups_grace_s;
	int64_t rollups_max_keys_per_minute;

	char snowplow_cookie_name[64];
	char snowplow_cookie_domains[CONFIG_STR_MAX];
	char segment_write_keys[4096];
	char rudderstack_write_keys[4096];
	char ga4_api_secrets[4096];

	/* [kafka.producer]: handed to librdkafka as they are. Owned by the struct. */
	size_t producer_count;
	char *producer_keys[CONFIG_MAX_PRODUCER_PROPS];
	char *producer_values[CONFIG_MAX_PRODUCER_PROPS];

	/* Derived on load from the strings above. */
	size_t cors_origin_count;
	bool cors_any;
	char cors_origins[CONFIG_MAX_LIST][256];
	size_t trusted_proxy_count;
	struct config_cidr trusted_proxies[CONFIG_MAX_LIST];
	size_t path_alias_count; /* http.path_aliases, parsed and checked against the routes */
	struct path_alias path_aliases[CONFIG_MAX_LIST];
	size_t redirect_allow_count; /* http.redirect_allow, lower-cased hosts or *.domains */
	char redirect_allow[CONFIG_MAX_LIST][256];
	int real_ip_header; /* http.real_ip_header: -1 X-Forwarded-For, else enum http_ip_header */
	size_t conversion_event_count; /* attribution.conversion_events, split */
	char conversion_events[CONFIG_MAX_LIST][256];
	size_t affiliate_param_count; /* attribution.affiliate_params, split, in order */
	char affiliate_params[CONFIG_MAX_LIST][256];
	size_t snowplow_cookie_domain_count; /* snowplow.cookie_domains, split, in order */
	char snowplow_cookie_domains_list[CONFIG_MAX_LIST][256];
	/* segment.write_keys, rudderstack.write_keys ({"", key, app_id}) and
	 * ga4.api_secrets ({measurement_id, secret, app_id}), parsed. */
	size_t segment_key_count;
	struct config_credential segment_keys[CONFIG_MAX_LIST];
	size_t rudderstack_key_count;
	struct config_credential rudderstack_keys[CONFIG_MAX_LIST];
	size_t ga4_secret_count;
	struct config_credential ga4_secrets[CONFIG_MAX_LIST];
};

/* Fills *cfg: defaults, then `path` (may be NULL), then each "section.key=value" of
 * sets[0..nsets). Returns 0, or -EINVAL with a one-line reason naming the key (and file
 * line) in err. On error *cfg is closed. */
int config_load(struct config *cfg, const char *path, char *const *sets, size_t nsets, char *err,
                size_t errlen);
void config_close(struct config *cfg);

/* For a reload: `next` was just loaded; every key whose table entry says it cannot change
 * while clickd runs gets running's value back (so next describes what will really run),
 * and so do the [kafka.producer] properties. note (may be NULL) is called for each key
 * whose value differs, with applied = whether the new value takes effect. Returns 0, or
 * a negative code with err filled (next is then to be closed). */
int config_merge_reload(struct config *next, const struct config *running,
                        void (*note)(void *ud, const char *key, bool applied), void *ud, char *err,
                        size_t errlen);

/* pipeline.ingest_threads and pipeline.shards, with 0 resolved from the CPU count. */
size_t config_ingest_threads(const struct config *cfg);
size_t config_shards(const struct config *cfg);

/* Prints the effective config as INI (what --check-config shows). */
void config_print(const struct config *cfg, FILE *out);
/* Prints the documented default config, the text of conf/clickd.conf (--dump-options). */
void config_dump_options(FILE *out);

/* Splits "host:port" / "[v6]:port" into a sockaddr. Returns 0 or -EINVAL. */
int config_parse_address(const char *s, struct sockaddr_storage *out, char *err, size_t errlen);

/* True when `origin` (not NUL-terminated) is allowed by http.cors_origins. */
bool config_cors_allowed(const struct config *cfg, const char *origin, size_t len);
/* True when the peer address is inside one of http.trusted_proxies. */
bool config_is_trusted_proxy(const struct config *cfg, const struct sockaddr *peer);

#endif
