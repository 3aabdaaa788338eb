package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/mem"
	"repo/chunk"
	"repo/index"
)

func TestSaverDedup(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			r, be := newTestRepo(t, encrypted)
			ctx := t.Context()
			data := []byte("the same bytes, saved again and again")

			s := r.NewSaver(ctx)
			id1, new1, err := s.SaveBlob(index.DataBlob, data)
			if err != nil || !new1 {
				t.Fatalf("first save: new=%v, %v", new1, err)
			}
			id2, new2, err := s.SaveBlob(index.DataBlob, bytes.Clone(data))
			if err != nil || new2 || id2 != id1 {
				t.Fatalf("second save: id %s new=%v, %v; want id %s, not new", id2.Short(), new2, err, id1.Short())
			}
			// Tree and data blobs are separate namespaces.
			id3, new3, err := s.SaveBlob(index.TreeBlob, data)
			if err != nil || !new3 || id3 != id1 {
				t.Fatalf("same bytes as a tree blob: id %s new=%v, %v; want id %s, new", id3.Short(), new3, err, id1.Short())
			}
			st, err := s.Finish()
			if err != nil {
				t.Fatal(err)
			}
			want := SaverStats{Blobs: 2, RawBytes: 2 * int64(len(data)), Packs: 2, IndexFiles: 1, StoredBytes: st.StoredBytes}
			if st != want {
				t.Errorf("stats %+v, want %+v", st, want)
			}
			if st.StoredBytes <= 0 {
				t.Errorf("StoredBytes = %d", st.StoredBytes)
			}
			if got := len(names(t, be, backend.PackFile)); got != 2 {
				t.Errorf("%d packs, want 2 (one data, one tree)", got)
			}
			if r.HashBlob(data) != id1 {
				t.Error("SaveBlob's id is not HashBlob of the data")
			}
			if keyed := id1 != chunk.Hash(data); keyed != encrypted {
				t.Errorf("blob id keyed = %v in a repository with encrypted = %v", keyed, encrypted)
			}

			// A second Saver knows it from the index.
			before := listObjects(t, be)
			s = r.NewSaver(ctx)
			if _, isNew, err := s.SaveBlob(index.DataBlob, data); err != nil || isNew {
				t.Errorf("save in a second saver: new=%v, %v", isNew, err)
			}
			if ok, err := s.Reserve(index.TreeBlob, id1); err != nil || ok {
				t.Errorf("reserve of an indexed tree blob: %v, %v", ok, err)
			}
			st, err = s.Finish()
			if err != nil {
				t.Fatal(err)
			}
			if st != (SaverStats{}) {
				t.Errorf("second saver stats %+v, want zero", st)
			}
			if after := listObjects(t, be); len(after) != len(before) {
				t.Errorf("second saver wrote %d objects", len(after)-len(before))
			}
		})
	}
}

// TestSaverReserveMany: after KnownMany, ReserveMany picks each new blob
// once, within a batch and across batches, and never an indexed one or one
// this Saver stores already.
func TestSaverReserveMany(t *testing.T) {
	r, _ := newTestRepo(t, false)
	indexed := saveBlobs(t, r, index.DataBlob, []byte("already indexed"))[0]
	s := r.NewSaver(t.Context())
	pending := chunk.Hash([]byte("reserved"))
	if ok, err := s.Reserve(index.DataBlob, pending); err != nil || !ok {
		t.Fatalf("reserve: %v, %v", ok, err)
	}
	a, b := chunk.Hash([]byte("a")), chunk.Hash([]byte("b"))
	ids := []chunk.ID{a, indexed, b, a, pending, b}
	known, store := make([]bool, len(ids)), make([]bool, len(ids))
	if err := s.KnownMany(index.DataBlob, ids, known); err != nil {
		t.Fatal(err)
	}
	s.ReserveMany(index.DataBlob, ids, known, store)
	if want := []bool{true, false, true, false, false, false}; !slices.Equal(store, want) {
		t.Errorf("store = %v, want %v", store, want)
	}
	// The same ids again, as the next batch of a stream would have them:
	// nothing is stored twice.
	if err := s.KnownMany(index.DataBlob, ids, known); err != nil {
		t.Fatal(err)
	}
	s.ReserveMany(index.DataBlob, ids, known, store)
	if slices.Contains(store, true) {
		t.Errorf("second batch: store = %v, want all false", store)
	}
	// Known is false for nothing stored yet.
	if ok, err := s.Known(index.DataBlob, chunk.Hash([]byte("c"))); err != nil || ok {
		t.Errorf("known of a new blob: %v, %v", ok, err)
	}
}

func TestSaverReserveConcurrent(t *testing.T) {
	r, _ := newTestRepo(t, false)
	indexed := saveBlobs(t, r, index.DataBlob, []byte("already indexed"))[0]

	s := r.NewSaver(t.Context())
	const goroutines, nids = 32, 16
	ids := make([]chunk.ID, nids)
	for i := range ids {
		ids[i] = chunk.Hash(fmt.Appendf(nil, "blob %d", i))
	}
	ids[0] = indexed
	var wins [nids]atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for k := range ids {
				i := (k + g) % nids // different orders, same ids
				ok, err := s.Reserve(index.DataBlob, ids[i])
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					wins[i].Add(1)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if got := wins[0].Load(); got != 0 {
		t.Errorf("indexed blob reserved %d times, want 0", got)
	}
	for i := 1; i < nids; i++ {
		if got := wins[i].Load(); got != 1 {
			t.Errorf("blob %d reserved %d times, want exactly 1", i, got)
		}
		if ok, err := s.Known(index.DataBlob, ids[i]); !ok || err != nil {
			t.Errorf("blob %d not known after Reserve: %v", i, err)
		}
		if ok, _ := s.Known(index.TreeBlob, ids[i]); ok {
			t.Errorf("reserving data blob %d made it known as a tree blob", i)
		}
	}
	// The reserved blobs are stored now, so that the check at the end finds
	// nothing missing (there is nothing to reference them anyway).
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
}

// testBlob is a blob a test stored and expects back.
type testBlob struct {
	id   chunk.ID
	data []byte
}

// verifyBlobs loads every blob and compares it with what was stored.
func verifyBlobs(t *testing.T, r *Repository, typ index.BlobType, blobs []testBlob) {
	t.Helper()
	var buf []byte
	for i, b := range blobs {
		var err error
		buf, err = r.LoadBlob(t.Context(), typ, b.id, buf)
		if err != nil {
			t.Errorf("blob %d (%s): %v", i, b.id.Short(), err)
			continue
		}
		if !bytes.Equal(buf, b.data) {
			t.Errorf("blob %d (%s): content differs (%d bytes, want %d)", i, b.id.Short(), len(buf), len(b.data))
		}
		if r.HashBlob(buf) != b.id {
			t.Errorf("blob %d: loaded content does not hash to its id", i)
		}
	}
}

func TestSaverStoreAsyncConcurrent(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			r, _ := newTestRepo(t, encrypted)
			s := r.NewSaver(t.Context())
			const goroutines, perG = 6, 20
			var (
				mu       sync.Mutex
				stored   []testBlob
				releases = map[chunk.ID]*atomic.Int32{}
			)
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range perG {
						var data []byte
						switch i % 4 {
						case 0: // the same in every goroutine: stored once
							data = fmt.Appendf(nil, "shared blob %d", i)
						case 1: // compressible
							data = bytes.Repeat(fmt.Appendf(nil, "g%d i%d ", g, i), 1+i*500)
						default: // random, up to 300 KiB
							data = randomBytes(uint64(g*1000+i), 1+(g*7919+i*104729)%(300<<10))
						}
						id := r.HashBlob(data)
						ok, err := s.Reserve(index.DataBlob, id)
						if err != nil {
							t.Error(err)
							return
						}
						if !ok {
							continue
						}
						buf := bytes.Clone(data)
						cnt := new(atomic.Int32)
						mu.Lock()
						stored = append(stored, testBlob{id, data})
						releases[id] = cnt
						mu.Unlock()
						// release scribbles over the buffer, as a caller
						// reusing it would: the stored blob must not change.
						err = s.StoreAsync(index.DataBlob, id, buf, func() {
							cnt.Add(1)
							for j := range buf {
								buf[j] = 0xAA
							}
						})
						if err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			st, err := s.Finish()
			if err != nil {
				t.Fatal(err)
			}
			if st.Blobs != len(stored) {
				t.Errorf("stats: %d blobs, want %d", st.Blobs, len(stored))
			}
			var raw int64
			for _, b := range stored {
				raw += int64(len(b.data))
				if n := releases[b.id].Load(); n != 1 {
					t.Errorf("release of %s called %d times, want 1", b.id.Short(), n)
				}
			}
			if st.RawBytes != raw {
				t.Errorf("stats: %d raw bytes, want %d", st.RawBytes, raw)
			}
			verifyBlobs(t, r, index.DataBlob, stored)
			// And from a fresh open, through the index files alone.
			verifyBlobs(t, openTestRepo(t, r.be), index.DataBlob, stored)
		})
	}
}

// packBlobBytes returns, per pack listed in the index files, the bytes its
// blobs take.
func packBlobBytes(t *testing.T, r *Repository) map[chunk.ID]int64 {
	t.Helper()
	out := map[chunk.ID]int64{}
	for name := range indexedPacks(t, r) {
		id, _ := chunk.ParseID(name)
		f, err := r.LoadIndexFile(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Packs {
			var n int64
			for _, b := range p.Blobs {
				n += int64(b.Length)
			}
			out[p.ID] = n
		}
	}
	return out
}

func TestSaverCutsPacks(t *testing.T) {
	r, be := newTestRepo(t, true)
	const blobSize, total = 200 << 10, 8 << 20
	var blobs [][]byte
	for i := range total / blobSize {
		blobs = append(blobs, randomBytes(uint64(i), blobSize))
	}
	s := r.NewSaver(t.Context())
	for _, b := range blobs {
		if _, _, err := s.SaveBlob(index.DataBlob, b); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	packs := names(t, be, backend.PackFile)
	if len(packs) != st.Packs {
		t.Errorf("%d packs in the backend, stats say %d", len(packs), st.Packs)
	}
	sizes := packBlobBytes(t, r)
	if len(sizes) != len(packs) {
		t.Fatalf("index lists %d packs, backend holds %d", len(sizes), len(packs))
	}
	// Random data is stored uncompressed: a blob takes blobSize plus the
	// seal. A pack ends within one blob of the target: it is cut when it
	// reaches the target, or (to keep buffers bounded) before a blob that
	// would take it too far past it.
	maxStored := int64(blobSize + 64)
	short := 0
	for id, n := range sizes {
		if n <= testPackSize-maxStored {
			short++
		}
		if n >= testPackSize+maxStored {
			t.Errorf("pack %s holds %d bytes of blobs: it should have been cut near %d", id.Short(), n, testPackSize)
		}
	}
	if short > 1 {
		t.Errorf("%d packs more than a blob below the target size, want at most 1 (the last)", short)
	}
	if min := total / (testPackSize + int(maxStored)); len(packs) < min {
		t.Errorf("%d packs for %d bytes, want at least %d", len(packs), total, min)
	}
}

func TestSaverWritesIndexFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 40 MiB")
	}
	r, be := newTestRepo(t, true)
	const blobSize = 512 << 10
	const nblobs = 80 // 40 MiB: two blobs per 1 MiB pack, 40 packs
	s := r.NewSaver(t.Context())
	var blobs []testBlob
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := g; i < nblobs; i += 2 {
				data := randomBytes(uint64(1000+i), blobSize)
				id := r.HashBlob(data)
				if ok, err := s.Reserve(index.DataBlob, id); err != nil || !ok {
					t.Errorf("reserve: %v, %v", ok, err)
					return
				}
				mu.Lock()
				blobs = append(blobs, testBlob{id, data})
				mu.Unlock()
				if err := s.StoreAsync(index.DataBlob, id, data, func() {}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if st.Packs <= indexEveryPacks {
		t.Fatalf("setup: only %d packs, want more than %d", st.Packs, indexEveryPacks)
	}
	files := indexedPacks(t, r)
	if len(files) != st.IndexFiles {
		t.Errorf("%d index files in the backend, stats say %d", len(files), st.IndexFiles)
	}
	if len(files) < 2 {
		t.Errorf("%d index files for %d packs, want at least 2 (one per %d packs)", len(files), st.Packs, indexEveryPacks)
	}
	listed := map[chunk.ID]int{}
	for name, packs := range files {
		if len(packs) > indexEveryPacks {
			t.Errorf("index file %s lists %d packs, want at most %d", name[:8], len(packs), indexEveryPacks)
		}
		for _, p := range packs {
			listed[p]++
		}
	}
	for _, name := range names(t, be, backend.PackFile) {
		id, _ := chunk.ParseID(name)
		if listed[id] != 1 {
			t.Errorf("pack %s listed in %d index files, want 1", name[:8], listed[id])
		}
		delete(listed, id)
	}
	for id := range listed {
		t.Errorf("index lists pack %s, which does not exist", id.Short())
	}
	// Nothing is left pending once everything is indexed.
	r.pendingMu.RLock()
	pending := len(r.pending)
	r.pendingMu.RUnlock()
	if pending != 0 {
		t.Errorf("%d blobs still pending after Finish", pending)
	}
	verifyBlobs(t, openTestRepo(t, be), index.DataBlob, blobs)
}

func TestSaverLoadPendingBlob(t *testing.T) {
	r, be := newTestRepo(t, true)
	ctx := t.Context()
	s := r.NewSaver(ctx)
	// Blobs of 400 KiB fill a 1 MiB pack after a few, and it is uploaded
	// at once; its index file is written only by Finish.
	var blobs []testBlob
	for i := range 6 {
		data := randomBytes(uint64(50+i), 400<<10)
		id, isNew, err := s.SaveBlob(index.DataBlob, data)
		if err != nil || !isNew {
			t.Fatalf("save: %v, %v", isNew, err)
		}
		blobs = append(blobs, testBlob{id, data})
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok, _ := r.LookupBlob(index.DataBlob, blobs[0].id); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pack was uploaded within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var uploaded []testBlob
	for _, b := range blobs {
		if _, ok, _ := r.LookupBlob(index.DataBlob, b.id); ok {
			uploaded = append(uploaded, b)
		}
	}
	if n := len(names(t, be, backend.IndexFile)); n != 0 {
		t.Fatalf("setup: %d index files before Finish, want 0", n)
	}
	if _, ok, _ := r.cache.Lookup(index.DataBlob, blobs[0].id); ok {
		t.Fatal("setup: blob is in the index cache already")
	}
	verifyBlobs(t, r, index.DataBlob, uploaded)
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	verifyBlobs(t, r, index.DataBlob, blobs)
}

func TestSaverBackendFails(t *testing.T) {
	tests := []struct {
		name   string
		ft     backend.FileType
		failAt int64
		mib    int
	}{
		{"first pack", backend.PackFile, 1, 3},
		{"third pack", backend.PackFile, 3, 6},
		{"pack after first index", backend.PackFile, indexEveryPacks + 2, indexEveryPacks + 6},
		{"first index", backend.IndexFile, 1, 3},
		{"second index", backend.IndexFile, 2, indexEveryPacks + 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if testing.Short() && tt.mib > 10 {
				t.Skip("stores many MiB")
			}
			mb := mem.New()
			if _, err := Init(t.Context(), mb, testInitOptions(false)); err != nil {
				t.Fatal(err)
			}
			fb := &faultBackend{Backend: mb, ft: tt.ft, failAt: tt.failAt}
			r := openTestRepo(t, fb)
			s := r.NewSaver(t.Context())
			const blobSize = 512 << 10
			var storeErr error
			for i := range tt.mib * 2 {
				data := randomBytes(uint64(i), blobSize)
				id := r.HashBlob(data)
				if ok, err := s.Reserve(index.DataBlob, id); err != nil || !ok {
					t.Fatalf("reserve: %v, %v", ok, err)
				}
				if storeErr = s.StoreAsync(index.DataBlob, id, data, func() {}); storeErr != nil {
					break
				}
			}
			if storeErr != nil && !errors.Is(storeErr, errInjected) {
				t.Errorf("StoreAsync after the failure: %v, want the injected error", storeErr)
			}
			_, err := s.Finish()
			if !errors.Is(err, errInjected) {
				t.Fatalf("Finish: %v, want the injected error", err)
			}
			if !errors.Is(s.Err(), errInjected) {
				t.Errorf("Err after Finish: %v", s.Err())
			}
			// Write ordering: whatever was written, no index file lists a
			// pack that is not there.
			packs := names(t, mb, backend.PackFile)
			files := indexedPacks(t, r)
			t.Logf("%d packs and %d index files were written before the failure", len(packs), len(files))
			for name, listed := range files {
				for _, p := range listed {
					if _, ok := slices.BinarySearch(packs, p.String()); !ok {
						t.Errorf("index file %s lists pack %s, which was never saved", name[:8], p.Short())
					}
				}
			}
			// The repository is still usable: a new Saver works.
			fb.failAt = 1 << 40
			saveBlobs(t, r, index.DataBlob, []byte("after the failure"))
		})
	}
}

func TestSaverCancel(t *testing.T) {
	r, _ := newTestRepo(t, false)
	ctx, cancel := context.WithCancel(t.Context())
	s := r.NewSaver(ctx)
	if _, _, err := s.SaveBlob(index.DataBlob, []byte("x")); err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan error, 1)
	go func() {
		for i := range 100 {
			data := randomBytes(uint64(i), 64<<10)
			id := r.HashBlob(data)
			if ok, _ := s.Reserve(index.DataBlob, id); ok {
				if err := s.StoreAsync(index.DataBlob, id, data, func() {}); err != nil {
					break
				}
			}
		}
		_, err := s.Finish()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Finish after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Saver hangs after its context was cancelled")
	}
}

// TestSaverIndexInterval: packs that wait IndexInterval get an index file
// while the Saver is still open, without more uploads and before Finish.
func TestSaverIndexInterval(t *testing.T) {
	be := mem.New()
	if _, err := Init(t.Context(), be, testInitOptions(true)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir(), IndexInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := r.NewSaver(t.Context())
	// Three 512 KiB blobs: the first two fill a 1 MiB pack, which is
	// uploaded; the third waits in the packer.
	var blobs []testBlob
	for i := range 3 {
		data := randomBytes(uint64(2000+i), 512<<10)
		id, _, err := s.SaveBlob(index.DataBlob, data)
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, testBlob{id, data})
	}
	// Generous: the test asserts that it happens, not how fast.
	deadline := time.Now().Add(30 * time.Second)
	for len(names(t, be, backend.IndexFile)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no index file 30 s after a pack was uploaded with IndexInterval 20ms")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The uploaded pack is indexed: another repository sees its blobs.
	other := openTestRepo(t, be)
	if _, ok, err := other.LookupBlob(index.DataBlob, blobs[0].id); err != nil || !ok {
		t.Errorf("blob of the first pack not indexed before Finish: %v, %v", ok, err)
	}
	st, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if st.IndexFiles != 2 || st.Packs != 2 {
		t.Errorf("stats %+v, want 2 packs and 2 index files (one by the timer, one by Finish)", st)
	}
	verifyBlobs(t, openTestRepo(t, be), index.DataBlob, blobs)
}
