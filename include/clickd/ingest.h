/*
 * ingest.h - the collect side: HTTP requests and UDP datagrams to beacons to the pipeline.
 *
 * One `struct ingest` per ingest loop: it borrows the config snapshot and the pipeline,
 * and owns a small random state for minting visitor IDs. Used from its loop thread only.
 */
#ifndef CLICKD_INGEST_H
#define CLICKD_INGEST_H

#include "clickd/beacon.h"
#include "clickd/config.h"
#include "clickd/http.h"
#include "clickd/pipeline.h"

#include <stdint.h>
#include <string.h>
#include <uv.h>

/* What a request waiting for its acknowledgement is owed, per waiter slot: its
 * connection and deferred answer (http_defer), and whether it asked for the GIF. */
struct ingest_ack_wait {
	struct http_conn *conn; /* borrowed until answered or cancelled; NULL: none */
	uint64_t handle;
	bool pixel;
};

struct ingest {
	const struct config *cfg;
	struct pipeline *pl;
	struct beacon_options beacon;
	/* beacon.affiliate_params: pointers into cfg->affiliate_params (borrowed with cfg). */
	const char *affiliate_params[CONFIG_MAX_LIST];
	uint64_t rng[2]; /* xorshift128+ state for visitor IDs, seeded from getrandom */
	/* kafka.ack_mode=kafka (ingest_acks_start; NULL otherwise): this thread's waiter table
	 * (ack.h; borrowed from the daemon's hub), what each slot owes (owned), and the loop
	 * handles that answer them: ack_async when completions are ready, ack_timer at the
	 * oldest deadline (kafka.ack_timeout_ms). */
	struct ack_table *acks;
	struct ingest_ack_wait *ack_waits;
	size_t ack_slots;
	uv_async_t ack_async;
	uv_timer_t ack_timer;
};

/* Fills ix from the config; cfg and pl are borrowed and must outlive it. Returns 0. */
int ingest_init(struct ingest *ix, const struct config *cfg, struct pipeline *pl);

/* kafka.ack_mode=kafka: collect requests on ix wait for their events to be durable before
 * they are answered (ack.h, http_defer). t (borrowed, slots waiter slots) is this thread's
 * table; its completions wake `loop`. Set the collect server's cancel callback to
 * ingest_http_cancel. Returns 0 or -ENOMEM. */
int ingest_acks_start(struct ingest *ix, uv_loop_t *loop, struct ack_table *t, size_t slots);
/* Stops waiting (after the collect server closed: no request waits any more): no more
 * wake-ups, the handles close, the slots' memory goes. Nothing when not started. */
void ingest_acks_close(struct ingest *ix);
/* http_cancel_fn: a connection closed while its request waited; the waiter is released
 * (its events, when they complete, are ignored). */
void ingest_http_cancel(void *ud, uint64_t tag);

/* Switches ix to another config snapshot (a reload), from ix's own loop thread. */
void ingest_reconfigure(struct ingest *ix, const struct config *cfg);

/* http_handler_fn / http_reject_fn for the collect listener; ud is the struct ingest. */
void ingest_http_handle(void *ud, struct http_conn *conn, const struct http_request *req);
void ingest_http_reject(void *ud, int status, const char *reason, const char *peer_ip,
                        const char *payload, size_t payload_len, size_t target_len);

/* Resolves the client IP of a request: the peer, or, when the peer is a trusted proxy,
 * what http.real_ip_header says: the right-most X-Forwarded-For address that is not a
 * trusted proxy, or the one address of X-Real-IP, CF-Connecting-IP, True-Client-IP or
 * Fastly-Client-IP (missing, repeated or malformed: the peer, counted in
 * clickd_http_real_ip_fallback_total). Writes it into out. */
void ingest_client_ip(const struct config *cfg, const struct http_request *req, char *out,
                      size_t cap);

/* What `path` is to the collect listener's router (path_alias.h): the table
 * http.path_aliases is checked against. */
enum path_route_kind ingest_route_kind(const char *path, size_t len);

/* The next line of a body or datagram (one beacon per line): its start, with its length
 * without the "\n" or "\r\n" in *len, and *p moved past it; NULL once *p reaches end.
 * Empty lines come back with *len 0 (callers skip them). */
static inline const char *ingest_next_line(const char **p, const char *end, size_t *len)
{
	const char *line = *p, *nl;

	if (line >= end)
		return NULL;
	nl = memchr(line, '\n', (size_t)(end - line));
	*p = nl ? nl + 1 : end;
	*len = (size_t)((nl ? nl : end) - line);
	if (*len && line[*len - 1] == '\r')
		(*len)--;
	return line;
}

/* ---- UDP ----
 * A datagram holds one or more beacons, one per line (query string or JSON); bad ones
 * become dead letters. A full ring is back-pressure: the datagram waits (reading stops,
 * the kernel's receive buffer holds what arrives) and is retried on a timer until it is
 * in; see ingest_udp.c. */
struct ingest_udp;

/* Starts receiving on the bound UDP socket fd (takes ownership) with recvmmsg. On an
 * error *out may still be set: close it with ingest_udp_close. */
int ingest_udp_new(uv_loop_t *loop, int fd, struct ingest *ix, struct ingest_udp **out);
/* Stops receiving, takes in the datagrams held and those the kernel still queues for the
 * socket (waiting up to shutdown.drain_timeout_ms for room in the rings; what is left
 * then is counted in clickd_udp_drops_total), then closes; `done` runs once every handle
 * is closed and u freed. */
void ingest_udp_close(struct ingest_udp *u, void (*done)(void *arg), void *arg);

#endif
