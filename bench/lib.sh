# bench/lib.sh - what bench/run.sh and bench/udp.sh share (sourced, not run).
#
# Building clickd in Release (its own build dir), a temp dir, CPU pinning, starting clickd
# on port-0 loopback listeners and reading its ports from its log, /metrics snapshots,
# process CPU time, and stopping everything that was started when the script exits.
# shellcheck shell=bash

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
BUILD_DIR=${BUILD_DIR:-$REPO/build-bench}
CLICKD=${CLICKD:-$BUILD_DIR/clickd}
BUILD=${BUILD:-1}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
KEEP_TMP=${KEEP_TMP:-0}

NCPU=$(nproc 2>/dev/null || echo 1)
# Pinning: the servers (clickd, nginx, the UDP anchor) on the upper half of the CPUs, the
# load generators (wrk, udp_blast) on the lower half, the same for every side.
PIN=${PIN:-$([ "$NCPU" -ge 2 ] && echo 1 || echo 0)}
if [ "$NCPU" -ge 2 ]; then
	SERVER_CPUS=${SERVER_CPUS:-$((NCPU / 2))-$((NCPU - 1))}
	LOAD_CPUS=${LOAD_CPUS:-0-$((NCPU / 2 - 1))}
else
	SERVER_CPUS=${SERVER_CPUS:-0}
	LOAD_CPUS=${LOAD_CPUS:-0}
fi

TMP=""
STARTED_PIDS=()

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

# alive PID: running (a zombie, exited but not yet waited for, is not)
alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	case "$st" in Z*) return 1 ;; esac
	return 0
}

cleanup() {
	local pid i
	trap - ERR
	set +e
	for pid in "${STARTED_PIDS[@]}"; do
		# children first (the load generator under /usr/bin/time, nginx's workers), by
		# parent pid: only what this script started
		for i in $(pgrep -P "$pid" 2>/dev/null); do
			kill -TERM "$i" 2>/dev/null
		done
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${STARTED_PIDS[@]}"; do
		for i in $(seq 1 100); do # up to 10 s each, then KILL
			alive "$pid" || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ -n "$OLD_AUTOGROUP_NICE" ]; then
		echo "$OLD_AUTOGROUP_NICE" >"/proc/$$/autogroup" 2>/dev/null
	fi
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		if [ "$KEEP_TMP" = 1 ]; then
			say "kept $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
}

bench_init() { # bench_init NAME: temp dir, traps
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/clickd-bench-$1.XXXXXX")
	set -E
	trap 'say "failed (exit $?) at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	if [ "$NICE" != 0 ] && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ] &&
		[ -w "/proc/$$/autogroup" ]; then
		OLD_AUTOGROUP_NICE=$(sed -n 's/.* nice \(-\{0,1\}[0-9]*\).*/\1/p' "/proc/$$/autogroup")
		if echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null; then
			say "autogroup of this session: nice $NICE (was $OLD_AUTOGROUP_NICE; restored at exit)"
		else
			say "warning: cannot set the autogroup nice; NICE only orders processes within this session"
			OLD_AUTOGROUP_NICE=""
		fi
	fi
}

forget_pid() { # forget_pid PID: it has been stopped and waited for
	local keep=() p
	for p in "${STARTED_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	STARTED_PIDS=("${keep[@]}")
}

# run_waited CMD...: runs CMD in the background and waits for it, so that a TERM or INT
# to the script is handled at once (bash defers traps until a foreground child ends) and
# the cleanup stops CMD too. Returns CMD's exit status.
run_waited() {
	local pid rc=0
	"$@" &
	pid=$!
	STARTED_PIDS+=("$pid")
	wait "$pid" || rc=$?
	forget_pid "$pid"
	return "$rc"
}

need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 ||
			die "$t is missing (Debian: apt-get install $(pkg_of "$t"))"
	done
}
pkg_of() {
	case "$1" in
	nginx) echo nginx-light ;;
	cc) echo gcc ;;
	taskset) echo util-linux ;;
	*) echo "$1" ;;
	esac
}

# Command prefixes that run a command on the server CPUs / the load CPUs when pinning is
# on. Prefixes, not functions: `"${ON_SERVER_CPUS[@]}" cmd &` forks once and execs, so $!
# is the pid of cmd itself (taskset execs it), which is what gets signalled and waited for.
# NICE (e.g. -10, as root) raises the priority of both servers and the load generator
# alike, so that other work on a shared machine takes less of their CPUs (it slows that
# other work down while the benchmark runs: opt-in). With autogroup scheduling on
# (kernel.sched_autogroup_enabled=1) nice only orders processes within one session, so
# the script's session (autogroup) gets the nice value too, and its old one back at exit.
NICE=${NICE:-0}
OLD_AUTOGROUP_NICE=""
ON_SERVER_CPUS=()
ON_LOAD_CPUS=()
if [ "$NICE" != 0 ]; then
	ON_SERVER_CPUS=(nice -n "$NICE")
	ON_LOAD_CPUS=(nice -n "$NICE")
fi
if [ "$PIN" = 1 ]; then
	ON_SERVER_CPUS+=(taskset -c "$SERVER_CPUS")
	ON_LOAD_CPUS+=(taskset -c "$LOAD_CPUS")
fi

build_clickd() {
	if [ "$BUILD" = 1 ]; then
		say "building clickd (Release) in $BUILD_DIR"
		cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
		cmake --build "$BUILD_DIR" -j"$NCPU" --target clickd >/dev/null
	fi
	[ -x "$CLICKD" ] || die "no clickd binary at $CLICKD"
	if [ -f "$BUILD_DIR/CMakeCache.txt" ] &&
		! grep -q '^CMAKE_BUILD_TYPE:[A-Z]*=Release$' "$BUILD_DIR/CMakeCache.txt"; then
		say "warning: $BUILD_DIR is not a Release build; figures will not be representative"
	fi
}

# clickd's ingest threads (the ones that answer HTTP), from its "msg=started ...
# ingest_threads=N" log line; 1 when it does not say (the single-loop foundation build).
clickd_ingest_threads() {
	local n
	n=$(sed -n 's/.*msg=started .*ingest_threads=\([0-9]*\).*/\1/p' "$TMP/clickd.log" | tail -1)
	[[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ] && echo "$n" || echo 1
}

# What clickd says about itself at start, and how many threads it runs now.
clickd_note() {
	printf '%s threads=%s' "$(sed -n 's/.*msg=started //p' "$TMP/clickd.log" | tail -1)" \
		"$(ls "/proc/$CLICKD_PID/task" 2>/dev/null | wc -l)"
}

free_tcp_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

CLICKD_PID=""
HTTP_PORT=""
UDP_PORT=""
ADMIN_PORT=""

# start_clickd DATA_DIR [--set k=v ...]: clickd on the server CPUs, every listener on a
# free loopback port (port 0), file sink in DATA_DIR; sets HTTP_PORT, UDP_PORT, ADMIN_PORT.
start_clickd() {
	local data=$1 log=$TMP/clickd.log i
	shift
	"${ON_SERVER_CPUS[@]}" "$CLICKD" --set http.listen=127.0.0.1:0 --set udp.listen=127.0.0.1:0 \
		--set admin.listen=127.0.0.1:0 --set sink.file.dir="$data" "$@" 2>"$log" &
	CLICKD_PID=$!
	STARTED_PIDS+=("$CLICKD_PID")
	for i in $(seq 1 100); do
		grep -q 'msg=started' "$log" 2>/dev/null && break
		alive "$CLICKD_PID" || {
			cat "$log" >&2
			die "clickd did not start"
		}
		sleep 0.1
	done
	grep -q 'msg=started' "$log" || {
		cat "$log" >&2
		die "clickd did not say it started within 10 s"
	}
	listen_port() { sed -n "s/.*msg=listening key=$1 .* port=\([0-9]*\).*/\1/p" "$log" | tail -1; }
	HTTP_PORT=$(listen_port http.listen)
	UDP_PORT=$(listen_port udp.listen)
	ADMIN_PORT=$(listen_port admin.listen)
	[ -n "$ADMIN_PORT" ] || die "clickd has no admin port (needed for /metrics)"
}

# stop_clickd: TERM (drain, flush, exit); sets CLICKD_RC to clickd's exit code.
CLICKD_RC=""
stop_clickd() {
	CLICKD_RC=0
	kill -TERM "$CLICKD_PID"
	wait "$CLICKD_PID" || CLICKD_RC=$?
	forget_pid "$CLICKD_PID"
}

metrics_to() { # metrics_to FILE
	curl -sf --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$1" ||
		die "cannot read clickd's /metrics"
}

metric() { # metric FILE NAME_WITH_LABELS: the value, 0 when absent
	awk -v n="$2" '$1 == n { v = $2 } END { print (v == "" ? 0 : v) }' "$1"
}

# cpu_ticks PID...: user+system clock ticks used so far by these processes (0 for gone ones)
cpu_ticks() {
	local pid total=0 t
	for pid in "$@"; do
		t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
		total=$((total + ${t:-0}))
	done
	echo "$total"
}

# The event records clickd wrote in DATA_DIR (closed and still-open files, zstd or not).
cat_events() {
	local f
	for f in "$1"/events-*; do
		[ -e "$f" ] || continue
		case "$f" in
		*.zst | *.zst.open) zstd -dcq "$f" ;;
		*) cat "$f" ;;
		esac
	done
}
count_event_lines() { cat_events "$1" | wc -l; }

# Event IDs that occur more than once in DATA_DIR (0 is what we want).
count_duplicate_eids() {
	cat_events "$1" | grep -o '"event_id":"[^"]*"' | sort -S 25% | uniq -d | wc -l
}

machine_note() {
	printf 'cpus=%s model="%s" loadavg="%s" kernel=%s pin=%s server_cpus=%s load_cpus=%s nice=%s' \
		"$NCPU" "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
		"$(cut -d' ' -f1-3 /proc/loadavg)" "$(uname -r)" "$PIN" "$SERVER_CPUS" "$LOAD_CPUS" "$NICE"
}
