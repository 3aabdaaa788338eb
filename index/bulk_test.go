package index

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"repo/chunk"
)

// setBulk sets the bulk load's tuning for one test.
func setBulk(t *testing.T, minBlobs, run, commit int) {
	t.Helper()
	oldMin, oldRun, oldCommit := bulkMinBlobs, runBlobs, bulkCommitBlobs
	bulkMinBlobs, runBlobs, bulkCommitBlobs = minBlobs, run, commit
	t.Cleanup(func() { bulkMinBlobs, runBlobs, bulkCommitBlobs = oldMin, oldRun, oldCommit })
}

// setCommitHook sets testHookCommitted for one test.
func setCommitHook(t *testing.T, fn func(*Cache)) {
	t.Helper()
	testHookCommitted = fn
	t.Cleanup(func() { testHookCommitted = nil })
}

// awkwardFiles returns index files that exercise every rule of the
// merge, and the files that a cache of all of them must hold (the
// superseded one left out):
//   - blobs listed twice, in two files, with different locations: the
//     later file wins;
//   - a blob listed twice within one file (two packs): the later pack wins;
//   - one id as a data blob and as a tree blob: two entries;
//   - a pack without blobs, and a pack listed by two files;
//   - a file that supersedes an earlier one, listed after it.
func awkwardFiles() (all, live []*File) {
	for i := range 12 {
		all = append(all, makeFile(uint64(100+i), 4, 9))
	}
	// Later files repeat blobs of earlier ones, elsewhere.
	dup := &File{Packs: []Pack{{ID: testID(900), Blobs: slices.Clone(all[1].Packs[2].Blobs)}}}
	for i := range dup.Packs[0].Blobs {
		dup.Packs[0].Blobs[i].Offset += 11
	}
	all = append(all, dup)
	all = append(all, &File{Packs: []Pack{all[3].Packs[0]}}) // a pack listed by two files
	// Within one file: the same blob in two packs, a blob under both types,
	// and an empty pack.
	b := all[5].Packs[1].Blobs[3]
	again, other := b, b
	again.Offset, again.Length = 4242, 77
	other.Type = TreeBlob
	if b.Type == TreeBlob {
		other.Type = DataBlob
	}
	all = append(all, &File{Packs: []Pack{
		{ID: testID(901), Blobs: []Blob{b, other}},
		{ID: testID(902)},
		{ID: testID(903), Blobs: []Blob{again}},
	}})
	// The prune result for all[7]: its last pack survives.
	superseded := all[7]
	all = append(all, &File{Supersedes: []chunk.ID{chunk.Hash(superseded.Encode())}, Packs: superseded.Packs[3:]})
	for _, f := range all {
		if f != superseded {
			live = append(live, f)
		}
	}
	return all, live
}

// bulkFile returns the name of the new cache file a bulk load is
// building in c's directory, or "" (call it from testHookCommitted).
func bulkFile(t testing.TB, c *Cache) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(filepath.Dir(c.path), cacheFile+tempFileSuffix+"*"))
	if err != nil || len(m) > 1 {
		t.Fatalf("new cache files: %v, %v", m, err)
	}
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// eachEntry returns every entry of c, in Each's order.
func eachEntry(t testing.TB, c *Cache) []PackedBlob {
	t.Helper()
	var out []PackedBlob
	if err := c.Each(func(pb PackedBlob) error { out = append(out, pb); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// fileStates returns the cache's record of each file: "pending" or
// "complete".
func fileStates(t testing.TB, c *Cache) map[chunk.ID]string {
	t.Helper()
	files, err := c.readFiles()
	if err != nil {
		t.Fatal(err)
	}
	m := map[chunk.ID]string{}
	for id, st := range files {
		m[id] = map[bool]string{false: "pending", true: "complete"}[st.complete]
	}
	return m
}

// TestCacheBulkEqualsIncremental fills one cache in bulk and one through
// the incremental writer from the same files, and checks that they hold
// the same entries, which are the expected ones.
func TestCacheBulkEqualsIncremental(t *testing.T) {
	all, live := awkwardFiles()
	want := entries(live...)
	for _, order := range []string{"superseding file last", "superseding file first"} {
		t.Run(order, func(t *testing.T) {
			src := newMemSource()
			files := all
			if order == "superseding file first" {
				files = append([]*File{all[len(all)-1]}, all[:len(all)-1]...)
			}
			for _, f := range files {
				src.put(f)
			}

			setBulk(t, 1<<30, 1<<20, 1<<20) // never in bulk
			inc := openCache(t, t.TempDir())
			mustSync(t, inc, src)
			checkCache(t, inc, want)

			setBulk(t, 20, 17, 23) // runs of 17, transactions of 23 records
			bulkCommits := 0
			setCommitHook(t, func(c *Cache) {
				if bulkFile(t, c) != "" {
					bulkCommits++
				}
			})
			bulk := openCache(t, t.TempDir())
			st := mustSync(t, bulk, src)
			checkCache(t, bulk, want)
			if got, want := eachEntry(t, bulk), eachEntry(t, inc); !slices.Equal(got, want) {
				t.Errorf("bulk and incremental caches differ: %d and %d entries", len(got), len(want))
			}
			if bulkCommits < 10 {
				t.Errorf("%d commits of a bulk load, want many", bulkCommits)
			}
			if order == "superseding file last" && !st.Rebuilt {
				t.Errorf("stats %+v: want a second pass without the superseded file", st)
			}
			// Nothing more to do, and Add keeps working on the bulk-built
			// tree (pack numbers continue after the bulk load's).
			if st := mustSync(t, bulk, src); st.Loaded != 0 || st.Rebuilt {
				t.Errorf("second sync: %+v", st)
			}
			extra := makeFile(999, 3, 5)
			must(t, bulk.Add(chunk.Hash(extra.Encode()), extra))
			must(t, inc.Add(chunk.Hash(extra.Encode()), extra))
			checkCache(t, bulk, entries(append(slices.Clone(live), extra)...))
			if got, want := eachEntry(t, bulk), eachEntry(t, inc); !slices.Equal(got, want) {
				t.Error("bulk and incremental caches differ after Add")
			}
		})
	}
}

// TestCacheBulkMerge bulk-loads new files into a cache that holds others
// (some of whose blobs the new files list again), and checks the result
// against a cache that took the same steps incrementally.
func TestCacheBulkMerge(t *testing.T) {
	_, live := awkwardFiles()
	first, all := newSourceOf(live[:6]), newSourceOf(live)

	setBulk(t, 1<<30, 1<<20, 1<<20) // never in bulk
	inc := openCache(t, t.TempDir())
	mustSync(t, inc, first)
	mustSync(t, inc, all)

	bulk := openCache(t, t.TempDir())
	mustSync(t, bulk, first)
	setBulk(t, 20, 17, 23)
	bulkCommits := 0
	setCommitHook(t, func(c *Cache) {
		if bulkFile(t, c) != "" {
			bulkCommits++
		}
	})
	if st := mustSync(t, bulk, all); st != (SyncStats{Loaded: len(live) - 6, Known: 6}) {
		t.Errorf("sync: %+v", st)
	}
	if bulkCommits == 0 {
		t.Error("not loaded in bulk")
	}
	want := entries(live...)
	checkCache(t, bulk, want)
	if got, want := eachEntry(t, bulk), eachEntry(t, inc); !slices.Equal(got, want) {
		t.Errorf("bulk and incremental caches differ: %d and %d entries", len(got), len(want))
	}
	if st := mustSync(t, bulk, all); st.Loaded != 0 || st.Rebuilt || st.Known != len(live) {
		t.Errorf("second sync: %+v", st)
	}
	// Pack numbers continue after the merged ones.
	extra := makeFile(998, 3, 5)
	must(t, bulk.Add(chunk.Hash(extra.Encode()), extra))
	checkCache(t, bulk, entries(append(slices.Clone(live), extra)...))
}

// TestCacheBulkLarge loads 300k entries in bulk with small runs, so that
// the merge reads many run files.
func TestCacheBulkLarge(t *testing.T) {
	setBulk(t, 50_000, 40_000, 30_000)
	src := newMemSource()
	var files []*File
	for i := range 30 {
		f := makeFile(uint64(5000+i), 200, 50) // 10k entries
		files = append(files, f)
		src.put(f)
	}
	// A later file repeats some entries of the first, elsewhere: they
	// are in different runs.
	dup := &File{Packs: []Pack{{ID: testID(77), Blobs: slices.Clone(files[0].Packs[0].Blobs)}}}
	for i := range dup.Packs[0].Blobs {
		dup.Packs[0].Blobs[i].Offset++
	}
	files = append(files, dup)
	src.put(dup)
	dir := t.TempDir()
	c := openCache(t, dir)
	if st := mustSync(t, c, src); st != (SyncStats{Loaded: len(files)}) {
		t.Errorf("sync: %+v", st)
	}
	checkCache(t, c, entries(files...))
	for id, s := range fileStates(t, c) {
		if s != "complete" {
			t.Errorf("file %s %s", id.Short(), s)
		}
	}
	checkNoTemp(t, dir)
}

// checkNoTemp fails if a temporary file of the bulk load or of clear is
// left in dir.
func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), bulkRunPrefix) || strings.HasPrefix(e.Name(), cacheFile+tempFileSuffix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestCacheBulkCrash copies the cache directory after every commit of a
// bulk load, as a crash right after that commit would leave it: the cache
// file must still be the one from before the load, and a Sync from the
// copy must complete it (removing the half-built file), also when an index
// file vanished meanwhile. The load runs into an empty cache, and into one
// holding complete and pending files.
func TestCacheBulkCrash(t *testing.T) {
	setBulk(t, 50, 40, 32)
	defer func(d time.Duration) { stalePrivateAge = d }(stalePrivateAge)
	stalePrivateAge = 0
	var files []*File
	for i := range 8 {
		files = append(files, makeFile(uint64(300+i), 5, 7)) // 35 entries each
	}
	ids := make([]chunk.ID, len(files))
	for i, f := range files {
		ids[i] = chunk.Hash(f.Encode())
	}

	for _, tt := range []struct {
		name   string
		before int // files cached before the load; the second of them pending
	}{{"empty cache", 0}, {"merge", 2}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := openCache(t, dir)
			if tt.before > 0 {
				mustSync(t, c, newSourceOf(files[:tt.before]))
				must(t, c.db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(filesBucket).Put(ids[1][:], []byte{filePending})
				}))
			}
			cached, err := os.ReadFile(c.path)
			if err != nil {
				t.Fatal(err)
			}
			type snap struct{ cache, bulk []byte }
			var snaps []snap
			setCommitHook(t, func(c *Cache) {
				name := bulkFile(t, c)
				if name == "" {
					t.Error("commit without a new cache file")
					return
				}
				live, err1 := os.ReadFile(c.path)
				b, err2 := os.ReadFile(name)
				if err := errors.Join(err1, err2); err != nil {
					t.Error(err)
				}
				snaps = append(snaps, snap{live, b})
			})
			src := newSourceOf(files)
			mustSync(t, c, src)
			setCommitHook(t, nil)
			checkCache(t, c, entries(files...))
			checkNoTemp(t, dir)
			if len(snaps) < 5 {
				t.Errorf("%d commits", len(snaps))
			}

			for i, sn := range snaps {
				if !bytes.Equal(sn.cache, cached) {
					t.Fatalf("the cache file changed before commit %d of the bulk load", i+1)
				}
				for _, vanish := range []bool{false, true} {
					dir := t.TempDir()
					must(t, os.WriteFile(filepath.Join(dir, cacheFile), sn.cache, 0o600))
					must(t, os.WriteFile(filepath.Join(dir, cacheFile+tempFileSuffix+"1234"), sn.bulk, 0o600))
					c := openCache(t, dir)
					checkNoTemp(t, dir) // removed by OpenCache
					s, live := src, files
					if vanish {
						s, live = newSourceOf(files[1:]), files[1:]
					}
					st := mustSync(t, c, s)
					if vanish && tt.before > 0 != st.Rebuilt {
						t.Errorf("commit %d: sync after the crash, a cached file vanished: %+v", i+1, st)
					}
					checkCache(t, c, entries(live...))
				}
			}
		})
	}
}

// TestCacheBulkCancel cancels a bulk load while it loads files and while
// it writes, and checks that the cache stays consistent and that the
// next Sync completes it.
func TestCacheBulkCancel(t *testing.T) {
	setBulk(t, 50, 40, 32)
	src := newMemSource()
	var files []*File
	for i := range 6 {
		f := makeFile(uint64(400+i), 5, 7)
		files = append(files, f)
		src.put(f)
	}
	want := entries(files...)

	t.Run("while loading", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		loads := 0
		src.onLoad = func(chunk.ID) {
			if loads++; loads == 4 { // 3 files (105 entries) loaded: in bulk
				cancel()
			}
		}
		defer func() { src.onLoad = nil }()
		c := openCache(t, t.TempDir())
		if _, err := c.Sync(ctx, src); !errors.Is(err, context.Canceled) {
			t.Fatalf("Sync error %v, want context.Canceled", err)
		}
		src.onLoad = nil
		checkCache(t, c, nil) // a bulk load keeps nothing it did not commit
		if st := mustSync(t, c, src); st != (SyncStats{Loaded: len(files)}) {
			t.Errorf("sync after cancel: %+v", st)
		}
		checkCache(t, c, want)
	})
	t.Run("while writing", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		commits := 0
		setCommitHook(t, func(*Cache) {
			if commits++; commits == 3 {
				cancel()
			}
		})
		dir := t.TempDir()
		c := openCache(t, dir)
		if _, err := c.Sync(ctx, src); !errors.Is(err, context.Canceled) {
			t.Fatalf("Sync error %v, want context.Canceled", err)
		}
		setCommitHook(t, nil)
		checkCache(t, c, nil)
		if states := fileStates(t, c); len(states) != 0 {
			t.Errorf("after cancel: %v, want nothing", states)
		}
		checkNoTemp(t, dir)
		if st := mustSync(t, c, src); st != (SyncStats{Loaded: len(files)}) {
			t.Errorf("sync after cancel: %+v", st)
		}
		checkCache(t, c, want)
	})
}

// TestCacheClearReplacesFile checks that a rebuild swaps in a new file
// (never reading the old one's pages) while lookups run, and leaves no
// temporary file behind.
func TestCacheClearReplacesFile(t *testing.T) {
	if !lockSupported {
		t.Skip("clear empties the buckets here")
	}
	setBulk(t, 50, 40, 32)
	defer func(n uint64, l int64) { trimLookups, largeCacheBytes = n, l }(trimLookups, largeCacheBytes)
	trimLookups, largeCacheBytes = 1, 0
	src := newMemSource()
	var files []*File
	var ids []chunk.ID
	for i := range 6 {
		f := makeFile(uint64(500+i), 5, 7)
		files = append(files, f)
		ids = append(ids, src.put(f))
	}
	dir := t.TempDir()
	c := openCache(t, dir)
	mustSync(t, c, src)
	stat := func() os.FileInfo {
		fi, err := os.Stat(filepath.Join(dir, cacheFile))
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	// Hold the old file open: once it is unlinked and closed, the file
	// system may hand its inode number to a later file (the bulk load's
	// swap after the rebuild's), and SameFile would see no change.
	old, err := os.Open(filepath.Join(dir, cacheFile))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	before, err := old.Stat()
	if err != nil {
		t.Fatal(err)
	}

	// Lookups of blobs in every file but the first, which vanishes: they
	// must succeed throughout the rebuild, before and after the swap.
	keep := entries(files[1:]...)
	var pbs []PackedBlob
	for _, pb := range keep {
		pbs = append(pbs, pb)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pb := pbs[i%len(pbs)]
				if got, ok, err := c.Lookup(pb.Type, pb.ID); err != nil || (ok && got != pb) {
					t.Errorf("Lookup during the rebuild: %+v, %v, %v", got, ok, err)
					return
				}
			}
		})
	}
	src.remove(ids[0])
	st := mustSync(t, c, src)
	close(stop)
	wg.Wait()
	if !st.Rebuilt {
		t.Errorf("sync: %+v", st)
	}
	if os.SameFile(stat(), before) {
		t.Error("the cache file was not replaced")
	}
	checkCache(t, c, keep)
	checkNoTemp(t, dir)
	must(t, c.Close())

	c = openCache(t, dir) // the new file is the shared cache
	if c.Private() {
		t.Fatal("private")
	}
	if st := mustSync(t, c, src); st.Loaded != 0 || st.Known != len(files)-1 {
		t.Errorf("sync after reopening: %+v", st)
	}
}

func TestRemoveStaleTemp(t *testing.T) {
	defer func(d time.Duration) { stalePrivateAge = d }(stalePrivateAge)
	stalePrivateAge = time.Hour
	dir := t.TempDir()
	old := time.Now().Add(-2 * time.Hour)
	mk := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, nil, 0o600))
		must(t, os.Chtimes(p, mtime, mtime))
		return p
	}
	staleRun := mk(bulkRunPrefix+"123", old)
	staleNew := mk(cacheFile+tempFileSuffix+"456", old)
	youngRun := mk(bulkRunPrefix+"789", time.Now())
	other := mk("other", old)
	openCache(t, dir)
	for p, wantGone := range map[string]bool{staleRun: true, staleNew: true, youngRun: false, other: false} {
		_, err := os.Stat(p)
		if gone := errors.Is(err, os.ErrNotExist); gone != wantGone {
			t.Errorf("%s: gone %v, want %v", filepath.Base(p), gone, wantGone)
		}
	}
}

// TestCacheTrimConcurrent trims the memory map at every lookup, put and
// entry while lookups, Each, a bulk Sync and Adds run (run with -race).
func TestCacheTrimConcurrent(t *testing.T) {
	setBulk(t, 500, 400, 300)
	defer func(n uint64, e int, l int64) { trimLookups, trimEach, largeCacheBytes = n, e, l }(trimLookups, trimEach, largeCacheBytes)
	trimLookups, trimEach, largeCacheBytes = 1, 1, 0 // and small transactions for Add
	var files []*File
	for i := range 8 {
		files = append(files, makeFile(uint64(600+i), 5, 100))
	}
	// Sync loads files[:6] into the empty cache in bulk; the Adds of the
	// others start once it runs (and wait for it: a file added first
	// would not be listed, and Sync would drop it).
	src := newSourceOf(files[:6])
	syncing := make(chan struct{})
	var once sync.Once
	src.onLoad = func(chunk.ID) { once.Do(func() { close(syncing) }) }
	c := openCache(t, t.TempDir())
	var pbs []PackedBlob
	for _, pb := range entries(files...) {
		pbs = append(pbs, pb)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := g; ctx.Err() == nil; i++ {
				pb := pbs[i%len(pbs)]
				if got, ok, err := c.Lookup(pb.Type, pb.ID); err != nil || ok && got != pb {
					t.Errorf("Lookup(%s) = %+v, %v, %v", pb.ID.Short(), got, ok, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := c.Each(func(PackedBlob) error { return nil }); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var wwg sync.WaitGroup
	wwg.Go(func() {
		if _, err := c.Sync(context.Background(), src); err != nil {
			t.Error(err)
		}
	})
	for _, f := range files[6:] {
		wwg.Go(func() {
			<-syncing
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
