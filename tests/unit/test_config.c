/* Unit tests for src/config.c: the option table, loading, validation, derived lists. */
#include "clickd/config.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct config cfg;
static char err[512];

static int load_sets(char **sets, size_t n)
{
	err[0] = '\0';
	return config_load(&cfg, NULL, sets, n, err, sizeof(err));
}

static int load_one(const char *set)
{
	char *sets[] = {(char *)set};
	return load_sets(sets, 1);
}

static char *write_temp(const char *text)
{
	static char path[64];
	strcpy(path, "/tmp/clickd-test-config-XXXXXX");
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	return path;
}

Test(config, built_in_defaults_match_the_contract)
{
	cr_assert_eq(load_sets(NULL, 0), 0, "%s", err);
	cr_assert_str_eq(cfg.http_listen, "127.0.0.1:8080");
	cr_assert_str_eq(cfg.udp_listen, "127.0.0.1:8125");
	cr_assert_str_eq(cfg.admin_listen, "127.0.0.1:9464");
	cr_assert_str_eq(cfg.sink_file_dir, "./data");
	cr_assert_str_eq(cfg.sink_file_compress, "none");
	cr_assert_str_eq(cfg.kafka_brokers, "");
	cr_assert(cfg.privacy_anonymize_ip);
	config_close(&cfg);
}

Test(config, set_overrides_a_key)
{
	char *sets[] = {"http.max_url_bytes=1024", "sink.file.compress=zstd",
	                "privacy.honor_gpc=false"};
	cr_assert_eq(load_sets(sets, 3), 0, "%s", err);
	cr_assert_eq(cfg.http_max_url_bytes, 1024);
	cr_assert_str_eq(cfg.sink_file_compress, "zstd");
	cr_assert(!cfg.privacy_honor_gpc);
	config_close(&cfg);
}

Test(config, an_unknown_key_is_an_error_naming_it)
{
	cr_assert_eq(load_one("http.no_such_key=1"), -EINVAL);
	cr_assert(strstr(err, "http.no_such_key") != NULL, "%s", err);
}

Test(config, a_bad_integer_names_the_key)
{
	cr_assert_eq(load_one("http.max_url_bytes=abc"), -EINVAL);
	cr_assert(strstr(err, "http.max_url_bytes") != NULL, "%s", err);
	cr_assert_eq(load_one("http.max_url_bytes=12x"), -EINVAL);
}

Test(config, an_integer_out_of_range_names_the_key_and_the_range)
{
	cr_assert_eq(load_one("http.max_url_bytes=100000"), -EINVAL);
	cr_assert(strstr(err, "http.max_url_bytes") && strstr(err, "out of range"), "%s", err);
}

Test(config, a_bad_enum_lists_the_choices)
{
	cr_assert_eq(load_one("sink.file.compress=gzip"), -EINVAL);
	cr_assert(strstr(err, "sink.file.compress") && strstr(err, "none|zstd"), "%s", err);
}

Test(config, a_bad_boolean_is_an_error)
{
	cr_assert_eq(load_one("privacy.honor_gpc=maybe"), -EINVAL);
	cr_assert(strstr(err, "privacy.honor_gpc") != NULL, "%s", err);
}

Test(config, addresses_are_validated_and_empty_disables)
{
	cr_assert_eq(load_one("http.listen=localhost:80"), -EINVAL);
	cr_assert(strstr(err, "http.listen") != NULL, "%s", err);
	cr_assert_eq(load_one("http.listen=127.0.0.1"), -EINVAL);
	cr_assert_eq(load_one("http.listen=127.0.0.1:70000"), -EINVAL);
	cr_assert_eq(load_one("http.listen=[::1:80"), -EINVAL);
	cr_assert_eq(load_one("http.listen=[::1]:8080"), 0, "%s", err);
	config_close(&cfg);
	cr_assert_eq(load_one("udp.listen="), 0, "%s", err);
	cr_assert_str_eq(cfg.udp_listen, "");
	config_close(&cfg);
}

Test(config, parse_address_fills_a_sockaddr)
{
	struct sockaddr_storage ss;
	cr_assert_eq(config_parse_address("[::1]:9464", &ss, err, sizeof(err)), 0);
	cr_assert_eq(ss.ss_family, AF_INET6);
	cr_assert_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 9464);
	cr_assert_eq(config_parse_address("10.1.2.3:0", &ss, err, sizeof(err)), 0);
	cr_assert_eq(ss.ss_family, AF_INET);
}

Test(config, a_malformed_set_is_a_usage_error)
{
	cr_assert_eq(load_one("no_equals_sign"), -EINVAL);
	cr_assert(strstr(err, "no_equals_sign") != NULL, "%s", err);
}

Test(config, the_file_is_read_and_errors_carry_the_line)
{
	char *path = write_temp("[http]\nlisten = 127.0.0.1:9999\n\n[sink.file]\nbogus = 1\n");
	cr_assert_eq(config_load(&cfg, path, NULL, 0, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "sink.file.bogus") && strstr(err, "line 5"), "%s", err);
	unlink(path);
}

Test(config, set_wins_over_the_file)
{
	char *path = write_temp("[http]\nlisten = 127.0.0.1:9999\nmax_body_bytes = 2048\n");
	char *sets[] = {"http.listen=127.0.0.1:7777"};
	cr_assert_eq(config_load(&cfg, path, sets, 1, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.http_listen, "127.0.0.1:7777");
	cr_assert_eq(cfg.http_max_body_bytes, 2048);
	config_close(&cfg);
	unlink(path);
}

Test(config, a_missing_file_is_an_error_naming_it)
{
	cr_assert_eq(config_load(&cfg, "/nonexistent/clickd.conf", NULL, 0, err, sizeof(err)),
	             -EINVAL);
	cr_assert(strstr(err, "/nonexistent/clickd.conf") != NULL, "%s", err);
}

Test(config, producer_properties_pass_through_and_the_last_value_wins)
{
	char *path = write_temp("[kafka.producer]\nlinger.ms = 20\nqueue.buffering.max.ms = 7\n");
	char *sets[] = {"kafka.producer.linger.ms=50"};
	cr_assert_eq(config_load(&cfg, path, sets, 1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.producer_count, 2);
	cr_assert_str_eq(cfg.producer_keys[0], "linger.ms");
	cr_assert_str_eq(cfg.producer_values[0], "50");
	cr_assert_str_eq(cfg.producer_values[1], "7");
	config_close(&cfg);
	unlink(path);
}

Test(config, cors_origins_are_matched_exactly_or_by_star)
{
	cr_assert_eq(load_one("http.cors_origins=https://a.example, http://b.example:8080"), 0,
	             "%s", err);
	cr_assert(config_cors_allowed(&cfg, "https://a.example", 17));
	cr_assert(config_cors_allowed(&cfg, "http://b.example:8080", 21));
	cr_assert(!config_cors_allowed(&cfg, "https://evil.example", 20));
	cr_assert(!config_cors_allowed(&cfg, "https://a.example.evil", 22));
	config_close(&cfg);
	cr_assert_eq(load_one("http.cors_origins=*"), 0);
	cr_assert(config_cors_allowed(&cfg, "https://any.example", 19));
	config_close(&cfg);
	cr_assert_eq(load_one("http.cors_origins=a.example"), -EINVAL);
}

static struct sockaddr_storage ip(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, text, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	return ss;
}

Test(config, trusted_proxies_match_by_cidr_including_v4_mapped_peers)
{
	cr_assert_eq(load_one("http.trusted_proxies=10.0.0.0/8,192.168.1.7,fd00::/16"), 0, "%s",
	             err);
	struct sockaddr_storage a = ip("10.200.3.4"), b = ip("11.0.0.1"), c = ip("192.168.1.7"),
	                        d = ip("192.168.1.8"), e = ip("fd00:1::5"),
	                        f = ip("::ffff:10.1.1.1");
	cr_assert(config_is_trusted_proxy(&cfg, (struct sockaddr *)&a));
	cr_assert(!config_is_trusted_proxy(&cfg, (struct sockaddr *)&b));
	cr_assert(config_is_trusted_proxy(&cfg, (struct sockaddr *)&c));
	cr_assert(!config_is_trusted_proxy(&cfg, (struct sockaddr *)&d));
	cr_assert(config_is_trusted_proxy(&cfg, (struct sockaddr *)&e));
	cr_assert(config_is_trusted_proxy(&cfg, (struct sockaddr *)&f));
	config_close(&cfg);
	cr_assert_eq(load_one("http.trusted_proxies=10.0.0.0/33"), -EINVAL);
	cr_assert(strstr(err, "http.trusted_proxies") != NULL, "%s", err);
}

Test(config, a_bad_cookie_name_is_refused)
{
	cr_assert_eq(load_one("http.cookie_name=a;b"), -EINVAL);
	cr_assert(strstr(err, "http.cookie_name") != NULL, "%s", err);
}

Test(config, attribution_lists_are_split_and_their_defaults_follow_the_contract)
{
	cr_assert_eq(load_sets(NULL, 0), 0, "%s", err);
	cr_assert_str_eq(cfg.kafka_topic_attribution, "clickd.attribution");
	cr_assert_str_eq(cfg.kafka_topic_rollups, "clickd.rollups");
	cr_assert_eq(cfg.attribution_lookback_days, 30);
	cr_assert_eq(cfg.attribution_max_touchpoints, 32);
	cr_assert_eq(cfg.attribution_half_life_days, 7);
	cr_assert_eq(cfg.conversion_event_count, 0);
	cr_assert_geq(cfg.affiliate_param_count, 10);
	cr_assert_str_eq(cfg.affiliate_params[0], "aff");
	config_close(&cfg);

	char *sets[] = {"attribution.conversion_events=purchase, sign_up",
	                "attribution.affiliate_params=partner,awc"};
	cr_assert_eq(load_sets(sets, 2), 0, "%s", err);
	cr_assert_eq(cfg.conversion_event_count, 2);
	cr_assert_str_eq(cfg.conversion_events[1], "sign_up");
	cr_assert_eq(cfg.affiliate_param_count, 2);
	cr_assert_str_eq(cfg.affiliate_params[0], "partner");
	cr_assert_str_eq(cfg.affiliate_params[1], "awc");
	config_close(&cfg);

	cr_assert_eq(load_one("attribution.affiliate_params=aff,a=b"), -EINVAL);
	cr_assert(strstr(err, "attribution.affiliate_params") != NULL, "%s", err);
}

Test(config, check_config_output_loads_back_to_the_same_config)
{
	char *sets[] = {"http.max_url_bytes=2048", "kafka.producer.linger.ms=9"};
	struct config again;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	cr_assert_eq(load_sets(sets, 2), 0, "%s", err);
	f = open_memstream(&buf, &len);
	config_print(&cfg, f);
	fclose(f);
	char *path = write_temp(buf);
	cr_assert_eq(config_load(&again, path, NULL, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(again.http_max_url_bytes, 2048);
	cr_assert_eq(again.producer_count, 1);
	config_close(&again);
	config_close(&cfg);
	unlink(path);
	free(buf);
}

Test(config, conf_clickd_conf_documents_every_key_as_dump_options_prints_it)
{
	char *dump = NULL, path[1024];
	size_t dump_len = 0;
	FILE *f = open_memstream(&dump, &dump_len);
	config_dump_options(f);
	fclose(f);

	const char *src = getenv("CLICKD_SOURCE_DIR");
	cr_assert(src != NULL, "CLICKD_SOURCE_DIR not set (run through ctest)");
	snprintf(path, sizeof(path), "%s/conf/clickd.conf", src);
	FILE *conf = fopen(path, "r");
	cr_assert(conf != NULL, "cannot open %s", path);
	char *text = malloc(dump_len + 2);
	size_t n = fread(text, 1, dump_len + 1, conf);
	fclose(conf);
	cr_assert(n == dump_len && memcmp(text, dump, dump_len) == 0,
	          "conf/clickd.conf differs from `clickd --dump-options`; regenerate it with "
	          "`build/clickd --dump-options > conf/clickd.conf`");
	/* And the documented file is itself a valid config. */
	cr_assert_eq(config_load(&cfg, path, NULL, 0, err, sizeof(err)), 0, "%s", err);
	config_close(&cfg);
	free(text);
	free(dump);
}

struct notes {
	char keys[8][64];
	bool applied[8];
	size_t n;
};

static void note_key(void *ud, const char *key, bool applied)
{
	struct notes *x = ud;

	cr_assert_lt(x->n, 8);
	snprintf(x->keys[x->n], sizeof(x->keys[0]), "%s", key);
	x->applied[x->n++] = applied;
}

Test(config, a_reload_takes_live_keys_and_keeps_the_rest_as_running)
{
	static struct config running, next;
	char *a[] = {"log.level=info", "http.max_url_bytes=1024", "http.listen=127.0.0.1:8080",
	             "kafka.producer.linger.ms=5"};
	char *b[] = {"log.level=debug", "http.max_url_bytes=2048", "http.listen=127.0.0.1:9090",
	             "kafka.producer.linger.ms=50", "http.cors_origins=https://a.example"};
	struct notes x = {0};

	cr_assert_eq(config_load(&running, NULL, a, 4, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(config_load(&next, NULL, b, 5, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(config_merge_reload(&next, &running, note_key, &x, err, sizeof(err)), 0, "%s",
	             err);
	cr_assert_str_eq(next.log_level, "debug");
	cr_assert_eq(next.http_max_url_bytes, 2048);
	cr_assert_str_eq(next.http_listen, "127.0.0.1:8080", "a listener needs a restart");
	cr_assert_eq(next.producer_count, 1);
	cr_assert_str_eq(next.producer_values[0], "5", "librdkafka takes its config at start");
	cr_assert_eq(next.cors_origin_count, 1, "derived lists follow the new value");
	cr_assert(config_cors_allowed(&next, "https://a.example", 17));
	cr_assert_eq(x.n, 5);
	for (size_t i = 0; i < x.n; i++) {
		bool live = strcmp(x.keys[i], "http.listen") != 0 &&
		            strcmp(x.keys[i], "kafka.producer") != 0;
		cr_assert_eq(x.applied[i], live, "%s", x.keys[i]);
	}
	config_close(&running);
	config_close(&next);
}

Test(config, the_spool_is_on_with_kafka_by_default_and_needs_a_directory)
{
	char *no_dir[] = {"kafka.brokers=127.0.0.1:9092", "spool.dir="};
	char *off[] = {"kafka.brokers=127.0.0.1:9092", "spool.dir=", "spool.max_bytes=0"};

	cr_assert_eq(load_sets(NULL, 0), 0, "%s", err);
	cr_assert_str_eq(cfg.spool_dir, "./spool");
	cr_assert_eq(cfg.spool_max_bytes, 1073741824);
	cr_assert_eq(cfg.spool_segment_bytes, 67108864);
	cr_assert_str_eq(cfg.spool_fsync, "interval");
	cr_assert_eq(cfg.spool_fsync_interval_ms, 1000);
	cr_assert_eq(cfg.spool_high_water, 50000);
	config_close(&cfg);
	cr_assert_eq(load_sets(no_dir, 2), -EINVAL);
	cr_assert(strstr(err, "spool.dir") != NULL, "%s", err);
	cr_assert_eq(load_sets(off, 3), 0, "spool.max_bytes=0 turns the spool off: %s", err);
	config_close(&cfg);
	cr_assert_eq(load_one("spool.fsync=always"), -EINVAL);
	cr_assert(strstr(err, "never|per_frame|interval") != NULL, "%s", err);
	cr_assert_eq(load_one("spool.segment_bytes=1000"), -EINVAL);
	cr_assert(strstr(err, "spool.segment_bytes") != NULL, "%s", err);
}

Test(config, the_hostile_input_limits_have_their_defaults_and_bounds)
{
	cr_assert_eq(load_sets(NULL, 0), 0, "%s", err);
	cr_assert_eq(cfg.http_max_headers, 100);
	cr_assert_eq(cfg.limits_max_string_bytes, 4096);
	cr_assert_str_eq(cfg.limits_invalid_utf8, "reject");
	cr_assert_str_eq(cfg.limits_control_chars, "replace");
	config_close(&cfg);

	cr_assert_eq(load_one("limits.invalid_utf8=drop"), -EINVAL);
	cr_assert(strstr(err, "limits.invalid_utf8") != NULL && strstr(err, "reject|replace"), "%s",
	          err);
	cr_assert_eq(load_one("limits.control_chars=strip"), -EINVAL);
	cr_assert(strstr(err, "limits.control_chars") != NULL, "%s", err);
	cr_assert_eq(load_one("http.max_headers=7"), -EINVAL);
	cr_assert(strstr(err, "http.max_headers") != NULL, "%s", err);
	cr_assert_eq(load_one("limits.max_string_bytes=8193"), -EINVAL);
	cr_assert(strstr(err, "limits.max_string_bytes") != NULL, "%s", err);
	config_close(&cfg);
}

Test(config, kafka_ack_mode_needs_kafka_and_names_the_key)
{
	char *none[] = {"kafka.ack_mode=kafka"};
	char *with[] = {"kafka.ack_mode=kafka", "kafka.brokers=127.0.0.1:9092"};

	cr_assert_eq(config_load(&cfg, NULL, none, 1, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "kafka.ack_mode") != NULL, "%s", err);
	cr_assert(strstr(err, "kafka.brokers") != NULL, "%s", err);
	cr_assert_eq(config_load(&cfg, NULL, with, 2, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.kafka_ack_mode, "kafka");
	cr_assert_eq(cfg.kafka_ack_timeout_ms, 10000);
	config_close(&cfg);
	cr_assert_eq(load_one("kafka.ack_mode=broker"), -EINVAL);
	cr_assert(strstr(err, "kafka.ack_mode") != NULL, "%s", err);
	cr_assert_eq(load_one("kafka.ack_max_pending=65537"), -EINVAL);
	cr_assert(strstr(err, "kafka.ack_max_pending") != NULL, "%s", err);
	cr_assert_eq(load_one("kafka.ack_mode=accept"), 0, "%s", err);
	config_close(&cfg);
}
