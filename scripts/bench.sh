#!/usr/bin/env bash
# bench.sh — repo beside restic and borg on the shared dataset, in one run
# (interleaved repetitions, medians and ratios), through the shared harness
# $BENCH_SHARED/baseline.sh and its ext- templates.
#
# Environment: BENCH_SHARED (default ../shared/bench), W (work area, default
# /tmp/bench), REPS (default 3), CONFIGS (default "ext-repo restic
# borg-none-lz4"), RAW (default 0: skip raw machine limits).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_SHARED=${BENCH_SHARED:-../shared/bench}
if [[ ! -x $BENCH_SHARED/baseline.sh ]]; then
  echo "bench: $BENCH_SHARED/baseline.sh not found; set BENCH_SHARED to the shared bench folder" >&2
  exit 1
fi
for tool in restic borg; do
  if ! command -v $tool >/dev/null; then
    echo "bench: installing restic and borgbackup from Debian" >&2
    apt-get install -y restic borgbackup >/dev/null || { apt-get update -qq && apt-get install -y restic borgbackup >/dev/null; }
    break
  fi
done
command -v /usr/bin/time >/dev/null || apt-get install -y time >/dev/null

BIN=$PWD/bin/repo
export W=${W:-/tmp/bench}
export REPS=${REPS:-3}
export RAW=${RAW:-0}
export CONFIGS=${CONFIGS:-"ext-repo restic borg-none-lz4"}
export RESULTS=${RESULTS:-$W/results/$(date +%Y%m%dT%H%M%S)}
export REPO_PASSWORD=bench
# The cache sits beside the repository so `du` of the repository does not
# count it, and a new repository (new id) never reuses an old cache.
export EXT_INIT="'$BIN' init -r \"\$REPO\" --cache-dir \"\$REPO.cache\""
# A source directory holding app.db (the harness's database phases) is
# backed up with the database as a consistent page image (--sqlite), which
# is how repo is meant to be used on a database.
export EXT_BACKUP="'$BIN' backup -q -r \"\$REPO\" --cache-dir \"\$REPO.cache\" \"\$SRC\" \$([ -f \"\$SRC/app.db\" ] && echo --sqlite \"\$SRC/app.db\")"
export EXT_RESTORE="'$BIN' restore -q -r \"\$REPO\" --cache-dir \"\$REPO.cache\" latest --path \"\$SRC\" --target \"\$TARGET\""
"$BENCH_SHARED/baseline.sh"
mkdir -p bench/results
cp "$RESULTS/results.md" "bench/results/$(date +%Y-%m-%d)-$(basename "$RESULTS").md" 2>/dev/null || true
echo "results: $RESULTS (table copied to bench/results/)"
