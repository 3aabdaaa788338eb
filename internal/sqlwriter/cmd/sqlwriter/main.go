// Command sqlwriter is the demo's and the benchmarks' live SQLite writer:
// it creates a WAL-mode database and commits transactions into it until
// stopped, and it verifies a (restored) copy of such a database.
//
// Every transaction moves an amount between the two rows of accounts, so
// the total is invariant, and appends a row to log with the next sequence
// number, so a consistent image has sequence numbers 1..N without a gap.
//
//	sqlwriter -db app.db -init-mb 64 -for 10s   # create, then write for 10 s
//	sqlwriter -verify restored/app.db           # integrity, total, no gap
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "modernc.org/sqlite"
)

// total is the invariant sum of the accounts.
const total = 1_000_000

func main() {
	db := flag.String("db", "", "database to create (if missing) and write to")
	initMB := flag.Int("init-mb", 16, "grow a new database to about this many MiB first")
	dur := flag.Duration("for", 0, "write for this long (0: until SIGINT/SIGTERM)")
	verify := flag.String("verify", "", "verify this database copy and exit")
	flag.Parse()
	var err error
	switch {
	case *verify != "":
		err = verifyDB(*verify)
	case *db != "":
		err = write(*db, *initMB, *dur)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sqlwriter:", err)
		os.Exit(1)
	}
}

func open(path string, ro bool) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)"
	if ro {
		dsn += "&mode=ro&immutable=1"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

func write(path string, initMB int, dur time.Duration) error {
	_, statErr := os.Stat(path)
	db, err := open(path, false)
	if err != nil {
		return err
	}
	defer db.Close()
	if errors.Is(statErr, os.ErrNotExist) {
		if err := create(db, initMB); err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dur)
		defer cancel()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, 200)
	n := 0
	for ctx.Err() == nil {
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		amount := rng.IntN(1000) - 500
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		_, err = tx.Exec("UPDATE accounts SET balance = balance + ? WHERE id = 1", amount)
		if err == nil {
			_, err = tx.Exec("UPDATE accounts SET balance = balance - ? WHERE id = 2", amount)
		}
		if err == nil {
			_, err = tx.Exec("INSERT INTO log(payload) VALUES (?)", payload)
		}
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		if err != nil {
			return fmt.Errorf("transaction %d: %w", n+1, err)
		}
		n++
	}
	fmt.Printf("sqlwriter: %d transactions committed\n", n)
	return nil
}

func create(db *sql.DB, initMB int) error {
	for _, q := range []string{
		"PRAGMA journal_mode=WAL",
		"CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
		fmt.Sprintf("INSERT INTO accounts VALUES (1, %d), (2, 0)", total),
		"CREATE TABLE log(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)",
		"CREATE TABLE filler(id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
	} {
		if _, err := db.Exec(q); err != nil {
			return err
		}
	}
	// Filler rows of compressible, seeded data make the database big
	// enough for the page dedup to matter.
	rng := rand.New(rand.NewPCG(7, 7))
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	text := make([]byte, 1<<16)
	for j := range text {
		text[j] = "abcdefghij0123456789 "[rng.IntN(21)]
	}
	for i := 0; i < initMB<<20/3000; i++ {
		off := rng.IntN(len(text) - 3000)
		if _, err := tx.Exec("INSERT INTO filler(body) VALUES (?)", text[off:off+3000]); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

func verifyDB(path string) error {
	db, err := open(path, true)
	if err != nil {
		return err
	}
	defer db.Close()
	var ic string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ic); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if ic != "ok" {
		return fmt.Errorf("%s: integrity_check: %s", path, ic)
	}
	var sum, count, maxSeq int64
	if err := db.QueryRow("SELECT SUM(balance) FROM accounts").Scan(&sum); err != nil {
		return err
	}
	if sum != total {
		return fmt.Errorf("%s: accounts total %d, want %d", path, sum, total)
	}
	if err := db.QueryRow("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM log").Scan(&count, &maxSeq); err != nil {
		return err
	}
	if count != maxSeq {
		return fmt.Errorf("%s: %d log rows but the last sequence number is %d: a transaction is torn", path, count, maxSeq)
	}
	fmt.Printf("%s: integrity_check ok, total %d, %d transactions without a gap\n", path, sum, count)
	return nil
}
