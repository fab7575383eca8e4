/*
 * admin.h - the admin listener's handler: /healthz (alive), /readyz (taking traffic),
 * /metrics (Prometheus text). Runs on the main loop, on its own listener (admin.listen).
 */
#ifndef CLICKD_ADMIN_H
#define CLICKD_ADMIN_H

#include "clickd/http.h"
#include "clickd/sink.h"

#include <stdbool.h>

/* Read by the handler; written by the daemon on the same loop. */
struct admin_state {
	bool started;              /* every listener bound and the sink open */
	bool draining;             /* TERM/INT received */
	struct sink *const *sinks; /* borrowed, NULL-terminated: /readyz asks each */
	char *metrics_buf;         /* owned: ADMIN_METRICS_BYTES */
};

#define ADMIN_METRICS_BYTES (256 * 1024)

/* sinks may be NULL (set st->sinks later, before the listener serves). */
int admin_init(struct admin_state *st, struct sink *const *sinks);
void admin_close(struct admin_state *st);

/* http_handler_fn for the admin listener; ud is the struct admin_state. */
void admin_handle(void *ud, struct http_conn *conn, const struct http_request *req);

#endif
