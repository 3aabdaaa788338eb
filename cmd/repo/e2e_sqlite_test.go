package main

// End-to-end tests of `backup --sqlite`: live databases under writers,
// rollback-journal databases, databases below a backed-up directory, the
// stale -wal/-shm/-journal files restore removes, incremental backups of a
// database, and the disk space a backup uses besides the repository.

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, pure Go
)

// sqliteSidecars are the files SQLite keeps next to a database.
var sqliteSidecars = []string{"-wal", "-shm", "-journal"}

// openSQLite opens path (created if missing) read-write on one connection
// with the given _pragma settings, e.g. "journal_mode(wal)"; it is closed
// when the test ends.
func openSQLite(t *testing.T, path string, pragmas ...string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteDSN(path, pragmas...))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return db
}

// sqliteDSN is the URI filename of path with _pragma settings.
func sqliteDSN(path string, pragmas ...string) string {
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	u := url.URL{Scheme: "file", Path: path}
	if len(q) == 0 {
		return u.String()
	}
	return u.String() + "?" + q.Encode()
}

func sqlExec(t *testing.T, db interface {
	Exec(string, ...any) (sql.Result, error)
}, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// sqliteJournalMode returns what PRAGMA journal_mode says on db.
func sqliteJournalMode(t *testing.T, db *sql.DB) string {
	t.Helper()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	return mode
}

// --- the bank database: two accounts and a log of transfers ---

// bankTotal is the sum of the balances, whatever the transfers.
const (
	bankInitial = 1_000_000
	bankTotal   = 2 * bankInitial
)

// createBank creates the bank database at path in journal mode journal:
// accounts(id, balance) with two rows summing to bankTotal, and
// log(seq, amount, payload) with rows 1..logRows of payloadSize random
// bytes from seed (amount 0).
func createBank(t *testing.T, path, journal string, seed uint64, logRows, payloadSize int) {
	t.Helper()
	db := openSQLite(t, path, "journal_mode("+journal+")", "synchronous(off)")
	if got := sqliteJournalMode(t, db); got != journal {
		t.Fatalf("journal mode %q, want %q", got, journal)
	}
	sqlExec(t, db, `CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)`)
	sqlExec(t, db, `INSERT INTO accounts VALUES (1, ?), (2, ?)`, bankInitial, bankInitial)
	sqlExec(t, db, `CREATE TABLE log(seq INTEGER PRIMARY KEY, amount INTEGER NOT NULL, payload BLOB NOT NULL)`)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	rng := newRand(seed)
	for i := 1; i <= logRows; i++ {
		sqlExec(t, tx, `INSERT INTO log VALUES (?, 0, ?)`, i, randomBytes(rng.Uint64(), payloadSize))
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// bankWriters commit transfers into a bank database until stopped, each
// on a connection of its own.
type bankWriters struct {
	stop    atomic.Bool
	commits atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
}

// startBankWriters starts n writers on path with the busy timeout
// busyMillis. Each transaction (BEGIN IMMEDIATE, so a writer waits for the
// lock instead of failing on an upgrade) moves a random amount from account
// 1 to account 2 and appends a log row with the next sequence number and
// that amount.
func startBankWriters(t *testing.T, path string, n, busyMillis int, seed uint64) *bankWriters {
	t.Helper()
	w := &bankWriters{}
	for i := range n {
		db, err := sql.Open("sqlite", sqliteDSN(path, fmt.Sprintf("busy_timeout(%d)", busyMillis), "synchronous(normal)"))
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer db.Close()
			if err := w.run(db, newRand(seed+uint64(i))); err != nil {
				w.mu.Lock()
				w.errs = append(w.errs, fmt.Errorf("writer %d after %d commits in all: %w", i, w.commits.Load(), err))
				w.mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { w.finish() })
	return w
}

func (w *bankWriters) run(db *sql.DB, rng interface {
	IntN(int) int
	Uint64() uint64
}) error {
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for !w.stop.Load() {
		amount := rng.IntN(2001) - 1000
		payload := randomBytes(rng.Uint64(), 64+rng.IntN(192))
		if err := bankTransfer(ctx, conn, amount, payload); err != nil {
			conn.ExecContext(ctx, "ROLLBACK")
			return err
		}
		w.commits.Add(1)
		// Continuous, but not so fast that the database balloons.
		time.Sleep(time.Millisecond)
	}
	return nil
}

func bankTransfer(ctx context.Context, conn *sql.Conn, amount int, payload []byte) error {
	for _, s := range []struct {
		q    string
		args []any
	}{
		{"BEGIN IMMEDIATE", nil},
		{"UPDATE accounts SET balance = balance - ? WHERE id = 1", []any{amount}},
		{"UPDATE accounts SET balance = balance + ? WHERE id = 2", []any{amount}},
		{"INSERT INTO log VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM log), ?, ?)", []any{amount, payload}},
		{"COMMIT", nil},
	} {
		if _, err := conn.ExecContext(ctx, s.q, s.args...); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(s.q)[0], err)
		}
	}
	return nil
}

// finish stops the writers, waits for them and returns their errors.
func (w *bankWriters) finish() []error {
	w.stop.Store(true)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.errs)
}

// checkWriterErrors fails the test for each writer error, calling out
// SQLITE_BUSY: the backup's read transaction must not make writers fail.
func checkWriterErrors(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		msg := err.Error()
		if strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked") {
			t.Errorf("writer failed with SQLITE_BUSY while backups ran: %v", err)
		} else {
			t.Errorf("writer failed while backups ran: %v", err)
		}
	}
}

// bankState is what checkBank found in a database.
type bankState struct {
	maxSeq  int64
	digest  string // of every row, in key order
	balance [2]int64
}

// checkBank opens the bank database at path (read-write, as an application
// would after a restore), and checks PRAGMA integrity_check, the total of
// the balances, that the log's sequence numbers are exactly 1..max, and
// that the balances match the amounts logged: every transfer is in the
// image entirely or not at all.
func checkBank(t *testing.T, path string) bankState {
	t.Helper()
	db := openSQLite(t, path, "busy_timeout(10000)")
	defer db.Close()
	var verdict string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&verdict); err != nil {
		t.Errorf("%s: integrity_check: %v", path, err)
		return bankState{}
	}
	if verdict != "ok" {
		t.Errorf("%s: integrity_check: %s", path, verdict)
	}
	var st bankState
	rows, err := db.Query("SELECT id, balance FROM accounts ORDER BY id")
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return st
	}
	var ids []int64
	for rows.Next() {
		var id, bal int64
		if err := rows.Scan(&id, &bal); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if id == 1 || id == 2 {
			st.balance[id-1] = bal
		}
	}
	rows.Close()
	if !slices.Equal(ids, []int64{1, 2}) {
		t.Errorf("%s: accounts %v, want 1 and 2", path, ids)
	}
	if sum := st.balance[0] + st.balance[1]; sum != bankTotal {
		t.Errorf("%s: balances %v sum to %d, want %d", path, st.balance, sum, bankTotal)
	}
	var count, minSeq, amounts int64
	err = db.QueryRow("SELECT COUNT(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0), COALESCE(SUM(amount), 0) FROM log").
		Scan(&count, &minSeq, &st.maxSeq, &amounts)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return st
	}
	// seq is the primary key, so unique: count == max and min == 1 mean
	// exactly 1..max.
	if count != st.maxSeq || (count > 0 && minSeq != 1) {
		t.Errorf("%s: log has %d rows with seq %d..%d, want exactly 1..%d without gaps", path, count, minSeq, st.maxSeq, st.maxSeq)
	}
	if st.balance[0] != bankInitial-amounts || st.balance[1] != bankInitial+amounts {
		t.Errorf("%s: balances %v, but the log's amounts (%d) say [%d %d]: a transfer is in the image only in part",
			path, st.balance, amounts, bankInitial-amounts, bankInitial+amounts)
	}
	st.digest = tableDigest(t, db, "SELECT id, balance, NULL FROM accounts ORDER BY id", "SELECT seq, amount, payload FROM log ORDER BY seq")
	return st
}

// tableDigest hashes the rows of queries, each selecting three columns.
func tableDigest(t *testing.T, db *sql.DB, queries ...string) string {
	t.Helper()
	h := sha256.New()
	for _, q := range queries {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var a, b, c any
			if err := rows.Scan(&a, &b, &c); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(h, "%v|%v|%x\n", a, b, c)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:12])
}

// bankDigest is tableDigest of the bank tables in the database at path.
func bankDigest(t *testing.T, path string) string {
	t.Helper()
	db := openSQLite(t, path, "busy_timeout(10000)")
	defer db.Close()
	return tableDigest(t, db, "SELECT id, balance, NULL FROM accounts ORDER BY id", "SELECT seq, amount, payload FROM log ORDER BY seq")
}

// restoreDatabase restores snapshot id into a fresh target and returns
// where the database src is restored. It checks that restore reports
// integrity_check ok for exactly one database and left no -wal, -shm or
// -journal beside it.
func restoreDatabase(t *testing.T, r *testRepo, id, src string) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "target")
	out := r.mustRun("restore", id, "--target", target)
	if n := strings.Count(out, "integrity_check ok"); n != 1 {
		t.Errorf("restore of %.8s: %d lines saying integrity_check ok, want 1:\n%s", id, n, out)
	}
	db := restoredPath(target, src)
	checkNoSidecars(t, db, "after restore")
	return db
}

// checkNoSidecars fails the test if a -wal, -shm or -journal file exists
// next to db.
func checkNoSidecars(t *testing.T, db, when string) {
	t.Helper()
	for _, suf := range sqliteSidecars {
		if _, err := os.Lstat(db + suf); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %s%s exists (%v)", when, filepath.Base(db), suf, err)
		}
	}
}

// fastLocks shortens the lock settle time for tests that run many short
// commands one after another (each would wait 200 ms for competing locks
// to show up); nothing else runs on these repositories.
func fastLocks(r *testRepo) {
	r.env = envWith(r.env, "REPO_LOCK_SETTLE", "10ms")
}

// TestE2ESQLiteLiveWAL backs up a WAL database again and again while two
// writers commit transfers: the writers never fail, every snapshot
// restores to a sound database in which the balances add up, the
// transfers are whole and the log has no gaps, and successive snapshots
// go forward in time.
func TestE2ESQLiteLiveWAL(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	fastLocks(r)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "bank.db")
	createBank(t, dbPath, "wal", 100, 3000, 1000) // about 4 MiB

	backups := 20
	if testing.Short() {
		backups = 5
	}
	w := startBankWriters(t, dbPath, 2, 5000, 101)
	for deadline := time.Now().Add(30 * time.Second); w.commits.Load() < 20; {
		if time.Now().After(deadline) {
			t.Fatalf("writers committed only %d transactions in 30s; errors: %v", w.commits.Load(), w.finish())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var ids []string
	var during int64 // commits while a backup ran
	for range backups {
		before := w.commits.Load()
		sum := r.backup("--sqlite", dbPath)
		during += w.commits.Load() - before
		ids = append(ids, sum.SnapshotID)
		if sum.Errors != 0 || sum.FilesRead != 1 || sum.TotalFiles != 1 {
			t.Errorf("backup %d: %d errors, %d files read, %d in all; want 0, 1, 1", len(ids), sum.Errors, sum.FilesRead, sum.TotalFiles)
		}
	}
	errs := w.finish()
	checkWriterErrors(t, errs)
	t.Logf("%d backups; the writers committed %d transactions, %d of them while a backup ran", backups, w.commits.Load(), during)
	if during == 0 {
		t.Errorf("the writers committed nothing while the backups ran")
	}

	sns := r.snapshots()
	if len(sns) != backups {
		t.Fatalf("%d snapshots, want %d", len(sns), backups)
	}
	for _, sn := range sns {
		if sn.Source.Kind != "sqlite" || !slices.Equal(sn.Paths, []string{dbPath}) {
			t.Errorf("snapshot %s: source kind %q, paths %q; want sqlite, [%s]", sn.ShortID, sn.Source.Kind, sn.Paths, dbPath)
		}
	}
	var seqs []int64
	for i, id := range ids {
		st := checkBank(t, restoreDatabase(t, r, id, dbPath))
		seqs = append(seqs, st.maxSeq)
		if i > 0 && st.maxSeq < seqs[i-1] {
			t.Errorf("snapshot %d has log up to seq %d, the one before it up to %d: went back in time", i+1, st.maxSeq, seqs[i-1])
		}
	}
	t.Logf("last seq in each snapshot: %v", seqs)
	if len(seqs) > 1 && seqs[len(seqs)-1] <= seqs[0] {
		t.Errorf("the last snapshot has no more log rows than the first (%v): the writers' commits are not in the snapshots", seqs)
	}
	final := checkBank(t, dbPath)
	if want := 3000 + w.commits.Load(); final.maxSeq != want {
		t.Errorf("live database: log up to %d, want %d (3000 + commits)", final.maxSeq, want)
	}
	if seqs[len(seqs)-1] > final.maxSeq {
		t.Errorf("last snapshot has seq %d beyond the live database's %d", seqs[len(seqs)-1], final.maxSeq)
	}
	// newRepo's cleanup runs check --read-data on the repository.
}

// TestE2ESQLiteRollbackJournal backs up a rollback-journal database while
// a writer commits: the writer waits instead of failing, the backup says
// that writers wait, and every snapshot restores to a consistent database.
func TestE2ESQLiteRollbackJournal(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	fastLocks(r)
	dbPath := filepath.Join(t.TempDir(), "journal.db")
	createBank(t, dbPath, "delete", 110, 1500, 1000)

	w := startBankWriters(t, dbPath, 1, 10000, 111)
	for deadline := time.Now().Add(30 * time.Second); w.commits.Load() < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("writer committed only %d transactions in 30s; errors: %v", w.commits.Load(), w.finish())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var ids []string
	for i := range 3 {
		out := r.mustRun("backup", "--sqlite", dbPath)
		if !strings.Contains(out, "rollback-journal") {
			t.Errorf("backup %d of a rollback-journal database does not say that writers wait (\"rollback-journal\"):\n%s", i+1, out)
		}
		if !strings.Contains(out, "delete mode") {
			t.Errorf("backup %d does not name the journal mode (\"delete mode\"):\n%s", i+1, out)
		}
		ids = append(ids, r.snapshots()[i].ID)
	}
	checkWriterErrors(t, w.finish())
	if _, err := os.Lstat(dbPath + "-wal"); err == nil {
		t.Errorf("backup of a rollback-journal database left a -wal file")
	}
	var prev int64
	for i, id := range ids {
		st := checkBank(t, restoreDatabase(t, r, id, dbPath))
		if st.maxSeq < prev {
			t.Errorf("snapshot %d: log up to %d, before it %d", i+1, st.maxSeq, prev)
		}
		prev = st.maxSeq
	}
}

// walWithFrames opens the WAL database at path with automatic checkpoints
// off, commits n transfers into it and returns the connection, which the
// caller keeps open: until it closes, the -wal file holds those commits and
// the -shm its index.
func walWithFrames(t *testing.T, path string, n int, seed uint64) *sql.DB {
	t.Helper()
	db := openSQLite(t, path, "busy_timeout(10000)", "wal_autocheckpoint(0)")
	if got := sqliteJournalMode(t, db); got != "wal" {
		t.Fatalf("%s: journal mode %q, want wal", path, got)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rng := newRand(seed)
	for range n {
		if err := bankTransfer(context.Background(), conn, rng.IntN(2001)-1000, randomBytes(rng.Uint64(), 300)); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil || fi.Size() == 0 {
		t.Fatalf("%s-wal after %d commits with checkpoints off: %v, size %d", path, n, err, fileInfoSize(fi))
	}
	return db
}

func fileInfoSize(fi fs.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// TestE2ESQLiteInDirectory backs up a directory together with the live
// database in it: the snapshot holds the database image but not its -wal
// and -shm (look-alikes of other files stay), the image holds the commits
// still in the WAL, and restoring it over stale -wal, -shm and -journal
// files of another database removes them.
func TestE2ESQLiteInDirectory(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	dir := filepath.Join(t.TempDir(), "app")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "app.db")
	createBank(t, dbPath, "wal", 120, 500, 500)
	live := walWithFrames(t, dbPath, 40, 121)
	mtime := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
	writeFile(t, filepath.Join(dir, "notes.txt"), []byte("notes\n"), 0o644, mtime)
	// A plain file that only looks like a sidecar: other.db is no --sqlite
	// database, so both are plain files of the directory.
	writeFile(t, filepath.Join(dir, "other.db"), []byte("not a database"), 0o644, mtime)
	writeFile(t, filepath.Join(dir, "other.db-wal"), []byte("not a wal"), 0o644, mtime)
	for _, suf := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(dbPath + suf); err != nil {
			t.Fatalf("test setup: %v", err)
		}
	}
	want := bankDigest(t, dbPath) // as of the commits still in the WAL

	sum := r.backup(dir, "--sqlite", dbPath)
	if sum.Errors != 0 || sum.TotalFiles != 4 {
		t.Errorf("backup: %d errors, %d files; want 0 and 4 (app.db, notes.txt, other.db, other.db-wal)", sum.Errors, sum.TotalFiles)
	}
	ls := strings.Split(strings.TrimSpace(r.mustRun("ls", "latest")), "\n")
	for _, p := range []string{"app.db", "notes.txt", "other.db", "other.db-wal"} {
		if !slices.Contains(ls, filepath.Join(dir, p)) {
			t.Errorf("ls latest lacks %s:\n%s", filepath.Join(dir, p), strings.Join(ls, "\n"))
		}
	}
	for _, suf := range sqliteSidecars {
		if slices.Contains(ls, dbPath+suf) {
			t.Errorf("ls latest lists %s%s: the sidecars of a --sqlite database must be left out", dbPath, suf)
		}
	}
	if n := len(r.snapshots()); n != 1 {
		t.Fatalf("%d snapshots, want 1", n)
	}
	sn := r.snapshots()[0]
	if sn.Source.Kind != "files" {
		t.Errorf("snapshot of a directory with a database: source kind %q, want files", sn.Source.Kind)
	}

	// A plain restore: the image holds the commits that were only in the
	// WAL at the time.
	restored := restoreDatabase(t, r, "latest", dbPath)
	if got := checkBank(t, restored).digest; got != want {
		t.Errorf("restored database has rows %s, the live one had %s when it was backed up", got, want)
	}
	if got := string(mustRead(t, filepath.Join(filepath.Dir(restored), "other.db-wal"))); got != "not a wal" {
		t.Errorf("restored other.db-wal: %q", got)
	}

	// Stale sidecars from another database at the restore target: a -wal
	// and -shm that SQLite would replay onto the restored image, and a
	// -journal.
	otherDir := t.TempDir()
	other := filepath.Join(otherDir, "app.db")
	createBank(t, other, "wal", 130, 500, 500)
	otherLive := walWithFrames(t, other, 200, 131)
	target := filepath.Join(t.TempDir(), "target")
	at := restoredPath(target, dbPath)
	if err := os.MkdirAll(filepath.Dir(at), 0o755); err != nil {
		t.Fatal(err)
	}
	stale := map[string][]byte{}
	for _, suf := range []string{"-wal", "-shm"} {
		stale[suf] = mustRead(t, other+suf)
	}
	stale["-journal"] = []byte("stale journal")
	// Without the removal, the stale WAL would change the image: check
	// that on a copy, so this test can tell.
	control := filepath.Join(t.TempDir(), "app.db")
	if err := os.WriteFile(control, mustRead(t, restored), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, suf := range []string{"-wal", "-shm"} {
		if err := os.WriteFile(control+suf, stale[suf], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := controlDigest(t, control); got == want {
		t.Fatalf("test setup: the stale -wal does not change a copy of the image, so the test cannot see whether restore removes it")
	} else {
		t.Logf("a copy of the image next to the stale -wal/-shm reads as %s instead of %s", got, want)
	}
	otherLive.Close()
	live.Close()
	for suf, b := range stale {
		if err := os.WriteFile(at+suf, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := r.mustRun("restore", "latest", "--target", target)
	if !strings.Contains(out, "integrity_check ok") {
		t.Errorf("restore over stale sidecars does not report integrity_check ok:\n%s", out)
	}
	checkNoSidecars(t, at, "restore over stale -wal, -shm and -journal")
	if got := checkBank(t, at).digest; got != want {
		t.Errorf("database restored over stale sidecars has rows %s, want %s", got, want)
	}

	// The same for a restore of the database file alone.
	single := t.TempDir()
	for suf, b := range stale {
		if err := os.WriteFile(filepath.Join(single, "app.db"+suf), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out = r.mustRun("restore", "latest:"+dbPath, "--target", single)
	if !strings.Contains(out, "integrity_check ok") {
		t.Errorf("restore of app.db alone does not report integrity_check ok:\n%s", out)
	}
	checkNoSidecars(t, filepath.Join(single, "app.db"), "restore of app.db alone over stale sidecars")
	if got := checkBank(t, filepath.Join(single, "app.db")).digest; got != want {
		t.Errorf("app.db restored alone over stale sidecars has rows %s, want %s", got, want)
	}
}

// controlDigest is bankDigest, or the error SQLite gives, for a database
// that may be broken.
func controlDigest(t *testing.T, path string) (digest string) {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteDSN(path, "busy_timeout(10000)"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	h := sha256.New()
	for _, q := range []string{"SELECT id, balance, NULL FROM accounts ORDER BY id", "SELECT seq, amount, payload FROM log ORDER BY seq"} {
		rows, err := db.Query(q)
		if err != nil {
			return "error: " + err.Error()
		}
		for rows.Next() {
			var a, b, c any
			if err := rows.Scan(&a, &b, &c); err != nil {
				rows.Close()
				return "error: " + err.Error()
			}
			fmt.Fprintf(h, "%v|%v|%x\n", a, b, c)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return "error: " + err.Error()
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:12])
}

// TestE2ESQLiteIncremental: after 1% of the rows of a 12 MiB database
// changed, the next backup adds less than a tenth of the first one; an
// unchanged database adds next to nothing; both restore to the rows the
// database had.
func TestE2ESQLiteIncremental(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	dbPath := filepath.Join(t.TempDir(), "big.db")
	const rows = 9000
	createBank(t, dbPath, "wal", 140, rows, 1000)
	fi, err := os.Stat(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < 8<<20 {
		t.Fatalf("test setup: database has %d bytes, want at least 8 MiB", fi.Size())
	}
	want1 := bankDigest(t, dbPath)
	first := r.backup("--sqlite", dbPath)

	// Change 1% of the rows (same sizes), spread over the table.
	db := openSQLite(t, dbPath, "busy_timeout(10000)")
	rng := newRand(141)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for range rows / 100 {
		sqlExec(t, tx, "UPDATE log SET payload = ? WHERE seq = ?", randomBytes(rng.Uint64(), 1000), 1+rng.IntN(rows))
	}
	sqlExec(t, tx, "UPDATE accounts SET balance = balance - 5 WHERE id = 1")
	sqlExec(t, tx, "UPDATE accounts SET balance = balance + 5 WHERE id = 2")
	sqlExec(t, tx, "UPDATE log SET amount = 5 WHERE seq = 1") // the transfer's record
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	want2 := bankDigest(t, dbPath)
	second := r.backup("--sqlite", dbPath)
	third := r.backup("--sqlite", dbPath)
	t.Logf("database %d bytes; added: first %d, after changing 1%% of rows %d, unchanged %d bytes",
		fi.Size(), first.BytesAdded, second.BytesAdded, third.BytesAdded)

	if first.BytesAdded < fi.Size()*9/10 {
		t.Errorf("first backup added %d bytes of a %d-byte database", first.BytesAdded, fi.Size())
	}
	if second.BytesAdded*10 >= first.BytesAdded {
		t.Errorf("after 1%% of rows changed the backup added %d bytes, not < 10%% of the first backup's %d", second.BytesAdded, first.BytesAdded)
	}
	if second.FilesChanged != 1 || second.FilesUnmodified != 0 {
		t.Errorf("second backup: %d files changed, %d unmodified; want 1, 0", second.FilesChanged, second.FilesUnmodified)
	}
	if third.FilesUnmodified != 1 || third.FilesChanged != 0 {
		t.Errorf("unchanged database: %d files unmodified, %d changed; want 1, 0", third.FilesUnmodified, third.FilesChanged)
	}
	if third.BytesAdded*1000 >= first.BytesAdded {
		t.Errorf("unchanged database: backup added %d bytes, not < 0.1%% of the first's %d", third.BytesAdded, first.BytesAdded)
	}
	for _, c := range []struct {
		id, want string
	}{{first.SnapshotID, want1}, {second.SnapshotID, want2}, {third.SnapshotID, want2}} {
		if got := checkBank(t, restoreDatabase(t, r, c.id, dbPath)).digest; got != c.want {
			t.Errorf("snapshot %.8s restores rows %s, want %s", c.id, got, c.want)
		}
	}
}

// treeBytes sums the sizes of the regular files below dir and counts the
// entries (dir itself not counted); a missing dir is empty.
func treeBytes(dir string) (size int64, entries int) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil // entries vanish while we look
		}
		entries++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	return size, entries
}

// TestE2ESQLiteDiskUse backs up a 100 MiB database and watches, every
// 20 ms, every place the backup could write to besides the repository and
// its cache: the database's directory may only gain the -shm and -wal of a
// reader, the temporary directory and the working directory stay empty.
// The image is streamed, never copied to disk.
func TestE2ESQLiteDiskUse(t *testing.T) {
	skipHeavy(t)
	t.Parallel()
	r := newRepo(t)
	dir := filepath.Join(t.TempDir(), "db")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "large.db")
	db := openSQLite(t, dbPath, "journal_mode(wal)", "synchronous(off)")
	sqlExec(t, db, "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		sqlExec(t, tx, "INSERT INTO blobs VALUES (?, ?)", i, randomBytes(150+uint64(i), 1<<20))
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	dbSum := fileSHA256(t, dbPath)
	fi, err := os.Stat(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	dbSize := fi.Size()

	tmp := envValue(r.env, "TMPDIR")
	cache := envValue(r.env, "REPO_CACHE_DIR")
	work := t.TempDir() // the backup's working directory
	dbBefore, _ := treeBytes(dir)
	repoBefore, _ := treeBytes(r.dir)
	packsBefore := dataSize(t, r.dir)

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, r.env, nil, "backup", "--json", "--sqlite", dbPath)
	cmd.Dir = work
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	start := time.Now()
	var (
		samples                  int
		dbMax, repoMax, cacheMax int64
		tmpMax, workMax          int64
		tmpEntries, workEntries  int
	)
	sample := func() {
		samples++
		s, _ := treeBytes(dir)
		dbMax = max(dbMax, s)
		s, _ = treeBytes(r.dir)
		repoMax = max(repoMax, s)
		s, _ = treeBytes(cache)
		cacheMax = max(cacheMax, s)
		s, n := treeBytes(tmp)
		tmpMax, tmpEntries = max(tmpMax, s), max(tmpEntries, n)
		s, n = treeBytes(work)
		workMax, workEntries = max(workMax, s), max(workEntries, n)
	}
	var waitErr error
	for running := true; running; {
		sample()
		select {
		case waitErr = <-done:
			running = false
		case <-time.After(20 * time.Millisecond):
		}
	}
	sample()
	if waitErr != nil {
		t.Fatalf("backup: %v\n%s", waitErr, errb.String())
	}
	sum := lastSummary[backupSummary](t, out.String())
	packs := dataSize(t, r.dir) - packsBefore
	t.Logf("%d samples in %v; database dir %d -> max %d bytes; repository grew by up to %d bytes (packs %d), cache up to %d; TMPDIR max %d bytes in %d entries",
		samples, time.Since(start).Round(time.Millisecond), dbBefore, dbMax, repoMax-repoBefore, packs, cacheMax, tmpMax, tmpEntries)
	if samples < 5 {
		t.Errorf("only %d samples during the backup: it was too quick to watch", samples)
	}
	if grew := dbMax - dbBefore; grew >= 1<<20 {
		t.Errorf("the database's directory grew by %d bytes during the backup, want < 1 MiB (a reader's -shm and -wal)", grew)
	}
	if tmpEntries != 0 || tmpMax != 0 {
		t.Errorf("the backup wrote to TMPDIR: up to %d entries, %d bytes", tmpEntries, tmpMax)
	}
	if workEntries != 0 || workMax != 0 {
		t.Errorf("the backup wrote to its working directory: up to %d entries, %d bytes", workEntries, workMax)
	}
	if sum.BytesRead != dbSize || sum.TotalBytes != dbSize {
		t.Errorf("backup read %d bytes, total %d, of a database file of %d bytes", sum.BytesRead, sum.TotalBytes, dbSize)
	}
	if repoMax-repoBefore > packs+packs/10+(1<<20) {
		t.Errorf("the repository grew by up to %d bytes during the backup, its new packs are %d bytes", repoMax-repoBefore, packs)
	}

	// The image is the database file, byte for byte (no writer touched it
	// since its last checkpoint).
	h := sha256.New()
	dump := repoCommand(t, ctx, r.env, nil, "dump", "latest", dbPath)
	dump.Stdout = h
	var dumpErr strings.Builder
	dump.Stderr = &dumpErr
	if err := dump.Run(); err != nil {
		t.Fatalf("dump: %v\n%s", err, dumpErr.String())
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != dbSum {
		t.Errorf("dump of the database image: sha256 %s, the file's is %s", got, dbSum)
	}
}

// fileSHA256 hashes the file at p.
func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
