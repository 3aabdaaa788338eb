package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRoundTrip streams a quiet database, in both journal modes and under
// awkward paths, writes the pages to a new file and checks that the copy is
// intact, holds the same rows and, the database being quiet, is byte for
// byte the original file.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, journal, dir, file string
	}{
		{"delete", "delete", "plain", "db.sqlite"},
		{"wal", "wal", "plain", "db.sqlite"},
		{"odd-path", "delete", "a b?c#d%20e&mode=rw", "x?y#z %41.db"},
		{"odd-path-wal", "wal", "sp ace", "q?mode=rwc#.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), tc.dir)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.file)
			db := openRW(t, path, tc.journal, 1000)
			fill(t, db, 1, 3000)
			mustExec(t, db, `PRAGMA user_version = 42`)
			mustExec(t, db, `PRAGMA application_id = 1234567`)
			want := contentDigest(t, db)
			if tc.journal == "wal" {
				// Leave part of the data in the WAL only.
				mustExec(t, db, `PRAGMA wal_checkpoint(TRUNCATE)`)
				mustExec(t, db, `UPDATE items SET qty = qty + 1 WHERE id % 3 = 0`)
				want = contentDigest(t, db)
			}

			s, err := Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			in := s.Info()
			t.Logf("%+v", in)
			if in.PageSize != 4096 || in.PageCount < 1000 || in.FreelistCount == 0 ||
				in.UserVersion != 42 || in.ApplicationID != 1234567 || in.SchemaVersion == 0 ||
				!strings.HasPrefix(in.SQLiteVersion, "3.") || in.JournalMode != tc.journal ||
				in.WAL != (tc.journal == "wal") {
				t.Errorf("unexpected info %+v", in)
			}
			img := writeImage(t, s, t.TempDir())
			if tc.journal == "delete" {
				orig, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(img)
				if !bytes.Equal(orig, got) {
					t.Errorf("image differs from the quiet database file")
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := s.Pages(context.Background(), func(uint32, []byte) error { return nil }); err == nil ||
				!strings.Contains(err.Error(), "closed") {
				t.Errorf("Pages after Close: %v", err)
			}

			rdb := openRestored(t, img)
			if got := contentDigest(t, rdb); got != want {
				t.Errorf("restored rows differ")
			}
			var uv int
			rdb.QueryRow(`PRAGMA user_version`).Scan(&uv)
			if uv != 42 {
				t.Errorf("restored user_version %d", uv)
			}
		})
	}
}

// TestRelativePath opens a database by a relative path.
func TestRelativePath(t *testing.T) {
	dir := t.TempDir()
	db := openRW(t, filepath.Join(dir, "rel #1.db"), "delete", 1000)
	fill(t, db, 2, 50)
	t.Chdir(dir)
	s, err := Open(context.Background(), "rel #1.db")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Info().PageCount == 0 {
		t.Fatal("no pages")
	}
}

// TestWALConsistencyUnderWriters takes several snapshots while a writer
// commits continuously and streams each one slowly; every image must be a
// valid database holding exactly the state of the moment Open returned.
func TestWALConsistencyUnderWriters(t *testing.T) {
	const (
		accounts = 50
		initial  = 1000
		total    = accounts * initial
	)
	dir := t.TempDir()
	path := filepath.Join(dir, "live.db")
	setup := openRW(t, path, "wal", 10000)
	fill(t, setup, 3, 1500) // a few MiB, so streaming takes a while
	mustExec(t, setup, `CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)`)
	mustExec(t, setup, `CREATE TABLE log(seq INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER, pad BLOB)`)
	for i := 1; i <= accounts; i++ {
		mustExec(t, setup, `INSERT INTO accounts VALUES (?, ?)`, i, initial)
	}
	setup.Close()

	// The writer: its own connection; each transaction moves an amount
	// between two accounts and appends the next sequence number.
	wdb := openRW(t, path, "wal", 10000)
	var (
		committed atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		werrMu    sync.Mutex
		werr      error
	)
	writerErr := func() error {
		werrMu.Lock()
		defer werrMu.Unlock()
		return werr
	}
	fail := func(err error) {
		werrMu.Lock()
		werr = err
		werrMu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(4, 5))
		for seq := int64(1); ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			a, b := 1+rng.IntN(accounts), 1+rng.IntN(accounts)
			amount := rng.IntN(100)
			pad := make([]byte, 100+rng.IntN(3000)) // grows the database, splits pages
			for i := range pad {
				pad[i] = byte(rng.Uint32())
			}
			err := func() error {
				tx, err := wdb.Begin()
				if err != nil {
					return err
				}
				defer tx.Rollback()
				if _, err := tx.Exec(`UPDATE accounts SET balance = balance - ? WHERE id = ?`, amount, a); err != nil {
					return err
				}
				if _, err := tx.Exec(`UPDATE accounts SET balance = balance + ? WHERE id = ?`, amount, b); err != nil {
					return err
				}
				if _, err := tx.Exec(`INSERT INTO log VALUES (?, ?, ?, ?, ?)`, seq, a, b, amount, pad); err != nil {
					return err
				}
				if seq%200 == 0 {
					// Churn: free some pages again.
					if _, err := tx.Exec(`UPDATE log SET pad = NULL WHERE seq < ? AND pad IS NOT NULL`, seq-100); err != nil {
						return err
					}
				}
				return tx.Commit()
			}()
			if err != nil {
				fail(fmt.Errorf("writer at seq %d: %w", seq, err))
				return
			}
			committed.Store(seq)
			if seq%50 == 0 {
				// A checkpoint now and then; it cannot pass an open snapshot.
				if _, err := wdb.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
					fail(fmt.Errorf("checkpoint: %w", err))
					return
				}
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// waitFor blocks until the writer has committed n transactions.
	waitFor := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second) // against a hang, not a threshold
		for committed.Load() < n {
			if err := writerErr(); err != nil || time.Now().After(deadline) {
				t.Fatalf("writer stuck at %d of %d: %v", committed.Load(), n, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(20)

	for round := range 4 {
		before := committed.Load()
		s, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		after := committed.Load()
		in := s.Info()
		if in.JournalMode != "wal" || !in.WAL {
			t.Errorf("info %+v", in)
		}

		// What the transaction sees, asked on the snapshot's own connection.
		var inCount, inMax, inSum int64
		if err := s.conn.QueryRowContext(context.Background(),
			`SELECT count(*), coalesce(max(seq), 0), (SELECT sum(balance) FROM accounts) FROM log`).
			Scan(&inCount, &inMax, &inSum); err != nil {
			t.Fatal(err)
		}

		// Stream slowly and make sure the writer commits meanwhile.
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("image-%d.db", round)))
		if err != nil {
			t.Fatal(err)
		}
		atStart := committed.Load()
		var streamed uint32
		err = s.Pages(context.Background(), func(pgno uint32, p []byte) error {
			if pgno == in.PageCount/2 {
				waitFor(atStart + 25) // writers are not blocked by the snapshot
			}
			if pgno%100 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
			streamed++
			_, err := f.Write(p)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		atEnd := committed.Load()
		if atEnd < atStart+25 {
			t.Fatalf("writer made no progress while streaming: %d -> %d", atStart, atEnd)
		}
		if streamed != in.PageCount {
			t.Fatalf("streamed %d pages, info says %d", streamed, in.PageCount)
		}
		if round == 0 {
			// The same snapshot streams the same image again, later.
			waitFor(atEnd + 10)
			h1 := hashPages(t, s)
			data, _ := os.ReadFile(f.Name())
			if h0 := fmt.Sprintf("%x", sha256.Sum256(data)); h0 != h1 {
				t.Errorf("second Pages differs from the first")
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		// The image is the state of the moment Open returned.
		head := make([]byte, 100)
		if g, err := os.Open(f.Name()); err != nil {
			t.Fatal(err)
		} else {
			g.Read(head)
			g.Close()
		}
		if head[18] != 2 || head[19] != 2 {
			t.Errorf("image header bytes 18/19 = %d/%d, want 2/2 (WAL)", head[18], head[19])
		}
		rdb := openRestored(t, f.Name())
		var mode string
		rdb.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
		if mode != "wal" {
			t.Errorf("restored image opens in journal mode %q, want wal", mode)
		}
		var n, minSeq, maxSeq, sum int64
		if err := rdb.QueryRow(`SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0), (SELECT sum(balance) FROM accounts) FROM log`).
			Scan(&n, &minSeq, &maxSeq, &sum); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d pages, N=%d (writer at %d..%d when Open returned, %d after streaming)",
			round, in.PageCount, n, before, after, atEnd)
		if sum != total {
			t.Errorf("total balance %d, want %d", sum, total)
		}
		if n > 0 && (minSeq != 1 || maxSeq != n) {
			t.Errorf("seq %d..%d with %d rows: a gap", minSeq, maxSeq, n)
		}
		if n != inCount || maxSeq != inMax || sum != inSum {
			t.Errorf("image has N=%d max=%d sum=%d, the transaction saw %d %d %d", n, maxSeq, sum, inCount, inMax, inSum)
		}
		// The writer records a commit only after COMMIT returned, so the
		// one transaction in flight while Open ran may be in the image
		// without being counted yet: after+1 is still consistent.
		if n < before || n > after+1 {
			t.Errorf("image holds %d transactions, the writer was at %d..%d when Open returned", n, before, after)
		}
		rdb.Close()
		waitFor(committed.Load() + 10)
	}
	if err := writerErr(); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackJournal: a snapshot of a rollback-journal database holds a
// SHARED lock, so a writer cannot commit until Close; the image is the
// state before the writer's transaction.
func TestRollbackJournal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rj.db")
	db := openRW(t, path, "delete", 1000)
	fill(t, db, 6, 1000)
	want := contentDigest(t, db)
	db.Close()

	// A writer with a transaction in progress (RESERVED lock) does not stop
	// Open; the snapshot does not see its changes.
	writer := openRW(t, path, "delete", 100)
	wtx, err := writer.Begin()
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, wtx, `UPDATE items SET qty = -1`)

	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if in := s.Info(); in.JournalMode != "delete" || in.WAL {
		t.Errorf("info %+v", in)
	}

	// The writer cannot commit while the snapshot is open.
	err = wtx.Commit()
	if sqliteCode(err)&0xff != codeBusy {
		t.Fatalf("commit while the snapshot is open: %v, want SQLITE_BUSY", err)
	}
	wtx.Rollback()
	if _, err := writer.Exec(`UPDATE items SET qty = -2`); sqliteCode(err)&0xff != codeBusy {
		t.Fatalf("autocommit write while the snapshot is open: %v, want SQLITE_BUSY", err)
	}

	img := writeImage(t, s, dir)
	orig, _ := os.ReadFile(path)
	got, _ := os.ReadFile(img)
	if !bytes.Equal(orig, got) {
		t.Errorf("image differs from the locked database file")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close the writer goes through.
	if _, err := writer.Exec(`UPDATE items SET qty = -3`); err != nil {
		t.Fatalf("write after Close: %v", err)
	}
	rdb := openRestored(t, img)
	if contentDigest(t, rdb) != want {
		t.Errorf("restored rows differ")
	}
	var neg int
	rdb.QueryRow(`SELECT count(*) FROM items WHERE qty < 0`).Scan(&neg)
	if neg != 0 {
		t.Errorf("image holds %d rows of the writer's transactions", neg)
	}
}

// TestErrors covers the paths Open must refuse, without creating anything.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	check := func(t *testing.T, path string, target error, text string) {
		t.Helper()
		s, err := Open(ctx, path)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%s) succeeded", path)
		}
		t.Logf("%v", err)
		if !strings.HasPrefix(err.Error(), "sqlite snapshot "+path+": ") {
			t.Errorf("error does not name the path: %v", err)
		}
		if target != nil && !errors.Is(err, target) {
			t.Errorf("error is not %v: %v", target, err)
		}
		if !strings.Contains(err.Error(), text) {
			t.Errorf("error %q does not say %q", err, text)
		}
	}

	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "missing.db")
		check(t, path, fs.ErrNotExist, "no such file or directory")
		for _, p := range []string{path, path + "-journal", path + "-wal", path + "-shm"} {
			if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s exists after a failed Open: %v", filepath.Base(p), err)
			}
		}
	})
	t.Run("missing-dir", func(t *testing.T) {
		check(t, filepath.Join(dir, "nodir", "x.db"), fs.ErrNotExist, "no such file or directory")
	})
	t.Run("directory", func(t *testing.T) {
		check(t, dir, syscall.EISDIR, "is a directory")
	})
	t.Run("fifo", func(t *testing.T) {
		path := filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Skip(err)
		}
		check(t, path, nil, "not a regular file")
	})
	t.Run("not-a-database", func(t *testing.T) {
		path := filepath.Join(dir, "junk.db")
		junk := bytes.Repeat([]byte("this is not a database. "), 1000)
		if err := os.WriteFile(path, junk, 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, path, ErrNotDatabase, "file is not a database")
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, junk) {
			t.Errorf("the file changed")
		}
	})
	t.Run("short-junk", func(t *testing.T) {
		path := filepath.Join(dir, "short.db")
		if err := os.WriteFile(path, []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, path, ErrNotDatabase, "file is not a database")
	})
	t.Run("permission", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any file")
		}
		path := filepath.Join(dir, "secret.db")
		db := openRW(t, path, "delete", 1000)
		fill(t, db, 7, 10)
		db.Close()
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		check(t, path, fs.ErrPermission, "permission denied")
	})
}

// TestWALReadOnlyDirectory: a WAL database whose -shm is missing in a
// directory we cannot write cannot be opened read-only.
func TestWALReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes any directory")
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "w.db")
	db := openRW(t, path, "wal", 1000)
	fill(t, db, 8, 10)
	db.Close() // the last connection removes -wal and -shm
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	s, err := Open(context.Background(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "-shm") {
		t.Errorf("error does not explain the -shm: %v", err)
	}
}

// TestEmptyFile: an empty file is an empty database: no pages.
func TestEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if in := s.Info(); in.PageCount != 0 {
		t.Errorf("info %+v", in)
	}
	if err := s.Pages(context.Background(), func(uint32, []byte) error {
		return errors.New("a page")
	}); err != nil {
		t.Fatal(err)
	}
}

// TestPagesStops: cancelling Open's context later does not end the
// transaction; an error from fn comes back as is, a cancelled context stops
// the stream, and the snapshot stays usable after either.
func TestPagesStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db := openRW(t, path, "wal", 1000)
	fill(t, db, 9, 500)
	openCtx, openCancel := context.WithCancel(context.Background())
	s, err := Open(openCtx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	openCancel() // bounds Open only: the transaction stays
	mustExec(t, db, `UPDATE items SET qty = 0`)
	want := hashPages(t, s)

	errStop := errors.New("stop")
	if err := s.Pages(context.Background(), func(pgno uint32, _ []byte) error {
		if pgno == 10 {
			return errStop
		}
		return nil
	}); err != errStop {
		t.Errorf("fn's error came back as %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	err = s.Pages(ctx, func(pgno uint32, _ []byte) error {
		if pgno == 10 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "sqlite snapshot ") {
		t.Errorf("cancelled Pages: %v", err)
	}

	mustExec(t, db, `DELETE FROM items`)
	if got := hashPages(t, s); got != want {
		t.Errorf("the snapshot changed after an interrupted stream")
	}
}

// TestHotJournal: a copy of a rollback-journal database taken in the middle
// of a write transaction (what a crash leaves) has a hot journal; a
// read-only connection cannot roll it back, and Open says so without
// touching the files.
func TestHotJournal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rj.db")
	db := openRW(t, path, "delete", 1000)
	fill(t, db, 10, 1000)
	mustExec(t, db, `PRAGMA cache_size = 10`) // spill to the file before commit
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	mustExec(t, tx, `UPDATE items SET body = zeroblob(length(body))`)

	crashed := filepath.Join(dir, "crashed")
	if err := os.Mkdir(crashed, 0o755); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(crashed, "rj.db")
	for _, suffix := range []string{"", "-journal"} {
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp+suffix, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := os.ReadFile(cp)
	s, err := Open(context.Background(), cp)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded on a database with a hot journal")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "hot journal") {
		t.Errorf("error does not name the hot journal: %v", err)
	}
	after, _ := os.ReadFile(cp)
	if string(before) != string(after) {
		t.Errorf("the database file changed")
	}
	if _, err := os.Stat(cp + "-journal"); err != nil {
		t.Errorf("journal gone: %v", err)
	}
}
