package index

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"repo/chunk"
)

// memSource is an in-memory repository of index files. It stores them
// encoded, so every load also exercises DecodeFile.
type memSource struct {
	mu      sync.Mutex
	order   []chunk.ID
	files   map[chunk.ID][]byte
	loads   map[chunk.ID]int
	fail    map[chunk.ID]error // LoadIndex fails with this
	onLoad  func(id chunk.ID)  // called before each load, if set
	listErr error
}

func newMemSource() *memSource {
	return &memSource{files: map[chunk.ID][]byte{}, loads: map[chunk.ID]int{}, fail: map[chunk.ID]error{}}
}

// put stores f and returns its id (the hash of its encoding, as in a
// repository).
func (s *memSource) put(f *File) chunk.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	enc := f.Encode()
	id := chunk.Hash(enc)
	if _, ok := s.files[id]; !ok {
		s.order = append(s.order, id)
	}
	s.files[id] = enc
	return id
}

func (s *memSource) remove(id chunk.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.files, id)
	s.order = slices.DeleteFunc(s.order, func(x chunk.ID) bool { return x == id })
}

func (s *memSource) loadCount(id chunk.ID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads[id]
}

func (s *memSource) ListIndex(ctx context.Context, fn func(id chunk.ID) error) error {
	s.mu.Lock()
	order, err := slices.Clone(s.order), s.listErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	for _, id := range order {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

func (s *memSource) LoadIndex(ctx context.Context, id chunk.ID) (*File, error) {
	if s.onLoad != nil {
		s.onLoad(id)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.loads[id]++
	enc, ok := s.files[id]
	err := s.fail[id]
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("index %s: %w", id.Short(), os.ErrNotExist)
	}
	return DecodeFile(enc)
}

// openCache opens a cache in dir and closes it at the end of the test.
func openCache(t testing.TB, dir string) *Cache {
	t.Helper()
	c, err := OpenCache(dir)
	if err != nil {
		t.Fatalf("open cache: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustSync(t testing.TB, c *Cache, src Source) SyncStats {
	t.Helper()
	st, err := c.Sync(context.Background(), src)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return st
}

// entries returns the index entries of files, later files winning for a
// blob listed twice (as the cache does).
func entries(files ...*File) map[[33]byte]PackedBlob {
	m := map[[33]byte]PackedBlob{}
	for _, f := range files {
		for _, p := range f.Packs {
			for _, b := range p.Blobs {
				m[blobKey(b.Type, b.ID)] = PackedBlob{Blob: b, Pack: p.ID}
			}
		}
	}
	return m
}

func blobKey(t BlobType, id chunk.ID) (k [33]byte) {
	k[0] = byte(t)
	copy(k[1:], id[:])
	return k
}

// checkCache verifies that the cache holds exactly want: every entry is
// found by Lookup, and Each yields nothing else.
func checkCache(t testing.TB, c *Cache, want map[[33]byte]PackedBlob) {
	t.Helper()
	for _, pb := range want {
		got, ok, err := c.Lookup(pb.Type, pb.ID)
		if err != nil || !ok || got != pb {
			t.Fatalf("Lookup(%s %s) = %+v, %v, %v; want %+v", pb.Type, pb.ID.Short(), got, ok, err, pb)
		}
		if has, err := c.Has(pb.Type, pb.ID); err != nil || !has {
			t.Fatalf("Has(%s %s) = %v, %v; want true", pb.Type, pb.ID.Short(), has, err)
		}
		other := pb.ID
		other[0] ^= 0xff
		if _, present := want[blobKey(pb.Type, other)]; !present {
			if has, err := c.Has(pb.Type, other); err != nil || has {
				t.Fatalf("Has(%s %s), an id not cached, = %v, %v; want false", pb.Type, other.Short(), has, err)
			}
		}
	}
	// HasMany over every wanted blob and, interleaved, ids not cached.
	for _, typ := range []BlobType{DataBlob, TreeBlob} {
		var ids []chunk.ID
		var want2 []bool
		for _, pb := range want {
			if pb.Type != typ {
				continue
			}
			other := pb.ID
			other[31] ^= 0x5a
			_, present := want[blobKey(typ, other)]
			ids = append(ids, pb.ID, other)
			want2 = append(want2, true, present)
		}
		found := make([]bool, len(ids))
		if err := c.HasMany(typ, ids, found); err != nil {
			t.Fatal(err)
		}
		for i := range ids {
			if found[i] != want2[i] {
				t.Fatalf("HasMany(%s): %s found %v, want %v", typ, ids[i].Short(), found[i], want2[i])
			}
		}
	}
	n := 0
	err := c.Each(func(pb PackedBlob) error {
		n++
		if w, ok := want[blobKey(pb.Type, pb.ID)]; !ok || w != pb {
			return fmt.Errorf("Each yields %s %s in pack %s, want %+v (present %v)", pb.Type, pb.ID.Short(), pb.Pack.Short(), w, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Fatalf("Each yields %d entries, want %d", n, len(want))
	}
}

func checkAbsent(t testing.TB, c *Cache, files ...*File) {
	t.Helper()
	for _, f := range files {
		for _, p := range f.Packs {
			for _, b := range p.Blobs {
				if _, ok, err := c.Lookup(b.Type, b.ID); ok || err != nil {
					t.Fatalf("Lookup(%s %s) = %v, %v; want absent", b.Type, b.ID.Short(), ok, err)
				}
			}
		}
	}
}

func TestCacheSyncLookup(t *testing.T) {
	dir := t.TempDir()
	src := newMemSource()
	f1, f2, f3 := makeFile(1, 4, 10), makeFile(2, 3, 20), makeFile(3, 1, 5)
	src.put(f1)
	src.put(f2)
	c := openCache(t, dir)
	if c.Private() {
		t.Fatal("first cache is private")
	}

	if st := mustSync(t, c, src); st != (SyncStats{Loaded: 2}) {
		t.Errorf("first sync: %+v", st)
	}
	checkCache(t, c, entries(f1, f2))

	// Absent blobs, and a known id under the other type.
	if _, ok, err := c.Lookup(DataBlob, testID(12345)); ok || err != nil {
		t.Errorf("Lookup of an unknown id: %v, %v", ok, err)
	}
	b := f1.Packs[0].Blobs[0] // a data blob
	if _, ok, err := c.Lookup(TreeBlob, b.ID); ok || err != nil {
		t.Errorf("Lookup under the wrong type: %v, %v", ok, err)
	}

	if st := mustSync(t, c, src); st != (SyncStats{Known: 2}) {
		t.Errorf("second sync: %+v", st)
	}
	src.put(f3)
	if st := mustSync(t, c, src); st != (SyncStats{Loaded: 1, Known: 2}) {
		t.Errorf("sync after a new file: %+v", st)
	}
	checkCache(t, c, entries(f1, f2, f3))

	// The cache persists.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, dir)
	if st := mustSync(t, c, src); st != (SyncStats{Known: 3}) {
		t.Errorf("sync after reopening: %+v", st)
	}
	checkCache(t, c, entries(f1, f2, f3))
}

func TestCacheAdd(t *testing.T) {
	src := newMemSource()
	f1, f2 := makeFile(1, 2, 10), makeFile(2, 2, 10)
	id1, id2 := src.put(f1), src.put(f2)
	c := openCache(t, t.TempDir())
	if err := c.Add(id2, f2); err != nil {
		t.Fatal(err)
	}
	checkCache(t, c, entries(f2))
	if err := c.Add(id2, f2); err != nil { // again: no-op
		t.Fatal(err)
	}
	if st := mustSync(t, c, src); st != (SyncStats{Loaded: 1, Known: 1}) {
		t.Errorf("sync: %+v", st)
	}
	if src.loadCount(id2) != 0 || src.loadCount(id1) != 1 {
		t.Errorf("loads: added file %d, other %d; want 0, 1", src.loadCount(id2), src.loadCount(id1))
	}
	checkCache(t, c, entries(f1, f2))
}

func TestCacheRebuildWhenFileVanishes(t *testing.T) {
	src := newMemSource()
	f1, f2, f3 := makeFile(1, 2, 10), makeFile(2, 2, 10), makeFile(3, 2, 10)
	id1 := src.put(f1)
	src.put(f2)
	c := openCache(t, t.TempDir())
	mustSync(t, c, src)
	src.remove(id1)
	src.put(f3)
	if st := mustSync(t, c, src); st != (SyncStats{Loaded: 2, Rebuilt: true}) {
		t.Errorf("sync after removal: %+v", st)
	}
	checkCache(t, c, entries(f2, f3))
	checkAbsent(t, c, f1)
}

// TestCacheDuplicateBlobs checks that a blob listed by two index files
// (e.g. after an interrupted prune) has one location.
func TestCacheDuplicateBlobs(t *testing.T) {
	f1 := makeFile(1, 2, 10)
	f2 := &File{Packs: []Pack{{ID: testID(99), Blobs: slices.Clone(f1.Packs[1].Blobs)}}}
	for i := range f2.Packs[0].Blobs {
		f2.Packs[0].Blobs[i].Offset += 7
	}
	src := newMemSource()
	src.put(f1)
	src.put(f2)
	c := openCache(t, t.TempDir())
	mustSync(t, c, src)
	checkCache(t, c, entries(f1, f2))
}

func TestCacheSupersedes(t *testing.T) {
	old := makeFile(1, 2, 10)
	keep := makeFile(2, 2, 10)
	idOld := chunk.Hash(old.Encode())
	// The prune result: old's second pack survives, its first is dropped.
	next := &File{Supersedes: []chunk.ID{idOld}, Packs: old.Packs[1:]}

	tests := []struct {
		name        string
		run         func(t *testing.T, c *Cache, src *memSource) SyncStats
		wantRebuilt bool
	}{
		{"superseding file listed last", func(t *testing.T, c *Cache, src *memSource) SyncStats {
			src.put(old)
			src.put(keep)
			src.put(next)
			return mustSync(t, c, src)
		}, true},
		{"superseding file listed first", func(t *testing.T, c *Cache, src *memSource) SyncStats {
			src.put(next)
			src.put(old)
			src.put(keep)
			st := mustSync(t, c, src)
			if n := src.loadCount(idOld); n != 0 {
				t.Errorf("superseded file loaded %d times", n)
			}
			return st
		}, false},
		{"superseding file appears later", func(t *testing.T, c *Cache, src *memSource) SyncStats {
			src.put(old)
			src.put(keep)
			mustSync(t, c, src)
			src.put(next)
			return mustSync(t, c, src)
		}, true},
		{"superseding file added", func(t *testing.T, c *Cache, src *memSource) SyncStats {
			src.put(old)
			src.put(keep)
			mustSync(t, c, src)
			if err := c.Add(src.put(next), next); err != nil {
				t.Fatal(err)
			}
			checkCache(t, c, entries(next)) // emptied, then next added
			st := mustSync(t, c, src)       // reloads keep, not old
			if n := src.loadCount(idOld); n != 1 {
				t.Errorf("superseded file loaded %d times, want 1 (before Add)", n)
			}
			return st
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			c := openCache(t, t.TempDir())
			st := tt.run(t, c, src)
			if st.Rebuilt != tt.wantRebuilt {
				t.Errorf("stats %+v, want Rebuilt %v", st, tt.wantRebuilt)
			}
			checkCache(t, c, entries(keep, next))
			checkAbsent(t, c, &File{Packs: old.Packs[:1]})
			if st := mustSync(t, c, src); st.Loaded != 0 || st.Rebuilt {
				t.Errorf("sync after: %+v", st)
			}
			// Once the superseded file is deleted, nothing changes.
			src.remove(idOld)
			if st := mustSync(t, c, src); st.Loaded != 0 || st.Rebuilt {
				t.Errorf("sync after deleting the superseded file: %+v", st)
			}
			checkCache(t, c, entries(keep, next))
		})
	}
}

func TestCacheLoadError(t *testing.T) {
	src := newMemSource()
	f1, f2, f3 := makeFile(1, 2, 10), makeFile(2, 2, 10), makeFile(3, 2, 10)
	src.put(f1)
	id2 := src.put(f2)
	src.put(f3)
	boom := errors.New("boom")
	src.fail[id2] = boom
	c := openCache(t, t.TempDir())

	st, err := c.Sync(context.Background(), src)
	if !errors.Is(err, boom) {
		t.Fatalf("Sync error %v, want %v", err, boom)
	}
	if st != (SyncStats{Loaded: 3}) {
		t.Errorf("stats %+v", st)
	}
	checkCache(t, c, entries(f1, f3)) // the others were loaded

	// The failed file was not recorded: once readable, it is loaded.
	delete(src.fail, id2)
	if st := mustSync(t, c, src); st != (SyncStats{Loaded: 1, Known: 2}) {
		t.Errorf("sync after repair: %+v", st)
	}
	checkCache(t, c, entries(f1, f2, f3))

	src.listErr = boom
	if _, err := c.Sync(context.Background(), src); !errors.Is(err, boom) {
		t.Errorf("Sync with a failing list: %v", err)
	}
}

func TestCacheSyncCancel(t *testing.T) {
	src := newMemSource()
	var files []*File
	for i := range 5 {
		files = append(files, makeFile(uint64(i), 2, 10))
		src.put(files[i])
	}
	ctx, cancel := context.WithCancel(context.Background())
	loads := 0
	src.onLoad = func(chunk.ID) {
		if loads++; loads == 3 {
			cancel()
		}
	}
	c := openCache(t, t.TempDir())
	if _, err := c.Sync(ctx, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync error %v, want context.Canceled", err)
	}
	src.onLoad = nil
	// The two files loaded before the cancellation were kept.
	checkCache(t, c, entries(files[:2]...))
	if st := mustSync(t, c, src); st != (SyncStats{Loaded: 3, Known: 2}) {
		t.Errorf("sync after cancel: %+v", st)
	}
	checkCache(t, c, entries(files...))
}

// TestCacheSyncCancelAfterSupersede cancels a Sync after it learned that
// cached entries are superseded: they must not stay in the cache.
func TestCacheSyncCancelAfterSupersede(t *testing.T) {
	old, keep, later := makeFile(1, 2, 10), makeFile(2, 2, 10), makeFile(3, 1, 5)
	src := newMemSource()
	idOld := src.put(old)
	src.put(keep)
	c := openCache(t, t.TempDir())
	mustSync(t, c, src)

	next := &File{Supersedes: []chunk.ID{idOld}, Packs: old.Packs[1:]}
	src.put(next)
	idLater := src.put(later)
	ctx, cancel := context.WithCancel(context.Background())
	src.onLoad = func(id chunk.ID) {
		if id == idLater {
			cancel()
		}
	}
	if _, err := c.Sync(ctx, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync error %v, want context.Canceled", err)
	}
	checkAbsent(t, c, &File{Packs: old.Packs[:1]})
	src.onLoad = nil
	mustSync(t, c, src)
	checkCache(t, c, entries(keep, next, later))
}

// TestCacheBatches runs Sync and Add with tiny transactions, so that files
// span several of them, and checks that a file interrupted half-way
// (recorded pending) is loaded again.
func TestCacheBatches(t *testing.T) {
	defer func(n int) { batchBlobs = n }(batchBlobs)
	batchBlobs = 7
	src := newMemSource()
	f1, f2, f3 := makeFile(1, 3, 10), makeFile(2, 1, 3), makeFile(3, 2, 2)
	id1 := src.put(f1)
	src.put(f2)
	src.put(f3)
	dir := t.TempDir()
	c := openCache(t, dir)
	// Watch f1's record after every commit: f1 (30 blobs) spans several
	// transactions, so it must be pending until the last.
	var states []string
	testHookCommitted = func(c *Cache) {
		files, err := c.readFiles()
		if err != nil {
			t.Error(err)
		}
		switch st, ok := files[id1]; {
		case !ok:
			states = append(states, "absent")
		case st.complete:
			states = append(states, "complete")
		default:
			states = append(states, "pending")
		}
	}
	defer func() { testHookCommitted = nil }()
	mustSync(t, c, src)
	testHookCommitted = nil
	want := []string{"pending", "pending", "pending", "pending", "complete"}
	if len(states) < len(want) || !slices.Equal(states[:len(want)], want) {
		t.Errorf("f1's record after each commit: %v, want %v first", states, want)
	}
	checkCache(t, c, entries(f1, f2, f3))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Simulate a crash in the middle of f1: pending, and some entries lost.
	db, err := bolt.Open(filepath.Join(dir, cacheFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(filesBucket).Put(id1[:], []byte{filePending}); err != nil {
			return err
		}
		for _, b := range f1.Packs[2].Blobs {
			k := blobKey(b.Type, b.ID)
			if err := tx.Bucket(blobsBucket).Delete(k[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}

	c = openCache(t, dir)
	if st := mustSync(t, c, src); st != (SyncStats{Loaded: 1, Known: 2}) {
		t.Errorf("sync after the crash: %+v", st)
	}
	checkCache(t, c, entries(f1, f2, f3))

	// A pending file that vanished triggers a rebuild like a complete one.
	db = c.db
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(filesBucket).Put(id1[:], []byte{filePending})
	})
	if err != nil {
		t.Fatal(err)
	}
	src.remove(id1)
	if st := mustSync(t, c, src); !st.Rebuilt {
		t.Errorf("sync after a pending file vanished: %+v", st)
	}
	checkCache(t, c, entries(f2, f3))
}

// writeCache creates a cache in dir holding files of n blobs in total.
func writeCache(t *testing.T, dir string, n int) (*memSource, []*File) {
	t.Helper()
	src := newMemSource()
	var files []*File
	for i := 0; i < n; i += 1000 {
		f := makeFile(uint64(i), 10, 100)
		files = append(files, f)
		src.put(f)
	}
	c, err := OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustSync(t, c, src)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return src, files
}

// TestCacheDamagedFile checks that a damaged, foreign or old cache file is
// replaced by a fresh cache, and that the process survives it.
func TestCacheDamagedFile(t *testing.T) {
	random := func(n int) []byte {
		r := rand.New(rand.NewPCG(uint64(n), 1))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	truncate := func(size func(int64) int64) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, size(fi.Size())); err != nil {
				t.Fatal(err)
			}
		}
	}
	overwrite := func(off int64, b []byte) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	withBolt := func(fn func(tx *bolt.Tx) error) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(db.Update(fn), db.Close()); err != nil {
				t.Fatal(err)
			}
		}
	}
	page := int64(os.Getpagesize())

	// highWater returns the size bbolt's meta page claims (pages in use).
	highWater := func(t *testing.T, path string) int64 {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var size int64
		must(t, db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }))
		return size
	}

	// fresh: the damage must be detected and the cache start empty. Else
	// bbolt may legitimately use its other meta page (the previous
	// transaction's, a consistent older state); either way Sync must then
	// bring it to the source's state.
	tests := []struct {
		name   string
		fresh  bool
		damage func(t *testing.T, path string)
	}{
		{"garbage 64 KiB", true, func(t *testing.T, path string) { must(t, os.WriteFile(path, random(64<<10), 0o600)) }},
		{"garbage 100 bytes", true, func(t *testing.T, path string) { must(t, os.WriteFile(path, random(100), 0o600)) }},
		{"text", true, func(t *testing.T, path string) { must(t, os.WriteFile(path, []byte("hello\n"), 0o600)) }},
		// The file is longer than the pages in use (bbolt grows it ahead),
		// so truncations are measured from the high-water mark.
		{"truncated to half the pages in use", true, func(t *testing.T, path string) {
			must(t, os.Truncate(path, highWater(t, path)/2))
		}},
		{"truncated to 3 pages", true, truncate(func(int64) int64 { return 3 * page })},
		{"truncated to 1 page + 10", true, truncate(func(int64) int64 { return page + 10 })},
		{"truncated to 100 bytes", true, truncate(func(int64) int64 { return 100 })},
		{"truncated below the high-water mark", true, func(t *testing.T, path string) {
			must(t, os.Truncate(path, highWater(t, path)-page))
		}},
		{"truncated to the high-water mark", false, func(t *testing.T, path string) {
			must(t, os.Truncate(path, highWater(t, path)))
		}},
		{"meta pages zeroed", true, overwrite(0, make([]byte, 2*page))},
		{"first meta page garbage", false, overwrite(0, random(int(page)))},
		{"every data page garbage", true, func(t *testing.T, path string) {
			// Keep both meta pages: bbolt opens the file and panics inside.
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			overwrite(2*page, random(int(fi.Size()-2*page)))(t, path)
		}},
		{"other version", true, withBolt(func(tx *bolt.Tx) error {
			return tx.Bucket(metaBucket).Put(versionKey, []byte("0"))
		})},
		{"missing bucket", true, withBolt(func(tx *bolt.Tx) error { return tx.DeleteBucket(packsBucket) })},
		{"foreign bbolt file", true, func(t *testing.T, path string) {
			must(t, os.Remove(path))
			withBolt(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("something else"))
				return err
			})(t, path)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src, files := writeCache(t, dir, 20_000)
			tt.damage(t, filepath.Join(dir, cacheFile))

			c := openCache(t, dir)
			if c.Private() {
				t.Fatal("damaged cache replaced by a private one")
			}
			st := mustSync(t, c, src)
			if tt.fresh && st != (SyncStats{Loaded: len(files)}) {
				t.Errorf("sync of a damaged cache: %+v, want a fresh cache loading %d files", st, len(files))
			}
			checkCache(t, c, entries(files...))
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestCacheDamageFoundLater damages a leaf page that opening does not read,
// so that the damage shows at Lookup: the lookup fails with
// ErrCacheCorrupt (no crash), the cache refuses further work, and Close
// deletes the file so that the next OpenCache starts afresh.
func TestCacheDamageFoundLater(t *testing.T) {
	dir := t.TempDir()
	src, files := writeCache(t, dir, 20_000)
	path := filepath.Join(dir, cacheFile)
	victim := files[len(files)/2].Packs[3].Blobs[5]
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, victim.ID[:])
	if i < 0 {
		t.Fatal("blob id not found in the cache file")
	}
	page := i / os.Getpagesize() * os.Getpagesize()
	// Break the page's header (its id and flags), not the key: bbolt's
	// page id assertion fires when the page is read.
	for j := range 16 {
		data[page+j] ^= 0x5a
	}
	must(t, os.WriteFile(path, data, 0o600))

	c, err := OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Lookup(victim.Type, victim.ID); !errors.Is(err, ErrCacheCorrupt) {
		t.Fatalf("Lookup on a damaged page: %v, want ErrCacheCorrupt", err)
	}
	other := files[0].Packs[0].Blobs[0]
	if _, _, err := c.Lookup(other.Type, other.ID); !errors.Is(err, ErrCacheCorrupt) {
		t.Errorf("Lookup after the damage was found: %v, want ErrCacheCorrupt", err)
	}
	if _, err := c.Sync(context.Background(), src); !errors.Is(err, ErrCacheCorrupt) {
		t.Errorf("Sync after the damage was found: %v, want ErrCacheCorrupt", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("damaged cache file not deleted by Close: %v", err)
	}
	c = openCache(t, dir)
	if st := mustSync(t, c, src); st.Loaded != len(files) {
		t.Errorf("sync: %+v", st)
	}
	checkCache(t, c, entries(files...))
}

func TestCacheLockedFallsBackToPrivate(t *testing.T) {
	dir := t.TempDir()
	src := newMemSource()
	f1 := makeFile(1, 2, 10)
	src.put(f1)
	shared := openCache(t, dir)
	mustSync(t, shared, src)

	start := time.Now()
	private := openCache(t, dir)
	if !private.Private() {
		t.Fatal("second cache on a locked directory is not private")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("falling back took %v", d)
	}
	pdir := private.private
	if filepath.Dir(pdir) != dir {
		t.Errorf("private dir %s not under %s", pdir, dir)
	}
	if st := mustSync(t, private, src); st != (SyncStats{Loaded: 1}) {
		t.Errorf("private sync: %+v", st)
	}
	checkCache(t, private, entries(f1))
	if err := private.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pdir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private dir still there after Close: %v", err)
	}
	if err := private.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checkCache(t, shared, entries(f1)) // untouched

	// Once the shared cache is closed, the next one gets it.
	if err := shared.Close(); err != nil {
		t.Fatal(err)
	}
	again := openCache(t, dir)
	if again.Private() {
		t.Error("cache private after the holder closed")
	}
	if st := mustSync(t, again, src); st != (SyncStats{Known: 1}) {
		t.Errorf("sync: %+v", st)
	}
}

// holdEnv makes the test binary, run as a helper, hold the cache in the
// named directory until its standard input closes.
const holdEnv = "INDEX_TEST_HOLD_CACHE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holdEnv); dir != "" {
		c, err := OpenCache(dir)
		if err != nil || c.Private() {
			fmt.Println("failed", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCacheLockedByOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}

	c := openCache(t, dir)
	if !c.Private() {
		t.Fatal("cache locked by another process is not private")
	}
	src := newMemSource()
	f := makeFile(1, 1, 5)
	src.put(f)
	mustSync(t, c, src)
	checkCache(t, c, entries(f))
}

func TestRemoveStalePrivate(t *testing.T) {
	defer func(d time.Duration) { stalePrivateAge = d }(stalePrivateAge)
	stalePrivateAge = time.Hour
	dir := t.TempDir()
	old := time.Now().Add(-2 * time.Hour)

	mkPrivate := func(name string, withFile bool, mtime time.Time) string {
		p := filepath.Join(dir, name)
		must(t, os.Mkdir(p, 0o700))
		if withFile {
			must(t, os.WriteFile(filepath.Join(p, cacheFile), nil, 0o600))
		}
		must(t, os.Chtimes(p, mtime, mtime))
		return p
	}
	stale := mkPrivate("private-stale", true, old)
	staleEmpty := mkPrivate("private-empty", false, old)
	young := mkPrivate("private-young", true, time.Now())
	other := mkPrivate("other", false, old)

	// A live private cache: hold the shared one, open a second.
	holder := openCache(t, dir)
	live := openCache(t, dir)
	if !live.Private() {
		t.Fatal("not private")
	}
	must(t, os.Chtimes(live.private, old, old))
	must(t, holder.Close())

	openCache(t, dir) // takes the shared cache and cleans up

	for p, wantGone := range map[string]bool{stale: true, staleEmpty: true, young: false, other: false, live.private: false} {
		_, err := os.Stat(p)
		if gone := errors.Is(err, os.ErrNotExist); gone != wantGone {
			t.Errorf("%s: gone %v, want %v", filepath.Base(p), gone, wantGone)
		}
	}
	checkCache(t, live, nil) // still usable
}

func TestCacheCloseAndErrors(t *testing.T) {
	c := openCache(t, t.TempDir())
	must(t, c.Close())
	if _, _, err := c.Lookup(DataBlob, testID(1)); err == nil {
		t.Error("Lookup after Close succeeded")
	}
	if err := c.Each(func(PackedBlob) error { return nil }); err == nil {
		t.Error("Each after Close succeeded")
	}

	// OpenCache fails only when the directory is unusable.
	file := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(file, nil, 0o600))
	if c, err := OpenCache(filepath.Join(file, "sub")); err == nil {
		c.Close()
		t.Error("OpenCache under a regular file succeeded")
	}
}

func TestCacheEachStops(t *testing.T) {
	src := newMemSource()
	src.put(makeFile(1, 3, 10))
	c := openCache(t, t.TempDir())
	mustSync(t, c, src)
	stop := errors.New("stop")
	n := 0
	err := c.Each(func(PackedBlob) error {
		if n++; n == 5 {
			return stop
		}
		return nil
	})
	if err != stop || n != 5 {
		t.Errorf("Each returned %v after %d calls, want %v after 5", err, n, stop)
	}
	// An error of fn is not a corruption.
	checkCache(t, c, entries(makeFile(1, 3, 10)))
}

// TestCacheConcurrent runs lookups while Sync and Add write (run with
// -race).
func TestCacheConcurrent(t *testing.T) {
	defer func(n int) { batchBlobs = n }(batchBlobs)
	batchBlobs = 500
	src := newMemSource()
	var files []*File
	for i := range 8 {
		f := makeFile(uint64(i), 5, 100)
		files = append(files, f)
		src.put(f)
	}
	c := openCache(t, t.TempDir())
	mustSync(t, c, newSourceOf(files[:2]))
	want := entries(files[:2]...)
	var keys []PackedBlob
	for _, pb := range want {
		keys = append(keys, pb)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; ctx.Err() == nil; i++ {
				pb := keys[i%len(keys)]
				got, ok, err := c.Lookup(pb.Type, pb.ID)
				if err != nil || !ok || got != pb {
					t.Errorf("Lookup(%s) = %+v, %v, %v", pb.ID.Short(), got, ok, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		_ = c.Each(func(PackedBlob) error { return ctx.Err() })
	})
	// Writers: Sync the rest while adding files concurrently.
	var wwg sync.WaitGroup
	wwg.Go(func() {
		if _, err := c.Sync(context.Background(), src); err != nil {
			t.Error(err)
		}
	})
	for _, f := range files[5:] {
		wwg.Go(func() {
			if err := c.Add(chunk.Hash(f.Encode()), f); err != nil {
				t.Error(err)
			}
		})
	}
	wwg.Wait()
	cancel()
	wg.Wait()
	checkCache(t, c, entries(files...))
}

func newSourceOf(files []*File) *memSource {
	src := newMemSource()
	for _, f := range files {
		src.put(f)
	}
	return src
}

// BenchmarkCacheLookup looks up blobs in a cache of 200k entries: present
// ones (hit) and absent ones (miss), from one goroutine and from all.
func BenchmarkCacheLookup(b *testing.B) {
	const n = 200_000
	dir := b.TempDir()
	src := newMemSource()
	var files []*File
	for i := 0; i < n; i += 10_000 {
		f := makeFile(uint64(i), 100, 100)
		files = append(files, f)
		src.put(f)
	}
	c := openCache(b, dir)
	mustSync(b, c, src)
	var hits []Blob
	for _, f := range files {
		for _, p := range f.Packs {
			hits = append(hits, p.Blobs...)
		}
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(hits), func(i, j int) { hits[i], hits[j] = hits[j], hits[i] })

	b.Run("hit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			blob := hits[i%len(hits)]
			if _, ok, err := c.Lookup(blob.Type, blob.ID); !ok || err != nil {
				b.Fatal(ok, err)
			}
			i++
		}
	})
	b.Run("miss", func(b *testing.B) {
		i := uint64(0)
		for b.Loop() {
			if _, ok, err := c.Lookup(DataBlob, testID(i)); ok || err != nil {
				b.Fatal(ok, err)
			}
			i++
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(hits))
			for pb.Next() {
				blob := hits[i%len(hits)]
				if _, ok, err := c.Lookup(blob.Type, blob.ID); !ok || err != nil {
					b.Error(ok, err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkCacheSync syncs a fresh cache from 100 index files of 10k blobs
// (1M blobs, packs of 64 blobs) and reports blobs/s; run with
// -benchtime=1x. Then "add-10k" adds one more file of 10k blobs to that
// cache and "reopen" measures opening it.
func BenchmarkCacheSync(b *testing.B) {
	const files, perFile, perPack = 100, 10_000, 64
	src := newMemSource()
	for i := range files {
		src.put(makeFile(uint64(i), perFile/perPack+1, perPack))
	}
	total := files * (perFile/perPack + 1) * perPack
	parent, dir, run := b.TempDir(), "", 0
	seed := uint64(1 << 20) // of the files add-10k adds; never reused
	b.Run("sync", func(b *testing.B) {
		for b.Loop() {
			run++
			dir = filepath.Join(parent, fmt.Sprint(run))
			c, err := OpenCache(dir)
			if err != nil {
				b.Fatal(err)
			}
			if st := mustSync(b, c, src); st.Loaded != files {
				b.Fatalf("%+v", st)
			}
			must2(b, c.Close())
		}
		b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "blobs/s")
		if fi, err := os.Stat(filepath.Join(dir, cacheFile)); err == nil {
			b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-file")
		}
	})
	b.Run("add-10k", func(b *testing.B) {
		// One more index file of 10k blobs into the 1M-blob cache: the
		// cost of recording a backup's new index file.
		c, err := OpenCache(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		for b.Loop() {
			seed++
			f := makeFile(seed, perFile/perPack+1, perPack)
			if err := c.Add(chunk.Hash(f.Encode()), f); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((perFile/perPack+1)*perPack)*float64(b.N)/b.Elapsed().Seconds(), "blobs/s")
	})
	b.Run("reopen", func(b *testing.B) {
		for b.Loop() {
			c, err := OpenCache(dir)
			if err != nil {
				b.Fatal(err)
			}
			must2(b, c.Close())
		}
	})
}

func must2(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// TestCheckFile checks the pre-open check on its own: with the recover
// around bbolt, most damage is also caught without it, but only the check
// stops bbolt from following page ids past the end of its memory map.
func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	writeCache(t, dir, 5_000)
	valid, err := os.ReadFile(filepath.Join(dir, cacheFile))
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	db, err := bolt.Open(filepath.Join(dir, cacheFile), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var used int
	must(t, db.View(func(tx *bolt.Tx) error { used = int(tx.Size()); return nil }))
	must(t, db.Close())

	garbleFirstMeta := bytes.Clone(valid)
	for i := 16; i < 80; i++ {
		garbleFirstMeta[i] ^= 0xff
	}
	bothMetasZero := bytes.Clone(valid)
	clear(bothMetasZero[:2*page])

	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"valid", valid, true},
		{"empty", nil, true},
		{"cut to the pages in use", valid[:used], true},
		{"one page short", valid[:used-page], false},
		{"two pages", valid[:2*page], false},
		{"first meta damaged", garbleFirstMeta, true},
		{"both metas zero", bothMetasZero, false},
		{"text", []byte("not a database"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db")
			must(t, os.WriteFile(path, tt.data, 0o600))
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			err = checkFile(f)
			if tt.ok && err != nil {
				t.Errorf("checkFile: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrCacheCorrupt) {
				t.Errorf("checkFile = %v, want ErrCacheCorrupt", err)
			}
		})
	}
}
