package repo

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"repo/source/sqlite"
)

// TestPipePages: process sees every page of the image once, in order,
// across batch boundaries; an error of process stops the stream early and
// comes back as is.
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
	var read, got int
	err = a.pipePages(context.Background(), snap, info.PageSize, func([]byte) { read++ }, func(p []byte) error {
		if got >= len(want) || !bytes.Equal(p, want[got]) {
			t.Fatalf("page %d differs from the stream's", got+1)
		}
		got++
		return nil
	})
	if err != nil || got != len(want) || read != len(want) {
		t.Fatalf("pipePages: %v; processed %d and read %d of %d pages", err, got, read, len(want))
	}

	errStop := errors.New("stop")
	got, read = 0, 0
	err = a.pipePages(context.Background(), snap, info.PageSize, func([]byte) { read++ }, func([]byte) error {
		if got++; got == pageBatchPages+3 {
			return errStop
		}
		return nil
	})
	if err != errStop {
		t.Errorf("process failed: pipePages returned %v", err)
	}
	if got != pageBatchPages+3 {
		t.Errorf("process saw %d pages, want none after its error", got)
	}
}
