#!/usr/bin/env bash
# cpu-profile.sh — where a first backup spends its CPU, and how busy each
# core is meanwhile: one backup of DATA (default /tmp/bench/data/files) into
# a new repository with a CPU profile (REPO_CPU_PROFILE), /proc/stat sampled
# before and after for the per-core busy share, and the profile's cumulative
# time per pipeline stage. Part of `make bench`; prints a table, asserts
# nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/bench/data/files}
W=${W:-/tmp/bench}
BIN=$PWD/bin/repo
[[ -d $DATA ]] || { echo "cpu-profile: $DATA not found (run $0 after ../shared/bench/gen.sh)" >&2; exit 1; }
work=$(mktemp -d "$W/cpuprof.XXXXXX")
trap 'rm -rf "$work"' EXIT
export REPO_PASSWORD=bench
"$BIN" init -q -r "$work/repo" --cache-dir "$work/cache" >/dev/null
# Warm the page cache as the timed runs of bench.sh are (median of warm runs).
find "$DATA" -type f -exec cat {} + >/dev/null

# cpustat prints "cpuN busy total" per core from /proc/stat (jiffies).
cpustat() { awk '/^cpu[0-9]/ { t = 0; for (i = 2; i <= NF; i++) t += $i; print $1, t - $5 - $6, t }' /proc/stat; }
before=$(cpustat)
start=$(date +%s.%N)
REPO_CPU_PROFILE=$work/cpu.prof "$BIN" backup -q -r "$work/repo" --cache-dir "$work/cache" "$DATA" >/dev/null
end=$(date +%s.%N)
after=$(cpustat)

echo "first backup of $DATA: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s"
echo
echo "| core | busy |"
echo "|---|---:|"
join <(echo "$before") <(echo "$after") |
  awk '{ printf "| %s | %.0f%% |\n", $1, 100 * ($4 - $2) / ($5 - $3) }'
echo
# Stages by the function that does the work (cumulative share of samples).
top=$(go tool pprof -top -cum -nodecount=400 "$BIN" "$work/cpu.prof" 2>/dev/null)
total=$(echo "$top" | sed -n 's/.*Total samples = \([0-9.]*m*s\).*/\1/p')
echo "CPU samples: $total over $(echo "$top" | sed -n 's/.*Duration: \([0-9.]*m*s\).*/\1/p')"
echo
echo "| stage | function | share of CPU |"
echo "|---|---|---:|"
while IFS='|' read -r stage fn; do
  pct=$(echo "$top" | awk -v f="$fn" '$6 == f { print $5; exit }')
  echo "| $stage | $fn | ${pct:-0%} |"
done <<'STAGES'
compress (zstd)|github.com/klauspost/compress/zstd.(*Encoder).EncodeAll
seal (XChaCha20-Poly1305)|repo/repo/crypto.(*aeadSealer).Seal
hash (BLAKE3)|github.com/zeebo/blake3/internal/alg/hash.HashF
chunk (Rabin)|repo/chunk.(*Chunker).Next
read files|os.(*File).Read
write packs|repo/backend/local.(*Backend).Save
index cache|repo/index.(*Cache).lookup
key derivation (argon2id)|golang.org/x/crypto/argon2.processBlocks.func1
garbage collection|runtime.gcBgMarkWorker
STAGES
