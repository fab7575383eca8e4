/*
 * net.c - listening sockets made by hand (SO_REUSEPORT before bind), then adopted by
 * libuv. Called from the loop thread at start.
 */
#include "clickd/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static socklen_t addr_len(const struct sockaddr_storage *a)
{
	return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static int socket_for(const struct sockaddr_storage *addr, int type, char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(addr->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "socket: %s", strerror(e));
		return -e;
	}
	/* SO_REUSEPORT lets several threads (and an old and a new process during a restart)
	 * bind the same address; the kernel spreads connections and datagrams over them. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		int e = errno;
		snprintf(err, errlen, "setsockopt: %s", strerror(e));
		close(fd);
		return -e;
	}
	if (addr->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)addr, addr_len(addr)) < 0) {
		int e = errno;
		snprintf(err, errlen, "bind: %s", strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

int net_listen_tcp(const struct sockaddr_storage *addr, int backlog, char *err, size_t errlen)
{
	int fd = socket_for(addr, SOCK_STREAM, err, errlen);
	if (fd < 0)
		return fd;
	if (listen(fd, backlog) < 0) {
		int e = errno;
		snprintf(err, errlen, "listen: %s", strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

int net_bind_udp(const struct sockaddr_storage *addr, int rcvbuf, char *err, size_t errlen)
{
	int fd = socket_for(addr, SOCK_DGRAM, err, errlen);
	if (fd < 0)
		return fd;
	/* Best effort: the kernel caps it at net.core.rmem_max. */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	return fd;
}

int net_ip_string(const struct sockaddr *addr, char *out, size_t cap)
{
	const void *src;
	if (addr->sa_family == AF_INET) {
		src = &((const struct sockaddr_in *)addr)->sin_addr;
	} else if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
		if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr))
			return inet_ntop(AF_INET, (const uint8_t *)&v6->sin6_addr + 12, out,
			                 (socklen_t)cap)
			           ? 0
			           : -EINVAL;
		src = &v6->sin6_addr;
	} else {
		return -EINVAL;
	}
	return inet_ntop(addr->sa_family, src, out, (socklen_t)cap) ? 0 : -EINVAL;
}

int net_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}
