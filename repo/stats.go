package repo

import (
	"context"
	"fmt"
	"path"
	"slices"

	"repo/backend"
	"repo/chunk"
	"repo/index"
)

// StatsOptions configure Stats.
type StatsOptions struct {
	// Snapshots to count; one given twice counts once.
	Snapshots []*Snapshot
	// Unreferenced also counts the indexed blobs that none of Snapshots
	// uses. When Snapshots are all the repository's snapshots, that is
	// what a prune would free.
	Unreferenced bool
	// OnError is told about each tree or page map that cannot be read
	// (obj names it: "snapshot 3fa2b1c9 /path"); what lies below it is then
	// not counted. Nil: such an error ends Stats.
	OnError func(obj string, err error)
}

// Stats describes a set of snapshots and the storage behind them. Sizes
// are in bytes. "Raw" is a blob's plaintext size, "stored" its size in its
// pack (compressed and sealed).
type Stats struct {
	Snapshots int `json:"snapshots"`
	// TotalFiles and TotalSize add up the regular files (database images
	// included) of every snapshot, a file in two snapshots twice: the
	// number and size of the files a restore of each would write.
	TotalFiles int64 `json:"total_files"`
	TotalSize  int64 `json:"total_size"`

	// DataBlobs are the distinct data blobs the snapshots reference, with
	// their plaintext (RawSize) and stored (StoredSize) sizes.
	DataBlobs  int64 `json:"data_blobs"`
	RawSize    int64 `json:"raw_size"`
	StoredSize int64 `json:"stored_size"`
	// TreeBlobs are the distinct tree blobs: directories and, among them,
	// PageMapBlobs blobs of database page maps (heads, segments, deltas).
	TreeBlobs      int64 `json:"tree_blobs"`
	PageMapBlobs   int64 `json:"page_map_blobs"`
	TreeRawSize    int64 `json:"tree_raw_size"`
	TreeStoredSize int64 `json:"tree_stored_size"`
	// Blobs is DataBlobs + TreeBlobs.
	Blobs int64 `json:"blobs"`

	// DedupRatio is TotalSize / RawSize, CompressionRatio RawSize /
	// StoredSize (so TotalSize / StoredSize is their product); zero when
	// the divisor is.
	DedupRatio       float64 `json:"dedup_ratio"`
	CompressionRatio float64 `json:"compression_ratio"`

	// Packs and IndexFiles are the objects in data/ and index/ as the
	// backend lists them, with their total sizes.
	Packs      int64 `json:"packs"`
	PacksSize  int64 `json:"packs_size"`
	IndexFiles int64 `json:"index_files"`
	IndexSize  int64 `json:"index_size"`

	// MissingBlobs are distinct blobs referenced but not in the index
	// (check says more); Errors counts what OnError was told.
	MissingBlobs int64 `json:"missing_blobs"`
	Errors       int64 `json:"errors"`

	// Unreferenced is set when StatsOptions.Unreferenced asked for it.
	Unreferenced *BlobCount `json:"-"`
}

// BlobCount is a number of blobs and their stored size.
type BlobCount struct {
	Blobs      int64 `json:"blobs"`
	StoredSize int64 `json:"stored_size"`
}

// Stats counts opts.Snapshots and the blobs they use; see Stats. It needs
// the index (LoadIndex) and only reads: it takes no lock itself.
//
// Every tree is read once, however many snapshots share it; a directory's
// totals are remembered, so a shared subtree still counts once per
// snapshot in TotalFiles and TotalSize. Memory is about 40 bytes per
// indexed blob plus 16 per indexed tree blob (no hash sets: the index is
// held as a sorted array with a bit per blob), and one page map segment.
func (r *Repository) Stats(ctx context.Context, opts StatsOptions) (*Stats, error) {
	w := &statsWalker{r: r, st: &Stats{}, onError: opts.OnError, missing: map[blobKey]bool{}}
	if err := w.loadIndex(); err != nil {
		return nil, err
	}
	seen := map[chunk.ID]bool{}
	for _, sn := range opts.Snapshots {
		if seen[sn.ID] {
			continue
		}
		seen[sn.ID] = true
		w.st.Snapshots++
		w.sn = sn
		tot, err := w.walkTree(ctx, "/", sn.Tree)
		if err != nil {
			return nil, err
		}
		w.st.TotalFiles += tot.files
		w.st.TotalSize += tot.size
	}
	st := w.st
	st.Blobs = st.DataBlobs + st.TreeBlobs
	if st.RawSize > 0 {
		st.DedupRatio = float64(st.TotalSize) / float64(st.RawSize)
	}
	if st.StoredSize > 0 {
		st.CompressionRatio = float64(st.RawSize) / float64(st.StoredSize)
	}
	if opts.Unreferenced {
		st.Unreferenced = &BlobCount{}
		for _, t := range []*statsTable{&w.data, &w.tree} {
			for i := range t.e {
				if !t.isUsed(i) {
					st.Unreferenced.Blobs++
					st.Unreferenced.StoredSize += int64(t.e[i].stored)
				}
			}
		}
	}
	for _, c := range []struct {
		t     backend.FileType
		n, sz *int64
	}{{backend.PackFile, &st.Packs, &st.PacksSize}, {backend.IndexFile, &st.IndexFiles, &st.IndexSize}} {
		if err := r.be.List(ctx, c.t, func(fi backend.FileInfo) error {
			*c.n++
			*c.sz += fi.Size
			return nil
		}); err != nil {
			return nil, fmt.Errorf("list %v: %w", c.t, err)
		}
	}
	return st, nil
}

// statsEntry is one indexed blob: 40 bytes.
type statsEntry struct {
	id          chunk.ID
	raw, stored uint32
}

// statsTable holds the indexed blobs of one type, sorted by id, and a bit
// per blob for "referenced".
type statsTable struct {
	e    []statsEntry
	used []uint64
}

// find returns the position of id, or -1.
func (t *statsTable) find(id chunk.ID) int {
	i, ok := slices.BinarySearchFunc(t.e, id, func(e statsEntry, id chunk.ID) int { return e.id.Compare(id) })
	if !ok {
		return -1
	}
	return i
}

// mark sets blob i's bit and reports whether it was clear.
func (t *statsTable) mark(i int) bool {
	w, b := i/64, uint64(1)<<(i%64)
	if t.used[w]&b != 0 {
		return false
	}
	t.used[w] |= b
	return true
}

func (t *statsTable) isUsed(i int) bool { return t.used[i/64]&(uint64(1)<<(i%64)) != 0 }

// treeTotal is what a directory and everything below it holds.
type treeTotal struct{ files, size int64 }

type statsWalker struct {
	r          *Repository
	st         *Stats
	onError    func(obj string, err error)
	data, tree statsTable
	// totals of the tree blobs walked, by position in tree.
	totals []treeTotal
	// missing are the referenced blobs the index lacks (few, normally
	// none), so that each counts once.
	missing map[blobKey]bool
	// sn is the snapshot being walked, for error messages.
	sn *Snapshot
}

// loadIndex copies the index into the two sorted tables.
func (w *statsWalker) loadIndex() error {
	err := w.r.cache.Each(func(pb index.PackedBlob) error {
		e := statsEntry{id: pb.ID, raw: pb.RawLength, stored: pb.Length}
		switch pb.Type {
		case index.DataBlob:
			w.data.e = append(w.data.e, e)
		case index.TreeBlob:
			w.tree.e = append(w.tree.e, e)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	for _, t := range []*statsTable{&w.data, &w.tree} {
		cmp := func(a, b statsEntry) int { return a.id.Compare(b.id) }
		if !slices.IsSortedFunc(t.e, cmp) {
			slices.SortFunc(t.e, cmp)
		}
		t.e = slices.Clip(t.e)
		t.used = make([]uint64, (len(t.e)+63)/64)
	}
	w.totals = make([]treeTotal, len(w.tree.e))
	return nil
}

// fail reports a part that could not be read, or returns the error when
// there is no OnError (or the context is done).
func (w *statsWalker) fail(ctx context.Context, p string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	obj := fmt.Sprintf("snapshot %s %s", w.sn.ID.Short(), p)
	if w.onError == nil {
		return fmt.Errorf("%s: %w", obj, err)
	}
	w.st.Errors++
	w.onError(obj, err)
	return nil
}

// notIndexed counts a referenced blob the index lacks.
func (w *statsWalker) notIndexed(t index.BlobType, id chunk.ID) {
	if k := (blobKey{t, id}); !w.missing[k] {
		w.missing[k] = true
		w.st.MissingBlobs++
	}
}

// useData counts data blob id, once.
func (w *statsWalker) useData(id chunk.ID) {
	i := w.data.find(id)
	if i < 0 {
		w.notIndexed(index.DataBlob, id)
		return
	}
	if w.data.mark(i) {
		w.st.DataBlobs++
		w.st.RawSize += int64(w.data.e[i].raw)
		w.st.StoredSize += int64(w.data.e[i].stored)
	}
}

// useTree counts tree blob id (a directory or a page map blob) and returns
// its position, and whether this is the first time; -1 when it is not
// indexed.
func (w *statsWalker) useTree(id chunk.ID, pageMap bool) (int, bool) {
	i := w.tree.find(id)
	if i < 0 {
		w.notIndexed(index.TreeBlob, id)
		return -1, false
	}
	if !w.tree.mark(i) {
		return i, false
	}
	w.st.TreeBlobs++
	w.st.TreeRawSize += int64(w.tree.e[i].raw)
	w.st.TreeStoredSize += int64(w.tree.e[i].stored)
	if pageMap {
		w.st.PageMapBlobs++
	}
	return i, true
}

// walkTree counts directory id (at path p) and everything below it, and
// returns its totals; a directory seen before is not read again.
func (w *statsWalker) walkTree(ctx context.Context, p string, id chunk.ID) (treeTotal, error) {
	if err := ctx.Err(); err != nil {
		return treeTotal{}, err
	}
	i, first := w.useTree(id, false)
	if i < 0 {
		return treeTotal{}, w.fail(ctx, p, &BlobError{Type: index.TreeBlob, ID: id, Err: ErrBlobNotIndexed})
	}
	if !first {
		// Content addressing rules out cycles, so a tree seen before
		// has been walked to the end: its totals are complete.
		return w.totals[i], nil
	}
	t, err := w.r.LoadTree(ctx, id)
	if err != nil {
		return treeTotal{}, w.fail(ctx, p, err)
	}
	var tot treeTotal
	for k := range t.Nodes {
		n := &t.Nodes[k]
		np := path.Join(p, n.Name)
		switch n.Type {
		case NodeDir:
			sub, err := w.walkTree(ctx, np, *n.Subtree)
			if err != nil {
				return treeTotal{}, err
			}
			tot.files += sub.files
			tot.size += sub.size
		case NodeFile:
			tot.files++
			tot.size += int64(n.Size)
			if n.Database != nil {
				if err := w.database(ctx, np, n); err != nil {
					return treeTotal{}, err
				}
				continue
			}
			for _, b := range n.Content {
				w.useData(b)
			}
		}
	}
	w.totals[i] = tot
	return tot, nil
}

// database counts the page map of database node n (at path p) and its
// pages, resolving the map one segment at a time. A map seen before has
// the same pages, counted already.
func (w *statsWalker) database(ctx context.Context, p string, n *Node) error {
	head := n.Database.PageMap
	i, first := w.useTree(head, true)
	if i < 0 {
		return w.fail(ctx, p, fmt.Errorf("page map: %w", &BlobError{Type: index.TreeBlob, ID: head, Err: ErrBlobNotIndexed}))
	}
	if !first {
		return nil
	}
	m, err := w.r.LoadPageMap(ctx, head)
	if err != nil {
		return w.fail(ctx, p, err)
	}
	if m.PageSize != n.Database.PageSize || m.PageCount != n.Database.PageCount {
		return w.fail(ctx, p, fmt.Errorf("page map %s: %d pages of %d bytes, but the node says %d of %d",
			head.Short(), m.PageCount, m.PageSize, n.Database.PageCount, n.Database.PageSize))
	}
	for _, id := range m.MetaBlobs() {
		w.useTree(id, true)
	}
	if err := w.r.PageIDs(ctx, m, func(_ uint32, ids []chunk.ID) error {
		for _, id := range ids {
			w.useData(id)
		}
		return nil
	}); err != nil {
		return w.fail(ctx, p, err)
	}
	return nil
}
