package repo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"repo/backend"
	"repo/chunk"
	"repo/index"
)

// statsDBPages and statsDBDistinct shape the database image of
// saveDatabaseSnapshot: more pages than a segment holds (two segments),
// with only a few distinct page contents.
const (
	statsDBPages    = SegmentPages + 904
	statsDBDistinct = 100
	statsDBPageSize = 512
)

// saveDatabaseSnapshot stores a snapshot whose root holds two file nodes,
// app.db and copy.db, with the same database image (so the same page map):
// statsDBPages pages of statsDBPageSize bytes, page i holding content
// i % statsDBDistinct.
func saveDatabaseSnapshot(t *testing.T, r *Repository) *Snapshot {
	t.Helper()
	ctx := t.Context()
	s := r.NewSaver(ctx)
	w, err := newPageMapWriter(ctx, r, func(b []byte) (chunk.ID, error) {
		id, _, err := s.SaveBlob(index.TreeBlob, b)
		return id, err
	}, statsDBPageSize, statsDBPages, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range statsDBPages {
		id, _, err := s.SaveBlob(index.DataBlob, randomBytes(uint64(1000+i%statsDBDistinct), statsDBPageSize))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.add(id); err != nil {
			t.Fatal(err)
		}
	}
	head, err := w.finish()
	if err != nil {
		t.Fatal(err)
	}
	tm := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	node := func(name string) Node {
		return Node{Name: name, Type: NodeFile, Mode: 0o644, ModTime: tm, AccessTime: tm, ChangeTime: tm,
			Size: statsDBPages * statsDBPageSize,
			Database: &DatabaseInfo{Kind: DatabaseSQLite, PageSize: statsDBPageSize, PageCount: statsDBPages,
				JournalMode: "wal", PageMap: head}}
	}
	root, err := s.SaveTree(&Tree{Nodes: []Node{node("app.db"), node("copy.db")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	sn := &Snapshot{Time: tm, Tree: root, Paths: []string{"/app.db", "/copy.db"}, Hostname: "testhost", Source: SourceInfo{Kind: SourceSQLite}}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// referencedBlobs walks sns the plain way, with sets, and returns the data
// and tree blobs they use (page map blobs among the trees, and also in
// pageMaps).
func referencedBlobs(t *testing.T, r *Repository, sns ...*Snapshot) (data, trees, pageMaps map[chunk.ID]bool) {
	t.Helper()
	ctx := t.Context()
	data, trees, pageMaps = map[chunk.ID]bool{}, map[chunk.ID]bool{}, map[chunk.ID]bool{}
	var walk func(id chunk.ID)
	walk = func(id chunk.ID) {
		if trees[id] {
			return
		}
		trees[id] = true
		tr, err := r.LoadTree(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tr.Nodes {
			n := &tr.Nodes[i]
			switch {
			case n.Type == NodeDir:
				walk(*n.Subtree)
			case n.Database != nil:
				m, err := r.LoadPageMap(ctx, n.Database.PageMap)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range append(m.MetaBlobs(), n.Database.PageMap) {
					trees[id], pageMaps[id] = true, true
				}
				fallthrough
			case n.Type == NodeFile:
				ids, err := r.FileContent(ctx, n)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range ids {
					data[id] = true
				}
			}
		}
	}
	for _, sn := range sns {
		walk(sn.Tree)
	}
	return data, trees, pageMaps
}

// blobSizes adds up the raw and stored sizes of blobs of type tp.
func blobSizes(t *testing.T, r *Repository, tp index.BlobType, ids map[chunk.ID]bool) (raw, stored int64) {
	t.Helper()
	for id := range ids {
		pb, ok, err := r.LookupBlob(tp, id)
		if err != nil || !ok {
			t.Fatalf("look up %v blob %s: %v, %v", tp, id.Short(), ok, err)
		}
		raw += int64(pb.RawLength)
		stored += int64(pb.Length)
	}
	return raw, stored
}

// listed counts the objects of type ft on be and adds up their sizes.
func listed(t *testing.T, be backend.Backend, ft backend.FileType) (n, size int64) {
	t.Helper()
	if err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
		n++
		size += fi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n, size
}

func TestStats(t *testing.T) {
	r, be := newTestRepo(t, true)
	ctx := t.Context()
	src := t.TempDir()
	write := func(name string, b []byte) {
		t.Helper()
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Every file is shorter than the smallest chunk: one blob each.
	random := randomBytes(1, 100<<10)
	text := bytes.Repeat([]byte("the same line of text, again and again\n"), 5000)
	extra := randomBytes(2, 50<<10)
	write("a.bin", random)
	write("c.txt", text)
	write("sub/empty", nil)
	sn1 := backup(t, r, BackupOptions{Paths: []string{src}})
	write("sub/b.bin", extra)
	sn2 := backup(t, r, BackupOptions{Paths: []string{src}})
	sn3 := saveDatabaseSnapshot(t, r)

	all := []*Snapshot{sn1, sn2, sn3}
	st, err := r.Stats(ctx, StatsOptions{Snapshots: all, Unreferenced: true})
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	dbSize := int64(statsDBPages * statsDBPageSize)
	fileBytes := int64(len(random) + len(text))
	data, trees, pageMaps := referencedBlobs(t, r, all...)
	rawData, storedData := blobSizes(t, r, index.DataBlob, data)
	rawTrees, storedTrees := blobSizes(t, r, index.TreeBlob, trees)
	packs, packsSize := listed(t, be, backend.PackFile)
	indexFiles, indexSize := listed(t, be, backend.IndexFile)
	want := Stats{
		Snapshots:  3,
		TotalFiles: 3 + 4 + 2,
		TotalSize:  fileBytes + fileBytes + int64(len(extra)) + 2*dbSize,
		// a.bin, c.txt, b.bin and the distinct pages.
		DataBlobs:      3 + statsDBDistinct,
		RawSize:        fileBytes + int64(len(extra)) + statsDBDistinct*statsDBPageSize,
		StoredSize:     storedData,
		TreeBlobs:      int64(len(trees)),
		PageMapBlobs:   3, // head and two segments
		TreeRawSize:    rawTrees,
		TreeStoredSize: storedTrees,
		Blobs:          3 + statsDBDistinct + int64(len(trees)),
		Packs:          packs,
		PacksSize:      packsSize,
		IndexFiles:     indexFiles,
		IndexSize:      indexSize,
	}
	want.DedupRatio = float64(want.TotalSize) / float64(want.RawSize)
	want.CompressionRatio = float64(want.RawSize) / float64(want.StoredSize)
	if len(data) != int(want.DataBlobs) || rawData != want.RawSize || len(pageMaps) != int(want.PageMapBlobs) {
		t.Fatalf("test setup: %d data blobs of %d bytes, %d page map blobs; want %d, %d, %d",
			len(data), rawData, len(pageMaps), want.DataBlobs, want.RawSize, want.PageMapBlobs)
	}
	t.Logf("stats: %+v", *st)
	if st.Unreferenced == nil || *st.Unreferenced != (BlobCount{}) {
		t.Errorf("unreferenced %+v, want zero", st.Unreferenced)
	}
	st.Unreferenced = nil
	if *st != want {
		t.Errorf("stats of all snapshots:\n got %+v\nwant %+v", *st, want)
	}
	// The compressible file makes stored data smaller than raw data; the
	// database's repeated pages and the shared files make the restore size
	// larger.
	if st.CompressionRatio <= 1 || st.DedupRatio <= 1 {
		t.Errorf("compression ratio %.3f, dedup ratio %.3f; want both above 1", st.CompressionRatio, st.DedupRatio)
	}

	// One snapshot, given twice; no unreferenced count asked for.
	st1, err := r.Stats(ctx, StatsOptions{Snapshots: []*Snapshot{sn1, sn1}})
	if err != nil {
		t.Fatal(err)
	}
	data1, trees1, _ := referencedBlobs(t, r, sn1)
	raw1, stored1 := blobSizes(t, r, index.DataBlob, data1)
	if st1.Snapshots != 1 || st1.TotalFiles != 3 || st1.TotalSize != fileBytes || st1.DataBlobs != 2 ||
		st1.RawSize != raw1 || st1.StoredSize != stored1 || st1.TreeBlobs != int64(len(trees1)) || st1.PageMapBlobs != 0 || st1.Unreferenced != nil {
		t.Errorf("stats of %s: %+v; want 1 snapshot, 3 files of %d bytes, 2 data blobs of %d (%d stored), %d trees",
			sn1.ID.Short(), *st1, fileBytes, raw1, stored1, len(trees1))
	}

	// Without the first snapshot, its trees are unreferenced, and so is
	// a blob nothing refers to.
	orphan := saveBlobs(t, r, index.DataBlob, randomBytes(3, 10<<10))[0]
	st23, err := r.Stats(ctx, StatsOptions{Snapshots: []*Snapshot{sn2, sn3}, Unreferenced: true})
	if err != nil {
		t.Fatal(err)
	}
	_, trees23, _ := referencedBlobs(t, r, sn2, sn3)
	var wantUnref BlobCount
	for id := range trees {
		if !trees23[id] {
			_, s := blobSizes(t, r, index.TreeBlob, map[chunk.ID]bool{id: true})
			wantUnref.Blobs++
			wantUnref.StoredSize += s
		}
	}
	_, s := blobSizes(t, r, index.DataBlob, map[chunk.ID]bool{orphan: true})
	wantUnref.Blobs++
	wantUnref.StoredSize += s
	if wantUnref.Blobs < 3 {
		t.Fatalf("test setup: only %d blobs unreferenced without %s", wantUnref.Blobs, sn1.ID.Short())
	}
	if st23.Unreferenced == nil || *st23.Unreferenced != wantUnref {
		t.Errorf("unreferenced without %s: %+v, want %+v", sn1.ID.Short(), st23.Unreferenced, wantUnref)
	}
	if st23.DataBlobs != want.DataBlobs || st23.TotalFiles != 4+2 {
		t.Errorf("stats without %s: %d data blobs, %d files; want %d, 6", sn1.ID.Short(), st23.DataBlobs, st23.TotalFiles, want.DataBlobs)
	}

	// No snapshots: nothing referenced, no ratio.
	st0, err := r.Stats(ctx, StatsOptions{Unreferenced: true})
	if err != nil {
		t.Fatal(err)
	}
	if st0.Blobs != 0 || st0.DedupRatio != 0 || st0.CompressionRatio != 0 || st0.Unreferenced.Blobs != want.Blobs+1 {
		t.Errorf("stats of no snapshots: %+v, unreferenced %+v; want nothing referenced and %d unreferenced", *st0, st0.Unreferenced, want.Blobs+1)
	}
}

// A tree that cannot be read is reported and the rest counted; without
// OnError it ends Stats.
func TestStatsDamaged(t *testing.T) {
	r, be := newTestRepo(t, false)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), randomBytes(4, 10<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	sn := backup(t, r, BackupOptions{Paths: []string{src}})
	sdb := saveDatabaseSnapshot(t, r)
	pb, ok, err := r.LookupBlob(index.TreeBlob, sn.Tree)
	if err != nil || !ok {
		t.Fatalf("look up root tree: %v, %v", ok, err)
	}
	markDamaged(r)
	removeObject(t, be, packHandle(pb.Pack))

	var reported []string
	st, err := r.Stats(t.Context(), StatsOptions{Snapshots: []*Snapshot{sn, sdb}, OnError: func(obj string, err error) {
		reported = append(reported, obj+": "+err.Error())
	}})
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	if len(reported) == 0 || st.Errors != int64(len(reported)) {
		t.Errorf("stats errors %d, reported %q", st.Errors, reported)
	}
	if st.Snapshots != 2 {
		t.Errorf("stats counted %d snapshots, want 2", st.Snapshots)
	}
	if _, err := r.Stats(t.Context(), StatsOptions{Snapshots: []*Snapshot{sn}}); err == nil {
		t.Error("stats without OnError: no error for the lost tree")
	}
}
