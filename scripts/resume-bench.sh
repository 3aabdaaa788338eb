#!/bin/bash
# resume-bench.sh DB [FRACTION] — how much a backup of DB uploads again
# after the first backup was killed (SIGKILL) once FRACTION (default 0.8)
# of its pack data was written. Two cases: the same host with its cache
# (the upload journal resumes), and another host without the cache (only
# the periodic index files help). Prints bytes stored by the full backup,
# by the killed one, and by the resumed one.
set -euo pipefail
DB=${1:?usage: resume-bench.sh DB [FRACTION]}
FRAC=${2:-0.8}
BIN=${REPO_BIN:-$PWD/bin/repo}
W=$(mktemp -d /tmp/resume-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
export REPO_PASSWORD=resume-bench
# Bytes in pack files (temporary files included); files vanishing while
# find runs are skipped.
datasize() { find "$1/data" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

# The full size of one backup, for the kill point.
"$BIN" -r "$W/full" init >/dev/null
"$BIN" -r "$W/full" --cache-dir "$W/cache-full" backup --sqlite "$DB" --json | tail -1 > "$W/full.json"
FULL=$(datasize "$W/full")
KILL_AT=$(python3 -c "print(int($FULL*$FRAC))")
echo "full backup: $FULL bytes of packs; killing at $KILL_AT ($FRAC)"

for mode in journal no-cache; do
	R=$W/repo-$mode
	"$BIN" -r "$R" init >/dev/null
	cache=(--cache-dir "$W/cache-$mode")
	"$BIN" -r "$R" "${cache[@]}" backup --sqlite "$DB" >/dev/null 2>&1 &
	pid=$!
	while kill -0 $pid 2>/dev/null && [ "$(datasize "$R")" -lt "$KILL_AT" ]; do sleep 0.05; done
	kill -KILL $pid 2>/dev/null || { echo "backup finished before the kill point"; exit 1; }
	wait $pid || true
	KILLED=$(datasize "$R")
	[ "$mode" = no-cache ] && cache=(--no-cache)
	"$BIN" -r "$R" "${cache[@]}" backup --sqlite "$DB" --json | tail -1 > "$W/again-$mode.json"
	AFTER=$(datasize "$R")
	python3 - "$mode" "$FULL" "$KILLED" "$AFTER" "$W/again-$mode.json" <<'PY'
import json, sys
mode, full, killed, after, path = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
s = json.load(open(path))
up = after - killed
print(f"{mode}: killed after {killed} bytes ({killed/full:.0%}); the next backup uploaded {up} bytes "
      f"({up/full:.1%} of the full backup), packs resumed {s.get('packs_resumed', 0)}, "
      f"bytes skipped {s['bytes_skipped']} of {s['bytes_read']} read")
PY
done
