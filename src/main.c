/*
 * main.c - the clickd daemon: command line, start-up, threads, signals and the orderly stop.
 *
 * Threads (ARCHITECTURE.md, "The flow"):
 * - the main thread runs a loop with the admin listener, the signals and, with Kafka, the
 *   producer's polling (delivery reports) for everyone;
 * - pipeline.ingest_threads ingest threads, each with its own loop, its own HTTP and UDP
 *   sockets on the shared addresses (SO_REUSEPORT), its own ingest state and pipeline
 *   (its rings to every shard) and, with the file sink, its own dead-letter file sink;
 * - pipeline.shards shard threads (shard.c), each with, for the file sink, its own file
 *   sink for events and touchpoints.
 * Rings: ingest_threads x shards SPSC rings, ring[i * shards + s] from ingest thread i to
 * shard s. Owned here, freed after every thread is joined.
 *
 * Start-up: config, channel lists, sinks, rings, shards, ingest loops and their listeners
 * (all bound before any thread starts, so a port in use fails the start cleanly; or, with
 * socket activation, each listener on its own copy of the socket systemd passed), the
 * admin listener; then the shard threads, then the ingest threads; only then is /readyz
 * ready and systemd told READY=1 (systemd.h).
 *
 * Under systemd the main loop also sends STATUS= every few seconds and, with WatchdogSec=,
 * WATCHDOG=1 every half interval -- but only while every ingest loop (a heartbeat timer on
 * its loop) and every shard (its tick) has shown progress within the interval.
 *
 * Stop (TERM/INT): STOPPING=1; each ingest thread stops accepting, lets in-flight requests finish
 * (shutdown.drain_timeout_ms; with kafka.ack_mode=kafka that includes requests waiting for
 * their events: the main loop keeps serving delivery reports and the spool meanwhile, so
 * each is answered 2xx once durable, or its connection closed at the drain timeout), takes
 * the datagrams the kernel holds, closes its rings and
 * flushes its own sink; each shard, once all its rings are closed and empty, closes its
 * sessions (shutdown) and flushes; then the main thread joins everyone, flushes Kafka
 * (kafka.flush_timeout_ms) and exits 0, or 1 when records could not be flushed. With
 * session.state_file the shards keep their sessions open, and the main thread, once it has
 * joined them, saves their state (state_file.h; on failure they close as shutdown after
 * all); at start it restores that file last in start-up, before any thread runs.
 * Exit codes: 0 clean stop, 1 runtime failure, 2 bad config or usage.
 */
#include "clickd/ack.h"
#include "clickd/admin.h"
#include "clickd/channel.h"
#include "clickd/config.h"
#include "clickd/http.h"
#include "clickd/ingest.h"
#include "clickd/log.h"
#include "clickd/net.h"
#include "clickd/pipeline.h"
#include "clickd/ring.h"
#include "clickd/shard.h"
#include "clickd/sink.h"
#include "clickd/spool.h"
#include "clickd/state_file.h"
#include "clickd/systemd.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAIN_POLL_INTERVAL_MS   50  /* Kafka delivery reports, gauges */
#define INGEST_POLL_INTERVAL_MS 100 /* own file sink, held dead letters */
#define MAX_SETS                256

struct daemon;

struct ingest_thread {
	struct daemon *d;
	unsigned index;
	uv_loop_t loop;
	uv_async_t stop_async;
	uv_timer_t poll_timer;
	uv_check_t wake_check;        /* once per loop turn: wake the shards that got events */
	uv_timer_t heartbeat_timer;   /* with the systemd watchdog: this loop is alive */
	_Atomic int64_t heartbeat_ms; /* its last beat (CLOCK_MONOTONIC); the main loop reads it */
	uv_async_t reload_async;
	_Atomic(const struct config *) cfg_next;   /* handed over by a reload */
	_Atomic(const struct config *) cfg_in_use; /* what this thread runs with */
	struct sink *sink; /* dead letters: owned file sink, or the shared Kafka sink */
	bool sink_owned;
	struct pipeline *pl;
	struct ingest ix;
	struct http_server *http;
	struct ingest_udp *udp;
	int parts_open;
	bool loop_ready;
	bool started;
	pthread_t thread;
};

struct daemon {
	uv_loop_t loop;
	struct config cfg; /* as loaded at start */
	/* SIGHUP reload (reload() below): the config and the channel lists that run, and the
	 * ones before them, freed once every thread has taken the new ones. */
	const char *config_path;
	char **sets;
	size_t nsets;
	struct config *cfg_live; /* &cfg, or a reload's snapshot (owned) */
	struct config *cfg_retiring;
	struct channel_lists *channels_retiring;
	bool reload_pending;
	struct channel_lists *channels;
	struct sink *kafka; /* shared by every thread; NULL with the file sink */
	/* kafka.ack_mode=kafka: the requests' waiters, one table per ingest thread (owned;
	 * freed after the Kafka sink, which completes into it to the end). NULL: accept. */
	struct ack_hub *acks;
	uv_poll_t kafka_reports; /* with acks: delivery reports served as they come */
	bool kafka_reports_ready;
	size_t ingest_count, shard_count;
	struct ring *rings; /* ingest_count * shard_count, cache-line aligned */
	size_t rings_ready;
	struct shard **shards;
	struct sink **shard_sinks; /* owned file sinks (NULL entries with Kafka) */
	struct ingest_thread *ingest;
	struct sink **ready_sinks; /* what /readyz asks */
	struct admin_state admin_state;
	struct http_server *admin;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t poll_timer;
	uv_timer_t watchdog_timer, status_timer; /* systemd: WATCHDOG=1; STATUS= and READY=1 */
	bool systemd_timers_ready;
	bool notified_ready;
	uint64_t status_events; /* clickd_events_in_total at the last STATUS= */
	int64_t status_at_ms;
	uv_async_t done_async;
	_Atomic size_t http_open; /* collect connections over all ingest threads */
	_Atomic unsigned ingest_done;
	_Atomic unsigned shards_done;
	unsigned shards_started;
	bool stopping;
	bool finishing;
	int exit_code;
};

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: clickd [-c FILE] [--set section.key=value]... [--check-config]\n"
	    "              [--dump-options] [--version] [--help]\n"
	    "\n"
	    "  -c, --config FILE   the config (INI); without it, the built-in defaults:\n"
	    "                      HTTP 127.0.0.1:8080, UDP 127.0.0.1:8125, admin\n"
	    "                      127.0.0.1:9464, file sink in ./data, no Kafka\n"
	    "      --set K=V       override one key (section.key=value); repeatable,\n"
	    "                      applied after the file\n"
	    "      --check-config  validate, print the effective config, exit 0 (or 2)\n"
	    "      --dump-options  print every key with its default and help (conf/clickd.conf)\n"
	    "      --version       print the version\n"
	    "  -h, --help          this help\n"
	    "\n"
	    "Exit codes: 0 clean stop, 1 runtime failure, 2 bad config or usage.\n"
	    "Signals: TERM/INT drain and exit.\n");
}

static int64_t wall_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* ---- sinks ---- */

/* The Kafka sink's disk spool (spool.h), or *out NULL with spool.max_bytes 0. Returns 0, or
 * -1 with the reason logged (a runtime failure: the directory is unwritable or in use). */
static int open_spool(const struct config *cfg, struct spool **out)
{
	struct spool_options so = {
	    .dir = cfg->spool_dir,
	    .max_bytes = (uint64_t)cfg->spool_max_bytes,
	    .segment_bytes = (uint64_t)cfg->spool_segment_bytes,
	    .fsync = strcmp(cfg->spool_fsync, "per_frame") == 0  ? SPOOL_FSYNC_PER_FRAME
	             : strcmp(cfg->spool_fsync, "interval") == 0 ? SPOOL_FSYNC_INTERVAL
	                                                         : SPOOL_FSYNC_NEVER,
	    .fsync_interval_ms = cfg->spool_fsync_interval_ms,
	};
	char err[512] = "";

	*out = NULL;
	if (cfg->spool_max_bytes == 0)
		return 0;
	if (spool_open(out, &so, err, sizeof(err)) < 0) {
		log_error("main", "msg=\"cannot open the spool\" err=\"%s\"", err);
		return -1;
	}
	return 0;
}

/* The Kafka sink; it takes the spool (NULL: none), also when it fails. acks: where acked
 * records complete (NULL: accept mode). */
static struct sink *open_kafka(const struct config *cfg, struct spool *spool, struct ack_hub *acks,
                               char *err, size_t errlen)
{
	struct sink_kafka_property props[CONFIG_MAX_PRODUCER_PROPS];
	struct sink_kafka_options o = {
	    .brokers = cfg->kafka_brokers,
	    .topics = {[SINK_EVENTS] = cfg->kafka_topic_events,
	               [SINK_TOUCHPOINTS] = cfg->kafka_topic_touchpoints,
	               [SINK_DEAD_LETTERS] = cfg->kafka_topic_dead_letters,
	               [SINK_ATTRIBUTION] = cfg->kafka_topic_attribution,
	               [SINK_ROLLUPS] = cfg->kafka_topic_rollups},
	    .producer = props,
	    .producer_count = cfg->producer_count,
	    .spool = spool,
	    .spool_high_water = (uint64_t)cfg->spool_high_water,
	    .acks = acks,
	};
	for (size_t i = 0; i < cfg->producer_count; i++) {
		props[i].key = cfg->producer_keys[i];
		props[i].value = cfg->producer_values[i];
	}
	return sink_kafka_new(&o, err, errlen);
}

static struct sink *open_file(const struct config *cfg, const char *tag)
{
	char err[512] = "";
	struct sink_file_options fo = {
	    .dir = cfg->sink_file_dir,
	    .compress_zstd = strcmp(cfg->sink_file_compress, "zstd") == 0,
	    .zstd_level = (int)cfg->sink_file_zstd_level,
	    .rotate_bytes = (uint64_t)cfg->sink_file_rotate_bytes,
	    .rotate_age_ms = cfg->sink_file_rotate_s * 1000,
	    .name_tag = tag,
	};
	struct sink *s = sink_file_new(&fo, err, sizeof(err));

	if (!s)
		log_error("main", "msg=\"cannot start the file sink\" dir=\"%s\" err=\"%s\"",
		          cfg->sink_file_dir, err);
	return s;
}

/* The sink a thread writes to: the shared Kafka sink, or a file sink of its own. */
static struct sink *thread_sink(struct daemon *d, const char *tag, bool *owned)
{
	*owned = d->kafka == NULL;
	return d->kafka ? d->kafka : open_file(&d->cfg, tag);
}

/* ---- ingest threads ---- */

static void ingest_thread_finish(struct ingest_thread *it)
{
	/* Every collect part is closed: nothing more enters this thread's rings, and no
	 * request waits for an acknowledgement (their connections are closed). */
	ingest_acks_close(&it->ix);
	pipeline_close(it->pl);
	uv_timer_stop(&it->poll_timer);
	if (it->sink_owned) {
		if (it->sink->ops->flush(it->sink, -1) < 0)
			log_error("main", "msg=\"dead letters could not be flushed\" thread=%u",
			          it->index);
	}
	uv_close((uv_handle_t *)&it->poll_timer, on_handle_closed);
	uv_close((uv_handle_t *)&it->stop_async, on_handle_closed);
	uv_close((uv_handle_t *)&it->reload_async, on_handle_closed);
	uv_close((uv_handle_t *)&it->wake_check, on_handle_closed);
	uv_close((uv_handle_t *)&it->heartbeat_timer, on_handle_closed);
}

static void on_ingest_part_closed(void *arg)
{
	struct ingest_thread *it = arg;
	if (--it->parts_open == 0)
		ingest_thread_finish(it);
}

/* The collect listener's limits from a config. */
static struct http_limits collect_limits(struct daemon *d, const struct config *cfg)
{
	struct http_limits l = {
	    .max_connections = (size_t)cfg->http_max_connections,
	    .shared_open = &d->http_open,
	    .max_header_bytes = (size_t)cfg->http_max_header_bytes,
	    .max_headers = (size_t)cfg->http_max_headers,
	    .max_url_bytes = (size_t)cfg->http_max_url_bytes,
	    .max_body_bytes = (size_t)cfg->http_max_body_bytes,
	    .idle_timeout_ms = (uint64_t)cfg->http_idle_timeout_ms,
	    .collect_metrics = true,
	    .max_deferred = (size_t)cfg->kafka_ack_max_pending_per_connection,
	};
	return l;
}

/* A reload reached this ingest thread: switch to the new snapshot at a safe point (between
 * callbacks of its own loop) and say so. */
static void on_ingest_reload(uv_async_t *a)
{
	struct ingest_thread *it = a->data;
	const struct config *cfg = atomic_load_explicit(&it->cfg_next, memory_order_acquire);
	struct http_limits limits;

	if (!cfg || cfg == it->ix.cfg)
		return;
	ingest_reconfigure(&it->ix, cfg);
	if (it->http) {
		limits = collect_limits(it->d, cfg);
		http_server_set_limits(it->http, &limits);
	}
	atomic_store_explicit(&it->cfg_in_use, cfg, memory_order_release);
}

static void on_ingest_stop(uv_async_t *a)
{
	struct ingest_thread *it = a->data;

	if (it->parts_open > 0)
		return;     /* already stopping */
	it->parts_open = 1; /* held until both parts are asked to close */
	if (it->http) {
		it->parts_open++;
		http_server_close(it->http, (uint64_t)it->ix.cfg->shutdown_drain_timeout_ms,
		                  on_ingest_part_closed, it);
		it->http = NULL;
	}
	if (it->udp) {
		it->parts_open++;
		ingest_udp_close(it->udp, on_ingest_part_closed, it);
		it->udp = NULL;
	}
	on_ingest_part_closed(it);
}

static void on_ingest_loop_turn(uv_check_t *c)
{
	struct ingest_thread *it = c->data;
	pipeline_wake(it->pl);
}

static void on_ingest_poll(uv_timer_t *t)
{
	struct ingest_thread *it = t->data;

	if (it->sink_owned)
		it->sink->ops->poll(it->sink, wall_clock_ms());
	pipeline_retry(it->pl); /* dead letters a full sink refused */
}

/* Shows the watchdog (on the main loop) that this loop turns. */
static void on_ingest_heartbeat(uv_timer_t *t)
{
	struct ingest_thread *it = t->data;
	atomic_store_explicit(&it->heartbeat_ms, systemd_monotonic_ms(), memory_order_relaxed);
}

static void *ingest_main(void *arg)
{
	struct ingest_thread *it = arg;
	struct daemon *d = it->d;
	char name[16];

	snprintf(name, sizeof(name), "clickd-ingest%u", it->index);
	pthread_setname_np(pthread_self(), name);
	uv_run(&it->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&it->loop) != 0)
		log_error("main", "msg=\"handles left open at exit\" thread=%u", it->index);
	atomic_fetch_add(&d->ingest_done, 1);
	uv_async_send(&d->done_async);
	return NULL;
}

/* A copy of the socket systemd passed for a listener (socket activation): each caller gets
 * its own, so each loop closes only its copy at stop and the socket stays with systemd. */
static int passed_listener(struct daemon *d, const char *key, const char *name,
                           const char *addr_text, bool udp, int *port, int *fd_out)
{
	int fd = systemd_listen_fd(name);

	if (fd < 0) {
		log_error("main",
		          "msg=\"cannot copy the socket systemd passed\" key=%s name=%s err=\"%s\"",
		          key, name, strerror(-fd));
		return fd;
	}
	if (udp) {
		int rcvbuf = (int)d->cfg.udp_recv_buffer_bytes;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)); /* best effort */
	}
	if (*port <= 0) {
		*port = net_local_port(fd);
		log_info("main", "msg=listening key=%s addr=systemd:%s port=%d", key, name, *port);
		if (addr_text[0])
			log_info("main",
			         "msg=\"socket activation: the passed socket is used, the key is "
			         "ignored\" key=%s value=%s",
			         key, addr_text);
	}
	*fd_out = fd;
	return 0;
}

/* Binds one listener; the first thread binds the configured address, the others the
 * port it got (the same when a port was given; the kernel's when it was 0). A socket
 * systemd passed under the listener's name ("http" for http.listen...) wins over the key. */
static int bind_listener(struct daemon *d, const char *key, const char *addr_text, bool udp,
                         int *port, int *fd_out)
{
	struct sockaddr_storage addr;
	char err[256], name[16];
	int fd;

	snprintf(name, sizeof(name), "%.*s", (int)strcspn(key, "."), key);
	if (systemd_listen_passed(name))
		return passed_listener(d, key, name, addr_text, udp, port, fd_out);
	if (config_parse_address(addr_text, &addr, err, sizeof(err)) < 0) {
		log_error("main", "msg=\"bad address\" key=%s err=\"%s\"", key, err);
		return -EINVAL;
	}
	if (*port > 0) {
		if (addr.ss_family == AF_INET6)
			((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)*port);
		else
			((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)*port);
	}
	fd = udp ? net_bind_udp(&addr, (int)d->cfg.udp_recv_buffer_bytes, err, sizeof(err))
	         : net_listen_tcp(&addr, 4096, err, sizeof(err));
	if (fd < 0) {
		log_error("main", "msg=\"cannot listen\" key=%s addr=%s err=\"%s\"", key, addr_text,
		          err);
		return fd;
	}
	if (*port <= 0) {
		*port = net_local_port(fd);
		log_info("main", "msg=listening key=%s addr=%s port=%d", key, addr_text, *port);
	}
	*fd_out = fd;
	return 0;
}

static int ingest_thread_init(struct daemon *d, struct ingest_thread *it, int *http_port,
                              int *udp_port)
{
	const struct config *cfg = &d->cfg;
	struct http_limits collect = collect_limits(d, cfg);
	char tag[32];
	int fd, rc;

	it->d = d;
	uv_loop_init(&it->loop);
	it->loop_ready = true;
	uv_async_init(&it->loop, &it->stop_async, on_ingest_stop);
	it->stop_async.data = it;
	uv_async_init(&it->loop, &it->reload_async, on_ingest_reload);
	it->reload_async.data = it;
	atomic_init(&it->cfg_next, NULL);
	atomic_init(&it->cfg_in_use, cfg);
	uv_timer_init(&it->loop, &it->poll_timer);
	it->poll_timer.data = it;
	atomic_init(&it->heartbeat_ms, systemd_monotonic_ms());
	uv_timer_init(&it->loop, &it->heartbeat_timer);
	it->heartbeat_timer.data = it;
	if (systemd_watchdog_usec() > 0) {
		/* Several beats per watchdog interval (WatchdogSec= of 1 s or more). */
		uint64_t beat_ms = systemd_watchdog_usec() / 4000;
		beat_ms = beat_ms < 1 ? 1 : beat_ms > 250 ? 250 : beat_ms;
		uv_timer_start(&it->heartbeat_timer, on_ingest_heartbeat, beat_ms, beat_ms);
	}
	snprintf(tag, sizeof(tag), "i%u", it->index);
	it->sink = thread_sink(d, tag, &it->sink_owned);
	if (!it->sink)
		return -1;
	it->pl =
	    pipeline_new(d->rings + (size_t)it->index * d->shard_count, d->shards, d->shard_count,
	                 it->sink, (size_t)cfg->limits_dead_letter_payload_bytes);
	if (!it->pl) {
		log_error("main", "msg=\"out of memory\"");
		return -1;
	}
	ingest_init(&it->ix, cfg, it->pl);
	uv_check_init(&it->loop, &it->wake_check);
	it->wake_check.data = it;
	uv_check_start(&it->wake_check, on_ingest_loop_turn);
	if (cfg->http_listen[0] || systemd_listen_passed("http")) {
		if (bind_listener(d, "http.listen", cfg->http_listen, false, http_port, &fd) < 0)
			return -1;
		rc = http_server_new(&it->loop, fd, "http", &collect, ingest_http_handle,
		                     ingest_http_reject, &it->ix, &it->http);
		if (rc < 0) {
			log_error("main", "msg=\"cannot serve HTTP\" err=\"%s\"", uv_strerror(rc));
			return -1;
		}
		if (d->acks) {
			if (ingest_acks_start(&it->ix, &it->loop, ack_hub_table(d->acks, it->index),
			                      (size_t)cfg->kafka_ack_max_pending) < 0) {
				log_error("main", "msg=\"out of memory\"");
				return -1;
			}
			http_server_set_cancel(it->http, ingest_http_cancel);
		}
	}
	if (cfg->udp_listen[0] || systemd_listen_passed("udp")) {
		if (bind_listener(d, "udp.listen", cfg->udp_listen, true, udp_port, &fd) < 0)
			return -1;
		rc = ingest_udp_new(&it->loop, fd, &it->ix, &it->udp);
		if (rc < 0) {
			log_error("main", "msg=\"cannot receive UDP\" err=\"%s\"", uv_strerror(rc));
			return -1;
		}
	}
	uv_timer_start(&it->poll_timer, on_ingest_poll, INGEST_POLL_INTERVAL_MS,
	               INGEST_POLL_INTERVAL_MS);
	return 0;
}

/* Tears down an ingest loop that never ran (start-up failed): from the main thread. */
static void ingest_thread_discard(struct ingest_thread *it)
{
	if (!it->loop_ready)
		return;
	ingest_acks_close(&it->ix);
	if (it->http)
		http_server_close(it->http, 0, NULL, NULL);
	if (it->udp)
		ingest_udp_close(it->udp, NULL, NULL);
	it->http = NULL;
	it->udp = NULL;
	uv_walk(&it->loop, close_walk, NULL);
	uv_run(&it->loop, UV_RUN_DEFAULT);
	uv_loop_close(&it->loop);
	it->loop_ready = false;
	if (it->pl)
		pipeline_close(it->pl);
}

/* ---- shards ---- */

static void on_shard_done(void *arg)
{
	struct daemon *d = arg;
	atomic_fetch_add(&d->shards_done, 1);
	uv_async_send(&d->done_async);
}

/* A shard's attribution options: its share of session.max_visitors (visitors and users) and
 * of attribution.max_stored_touchpoints (never below one full path). */
static struct attribution_options attribution_options(const struct config *cfg, size_t shards)
{
	struct attribution_options o;
	size_t visitors = (size_t)cfg->session_max_visitors / shards;
	size_t stored = (size_t)cfg->attribution_max_stored_touchpoints / shards;

	attribution_options_default(&o);
	o.lookback_ms = cfg->attribution_lookback_days * 86400000;
	o.half_life_ms = cfg->attribution_half_life_days * 86400000;
	o.max_touchpoints = (size_t)cfg->attribution_max_touchpoints;
	o.max_visitors = o.max_users = visitors ? visitors : 1;
	o.max_devices_per_user = (size_t)cfg->attribution_max_devices_per_user;
	if (cfg->attribution_max_stored_touchpoints == 0)
		o.max_stored_touchpoints = 0;
	else
		o.max_stored_touchpoints = stored > o.max_touchpoints ? stored : o.max_touchpoints;
	return o;
}

static int shards_init(struct daemon *d)
{
	const struct config *cfg = &d->cfg;
	const char *conversion_events[CONFIG_MAX_LIST];
	size_t n = d->ingest_count * d->shard_count;
	size_t per_shard_visitors = (size_t)cfg->session_max_visitors / d->shard_count;
	char err[256];

	for (size_t i = 0; i < cfg->conversion_event_count; i++)
		conversion_events[i] = cfg->conversion_events[i];

	d->rings = aligned_alloc(RING_CACHE_LINE, n * sizeof(*d->rings));
	d->shards = calloc(d->shard_count, sizeof(*d->shards));
	d->shard_sinks = calloc(d->shard_count, sizeof(*d->shard_sinks));
	if (!d->rings || !d->shards || !d->shard_sinks) {
		log_error("main", "msg=\"out of memory\"");
		return -1;
	}
	for (; d->rings_ready < n; d->rings_ready++) {
		if (ring_init(&d->rings[d->rings_ready], (size_t)cfg->pipeline_ring_slots,
		              sizeof(struct event)) < 0) {
			log_error("main",
			          "msg=\"out of memory for the rings\" rings=%zu slots=%lld", n,
			          (long long)cfg->pipeline_ring_slots);
			return -1;
		}
	}
	for (size_t s = 0; s < d->shard_count; s++) {
		struct ring *inputs[64];
		char tag[32];
		bool owned;
		struct shard_options o = {
		    .index = (unsigned)s,
		    .inputs = inputs,
		    .input_count = d->ingest_count,
		    .channels = d->channels,
		    .dedup_max_entries = (size_t)cfg->dedup_max_entries,
		    .dedup_window_ms = cfg->dedup_window_s * 1000,
		    .session = {.timeout_ms = cfg->session_timeout_s * 1000,
		                .max_duration_ms = cfg->session_max_duration_s * 1000,
		                .max_visitors = per_shard_visitors ? per_shard_visitors : 1,
		                .max_url_bytes = (size_t)cfg->session_max_url_bytes},
		    .stop_timeout_ms = cfg->kafka_flush_timeout_ms,
		    .reorder_us = cfg->pipeline_reorder_ms * 1000,
		    .attribution = attribution_options(cfg, d->shard_count),
		    .rollups = {.grace_ms = cfg->rollups_grace_s * 1000,
		                .max_keys = (size_t)cfg->rollups_max_keys_per_minute},
		    .conversion_events = conversion_events,
		    .conversion_event_count = cfg->conversion_event_count,
		    .keep_sessions_at_stop = cfg->session_state_file[0] != '\0',
		    .acks = d->acks,
		};
		for (size_t i = 0; i < d->ingest_count; i++)
			inputs[i] = &d->rings[i * d->shard_count + s];
		snprintf(tag, sizeof(tag), "s%zu", s);
		o.sink = thread_sink(d, tag, &owned);
		if (!o.sink)
			return -1;
		o.sink_owned = owned;
		if (owned)
			d->shard_sinks[s] = o.sink;
		d->shards[s] = shard_new(&o, err, sizeof(err));
		if (!d->shards[s]) {
			log_error("main", "msg=\"cannot make a shard\" err=\"%s\"", err);
			return -1;
		}
	}
	return 0;
}

/* ---- the state file (session.state_file, state_file.h) ---- */

/* The shards' tables, for the state file (owned by the caller); NULL when out of memory. */
static struct state_file_shard *state_tables(struct daemon *d)
{
	struct state_file_shard *t = calloc(d->shard_count, sizeof(*t));

	for (size_t s = 0; t && s < d->shard_count; s++) {
		struct shard_state st;
		shard_get_state(d->shards[s], &st);
		t[s].sessions = st.sessions;
		t[s].dedup = st.dedup;
		t[s].attribution = st.attribution;
	}
	return t;
}

/* At start, before any thread runs: the open state a clean stop saved. Never fails the
 * start: a bad file is moved aside and clickd starts empty. */
static void load_state(struct daemon *d)
{
	const char *path = d->cfg.session_state_file;
	struct state_file_shard *tables = state_tables(d);
	struct state_file_report r;
	int64_t t0 = systemd_monotonic_ms();
	char err[512] = "";
	int rc;

	if (!tables) {
		log_error("main", "msg=\"out of memory: state file not restored\" path=%s", path);
		return;
	}
	rc = state_file_load(path, tables, d->shard_count, wall_clock_ms(), &r, err, sizeof(err));
	free(tables);
	if (rc == -ENOENT) {
		log_info("main", "msg=\"no state file: no sessions to resume\" path=%s", path);
		return;
	}
	if (rc < 0) {
		log_error("main",
		          "msg=\"state file not used; starting with no open sessions\" path=%s "
		          "err=\"%s\"",
		          path, err);
		return;
	}
	metrics_add(METRIC_SESSIONS_RESTORED, r.restored.sessions);
	log_info("main",
	         "msg=\"state restored\" path=%s saved_shards=%u shards=%zu sessions=%llu "
	         "resumed=%llu ended_inactivity=%llu ended_max_duration=%llu evicted=%llu "
	         "visitors=%llu dedup_entries=%llu paths=%llu touchpoints=%llu users=%llu "
	         "bytes=%llu ms=%lld",
	         path, r.shards, d->shard_count, (unsigned long long)r.file.sessions,
	         (unsigned long long)r.sessions_resumed,
	         (unsigned long long)r.sessions_ended[SESSION_END_INACTIVITY],
	         (unsigned long long)r.sessions_ended[SESSION_END_MAX_DURATION],
	         (unsigned long long)r.sessions_ended[SESSION_END_EVICTED],
	         (unsigned long long)r.restored.visitors,
	         (unsigned long long)r.restored.dedup_entries, (unsigned long long)r.restored.paths,
	         (unsigned long long)r.restored.touchpoints, (unsigned long long)r.restored.users,
	         (unsigned long long)r.file_bytes, (long long)(systemd_monotonic_ms() - t0));
	if (err[0])
		log_warn("main", "msg=\"state file\" path=%s err=\"%s\"", path, err);
}

/* At stop, every shard joined: saves their open state; when that fails the sessions close
 * as shutdown after all (and are written), as without a state file. */
static void save_state(struct daemon *d)
{
	const char *path = d->cfg.session_state_file;
	struct state_file_shard *tables;
	struct state_file_report r;
	int64_t t0 = systemd_monotonic_ms();
	char err[512] = "out of memory";
	int rc = -ENOMEM;

	if (!path[0])
		return;
	tables = state_tables(d);
	if (tables)
		rc = state_file_save(path, tables, d->shard_count, wall_clock_ms(), &r, err,
		                     sizeof(err));
	free(tables);
	if (rc == 0) {
		log_info("main",
		         "msg=\"state saved\" path=%s shards=%zu sessions=%llu visitors=%llu "
		         "dedup_entries=%llu paths=%llu touchpoints=%llu users=%llu bytes=%llu "
		         "ms=%lld",
		         path, d->shard_count, (unsigned long long)r.file.sessions,
		         (unsigned long long)r.file.visitors,
		         (unsigned long long)r.file.dedup_entries, (unsigned long long)r.file.paths,
		         (unsigned long long)r.file.touchpoints, (unsigned long long)r.file.users,
		         (unsigned long long)r.file_bytes,
		         (long long)(systemd_monotonic_ms() - t0));
		return;
	}
	log_error("main",
	          "msg=\"cannot save the state; closing the open sessions as shutdown\" path=%s "
	          "err=\"%s\"",
	          path, err);
	for (size_t s = 0; s < d->shard_count; s++)
		if (shard_close_sessions(d->shards[s]) < 0)
			d->exit_code = 1;
}

/* ---- systemd: readiness, status, watchdog (systemd.h) ---- */

/* The first loop whose heartbeat is older than limit_ms (its name in `name`), or NULL. The
 * main loop needs no heartbeat: it is the one asking, and when it is stuck nobody pings. */
static const char *stuck_loop(struct daemon *d, int64_t limit_ms, char *name, size_t cap,
                              int64_t *silent_ms)
{
	int64_t now = systemd_monotonic_ms();

	for (size_t i = 0; i < d->ingest_count; i++) {
		*silent_ms =
		    now - atomic_load_explicit(&d->ingest[i].heartbeat_ms, memory_order_relaxed);
		if (*silent_ms > limit_ms) {
			snprintf(name, cap, "ingest%zu", i);
			return name;
		}
	}
	for (size_t s = 0; s < d->shard_count; s++) {
		*silent_ms = now - shard_heartbeat_ms(d->shards[s]);
		if (*silent_ms > limit_ms) {
			snprintf(name, cap, "shard%zu", s);
			return name;
		}
	}
	return NULL;
}

/* Every half watchdog interval: WATCHDOG=1 only when every loop has beaten within it. */
static void on_watchdog_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;
	int64_t limit_ms = (int64_t)(systemd_watchdog_usec() / 1000), silent_ms = 0;
	char name[32];

	systemd_watchdog_feed(stuck_loop(d, limit_ms, name, sizeof(name), &silent_ms), silent_ms);
}

/* READY=1, once: started (every listener bound, every thread running) and every sink able
 * to take records -- what /readyz answers 200 for. */
static void notify_ready_once(struct daemon *d)
{
	if (d->notified_ready || !d->admin_state.started || d->stopping)
		return;
	for (struct sink *const *s = d->ready_sinks; s && *s; s++)
		if (!(*s)->ops->ready(*s))
			return; /* the status timer asks again */
	d->notified_ready = true;
	systemd_notify_ready();
}

static void on_status_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;
	int64_t now = systemd_monotonic_ms(), elapsed_ms = now - d->status_at_ms;
	uint64_t events = metrics_get(METRIC_EVENTS_IN);
	double slots =
	    (double)(d->ingest_count * d->shard_count) * (double)d->cfg.pipeline_ring_slots;
	char kafka[48] = "";

	notify_ready_once(d);
	if (d->kafka)
		snprintf(kafka, sizeof(kafka), ", Kafka queue %lld",
		         (long long)metrics_gauge_get(GAUGE_KAFKA_QUEUE));
	systemd_notify_status(
	    "%.0f events/s, %zu HTTP connections, %lld open sessions, rings %.1f%% full%s",
	    elapsed_ms > 0 ? (double)(events - d->status_events) * 1000.0 / (double)elapsed_ms
	                   : 0.0,
	    atomic_load_explicit(&d->http_open, memory_order_relaxed),
	    (long long)metrics_gauge_get(GAUGE_SESSIONS_OPEN),
	    slots > 0 ? 100.0 * (double)metrics_gauge_get(GAUGE_RING_EVENTS) / slots : 0.0, kafka);
	d->status_events = events;
	d->status_at_ms = now;
}

static void systemd_timers_start(struct daemon *d)
{
	uint64_t ping_ms = systemd_watchdog_usec() / 2000; /* half the interval (sd_notify(3)) */

	uv_timer_init(&d->loop, &d->watchdog_timer);
	uv_timer_init(&d->loop, &d->status_timer);
	d->watchdog_timer.data = d->status_timer.data = d;
	d->systemd_timers_ready = true;
	d->status_at_ms = systemd_monotonic_ms();
	if (systemd_watchdog_usec() > 0)
		uv_timer_start(&d->watchdog_timer, on_watchdog_timer, ping_ms ? ping_ms : 1,
		               ping_ms ? ping_ms : 1);
	if (systemd_notify_enabled())
		uv_timer_start(&d->status_timer, on_status_timer, SYSTEMD_STATUS_INTERVAL_MS,
		               SYSTEMD_STATUS_INTERVAL_MS);
}

static void systemd_timers_close(struct daemon *d)
{
	if (!d->systemd_timers_ready)
		return;
	d->systemd_timers_ready = false;
	uv_close((uv_handle_t *)&d->watchdog_timer, on_handle_closed);
	uv_close((uv_handle_t *)&d->status_timer, on_handle_closed);
}

/* ---- the main loop: stop ---- */

static void on_admin_closed(void *arg)
{
	struct daemon *d = arg;
	uv_close((uv_handle_t *)&d->sigterm, on_handle_closed);
	uv_close((uv_handle_t *)&d->sigint, on_handle_closed);
	uv_close((uv_handle_t *)&d->sighup, on_handle_closed);
	uv_close((uv_handle_t *)&d->done_async, on_handle_closed);
}

/* Every thread has ended: flush the shared sink, close the main loop's handles. */
static void finish_stop(struct daemon *d)
{
	d->finishing = true;
	for (size_t i = 0; i < d->ingest_count; i++)
		if (d->ingest[i].started)
			pthread_join(d->ingest[i].thread, NULL);
	for (size_t s = 0; s < d->shard_count; s++)
		shard_join(d->shards[s]);
	save_state(d); /* before Kafka's flush: a failed save writes touchpoints */
	uv_timer_stop(&d->poll_timer);
	uv_close((uv_handle_t *)&d->poll_timer, on_handle_closed);
	if (d->kafka_reports_ready)
		uv_close((uv_handle_t *)&d->kafka_reports, on_handle_closed);
	if (d->kafka) {
		/* Nothing else runs now: blocking in flush is what the stop is for. */
		if (d->kafka->ops->flush(d->kafka, (int)d->cfg_live->kafka_flush_timeout_ms) < 0) {
			log_error("main",
			          "msg=\"records could not be flushed before the timeout\"");
			d->exit_code = 1;
		}
		d->kafka->ops->poll(d->kafka, wall_clock_ms());
	}
	if (d->admin)
		http_server_close(d->admin, 0, on_admin_closed, d);
	else
		on_admin_closed(d);
}

static void on_done(uv_async_t *a)
{
	struct daemon *d = a->data;

	if (d->finishing)
		return;
	if (atomic_load(&d->ingest_done) == d->ingest_count &&
	    atomic_load(&d->shards_done) == d->shards_started)
		finish_stop(d);
}

static void begin_stop(struct daemon *d, const char *why)
{
	if (d->stopping)
		return;
	d->stopping = true;
	d->admin_state.draining = true;
	systemd_notify_stopping(); /* systemd now bounds the stop by TimeoutStopSec=, */
	systemd_timers_close(d);   /* and watches no more: the loops end one by one */
	log_info("main",
	         "msg=\"stopping: draining connections, closing sessions, flushing\" "
	         "signal=%s",
	         why);
	for (size_t i = 0; i < d->ingest_count; i++)
		if (d->ingest[i].started)
			uv_async_send(&d->ingest[i].stop_async);
	on_done(&d->done_async); /* nothing may have been running */
}

/* ---- reload (SIGHUP) ----
 *
 * The config file is read again with the same --set overrides; keys the option table marks
 * reloadable take effect, the others are named in the log and keep their running value
 * (config_merge_reload); the channel source lists are read again. A bad config or list
 * refuses the whole reload and the old one keeps running. The new snapshot goes to each
 * ingest thread through its own loop (on_ingest_reload) and the new lists to each shard at
 * its next tick; the old ones are freed by the poll timer once every thread has let go.
 */
static void note_reload_key(void *ud, const char *key, bool applied)
{
	(void)ud;
	if (applied)
		log_info("main", "msg=\"reload: changed\" key=%s applied=yes", key);
	else
		log_warn(
		    "main",
		    "msg=\"reload: this key needs a restart; it keeps its running value\" key=%s "
		    "applied=no",
		    key);
}

static void reload_refused(const char *why)
{
	metrics_add(METRIC_RELOADS_REFUSED, 1);
	log_error("main", "msg=\"reload refused; the running config stays\" err=\"%s\"", why);
	systemd_notify_ready();
}

static void reload(struct daemon *d)
{
	struct config *next = NULL;
	struct channel_lists *lists;
	enum log_level level;
	char err[512];

	if (d->stopping)
		return;
	if (d->reload_pending) {
		reload_refused("the previous reload is still being taken by the threads");
		return;
	}
	systemd_notify_reloading();
	next = calloc(1, sizeof(*next));
	if (!next) {
		reload_refused("out of memory");
		return;
	}
	if (config_load(next, d->config_path, d->sets, d->nsets, err, sizeof(err)) < 0 ||
	    config_merge_reload(next, d->cfg_live, note_reload_key, d, err, sizeof(err)) < 0) {
		free(next);
		reload_refused(err);
		return;
	}
	lists = channel_lists_new(next->channel_sources_dir, err, sizeof(err));
	if (!lists) {
		config_close(next);
		free(next);
		reload_refused(err);
		return;
	}
	if (log_level_parse(next->log_level, &level) == 0)
		log_set_level(level);
	d->cfg_retiring = d->cfg_live;
	d->cfg_live = next;
	d->channels_retiring = d->channels;
	d->channels = lists;
	d->reload_pending = true;
	for (size_t i = 0; i < d->ingest_count; i++) {
		atomic_store_explicit(&d->ingest[i].cfg_next, next, memory_order_release);
		uv_async_send(&d->ingest[i].reload_async);
	}
	for (size_t s = 0; s < d->shard_count; s++)
		shard_set_channels(d->shards[s], lists);
	metrics_add(METRIC_RELOADS_APPLIED, 1);
	log_info("main", "msg=reloaded config=%s", d->config_path ? d->config_path : "(built-in)");
	systemd_notify_ready();
}

/* Frees the config and lists a reload replaced, once no thread uses them. */
static void reload_retire(struct daemon *d)
{
	if (!d->reload_pending || d->finishing)
		return;
	for (size_t i = 0; i < d->ingest_count; i++)
		if (d->ingest[i].started &&
		    atomic_load_explicit(&d->ingest[i].cfg_in_use, memory_order_acquire) !=
		        d->cfg_live)
			return;
	for (size_t s = 0; s < d->shard_count; s++)
		if (shard_channels_in_use(d->shards[s]) != d->channels)
			return;
	if (d->cfg_retiring != &d->cfg) {
		config_close(d->cfg_retiring);
		free(d->cfg_retiring);
	}
	d->cfg_retiring = NULL;
	channel_lists_free(d->channels_retiring);
	d->channels_retiring = NULL;
	d->reload_pending = false;
	log_info("main", "msg=\"reload taken by every thread\" channels=taken");
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	if (signum == SIGHUP) {
		reload(d);
		return;
	}
	begin_stop(d, signum == SIGTERM ? "TERM" : "INT");
}

static void on_poll_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;
	size_t n = d->ingest_count * d->shard_count;
	int64_t waiting = 0;

	if (d->kafka)
		d->kafka->ops->poll(d->kafka, wall_clock_ms());
	reload_retire(d);
	int64_t covered = d->cfg.dedup_window_s * 1000;

	int64_t fullest_ppm = 0; /* clickd_ring_fill_ratio, in millionths */

	for (size_t i = 0; i < n; i++) {
		size_t fill = ring_fill(&d->rings[i]);
		int64_t ppm = (int64_t)(fill * 1000000 / ring_capacity(&d->rings[i]));

		waiting += (int64_t)fill;
		fullest_ppm = ppm > fullest_ppm ? ppm : fullest_ppm;
	}
	metrics_gauge_set(GAUGE_RING_EVENTS, waiting);
	metrics_gauge_set(GAUGE_RING_FILL_PPM, fullest_ppm);
	for (size_t s = 0; s < d->shard_count; s++)
		if (shard_dedup_covered_ms(d->shards[s]) < covered)
			covered = shard_dedup_covered_ms(d->shards[s]);
	metrics_gauge_set(GAUGE_DEDUP_COVERED, covered / 1000);
}

/* ---- start ---- */

static void on_kafka_reports(uv_poll_t *p, int status, int events)
{
	struct daemon *d = p->data;

	(void)status;
	(void)events;
	sink_kafka_serve_reports(d->kafka);
}

/* kafka.ack_mode=kafka: requests wait for their delivery reports, so the main loop serves
 * them as librdkafka has them, not only every MAIN_POLL_INTERVAL_MS. */
static int kafka_reports_start(struct daemon *d)
{
	int fd = sink_kafka_report_fd(d->kafka), rc;

	if (fd < 0) {
		log_error("main", "msg=\"cannot watch Kafka's delivery reports\" err=\"%s\"",
		          strerror(-fd));
		return -1;
	}
	rc = uv_poll_init(&d->loop, &d->kafka_reports, fd);
	if (rc == 0) {
		d->kafka_reports.data = d;
		d->kafka_reports_ready = true;
		rc = uv_poll_start(&d->kafka_reports, UV_READABLE, on_kafka_reports);
	}
	if (rc < 0) {
		log_error("main", "msg=\"cannot watch Kafka's delivery reports\" err=\"%s\"",
		          uv_strerror(rc));
		return -1;
	}
	return 0;
}

static int admin_start(struct daemon *d)
{
	struct http_limits admin = {
	    .max_connections = 64,
	    .max_header_bytes = 8192,
	    .max_headers = 100,
	    .max_url_bytes = 2048,
	    .max_body_bytes = 0,
	    .idle_timeout_ms = 30000,
	};
	int port = 0, fd, rc;

	if (!d->cfg.admin_listen[0] && !systemd_listen_passed("admin"))
		return 0;
	if (bind_listener(d, "admin.listen", d->cfg.admin_listen, false, &port, &fd) < 0)
		return -1;
	rc = http_server_new(&d->loop, fd, "admin", &admin, admin_handle, NULL, &d->admin_state,
	                     &d->admin);
	return rc < 0 ? -1 : 0;
}

static int start(struct daemon *d)
{
	const struct config *cfg = &d->cfg;
	char err[512] = "";
	int http_port = 0, udp_port = 0;

	d->ingest_count = config_ingest_threads(cfg);
	d->shard_count = config_shards(cfg);
	if (cfg->session_state_file[0] &&
	    state_file_check(cfg->session_state_file, err, sizeof(err)) < 0) {
		log_error("main",
		          "msg=\"cannot use the state file\" key=session.state_file err=\"%s\"",
		          err);
		return -1; /* exit 1: the disk, not the config */
	}
	metrics_gauge_set(GAUGE_DEDUP_COVERED, cfg->dedup_window_s); /* until the shards tick */
	d->channels = channel_lists_new(cfg->channel_sources_dir, err, sizeof(err));
	if (!d->channels) {
		log_error("main", "msg=\"cannot load the channel source lists\" err=\"%s\"", err);
		d->exit_code = 2;
		return -1;
	}
	if (strcmp(cfg->kafka_ack_mode, "kafka") == 0) {
		/* config_load made sure Kafka is configured. */
		d->acks = ack_hub_new(d->ingest_count, (size_t)cfg->kafka_ack_max_pending);
		if (!d->acks) {
			log_error("main", "msg=\"out of memory for kafka.ack_max_pending\"");
			return -1;
		}
	}
	if (cfg->kafka_brokers[0]) {
		struct spool *spool;

		if (open_spool(cfg, &spool) < 0)
			return -1; /* exit 1: the disk, not the config */
		d->kafka = open_kafka(cfg, spool, d->acks, err, sizeof(err));
		if (!d->kafka) {
			log_error("main", "msg=\"cannot start the Kafka sink\" err=\"%s\"", err);
			d->exit_code = 2; /* a bad [kafka.producer] property is a config error */
			return -1;
		}
	}
	if (d->acks && kafka_reports_start(d) < 0)
		return -1;
	if (shards_init(d) < 0)
		return -1;
	d->ingest = calloc(d->ingest_count, sizeof(*d->ingest));
	if (!d->ingest)
		return -1;
	for (size_t i = 0; i < d->ingest_count; i++) {
		d->ingest[i].index = (unsigned)i;
		if (ingest_thread_init(d, &d->ingest[i], &http_port, &udp_port) < 0)
			return -1;
	}
	if (admin_start(d) < 0)
		return -1;
	/* What /readyz asks: the shared sink, or every file sink. */
	d->ready_sinks = calloc(d->ingest_count + d->shard_count + 1, sizeof(*d->ready_sinks));
	if (!d->ready_sinks)
		return -1;
	if (d->kafka) {
		d->ready_sinks[0] = d->kafka;
	} else {
		size_t k = 0;
		for (size_t i = 0; i < d->ingest_count; i++)
			d->ready_sinks[k++] = d->ingest[i].sink;
		for (size_t s = 0; s < d->shard_count; s++)
			d->ready_sinks[k++] = d->shard_sinks[s];
	}
	/* Last: a start that failed before this point leaves the state file in place. */
	if (cfg->session_state_file[0])
		load_state(d);
	return 0;
}

static int start_threads(struct daemon *d)
{
	int rc;

	for (size_t s = 0; s < d->shard_count; s++) {
		rc = shard_start(d->shards[s], on_shard_done, d);
		if (rc < 0) {
			log_error("main", "msg=\"cannot start a shard thread\" err=\"%s\"",
			          strerror(-rc));
			return -1;
		}
		d->shards_started++;
	}
	for (size_t i = 0; i < d->ingest_count; i++) {
		struct ingest_thread *it = &d->ingest[i];
		rc = pthread_create(&it->thread, NULL, ingest_main, it);
		if (rc != 0) {
			log_error("main", "msg=\"cannot start an ingest thread\" err=\"%s\"",
			          strerror(rc));
			return -1;
		}
		it->started = true;
	}
	return 0;
}

static void cleanup(struct daemon *d)
{
	if (d->ingest) {
		for (size_t i = 0; i < d->ingest_count; i++) {
			struct ingest_thread *it = &d->ingest[i];
			if (it->sink_owned && it->sink)
				it->sink->ops->free(it->sink);
			pipeline_free(it->pl);
		}
		free(d->ingest);
	}
	if (d->shards)
		for (size_t s = 0; s < d->shard_count; s++)
			shard_free(d->shards[s]);
	if (d->shard_sinks)
		for (size_t s = 0; s < d->shard_count; s++)
			if (d->shard_sinks[s])
				d->shard_sinks[s]->ops->free(d->shard_sinks[s]);
	for (size_t r = 0; r < d->rings_ready; r++)
		ring_close(&d->rings[r]);
	free(d->rings);
	free(d->shards);
	free(d->shard_sinks);
	free(d->ready_sinks);
	if (d->kafka)
		d->kafka->ops->free(d->kafka);
	ack_hub_free(d->acks); /* after everything that completes into it */
	channel_lists_free(d->channels);
	channel_lists_free(d->channels_retiring);
	if (d->cfg_retiring && d->cfg_retiring != &d->cfg) {
		config_close(d->cfg_retiring);
		free(d->cfg_retiring);
	}
	if (d->cfg_live && d->cfg_live != &d->cfg) {
		config_close(d->cfg_live);
		free(d->cfg_live);
	}
	admin_close(&d->admin_state);
	config_close(&d->cfg);
}

int main(int argc, char **argv)
{
	static const struct option long_opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"set", required_argument, NULL, 's'},
	    {"check-config", no_argument, NULL, 'k'},
	    {"dump-options", no_argument, NULL, 'd'},
	    {"version", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static struct daemon d;
	char *sets[MAX_SETS];
	size_t nsets = 0;
	const char *config_path = NULL;
	bool check_only = false;
	char err[512];
	enum log_level level;
	int opt;

	while ((opt = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 's':
			if (nsets == MAX_SETS) {
				fprintf(stderr, "clickd: more than %d --set options\n", MAX_SETS);
				return 2;
			}
			sets[nsets++] = optarg;
			break;
		case 'k':
			check_only = true;
			break;
		case 'd':
			config_dump_options(stdout);
			return 0;
		case 'v':
			printf("clickd %s\n", CLICKD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "clickd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (config_load(&d.cfg, config_path, sets, nsets, err, sizeof(err)) < 0) {
		fprintf(stderr, "clickd: config: %s\n", err);
		return 2;
	}
	d.cfg_live = &d.cfg;
	d.config_path = config_path;
	d.sets = sets;
	d.nsets = nsets;
	if (check_only) {
		struct channel_lists *lists =
		    channel_lists_new(d.cfg.channel_sources_dir, err, sizeof(err));
		if (!lists) {
			fprintf(stderr, "clickd: config: channel.sources_dir: %s\n", err);
			config_close(&d.cfg);
			return 2;
		}
		channel_lists_free(lists);
		config_print(&d.cfg, stdout);
		config_close(&d.cfg);
		return 0;
	}
	if (log_level_parse(d.cfg.log_level, &level) == 0)
		log_set_level(level);
	signal(SIGPIPE, SIG_IGN);
	if (systemd_listen_init(err, sizeof(err)) < 0) {
		log_error("main", "msg=\"cannot start\" err=\"%s\"", err);
		config_close(&d.cfg);
		return 2;
	}

	d.exit_code = 1;
	uv_loop_init(&d.loop);
	uv_async_init(&d.loop, &d.done_async, on_done);
	d.done_async.data = &d;
	if (admin_init(&d.admin_state, NULL) < 0 || start(&d) < 0)
		goto fail;
	d.admin_state.sinks = d.ready_sinks;
	uv_timer_init(&d.loop, &d.poll_timer);
	d.poll_timer.data = &d;
	uv_timer_start(&d.poll_timer, on_poll_timer, MAIN_POLL_INTERVAL_MS, MAIN_POLL_INTERVAL_MS);
	systemd_listen_close(); /* every listener has its own copy of a passed socket now */
	systemd_timers_start(&d);
	uv_signal_init(&d.loop, &d.sigterm);
	uv_signal_init(&d.loop, &d.sigint);
	uv_signal_init(&d.loop, &d.sighup);
	d.sigterm.data = d.sigint.data = d.sighup.data = &d;
	uv_signal_start(&d.sigterm, on_signal, SIGTERM);
	uv_signal_start(&d.sigint, on_signal, SIGINT);
	uv_signal_start(&d.sighup, on_signal, SIGHUP);

	d.exit_code = 0;
	if (start_threads(&d) < 0) {
		/* Some threads run: stop them the normal way; the loops that never ran go now. */
		d.exit_code = 1;
		for (size_t i = 0; i < d.ingest_count; i++)
			if (!d.ingest[i].started) {
				ingest_thread_discard(&d.ingest[i]);
				atomic_fetch_add(&d.ingest_done, 1);
			}
		begin_stop(&d, "start-failure");
	} else {
		d.admin_state.started = true;
		log_info("main",
		         "msg=started version=%s sink=%s ack_mode=%s ingest_threads=%zu shards=%zu",
		         CLICKD_VERSION, d.kafka ? "kafka" : "file", d.cfg.kafka_ack_mode,
		         d.ingest_count, d.shard_count);
		notify_ready_once(&d);
	}
	uv_run(&d.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&d.loop) != 0) {
		log_error("main", "msg=\"handles left open at exit\"");
		d.exit_code = 1;
	}
	cleanup(&d);
	log_info("main", "msg=stopped exit_code=%d", d.exit_code);
	return d.exit_code;

fail:
	/* Start-up failed before any thread ran: close whatever was opened, without draining. */
	if (d.ingest)
		for (size_t i = 0; i < d.ingest_count; i++)
			ingest_thread_discard(&d.ingest[i]);
	if (d.admin)
		http_server_close(d.admin, 0, NULL, NULL);
	uv_walk(&d.loop, close_walk, NULL);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	uv_loop_close(&d.loop);
	cleanup(&d);
	return d.exit_code ? d.exit_code : 1;
}
