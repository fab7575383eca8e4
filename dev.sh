#!/usr/bin/env bash
# dev.sh - the two commands of the README, and their parts.
#
#   ./dev.sh start [clickd args]  install what is missing, build, run clickd (file sink ./data)
#   ./dev.sh test                 install what is missing, build, run every test (ctest):
#                                 a gcc -Werror build with unit, integration and Kafka tests,
#                                 then a clang ASan+UBSan build with unit, integration and
#                                 bounded libFuzzer runs (CLICKD_FUZZ_SECONDS each, default
#                                 15), then a clang ThreadSanitizer build
#                                 of the multi-threaded ring and shard runs (tests/tsan)
#   ./dev.sh deps|build|format-check
#
# Packages come from Debian (apt-get, as root); Apache Kafka for the tests comes from Maven
# Central (tests/kafka/kafka.sh), cached in ~/.cache/clickd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

RUN_DEPS=(build-essential cmake pkg-config libuv1-dev librdkafka-dev libzstd-dev zlib1g-dev libxxhash-dev
	libhttp-parser-dev libyajl-dev libinih-dev libsystemd-dev libcriterion-dev)
TEST_DEPS=(python3 zstd curl kcat clang libclang-rt-14-dev clang-format openjdk-17-jre-headless
	maven wrk nginx-light systemd procps python3-prometheus-client chromium)
JOBS=$(nproc 2>/dev/null || echo 2)

need_packages() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "dev.sh: installing ${missing[*]}" >&2
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() { # build DIR [cmake args...]
	local dir=$1
	shift
	cmake -S . -B "$dir" -DCLICKD_WERROR=ON "$@" >/dev/null
	cmake --build "$dir" -j"$JOBS"
}

# Node.js and npm run the real JavaScript trackers in the browser tests (tests/browser): the
# machine's own when it has them (any Node >= 18), else Debian's.
need_node() {
	command -v node >/dev/null && command -v npm >/dev/null && return 0
	need_packages nodejs npm
}

format_check() {
	local files
	files=$(git ls-files 'src/*.c' 'src/*.h' 'include/*.h' 'tests/*.c' 2>/dev/null || true)
	[ -n "$files" ] || return 0
	# shellcheck disable=SC2086
	clang-format --dry-run -Werror $files
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
deps)
	need_packages "${RUN_DEPS[@]}" "${TEST_DEPS[@]}"
	need_node
	;;
build)
	need_packages "${RUN_DEPS[@]}"
	build build
	;;
start)
	need_packages "${RUN_DEPS[@]}"
	build build
	echo "dev.sh: starting clickd (HTTP 127.0.0.1:8080, UDP 127.0.0.1:8125, admin 127.0.0.1:9464, records in ./data); Ctrl-C stops it" >&2
	exec ./build/clickd "$@"
	;;
format-check)
	format_check
	;;
test)
	need_packages "${RUN_DEPS[@]}" "${TEST_DEPS[@]}"
	need_node
	format_check
	echo "== gcc build, -Werror: unit, integration and real-Kafka tests" >&2
	build build
	ctest --test-dir build --output-on-failure --timeout 900
	echo "== clang ASan+UBSan build: unit, integration, bounded fuzzing" >&2
	CC=clang build build-asan -DCLICKD_SANITIZE=address,undefined -DCLICKD_FUZZ=ON -DCLICKD_FUZZ_SECONDS="${CLICKD_FUZZ_SECONDS:-15}"
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		ctest --test-dir build-asan --output-on-failure --timeout 900 -LE kafka
	echo "== clang ThreadSanitizer build: ring and shard threads" >&2
	CC=clang cmake -S . -B build-tsan -DCLICKD_WERROR=ON -DCLICKD_SANITIZE=thread >/dev/null
	cmake --build build-tsan -j"$JOBS" --target tsan_tests
	ctest --test-dir build-tsan --output-on-failure --timeout 900 -L tsan
	;;
*)
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
	[ -z "$cmd" ] || exit 2
	;;
esac
