package repo

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"repo/backend/local"
	"repo/chunk"
	"repo/index"
)

// maxPruneHeap bounds the Go heap in use while prune runs on a repository
// of a million used blobs.
const maxPruneHeap = 250 << 20

// TestPruneMemory prunes a local repository of a million used tiny blobs
// and as many unused ones, mixed into the same packs (so that nearly every
// pack is repacked), and bounds the heap in use meanwhile. It takes a
// minute and 350 MB of disk, so it runs only with REPO_PRUNE_MEMORY=1.
// REPO_PRUNE_MEMORY_BLOBS sets another number of used blobs (the bound is
// then not checked); with REPO_PRUNE_MEMORY_DIR=DIR the repository is made
// in DIR and kept, not pruned, to measure the command on it:
//
//	REPO_PASSWORD='correct horse battery staple' /usr/bin/time -v repo -r DIR prune
func TestPruneMemory(t *testing.T) {
	if os.Getenv("REPO_PRUNE_MEMORY") == "" {
		t.Skip("set REPO_PRUNE_MEMORY=1 to run")
	}
	used := 1_000_000
	if n, err := strconv.Atoi(os.Getenv("REPO_PRUNE_MEMORY_BLOBS")); err == nil && n > 0 {
		used = n
	}
	dir := t.TempDir()
	keep := os.Getenv("REPO_PRUNE_MEMORY_DIR")
	if keep != "" {
		dir = keep
	}
	be, err := local.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(t.Context(), be, testInitOptions(true)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := r.NewSaver(t.Context())
	var ids []chunk.ID
	buf := make([]byte, 16)
	for i := range 2 * used {
		binary.LittleEndian.PutUint64(buf, uint64(i))
		id, _, err := s.SaveBlob(index.DataBlob, buf)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			ids = append(ids, id)
		}
	}
	// 100 files of 100 blobs per directory.
	root := &Tree{}
	for d := 0; d < len(ids); d += 100 * 100 {
		dirTree := &Tree{}
		for f := d; f < min(d+100*100, len(ids)); f += 100 {
			content := ids[f:min(f+100, len(ids))]
			dirTree.Nodes = append(dirTree.Nodes, Node{Name: fmt.Sprintf("f%07d", f), Type: NodeFile, Mode: 0o644,
				Content: content, Size: uint64(16 * len(content))})
		}
		sub, err := s.SaveTree(dirTree)
		if err != nil {
			t.Fatal(err)
		}
		root.Nodes = append(root.Nodes, Node{Name: fmt.Sprintf("d%07d", d), Type: NodeDir, Mode: 0o755, Subtree: &sub})
	}
	rootID, err := s.SaveTree(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := r.SaveSnapshot(t.Context(), &Snapshot{Time: time.Now(), Tree: rootID, Paths: []string{"/x"}}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if keep != "" {
		return
	}
	ids, root = nil, nil

	r, err = Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	runtime.GC()
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak.Store(max(peak.Load(), ms.HeapInuse))
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	res, _, err := prune(t, r, PruneOptions{})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d used blobs, %d repacked: peak heap in use %d MiB", res.BlobsUsed, res.BlobsRepacked, peak.Load()>>20)
	if res.BlobsUsed < used || res.PacksRepacked == 0 {
		t.Errorf("result %+v: want %d used blobs and repacked packs", res, used)
	}
	if used == 1_000_000 && peak.Load() > maxPruneHeap {
		t.Errorf("peak heap in use %d MiB, want at most %d MiB", peak.Load()>>20, maxPruneHeap>>20)
	}
}
