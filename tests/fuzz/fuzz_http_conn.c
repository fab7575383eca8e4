/*
 * fuzz_http_conn.c - libFuzzer harness for the whole HTTP side of clickd: the connection
 * handler of src/http.c (reads, the request parser, limits, pipelining, 100-continue,
 * error answers with their lingering close, the idle timer, the write path) and the
 * collect handler of src/ingest_http.c (routes, CORS, cookies, client IP, query, form,
 * text and JSON bodies, beacons into the pipeline's rings, dead letters), on a real libuv
 * loop, through a real socket.
 *
 * Each input is the bytes one client sends on one connection. The first byte picks the
 * setup: the config (the defaults with small limits and any CORS origin, or one with
 * limits.invalid_utf8=replace, limits.control_chars=reject and one allowed origin), the
 * peer (loopback, a trusted proxy that X-Forwarded-For is believed from, or IPv6), and
 * whether the client ends with a FIN (then every complete request is answered and the
 * server closes) or goes quiet under a 1 ms idle timeout (the 408 and idle paths). The
 * rest is written, in pieces whose sizes come from the input's hash, to one end of a
 * socketpair whose other end the server adopts (http_server_adopt), running the loop
 * between pieces and reading the answers as they come.
 *
 * It aborts (a crash for libFuzzer) when:
 *  - an answer is not well-formed HTTP/1.1: a status line with a known code and its
 *    reason phrase, header lines of a token, ": " and a value with no control character
 *    but tab (no header injection from echoed request bytes), a Content-Length, and that
 *    many body bytes (none for 204, 100, and for a HEAD request's answer), a text body
 *    being one line of printable ASCII; nothing but answers on the wire, nothing after an
 *    answer with "Connection: close";
 *  - the server does not end the connection once the client is done (a bounded number of
 *    loop turns), or the loop keeps a handle after it (uv_loop_alive);
 *  - an event in the rings breaks event.h's invariant (UTF-8, no control character, inside
 *    its arena, a valid JSON record), or events were taken with no 2xx answer;
 *  - a dead-letter record is not a JSON object with a reason;
 *  - and, under ASan/UBSan, any memory error, undefined behaviour or leak.
 */
#include "clickd/config.h"
#include "clickd/http.h"
#include "clickd/ingest.h"
#include "clickd/pipeline.h"
#include "clickd/ring.h"
#include "clickd/sink.h"

#include "fuzz_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <yajl/yajl_tree.h>

#define SHARDS     2
#define RING_SLOTS 16 /* small, so that a batch can fill a ring: the 503 path */
/* Loop turns without any progress before the server counts as stuck. */
#define STUCK_TURNS 20000
#define OUT_MAX     (4 << 20) /* answers read back, at most (more is a failure) */

/* ---- a dead-letter sink that checks each record ---- */

struct check_sink {
	struct sink base;
	size_t dead_letters;
};

static int check_sink_write(struct sink *s, enum sink_stream stream, const char *key,
                            size_t key_len, const char *record, size_t record_len,
                            int64_t received_at_ms)
{
	struct check_sink *c = (struct check_sink *)s;
	char *text = malloc(record_len + 1);
	const char *reason_path[] = {"reason", NULL};
	yajl_val v, reason;

	(void)key;
	(void)key_len;
	(void)received_at_ms;
	CHECK(stream == SINK_DEAD_LETTERS);
	CHECK(text != NULL);
	memcpy(text, record, record_len);
	text[record_len] = '\0';
	CHECK(strlen(text) == record_len);
	v = yajl_tree_parse(text, NULL, 0);
	if (v == NULL || !YAJL_IS_OBJECT(v))
		fprintf(stderr, "dead letter not a JSON object: %s\n", text);
	CHECK(v != NULL && YAJL_IS_OBJECT(v));
	reason = yajl_tree_get(v, reason_path, yajl_t_string);
	CHECK(reason != NULL && YAJL_GET_STRING(reason)[0] != '\0');
	fuzz_check_reason(YAJL_GET_STRING(reason));
	yajl_tree_free(v);
	free(text);
	c->dead_letters++;
	return 0;
}

static int check_sink_poll(struct sink *s, int64_t now_ms)
{
	(void)s;
	(void)now_ms;
	return 0;
}

static int check_sink_flush(struct sink *s, int timeout_ms)
{
	(void)s;
	(void)timeout_ms;
	return 0;
}

static const struct sink_ops check_sink_ops = {
    .name = "fuzz",
    .write = check_sink_write,
    .poll = check_sink_poll,
    .flush = check_sink_flush,
};

/* ---- the world, made once ---- */

static uv_loop_t loop;
static struct config configs[2];
static struct ring rings[SHARDS];
static struct check_sink dead_letter_sink = {.base = {.ops = &check_sink_ops}};
static struct pipeline *pl;
static struct ingest ix;
static struct http_server *srv;

static const struct http_limits limits_normal = {
    .max_connections = 1,
    .max_header_bytes = 1024,
    .max_headers = 8,
    .max_url_bytes = 512,
    .max_body_bytes = 2048,
    .idle_timeout_ms = 600000, /* never, within one input */
};

static void load_config(struct config *cfg, char *const *sets, size_t n)
{
	char err[256];

	if (config_load(cfg, NULL, sets, n, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_http_conn: config: %s\n", err);
		abort();
	}
}

static void setup(void)
{
	static char *const small[] = {
	    "http.cors_origins=*",
	    "http.trusted_proxies=10.0.0.0/8,2001:db8::/32",
	    "limits.max_batch=4",
	    "limits.max_fields=8",
	    "limits.max_json_depth=3",
	    "limits.max_string_bytes=64",
	    "limits.dead_letter_payload_bytes=64",
	};
	static char *const other[] = {
	    "http.cors_origins=https://shop.example",
	    "http.cookie_domain=shop.example",
	    "http.cookie_secure=false",
	    "http.cookie_max_age_s=0",
	    "limits.invalid_utf8=replace",
	    "limits.control_chars=reject",
	    "limits.max_batch=3",
	    "privacy.anonymize_ip=false",
	    "privacy.honor_gpc=false",
	};
	struct shard *shards[SHARDS] = {NULL, NULL}; /* pipeline_wake is never called */
	struct http_server *s;

	if (uv_loop_init(&loop) != 0)
		abort();
	load_config(&configs[0], small, sizeof(small) / sizeof(small[0]));
	load_config(&configs[1], other, sizeof(other) / sizeof(other[0]));
	for (int i = 0; i < SHARDS; i++)
		if (ring_init(&rings[i], RING_SLOTS, sizeof(struct event)) != 0)
			abort();
	pl = pipeline_new(rings, shards, SHARDS, &dead_letter_sink.base,
	                  (size_t)configs[0].limits_dead_letter_payload_bytes);
	if (pl == NULL || ingest_init(&ix, &configs[0], pl) != 0)
		abort();
	if (http_server_new(&loop, -1, "fuzz", &limits_normal, ingest_http_handle,
	                    ingest_http_reject, &ix, &s) != 0)
		abort();
	srv = s;
}

/* ---- one connection ---- */

struct client {
	int fd;
	char *out; /* what the server answered */
	size_t out_len;
	bool eof;
};

static void set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);
	CHECK(flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0);
}

/* Reads what the server has sent; true when anything came (or the end). */
static bool client_read(struct client *c)
{
	static char buf[65536];
	bool progress = false;

	while (!c->eof) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET)) {
			c->eof = true;
			return true;
		}
		if (n < 0) {
			CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
			return progress;
		}
		CHECK(c->out_len + (size_t)n <= OUT_MAX);
		memcpy(c->out + c->out_len, buf, (size_t)n);
		c->out_len += (size_t)n;
		progress = true;
	}
	return progress;
}

/* Runs the loop once without blocking. */
static void turn(void)
{
	uv_run(&loop, UV_RUN_NOWAIT);
}

/* Writes all of data[0..len), turning the loop and reading answers while the socket is
 * full. A server that has closed makes the rest of the input moot. */
static void client_write(struct client *c, const uint8_t *data, size_t len)
{
	size_t done = 0, stuck = 0;

	while (done < len && !c->eof) {
		ssize_t n = send(c->fd, data + done, len - done, MSG_NOSIGNAL);
		if (n > 0) {
			done += (size_t)n;
			stuck = 0;
			continue;
		}
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return;
		CHECK(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
		turn();
		if (!client_read(c))
			CHECK(++stuck < STUCK_TURNS);
	}
}

/* Turns the loop until the server has ended the connection (the client reads EOF). */
static void client_wait_end(struct client *c, bool quiet)
{
	size_t stuck = 0;

	while (!c->eof) {
		if (quiet)
			uv_run(&loop, UV_RUN_ONCE); /* the 1 ms timer wakes it */
		else
			turn();
		if (client_read(c))
			stuck = 0;
		else if (++stuck >= STUCK_TURNS)
			fprintf(stderr, "the server did not end the connection\n");
		CHECK(stuck < STUCK_TURNS);
	}
}

/* ---- answers ---- */

static bool token_char(unsigned char ch)
{
	return ch > 0x20 && ch < 0x7F && strchr("()<>@,;:\\\"/[]?={}", ch) == NULL;
}

static const char *find_crlf(const char *p, const char *end)
{
	for (const char *q = p; q + 1 < end; q++)
		if (q[0] == '\r' && q[1] == '\n')
			return q;
	return NULL;
}

/*
 * Checks the answers in out[0..len) one by one. may_head: the input holds "HEAD", so an
 * answer may be a HEAD request's (a Content-Length without its body: then the next answer
 * or the end follows at once). Returns the number of 2xx answers.
 */
static size_t check_answers(const char *out, size_t len, bool may_head)
{
	const char *p = out, *end = out + len;
	size_t ok = 0;
	bool closed = false;

	while (p < end) {
		const char *line_end = find_crlf(p, end);
		char reason[64];
		int status;
		long long content_length = -1;
		bool close = false, text = false;

		CHECK(!closed); /* nothing after an answer that closes the connection */
		CHECK(line_end != NULL);
		CHECK(line_end - p > 13 && memcmp(p, "HTTP/1.1 ", 9) == 0);
		CHECK(p[9] >= '1' && p[9] <= '5' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' &&
		      p[11] <= '9' && p[12] == ' ');
		status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
		CHECK((size_t)(line_end - p - 13) < sizeof(reason));
		memcpy(reason, p + 13, (size_t)(line_end - p - 13));
		reason[line_end - p - 13] = '\0';
		CHECK(strcmp(reason, http_status_text(status)) == 0 &&
		      strcmp(reason, "Unknown") != 0);
		p = line_end + 2;
		for (;;) {
			const char *colon;
			line_end = find_crlf(p, end);
			CHECK(line_end != NULL);
			if (line_end == p)
				break;
			colon = memchr(p, ':', (size_t)(line_end - p));
			CHECK(colon != NULL && colon > p && colon + 1 < line_end &&
			      colon[1] == ' ');
			for (const char *q = p; q < colon; q++)
				CHECK(token_char((unsigned char)*q));
			for (const char *q = colon + 2; q < line_end; q++)
				CHECK((unsigned char)*q >= 0x20 ? *q != 0x7F : *q == '\t');
			if (colon - p == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
				CHECK(content_length < 0);
				content_length = strtoll(colon + 2, NULL, 10);
				CHECK(content_length >= 0 && content_length <= 4096);
			}
			if (colon - p == 12 && strncasecmp(p, "Content-Type", 12) == 0 &&
			    line_end - colon - 2 >= 10 && memcmp(colon + 2, "text/plain", 10) == 0)
				text = true;
			if (colon - p == 10 && strncasecmp(p, "Connection", 10) == 0 &&
			    line_end - colon - 2 == 5 && memcmp(colon + 2, "close", 5) == 0)
				close = true;
			p = line_end + 2;
		}
		p = line_end + 2;
		if (status == 100) {
			CHECK(content_length < 0);
			continue;
		}
		CHECK(content_length >= 0);
		if (status == 204)
			CHECK(content_length == 0);
		if (content_length > 0 && may_head &&
		    (p == end || ((size_t)(end - p) >= 9 && memcmp(p, "HTTP/1.1 ", 9) == 0)))
			content_length = 0; /* a HEAD request's answer */
		CHECK((size_t)(end - p) >= (size_t)content_length);
		/* A text answer (a reason) is one line of printable ASCII: nothing of the
		 * request is echoed raw. */
		for (long long k = 0; text && k < content_length; k++)
			CHECK((p[k] >= 0x20 && p[k] < 0x7F) ||
			      (p[k] == '\n' && k == content_length - 1));
		p += content_length;
		if (status >= 200 && status < 300)
			ok++;
		closed = close;
	}
	return ok;
}

/* ---- events ---- */

/* Takes every event out of the rings, checking each; returns how many. */
static size_t drain_rings(void)
{
	static char record[RECORD_EVENT_MAX_BYTES];
	size_t total = 0;

	for (int i = 0; i < SHARDS; i++) {
		size_t n = ring_peek(&rings[i], RING_SLOTS);
		for (size_t k = 0; k < n; k++) {
			const struct event *ev = ring_slot_read(&rings[i], k);
			fuzz_check_event(ev, record, sizeof(record));
			CHECK(pipeline_shard_of(ev, SHARDS) == (size_t)i);
		}
		ring_release(&rings[i], n);
		total += n;
	}
	return total;
}

/* ---- the run ---- */

static uint64_t hash_bytes(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < size; i++) {
		h ^= data[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void peer_of(unsigned pick, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (pick == 2) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		inet_pton(AF_INET6, "2001:db8::7", &a->sin6_addr);
		a->sin6_port = htons(40000);
		return;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	inet_pton(AF_INET, pick == 1 ? "10.1.2.3" : "127.0.0.1", &a->sin_addr);
	a->sin_port = htons(40000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	static char *out;
	struct http_limits limits = limits_normal;
	struct sockaddr_storage peer;
	struct client c = {0};
	uint64_t h;
	int fds[2];
	unsigned setup_byte;
	bool quiet;
	size_t pos, answered_ok, events = 0;

	if (!ready) {
		setup();
		out = malloc(OUT_MAX);
		CHECK(out != NULL);
		ready = true;
	}
	if (size == 0)
		return 0;
	setup_byte = data[0];
	data++;
	size--;
	h = hash_bytes(data, size);
	quiet = (setup_byte & 0x10) != 0;

	ingest_reconfigure(&ix, &configs[setup_byte & 1]);
	limits.idle_timeout_ms = quiet ? 1 : limits_normal.idle_timeout_ms;
	http_server_set_limits(srv, &limits);
	peer_of((setup_byte >> 1) % 3, &peer);

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
	set_nonblocking(fds[1]);
	CHECK(http_server_adopt(srv, fds[0], (struct sockaddr *)&peer) == 0);
	c.fd = fds[1];
	c.out = out;

	/* The input in pieces: 1 to 64 bytes, or the rest, as the hash says. */
	for (pos = 0; pos < size && !c.eof;) {
		size_t piece = (h & 7) == 0 ? size - pos : 1 + (size_t)(h >> 3 & 63);
		if (piece > size - pos)
			piece = size - pos;
		client_write(&c, data + pos, piece);
		pos += piece;
		h = h * 6364136223846793005ULL + 1442695040888963407ULL;
		turn();
		client_read(&c);
		if (h & 0x100)
			events += drain_rings(); /* as a shard would, now and then */
	}
	if (!quiet)
		shutdown(c.fd, SHUT_WR);
	client_wait_end(&c, quiet);
	close(c.fd);
	for (size_t i = 0; uv_loop_alive(&loop); i++) {
		CHECK(i < STUCK_TURNS);
		turn();
	}
	CHECK(http_server_connections(srv) == 0);

	if (getenv("FUZZ_HTTP_CONN_PRINT") != NULL) { /* to look at what an input gets */
		fprintf(stderr, "---- %zu bytes answered:\n", c.out_len);
		fwrite(c.out, 1, c.out_len, stderr);
	}
	answered_ok = check_answers(c.out, c.out_len, memmem(data, size, "HEAD", 4) != NULL);
	events += drain_rings();
	CHECK(events == 0 || answered_ok > 0);
	return 0;
}
