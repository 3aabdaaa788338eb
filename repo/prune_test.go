package repo

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/faulty"
	"repo/backend/mem"
	"repo/chunk"
	"repo/index"
	"repo/repo/pack"
)

// writeFiles writes files (relative name → content) below a new directory
// and returns it.
func writeFiles(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	for rel, data := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// contentDigests describes every entry of sn: a file by the SHA-256 of its
// content (read and verified blob by blob), anything else by its type.
func contentDigests(t *testing.T, r *Repository, sn *Snapshot) map[string]string {
	t.Helper()
	out := map[string]string{}
	for rel, n := range snapshotPaths(t, r, sn, "/") {
		if n.Type != NodeFile {
			out[rel] = string(n.Type)
			continue
		}
		h := sha256.New()
		if err := r.WriteContent(t.Context(), n, h); err != nil {
			t.Errorf("content of %s in snapshot %s: %v", rel, sn.ID.Short(), err)
			continue
		}
		out[rel] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

// pruneFixture is a repository state worth pruning, kept as its objects so
// that each test case starts from a copy:
//
//   - snapshot A (forgotten) had 24 files of 150 KiB and two of 1.2 MiB;
//   - snapshot B keeps the even files of A, snapshot C four of them and a
//     new file; so A's packs of small files become partly used and the
//     packs of its large files and its trees unused;
//   - a pack that no index lists, as an interrupted backup leaves it.
type pruneFixture struct {
	encrypted bool
	objects   []backendObject
	kept      []chunk.ID
	digests   map[chunk.ID]map[string]string
	unrefPack chunk.ID
}

func newPruneFixture(t *testing.T, encrypted bool) *pruneFixture {
	t.Helper()
	r, be := newTestRepo(t, encrypted)
	all := map[string][]byte{}
	for i := range 24 {
		all[fmt.Sprintf("small/f%02d", i)] = randomBytes(uint64(1000+i), 150<<10+i)
	}
	for i := range 2 {
		all[fmt.Sprintf("large/g%d", i)] = randomBytes(uint64(2000+i), 1200<<10+i)
	}
	all["text/readme.txt"] = []byte(strings.Repeat("prune me not\n", 500))
	even, four := map[string][]byte{}, map[string][]byte{}
	for i := 0; i < 24; i += 2 {
		rel := fmt.Sprintf("small/f%02d", i)
		even[rel] = all[rel]
		if i < 8 {
			four[rel] = all[rel]
		}
	}
	even["text/readme.txt"] = all["text/readme.txt"]
	four["new/h"] = randomBytes(3000, 200<<10)

	snA := backup(t, r, BackupOptions{Paths: []string{writeFiles(t, all)}})
	snB := backup(t, r, BackupOptions{Paths: []string{writeFiles(t, even)}})
	snC := backup(t, r, BackupOptions{Paths: []string{writeFiles(t, four)}})
	f := &pruneFixture{encrypted: encrypted, kept: []chunk.ID{snB.ID, snC.ID}, digests: map[chunk.ID]map[string]string{}}
	for _, sn := range []*Snapshot{snB, snC} {
		f.digests[sn.ID] = contentDigests(t, r, sn)
	}
	if err := r.RemoveSnapshot(t.Context(), snA.ID); err != nil {
		t.Fatal(err)
	}
	f.unrefPack = plantPack(t, r, randomBytes(4000, 100<<10))
	f.objects = listObjects(t, be)
	return f
}

// plantPack stores a pack holding one data blob without indexing it, as a
// backup that died before writing its index file leaves it.
func plantPack(t *testing.T, r *Repository, data []byte) chunk.ID {
	t.Helper()
	w := pack.NewWriter(r.sealer, 0)
	stored, comp := r.codec.Encode(nil, data)
	w.Add(index.Blob{Type: index.DataBlob, ID: r.HashBlob(data), RawLength: uint32(len(data)), Compression: comp}, stored)
	buf, id, _ := w.Finalize()
	if err := r.be.Save(t.Context(), packHandle(id), backend.NewByteReader(buf)); err != nil {
		t.Fatal(err)
	}
	return id
}

// open copies the fixture into a new in-memory backend behind a fault
// injector and opens it (with the final check of every test repository).
func (f *pruneFixture) open(t *testing.T) (*Repository, *faulty.Backend) {
	t.Helper()
	m := mem.New()
	for _, o := range f.objects {
		if err := m.Save(context.Background(), o.h, backend.NewByteReader(o.data)); err != nil {
			t.Fatal(err)
		}
	}
	fb := faulty.New(m)
	return openTestRepo(t, fb), fb
}

// mustOpen opens a copy of the fixture, without faults.
func (f *pruneFixture) mustOpen(t *testing.T) *Repository {
	t.Helper()
	r, _ := f.open(t)
	return r
}

// verify checks what must hold after every prune, finished or not: check
// (reading all data) finds no error, and every kept snapshot has exactly
// its content. It opens the repository afresh, as the next command would
// (without another final check: it runs one itself).
func (f *pruneFixture) verify(t *testing.T, be backend.Backend) (*Repository, []Finding) {
	t.Helper()
	r := openTestRepoNoIndex(t, be)
	if _, err := r.LoadIndex(t.Context()); err != nil {
		t.Fatalf("load index: %v", err)
	}
	fs, res := checkFindings(t, r, CheckOptions{ReadData: true})
	if res.Errors > 0 {
		t.Errorf("check found %d errors: %+v", res.Errors, bySeverity(fs, Error))
	}
	sns, err := r.Snapshots(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []chunk.ID
	for _, sn := range sns {
		ids = append(ids, sn.ID)
		got := contentDigests(t, r, sn)
		want := f.digests[sn.ID]
		if want == nil {
			t.Errorf("unexpected snapshot %s", sn.ID.Short())
			continue
		}
		for rel, d := range want {
			if got[rel] != d {
				t.Errorf("snapshot %s %s: content %.12s, want %.12s", sn.ID.Short(), rel, got[rel], d)
			}
		}
		if len(got) != len(want) {
			t.Errorf("snapshot %s: %d entries, want %d", sn.ID.Short(), len(got), len(want))
		}
	}
	slices.SortFunc(ids, chunk.ID.Compare)
	want := slices.SortedFunc(slices.Values(f.kept), chunk.ID.Compare)
	if !slices.Equal(ids, want) {
		t.Errorf("snapshots %v, want %v", ids, want)
	}
	return r, fs
}

// prune runs Prune and collects its reports.
func prune(t *testing.T, r *Repository, opts PruneOptions) (PruneResult, []string, error) {
	t.Helper()
	var msgs []string
	opts.Report = func(m string) { msgs = append(msgs, m) }
	res, err := r.Prune(t.Context(), opts)
	return res, msgs, err
}

// mustPrune runs Prune, fails the test on an error, and loads the index
// again (Prune leaves the cache empty).
func mustPrune(t *testing.T, r *Repository, opts PruneOptions) (PruneResult, []string) {
	t.Helper()
	res, msgs, err := prune(t, r, opts)
	if err != nil {
		t.Fatalf("prune: %v\nreports:\n%s", err, strings.Join(msgs, "\n"))
	}
	if !opts.DryRun {
		if _, err := r.LoadIndex(t.Context()); err != nil {
			t.Fatalf("load index after prune: %v", err)
		}
	}
	return res, msgs
}

// cacheHonest checks that the index cache places no blob in a pack that
// does not exist, and returns how many blobs it knows.
func cacheHonest(t *testing.T, r *Repository) int {
	t.Helper()
	n := 0
	if err := r.cache.Each(func(pb index.PackedBlob) error {
		n++
		if _, err := r.be.Stat(t.Context(), packHandle(pb.Pack)); err != nil {
			return fmt.Errorf("%s blob %s: pack %s: %w", pb.Type, pb.ID.Short(), pb.Pack.Short(), err)
		}
		return nil
	}); err != nil {
		t.Errorf("index cache: %v", err)
	}
	return n
}

// indexedBlobs returns, from the index files on the backend, every pack
// listed and how often each blob is listed in a pack of its own.
func indexedBlobs(t *testing.T, r *Repository) (packs map[chunk.ID]int, copies map[blobKey]int) {
	t.Helper()
	packs, copies = map[chunk.ID]int{}, map[blobKey]int{}
	for name := range indexedPacks(t, r) {
		id, _ := chunk.ParseID(name)
		f, err := r.LoadIndexFile(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Packs {
			packs[p.ID]++
			for _, b := range p.Blobs {
				copies[blobKey{b.Type, b.ID}]++
			}
		}
	}
	return packs, copies
}

// assertPruned checks the state a finished prune leaves: no plan, no pack
// outside the index, no pack listed twice, unused space within limit, and
// nothing left for another prune to do.
func assertPruned(t *testing.T, r *Repository, maxUnused float64) {
	t.Helper()
	if ps, err := r.Plans(t.Context(), nil); err != nil || len(ps) != 0 {
		t.Errorf("plans left: %d (%v)", len(ps), err)
	}
	packs, _ := indexedBlobs(t, r)
	for _, name := range names(t, r.be, backend.PackFile) {
		id, _ := chunk.ParseID(name)
		if packs[id] == 0 {
			t.Errorf("pack %s is in no index", id.Short())
		}
	}
	for id, n := range packs {
		if n > 1 {
			t.Errorf("pack %s listed %d times", id.Short(), n)
		}
	}
	res, _ := mustPrune(t, r, PruneOptions{DryRun: true, MaxUnused: maxUnused})
	if res.PacksDeleted != 0 || res.PacksRepacked != 0 || res.PacksMissingDropped != 0 || res.IndexFilesAfter != res.IndexFilesBefore {
		t.Errorf("a second prune would still do something: %+v", res)
	}
	if lim := max(maxUnused, 0) * float64(res.BytesUsed); float64(res.BytesUnusedLeft) > lim {
		t.Errorf("%d unused bytes left, limit %.0f of %d used", res.BytesUnusedLeft, lim, res.BytesUsed)
	}
}

func packBytes(t *testing.T, be backend.Backend) int64 {
	t.Helper()
	var n int64
	if err := be.List(context.Background(), backend.PackFile, func(fi backend.FileInfo) error {
		n += fi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPrune: a prune after forget deletes the unused and unreferenced
// packs, repacks the partly used ones down to the limit, keeps every
// remaining snapshot byte-identical and leaves a repository check accepts.
func TestPrune(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			f := newPruneFixture(t, encrypted)
			r, be := f.open(t)
			before := packBytes(t, be)
			fs, _ := checkFindings(t, r, CheckOptions{})
			if len(bySeverity(fs, Note)) == 0 {
				t.Errorf("setup: check does not note the unreferenced pack")
			}

			if cacheHonest(t, r) == 0 {
				t.Fatal("setup: empty index cache")
			}
			res, msgs, err := prune(t, r, PruneOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// Without a reload, the cache must not place blobs in the
			// deleted packs; after one, it knows the blobs again.
			cacheHonest(t, r)
			if _, err := r.LoadIndex(t.Context()); err != nil {
				t.Fatal(err)
			}
			if cacheHonest(t, r) == 0 {
				t.Error("index cache empty after LoadIndex")
			}
			t.Logf("reports:\n%s\nresult %+v", strings.Join(msgs, "\n"), res)
			if res.Snapshots != 2 || res.PacksUnused == 0 || res.PacksRepacked == 0 || res.PacksUnreferenced != 1 {
				t.Errorf("result %+v: want 2 snapshots, unused and repacked packs, 1 unreferenced", res)
			}
			if res.PacksDeleted != res.PacksUnused+res.PacksRepacked+res.PacksUnreferenced {
				t.Errorf("deleted %d packs, want the sum of unused, repacked and unreferenced", res.PacksDeleted)
			}
			after := packBytes(t, be)
			if before-after != res.BytesFreed || res.BytesFreed <= 0 {
				t.Errorf("pack bytes %d → %d, result says %d freed", before, after, res.BytesFreed)
			}
			if res.BytesWritten == 0 || res.PacksWritten == 0 || res.BlobsRepacked == 0 {
				t.Errorf("repack wrote nothing: %+v", res)
			}
			if _, err := be.Stat(t.Context(), packHandle(f.unrefPack)); !errors.Is(err, backend.ErrNotExist) {
				t.Errorf("unreferenced pack still there: %v", err)
			}
			for _, want := range []string{"unused packs", "unreferenced packs", "repack ", "rewrite the index"} {
				if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }) {
					t.Errorf("no report mentions %q", want)
				}
			}
			if res.IndexFilesAfter != len(names(t, be, backend.IndexFile)) {
				t.Errorf("result says %d index files, the backend holds %d", res.IndexFilesAfter, len(names(t, be, backend.IndexFile)))
			}
			_, fs = f.verify(t, be)
			if len(fs) != 0 {
				t.Errorf("check after prune: %+v", fs)
			}
			assertPruned(t, r, DefaultMaxUnused)
		})
	}
}

// TestPruneMaxUnused: the limit decides how much is repacked: none with
// +Inf, everything partly used with a negative limit.
func TestPruneMaxUnused(t *testing.T) {
	f := newPruneFixture(t, true)
	t.Run("unlimited", func(t *testing.T) {
		r, be := f.open(t)
		res, _ := mustPrune(t, r, PruneOptions{MaxUnused: math.Inf(1)})
		if res.PacksRepacked != 0 || res.PacksUnused == 0 || res.BytesUnusedLeft == 0 {
			t.Errorf("unlimited: %+v; want no repack, unused packs deleted, unused space left", res)
		}
		f.verify(t, be)
		assertPruned(t, r, math.Inf(1))
	})
	t.Run("half", func(t *testing.T) {
		r, be := f.open(t)
		res, _ := mustPrune(t, r, PruneOptions{MaxUnused: 0.5})
		all, _ := mustPrune(t, f.mustOpen(t), PruneOptions{DryRun: true, MaxUnused: -1})
		if res.PacksRepacked == 0 || res.PacksRepacked >= all.PacksRepacked || res.BytesUnusedLeft == 0 {
			t.Errorf("half: repacked %d packs (%d with no limit), %d bytes unused left; want some but not all repacked", res.PacksRepacked, all.PacksRepacked, res.BytesUnusedLeft)
		}
		f.verify(t, be)
		assertPruned(t, r, 0.5)
	})
	t.Run("none", func(t *testing.T) {
		r, be := f.open(t)
		res, _ := mustPrune(t, r, PruneOptions{MaxUnused: -1})
		if res.BytesUnusedLeft != 0 || res.PacksRepacked == 0 {
			t.Errorf("none: %+v; want every partly used pack repacked", res)
		}
		f.verify(t, be)
		assertPruned(t, r, -1)
		// Every pack left holds only used blobs.
		res2, _ := mustPrune(t, r, PruneOptions{DryRun: true, MaxUnused: -1})
		if res2.BytesUnusedLeft != 0 {
			t.Errorf("after repacking everything, %d bytes unused", res2.BytesUnusedLeft)
		}
	})
}

// TestPruneDryRun changes nothing and predicts what the real run does.
func TestPruneDryRun(t *testing.T) {
	f := newPruneFixture(t, true)
	r, be := f.open(t)
	before := listObjects(t, be)
	dry, msgs := mustPrune(t, r, PruneOptions{DryRun: true})
	if !slices.EqualFunc(before, listObjects(t, be), func(a, b backendObject) bool { return a.h == b.h && string(a.data) == string(b.data) }) {
		t.Fatal("dry run changed the repository")
	}
	for _, m := range msgs {
		if !strings.HasPrefix(m, "would ") {
			t.Errorf("dry-run report %q does not start with \"would\"", m)
		}
	}
	real, _ := mustPrune(t, r, PruneOptions{})
	if dry.PacksDeleted != real.PacksDeleted || dry.PacksRepacked != real.PacksRepacked || dry.PacksUnused != real.PacksUnused ||
		dry.PacksUnreferenced != real.PacksUnreferenced || dry.BytesDeleted != real.BytesDeleted || dry.BytesRepacked != real.BytesRepacked ||
		dry.BlobsRepacked != real.BlobsRepacked || dry.BlobsUsed != real.BlobsUsed {
		t.Errorf("dry run predicted %+v, the real run did %+v", dry, real)
	}
}

// TestPruneForgotten: a dry run with Forgotten snapshots predicts what
// removing them and pruning does; without DryRun, Forgotten is refused
// before anything is touched.
func TestPruneForgotten(t *testing.T) {
	f := newPruneFixture(t, false)
	r, be := f.open(t)
	before := listObjects(t, be)
	gone := f.kept[:1]
	if _, _, err := prune(t, r, PruneOptions{Forgotten: gone}); err == nil {
		t.Fatal("prune with Forgotten and without DryRun ran")
	}
	dry, _ := mustPrune(t, r, PruneOptions{DryRun: true, Forgotten: gone})
	if !slices.EqualFunc(before, listObjects(t, be), func(a, b backendObject) bool { return a.h == b.h && string(a.data) == string(b.data) }) {
		t.Fatal("the refused prune or the dry run changed the repository")
	}
	if dry.Snapshots != len(f.kept)-1 {
		t.Errorf("dry run counted %d snapshots, want %d", dry.Snapshots, len(f.kept)-1)
	}
	if err := r.RemoveSnapshot(t.Context(), gone[0]); err != nil {
		t.Fatal(err)
	}
	real, _ := mustPrune(t, r, PruneOptions{})
	if dry.PacksDeleted != real.PacksDeleted || dry.PacksRepacked != real.PacksRepacked || dry.BytesDeleted != real.BytesDeleted ||
		dry.BlobsUsed != real.BlobsUsed || dry.BytesUsed != real.BytesUsed {
		t.Errorf("dry run with %s forgotten predicted %+v, removing it and pruning did %+v", gone[0].Short(), dry, real)
	}
	if real.PacksDeleted+real.PacksRepacked == 0 {
		t.Errorf("removing snapshot %s freed nothing: the test shows nothing", gone[0].Short())
	}
}

// refusingCleaner is a backend whose RemoveTemp always fails, like an S3
// server that refuses to list incomplete uploads.
type refusingCleaner struct{ backend.Backend }

func (refusingCleaner) RemoveTemp(context.Context, time.Duration) (int, int64, error) {
	return 0, 0, errors.New("listing refused")
}

// TestPruneTempCleanupFails: leftovers that cannot be removed are reported
// and do not stop the prune.
func TestPruneTempCleanupFails(t *testing.T) {
	f := newPruneFixture(t, false)
	_, fb := f.open(t)
	r := openTestRepoNoIndex(t, refusingCleaner{fb})
	res, msgs, err := prune(t, r, PruneOptions{})
	if err != nil {
		t.Fatalf("prune failed: %v", err)
	}
	if !slices.ContainsFunc(msgs, func(m string) bool {
		return strings.HasPrefix(m, "could not remove leftover temporary files") && strings.Contains(m, "listing refused")
	}) {
		t.Errorf("no report of the failed cleanup in:\n%s", strings.Join(msgs, "\n"))
	}
	if res.PacksDeleted+res.PacksRepacked == 0 {
		t.Errorf("prune did nothing (%+v): it should have gone on after the cleanup failed", res)
	}
}

// TestPruneDuplicates: blobs stored in two packs are kept in one. When an
// interrupted prune copied the used blobs of a partly used pack into a new
// pack, the next prune keeps the new (fully used) copy and deletes the old
// pack instead of repacking it again.
func TestPruneDuplicates(t *testing.T) {
	r, be := newTestRepo(t, true)
	files := map[string][]byte{}
	for i := range 12 {
		files[fmt.Sprintf("f%02d", i)] = randomBytes(uint64(500+i), 200<<10)
	}
	half := map[string][]byte{}
	for i := 0; i < 12; i += 2 {
		half[fmt.Sprintf("f%02d", i)] = files[fmt.Sprintf("f%02d", i)]
	}
	snAll := backup(t, r, BackupOptions{Paths: []string{writeFiles(t, files)}})
	snHalf := backup(t, r, BackupOptions{Paths: []string{writeFiles(t, half)}})
	want := contentDigests(t, r, snHalf)
	if err := r.RemoveSnapshot(t.Context(), snAll.ID); err != nil {
		t.Fatal(err)
	}
	// Copy the data blobs snHalf uses into new packs, as a repack that
	// stopped before removing anything leaves them.
	packsBefore, _ := indexedBlobs(t, r)
	s := r.NewSaver(t.Context())
	dups := 0
	for _, n := range snapshotPaths(t, r, snHalf, "/") {
		for _, id := range n.Content {
			data, err := r.LoadBlob(t.Context(), index.DataBlob, id, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, stored, err := s.SaveBlobAgain(index.DataBlob, data); err != nil {
				t.Fatal(err)
			} else if stored {
				dups++
			}
		}
	}
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	packsDup, copies := indexedBlobs(t, r)
	var copyPacks []chunk.ID
	for id := range packsDup {
		if packsBefore[id] == 0 {
			copyPacks = append(copyPacks, id)
		}
	}
	if dups == 0 || len(copyPacks) == 0 {
		t.Fatalf("setup: %d duplicates in %d packs", dups, len(copyPacks))
	}

	// Which copy an index read meets first must not matter: list the
	// index files in both orders.
	objects := listObjects(t, be)
	for _, desc := range []bool{false, true} {
		t.Run(fmt.Sprintf("descending=%v", desc), func(t *testing.T) {
			m := mem.New()
			for _, o := range objects {
				if err := m.Save(t.Context(), o.h, backend.NewByteReader(o.data)); err != nil {
					t.Fatal(err)
				}
			}
			r := openTestRepo(t, &orderedList{Backend: m, desc: desc})
			res, msgs := mustPrune(t, r, PruneOptions{MaxUnused: -1})
			t.Logf("reports:\n%s\nresult %+v", strings.Join(msgs, "\n"), res)
			if res.DuplicateBlobs != dups {
				t.Errorf("%d duplicate blobs found, want %d", res.DuplicateBlobs, dups)
			}
			if res.PacksRepacked != 0 {
				t.Errorf("repacked %d packs; the copies make every old data pack unused", res.PacksRepacked)
			}
			packsAfter, copiesAfter := indexedBlobs(t, r)
			for _, id := range copyPacks {
				if packsAfter[id] != 1 {
					t.Errorf("new pack %s (fully used) was not kept", id.Short())
				}
			}
			for k, n := range copiesAfter {
				if n > 1 {
					t.Errorf("%s blob %s still listed %d times (was %d)", k.t, k.id.Short(), n, copies[k])
				}
			}
			sns, err := r.Snapshots(t.Context(), nil)
			if err != nil || len(sns) != 1 {
				t.Fatalf("snapshots: %d, %v", len(sns), err)
			}
			got := contentDigests(t, r, sns[0])
			for rel, d := range want {
				if got[rel] != d {
					t.Errorf("%s: content changed", rel)
				}
			}
			assertPruned(t, r, -1)
		})
	}
}

// orderedList lists objects sorted by name, ascending or descending, where
// the mem backend lists them in no particular order.
type orderedList struct {
	backend.Backend
	desc bool
}

func (b *orderedList) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	var infos []backend.FileInfo
	if err := b.Backend.List(ctx, t, func(fi backend.FileInfo) error {
		infos = append(infos, fi)
		return nil
	}); err != nil {
		return err
	}
	slices.SortFunc(infos, func(a, b backend.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	if b.desc {
		slices.Reverse(infos)
	}
	for _, fi := range infos {
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// TestPruneRefuses: with a used blob missing or a snapshot unreadable,
// prune refuses, names an example and changes nothing (dry run or not).
func TestPruneRefuses(t *testing.T) {
	f := newPruneFixture(t, true)
	// A data pack and a tree pack that the kept snapshots use.
	usedPack := func(t *testing.T, r *Repository, typ index.BlobType) chunk.ID {
		t.Helper()
		sn, err := r.LoadSnapshot(t.Context(), f.kept[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range snapshotPaths(t, r, sn, "/") {
			id := sn.Tree
			if typ == index.DataBlob {
				if len(n.Content) == 0 {
					continue
				}
				id = n.Content[0]
			}
			pb, ok, err := r.LookupBlob(typ, id)
			if err != nil || !ok {
				t.Fatalf("lookup %s: %v %v", id.Short(), ok, err)
			}
			return pb.Pack
		}
		t.Fatal("no used pack found")
		return chunk.ID{}
	}
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, r *Repository, be backend.Backend)
		want   string
	}{
		{"data pack missing", func(t *testing.T, r *Repository, be backend.Backend) {
			removeObject(t, be, packHandle(usedPack(t, r, index.DataBlob)))
		}, "blobs used by snapshots are missing or unreadable (e.g. data blob "},
		{"tree pack missing", func(t *testing.T, r *Repository, be backend.Backend) {
			removeObject(t, be, packHandle(usedPack(t, r, index.TreeBlob)))
		}, "blobs used by snapshots are missing or unreadable (e.g. tree "},
		{"snapshot unreadable", func(t *testing.T, r *Repository, be backend.Backend) {
			rewrite(t, be, snapshotHandle(f.kept[1]), flipByte(-1))
		}, "snapshots cannot be read"},
		{"index file unreadable", func(t *testing.T, r *Repository, be backend.Backend) {
			rewrite(t, be, backend.Handle{Type: backend.IndexFile, Name: names(t, be, backend.IndexFile)[0]}, flipByte(-1))
		}, "index"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, be := f.open(t)
			markDamaged(r)
			tt.damage(t, r, be)
			before := listObjects(t, be)
			for _, dry := range []bool{true, false} {
				r2 := openTestRepoNoIndex(t, be)
				_, _, err := prune(t, r2, PruneOptions{DryRun: dry})
				var refused *PruneRefusedError
				if !errors.As(err, &refused) {
					t.Fatalf("dry run %v: got %v, want a PruneRefusedError", dry, err)
				}
				if !strings.Contains(err.Error(), tt.want) || !strings.HasSuffix(err.Error(), "; run 'repo check --repair' first") {
					t.Errorf("error %q: want it to contain %q and end with the advice", err, tt.want)
				}
				if !slices.EqualFunc(before, listObjects(t, be), func(a, b backendObject) bool { return a.h == b.h && string(a.data) == string(b.data) }) {
					t.Fatalf("dry run %v: the refused prune changed the repository", dry)
				}
			}
		})
	}
}

// openTestRepoNoIndex opens the repository on be without loading the index
// (which fails on a damaged index file) and without a final check.
func openTestRepoNoIndex(t *testing.T, be backend.Backend) *Repository {
	t.Helper()
	r, err := Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestPruneInterrupted makes prune fail at every backend call of one kind
// in turn (each save of an index file, a pack or the plan, each removal,
// each pack read; failing outright or after the call took effect) and
// checks that the repository is consistent right after (check finds no
// error, every snapshot has its content) and that running prune again
// finishes the job, saying it continues the interrupted run.
func TestPruneInterrupted(t *testing.T) {
	faults := []faulty.Fault{
		{Op: faulty.Save, Type: backend.PlanFile},
		{Op: faulty.Save, Type: backend.IndexFile},
		{Op: faulty.Save, Type: backend.IndexFile, Mode: faulty.FailAfter},
		{Op: faulty.Save, Type: backend.PackFile},
		{Op: faulty.Save, Type: backend.PackFile, Mode: faulty.FailAfter},
		{Op: faulty.Remove},
		{Op: faulty.Remove, Mode: faulty.FailAfter},
		{Op: faulty.Load, Type: backend.PackFile},
	}
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			f := newPruneFixture(t, encrypted)
			for _, fault := range faults {
				// Unencrypted, identical content gives identical names
				// (a re-run may write a pack or index file that exists):
				// the saves and removals matter, the rest is as above.
				if !encrypted && (fault.Type == backend.PlanFile || fault.Op == faulty.Load) {
					continue
				}
				name := fault.Op.String()
				if fault.Type != 0 {
					name += "-" + fault.Type.String()
				}
				if fault.Mode == faulty.FailAfter {
					name += "-after"
				}
				t.Run(name, func(t *testing.T) {
					n := f.countCalls(t, fault)
					if n == 0 {
						t.Fatal("a clean prune makes no such call")
					}
					for skip := range n {
						interruptAt(t, f, fault, skip)
					}
					t.Logf("prune interrupted at each of %d calls", n)
				})
			}
		})
	}
}

// interruptPrune is how TestPruneInterrupted runs the prune it interrupts:
// with small index files, so that the new index is several files and a
// crash can fall between them.
var interruptPrune = PruneOptions{indexFileBlobs: 8}

// countingBackend counts the calls a fault with the same Op and Type
// would match.
type countingBackend struct {
	backend.Backend
	op faulty.Op
	ft backend.FileType
	n  atomic.Int64
}

func (b *countingBackend) count(op faulty.Op, t backend.FileType) {
	if b.op&op != 0 && (b.ft == 0 || b.ft == t) {
		b.n.Add(1)
	}
}

func (b *countingBackend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	b.count(faulty.Save, h.Type)
	return b.Backend.Save(ctx, h, rd)
}

func (b *countingBackend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	b.count(faulty.Load, h.Type)
	return b.Backend.Load(ctx, h, length, offset, fn)
}

func (b *countingBackend) Remove(ctx context.Context, h backend.Handle) error {
	b.count(faulty.Remove, h.Type)
	return b.Backend.Remove(ctx, h)
}

// countCalls returns how many calls fault would match in a clean prune of
// a copy of f.
func (f *pruneFixture) countCalls(t *testing.T, fault faulty.Fault) int {
	t.Helper()
	_, fb := f.open(t)
	cb := &countingBackend{Backend: fb, op: fault.Op, ft: fault.Type}
	r := openTestRepoNoIndex(t, cb)
	mustPrune(t, r, interruptPrune)
	return int(cb.n.Load())
}

// interruptAt runs one prune of a copy of f with fault after skip matching
// calls, then checks the repository and finishes the job with a second
// prune. A fault can pass unnoticed (a save that finds its object exists
// already reports that first); prune then simply succeeds.
func interruptAt(t *testing.T, f *pruneFixture, fault faulty.Fault, skip int) {
	t.Helper()
	r, fb := f.open(t)
	fault.Skip, fault.Times = skip, 1
	fb.Inject(fault)
	_, msgs, err := prune(t, r, interruptPrune)
	fb.Reset()
	if err == nil {
		f.verify(t, fb)
		assertPruned(t, r, DefaultMaxUnused)
		return
	}
	// A failed read of a tree during the walk makes prune refuse; any
	// other fault comes back as it is.
	var refused *PruneRefusedError
	if !errors.Is(err, faulty.ErrInjected) && !(fault.Op == faulty.Load && errors.As(err, &refused)) {
		t.Errorf("skip %d: prune failed with %v, want the injected fault", skip, err)
	}
	planned := slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "rewrite the index") })
	r2, fs := f.verify(t, fb)
	plans, err := r2.Plans(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var planNotes []Finding
	for _, fd := range fs {
		if fd.Kind == "plan" {
			planNotes = append(planNotes, fd)
		}
	}
	if len(planNotes) != len(plans) {
		t.Errorf("skip %d: %d plans, check notes %d", skip, len(plans), len(planNotes))
	}
	for _, fd := range planNotes {
		if fd.Severity != Note || !strings.HasPrefix(fd.Message, "interrupted prune started ") ||
			!strings.HasSuffix(fd.Message, ": run 'repo prune' to finish it; the repository is consistent") {
			t.Errorf("skip %d: plan finding %+v", skip, fd)
		}
	}
	if !planned && len(plans) > 0 {
		t.Errorf("skip %d: a plan exists although prune failed before planning", skip)
	}
	// Every pack and index save and every removal comes after the plan:
	// a failure there leaves it (but for a lost reply to removing the
	// plan itself).
	after := fault.Op == faulty.Remove || fault.Op == faulty.Save && fault.Type != backend.PlanFile
	if after && len(plans) != 1 && !(fault.Op == faulty.Remove && fault.Mode == faulty.FailAfter) {
		t.Errorf("skip %d: %d plans after a failure past the planning", skip, len(plans))
	}

	res, msgs2 := mustPrune(t, r2, PruneOptions{})
	continuing := slices.ContainsFunc(msgs2, func(m string) bool { return strings.HasPrefix(m, "continuing an interrupted prune started ") })
	if continuing != (len(plans) > 0) || res.PlansContinued != len(plans) {
		t.Errorf("skip %d: %d plans left, re-run reports continuing %v (%d)", skip, len(plans), continuing, res.PlansContinued)
	}
	_, fs = f.verify(t, fb)
	if len(fs) != 0 {
		t.Errorf("skip %d: check after the re-run: %+v", skip, fs)
	}
	assertPruned(t, r2, DefaultMaxUnused)
}

// TestPruneDatabase: the page map blobs and pages of database images are
// used blobs; after forgetting the first of two backups of a changing
// database and repacking everything, the second restores identically.
func TestPruneDatabase(t *testing.T) {
	r, _ := newTestRepo(t, true)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
	for i := range 300 {
		exec("INSERT INTO t VALUES (?, ?)", i, randomBytes(uint64(7000+i), 1500))
	}
	sn1 := backup(t, r, BackupOptions{Databases: []string{dbPath}})
	for i := 0; i < 300; i += 3 {
		exec("UPDATE t SET v = ? WHERE id = ?", randomBytes(uint64(9000+i), 1500), i)
	}
	sn2 := backup(t, r, BackupOptions{Databases: []string{dbPath}})
	want := contentDigests(t, r, sn2)
	if err := r.RemoveSnapshot(t.Context(), sn1.ID); err != nil {
		t.Fatal(err)
	}
	res, _ := mustPrune(t, r, PruneOptions{MaxUnused: -1})
	if res.PacksRepacked == 0 && res.PacksUnused == 0 {
		t.Errorf("nothing pruned: %+v", res)
	}
	sn2, err = r.LoadSnapshot(t.Context(), sn2.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := contentDigests(t, r, sn2)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("database snapshot changed by prune:\ngot  %v\nwant %v", got, want)
	}
	assertPruned(t, r, -1)
}

// TestPlans: plans round-trip, list oldest first, skip (and report)
// unreadable ones, and are removed idempotently; check notes each leftover
// plan without counting an error.
func TestPlans(t *testing.T) {
	r, be := newTestRepo(t, true)
	ctx := t.Context()
	t1 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	newer := &Plan{Op: OpRepair, Created: t1.Add(time.Hour), Host: "h2", PID: 7, Steps: []string{"b"}}
	older := &Plan{Op: OpPrune, Created: t1, Host: "h1", PID: 42, Steps: []string{"delete 2 unused packs (1.0 KiB)"},
		RemovePacks: []chunk.ID{chunk.Hash([]byte("p"))}, RemoveIndex: []chunk.ID{chunk.Hash([]byte("i"))}}
	for _, p := range []*Plan{newer, older} {
		if err := r.SavePlan(ctx, p); err != nil {
			t.Fatal(err)
		}
		if p.ID.IsNull() {
			t.Fatal("SavePlan did not set the id")
		}
	}
	defaults := &Plan{Op: OpForget}
	if err := r.SavePlan(ctx, defaults); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if defaults.Created.IsZero() || defaults.Host != host || defaults.PID != os.Getpid() {
		t.Errorf("defaults not filled in: %+v", defaults)
	}
	if err := r.SavePlan(ctx, &Plan{}); err == nil {
		t.Error("a plan without an operation was saved")
	}
	// An unreadable object in plans/.
	bad := backend.Handle{Type: backend.PlanFile, Name: strings.Repeat("ab", 32)}
	if err := be.Save(ctx, bad, backend.NewByteReader([]byte("not a sealed plan"))); err != nil {
		t.Fatal(err)
	}

	var badIDs []chunk.ID
	plans, err := r.Plans(ctx, func(id chunk.ID, err error) { badIDs = append(badIDs, id) })
	if err != nil {
		t.Fatal(err)
	}
	if len(plans) != 3 || plans[0].ID != older.ID || plans[1].ID != newer.ID || plans[2].ID != defaults.ID {
		t.Fatalf("plans %+v: want older, newer, defaults", plans)
	}
	if got := plans[0]; got.Op != OpPrune || !got.Created.Equal(t1) || got.Host != "h1" || got.PID != 42 ||
		!slices.Equal(got.Steps, older.Steps) || !slices.Equal(got.RemovePacks, older.RemovePacks) || !slices.Equal(got.RemoveIndex, older.RemoveIndex) {
		t.Errorf("loaded %+v, saved %+v", got, older)
	}
	if len(badIDs) != 1 || badIDs[0].String() != bad.Name {
		t.Errorf("unreadable plans reported: %v", badIDs)
	}
	if _, err := r.Plans(ctx, nil); err == nil {
		t.Error("Plans without onError ignored an unreadable plan")
	}

	var reports []string
	got, err := r.InterruptedPlans(ctx, OpPrune, func(m string) { reports = append(reports, m) })
	if err != nil || len(got) != 1 || got[0].ID != older.ID {
		t.Fatalf("interrupted prunes: %v, %v", got, err)
	}
	wantMsg := fmt.Sprintf("continuing an interrupted prune started %s on h1 (plan %s)", planTime(t1), older.ID.Short())
	if len(reports) != 1 || reports[0] != wantMsg {
		t.Errorf("reports %q, want %q", reports, wantMsg)
	}

	fs, res := checkFindings(t, r, CheckOptions{})
	if res.Errors != 0 || res.Notes != 4 {
		t.Errorf("check: %d errors, %d notes; want 0 and 4: %+v", res.Errors, res.Notes, fs)
	}
	wantNote := fmt.Sprintf("interrupted prune started %s on h1: run 'repo prune' to finish it; the repository is consistent", planTime(t1))
	if !slices.ContainsFunc(fs, func(f Finding) bool {
		return f.Severity == Note && f.Kind == "plan" && f.Object == "plans/"+older.ID.String() && f.Message == wantNote
	}) {
		t.Errorf("no note %q in %+v", wantNote, fs)
	}
	if !slices.ContainsFunc(fs, func(f Finding) bool {
		return f.Object == "plans/"+newer.ID.String() && strings.Contains(f.Message, "run 'repo check --repair' to finish it")
	}) {
		t.Errorf("the repair plan's note does not name check --repair: %+v", fs)
	}

	if err := r.RemovePlans(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := r.RemovePlan(ctx, older.ID); err != nil {
		t.Errorf("removing a removed plan: %v", err)
	}
	// A prune finishes, and removes the unreadable plan too; plans of
	// other operations stay.
	mustPrune(t, r, PruneOptions{})
	left, err := r.Plans(ctx, nil)
	if err != nil || len(left) != 2 {
		t.Errorf("after prune: %d plans (%v), want the repair and forget plans", len(left), err)
	}
	if n := names(t, be, backend.PlanFile); len(n) != 2 {
		t.Errorf("plans/ holds %v", n)
	}
}

// TestPruneSupersededOrder: an index file that another one supersedes
// (left by an interrupted repair) must be removed before the file that
// supersedes it; the other order would, for a moment, bring its stale
// entries (here: a pack that is missing) back into force.
func TestPruneSupersededOrder(t *testing.T) {
	f := newPruneFixture(t, true)
	// Replace the index as an interrupted repair leaves it: one file
	// superseding all others, without a pack that then went missing.
	r0, be0 := f.open(t)
	packs, _ := indexedBlobs(t, r0)
	old := names(t, be0, backend.IndexFile)
	sup := &index.File{}
	for _, name := range old {
		id, _ := chunk.ParseID(name)
		sup.Supersedes = append(sup.Supersedes, id)
	}
	usedData := map[chunk.ID]bool{}
	for _, id := range f.kept {
		sn, err := r0.LoadSnapshot(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range snapshotPaths(t, r0, sn, "/") {
			for _, c := range n.Content {
				usedData[c] = true
			}
		}
	}
	var gone chunk.ID
	for _, name := range old {
		id, _ := chunk.ParseID(name)
		fl, err := r0.LoadIndexFile(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range fl.Packs {
			if gone.IsNull() && p.Blobs[0].Type == index.DataBlob && !slices.ContainsFunc(p.Blobs, func(b index.Blob) bool { return usedData[b.ID] }) {
				gone = p.ID // a pack only the forgotten snapshot used
				continue
			}
			sup.Packs = append(sup.Packs, p)
		}
	}
	if gone.IsNull() || packs[gone] == 0 {
		t.Fatal("setup: no data pack that only the forgotten snapshot used")
	}
	if _, err := r0.SaveUnpacked(t.Context(), backend.IndexFile, sup.Encode()); err != nil {
		t.Fatal(err)
	}
	removeObject(t, be0, packHandle(gone))
	f.objects = listObjects(t, be0)
	if _, fs := f.verify(t, be0); len(bySeverity(fs, Note)) < len(old) {
		t.Fatalf("setup: the superseded files are not noted: %+v", fs)
	}

	for skip := 0; ; skip++ {
		if skip > 60 {
			t.Fatal("prune still failing after 60 faults")
		}
		r, fb := f.open(t)
		fb.Inject(faulty.Fault{Op: faulty.Remove, Type: backend.IndexFile, Skip: skip, Times: 1})
		_, _, err := prune(t, r, PruneOptions{})
		fb.Reset()
		if err == nil {
			if skip < len(old) {
				t.Errorf("prune removed only %d index files", skip)
			}
			break
		}
		f.verify(t, fb)
		r2 := openTestRepo(t, fb)
		res, _ := mustPrune(t, r2, PruneOptions{})
		if skip == 0 && res.PacksMissingDropped != 0 {
			t.Errorf("the missing pack is in no live index, yet %d missing packs were dropped", res.PacksMissingDropped)
		}
		f.verify(t, fb)
		assertPruned(t, r2, DefaultMaxUnused)
	}
}
