#!/usr/bin/env bash
# End-to-end check of the test broker started by tests/kafka/kafka.sh: produce
# three messages with kcat to a fresh topic (auto-created) and consume them back.
#
#   smoke_test.sh STATE_DIR      (reads STATE_DIR/bootstrap)
#
# Fails with a message on any problem; never skips.
set -euo pipefail

fail() { printf 'kafka smoke test: FAIL: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || fail "usage: $0 STATE_DIR"
state="$1"
mult="${CLICKD_TEST_TIMEOUT_MULTIPLIER:-1}"
[[ "$mult" =~ ^[0-9]+([.][0-9]+)?$ ]] || fail "bad CLICKD_TEST_TIMEOUT_MULTIPLIER '$mult'"
scaled() { awk -v s="$1" -v m="$mult" 'BEGIN { v = int(s * m + 0.5); if (v < 1) v = 1; print v }'; }

command -v kcat >/dev/null || fail "kcat not found on PATH (Debian package: kcat)"
[[ -s "$state/bootstrap" ]] ||
    fail "no $state/bootstrap: the broker is not running (did the kafka_start fixture fail?)"
bootstrap="$(<"$state/bootstrap")"
[[ "$bootstrap" =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "unexpected bootstrap '$bootstrap' in $state/bootstrap"

topic="clickd-smoke-$(date +%s)-$$-$RANDOM"
expected=$(printf 'smoke-%s-%d\n' "$topic" 1 "$topic" 2 "$topic" 3)

# Produce. kcat -P exits non-zero if a message could not be delivered; acks=all
# and a bounded delivery timeout make that final.
errlog="$(mktemp)"
trap 'rm -f "$errlog"' EXIT
if ! printf '%s\n' "$expected" |
        timeout "$(scaled 60)" kcat -P -b "$bootstrap" -t "$topic" \
            -X acks=all -X message.timeout.ms="$(scaled 30)000" 2>"$errlog"; then
    cat "$errlog" >&2
    fail "producing 3 messages to topic $topic at $bootstrap failed"
fi

# Consume from the beginning until the end of the partition. Retry while the
# just-created topic's metadata settles, up to a deadline.
got=""
deadline=$((SECONDS + $(scaled 60)))
while :; do
    got="$(timeout "$(scaled 30)" kcat -C -b "$bootstrap" -t "$topic" -o beginning -e -q \
        -f '%s\n' 2>"$errlog")" || true
    [[ "$got" == "$expected" ]] && break
    if ((SECONDS >= deadline)); then
        cat "$errlog" >&2
        printf 'expected:\n%s\ngot:\n%s\n' "$expected" "$got" >&2
        fail "did not read back the 3 messages from topic $topic at $bootstrap"
    fi
    sleep 1
done

printf 'kafka smoke test: OK: 3 messages through topic %s at %s\n' "$topic" "$bootstrap"
