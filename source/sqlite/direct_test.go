package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// streamHash hashes what one of the page streams of s yields.
func streamHash(t *testing.T, stream func(context.Context, func(uint32, []byte) error) error) string {
	t.Helper()
	h := sha256.New()
	next := uint32(1)
	if err := stream(context.Background(), func(pgno uint32, p []byte) error {
		if pgno != next {
			return fmt.Errorf("page %d after %d", pgno, next-1)
		}
		next++
		h.Write(p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d pages %x", next-1, h.Sum(nil))
}

// TestDirectMatchesSQL: while a writer commits and checkpoints, the pages
// read from the file (and, where the WAL has a frame, through SQLite) are
// the pages SQLite itself streams for the same snapshot, and the choice of
// Pages streams them too. Part of the database lives only in the WAL when
// each snapshot starts, so reading every page from the file would differ.
func TestDirectMatchesSQL(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "live.db")
	db := openRW(t, path, "wal", 10000)
	mustExec(t, db, `PRAGMA wal_autocheckpoint = 0`)
	fill(t, db, 7, 2000)
	mustExec(t, db, `PRAGMA wal_checkpoint(TRUNCATE)`)

	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		commits atomic.Int64
		werr    atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(8, 9))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			body := make([]byte, 100+rng.IntN(3000))
			for j := range body {
				body[j] = byte(rng.Uint32())
			}
			q := `UPDATE items SET qty = qty + 1, body = ? WHERE id = ?`
			if i%5 == 0 {
				q = `INSERT INTO items(body, name, qty) VALUES (?, 'new-' || ?, 0)`
			}
			if _, err := db.Exec(q, body, 1+rng.IntN(2000)); err != nil {
				werr.Store(err)
				return
			}
			commits.Add(1)
			if i%40 == 39 {
				// Copies back what no snapshot still needs from the WAL.
				if _, err := db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
					werr.Store(err)
					return
				}
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	waitCommits := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second) // against a hang, not a threshold
		for commits.Load() < n {
			if err, _ := werr.Load().(error); err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("writer stuck at %d commits", commits.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}

	for round := range 5 {
		waitCommits(commits.Load() + 30)
		s, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		if !s.direct {
			t.Fatal("the database file is not read directly")
		}
		wal, ok := s.walPages(s.info.PageCount)
		if !ok || wal.n == 0 {
			t.Fatalf("WAL pages: %d, ok %v; want some", wal.n, ok)
		}
		direct := streamHash(t, func(ctx context.Context, fn func(uint32, []byte) error) error {
			return s.pagesDirect(ctx, wal, func(pgno uint32, p []byte) error {
				if pgno == s.info.PageCount/2 {
					// More commits, and checkpoints, within the stream.
					waitCommits(commits.Load() + 60)
				}
				return fn(pgno, p)
			})
		})
		viaSQL := streamHash(t, s.pagesSQL)
		viaPages := streamHash(t, s.Pages)
		t.Logf("round %d: %d of %d pages in the WAL; %s", round, wal.n, s.info.PageCount, direct)
		if direct != viaSQL || viaPages != viaSQL {
			t.Errorf("round %d: direct %s, Pages %s, SQL %s", round, direct, viaPages, viaSQL)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirectSymlink: opened through a symbolic link, the WAL consulted is
// the one next to the real file, the one SQLite uses.
func TestDirectSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "data", "real.db")
	if err := os.Mkdir(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	db := openRW(t, real, "wal", 1000)
	mustExec(t, db, `PRAGMA wal_autocheckpoint = 0`)
	fill(t, db, 3, 1000)
	mustExec(t, db, `PRAGMA wal_checkpoint(TRUNCATE)`)
	mustExec(t, db, `UPDATE items SET qty = qty + 1 WHERE id % 2 = 0`) // in the WAL only
	want := contentDigest(t, db)
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), link)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.direct || s.walPath != real+"-wal" {
		t.Fatalf("direct %v, WAL %q; want %q", s.direct, s.walPath, real+"-wal")
	}
	if a, b := streamHash(t, s.Pages), streamHash(t, s.pagesSQL); a != b {
		t.Errorf("Pages %s, SQL %s", a, b)
	}
	img := writeImage(t, s, t.TempDir())
	if got := contentDigest(t, openRestored(t, img)); got != want {
		t.Error("restored rows differ")
	}
}

// TestPendingBytePage: the page holding SQLite's lock bytes (at 1 GiB) is
// zeros in the image, as sqlite_dbpage gives it, whether the file holds
// stale bytes there or ends before it, and pages past the end of the file
// come through SQLite. The files are sparse: a few MiB on disk.
func TestPendingBytePage(t *testing.T) {
	const ps = 4096
	pending := uint32(pendingByte/ps) + 1
	// sparseDB makes a rollback-journal database whose header claims
	// pages pages; the file is truncated (sparse) to that size.
	sparseDB := func(t *testing.T, pages uint32) string {
		path := filepath.Join(t.TempDir(), "big.db")
		db := openRW(t, path, "delete", 1000)
		mustExec(t, db, `CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)`)
		mustExec(t, db, `INSERT INTO t(b) VALUES (randomblob(20000))`)
		db.Close()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], pages)
		if _, err := f.WriteAt(hdr[:], 28); err != nil { // in-header database size
			t.Fatal(err)
		}
		if err := f.Truncate(int64(pages) * ps); err != nil {
			t.Fatal(err)
		}
		return path
	}
	check := func(t *testing.T, path string) {
		s, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if !s.direct {
			t.Fatal("the database file is not read directly")
		}
		var got []byte
		direct := streamHash(t, func(ctx context.Context, fn func(uint32, []byte) error) error {
			return s.Pages(ctx, func(pgno uint32, p []byte) error {
				if pgno == pending {
					got = bytes.Clone(p)
				}
				return fn(pgno, p)
			})
		})
		if viaSQL := streamHash(t, s.pagesSQL); direct != viaSQL {
			t.Errorf("Pages %s, SQL %s", direct, viaSQL)
		}
		if !bytes.Equal(got, make([]byte, ps)) {
			t.Errorf("pending-byte page %d is not zeros", pending)
		}
	}

	t.Run("stale bytes", func(t *testing.T) {
		path := sparseDB(t, pending+1)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xab}, ps), int64(pending-1)*ps); err != nil {
			t.Fatal(err)
		}
		f.Close()
		check(t, path)
	})
	t.Run("file ends before it", func(t *testing.T) {
		// The file ends just before the pending-byte page; WAL commits
		// add pages after it that no checkpoint has written yet.
		path := sparseDB(t, pending-1)
		db := openRW(t, path, "wal", 1000)
		mustExec(t, db, `PRAGMA wal_autocheckpoint = 0`)
		mustExec(t, db, `INSERT INTO t(b) VALUES (randomblob(50000))`)
		var pages uint32
		if err := db.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
			t.Fatal(err)
		}
		if pages <= pending {
			t.Fatalf("page count %d does not pass the pending-byte page %d", pages, pending)
		}
		check(t, path)
	})
}
