/*
 * ingest_udp.c - UDP beacons with recvmmsg (UV_UDP_RECVMMSG): one or more beacons per
 * datagram, one per line. UDP has no back-pressure: a beacon the sink cannot take now is
 * dropped and counted (clickd_udp_drops_total). Runs on its ingest loop.
 *
 * Memory: one receive buffer of UDP_BATCH datagrams of 64 KiB, allocated with the handle
 * and handed to libuv for every read (libuv splits it into per-datagram chunks).
 */
#include "clickd/ingest.h"

#include "clickd/log.h"
#include "clickd/net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define UDP_DATAGRAM_MAX        65536
#define UDP_BATCH               20     /* libuv reads at most 20 datagrams per recvmmsg */
#define UDP_DRAIN_MAX_DATAGRAMS 100000 /* bound on what shutdown reads from the socket */

struct ingest_udp {
	uv_udp_t udp;
	struct ingest *ix;
	void (*done)(void *arg);
	void *done_arg;
	int64_t last_error_log_ms;
	char *buf; /* UDP_BATCH * UDP_DATAGRAM_MAX bytes */
};

static int64_t wall_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void handle_datagram(struct ingest_udp *u, const char *data, size_t len, bool truncated,
                            const struct sockaddr *addr, int64_t now_ms)
{
	char peer[64] = "";
	size_t accepted = 0, dropped = 0;

	metrics_add(METRIC_UDP_DATAGRAMS, 1);
	metrics_add(METRIC_BYTES_IN, len);
	if (addr)
		net_ip_string(addr, peer, sizeof(peer));
	if (truncated || len > (size_t)u->ix->cfg->udp_max_datagram_bytes) {
		metrics_add(METRIC_UDP_TRUNCATED, 1);
		pipeline_dead_letter(u->ix->pl, now_ms, METRICS_DL_TOO_LARGE,
		                     "datagram longer than udp.max_datagram_bytes", "native",
		                     peer[0] ? peer : NULL, data, len);
		return;
	}
	ingest_decode_datagram(u->ix, data, len, now_ms, peer[0] ? peer : NULL, &accepted,
	                       &dropped);
	if (dropped)
		metrics_add(METRIC_UDP_DROPS, dropped);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct ingest_udp *u = h->data;
	buf->base = u->buf;
	buf->len = UDP_BATCH * UDP_DATAGRAM_MAX;
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
	struct ingest_udp *u = h->data;

	if (flags & UV_UDP_MMSG_FREE)
		return; /* the buffer is ours and reused */
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
	handle_datagram(u, buf->base, (size_t)nread, (flags & UV_UDP_PARTIAL) != 0, addr,
	                wall_clock_ms());
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
	rc = uv_udp_init_ex(loop, &u->udp, AF_UNSPEC | UV_UDP_RECVMMSG);
	if (rc < 0) {
		free(u->buf);
		free(u);
		return rc;
	}
	u->udp.data = u;
	*out = u;
	rc = uv_udp_open(&u->udp, fd);
	if (rc == 0)
		rc = uv_udp_recv_start(&u->udp, on_alloc, on_recv);
	return rc;
}

static void on_closed(uv_handle_t *h)
{
	struct ingest_udp *u = h->data;
	void (*done)(void *) = u->done;
	void *arg = u->done_arg;
	free(u->buf);
	free(u);
	if (done)
		done(arg);
}

void ingest_udp_close(struct ingest_udp *u, void (*done)(void *arg), void *arg)
{
	uv_os_fd_t fd;
	int64_t now = wall_clock_ms();

	u->done = done;
	u->done_arg = arg;
	uv_udp_recv_stop(&u->udp);
	/* Datagrams the kernel already holds were sent to us: take them before closing. */
	if (uv_fileno((uv_handle_t *)&u->udp, &fd) == 0) {
		for (int i = 0; i < UDP_DRAIN_MAX_DATAGRAMS; i++) {
			struct sockaddr_storage from;
			socklen_t from_len = sizeof(from);
			ssize_t n = recvfrom(fd, u->buf, UDP_DATAGRAM_MAX, MSG_DONTWAIT | MSG_TRUNC,
			                     (struct sockaddr *)&from, &from_len);
			if (n < 0)
				break;
			handle_datagram(u, u->buf,
			                n > UDP_DATAGRAM_MAX ? UDP_DATAGRAM_MAX : (size_t)n,
			                n > UDP_DATAGRAM_MAX, (struct sockaddr *)&from, now);
		}
	}
	uv_close((uv_handle_t *)&u->udp, on_closed);
}
