/*
 * main.c - the clickd daemon: command line, start-up, signals and the orderly stop.
 *
 * One loop (foundation form): the collect listeners (HTTP, UDP), the admin listener and
 * the sink's periodic work all run on it. Start-up order: config, sink, pipeline,
 * listeners; only then is /readyz ready. Stop (TERM/INT): stop accepting, let in-flight
 * requests finish (shutdown.drain_timeout_ms), take the datagrams the kernel holds,
 * flush the sink (kafka.flush_timeout_ms), close every handle, exit 0 — or 1 when records
 * could not be flushed. Exit codes: 0 clean stop, 1 runtime failure, 2 bad config/usage.
 */
#include "clickd/admin.h"
#include "clickd/config.h"
#include "clickd/http.h"
#include "clickd/ingest.h"
#include "clickd/log.h"
#include "clickd/net.h"
#include "clickd/pipeline.h"
#include "clickd/sink.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SINK_POLL_INTERVAL_MS 50
#define MAX_SETS              256

struct daemon {
	uv_loop_t loop;
	struct config cfg;
	struct sink *sink;
	struct pipeline *pl;
	struct ingest ix;
	struct admin_state admin_state;
	struct http_server *http;
	struct http_server *admin;
	struct ingest_udp *udp;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t poll_timer;
	int collect_parts_open; /* HTTP and UDP still closing */
	bool stopping;
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

/* ---- sinks ---- */

static struct sink *open_sink(const struct config *cfg, int *exit_code)
{
	char err[512] = "";
	struct sink *s;

	if (cfg->kafka_brokers[0]) {
		struct sink_kafka_property props[CONFIG_MAX_PRODUCER_PROPS];
		struct sink_kafka_options o = {
		    .brokers = cfg->kafka_brokers,
		    .topics = {[SINK_EVENTS] = cfg->kafka_topic_events,
		               [SINK_TOUCHPOINTS] = cfg->kafka_topic_touchpoints,
		               [SINK_DEAD_LETTERS] = cfg->kafka_topic_dead_letters},
		    .producer = props,
		    .producer_count = cfg->producer_count,
		};
		for (size_t i = 0; i < cfg->producer_count; i++) {
			props[i].key = cfg->producer_keys[i];
			props[i].value = cfg->producer_values[i];
		}
		s = sink_kafka_new(&o, err, sizeof(err));
		if (!s) {
			log_error("main", "msg=\"cannot start the Kafka sink\" err=\"%s\"", err);
			*exit_code = 2; /* a bad [kafka.producer] property is a config error */
		}
		return s;
	}
	struct sink_file_options fo = {
	    .dir = cfg->sink_file_dir,
	    .compress_zstd = strcmp(cfg->sink_file_compress, "zstd") == 0,
	    .zstd_level = (int)cfg->sink_file_zstd_level,
	    .rotate_bytes = (uint64_t)cfg->sink_file_rotate_bytes,
	    .rotate_age_ms = cfg->sink_file_rotate_s * 1000,
	};
	s = sink_file_new(&fo, err, sizeof(err));
	if (!s) {
		log_error("main", "msg=\"cannot start the file sink\" dir=\"%s\" err=\"%s\"",
		          cfg->sink_file_dir, err);
		*exit_code = 1;
	}
	return s;
}

static void on_poll_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;
	d->sink->ops->poll(d->sink, wall_clock_ms());
}

/* ---- stop ---- */

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_admin_closed(void *arg)
{
	struct daemon *d = arg;
	uv_close((uv_handle_t *)&d->sigterm, on_handle_closed);
	uv_close((uv_handle_t *)&d->sigint, on_handle_closed);
	uv_close((uv_handle_t *)&d->sighup, on_handle_closed);
}

static void finish_stop(struct daemon *d)
{
	int rc;

	uv_timer_stop(&d->poll_timer);
	uv_close((uv_handle_t *)&d->poll_timer, on_handle_closed);
	/* Nothing else runs now: blocking in flush is what the stop is for. */
	rc = d->sink->ops->flush(d->sink, (int)d->cfg.kafka_flush_timeout_ms);
	if (rc < 0) {
		log_error("main", "msg=\"records could not be flushed before the timeout\" err=%d",
		          rc);
		d->exit_code = 1;
	}
	d->sink->ops->poll(d->sink, wall_clock_ms());
	if (d->admin)
		http_server_close(d->admin, 0, on_admin_closed, d);
	else
		on_admin_closed(d);
}

static void on_collect_part_closed(void *arg)
{
	struct daemon *d = arg;
	if (--d->collect_parts_open == 0)
		finish_stop(d);
}

static void begin_stop(struct daemon *d, const char *why)
{
	if (d->stopping)
		return;
	d->stopping = true;
	d->admin_state.draining = true;
	log_info("main", "msg=\"stopping: draining connections, flushing sinks\" signal=%s", why);
	d->collect_parts_open = 1; /* held until both parts are asked to close */
	if (d->http) {
		d->collect_parts_open++;
		http_server_close(d->http, (uint64_t)d->cfg.shutdown_drain_timeout_ms,
		                  on_collect_part_closed, d);
	}
	if (d->udp) {
		d->collect_parts_open++;
		ingest_udp_close(d->udp, on_collect_part_closed, d);
	}
	on_collect_part_closed(d);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	if (signum == SIGHUP) {
		log_warn("main", "msg=\"SIGHUP: live reload is not available in this version; "
		                 "restart to apply config changes\"");
		return;
	}
	begin_stop(d, signum == SIGTERM ? "TERM" : "INT");
}

/* ---- start ---- */

static int start_listener(struct daemon *d, const char *key, const char *addr_text, bool udp,
                          int *fd_out)
{
	struct sockaddr_storage addr;
	char err[256];
	int fd;

	if (config_parse_address(addr_text, &addr, err, sizeof(err)) < 0) {
		log_error("main", "msg=\"bad address\" key=%s err=\"%s\"", key, err);
		return -EINVAL;
	}
	fd = udp ? net_bind_udp(&addr, (int)d->cfg.udp_recv_buffer_bytes, err, sizeof(err))
	         : net_listen_tcp(&addr, 4096, err, sizeof(err));
	if (fd < 0) {
		log_error("main", "msg=\"cannot listen\" key=%s addr=%s err=\"%s\"", key, addr_text,
		          err);
		return fd;
	}
	log_info("main", "msg=listening key=%s addr=%s port=%d", key, addr_text,
	         net_local_port(fd));
	*fd_out = fd;
	return 0;
}

static int start(struct daemon *d)
{
	const struct config *cfg = &d->cfg;
	struct http_limits collect = {
	    .max_connections = (size_t)cfg->http_max_connections,
	    .max_header_bytes = (size_t)cfg->http_max_header_bytes,
	    .max_url_bytes = (size_t)cfg->http_max_url_bytes,
	    .max_body_bytes = (size_t)cfg->http_max_body_bytes,
	    .idle_timeout_ms = (uint64_t)cfg->http_idle_timeout_ms,
	    .collect_metrics = true,
	};
	struct http_limits admin = {
	    .max_connections = 64,
	    .max_header_bytes = 8192,
	    .max_url_bytes = 2048,
	    .max_body_bytes = 0,
	    .idle_timeout_ms = 30000,
	};
	int fd, rc;

	if (cfg->admin_listen[0]) {
		if (start_listener(d, "admin.listen", cfg->admin_listen, false, &fd) < 0)
			return -1;
		rc = http_server_new(&d->loop, fd, "admin", &admin, admin_handle, NULL,
		                     &d->admin_state, &d->admin);
		if (rc < 0)
			return -1;
	}
	if (cfg->http_listen[0]) {
		if (start_listener(d, "http.listen", cfg->http_listen, false, &fd) < 0)
			return -1;
		rc = http_server_new(&d->loop, fd, "http", &collect, ingest_http_handle,
		                     ingest_http_reject, &d->ix, &d->http);
		if (rc < 0)
			return -1;
	}
	if (cfg->udp_listen[0]) {
		if (start_listener(d, "udp.listen", cfg->udp_listen, true, &fd) < 0)
			return -1;
		rc = ingest_udp_new(&d->loop, fd, &d->ix, &d->udp);
		if (rc < 0) {
			log_error("main", "msg=\"cannot receive UDP\" err=\"%s\"", uv_strerror(rc));
			return -1;
		}
	}
	return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
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
	if (check_only) {
		config_print(&d.cfg, stdout);
		config_close(&d.cfg);
		return 0;
	}
	if (log_level_parse(d.cfg.log_level, &level) == 0)
		log_set_level(level);
	signal(SIGPIPE, SIG_IGN);

	d.exit_code = 1;
	uv_loop_init(&d.loop);
	d.sink = open_sink(&d.cfg, &d.exit_code);
	if (!d.sink)
		goto fail;
	d.pl = pipeline_new(d.sink, (size_t)d.cfg.limits_dead_letter_payload_bytes);
	if (!d.pl || admin_init(&d.admin_state, d.sink) < 0) {
		log_error("main", "msg=\"out of memory\"");
		goto fail;
	}
	ingest_init(&d.ix, &d.cfg, d.pl);
	if (start(&d) < 0)
		goto fail;

	uv_timer_init(&d.loop, &d.poll_timer);
	d.poll_timer.data = &d;
	uv_timer_start(&d.poll_timer, on_poll_timer, SINK_POLL_INTERVAL_MS, SINK_POLL_INTERVAL_MS);
	uv_signal_init(&d.loop, &d.sigterm);
	uv_signal_init(&d.loop, &d.sigint);
	uv_signal_init(&d.loop, &d.sighup);
	d.sigterm.data = d.sigint.data = d.sighup.data = &d;
	uv_signal_start(&d.sigterm, on_signal, SIGTERM);
	uv_signal_start(&d.sigint, on_signal, SIGINT);
	uv_signal_start(&d.sighup, on_signal, SIGHUP);

	d.admin_state.started = true;
	d.exit_code = 0;
	log_info("main", "msg=started version=%s sink=%s", CLICKD_VERSION, d.sink->ops->name);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&d.loop) != 0) {
		log_error("main", "msg=\"handles left open at exit\"");
		d.exit_code = 1;
	}
	pipeline_free(d.pl);
	d.sink->ops->free(d.sink);
	admin_close(&d.admin_state);
	config_close(&d.cfg);
	log_info("main", "msg=stopped exit_code=%d", d.exit_code);
	return d.exit_code;

fail:
	/* Start-up failed: close whatever was opened, without draining. */
	uv_walk(&d.loop, close_walk, NULL);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	uv_loop_close(&d.loop);
	pipeline_free(d.pl);
	if (d.sink)
		d.sink->ops->free(d.sink);
	admin_close(&d.admin_state);
	config_close(&d.cfg);
	return d.exit_code ? d.exit_code : 1;
}
