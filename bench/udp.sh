#!/usr/bin/env bash
# bench/udp.sh - clickd's UDP ingest against its anchor, a bare recvmmsg loop, on this machine.
#
# Builds bench/udp_anchor.c and bench/udp_blast.c with cc (into the temp dir; they are not
# part of the CMake build), starts clickd (Release build, file sink in a temp dir, port-0
# loopback listeners, HTTP off), then for a few rounds, alternating which goes first, sends
# the same beacons with udp_blast (sendmmsg, pinned to the load CPUs) for DURATION seconds
# to clickd's UDP port and to udp_anchor (pinned to the same server CPUs as clickd). Prints
# datagrams/s sent and received by each, the ratio clickd/anchor, and the losses: sent vs
# received, the kernel's receive-buffer drops (/proc/net/snmp RcvbufErrors, for the whole
# network namespace) and clickd's own drops (clickd_udp_drops_total). Checks that clickd
# wrote one event line per beacon it accepted. Everything it starts is stopped at exit.
#
#   bench/udp.sh                      # DURATION=5 ROUNDS=3, sender unpaced
#   RATE=100000 bench/udp.sh          # 100k datagrams/s: losses at a given load
#
# Environment (defaults in brackets):
#   DURATION [5]     seconds of sending per run     WARMUP [1]   seconds of warm-up per side
#   ROUNDS [3]       rounds (one clickd run and one anchor run each)
#   RATE [0]         datagrams per second to aim at; 0: as fast as the sender can
#   LINES [1]        beacons per datagram           SEND_BATCH [64]  datagrams per sendmmsg
#   ANCHOR_BATCH [64]  datagrams per recvmmsg in the anchor (libuv, in clickd, takes 20)
#   RCVBUF [4194304]   SO_RCVBUF asked for by both (clickd: udp.recv_buffer_bytes)
#   PIN, SERVER_CPUS, LOAD_CPUS, NICE, CLICKD_ARGS, BUILD, BUILD_DIR, CLICKD, KEEP_TMP,
#   RESULTS_DIR      as in bench/run.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-0}
LINES=${LINES:-1}
SEND_BATCH=${SEND_BATCH:-64}
ANCHOR_BATCH=${ANCHOR_BATCH:-64}
RCVBUF=${RCVBUF:-4194304}
CLICKD_ARGS=${CLICKD_ARGS:-}
CC=${CC:-cc}

need "$CC" curl python3 taskset
build_clickd
bench_init udp
RUN_ID=u$(date +%s)$$
mkdir -p "$TMP/runs" "$TMP/data" "$TMP/bin"
"$CC" -O2 -Wall -Wextra -o "$TMP/bin/udp_anchor" "$BENCH_DIR/udp_anchor.c"
"$CC" -O2 -Wall -Wextra -o "$TMP/bin/udp_blast" "$BENCH_DIR/udp_blast.c"

# shellcheck disable=SC2086
start_clickd "$TMP/data" --set http.listen= --set udp.recv_buffer_bytes="$RCVBUF" $CLICKD_ARGS
[ -n "$UDP_PORT" ] || die "clickd has no UDP port"
CLICKD_NOTE=$(clickd_note)
say "clickd pid $CLICKD_PID on udp 127.0.0.1:$UDP_PORT (admin $ADMIN_PORT), CPUs ${SERVER_CPUS} (pin=$PIN): $CLICKD_NOTE"
say "net.core.rmem_max=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo '?') (caps SO_RCVBUF=$RCVBUF)"

TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time

# Waits until clickd's datagram counter stops moving (it drains its socket buffer).
clickd_settle() {
	local last="" now i f=$TMP/settle.prom
	for i in $(seq 1 50); do
		metrics_to "$f"
		now=$(metric "$f" clickd_udp_datagrams_total)
		[ "$now" = "$last" ] && return 0
		last=$now
		sleep 0.1
	done
}

# one_run SEQ ROUND TARGET SECONDS: one sender run, its raw data in $TMP/runs/SEQ-TARGET/
one_run() {
	local seq=$1 round=$2 target=$3 secs=$4 dir port pid i
	dir=$TMP/runs/$(printf '%02d' "$seq")-$target
	mkdir -p "$dir"
	printf 'target=%s\nround=%s\nseconds=%s\nserver_cpus=%s\n' "$target" "$round" "$secs" \
		"$([ "$PIN" = 1 ] && echo "$SERVER_CPUS")" >"$dir/meta"
	if [ "$target" = clickd ]; then
		port=$UDP_PORT
		pid=$CLICKD_PID
		metrics_to "$dir/m0.prom"
	else
		"${ON_SERVER_CPUS[@]}" "$TMP/bin/udp_anchor" -b "$ANCHOR_BATCH" -r "$RCVBUF" >"$dir/anchor.out" &
		pid=$!
		STARTED_PIDS+=("$pid")
		for i in $(seq 1 50); do
			grep -q '^port=' "$dir/anchor.out" && break
			alive "$pid" || die "udp_anchor did not start"
			sleep 0.1
		done
		port=$(sed -n 's/^port=//p' "$dir/anchor.out")
		[ -n "$port" ] || die "udp_anchor printed no port"
	fi
	cpu_ticks "$pid" >"$dir/cpu0"
	cat /proc/stat >"$dir/stat0"
	cat /proc/net/snmp >"$dir/snmp0"
	local blast=("$TMP/bin/udp_blast" -p "$port" -d "$secs" -r "$RATE" -l "$LINES"
		-b "$SEND_BATCH" -R "$RUN_ID-$seq" -s "$seq")
	[ -n "$TIME_BIN" ] && blast=("$TIME_BIN" -f '%U %S %e' -o "$dir/blast.time" "${blast[@]}")
	run_waited "${ON_LOAD_CPUS[@]}" "${blast[@]}" >"$dir/blast.out" || die "udp_blast failed"
	if [ "$target" = clickd ]; then
		clickd_settle
	else
		sleep 0.3 # the anchor empties a full socket buffer in well under that
	fi
	cat /proc/net/snmp >"$dir/snmp1"
	cat /proc/stat >"$dir/stat1"
	cpu_ticks "$pid" >"$dir/cpu1"
	if [ "$target" = clickd ]; then
		metrics_to "$dir/m1.prom"
	else
		kill -TERM "$pid"
		wait "$pid" || die "udp_anchor failed"
		forget_pid "$pid"
	fi
	python3 "$BENCH_DIR/report.py" udp-line "$dir"
}

say "udp_blast: ${DURATION}s x $ROUNDS rounds, rate=$RATE/s (0: unpaced), $LINES beacon(s) per datagram, sendmmsg batch $SEND_BATCH; CPUs ${LOAD_CPUS}"
seq=0
if [ "$WARMUP" != 0 ]; then
	for t in clickd anchor; do
		seq=$((seq + 1))
		one_run "$seq" 0 "$t" "$WARMUP" >/dev/null
	done
fi
for round in $(seq 1 "$ROUNDS"); do
	if [ $((round % 2)) = 1 ]; then order="clickd anchor"; else order="anchor clickd"; fi
	for t in $order; do
		seq=$((seq + 1))
		one_run "$seq" "$round" "$t" "$DURATION"
	done
done

metrics_to "$TMP/final.prom"
stop_clickd
{
	echo "clickd_exit=$CLICKD_RC"
	echo "lines_on_disk=$(count_event_lines "$TMP/data")"
	echo "duplicate_eids=$(count_duplicate_eids "$TMP/data")"
	echo "machine=$(machine_note) rmem_max=$(cat /proc/sys/net/core/rmem_max 2>/dev/null)"
	echo "clickd=$CLICKD"
	echo "clickd_note=$CLICKD_NOTE"
	echo "clickd_args=--set http.listen= --set udp.recv_buffer_bytes=$RCVBUF $CLICKD_ARGS"
	echo "params=duration=$DURATION warmup=$WARMUP rounds=$ROUNDS rate=$RATE lines=$LINES send_batch=$SEND_BATCH anchor_batch=$ANCHOR_BATCH rcvbuf=$RCVBUF"
} >"$TMP/final"
grep -E 'level=(warn|error)' "$TMP/clickd.log" | head -20 >"$TMP/clickd_warnings" || true

mkdir -p "$RESULTS_DIR"
python3 "$BENCH_DIR/report.py" udp "$TMP" "$RESULTS_DIR" || exit $? # 3: the count check failed
