/*
 * net.h - listening sockets made by hand, so that SO_REUSEPORT can be set before bind
 * (libuv 1.44 has no flag for it); libuv then adopts them with uv_tcp_open/uv_udp_open.
 */
#ifndef CLICKD_NET_H
#define CLICKD_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Creates a non-blocking, close-on-exec TCP socket bound to addr and listening. Returns
 * the fd, or a negative errno with the reason in err. */
int net_listen_tcp(const struct sockaddr_storage *addr, int backlog, char *err, size_t errlen);

/* Creates a non-blocking UDP socket bound to addr with SO_RCVBUF of rcvbuf bytes. */
int net_bind_udp(const struct sockaddr_storage *addr, int rcvbuf, char *err, size_t errlen);

/* Formats the IP part of addr into out. Returns 0 or -EINVAL. */
int net_ip_string(const struct sockaddr *addr, char *out, size_t cap);

/* The port a socket is bound to (for logs and tests using port 0), or -errno. */
int net_local_port(int fd);

#endif
