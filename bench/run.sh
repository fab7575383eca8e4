#!/usr/bin/env bash
# bench/run.sh - clickd's HTTP ingest against its anchor, nginx answering 204, on this machine.
#
# Starts clickd (Release build, file sink in a temp dir, port-0 loopback listeners) and
# nginx (bench/nginx.conf: `return 204` on /collect, as many workers as clickd has ingest
# threads, on a free loopback port), both pinned to the same server CPUs; then runs the same
# wrk load (bench/collect.lua, same connections, threads and duration, wrk pinned to the
# load CPUs) against each, alternating which goes first, for a few rounds. Prints 2xx
# answers/s, p50/p99 latency, CPU used, and the ratios clickd/nginx of 2xx/s and of 2xx
# per server CPU-second (medians over the rounds); checks that clickd wrote as many events
# as wrk got 2xx answers. Everything it starts is stopped at exit. See bench/README.md.
#
#   bench/run.sh                        # DURATION=10 CONNECTIONS=50 THREADS=1 ROUNDS=3
#   DURATION=5 ROUNDS=5 MODE=post BATCH=20 bench/run.sh
#
# Environment (defaults in brackets):
#   DURATION [10]      seconds per wrk run        WARMUP [2]   seconds of warm-up per side
#   CONNECTIONS [50]   wrk connections            THREADS [1]  wrk threads
#   ROUNDS [3]         rounds (one clickd run and one nginx run each)
#   MODE [get]         get: GET /collect?...; post: POST /collect with JSON arrays of BATCH
#   BATCH [10]         beacons per POST (MODE=post)
#   WORKERS [clickd's ingest threads]  nginx worker_processes
#   PIN [1 with 2+ CPUs], SERVER_CPUS [upper half], LOAD_CPUS [lower half]  taskset lists
#   NICE [0]           e.g. -10: raise the priority of both sides (a shared machine; root)
#   CLICKD_ARGS        extra clickd options, e.g. "--set sink.file.compress=zstd"
#   BUILD [1]          0: do not (re)build; BUILD_DIR [build-bench], CLICKD [BUILD_DIR/clickd]
#   KEEP_TMP [0]       1: keep the temp dir (clickd's files and log, the raw wrk output)
#   RESULTS_DIR [bench/results]   where the .txt and .json results go
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-get}
BATCH=${BATCH:-10}
CLICKD_ARGS=${CLICKD_ARGS:-}

case "$MODE" in get | post) ;; *) die "MODE must be get or post" ;; esac
[ "$MODE" = get ] && BATCH=1
need wrk nginx curl python3 taskset

build_clickd
bench_init http
RUN_ID=b$(date +%s)$$
mkdir -p "$TMP/runs" "$TMP/data" "$TMP/nginx"

# ---- clickd ----
# shellcheck disable=SC2086
start_clickd "$TMP/data" --set udp.listen= $CLICKD_ARGS
WORKERS=${WORKERS:-$(clickd_ingest_threads)}
CLICKD_NOTE=$(clickd_note)
say "clickd pid $CLICKD_PID on 127.0.0.1:$HTTP_PORT (admin $ADMIN_PORT), CPUs ${SERVER_CPUS} (pin=$PIN): $CLICKD_NOTE"

# ---- nginx ----
NGINX_PORT=$(free_tcp_port)
sed -e "s|@WORKERS@|$WORKERS|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@DIR@|$TMP/nginx|g" \
	"$BENCH_DIR/nginx.conf" >"$TMP/nginx/nginx.conf"
"${ON_SERVER_CPUS[@]}" nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
	2>>"$TMP/nginx/error.log" &
NGINX_PID=$!
STARTED_PIDS+=("$NGINX_PID")
for _ in $(seq 1 100); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/collect")" = 204 ] && break
	kill -0 "$NGINX_PID" 2>/dev/null || {
		cat "$TMP/nginx/error.log" >&2
		die "nginx did not start"
	}
	sleep 0.1
done
say "nginx pid $NGINX_PID on 127.0.0.1:$NGINX_PORT, $WORKERS worker(s), CPUs ${SERVER_CPUS}"

nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true); }
server_pids() { if [ "$1" = clickd ]; then echo "$CLICKD_PID"; else nginx_pids; fi; }
server_port() { if [ "$1" = clickd ]; then echo "$HTTP_PORT"; else echo "$NGINX_PORT"; fi; }

TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time

# one_run SEQ ROUND TARGET SECONDS: one wrk run, its raw data in $TMP/runs/SEQ-TARGET/
one_run() {
	local seq=$1 round=$2 target=$3 secs=$4 dir pids
	dir=$TMP/runs/$(printf '%02d' "$seq")-$target
	mkdir -p "$dir"
	printf 'target=%s\nround=%s\nseconds=%s\nserver_cpus=%s\n' "$target" "$round" "$secs" "$([ "$PIN" = 1 ] && echo "$SERVER_CPUS")" >"$dir/meta"
	read -r -a pids <<<"$(server_pids "$target")"
	[ "$target" = clickd ] && metrics_to "$dir/m0.prom"
	cpu_ticks "${pids[@]}" >"$dir/cpu0"
	cat /proc/stat >"$dir/stat0"
	local wrk_cmd=(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" -s "$BENCH_DIR/collect.lua"
		"http://127.0.0.1:$(server_port "$target")" -- mode="$MODE" batch="$BATCH"
		run="$RUN_ID-$seq")
	[ -n "$TIME_BIN" ] && wrk_cmd=("$TIME_BIN" -f '%U %S %e' -o "$dir/wrk.time" "${wrk_cmd[@]}")
	run_waited "${ON_LOAD_CPUS[@]}" "${wrk_cmd[@]}" >"$dir/wrk.out" 2>&1 ||
		die "wrk failed: $(cat "$dir/wrk.out")"
	cat /proc/stat >"$dir/stat1"
	cpu_ticks "${pids[@]}" >"$dir/cpu1"
	if [ "$target" = clickd ]; then
		sleep 0.2 # let clickd answer what was in flight when wrk stopped
		metrics_to "$dir/m1.prom"
	fi
	grep -q '^WRK_RESULT ' "$dir/wrk.out" || die "no WRK_RESULT from wrk: $(cat "$dir/wrk.out")"
	python3 "$BENCH_DIR/report.py" http-line "$dir"
}

say "wrk: $THREADS thread(s), $CONNECTIONS connections, ${DURATION}s x $ROUNDS rounds, mode=$MODE batch=$BATCH; CPUs ${LOAD_CPUS}"
seq=0
if [ "$WARMUP" != 0 ]; then
	for t in clickd nginx; do
		seq=$((seq + 1))
		one_run "$seq" 0 "$t" "$WARMUP" >/dev/null
	done
fi
for round in $(seq 1 "$ROUNDS"); do
	if [ $((round % 2)) = 1 ]; then order="clickd nginx"; else order="nginx clickd"; fi
	for t in $order; do
		seq=$((seq + 1))
		one_run "$seq" "$round" "$t" "$DURATION"
	done
done

# ---- stop clickd, count what it wrote ----
metrics_to "$TMP/final.prom"
stop_clickd
{
	echo "clickd_exit=$CLICKD_RC"
	echo "lines_on_disk=$(count_event_lines "$TMP/data")"
	echo "duplicate_eids=$(count_duplicate_eids "$TMP/data")"
	echo "machine=$(machine_note)"
	echo "nginx_version=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "wrk=$(command -v wrk)"
	echo "clickd=$CLICKD"
	echo "clickd_note=$CLICKD_NOTE"
	echo "clickd_args=--set udp.listen= $CLICKD_ARGS"
	echo "workers=$WORKERS"
	echo "params=duration=$DURATION warmup=$WARMUP connections=$CONNECTIONS threads=$THREADS rounds=$ROUNDS mode=$MODE batch=$BATCH"
} >"$TMP/final"
grep -E 'level=(warn|error)' "$TMP/clickd.log" | head -20 >"$TMP/clickd_warnings" || true

mkdir -p "$RESULTS_DIR"
python3 "$BENCH_DIR/report.py" http "$TMP" "$RESULTS_DIR" || exit $? # 3: the count check failed
