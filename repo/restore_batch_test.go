package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"repo/backend"
	"repo/index"
)

// loadCounter counts the Loads of the pack files in packs.
type loadCounter struct {
	backend.Backend
	packs map[string]bool
	n     atomic.Int64
}

func (b *loadCounter) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	if h.Type == backend.PackFile && b.packs[h.Name] {
		b.n.Add(1)
	}
	return b.Backend.Load(ctx, h, length, offset, fn)
}

// smallFilesSource writes many small files in a few directories, some with
// the same content, one of zeros and one empty.
func smallFilesSource(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	files := map[string][]byte{}
	for i := range 300 {
		files[fmt.Sprintf("d%d/f%03d", i%7, i)] = randomBytes(uint64(1000+i), 1000+37*i)
	}
	files["dup/a"] = files["d0/f000"]
	files["dup/b"] = files["d0/f000"]
	files["zeros"] = make([]byte, 40000)
	files["empty"] = nil
	for rel, data := range files {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return src, files
}

// TestRestoreBatchesSmallFiles checks that the blobs of small files are
// fetched with a few reads per pack, not one per file, and that every file
// still gets its content.
func TestRestoreBatchesSmallFiles(t *testing.T) {
	r0, be := newTestRepo(t, true)
	src, files := smallFilesSource(t)
	sn := backup(t, r0, BackupOptions{Paths: []string{src}})
	// The packs of the files' data.
	packs := map[string]bool{}
	for _, n := range snapshotPaths(t, r0, sn, src) {
		for _, id := range n.Content {
			pb, _, _ := r0.LookupBlob(index.DataBlob, id)
			packs[pb.Pack.String()] = true
		}
	}
	cb := &loadCounter{Backend: be, packs: packs}
	r := openTestRepo(t, cb)
	target, st := restore(t, r, sn, src)
	if st.Files != len(files) {
		t.Errorf("restored %d files, want %d", st.Files, len(files))
	}
	for rel, data := range files {
		compareContent(t, filepath.Join(target, rel), data)
	}
	// A read per pack and batch: batches fill up at batchFiles.
	if n := cb.n.Load(); n > int64(len(packs)+len(files)/batchFiles) {
		t.Errorf("%d pack reads for %d files in %d packs", n, len(files), len(packs))
	}
}

// TestRestoreBatchDamagedPack truncates the pack of many small files in
// the middle: the files stored before the cut are restored (the failed
// read of a batch is retried blob by blob), those after it reported.
func TestRestoreBatchDamagedPack(t *testing.T) {
	r, be := newTestRepo(t, false)
	src, files := smallFilesSource(t)
	sn := backup(t, r, BackupOptions{Paths: []string{src}})
	nodes := snapshotPaths(t, r, sn, src)
	victim, _, err := r.LookupBlob(index.DataBlob, nodes["d3/f150"].Content[0])
	if err != nil {
		t.Fatal(err)
	}
	cut := int64(victim.Offset) + 1
	rewrite(t, be, packHandle(victim.Pack), func(b []byte) []byte { return b[:cut] })
	markDamaged(r)

	var wantLost []string
	for rel, n := range nodes {
		if n.Type != NodeFile || len(n.Content) == 0 {
			continue
		}
		pb, _, _ := r.LookupBlob(index.DataBlob, n.Content[0])
		if pb.Pack == victim.Pack && int64(pb.Offset)+int64(pb.Length) > cut {
			wantLost = append(wantLost, path.Join(src, rel))
		}
	}
	slices.Sort(wantLost)
	if len(wantLost) < 2 || len(wantLost) > len(files)-10 {
		t.Fatalf("setup: %d of %d files lost", len(wantLost), len(files))
	}

	target := filepath.Join(t.TempDir(), "target")
	var ec errorCollector
	st, err := r.Restore(t.Context(), sn, src, RestoreOptions{Target: target, OnError: ec.onError})
	if err != nil {
		t.Fatal(err)
	}
	if got := ec.paths(); !slices.Equal(got, wantLost) {
		t.Errorf("reported %q, want %q", got, wantLost)
	}
	if st.Files != len(files)-len(wantLost) {
		t.Errorf("restored %d files, want %d", st.Files, len(files)-len(wantLost))
	}
	for rel, data := range files {
		if !slices.Contains(wantLost, path.Join(src, rel)) {
			compareContent(t, filepath.Join(target, rel), data)
		}
	}
}

// cancellingBackend cancels a context at the at-th Load of one of packs
// (of any pack file if packs is nil).
type cancellingBackend struct {
	backend.Backend
	packs  map[string]bool
	n      atomic.Int64
	at     int64
	cancel context.CancelFunc
}

func (b *cancellingBackend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	if h.Type == backend.PackFile && (b.packs == nil || b.packs[h.Name]) && b.n.Add(1) == b.at {
		b.cancel()
	}
	return b.Backend.Load(ctx, h, length, offset, fn)
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestRestoreBatchCancelled cancels restores of many small files at
// various points (while the trees are read, at the first reads of file
// data): each must return the cancellation, with every directory it
// opened closed again.
func TestRestoreBatchCancelled(t *testing.T) {
	r0, be := newTestRepo(t, false)
	src, _ := smallFilesSource(t)
	sn := backup(t, r0, BackupOptions{Paths: []string{src}})
	data := map[string]bool{}
	for _, n := range snapshotPaths(t, r0, sn, src) {
		for _, id := range n.Content {
			pb, _, _ := r0.LookupBlob(index.DataBlob, id)
			data[pb.Pack.String()] = true
		}
	}
	tests := []struct {
		name  string
		packs map[string]bool
		at    int64
	}{
		{"first pack read", nil, 1},
		{"first data read", data, 1},
		{"second data read", data, 2},
		{"third data read", data, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r := openTestRepo(t, &cancellingBackend{Backend: be, packs: tt.packs, at: tt.at, cancel: cancel})
			before := openFDs(t)
			_, err := r.Restore(ctx, sn, src, RestoreOptions{Target: filepath.Join(t.TempDir(), "target")})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("restore returned %v", err)
			}
			if after := openFDs(t); after > before {
				t.Errorf("%d descriptors open after the restore, %d before", after, before)
			}
		})
	}
}
