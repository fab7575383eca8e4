#!/usr/bin/env bash
# browser.sh - the JavaScript side of the browser tests, installed once and cached.
#
#   browser.sh install   npm ci of package.json/package-lock.json (the real trackers and
#                        playwright-core, versions pinned) into ~/.cache/clickd/browser-<hash>;
#                        prints that directory. Chromium itself is Debian's (apt: chromium).
#
# The cache key is the lock file's hash: a changed pin installs afresh, an unchanged one
# costs nothing. Concurrent callers wait on a lock.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${CLICKD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clickd}

case "${1:-}" in
install)
	command -v npm >/dev/null || { echo "browser.sh: npm is missing (apt-get install npm)" >&2; exit 1; }
	key=$(sha256sum "$here/package-lock.json" | cut -c1-12)
	dir="$cache/browser-$key"
	mkdir -p "$cache"
	exec 9>"$dir.lock"
	flock 9
	if [ ! -f "$dir/.installed" ]; then
		rm -rf "$dir"
		mkdir -p "$dir"
		cp "$here/package.json" "$here/package-lock.json" "$dir/"
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
		touch "$dir/.installed"
	fi
	echo "$dir"
	;;
*)
	sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
