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
#include <uv.h>

struct ingest {
	const struct config *cfg;
	struct pipeline *pl;
	struct beacon_options beacon;
	uint64_t rng[2]; /* xorshift128+ state for visitor IDs, seeded from getrandom */
};

/* Fills ix from the config; cfg and pl are borrowed and must outlive it. Returns 0. */
int ingest_init(struct ingest *ix, const struct config *cfg, struct pipeline *pl);

/* http_handler_fn / http_reject_fn for the collect listener; ud is the struct ingest. */
void ingest_http_handle(void *ud, struct http_conn *conn, const struct http_request *req);
void ingest_http_reject(void *ud, int status, const char *reason, const char *peer_ip,
                        const char *payload, size_t payload_len);

/* Resolves the client IP of a request: the peer, or, when the peer is a trusted proxy,
 * the right-most X-Forwarded-For address that is not one. Writes it into out. */
void ingest_client_ip(const struct config *cfg, const struct http_request *req, char *out,
                      size_t cap);

/* Decodes a datagram (one beacon per line, query string or JSON) and submits each;
 * bad beacons become dead letters. *accepted / *dropped (sink full or failed) are set. */
void ingest_decode_datagram(struct ingest *ix, const char *data, size_t len, int64_t received_at_ms,
                            const char *peer_ip, size_t *accepted, size_t *dropped);

/* ---- UDP ---- */
struct ingest_udp;

/* Starts receiving on the bound UDP socket fd (takes ownership) with recvmmsg. */
int ingest_udp_new(uv_loop_t *loop, int fd, struct ingest *ix, struct ingest_udp **out);
/* Stops receiving, decodes what is still queued in the socket, then closes; `done` runs
 * once the handle is closed and freed. */
void ingest_udp_close(struct ingest_udp *u, void (*done)(void *arg), void *arg);

#endif
