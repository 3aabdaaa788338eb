#!/bin/bash
# bigindex-bench.sh [BLOBS] — the index cache against a repository of
# BLOBS index entries (default 10,000,000): writes synthetic index files
# (internal/bigindex: 50,000 entries per file, 16 blobs per pack, packs that
# do not exist) into a new repository, then times, with /usr/bin/time -v,
#   1. a backup of new data with an empty cache (the cold sync loads every
#      index file, then the backup looks its blobs up in the full cache),
#   2. a backup of other new data with the cache now warm,
#   3. a backup after every index file was rewritten (as by a prune), so
#      that the cache must be rebuilt,
# and prints wall time and peak RSS of each. Needs bin/repo, bin/bigindex
# and bin/gentree (make bench-bigindex builds them), about 2.5 GB of disk
# under $TMPDIR and a few minutes.
set -euo pipefail
BLOBS=${1:-10000000}
BIN=${REPO_BIN:-$PWD/bin/repo}
BIGINDEX=${BIGINDEX_BIN:-$PWD/bin/bigindex}
GENTREE=${GENTREE_BIN:-$PWD/bin/gentree}
W=$(mktemp -d "${TMPDIR:-/tmp}/bigindex-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
export REPO_PASSWORD=bigindex-bench REPO_REPOSITORY=$W/repo REPO_CACHE_DIR=$W/cache
unset REPO_PASSWORD_FILE GOMEMLIMIT

"$BIN" init --kdf-memory 1 --kdf-time 1 >/dev/null
"$BIGINDEX" -blobs "$BLOBS" "$W/repo"
for seed in 1 2 3; do
	"$GENTREE" -seed $seed "$W/data$seed"
done
echo "new data per backup: $(du -sh "$W/data1" | cut -f1) in $(find "$W/data1" -type f | wc -l) files"

# run LABEL ARGS...: one timed backup.
run() {
	local label=$1
	shift
	/usr/bin/time -v "$BIN" backup "$@" 2> "$W/time" > "$W/out" || { cat "$W/time"; exit 1; }
	awk -F': ' -v label="$label" '
		/Elapsed \(wall clock\)/ {wall = $2}
		/Maximum resident set size/ {rss = $2 / 1024}
		END {printf "%-44s wall %8s   peak RSS %6.1f MiB\n", label, wall, rss}' "$W/time"
}

run "cold cache: sync $BLOBS entries + backup" "$W/data1"
echo "  cache file: $(du -sh "$W/cache"/*/index.db | cut -f1)"
run "warm cache: backup of new data" "$W/data2"
"$BIGINDEX" -rewrite "$W/repo" >/dev/null
run "index files rewritten: rebuild + backup" "$W/data3"
