/*
 * udp_anchor.c - the UDP anchor of bench/udp.sh: a bare recvmmsg loop on one socket.
 *
 * What the kernel can hand one thread on this machine, doing close to nothing with it: it
 * receives datagrams in batches (recvmmsg with MSG_WAITFORONE: block for the first, take
 * what else is queued), counts datagrams, bytes and beacons (lines), and nothing else. The
 * socket is made like clickd's (SO_REUSEPORT, SO_RCVBUF asked for the same size).
 *
 *   udp_anchor [-p PORT] [-b BATCH] [-r RCVBUF_BYTES]
 *
 * Binds 127.0.0.1:PORT (0, the default: any free port), prints "port=N" on stdout, then
 * receives until SIGTERM or SIGINT, takes what is still queued, and prints one line of JSON:
 *   {"datagrams":N,"bytes":N,"beacons":N,"truncated":N,"calls":N}
 *
 * Built by bench/udp.sh with `cc -O2`; not part of the CMake build.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define DGRAM_MAX 65536

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static unsigned long long count_lines(const char *p, size_t n)
{
	unsigned long long lines = 0;
	const char *end = p + n, *nl;

	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if (nl > p)
			lines++;
		p = nl + 1;
	}
	if (p < end)
		lines++;
	return lines;
}

int main(int argc, char **argv)
{
	int port = 0, batch = 64, rcvbuf = 4194304, one = 1, opt, fd;
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	struct sigaction act;
	struct timeval tick = {.tv_sec = 0, .tv_usec = 200000};
	static struct mmsghdr msgs[MAX_BATCH];
	static struct iovec iov[MAX_BATCH];
	char *bufs;
	unsigned long long dgrams = 0, bytes = 0, beacons = 0, truncated = 0, calls = 0;

	while ((opt = getopt(argc, argv, "p:b:r:")) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'b':
			batch = atoi(optarg);
			break;
		case 'r':
			rcvbuf = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: udp_anchor [-p PORT] [-b BATCH] [-r RCVBUF]\n");
			return 2;
		}
	}
	if (batch < 1 || batch > MAX_BATCH) {
		fprintf(stderr, "udp_anchor: batch must be 1..%d\n", MAX_BATCH);
		return 2;
	}
	bufs = malloc((size_t)batch * DGRAM_MAX);
	if (!bufs)
		return 1;
	for (int i = 0; i < batch; i++) {
		iov[i].iov_base = bufs + (size_t)i * DGRAM_MAX;
		iov[i].iov_len = DGRAM_MAX;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("udp_anchor: socket");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	/* Wake up now and then, so a signal that lands just before recvmmsg is still seen. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof(tick));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("udp_anchor: bind");
		return 1;
	}

	/* No SA_RESTART: the signal interrupts the blocking recvmmsg. */
	memset(&act, 0, sizeof(act));
	act.sa_handler = on_signal;
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);

	printf("port=%d\n", ntohs(sa.sin_port));
	fflush(stdout);

	for (int draining = 0;;) {
		int n;

		if (stop && !draining)
			draining = 1;
		n = recvmmsg(fd, msgs, (unsigned)batch, draining ? MSG_DONTWAIT : MSG_WAITFORONE,
		             NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if ((errno == EAGAIN || errno == EWOULDBLOCK) && !draining)
				continue; /* the receive timeout: look at stop again */
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break; /* draining: nothing left */
			perror("udp_anchor: recvmmsg");
			return 1;
		}
		calls++;
		for (int i = 0; i < n; i++) {
			unsigned len = msgs[i].msg_len;
			dgrams++;
			bytes += len;
			if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
				truncated++;
			beacons += count_lines(iov[i].iov_base, len);
		}
	}
	printf("{\"datagrams\":%llu,\"bytes\":%llu,\"beacons\":%llu,\"truncated\":%llu,"
	       "\"calls\":%llu,\"batch\":%d}\n",
	       dgrams, bytes, beacons, truncated, calls, batch);
	free(bufs);
	close(fd);
	return 0;
}
