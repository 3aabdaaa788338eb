package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// openRW opens path read-write (creating it) with the given journal mode and
// busy timeout, on one connection.
func openRW(t testing.TB, path, journal string, busyMillis int) *sql.DB {
	t.Helper()
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyMillis))
	q.Add("_pragma", "journal_mode("+journal+")")
	q.Add("_pragma", "synchronous(off)")
	u := url.URL{Scheme: "file", Path: path}
	db, err := sql.Open("sqlite", u.String()+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != journal {
		t.Fatalf("journal mode %q, want %q", mode, journal)
	}
	return db
}

func mustExec(t testing.TB, db interface {
	Exec(string, ...any) (sql.Result, error)
}, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// fill creates a few tables with rows from a fixed seed: about rows*1.3 KB.
func fill(t testing.TB, db *sql.DB, seed uint64, rows int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	mustExec(t, db, `CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, body BLOB)`)
	mustExec(t, db, `CREATE INDEX items_name ON items(name)`)
	mustExec(t, db, `CREATE TABLE notes(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID`)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		body := make([]byte, 200+rng.IntN(2000))
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		name := fmt.Sprintf("item-%08x", rng.Uint64())
		mustExec(t, tx, `INSERT INTO items(name, qty, price, body) VALUES (?, ?, ?, ?)`,
			name, rng.IntN(1000), rng.Float64()*100, body)
		if i%10 == 0 {
			mustExec(t, tx, `INSERT INTO notes VALUES (?, ?)`, fmt.Sprintf("note-%d", i), name+" "+name)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// Leave some free pages behind.
	mustExec(t, db, `DELETE FROM items WHERE id % 7 = 0`)
}

// contentDigest hashes every row of the tables fill creates, in key order.
func contentDigest(t testing.TB, db interface {
	Query(string, ...any) (*sql.Rows, error)
}) string {
	t.Helper()
	h := sha256.New()
	for _, q := range []string{
		`SELECT id, name, qty, price, body FROM items ORDER BY id`,
		`SELECT k, v, NULL, NULL, NULL FROM notes ORDER BY k`,
	} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var a, b, c, d, e any
			if err := rows.Scan(&a, &b, &c, &d, &e); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(h, "%v|%v|%v|%v|%x\n", a, b, c, d, e)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// writeImage streams s into a new file in dir and returns its path.
func writeImage(t testing.TB, s *Snapshot, dir string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "restored-*.db")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.Pages(context.Background(), func(_ uint32, p []byte) error {
		_, err := f.Write(p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	in := s.Info()
	if want := int64(in.PageCount) * int64(in.PageSize); fi.Size() != want {
		t.Fatalf("image has %d bytes, want %d pages of %d", fi.Size(), in.PageCount, in.PageSize)
	}
	return f.Name()
}

// openRestored opens an image read-write (as restore would) and checks
// PRAGMA integrity_check.
func openRestored(t testing.TB, path string) *sql.DB {
	t.Helper()
	db := openRWNoMode(t, path)
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		t.Fatal(err)
	}
	if res != "ok" {
		t.Fatalf("integrity_check of %s: %s", filepath.Base(path), res)
	}
	return db
}

func openRWNoMode(t testing.TB, path string) *sql.DB {
	t.Helper()
	u := url.URL{Scheme: "file", Path: path}
	db, err := sql.Open("sqlite", u.String()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// hashPages streams s and returns the hash of the image.
func hashPages(t testing.TB, s *Snapshot) string {
	t.Helper()
	h := sha256.New()
	if err := s.Pages(context.Background(), func(_ uint32, p []byte) error {
		h.Write(p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
