/*
 * systemd.h - clickd as a systemd service (Type=notify): readiness, status, reload and stop
 * notifications, the watchdog, and socket activation.
 *
 * Notifications (sd_notify(3)) go to $NOTIFY_SOCKET. Without it every systemd_notify_* and
 * systemd_watchdog_* call is a no-op, so clickd runs the same by hand, in tests and under
 * systemd. What the daemon says, and when:
 *   READY=1      once every listener is bound, every sink is ready and every thread runs
 *                (systemd_notify_ready); again when a reload ends;
 *   RELOADING=1  with MONOTONIC_USEC= when a reload (SIGHUP) begins (systemd_notify_reloading);
 *                the reload code calls systemd_notify_ready() when it ends, whether the new
 *                config was applied or refused (systemd then leaves the "reloading" state);
 *   STATUS=      live figures every SYSTEMD_STATUS_INTERVAL_MS (systemd_notify_status);
 *   STOPPING=1   when the drain begins (systemd_notify_stopping); systemd then bounds the stop
 *                with TimeoutStopSec= and no longer expects watchdog pings;
 *   WATCHDOG=1   from the main loop every half WATCHDOG_USEC, but only while every event loop
 *                shows progress (systemd_watchdog_feed; main.c judges the loops): a stuck loop
 *                stops the pings and systemd restarts the service.
 *
 * Socket activation (sd_listen_fds_with_names(3)): systemd (clickd.socket) may pass listening
 * sockets named by FileDescriptorName=: "http" and "admin" (listening TCP), "udp" (UDP). A
 * passed socket replaces its *.listen key. Every listener that uses it gets its own dup
 * (systemd_listen_fd), so at stop clickd closes only its copies: the socket itself, and the
 * connections waiting in its backlog, stay with systemd for the next process.
 *
 * Threads: the main thread (start-up, the main loop). sd_notify itself is thread-safe.
 * State: process-wide (the environment is): the passed sockets, the watchdog's "withheld"
 * flag.
 */
#ifndef CLICKD_SYSTEMD_H
#define CLICKD_SYSTEMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How often STATUS= is refreshed (one datagram to systemd: cheap). */
#define SYSTEMD_STATUS_INTERVAL_MS 2000

/* ---- socket activation ---- */

/* Takes the sockets systemd passed (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID; the variables are
 * then removed from the environment). Each must be named "http", "udp" or "admin", at most
 * once, and be of the right kind (listening TCP for http and admin, UDP for udp). Returns how
 * many were passed (0: no socket activation), or -EINVAL with the reason in err. Call once,
 * before the listeners are made. */
int systemd_listen_init(char *err, size_t errlen);

/* Was a socket named `name` ("http", "udp", "admin") passed? */
bool systemd_listen_passed(const char *name);

/* A new descriptor (close-on-exec dup) for the passed socket `name`, owned by the caller;
 * -ENOENT when none was passed, or another negative errno. */
int systemd_listen_fd(const char *name);

/* Closes the passed descriptors themselves (each listener has its own dup by now). */
void systemd_listen_close(void);

/* ---- notifications ---- */

/* True when $NOTIFY_SOCKET is set: there is someone to tell. */
bool systemd_notify_enabled(void);

/* READY=1: at start once ready, and at the end of every reload. */
void systemd_notify_ready(void);

/* RELOADING=1 and MONOTONIC_USEC=<now>: when a reload begins. */
void systemd_notify_reloading(void);

/* STOPPING=1 (and a STATUS= saying so): when the drain begins. */
void systemd_notify_stopping(void);

/* STATUS=<text>: one line, shown by `systemctl status`. */
void systemd_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- watchdog ---- */

/* WATCHDOG_USEC when the watchdog is on for this process (WATCHDOG_PID, if set, is ours), or 0.
 */
uint64_t systemd_watchdog_usec(void);

/* Called by the main loop every half watchdog interval with the name of a loop that has shown
 * no progress within the interval (and for how long), or NULL when every loop is alive:
 * pings (WATCHDOG=1) only then. Logs once when pings are first withheld (naming the loop)
 * and once when they resume. */
void systemd_watchdog_feed(const char *stuck_loop, int64_t silent_ms);

/* CLOCK_MONOTONIC in ms: the clock the loops' heartbeats use. */
int64_t systemd_monotonic_ms(void);

#endif
