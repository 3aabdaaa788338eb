package repo

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
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
