#!/usr/bin/env bash
# demo.sh — the main job of repo, end to end, on a local repository under
# ./demo: init, back up a generated directory, change a little and back up
# again (dedup), back up a stream and a live SQLite database under writes,
# check, restore, and compare.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_BIN=$PWD/bin/repo
GEN=$PWD/bin/gentree
SQLW=$PWD/bin/sqlwriter
D=$PWD/demo
rm -rf "$D"
mkdir -p "$D"
export REPO_REPOSITORY=$D/repo REPO_PASSWORD=demo-password REPO_CACHE_DIR=$D/cache

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "generate a test tree (fixed seed): text, binaries, random data, odd names, symlinks"
"$GEN" -seed 7 -text 3000 -bin 12 -rand 2 -rand-size $((16 << 20)) "$D/data"
du -sh "$D/data" | sed 's/^/  /'

step "create an encrypted repository"
run "$REPO_BIN" init

step "first backup"
run "$REPO_BIN" backup "$D/data"

step "change two files, add one, back up again: only they are read"
echo "appended line" >> "$D/data/d00/e0/t00000.txt"
head -c 100000 /dev/zero > "$D/data/new-zeros.bin"
touch -d '2024-01-01 00:00:00' "$D/data/d01/e1/t00001.txt"
run "$REPO_BIN" backup "$D/data"

step "back up a stream (a dump tool's output) from stdin"
"$GEN" -seed 8 -text 200 -bin 0 -rand 0 -odd=false "$D/stream-src" >/dev/null
tar -C "$D/stream-src" --sort=name -cf "$D/stream.tar" .
run "$REPO_BIN" backup --stdin --stdin-filename dump.tar < "$D/stream.tar"

step "back up a live SQLite database while a writer commits into it"
mkdir -p "$D/db"
"$SQLW" -db "$D/db/app.db" -init-mb 48 -for 0 > "$D/writer.log" 2>&1 &
WRITER=$!
trap 'kill $WRITER 2>/dev/null || true' EXIT
sleep 1
run "$REPO_BIN" backup --sqlite "$D/db/app.db"
sleep 1
run "$REPO_BIN" backup --sqlite "$D/db/app.db"
kill -TERM $WRITER; wait $WRITER || true
trap - EXIT
sed 's/^/  /' "$D/writer.log"

step "list snapshots"
run "$REPO_BIN" snapshots

step "check the repository, reading every pack"
run "$REPO_BIN" check --read-data

step "restore the latest backup of the directory"
run "$REPO_BIN" restore latest --path "$D/data" --target "$D/restore"

step "compare: contents, symlinks, modes and mtimes"
diff -r --no-dereference "$D/data" "$D/restore$D/data"
meta() { (cd "$1" && find . -printf '%p %y %m %s %T@ %l\n' | sort); }
if ! diff <(meta "$D/data") <(meta "$D/restore$D/data") > "$D/meta.diff"; then
  echo "metadata differs:"; head -20 "$D/meta.diff"; exit 1
fi
echo "  restored tree is identical: $(find "$D/data" | wc -l) entries, contents, modes and mtimes"

step "restore the latest database image: it opens cleanly and is one transaction"
run "$REPO_BIN" restore latest --path "$D/db/app.db" --target "$D/restore-db"
"$SQLW" -verify "$D/restore-db$D/db/app.db" | sed 's/^/  /'

step "dump the stream back and compare"
"$REPO_BIN" dump --path /dump.tar latest /dump.tar > "$D/stream.out"
cmp "$D/stream.tar" "$D/stream.out" && echo "  dump.tar identical ($(stat -c %s "$D/stream.tar") bytes)"

step "repository size"
du -sh "$D/data" "$D/repo" | sed 's/^/  /'
echo
echo "demo finished: everything under $D"
