/*
 * ingest_udp.c - UDP beacons with recvmmsg (UV_UDP_RECVMMSG): one or more beacons per
 * datagram, one per line (query string or JSON). Runs on its ingest loop.
 *
 * Back-pressure. UDP cannot tell a sender to wait, but the kernel's receive buffer
 * (udp.recv_buffer_bytes) can hold a burst while a shard catches up. So when a ring to a
 * shard is full, the datagram that did not fit is held, reading stops (uv_udp_recv_stop)
 * and a timer retries it (every 50 us to 1 ms, see schedule_retry) until it is in; then
 * reading resumes. Only when the kernel's buffer overflows is anything lost, and the
 * kernel counts it: sampled from SO_MEMINFO into clickd_udp_kernel_drops_total (libuv 1.44
 * gives recvmmsg no control buffer, so SO_RXQ_OVFL cannot be read). clickd itself gives
 * beacons up only at shutdown, when the rings stay full past shutdown.drain_timeout_ms
 * (clickd_udp_drops_total).
 *
 * A datagram's beacons go in as far as they fit: the pass that meets a full ring commits
 * what it submitted and remembers how many good beacons are in (`taken`); the next pass
 * decodes the datagram again (decoding is deterministic: same bytes, same receive time,
 * same options) and skips those. So a datagram holding more beacons than a ring has slots
 * still goes in, and a retry duplicates nothing. Bad beacons are dead-lettered by the
 * first pass only.
 *
 * libuv hands a recvmmsg batch (up to UDP_BATCH datagrams) to on_recv one datagram at a
 * time, and stopping the receive in the middle of a batch would silently lose the rest of
 * it. So once a datagram is held, the datagrams after it in the same batch are held too,
 * and reading stops at the batch's end (the UV_UDP_MMSG_FREE callback).
 *
 * Memory: one receive buffer of UDP_BATCH datagrams of 64 KiB, allocated with the handle
 * and handed to libuv for every read (libuv splits it into per-datagram chunks). Held
 * datagrams stay where libuv put them in that buffer (no copy): nothing reads into it
 * while any is held, so at most UDP_BATCH are held.
 */
#include "clickd/ingest.h"

#include "clickd/log.h"
#include "clickd/net.h"

#include <errno.h>
#include <linux/sock_diag.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define UDP_DATAGRAM_MAX        65536
#define UDP_BATCH               20     /* libuv reads at most 20 datagrams per recvmmsg */
#define UDP_DRAIN_MAX_DATAGRAMS 100000 /* bound on what shutdown reads from the socket */
/* How soon a held datagram is tried again (see schedule_retry): UDP_RETRY_MIN_US after a
 * retry that took beacons, doubling up to UDP_RETRY_MAX_US while retries take none. */
#define UDP_RETRY_MIN_US 50
#define UDP_RETRY_MAX_US 1000
/* How often the kernel's drop count is read (one getsockopt per socket). */
#define UDP_KERNEL_DROPS_SAMPLE_MS 250
#define UDP_PROTOCOL               "native"

/* A datagram waiting for room in a ring. */
struct held_datagram {
	const char *data; /* in ingest_udp.buf, borrowed until the datagram is in */
	size_t len;
	int64_t received_at_ms;
	size_t taken; /* good beacons already in the rings, skipped by the next pass */
	bool decoded; /* a pass has run: its bad beacons are dead-lettered */
	char peer[64];
};

/* One decoding pass over a datagram (see datagram_pass). */
struct pass {
	struct ingest_udp *u;
	struct beacon_request br;
	const char *peer;
	bool dead_letters; /* the first pass: bad beacons become dead letters */
	bool count_all;    /* go on decoding after a full ring, to count the beacons left */
	size_t skip;       /* good beacons taken by earlier passes */
	size_t good;       /* good beacons met so far */
	size_t submitted;
	size_t repaired; /* of those, beacons whose text was repaired (text.h) */
	bool full;       /* a ring refused a beacon: nothing more is submitted */
};

struct ingest_udp {
	uv_udp_t udp;
	uv_poll_t retry_poll; /* on retry_fd */
	int retry_fd;         /* a timerfd (uv_timer counts whole ms), owned */
	unsigned retry_us;    /* its interval while armed, 0 when disarmed */
	bool retry_ready;     /* retry_poll is initialised */
	uv_timer_t sample_timer;
	struct ingest *ix;
	int open_handles;
	bool receiving;
	bool closing;
	void (*done)(void *arg);
	void *done_arg;
	uint64_t beacons_taken; /* by every pass: a retry that moves it made progress */
	int64_t last_error_log_ms;
	int64_t last_kernel_drops_log_ms;
	uint32_t kernel_drops_seen; /* SK_MEMINFO_DROPS at the last sample */
	/* Shutdown: until when the rings may be waited for, and how many more datagrams the
	 * socket may give. */
	int64_t drain_deadline_ms;
	size_t drain_reads_left;
	/* Held datagrams, in arrival order: held[held_first .. held_first + held_count). */
	struct held_datagram held[UDP_BATCH];
	size_t held_first, held_count;
	struct event ev; /* scratch: one beacon at a time */
	char *buf;       /* UDP_BATCH * UDP_DATAGRAM_MAX bytes, owned */
};

static int64_t wall_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- decoding ---- */

static void pass_dead_letter(struct pass *p, int code, const char *reason, const char *payload,
                             size_t payload_len)
{
	pipeline_dead_letter(p->u->ix->pl, p->br.received_at_ms, pipeline_reason_class(code),
	                     reason, UDP_PROTOCOL, p->peer, payload, payload_len);
}

/* A good beacon: skipped when an earlier pass took it, else submitted while the rings
 * have room. A non-zero return stops a JSON array's decoding (nothing more to do). */
static int pass_take(void *ud, struct event *ev)
{
	struct pass *p = ud;

	if (p->good++ < p->skip)
		return 0;
	if (!p->full && pipeline_submit(p->u->ix->pl, ev) == 0) {
		p->submitted++;
		p->repaired += ev->text_repaired;
		return 0;
	}
	p->full = true;
	return p->dead_letters || p->count_all ? 0 : 1;
}

static void pass_reject(void *ud, int code, const char *payload, size_t payload_len,
                        const char *reason)
{
	pass_dead_letter(ud, code, reason, payload, payload_len);
}

static void pass_line(struct pass *p, const char *line, size_t n)
{
	const struct beacon_options *opt = &p->u->ix->beacon;
	char err[160];
	int rc;

	if (line[0] == '{' || line[0] == '[') {
		rc = beacon_decode_json(line, n, &p->br, opt, pass_take,
		                        p->dead_letters ? pass_reject : NULL, p, err, sizeof(err));
	} else {
		rc = beacon_decode_query(line, n, &p->br, opt, &p->u->ev, err, sizeof(err));
		if (rc == 0)
			pass_take(p, &p->u->ev);
	}
	if (rc < 0 && p->dead_letters)
		pass_dead_letter(p, rc, err, line, n); /* its own code: the reason class */
}

/*
 * Decodes d and puts its beacons into the rings as far as they fit, after the ones an
 * earlier pass took; commits what it submitted. Bad beacons are dead-lettered on the
 * first pass only. Returns how many good beacons are still out: 0 when d is all in.
 * With count_all the whole datagram is decoded even after a full ring, so the count is
 * exact; otherwise decoding stops there and any non-zero result means "not yet".
 */
static size_t datagram_pass(struct ingest_udp *u, struct held_datagram *d, bool count_all)
{
	struct pass p = {
	    .u = u,
	    .br = {.received_at_ms = d->received_at_ms, .protocol = UDP_PROTOCOL},
	    .peer = d->peer[0] ? d->peer : NULL,
	    .dead_letters = !d->decoded,
	    .count_all = count_all,
	    .skip = d->taken,
	};
	const char *s = d->data, *end = d->data + d->len;

	/* UDP beacons come from servers and relays, not from the visitor's browser: the
	 * datagram's source is not the visitor's IP (client_ip stays NULL) and there is no
	 * cookie to read or set (no minted visitor ID). */
	while (!(p.full && !p.dead_letters && !count_all)) {
		size_t n;
		const char *line = ingest_next_line(&s, end, &n);
		if (!line)
			break;
		if (n)
			pass_line(&p, line, n);
	}
	if (p.submitted)
		metrics_protocol_events_in(EVENT_PROTOCOL_NATIVE, pipeline_commit(u->ix->pl));
	if (p.repaired)
		metrics_add(METRIC_BEACONS_REPAIRED, p.repaired);
	d->taken += p.submitted;
	u->beacons_taken += p.submitted;
	d->decoded = true;
	if (!p.full)
		return 0;
	return p.good > d->taken ? p.good - d->taken : 1;
}

/* ---- held datagrams ---- */

/* Tries the held datagrams again, in order. Returns true when none is left. */
static bool retry_held(struct ingest_udp *u)
{
	while (u->held_count > 0) {
		if (datagram_pass(u, &u->held[u->held_first], false) > 0)
			return false;
		u->held_first++;
		u->held_count--;
	}
	u->held_first = 0;
	return true;
}

static void on_retry(uv_poll_t *h, int status, int events);

/* Arms the retry timerfd to fire every `us` microseconds, or disarms it (0). */
static void set_retry_interval(struct ingest_udp *u, unsigned us)
{
	struct itimerspec its = {
	    .it_interval = {.tv_nsec = (long)us * 1000},
	    .it_value = {.tv_nsec = (long)us * 1000},
	};

	if (us == u->retry_us)
		return;
	if (timerfd_settime(u->retry_fd, 0, &its, NULL) < 0)
		log_error("udp", "msg=\"cannot arm the retry timer\" err=\"%s\"", strerror(errno));
	if (us && !u->retry_us)
		uv_poll_start(&u->retry_poll, UV_READABLE, on_retry);
	else if (!us)
		uv_poll_stop(&u->retry_poll);
	u->retry_us = us;
}

/*
 * Chooses when the held datagrams are tried next. A shard drains a full ring in tens of
 * microseconds, so a whole-millisecond uv_timer would leave the thread idle most of the
 * time it is paused: with a 64-slot ring that capped ingest at 64 beacons per ms, and
 * the kernel dropped the rest of a steady 150k/s (bench/udp.sh). So a timerfd retries
 * UDP_RETRY_MIN_US after a retry that took beacons; while retries take none (the shards
 * are stalled, their sink full, say) the interval doubles up to UDP_RETRY_MAX_US.
 */
static void schedule_retry(struct ingest_udp *u, bool progress)
{
	unsigned us = u->retry_us ? u->retry_us * 2 : UDP_RETRY_MIN_US;

	if (progress || us < UDP_RETRY_MIN_US)
		us = UDP_RETRY_MIN_US;
	if (us > UDP_RETRY_MAX_US)
		us = UDP_RETRY_MAX_US;
	set_retry_interval(u, us);
}

/* Stops reading until the held datagrams are in, and wakes the shards now rather than at
 * the end of this loop turn: they have full rings to drain. */
static void pause_reading(struct ingest_udp *u)
{
	if (u->receiving) {
		uv_udp_recv_stop(&u->udp);
		u->receiving = false;
	}
	pipeline_wake(u->ix->pl);
	schedule_retry(u, true);
}

/* A datagram read from the socket: dead-lettered when too long, else into the rings, or
 * held when they are full (and after any datagram already held, so order is kept). */
static void take_datagram(struct ingest_udp *u, const char *data, size_t len, bool truncated,
                          const struct sockaddr *addr, int64_t now_ms)
{
	struct held_datagram *d;

	if (u->held_first + u->held_count >= UDP_BATCH) {
		/* Cannot happen: reading stops while any datagram is held, and one read gives
		 * at most UDP_BATCH. Counted rather than trusted. */
		metrics_add(METRIC_UDP_DROPS, 1);
		return;
	}
	d = &u->held[u->held_first + u->held_count];
	memset(d, 0, sizeof(*d));
	if (addr)
		net_ip_string(addr, d->peer, sizeof(d->peer));
	if (truncated || len > (size_t)u->ix->cfg->udp_max_datagram_bytes) {
		metrics_add(METRIC_UDP_TRUNCATED, 1);
		pipeline_dead_letter(u->ix->pl, now_ms, METRICS_DL_TOO_LARGE,
		                     "datagram longer than udp.max_datagram_bytes", UDP_PROTOCOL,
		                     d->peer[0] ? d->peer : NULL, data, len);
		return;
	}
	d->data = data;
	d->len = len;
	d->received_at_ms = now_ms;
	if (u->held_count == 0) {
		if (datagram_pass(u, d, false) == 0)
			return;
		metrics_add(METRIC_UDP_BACKPRESSURE, 1);
	}
	u->held_count++;
}

static void receive_datagram(struct ingest_udp *u, const char *data, size_t len, bool truncated,
                             const struct sockaddr *addr, int64_t now_ms)
{
	take_datagram(u, data, len, truncated, addr, now_ms);
	/* Counted once its first pass is done: a scrape that sees the datagram also sees
	 * its beacons in clickd_events_in_total, unless it is held. */
	metrics_add(METRIC_UDP_DATAGRAMS, 1);
	metrics_add(METRIC_BYTES_IN, len);
}

/* ---- receiving ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct ingest_udp *u = h->data;
	(void)suggested;
	buf->base = u->buf;
	buf->len = UDP_BATCH * UDP_DATAGRAM_MAX;
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
	struct ingest_udp *u = h->data;

	if (flags & UV_UDP_MMSG_FREE) {
		/* The end of a recvmmsg batch (the buffer is ours and reused): the only safe
		 * place to stop reading, as libuv drops the rest of a batch whose callback
		 * stops the receive. */
		if (u->held_count > 0)
			pause_reading(u);
		return;
	}
	if (nread < 0) {
		int64_t now = wall_clock_ms();
		if (now - u->last_error_log_ms >= 1000) {
			log_warn("udp", "msg=\"receive failed\" err=\"%s\"",
			         uv_strerror((int)nread));
			u->last_error_log_ms = now;
		}
		return;
	}
	if (nread == 0 && addr == NULL)
		return; /* nothing more to read */
	receive_datagram(u, buf->base, (size_t)nread, (flags & UV_UDP_PARTIAL) != 0, addr,
	                 wall_clock_ms());
	/* Without recvmmsg each callback is one read of its own: stopping here is safe. */
	if (u->held_count > 0 && !(flags & UV_UDP_MMSG_CHUNK))
		pause_reading(u);
}

/* Adds the kernel's drops on this socket since the last sample (SK_MEMINFO_DROPS: mostly
 * datagrams that found the receive buffer full) to clickd_udp_kernel_drops_total. */
static void sample_kernel_drops(struct ingest_udp *u)
{
	uint32_t mem[SK_MEMINFO_VARS];
	socklen_t len = sizeof(mem);
	uv_os_fd_t fd;
	uint32_t delta;
	int64_t now;

	if (uv_fileno((uv_handle_t *)&u->udp, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0 ||
	    len <= SK_MEMINFO_DROPS * sizeof(mem[0]))
		return;
	delta = mem[SK_MEMINFO_DROPS] - u->kernel_drops_seen; /* unsigned: wraps right */
	u->kernel_drops_seen = mem[SK_MEMINFO_DROPS];
	if (delta == 0)
		return;
	metrics_add(METRIC_UDP_KERNEL_DROPS, delta);
	now = monotonic_ms();
	if (now - u->last_kernel_drops_log_ms >= 1000) {
		log_warn(
		    "udp",
		    "msg=\"the kernel dropped datagrams: receive buffer full\" datagrams=%u "
		    "hint=\"more ingest threads or shards, or a larger udp.recv_buffer_bytes\"",
		    delta);
		u->last_kernel_drops_log_ms = now;
	}
}

static void on_sample(uv_timer_t *t)
{
	sample_kernel_drops(t->data);
}

static void drain_tick(struct ingest_udp *u);

static void retry(struct ingest_udp *u)
{
	uint64_t before = u->beacons_taken;

	if (u->closing) {
		drain_tick(u);
		return;
	}
	if (!retry_held(u)) {
		schedule_retry(u, u->beacons_taken != before);
		return;
	}
	set_retry_interval(u, 0);
	if (uv_udp_recv_start(&u->udp, on_alloc, on_recv) == 0) {
		u->receiving = true;
		return;
	}
	log_error("udp", "msg=\"cannot resume receiving\"");
}

static void on_retry(uv_poll_t *h, int status, int events)
{
	struct ingest_udp *u = h->data;
	uint64_t expirations;

	(void)status;
	(void)events;
	if (read(u->retry_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		return;
	retry(u);
}

int ingest_udp_new(uv_loop_t *loop, int fd, struct ingest *ix, struct ingest_udp **out)
{
	struct ingest_udp *u = calloc(1, sizeof(*u));
	int rc;

	*out = NULL;
	if (!u)
		return UV_ENOMEM;
	u->buf = malloc(UDP_BATCH * UDP_DATAGRAM_MAX);
	if (!u->buf) {
		free(u);
		return UV_ENOMEM;
	}
	u->ix = ix;
	u->retry_fd = -1;
	rc = uv_udp_init_ex(loop, &u->udp, AF_UNSPEC | UV_UDP_RECVMMSG);
	if (rc < 0) {
		free(u->buf);
		free(u);
		return rc;
	}
	uv_timer_init(loop, &u->sample_timer);
	u->udp.data = u;
	u->sample_timer.data = u;
	u->open_handles = 2;
	*out = u; /* from here on the caller closes it with ingest_udp_close, even on error */
	u->retry_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (u->retry_fd < 0)
		return -errno; /* libuv's codes are negative errnos on Unix */
	rc = uv_poll_init(loop, &u->retry_poll, u->retry_fd);
	if (rc < 0)
		return rc;
	u->retry_poll.data = u;
	u->retry_ready = true;
	u->open_handles++;
	rc = uv_udp_open(&u->udp, fd);
	if (rc == 0)
		rc = uv_udp_recv_start(&u->udp, on_alloc, on_recv);
	if (rc < 0)
		return rc;
	u->receiving = true;
	uv_timer_start(&u->sample_timer, on_sample, UDP_KERNEL_DROPS_SAMPLE_MS,
	               UDP_KERNEL_DROPS_SAMPLE_MS);
	return 0;
}

/* ---- shutdown ---- */

static void on_closed(uv_handle_t *h)
{
	struct ingest_udp *u = h->data;
	void (*done)(void *);
	void *arg;

	if (--u->open_handles > 0)
		return;
	done = u->done;
	arg = u->done_arg;
	if (u->retry_fd >= 0)
		close(u->retry_fd); /* after its poll handle */
	free(u->buf);
	free(u);
	if (done)
		done(arg);
}

static void finish_close(struct ingest_udp *u)
{
	sample_kernel_drops(u);
	if (u->retry_ready)
		uv_close((uv_handle_t *)&u->retry_poll, on_closed);
	uv_close((uv_handle_t *)&u->sample_timer, on_closed);
	uv_close((uv_handle_t *)&u->udp, on_closed);
}

/* Reads the next datagram the kernel holds into the receive buffer (free: nothing is
 * held) and takes it in. Returns false when there is none, or none may be read. */
static bool drain_read(struct ingest_udp *u, int64_t now_ms)
{
	struct sockaddr_storage from;
	socklen_t from_len = sizeof(from);
	uv_os_fd_t fd;
	ssize_t n;

	if (u->drain_reads_left == 0 || uv_fileno((uv_handle_t *)&u->udp, &fd) != 0)
		return false;
	n = recvfrom(fd, u->buf, UDP_DATAGRAM_MAX, MSG_DONTWAIT | MSG_TRUNC,
	             (struct sockaddr *)&from, &from_len);
	if (n < 0)
		return false;
	u->drain_reads_left--;
	receive_datagram(u, u->buf, n > UDP_DATAGRAM_MAX ? UDP_DATAGRAM_MAX : (size_t)n,
	                 n > UDP_DATAGRAM_MAX, from_len ? (struct sockaddr *)&from : NULL, now_ms);
	return true;
}

/* The rings stayed full past shutdown.drain_timeout_ms: every datagram left (held, or
 * still in the kernel) gets one last pass, and what does not fit is counted as dropped. */
static void give_up(struct ingest_udp *u)
{
	size_t dropped = 0, datagrams = 0;
	int64_t now = wall_clock_ms();

	for (;;) {
		while (u->held_count > 0) {
			size_t left = datagram_pass(u, &u->held[u->held_first], true);
			dropped += left;
			datagrams += left > 0;
			u->held_first++;
			u->held_count--;
		}
		u->held_first = 0;
		if (!drain_read(u, now))
			break;
	}
	if (dropped == 0)
		return; /* the last passes took everything */
	metrics_add(METRIC_UDP_DROPS, dropped);
	log_warn("udp",
	         "msg=\"rings to the shards still full after shutdown.drain_timeout_ms: beacons "
	         "dropped\" beacons=%zu datagrams=%zu",
	         dropped, datagrams);
}

/* One step of the shutdown drain: the held datagrams, then what the kernel holds, as long
 * as the rings take them. Closes once everything is in, or at the deadline. */
static void drain_tick(struct ingest_udp *u)
{
	int64_t now = wall_clock_ms();
	uint64_t before = u->beacons_taken;

	while (retry_held(u)) {
		if (!drain_read(u, now)) {
			finish_close(u);
			return;
		}
	}
	if (monotonic_ms() >= u->drain_deadline_ms) {
		give_up(u);
		finish_close(u);
		return;
	}
	schedule_retry(u, u->beacons_taken != before);
}

void ingest_udp_close(struct ingest_udp *u, void (*done)(void *arg), void *arg)
{
	u->done = done;
	u->done_arg = arg;
	u->closing = true;
	u->drain_deadline_ms = monotonic_ms() + u->ix->cfg->shutdown_drain_timeout_ms;
	u->drain_reads_left = UDP_DRAIN_MAX_DATAGRAMS;
	uv_timer_stop(&u->sample_timer);
	if (u->receiving) {
		uv_udp_recv_stop(&u->udp);
		u->receiving = false;
	}
	/* Datagrams held and those the kernel already holds were sent to us: take them
	 * before closing. */
	drain_tick(u);
}
