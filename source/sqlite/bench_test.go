package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// benchDB is a database of about 200 MiB shared by the benchmarks of one
// run, built on first use and removed by TestMain.
var benchDB struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDB.dir != "" {
		os.RemoveAll(benchDB.dir)
	}
	os.Exit(code)
}

const benchMiB = 200

// bigDB returns the path of the ~200 MiB database: rows of 200..4000 bytes
// (text and random blobs from a fixed seed) with an index, journal mode
// delete, checkpointed to the file.
func bigDB(b *testing.B) string {
	benchDB.once.Do(func() {
		start := time.Now()
		benchDB.dir, benchDB.err = os.MkdirTemp("", "sqlite-bench-")
		if benchDB.err != nil {
			return
		}
		benchDB.path = filepath.Join(benchDB.dir, "big.db")
		db, err := sql.Open("sqlite", "file:"+benchDB.path+"?_pragma=journal_mode(off)&_pragma=synchronous(off)")
		if err != nil {
			benchDB.err = err
			return
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		benchDB.err = func() error {
			if _, err := db.Exec(`CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, body BLOB)`); err != nil {
				return err
			}
			if _, err := db.Exec(`CREATE INDEX t_name ON t(name)`); err != nil {
				return err
			}
			rng := rand.New(rand.NewPCG(11, 12))
			tx, err := db.Begin()
			if err != nil {
				return err
			}
			defer tx.Rollback()
			st, err := tx.Prepare(`INSERT INTO t(name, body) VALUES (?, ?)`)
			if err != nil {
				return err
			}
			buf := make([]byte, 4000)
			for written := 0; written < benchMiB<<20*3/4; {
				body := buf[:200+rng.IntN(3800)]
				for i := 0; i+8 <= len(body); i += 8 {
					v := rng.Uint64()
					for j := range 8 {
						body[i+j] = byte(v >> (8 * j))
					}
				}
				name := fmt.Sprintf("row-%016x", rng.Uint64())
				if _, err := st.Exec(name, body); err != nil {
					return err
				}
				written += len(body) + len(name)*2 + 24
			}
			return tx.Commit()
		}()
		if benchDB.err == nil {
			fi, _ := os.Stat(benchDB.path)
			fmt.Fprintf(os.Stderr, "bench database: %.1f MiB in %v\n", float64(fi.Size())/(1<<20), time.Since(start).Round(time.Millisecond))
		}
	})
	if benchDB.err != nil {
		b.Fatal(benchDB.err)
	}
	return benchDB.path
}

// BenchmarkPages streams the ~200 MiB database: Open, a page stream, Close
// per iteration, the callback touching every page. Pages reads the quiet
// file directly (no WAL frames), sqlite_dbpage streams every page through
// SQLite (what Pages falls back to); os-read is the baseline of reading the
// same file sequentially through the (warm) page cache.
func BenchmarkPages(b *testing.B) {
	path := bigDB(b)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	size := fi.Size()
	report := func(b *testing.B, start time.Time) {
		b.ReportMetric(float64(size)*float64(b.N)/(1<<20)/time.Since(start).Seconds(), "MiB/s")
	}

	for _, bc := range []struct {
		name   string
		stream func(*Snapshot) func(context.Context, func(uint32, []byte) error) error
	}{
		{"Pages", func(s *Snapshot) func(context.Context, func(uint32, []byte) error) error { return s.Pages }},
		{"sqlite_dbpage", func(s *Snapshot) func(context.Context, func(uint32, []byte) error) error { return s.pagesSQL }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				s, err := Open(context.Background(), path)
				if err != nil {
					b.Fatal(err)
				}
				var sum byte
				var n int64
				if err := bc.stream(s)(context.Background(), func(_ uint32, p []byte) error {
					sum += p[len(p)-1]
					n += int64(len(p))
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				if n != size {
					b.Fatalf("streamed %d bytes of %d", n, size)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			report(b, start)
		})
	}

	b.Run("os-read", func(b *testing.B) {
		b.SetBytes(size)
		buf := make([]byte, 1<<20)
		start := time.Now()
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			var sum byte
			for {
				n, err := f.Read(buf)
				if n > 0 {
					sum += buf[n-1]
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
		}
		report(b, start)
	})
}
