#!/bin/bash
# prune-bench.sh [DATA] — prune on the shared dataset (../shared/bench/gen.sh,
# default /tmp/bench/data): back up files/, db-day0 and db-day1, forget the
# day-0 database snapshot (its changed pages become unused, scattered over
# the packs), prune with /usr/bin/time -v; then forget the files snapshot
# (whole packs unused) and prune again. Prints each prune's summary, wall
# time and peak RSS, and the repository size before and after.
set -euo pipefail
DATA=${1:-/tmp/bench/data}
BIN=${REPO_BIN:-$PWD/bin/repo}
W=$(mktemp -d /tmp/prune-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
export REPO_PASSWORD=prune-bench REPO_REPOSITORY=$W/repo REPO_CACHE_DIR=$W/cache
size() { du -sb "$W/repo" | cut -f1; }
snap() { "$BIN" backup --json "$@" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])'; }

"$BIN" init >/dev/null
files=$(snap "$DATA/files")
day0=$(snap --sqlite "$DATA/db-day0/app.db")
snap --sqlite "$DATA/db-day1/app.db" >/dev/null
echo "repository with files/, db-day0, db-day1: $(size) bytes"

prune() {
	/usr/bin/time -v "$BIN" prune 2> "$W/time" | tail -1
	awk -F': ' '/Elapsed \(wall clock\)/ {print "  wall " $2} /Maximum resident set size/ {printf "  peak RSS %.1f MiB\n", $2/1024}' "$W/time"
	echo "  repository now $(size) bytes"
}
"$BIN" forget "$day0" >/dev/null
echo "prune after forgetting the day-0 database:"
prune
"$BIN" forget "$files" >/dev/null
echo "prune after forgetting files/:"
prune
"$BIN" check --read-data >/dev/null && echo "check --read-data: ok"
