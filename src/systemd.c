/*
 * systemd.c - sd_notify wrappers, the watchdog's ping-or-withhold decision, and the sockets
 * systemd passes (see systemd.h). Built on libsystemd (sd-daemon).
 *
 * Passed sockets are checked once, at start: an unnamed or unknown one, one named twice, or
 * one of the wrong kind stops the start with a reason that names it, rather than serving on
 * a socket nobody asked for. The descriptors stay here until systemd_listen_close; listeners
 * get dups, so each can be closed by its own loop without touching the others.
 */
#include "clickd/systemd.h"

#include "clickd/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

/* ---- socket activation ---- */

static const struct passed_kind {
	const char *name;
	int type;
	int listening; /* for sd_is_socket_inet: 1 must listen, -1 not checked */
	const char *what;
} kinds[] = {
    {"http", SOCK_STREAM, 1, "a listening TCP socket"},
    {"udp", SOCK_DGRAM, -1, "a UDP socket"},
    {"admin", SOCK_STREAM, 1, "a listening TCP socket"},
};

#define KIND_COUNT (sizeof(kinds) / sizeof(kinds[0]))

static int passed_fds[KIND_COUNT] = {-1, -1, -1};

static int kind_index(const char *name)
{
	for (size_t k = 0; k < KIND_COUNT; k++)
		if (name && strcmp(name, kinds[k].name) == 0)
			return (int)k;
	return -1;
}

static int take_passed(int fd, const char *name, char *err, size_t errlen)
{
	int k = kind_index(name);

	if (k < 0 && (!name || strcmp(name, "unknown") == 0)) {
		snprintf(err, errlen,
		         "socket activation: the socket passed as fd %d has no name; name each "
		         "socket http, udp or admin (FileDescriptorName= in the .socket unit)",
		         fd);
		return -EINVAL;
	}
	if (k < 0) {
		snprintf(err, errlen,
		         "socket activation: the socket passed as fd %d is named '%s'; clickd "
		         "takes http, udp and admin (FileDescriptorName= in the .socket unit)",
		         fd, name);
		return -EINVAL;
	}
	if (passed_fds[k] >= 0) {
		snprintf(err, errlen,
		         "socket activation: two sockets are named '%s' (fd %d and fd %d); one "
		         "each is expected",
		         name, passed_fds[k], fd);
		return -EINVAL;
	}
	if (sd_is_socket_inet(fd, AF_UNSPEC, kinds[k].type, kinds[k].listening, 0) <= 0) {
		snprintf(err, errlen,
		         "socket activation: the socket '%s' (fd %d) is not %s on IPv4 or IPv6 "
		         "(ListenStream= for http and admin, ListenDatagram= for udp)",
		         name, fd, kinds[k].what);
		return -EINVAL;
	}
	passed_fds[k] = fd;
	return 0;
}

int systemd_listen_init(char *err, size_t errlen)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	int rc = 0;

	if (n < 0) {
		snprintf(err, errlen, "socket activation: bad LISTEN_FDS: %s", strerror(-n));
		return -EINVAL;
	}
	for (int i = 0; i < n && rc == 0; i++)
		rc = take_passed(SD_LISTEN_FDS_START + i, names ? names[i] : NULL, err, errlen);
	if (names) {
		for (int i = 0; names[i]; i++)
			free(names[i]);
		free(names);
	}
	if (rc < 0) {
		for (size_t k = 0; k < KIND_COUNT; k++)
			passed_fds[k] = -1;
		for (int i = 0; i < n; i++)
			close(SD_LISTEN_FDS_START + i);
		return rc;
	}
	return n;
}

bool systemd_listen_passed(const char *name)
{
	int k = kind_index(name);
	return k >= 0 && passed_fds[k] >= 0;
}

int systemd_listen_fd(const char *name)
{
	int k = kind_index(name);
	int fd;

	if (k < 0 || passed_fds[k] < 0)
		return -ENOENT;
	fd = fcntl(passed_fds[k], F_DUPFD_CLOEXEC, 3);
	return fd < 0 ? -errno : fd;
}

void systemd_listen_close(void)
{
	for (size_t k = 0; k < KIND_COUNT; k++) {
		if (passed_fds[k] >= 0)
			close(passed_fds[k]);
		passed_fds[k] = -1;
	}
}

/* ---- notifications ---- */

bool systemd_notify_enabled(void)
{
	static int cached = -1; /* main thread only */

	if (cached < 0) {
		const char *s = getenv("NOTIFY_SOCKET");
		cached = s && s[0];
	}
	return cached;
}

static void notify(const char *text)
{
	static bool warned;
	int rc;

	if (!systemd_notify_enabled())
		return;
	rc = sd_notify(0, text);
	if (rc < 0 && !warned) {
		warned = true;
		log_warn("systemd", "msg=\"cannot notify systemd\" err=\"%s\"", strerror(-rc));
	}
}

void systemd_notify_ready(void)
{
	notify("READY=1\nSTATUS=Ready: taking beacons");
}

void systemd_notify_reloading(void)
{
	char text[128];
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* MONOTONIC_USEC tells systemd which reload this is (Type=notify-reload needs it). */
	snprintf(text, sizeof(text),
	         "RELOADING=1\nSTATUS=Reloading the config\nMONOTONIC_USEC=%" PRIu64,
	         (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
	notify(text);
}

void systemd_notify_stopping(void)
{
	notify("STOPPING=1\nSTATUS=Stopping: draining connections, closing sessions, flushing");
}

void systemd_notify_status(const char *fmt, ...)
{
	char text[256] = "STATUS=";
	size_t head = strlen(text);
	va_list ap;

	if (!systemd_notify_enabled())
		return;
	va_start(ap, fmt);
	vsnprintf(text + head, sizeof(text) - head, fmt, ap);
	va_end(ap);
	for (char *p = text + head; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' '; /* one line: a newline would start another assignment */
	notify(text);
}

/* ---- watchdog ---- */

uint64_t systemd_watchdog_usec(void)
{
	static int known; /* main thread only */
	static uint64_t usec;

	if (!known) {
		known = 1;
		if (!systemd_notify_enabled() || sd_watchdog_enabled(0, &usec) <= 0)
			usec = 0;
	}
	return usec;
}

void systemd_watchdog_feed(const char *stuck_loop, int64_t silent_ms)
{
	static bool withheld; /* main thread only */

	if (stuck_loop) {
		if (!withheld)
			log_error("systemd",
			          "msg=\"watchdog pings withheld: an event loop is stuck; systemd "
			          "restarts clickd unless it recovers\" loop=%s silent_ms=%lld "
			          "watchdog_ms=%llu",
			          stuck_loop, (long long)silent_ms,
			          (unsigned long long)(systemd_watchdog_usec() / 1000));
		withheld = true;
		return;
	}
	if (withheld)
		log_warn("systemd", "msg=\"watchdog pings resume: every event loop is alive\"");
	withheld = false;
	notify("WATCHDOG=1");
}

int64_t systemd_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
