package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"repo/chunk"
	"repo/source/sqlite"
)

// TestPipePages: process sees every page of the image once, in order, in
// batches of whole pages no larger than pageBatchPages, each with its id;
// an error of process stops the stream early and comes back as is.
func TestPipePages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	writeDB(t, path, "wal", 2*pageBatchPages) // pages enough for several batches
	snap, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	info := snap.Info()
	if info.PageCount <= 2*pageBatchPages {
		t.Fatalf("%d pages: too few to cross batches", info.PageCount)
	}
	var want [][]byte
	if err := snap.Pages(context.Background(), func(_ uint32, p []byte) error {
		want = append(want, bytes.Clone(p))
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	a := &archiver{}
	var read, got, batches int
	err = a.pipePages(context.Background(), snap, info.PageSize, func([]byte) { read++ }, chunk.Hash, func(b []byte, ids []chunk.ID) error {
		batches++
		if len(b) == 0 || len(b)%info.PageSize != 0 || len(b) > pageBatchPages*info.PageSize {
			t.Fatalf("batch of %d bytes: not 1 to %d whole pages", len(b), pageBatchPages)
		}
		if len(ids) != len(b)/info.PageSize {
			t.Fatalf("%d ids for %d pages", len(ids), len(b)/info.PageSize)
		}
		for off := 0; off < len(b); off += info.PageSize {
			if got >= len(want) || !bytes.Equal(b[off:off+info.PageSize], want[got]) {
				t.Fatalf("page %d differs from the stream's", got+1)
			}
			if id := ids[off/info.PageSize]; id != chunk.Hash(want[got]) {
				t.Fatalf("page %d: id %v is not its hash", got+1, id.Short())
			}
			got++
		}
		return nil
	})
	if err != nil || got != len(want) || read != len(want) || batches < 3 {
		t.Fatalf("pipePages: %v; processed %d and read %d of %d pages in %d batches", err, got, read, len(want), batches)
	}

	errStop := errors.New("stop")
	batches = 0
	err = a.pipePages(context.Background(), snap, info.PageSize, func([]byte) {}, chunk.Hash, func([]byte, []chunk.ID) error {
		if batches++; batches == 2 {
			return errStop
		}
		return nil
	})
	if err != errStop {
		t.Errorf("process failed: pipePages returned %v", err)
	}
	if batches != 2 {
		t.Errorf("process got %d batches, want none after its error", batches)
	}
}

// TestBackupDatabaseAlias: another name for a database being snapshotted
// (a hard link to it, or to its -shm) is reported and left out instead of
// being read as a file, which would drop SQLite's locks when closed; the
// database itself is saved as its image.
func TestBackupDatabaseAlias(t *testing.T) {
	r, _ := newTestRepo(t, true)
	src := t.TempDir()
	dbPath := filepath.Join(src, "app.db")
	db := writeDB(t, dbPath, "wal", 50)
	defer db.Close()
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{"app.db": "sub/link.db", "app.db-shm": "sub/link.shm"} {
		if err := os.Link(filepath.Join(src, from), filepath.Join(src, to)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "plain.txt"), []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ec errorCollector
	sn, err := r.Backup(t.Context(), BackupOptions{Paths: []string{src}, Databases: []string{dbPath},
		Hostname: "testhost", OnError: ec.onError})
	if err != nil {
		t.Fatal(err)
	}
	links := []string{filepath.Join(src, "sub", "link.db"), filepath.Join(src, "sub", "link.shm")}
	if got := ec.paths(); !slices.Equal(got, links) {
		t.Fatalf("reported %v, want %v", got, links)
	}
	for _, l := range links {
		if err := ec.errs[l]; !strings.Contains(err.Error(), "the same file as database "+dbPath) {
			t.Errorf("%s: %v", l, err)
		}
		if _, _, err := r.FindNode(t.Context(), sn, l); err == nil {
			t.Errorf("%s is in the snapshot", l)
		}
	}
	n, _, err := r.FindNode(t.Context(), sn, dbPath)
	if err != nil || n.Database == nil {
		t.Fatalf("database node %+v, %v", n, err)
	}
	if _, _, err := r.FindNode(t.Context(), sn, filepath.Join(src, "sub", "plain.txt")); err != nil {
		t.Errorf("plain file: %v", err)
	}
}
