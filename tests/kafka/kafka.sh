#!/usr/bin/env bash
# A real, single-node Apache Kafka broker (KRaft, combined broker+controller) for
# clickd's tests. See tests/kafka/README.md.
#
#   kafka.sh fetch              download the broker's jars into the cache (idempotent)
#   kafka.sh start STATE_DIR    (re)start a fresh broker on free 127.0.0.1 ports; waits
#                               until it answers; writes STATE_DIR/pid and
#                               STATE_DIR/bootstrap (127.0.0.1:PORT)
#   kafka.sh stop STATE_DIR     stop it and remove STATE_DIR (exit 0 if nothing runs)
#   kafka.sh status STATE_DIR   exit 0 if the broker runs and answers
#   kafka.sh halt STATE_DIR     stop it (TERM, as stop) but keep STATE_DIR: its data,
#                               config and ports, for restart
#   kafka.sh kill STATE_DIR     kill -9 it (a crash), keeping STATE_DIR
#   kafka.sh restart STATE_DIR  start the broker of STATE_DIR again, with the same data,
#                               ports and cluster id (after halt or kill; a running one
#                               is stopped first); waits until it answers
#
# Environment:
#   CLICKD_CACHE_DIR                 cache root (default $HOME/.cache/clickd)
#   CLICKD_KAFKA_VERSION             Kafka version (default below)
#   CLICKD_TEST_TIMEOUT_MULTIPLIER   scales every wait (default 1)
#   CLICKD_KAFKA_HEAP_OPTS           JVM heap options (default -Xms256m -Xmx512m)
#   CLICKD_KAFKA_JAVA                java binary (default: java on PATH; needs 17+)
set -euo pipefail

KAFKA_VERSION="${CLICKD_KAFKA_VERSION:-4.4.0}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${CLICKD_CACHE_DIR:-${HOME:?HOME is not set; set CLICKD_CACHE_DIR}/.cache/clickd}"
CACHE="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$CACHE/libs"
STAMP="$CACHE/.complete"
MVN_LOG="$CACHE/mvn.log"
JAVA="${CLICKD_KAFKA_JAVA:-java}"
HEAP_OPTS="${CLICKD_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
MULT="${CLICKD_TEST_TIMEOUT_MULTIPLIER:-1}"
MARKER=".clickd-kafka-state"      # proves a directory is ours before rm -rf
NODE_ID=1

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

[[ "$MULT" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    die "CLICKD_TEST_TIMEOUT_MULTIPLIER must be a positive number, got '$MULT'"

# scaled SECONDS: SECONDS times the timeout multiplier, rounded, at least 1.
scaled() { awk -v s="$1" -v m="$MULT" 'BEGIN { v = int(s * m + 0.5); if (v < 1) v = 1; print v }'; }

usage() {
    sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------

pom_hash() { sha256sum "$HERE/pom.xml" | cut -d' ' -f1; }

# The cache is complete only once the stamp exists, names this version and
# this pom.xml, and the broker jar is there. A download that was cut short
# has no stamp and is redone.
cache_ok() {
    [[ -f "$STAMP" && -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || return 1
    grep -qx "version=$KAFKA_VERSION" "$STAMP" && grep -qx "pom=$(pom_hash)" "$STAMP"
}

do_fetch() {
    cache_ok && return 0
    command -v mvn >/dev/null || die "mvn not found on PATH (Debian package: maven)"
    mkdir -p "$CACHE_ROOT"
    # One download at a time per version, even across build trees.
    local lockfd
    exec {lockfd}>"$CACHE_ROOT/kafka-$KAFKA_VERSION.lock"
    flock -w "$(scaled 900)" "$lockfd" || die "timed out waiting for another fetch (lock $CACHE_ROOT/kafka-$KAFKA_VERSION.lock)"
    if cache_ok; then exec {lockfd}>&-; return 0; fi

    log "fetching Kafka $KAFKA_VERSION from Maven Central into $CACHE (log: $MVN_LOG)"
    local t0=$SECONDS
    rm -rf "$STAMP" "$LIBS"            # leftovers of an interrupted run
    mkdir -p "$CACHE"
    # The local repository lives in the cache too (not ~/.m2), so a retry after an
    # interrupted download resumes; it is dropped once libs/ is complete.
    if ! mvn -q -B -f "$HERE/pom.xml" \
            -Dkafka.version="$KAFKA_VERSION" \
            -Dmaven.repo.local="$CACHE/m2" \
            dependency:copy-dependencies \
            -DincludeScope=runtime \
            -DoutputDirectory="$LIBS" >"$MVN_LOG" 2>&1; then
        log "mvn failed; last lines of $MVN_LOG:"
        tail -n 40 "$MVN_LOG" >&2 || true
        die "could not fetch Kafka $KAFKA_VERSION"
    fi
    [[ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] ||
        die "mvn succeeded but $LIBS/kafka_2.13-$KAFKA_VERSION.jar is missing (see $MVN_LOG)"
    rm -rf "$CACHE/m2"
    {
        echo "version=$KAFKA_VERSION"
        echo "pom=$(pom_hash)"
        echo "fetched=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "jars=$(find "$LIBS" -name '*.jar' | wc -l)"
    } >"$STAMP.tmp"
    mv -f "$STAMP.tmp" "$STAMP"
    exec {lockfd}>&-
    log "fetched Kafka $KAFKA_VERSION ($(du -sh "$LIBS" | cut -f1)) in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# state dir helpers
# ---------------------------------------------------------------------------

abs_state_dir() {
    [[ -n "${1:-}" ]] || usage
    local d
    d="$(realpath -m -- "$1")"
    [[ "$d" != "/" && "$d" != "${HOME:-/}" ]] || die "refusing to use '$d' as a state dir"
    printf '%s\n' "$d"
}

# Refuse to wipe a directory that is neither empty nor marked as ours.
check_ours() {
    local d="$1"
    [[ -e "$d" ]] || return 0
    [[ -d "$d" ]] || die "$d exists and is not a directory"
    [[ -e "$d/$MARKER" ]] && return 0
    [[ -z "$(ls -A -- "$d")" ]] && return 0
    die "$d is not empty and was not made by kafka.sh (no $MARKER); refusing to touch it"
}

# Is PID the broker of state dir D? (Guards against a recycled pid; a zombie
# has an empty cmdline and counts as gone.)
is_our_broker() {
    local pid="$1" d="$2" cmd
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ "$cmd" == *kafka.Kafka* && "$cmd" == *"$d/server.properties"* ]]
}

# Stop the broker recorded in D/pid, if any: TERM, bounded wait, then KILL.
stop_broker() {
    local d="$1" pid i limit
    [[ -f "$d/pid" ]] || return 0
    pid="$(<"$d/pid")"
    if is_our_broker "$pid" "$d"; then
        log "stopping broker pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        limit=$(scaled 30)
        for ((i = 0; i < limit * 5; i++)); do
            is_our_broker "$pid" "$d" || break
            sleep 0.2
        done
        if is_our_broker "$pid" "$d"; then
            log "broker pid $pid ignored TERM for ${limit}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                is_our_broker "$pid" "$d" || break
                sleep 0.1
            done
            is_our_broker "$pid" "$d" && die "broker pid $pid survived KILL"
        fi
        # Reap it if it is our own child (start's failure path); harmless otherwise.
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$d/pid"
}

# ---------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------

check_java() {
    command -v "$JAVA" >/dev/null || die "'$JAVA' not found on PATH; Kafka $KAFKA_VERSION needs Java 17+ (Debian: openjdk-17-jre-headless)"
    local out v major
    out="$("$JAVA" -version 2>&1)" || die "'$JAVA -version' failed: $out"
    v="$(sed -n 's/.*version "\([^"]*\)".*/\1/p' <<<"$out")"
    v="${v%%$'\n'*}"
    major="${v%%.*}"
    [[ "$major" == 1 ]] && major="$(cut -d. -f2 <<<"$v")"
    [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] ||
        die "Kafka $KAFKA_VERSION needs Java 17+, but '$JAVA' is version '${v:-unknown}'"
}

port_in_use() {
    local p="$1"
    if command -v ss >/dev/null; then
        [[ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
    fi
}

# A free TCP port below the kernel's ephemeral range (32768+), so that an outgoing
# connection cannot grab it between our check and the broker's bind.
# Not in the list of ports given as arguments.
pick_port() {
    local p i
    for ((i = 0; i < 500; i++)); do
        p=$((20000 + (RANDOM % 12000)))
        [[ " $* " == *" $p "* ]] && continue
        port_in_use "$p" && continue
        echo "$p"
        return 0
    done
    die "no free TCP port found in 20000-31999"
}

# Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding,
# not starting with '-' (Kafka avoids those, they read as command-line flags).
gen_cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" != -* ]] && break
    done
    printf '%s\n' "$id"
}

write_server_properties() {
    local d="$1" port="$2" cport="$3"
    cat >"$d/server.properties" <<EOF
# Written by tests/kafka/kafka.sh: single-node KRaft, combined broker+controller.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/logs

auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
delete.topic.enable=true

# Small machine: few threads.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
}

# JVM options shared by the storage tool and the broker (no heap/GC settings).
jvm_common_opts() {
    local d="$1"
    JVM_COMMON=(-Djava.awt.headless=true
        "-XX:ErrorFile=$d/hs_err_pid%p.log"
        "-Dkafka.logs.dir=$d"
        "-Dlog4j2.configurationFile=$HERE/log4j2.properties"
        -cp "$LIBS/*")
}

broker_jvm_opts() {
    # shellcheck disable=SC2206  # HEAP_OPTS is a list of options on purpose
    BROKER_JVM=($HEAP_OPTS
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent
        -XX:MaxInlineLevel=15 -XX:+ExitOnOutOfMemoryError)
}

tail_logs() {
    local d="$1" f
    for f in "$d/server.log" "$d/stdout.log"; do
        if [[ -s "$f" ]]; then
            printf -- '----- last lines of %s -----\n' "$f" >&2
            tail -n 40 "$f" >&2
        fi
    done
}

# probe BOOTSTRAP: does the broker answer a metadata request and list itself?
probe() {
    local b="$1" out
    command -v kcat >/dev/null || die "kcat not found on PATH (Debian package: kcat)"
    # -k: a kcat stuck in its own shutdown (it can ignore TERM while librdkafka winds down)
    # is killed, so a probe never outlives its 10 s.
    out="$(timeout -k 2 10 kcat -L -b "$b" -m 2 2>/dev/null)" || return 1
    grep -q "broker $NODE_ID at $b" <<<"$out"
}

# One attempt: ports, config, format, launch, wait. Returns 0 when ready,
# 3 when the broker lost a race for its ports (worth another try), else dies.
start_once() {
    local d="$1" port cport cid pid deadline t0=$SECONDS
    port="$(pick_port)"
    cport="$(pick_port "$port")"
    write_server_properties "$d" "$port" "$cport"
    rm -rf "$d/logs" "$d/format" "$d/server.log" "$d/stdout.log" "$d/bootstrap"
    cid="$(gen_cluster_id)"
    jvm_common_opts "$d"
    broker_jvm_opts

    # The storage tool logs to $d/format/server.log, its output goes to $d/format.log.
    if ! "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 "${JVM_COMMON[@]}" "-Dkafka.logs.dir=$d/format" \
            kafka.tools.StorageTool format \
            -t "$cid" -c "$d/server.properties" --standalone >"$d/format.log" 2>&1; then
        log "formatting $d/logs failed:"
        tail -n 40 "$d/format.log" >&2
        tail_logs "$d/format"
        die "kafka-storage format failed"
    fi

    launch "$d" "$port" "$cport" "$t0" "cluster $cid"
}

# launch D PORT CPORT T0 WHAT: starts the broker of D (configured and formatted) and waits
# until it answers on PORT. Returns 0 when ready, 3 when it lost a race for its ports;
# dies otherwise.
launch() {
    local d="$1" port="$2" cport="$3" t0="$4" what="$5" pid deadline
    jvm_common_opts "$d"
    broker_jvm_opts
    rm -f "$d/bootstrap"
    # setsid: the broker outlives this script (and ctest's test process) and
    # gets no terminal signals. All std fds go to files so nobody waits on a pipe.
    setsid "$JAVA" "${BROKER_JVM[@]}" "${JVM_COMMON[@]}" kafka.Kafka "$d/server.properties" \
        </dev/null >>"$d/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$d/pid"

    deadline=$((SECONDS + $(scaled 120)))
    while :; do
        if ! is_our_broker "$pid" "$d"; then
            wait "$pid" 2>/dev/null || true
            rm -f "$d/pid"
            if grep -qs -e 'Address already in use' -e 'BindException' "$d/server.log" "$d/stdout.log"; then
                log "ports $port/$cport were taken meanwhile"
                return 3
            fi
            tail_logs "$d"
            die "the broker exited during startup (state dir $d)"
        fi
        if probe "127.0.0.1:$port"; then
            echo "127.0.0.1:$port" >"$d/bootstrap.tmp"
            mv -f "$d/bootstrap.tmp" "$d/bootstrap"
            log "broker ready at 127.0.0.1:$port (controller $cport, pid $pid, $what) after $((SECONDS - t0)) s"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            tail_logs "$d"
            stop_broker "$d"
            die "the broker did not answer on 127.0.0.1:$port within $(scaled 120) s (state dir $d)"
        fi
        sleep 0.5
    done
}

do_start() {
    local d rc attempt
    d="$(abs_state_dir "${1:-}")"
    check_ours "$d"
    stop_broker "$d"
    do_fetch
    check_java
    command -v kcat >/dev/null || die "kcat not found on PATH (Debian package: kcat)"
    rm -rf "$d"
    mkdir -p "$d"
    touch "$d/$MARKER"
    for attempt in 1 2 3; do
        rc=0
        start_once "$d" || rc=$?
        [[ $rc -eq 0 ]] && { cat "$d/bootstrap"; return 0; }
        [[ $rc -eq 3 && $attempt -lt 3 ]] || break
        log "retrying with other ports"
    done
    tail_logs "$d"
    die "could not start the broker"
}

# The state dir of a broker that was started once: marked as ours, configured, formatted.
existing_state_dir() {
    local d
    d="$(abs_state_dir "${1:-}")"
    [[ -e "$d/$MARKER" && -f "$d/server.properties" && -d "$d/logs" ]] ||
        die "$d holds no broker made by kafka.sh start"
    printf '%s\n' "$d"
}

do_halt() {
    local d
    d="$(existing_state_dir "${1:-}")"
    stop_broker "$d"
}

do_kill() {
    local d pid i
    d="$(existing_state_dir "${1:-}")"
    [[ -f "$d/pid" ]] || return 0
    pid="$(<"$d/pid")"
    if is_our_broker "$pid" "$d"; then
        log "killing broker pid $pid (SIGKILL)"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            is_our_broker "$pid" "$d" || break
            sleep 0.1
        done
        is_our_broker "$pid" "$d" && die "broker pid $pid survived KILL"
    fi
    rm -f "$d/pid"
}

# Same config (ports), same log dir (data, cluster id): no format. After a kill the broker
# recovers its logs first, which the wait covers.
do_restart() {
    local d port cport rc t0=$SECONDS
    d="$(existing_state_dir "${1:-}")"
    stop_broker "$d"
    check_java
    port="$(sed -n 's|^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\),.*|\1|p' "$d/server.properties")"
    cport="$(sed -n 's|^controller.quorum.bootstrap.servers=127.0.0.1:\([0-9]*\)$|\1|p' "$d/server.properties")"
    [[ -n "$port" && -n "$cport" ]] || die "no ports in $d/server.properties"
    rc=0
    launch "$d" "$port" "$cport" "$t0" "restarted" || rc=$?
    [[ $rc -eq 0 ]] || { tail_logs "$d"; die "could not restart the broker: its ports $port/$cport are taken"; }
    cat "$d/bootstrap"
}

do_stop() {
    local d
    d="$(abs_state_dir "${1:-}")"
    [[ -e "$d" ]] || return 0
    check_ours "$d"
    stop_broker "$d"
    rm -rf "$d"
}

do_status() {
    local d pid
    d="$(abs_state_dir "${1:-}")"
    [[ -f "$d/pid" && -f "$d/bootstrap" ]] || { log "no broker recorded in $d"; return 1; }
    pid="$(<"$d/pid")"
    is_our_broker "$pid" "$d" || { log "broker pid $pid is not running"; return 1; }
    probe "$(<"$d/bootstrap")" || { log "broker pid $pid runs but does not answer on $(<"$d/bootstrap")"; return 1; }
    echo "running: pid $pid at $(<"$d/bootstrap")"
}

case "${1:-}" in
    fetch)  [[ $# -eq 1 ]] || usage; do_fetch; echo "$LIBS" ;;
    start)  [[ $# -eq 2 ]] || usage; do_start "$2" ;;
    stop)   [[ $# -eq 2 ]] || usage; do_stop "$2" ;;
    status) [[ $# -eq 2 ]] || usage; do_status "$2" ;;
    halt)   [[ $# -eq 2 ]] || usage; do_halt "$2" ;;
    kill)   [[ $# -eq 2 ]] || usage; do_kill "$2" ;;
    restart) [[ $# -eq 2 ]] || usage; do_restart "$2" ;;
    *)      usage ;;
esac
