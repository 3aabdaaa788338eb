// Package sqlite streams the pages of a live SQLite database as of one read
// transaction: a consistent database image, with no temporary copy on disk.
// It is the page source behind `backup --sqlite FILE`; it knows nothing of
// chunking or the repository format.
//
// Open opens the file read-only through modernc.org/sqlite (pure Go, so the
// binary stays static), on a single connection, with
//
//	file:///abs/path?mode=ro&_pragma=busy_timeout(10000)
//
// (the path percent-escaped, so '?', '#', '%' and spaces are safe), runs
// BEGIN and a first read, which fixes the transaction's view, and reads Info
// inside it. Pages then hands each page to a callback: read from the file
// in 1 MiB blocks, except the pages that have a frame in the -wal file,
// which it reads with
//
//	SELECT data FROM sqlite_dbpage WHERE pgno = ?
//
// on the same connection (see direct.go for why that is exact). When more
// than a quarter of the pages have a frame, or SQLite's file is not the
// one Open opened, it streams them all with
//
//	SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno
//
// instead. Close ends the transaction, closes the connection, and then
// the package's own descriptor of the file (closing a descriptor drops the
// process's POSIX locks on the file, SQLite's SHARED lock included).
//
// # Invariants
//
//   - The image is the database as of the transaction Open started: pages
//     1..Info().PageCount, each exactly Info().PageSize bytes, consecutive.
//     Pages checks this and that the count equals PRAGMA page_count read in
//     the same transaction; any deviation is an error, never a short image.
//   - Written out in order, the pages form a database file that passes
//     PRAGMA integrity_check and holds exactly the rows the transaction saw.
//     The file change counter and the rest of the header are as of that
//     transaction.
//   - The database file itself is never created, written or truncated:
//     mode=ro makes a missing file an error, not an empty database.
//   - Every error names the path: "sqlite snapshot PATH: ...".
//
// # Writers
//
// In WAL mode writers keep committing while a Snapshot is open; the reader
// holds a WAL read mark, so checkpoints cannot copy frames newer than the
// snapshot back into the database file, and the -wal file grows for as long
// as the snapshot stays open (a checkpoint can still restart the WAL after
// Close).
//
// In rollback-journal mode (delete, truncate, persist) the transaction
// holds a SHARED lock: writers can prepare a transaction but cannot commit
// until Close; they wait up to their own busy timeout and then fail with
// SQLITE_BUSY. Keep the window between Open and Close short there.
//
// # Caveats
//
//   - A WAL database needs its -shm file. If it is missing, SQLite creates
//     it (and an empty -wal) even for a read-only connection, with the
//     database file's mode, and owned by the database file's owner when run
//     as root. Read-only connections cannot delete them, so they stay after
//     Close; that is harmless, SQLite reuses them. If the directory is not
//     writable and the -shm is missing, Open fails (SQLITE_READONLY_DIRECTORY,
//     "cannot be created read-only"). If -shm and -wal exist but are not
//     writable by us, Open works: SQLite reads the WAL index read-only.
//   - A rollback-journal database with a hot journal (a writer crashed
//     mid-transaction) or a WAL that needs recovery cannot be read by a
//     read-only connection; Open reports it and the database must be opened
//     once with write access (by its application) first.
//   - Info().JournalMode is what a fresh connection reports: "wal" for a WAL
//     database, "delete" for every rollback-journal database (truncate and
//     persist are per-connection settings that the file does not record).
//   - In WAL mode nothing reachable through SQL names the WAL position the
//     snapshot reads at (the frame count and salts live in the -shm), and
//     PRAGMA data_version is local to a connection. Info().ChangeCounter is
//     only a hint there; identify the state by the pages' contents.
//   - The image keeps the WAL flag (header bytes 18 and 19 are 2), so a
//     database restored from a WAL database opens in WAL mode. Restore must
//     remove stale -wal and -shm files at the target, or SQLite would apply
//     an old WAL to the restored file.
//   - An empty file is an empty database to SQLite: Open succeeds with
//     PageCount 0 and Pages streams nothing.
//   - Open checks the path (exists, regular file, readable) before SQLite
//     opens it, so a FIFO never blocks. If the file is swapped between the
//     check and SQLite's open, SQLite reads the new one; Pages notices that
//     the file SQLite names is no longer the one checked, and streams
//     through SQLite only.
//   - Throughput is that of reading the file, plus one query per page
//     that has a frame in the WAL (see BenchmarkPages); through
//     sqlite_dbpage alone it is SQLite's pager plus two copies per page.
package sqlite
