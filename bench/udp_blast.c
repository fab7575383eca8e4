/*
 * udp_blast.c - the UDP load generator of bench/udp.sh: sends clickd beacons with sendmmsg.
 *
 *   udp_blast -p PORT [-h 127.0.0.1] [-d SECONDS] [-r RATE] [-l LINES] [-b BATCH]
 *             [-R RUN_ID] [-s SEED]
 *
 *   -d  how long to send (default 5 s)
 *   -r  datagrams per second to aim at; 0 (default) sends as fast as it can. A sender on
 *       its own core outruns any receiver on loopback: what the receiver cannot take is
 *       dropped by the kernel (see /proc/net/snmp RcvbufErrors), so compare sent with
 *       received, and use -r to measure drops at a given load.
 *   -l  beacons per datagram, one per line (default 1)
 *   -b  datagrams per sendmmsg call (default 64)
 *   -R  prefix of every event ID (default: "u<pid>"); every beacon gets a unique eid
 *       <run>-<counter>, so deduplication never drops any of them
 *
 * The beacons are the native query-string form, varied like bench/collect.lua: 3 app IDs,
 * a visitor pool, page URLs plain (90%) or tagged with UTM tags and/or click IDs (10%),
 * referrers from other sites (15%), the same host (65%) or none, page views, custom events
 * and conversions with revenue. They are rendered once at start;
 * sending only copies them and writes the eid counter.
 *
 * Prints one line of JSON at the end:
 *   {"sent_datagrams":N,"sent_beacons":N,"bytes":N,"seconds":S,"errors":N,...}
 *
 * Built by bench/udp.sh with `cc -O2`; not part of the CMake build.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TEMPLATES   4096
#define TEMPLATE_MAX 1024
#define MAX_BATCH   1024
#define DGRAM_MAX   65507
#define EID_DIGITS  12

static char templates[TEMPLATES][TEMPLATE_MAX];
static size_t template_len[TEMPLATES];

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static unsigned pick(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Percent-encodes src onto dst (unreserved characters stay); returns bytes written. */
static size_t urlencode(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)src; *p && n + 4 < cap; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			dst[n++] = (char)*p;
		} else {
			dst[n++] = '%';
			dst[n++] = hex[*p >> 4];
			dst[n++] = hex[*p & 15];
		}
	}
	dst[n] = '\0';
	return n;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *apps[] = {"shop", "blog", "docs"};
static const char *hosts[] = {"shop.example", "blog.example.org", "docs.example.net"};
static const char *paths[] = {"/",        "/products/42",     "/products/7?color=red",
                              "/cart",    "/checkout",        "/blog/2024/launch",
                              "/pricing", "/account/orders",  "/search?q=running+shoes"};
static const char *utm_sets[] = {
    "utm_source=newsletter&utm_medium=email&utm_campaign=nov_sale",
    "utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=running%20shoes",
    "utm_source=facebook&utm_medium=paid_social&utm_campaign=retarget&utm_content=carousel",
    "utm_source=partner42&utm_medium=affiliate&utm_campaign=q4",
    "utm_source=tiktok&utm_medium=social&utm_id=c-991",
};
static const char *click_ids[] = {"gclid",  "gbraid", "wbraid",    "dclid", "msclkid",
                                  "fbclid", "ttclid", "li_fat_id", "twclid"};
static const char *referrers[] = {
    "https://www.google.com/", "https://www.google.de/search?q=shoes", "https://www.bing.com/",
    "https://duckduckgo.com/", "https://m.facebook.com/",              "https://t.co/abc123",
    "https://www.linkedin.com/feed/", "https://partner.example.com/deals",
};
static const char *event_names[] = {"add_to_cart", "video_play", "signup_start", "scroll_90"};
static const char *conv_names[] = {"purchase", "signup", "lead"};
static const char *currencies[] = {"EUR", "USD", "GBP"};

/* One beacon without its eid: "&aid=...&vid=...". */
static void render_template(char *out, size_t cap, size_t *len_out, unsigned visitors)
{
	char url[512], enc_url[1536], enc_ref[512];
	/* 10% of beacons on a tagged landing URL (4% UTM, 3% click ID, 3% both), the rest on
	 * plain pages; 15% with another site's referrer, 65% the same host's, 20% none (as
	 * bench/collect.lua: tagged URLs and other sites' referrers start new sessions). */
	unsigned a = pick(COUNT(apps)), p = pick(COUNT(paths)), k = pick(100);
	unsigned kind = k < 4 ? 0 : k < 7 ? 1 : k < 10 ? 2 : 3;
	const char *path = paths[p];
	const char *sep = strchr(path, '?') ? "&" : "?";
	unsigned roll = pick(100), r = pick(100);
	size_t n;

	switch (kind) {
	case 0:
		snprintf(url, sizeof(url), "https://%s%s%s%s", hosts[a], path, sep,
		         utm_sets[pick(COUNT(utm_sets))]);
		break;
	case 1:
		snprintf(url, sizeof(url), "https://%s%s%s%s=Cj0KCQ%u", hosts[a], path, sep,
		         click_ids[pick(COUNT(click_ids))], pick(100000));
		break;
	case 2:
		snprintf(url, sizeof(url), "https://%s%s%s%s&%s=abc%u", hosts[a], path, sep,
		         utm_sets[pick(COUNT(utm_sets))], click_ids[pick(COUNT(click_ids))],
		         pick(1000));
		break;
	default:
		snprintf(url, sizeof(url), "https://%s%s", hosts[a], path);
	}
	urlencode(enc_url, sizeof(enc_url), url);
	n = (size_t)snprintf(out, cap, "&aid=%s&vid=v%u", apps[a], 1 + pick(visitors));
	if (roll < 5)
		n += (size_t)snprintf(out + n, cap - n, "&e=cv&en=%s&rev=%u.%02u&cur=%s&uid=u%u",
		                      conv_names[pick(COUNT(conv_names))], 5 + pick(400), pick(100),
		                      currencies[pick(COUNT(currencies))], 1 + pick(visitors / 4 + 1));
	else if (roll < 15)
		n += (size_t)snprintf(out + n, cap - n, "&e=ev&en=%s",
		                      event_names[pick(COUNT(event_names))]);
	n += (size_t)snprintf(out + n, cap - n, "&url=%s", enc_url);
	if (r < 15) {
		urlencode(enc_ref, sizeof(enc_ref), referrers[pick(COUNT(referrers))]);
		n += (size_t)snprintf(out + n, cap - n, "&ref=%s", enc_ref);
	} else if (r < 80) {
		snprintf(url, sizeof(url), "https://%s/", hosts[a]);
		urlencode(enc_ref, sizeof(enc_ref), url);
		n += (size_t)snprintf(out + n, cap - n, "&ref=%s", enc_ref);
	}
	*len_out = n;
}

static void write_digits(char *p, uint64_t v)
{
	for (int i = EID_DIGITS - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	char run_default[32], prefix[96];
	const char *run = NULL;
	int port = 0, lines = 1, batch = 64, opt, fd;
	unsigned seed = 1, visitors = 20000;
	double seconds = 5, rate = 0;
	struct sockaddr_in sa;
	static struct mmsghdr msgs[MAX_BATCH];
	static struct iovec iov[MAX_BATCH];
	static int slot_lines[MAX_BATCH];
	char *bufs;
	size_t prefix_len, slot_cap;
	uint64_t eid = 0, sent = 0, sent_beacons = 0, bytes = 0, errors = 0, calls = 0;
	uint64_t err_refused = 0, err_nobufs = 0, err_other = 0;
	unsigned next_template = 0;
	double t0, t_end, elapsed;

	while ((opt = getopt(argc, argv, "h:p:d:r:l:b:R:s:")) != -1) {
		switch (opt) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'd':
			seconds = atof(optarg);
			break;
		case 'r':
			rate = atof(optarg);
			break;
		case 'l':
			lines = atoi(optarg);
			break;
		case 'b':
			batch = atoi(optarg);
			break;
		case 'R':
			run = optarg;
			break;
		case 's':
			seed = (unsigned)atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: udp_blast -p PORT [-h HOST] [-d SECONDS] [-r RATE] "
			                "[-l LINES] [-b BATCH] [-R RUN_ID] [-s SEED]\n");
			return 2;
		}
	}
	if (port <= 0 || port > 65535 || lines < 1 || batch < 1 || batch > MAX_BATCH ||
	    seconds <= 0) {
		fprintf(stderr, "udp_blast: need -p PORT, lines >= 1, batch 1..%d, seconds > 0\n",
		        MAX_BATCH);
		return 2;
	}
	if (!run) {
		snprintf(run_default, sizeof(run_default), "u%d", (int)getpid());
		run = run_default;
	}
	rng_state ^= (uint64_t)seed * 0x9E3779B97F4A7C15ull;
	for (unsigned i = 0; i < TEMPLATES; i++)
		render_template(templates[i], TEMPLATE_MAX, &template_len[i], visitors);
	prefix_len = (size_t)snprintf(prefix, sizeof(prefix), "eid=%s-", run);
	slot_cap = (size_t)lines * (prefix_len + EID_DIGITS + TEMPLATE_MAX + 1);
	if (slot_cap > DGRAM_MAX)
		slot_cap = DGRAM_MAX;
	bufs = malloc((size_t)batch * slot_cap);
	if (!bufs)
		return 1;

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("udp_blast: socket/connect");
		return 1;
	}

	t0 = now_s();
	t_end = t0 + seconds;
	for (;;) {
		double now = now_s();
		int n;

		if (now >= t_end)
			break;
		if (rate > 0) {
			double due = t0 + (double)sent / rate; /* when this batch may go */
			if (due > now) {
				double wait = due - now;
				struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
				nanosleep(&ts, NULL);
				continue;
			}
		}
		for (int i = 0; i < batch; i++) {
			char *p = bufs + (size_t)i * slot_cap;
			size_t len = 0;
			slot_lines[i] = 0;
			for (int l = 0; l < lines; l++) {
				unsigned t = next_template++ % TEMPLATES;
				if (len + prefix_len + EID_DIGITS + template_len[t] + 1 > slot_cap)
					break;
				if (l > 0)
					p[len++] = '\n';
				memcpy(p + len, prefix, prefix_len);
				len += prefix_len;
				write_digits(p + len, ++eid);
				len += EID_DIGITS;
				memcpy(p + len, templates[t], template_len[t]);
				len += template_len[t];
				slot_lines[i]++;
			}
			iov[i].iov_base = p;
			iov[i].iov_len = len;
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		calls++;
		n = sendmmsg(fd, msgs, (unsigned)batch, 0);
		if (n < 0) {
			errors++;
			if (errno == ECONNREFUSED)
				err_refused++;
			else if (errno == ENOBUFS || errno == EAGAIN)
				err_nobufs++;
			else
				err_other++;
			/* The eids of this batch were not sent: they are simply skipped. */
			continue;
		}
		for (int i = 0; i < n; i++) {
			bytes += msgs[i].msg_len;
			sent_beacons += (uint64_t)slot_lines[i];
		}
		sent += (uint64_t)n;
	}
	elapsed = now_s() - t0;
	printf("{\"sent_datagrams\":%llu,\"sent_beacons\":%llu,\"bytes\":%llu,\"seconds\":%.6f,"
	       "\"errors\":%llu,\"err_refused\":%llu,\"err_nobufs\":%llu,\"err_other\":%llu,"
	       "\"calls\":%llu,\"lines\":%d,\"batch\":%d,\"rate_target\":%.0f,\"run\":\"%s\"}\n",
	       (unsigned long long)sent, (unsigned long long)sent_beacons,
	       (unsigned long long)bytes, elapsed, (unsigned long long)errors,
	       (unsigned long long)err_refused, (unsigned long long)err_nobufs,
	       (unsigned long long)err_other, (unsigned long long)calls, lines, batch, rate, run);
	free(bufs);
	close(fd);
	return 0;
}
