// Package index says where each blob is stored: blob (type, id) → pack,
// offset, length. It owns the index file format of the repository
// (File.Encode, DecodeFile, the 46-byte Blob entry shared with pack
// headers) and Cache, the local bbolt copy of all index files that answers
// lookups.
//
// # Not the source of truth
//
// The repository's index files are. Cache is disposable: Sync makes it
// equal to the listed index files (rebuilding from scratch when one it
// knows has vanished), a corrupt, truncated, foreign or old-version cache
// file is emptied and recreated, and a cache file locked by another process
// (bbolt takes an exclusive flock, for 200 ms at most) is replaced by a
// private one in a temporary directory under the cache directory, removed
// by Close. Private directories left by a crashed process are removed by a
// later OpenCache once they are a minute old and unlocked, and so are the
// temporary files of a bulk load or rebuild it left beside the cache file.
//
// The one thing the cache must never do is lie: claim a blob is stored
// when it is not, for a backup would then skip uploading it. Hence:
//   - fsync stays on, so a power loss leaves the last committed state;
//   - an index file is recorded as known only in the transaction that
//     inserts its last entry; a file too large for one transaction is
//     recorded "pending" first, so that if it vanishes from the repository
//     the cache is rebuilt even though it never finished loading;
//   - a bulk load writes a new file, synced before it is renamed over the
//     old one: its files become known all at once, or not at all;
//   - a listed file that another listed file supersedes is ignored, and
//     entries already cached from it are dropped (by a rebuild).
//
// # Memory
//
// Neither the index nor the cache file is ever held in memory whole, and
// memory stays flat as the repository grows (measured with 10 million
// blobs: a cold Sync and backup peaked at 160 MiB, see
// scripts/bigindex-bench.sh):
//   - Many new entries (a new or rebuilt cache, a large catch-up) are
//     bulk-loaded (bulk.go): sorted into runs on disk, merged with the
//     cached entries into a new file in key order, which replaces the old
//     one. Few go through the incremental writer, in transactions of at
//     most largeCacheBatch entries once the cache is large.
//   - Emptying the cache (a rebuild) replaces the file instead of
//     deleting its buckets, which would read every page.
//   - Every page read through bbolt's memory map counts in the resident
//     set until unmapped, and Linux maps up to 16 cached neighbours with
//     each (fault-around): about 64 KiB per random page. Lookup, Each,
//     the writers and the bulk load therefore drop the mapping's pages
//     from the resident set (trimMapping) after a bounded amount of
//     reading; the page cache keeps them.
//
// A bulk load needs room on disk for the runs (50 bytes per new entry) and
// for the new file beside the old one.
//
// # Caveats
//
// bbolt reads its file through a memory map and follows page ids without
// bounds checks. OpenCache therefore checks the meta page against the file
// size before bbolt sees the file (a truncated file would otherwise fault),
// and every access runs with debug.SetPanicOnFault and recover, so that a
// damaged page becomes an error wrapping ErrCacheCorrupt instead of a crash;
// the Cache then refuses further work and Close deletes the file. This
// covers only code running in the calling goroutine. That is why the
// freelist is synced (bbolt's NoFreelistSync is off): with NoFreelistSync,
// every open rebuilds the freelist by walking the whole file in a goroutine
// of bbolt's own, where a damaged page panics unrecoverably.
//
// flock is per open file description, so two Caches on one directory in
// one process exclude each other just like two processes (the second gets
// a private cache). On network file systems without flock, OpenCache
// fails. The file is locked and checked by the cache itself (bbolt's
// OpenFile hook) only on Linux and the BSDs; elsewhere bbolt's own lock
// applies and a damaged file is deleted rather than truncated.
//
// Each holds one read transaction for its whole run; its callback must not
// call Sync or Add.
package index
