/*
 * test_ingest.c - the client IP of a request (ingest_client_ip): the peer, X-Forwarded-For's
 * right-most untrusted hop, or the one address of the configured real-IP header, believed
 * only from a trusted proxy.
 */
#include "clickd/config.h"
#include "clickd/ingest.h"
#include "clickd/metrics.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>

static struct config cfg;
static struct sockaddr_storage peer;
static struct http_request req;

static void setup(const char *header, const char *trusted)
{
	char err[256], set_header[64], set_trusted[128];
	char *sets[] = {set_header, set_trusted};
	struct sockaddr_in *v4 = (struct sockaddr_in *)&peer;

	snprintf(set_header, sizeof(set_header), "http.real_ip_header=%s", header);
	snprintf(set_trusted, sizeof(set_trusted), "http.trusted_proxies=%s", trusted);
	cr_assert_eq(config_load(&cfg, NULL, sets, 2, err, sizeof(err)), 0, "%s", err);
	memset(&peer, 0, sizeof(peer));
	v4->sin_family = AF_INET;
	inet_pton(AF_INET, "10.0.0.5", &v4->sin_addr);
	memset(&req, 0, sizeof(req));
	req.peer = &peer;
	req.peer_ip = "10.0.0.5";
}

static const char *client_ip(void)
{
	static char out[64];

	ingest_client_ip(&cfg, &req, out, sizeof(out));
	return out;
}

static void set_ip_header(enum http_ip_header h, const char *value, bool repeated)
{
	req.ip_headers[h].value = value;
	req.ip_headers[h].len = value ? strlen(value) : 0;
	req.ip_headers[h].repeated = repeated;
}

Test(ingest, reads_the_configured_header_from_a_trusted_proxy)
{
	static const char *const names[] = {"x-real-ip", "cf-connecting-ip", "true-client-ip",
	                                    "fastly-client-ip"};

	for (int h = 0; h < HTTP_IP_HEADER__COUNT; h++) {
		setup(names[h], "10.0.0.0/8");
		cr_assert_eq(cfg.real_ip_header, h);
		set_ip_header((enum http_ip_header)h, " 203.0.113.7\t", false);
		req.forwarded_for = "198.51.100.1";
		req.forwarded_for_len = strlen(req.forwarded_for);
		cr_assert_str_eq(client_ip(), "203.0.113.7", "%s", names[h]);
		set_ip_header((enum http_ip_header)h, "2001:DB8::7", false);
		cr_assert_str_eq(client_ip(), "2001:db8::7", "%s", names[h]);
		config_close(&cfg);
	}
}

Test(ingest, reads_only_the_configured_header)
{
	setup("cf-connecting-ip", "10.0.0.0/8");
	set_ip_header(HTTP_IP_X_REAL_IP, "203.0.113.7", false);
	cr_assert_str_eq(client_ip(), "10.0.0.5");
	config_close(&cfg);
}

Test(ingest, ignores_the_header_from_an_untrusted_peer)
{
	uint64_t before = metrics_get(METRIC_REAL_IP_FALLBACK);

	setup("x-real-ip", "192.168.0.0/16");
	set_ip_header(HTTP_IP_X_REAL_IP, "203.0.113.7", false);
	cr_assert_str_eq(client_ip(), "10.0.0.5");
	cr_assert_eq(metrics_get(METRIC_REAL_IP_FALLBACK), before, "not counted: not a proxy");
	config_close(&cfg);
}

Test(ingest, falls_back_to_the_peer_on_a_missing_repeated_or_malformed_value_and_counts_it)
{
	const char *bad[] = {"",
	                     "nope",
	                     "203.0.113.7, 10.0.0.1",
	                     "203.0.113.7:443",
	                     "[2001:db8::1]",
	                     "203.0.113",
	                     "203.0.113.7 x"};
	uint64_t before = metrics_get(METRIC_REAL_IP_FALLBACK);

	setup("true-client-ip", "10.0.0.0/8");
	cr_assert_str_eq(client_ip(), "10.0.0.5", "missing");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_ip_header(HTTP_IP_TRUE_CLIENT_IP, bad[i], false);
		cr_assert_str_eq(client_ip(), "10.0.0.5", "'%s' believed", bad[i]);
	}
	set_ip_header(HTTP_IP_TRUE_CLIENT_IP, "203.0.113.7", true);
	cr_assert_str_eq(client_ip(), "10.0.0.5", "a repeated header believed");
	cr_assert_eq(metrics_get(METRIC_REAL_IP_FALLBACK) - before, 9);
	config_close(&cfg);
}

Test(ingest, x_forwarded_for_stays_the_right_most_untrusted_hop)
{
	setup("x-forwarded-for", "10.0.0.0/8");
	cr_assert_eq(cfg.real_ip_header, -1);
	set_ip_header(HTTP_IP_X_REAL_IP, "198.51.100.1", false);
	req.forwarded_for = "1.1.1.1, 203.0.113.9, 10.0.0.7";
	req.forwarded_for_len = strlen(req.forwarded_for);
	cr_assert_str_eq(client_ip(), "203.0.113.9");
	config_close(&cfg);
}
