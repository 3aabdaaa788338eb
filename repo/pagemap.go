package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"repo/chunk"
	"repo/index"
)

// A database image is stored one page per data blob (pages change in
// place, so the page is the unit that dedups; DESIGN.md, "Database
// chunking"). The list of page ids, the page map, would cost 32 bytes per
// page in every snapshot, however few pages changed. So it is stored so
// that a snapshot adds metadata in proportion to what changed
// (docs/format.md, "Page maps"):
//
//   - Base segments: blobs with the ids of SegmentPages consecutive pages.
//     Each segment records the generation it was written in (Folded).
//   - Deltas: blobs with the (page number, id) pairs that changed in one
//     generation, one per snapshot in which pages changed.
//   - The head: page size and count, this map's generation, the segments
//     with their generations, and the deltas still needed.
//
// Page p of segment s is the base's id, overridden by the deltas newer
// than the segment's generation, in generation order. Each snapshot writes
// a delta of its changes against the parent's map and rewrites (folds) the
// FoldSegments segments folded longest ago with their current ids; a delta
// is dropped from the head once every segment was folded after it. So the
// chain a reader applies is at most MaxChain deltas long, and a snapshot
// adds its delta, at most FoldSegments(n) segments, and the head.

// Page map constants; part of the format only through the values recorded
// in each head (a reader uses the head's SegmentPages).
const (
	// SegmentPages is the number of pages per base segment: 128 KiB of ids.
	SegmentPages = 4096
	// MaxChain bounds the deltas a reader applies.
	MaxChain = 128
)

// FoldSegments is how many of n segments a snapshot rewrites, so that
// every segment is rewritten within MaxChain snapshots.
func FoldSegments(n int) int { return max(2, (n+MaxChain-1)/MaxChain) }

var (
	pageMapMagic = []byte("RPGMAP2\n")
	deltaMagic   = []byte("RPGDLT1\n")
)

// idSize is the length of a blob id in a page map.
const idSize = len(chunk.ID{})

// maxPageCount bounds a page map: SQLite's own limit is 2^32-2 pages.
const maxPageCount = 1<<32 - 2

// PageMap is a decoded head blob.
type PageMap struct {
	PageSize     int
	PageCount    uint32
	SegmentPages uint32
	// Gen is this map's generation: the parent's plus one, 1 for a map
	// written without a parent.
	Gen uint32
	// Segments are the base segment blobs, and Folded the generation whose
	// ids each holds.
	Segments []chunk.ID
	Folded   []uint32
	// Deltas still needed by some segment, oldest first.
	Deltas []DeltaRef
}

// DeltaRef names a delta blob and its generation.
type DeltaRef struct {
	Gen uint32
	ID  chunk.ID
}

// pageMapHeadSize is the fixed part of a head blob.
const pageMapHeadSize = 8 + 6*4

func (m *PageMap) numSegments() int {
	return int((uint64(m.PageCount) + uint64(m.SegmentPages) - 1) / uint64(m.SegmentPages))
}

// segmentRange is the first page and the page count of segment i.
func (m *PageMap) segmentRange(i int) (first uint32, n int) {
	start := uint64(i) * uint64(m.SegmentPages)
	return uint32(start + 1), int(min(uint64(m.SegmentPages), uint64(m.PageCount)-start))
}

// encodePageMap serializes the head.
func encodePageMap(m *PageMap) []byte {
	b := make([]byte, 0, pageMapHeadSize+len(m.Segments)*(idSize+4)+len(m.Deltas)*(idSize+4))
	b = append(b, pageMapMagic...)
	for _, v := range []uint32{uint32(m.PageSize), m.PageCount, m.SegmentPages, m.Gen, uint32(len(m.Segments)), uint32(len(m.Deltas))} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	for i, id := range m.Segments {
		b = append(b, id[:]...)
		b = binary.LittleEndian.AppendUint32(b, m.Folded[i])
	}
	for _, d := range m.Deltas {
		b = binary.LittleEndian.AppendUint32(b, d.Gen)
		b = append(b, d.ID[:]...)
	}
	return b
}

// decodePageMap parses a head blob and checks that its numbers agree.
func decodePageMap(b []byte) (*PageMap, error) {
	if len(b) < pageMapHeadSize || !bytes.Equal(b[:8], pageMapMagic) {
		return nil, errors.New("not a page map")
	}
	u := func(i int) uint32 { return binary.LittleEndian.Uint32(b[8+4*i:]) }
	m := &PageMap{PageSize: int(u(0)), PageCount: u(1), SegmentPages: u(2), Gen: u(3)}
	nseg, ndelta := u(4), u(5)
	switch {
	case m.PageSize < 512 || m.PageSize > 65536 || m.PageSize&(m.PageSize-1) != 0:
		return nil, fmt.Errorf("page map: invalid page size %d", m.PageSize)
	case m.PageCount > maxPageCount:
		return nil, fmt.Errorf("page map: invalid page count %d", m.PageCount)
	case m.SegmentPages == 0 || m.SegmentPages > 1<<20:
		return nil, fmt.Errorf("page map: invalid segment size %d", m.SegmentPages)
	case m.Gen == 0:
		return nil, errors.New("page map: generation 0")
	case int(nseg) != m.numSegments():
		return nil, fmt.Errorf("page map: %d segments for %d pages", nseg, m.PageCount)
	case uint64(len(b)) != pageMapHeadSize+uint64(nseg)*uint64(idSize+4)+uint64(ndelta)*uint64(idSize+4):
		return nil, fmt.Errorf("page map: %d bytes for %d segments and %d deltas", len(b), nseg, ndelta)
	}
	p := b[pageMapHeadSize:]
	m.Segments = make([]chunk.ID, nseg)
	m.Folded = make([]uint32, nseg)
	for i := range m.Segments {
		copy(m.Segments[i][:], p)
		m.Folded[i] = binary.LittleEndian.Uint32(p[idSize:])
		if m.Folded[i] == 0 || m.Folded[i] > m.Gen {
			return nil, fmt.Errorf("page map: segment %d of generation %d in a map of generation %d", i, m.Folded[i], m.Gen)
		}
		p = p[idSize+4:]
	}
	m.Deltas = make([]DeltaRef, ndelta)
	for i := range m.Deltas {
		m.Deltas[i].Gen = binary.LittleEndian.Uint32(p)
		copy(m.Deltas[i].ID[:], p[4:])
		p = p[idSize+4:]
		if g := m.Deltas[i].Gen; g == 0 || g > m.Gen || (i > 0 && g <= m.Deltas[i-1].Gen) {
			return nil, fmt.Errorf("page map: delta generations out of order")
		}
	}
	return m, nil
}

// deltaEntry is one changed page.
type deltaEntry struct {
	pgno uint32
	id   chunk.ID
}

// delta is a decoded delta blob: its generation and entries by page number.
type delta struct {
	gen     uint32
	entries []deltaEntry
}

func encodeDelta(gen uint32, entries []deltaEntry) []byte {
	b := make([]byte, 0, 16+len(entries)*(4+idSize))
	b = append(b, deltaMagic...)
	b = binary.LittleEndian.AppendUint32(b, gen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint32(b, e.pgno)
		b = append(b, e.id[:]...)
	}
	return b
}

func decodeDelta(b []byte) (*delta, error) {
	if len(b) < 16 || !bytes.Equal(b[:8], deltaMagic) {
		return nil, errors.New("not a page map delta")
	}
	d := &delta{gen: binary.LittleEndian.Uint32(b[8:])}
	n := binary.LittleEndian.Uint32(b[12:])
	if uint64(len(b)) != 16+uint64(n)*uint64(4+idSize) {
		return nil, fmt.Errorf("page map delta: %d bytes for %d entries", len(b), n)
	}
	d.entries = make([]deltaEntry, n)
	p := b[16:]
	for i := range d.entries {
		d.entries[i].pgno = binary.LittleEndian.Uint32(p)
		copy(d.entries[i].id[:], p[4:])
		p = p[4+idSize:]
		if d.entries[i].pgno == 0 || (i > 0 && d.entries[i].pgno <= d.entries[i-1].pgno) {
			return nil, errors.New("page map delta: page numbers out of order")
		}
	}
	return d, nil
}

// LoadPageMap loads the head blob id.
func (r *Repository) LoadPageMap(ctx context.Context, id chunk.ID) (*PageMap, error) {
	b, err := r.LoadBlob(ctx, index.TreeBlob, id, nil)
	if err != nil {
		return nil, fmt.Errorf("load page map %s: %w", id.Short(), err)
	}
	m, err := decodePageMap(b)
	if err != nil {
		return nil, fmt.Errorf("load page map %s: %w", id.Short(), err)
	}
	return m, nil
}

// metaLoader loads a page map blob (tree namespace).
type metaLoader func(id chunk.ID) ([]byte, error)

// pageResolver gives the ids of a map's pages, one segment at a time.
type pageResolver struct {
	load   metaLoader
	m      *PageMap
	deltas []*delta
}

// newPageResolver loads m's deltas through the repository's index.
func (r *Repository) newPageResolver(ctx context.Context, m *PageMap) (*pageResolver, error) {
	return newPageResolver(m, func(id chunk.ID) ([]byte, error) { return r.LoadBlob(ctx, index.TreeBlob, id, nil) })
}

// newPageResolver loads m's deltas (their size is bounded by MaxChain
// snapshots' worth of changes) with load.
func newPageResolver(m *PageMap, load metaLoader) (*pageResolver, error) {
	pr := &pageResolver{load: load, m: m}
	for _, ref := range m.Deltas {
		b, err := load(ref.ID)
		if err != nil {
			return nil, fmt.Errorf("load page map delta %s: %w", ref.ID.Short(), err)
		}
		d, err := decodeDelta(b)
		if err != nil {
			return nil, fmt.Errorf("page map delta %s: %w", ref.ID.Short(), err)
		}
		if d.gen != ref.Gen {
			return nil, fmt.Errorf("page map delta %s: generation %d, the head says %d", ref.ID.Short(), d.gen, ref.Gen)
		}
		pr.deltas = append(pr.deltas, d)
	}
	return pr, nil
}

// segment returns the ids of the pages of segment i, in order.
func (pr *pageResolver) segment(i int, ids []chunk.ID) ([]chunk.ID, error) {
	m := pr.m
	first, n := m.segmentRange(i)
	b, err := pr.load(m.Segments[i])
	if err != nil {
		return nil, fmt.Errorf("load page map segment %s: %w", m.Segments[i].Short(), err)
	}
	if len(b)%idSize != 0 || len(b) > int(m.SegmentPages)*idSize {
		return nil, fmt.Errorf("page map segment %s: %d bytes is not a list of at most %d ids", m.Segments[i].Short(), len(b), m.SegmentPages)
	}
	ids = slices.Grow(ids[:0], n)[:n]
	set := make([]bool, n)
	for j := 0; j < n && j*idSize < len(b); j++ {
		copy(ids[j][:], b[j*idSize:])
		set[j] = true
	}
	last := first + uint32(n) - 1
	for _, d := range pr.deltas {
		if d.gen <= m.Folded[i] {
			continue
		}
		k, _ := slices.BinarySearchFunc(d.entries, first, func(e deltaEntry, p uint32) int { return int(int64(e.pgno) - int64(p)) })
		for ; k < len(d.entries) && d.entries[k].pgno <= last; k++ {
			j := d.entries[k].pgno - first
			ids[j], set[j] = d.entries[k].id, true
		}
	}
	if j := slices.Index(set, false); j >= 0 {
		return nil, fmt.Errorf("page map: no id for page %d", first+uint32(j))
	}
	return ids, nil
}

// PageIDs calls fn with the ids of all pages of m in order, one segment at a
// time, so memory stays at one segment and the deltas whatever the
// database's size.
func (r *Repository) PageIDs(ctx context.Context, m *PageMap, fn func(first uint32, ids []chunk.ID) error) error {
	pr, err := r.newPageResolver(ctx, m)
	if err != nil {
		return err
	}
	var ids []chunk.ID
	for i := range m.Segments {
		if ids, err = pr.segment(i, ids); err != nil {
			return err
		}
		first, _ := m.segmentRange(i)
		if err := fn(first, ids); err != nil {
			return err
		}
	}
	return nil
}

// MetaBlobs returns the ids of the blobs that hold m: segments, deltas
// (the head itself not included).
func (m *PageMap) MetaBlobs() []chunk.ID {
	ids := slices.Clone(m.Segments)
	for _, d := range m.Deltas {
		ids = append(ids, d.ID)
	}
	return ids
}

// pageMapWriter builds the page map of a new image while its pages stream
// in, against the parent's map when there is a usable one.
type pageMapWriter struct {
	ctx  context.Context
	save func([]byte) (chunk.ID, error) // stores a metadata blob

	m      PageMap
	parent *pageResolver // nil: write every segment
	fold   []bool        // segments written in full this time

	done      uint32     // pages in the segments finished
	seg       []chunk.ID // ids of the current segment so far
	parentSeg []chunk.ID // the parent's ids of the current segment
	changes   []deltaEntry
	// Changed counts the pages that differ from the parent's map (all
	// pages without a parent).
	Changed uint32
}

// newPageMapWriter prepares the map of an image of pageCount pages of
// pageSize bytes. parent may be nil, and is ignored when its page size or
// segment size differ.
func newPageMapWriter(ctx context.Context, r *Repository, save func([]byte) (chunk.ID, error), pageSize int, pageCount uint32, parent *PageMap) (*pageMapWriter, error) {
	w := &pageMapWriter{
		ctx:  ctx,
		save: save,
		m:    PageMap{PageSize: pageSize, PageCount: pageCount, SegmentPages: SegmentPages, Gen: 1},
	}
	n := w.m.numSegments()
	w.m.Segments = make([]chunk.ID, n)
	w.m.Folded = make([]uint32, n)
	w.fold = make([]bool, n)
	if parent != nil && (parent.PageSize != pageSize || parent.SegmentPages != SegmentPages) {
		parent = nil
	}
	if parent == nil {
		for i := range w.fold {
			w.fold[i] = true
		}
		return w, nil
	}
	pr, err := r.newPageResolver(ctx, parent)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		// A parent map that cannot be read is no base: write in full.
		for i := range w.fold {
			w.fold[i] = true
		}
		return w, nil
	}
	w.parent = pr
	w.m.Gen = parent.Gen + 1
	// Segments the parent lacks are written; of the others, those folded
	// longest ago.
	var old []int
	for i := range n {
		if i >= len(parent.Segments) {
			w.fold[i] = true
			continue
		}
		w.m.Segments[i], w.m.Folded[i] = parent.Segments[i], parent.Folded[i]
		old = append(old, i)
	}
	slices.SortStableFunc(old, func(a, b int) int { return int(int64(parent.Folded[a]) - int64(parent.Folded[b])) })
	for _, i := range old[:min(len(old), FoldSegments(n))] {
		w.fold[i] = true
	}
	return w, nil
}

// add appends the id of the next page.
func (w *pageMapWriter) add(id chunk.ID) error {
	seg := int(w.done / w.m.SegmentPages)
	if seg >= len(w.fold) {
		return fmt.Errorf("page map: more than the %d pages announced", w.m.PageCount)
	}
	i := len(w.seg)
	if i == 0 {
		w.parentSeg = w.parentSeg[:0]
		if w.parent != nil && seg < len(w.parent.m.Segments) {
			ids, err := w.parent.segment(seg, w.parentSeg)
			if err != nil {
				if w.ctx.Err() != nil {
					return err
				}
				// The parent's segment is unreadable: write this one
				// in full, so the new map does not depend on it.
				w.fold[seg] = true
				ids = w.parentSeg[:0]
			}
			w.parentSeg = ids
		}
	}
	// A page beyond the parent's segment is new (the database grew).
	if i >= len(w.parentSeg) || w.parentSeg[i] != id {
		w.Changed++
		if !w.fold[seg] {
			w.changes = append(w.changes, deltaEntry{w.done + uint32(i) + 1, id})
		}
	}
	w.seg = append(w.seg, id)
	if _, n := w.m.segmentRange(seg); len(w.seg) == n {
		if w.fold[seg] {
			b := make([]byte, 0, len(w.seg)*idSize)
			for _, id := range w.seg {
				b = append(b, id[:]...)
			}
			sid, err := w.save(b)
			if err != nil {
				return err
			}
			w.m.Segments[seg], w.m.Folded[seg] = sid, w.m.Gen
		}
		w.done += uint32(len(w.seg))
		w.seg = w.seg[:0]
	}
	return nil
}

// finish stores the delta and the head, and returns the head's id. It
// fails if fewer or more pages were added than announced.
func (w *pageMapWriter) finish() (chunk.ID, error) {
	if w.done != w.m.PageCount || len(w.seg) != 0 {
		return chunk.ID{}, fmt.Errorf("page map: %d pages added, %d announced", w.done+uint32(len(w.seg)), w.m.PageCount)
	}
	if w.parent != nil {
		// Keep the deltas some segment still needs.
		oldest := w.m.Gen
		for _, g := range w.m.Folded {
			oldest = min(oldest, g)
		}
		for _, d := range w.parent.m.Deltas {
			if d.Gen > oldest {
				w.m.Deltas = append(w.m.Deltas, d)
			}
		}
		if len(w.changes) > 0 {
			id, err := w.save(encodeDelta(w.m.Gen, w.changes))
			if err != nil {
				return chunk.ID{}, err
			}
			w.m.Deltas = append(w.m.Deltas, DeltaRef{w.m.Gen, id})
		}
	}
	return w.save(encodePageMap(&w.m))
}

// pageIDsWith resolves the page ids of database node n, loading the map's
// blobs with load.
func pageIDsWith(n *Node, load metaLoader) ([]chunk.ID, error) {
	b, err := load(n.Database.PageMap)
	if err != nil {
		return nil, fmt.Errorf("load page map %s: %w", n.Database.PageMap.Short(), err)
	}
	m, err := decodePageMap(b)
	if err != nil {
		return nil, fmt.Errorf("load page map %s: %w", n.Database.PageMap.Short(), err)
	}
	if m.PageSize != n.Database.PageSize || m.PageCount != n.Database.PageCount {
		return nil, fmt.Errorf("page map %s: %d pages of %d bytes, but the node says %d of %d",
			n.Database.PageMap.Short(), m.PageCount, m.PageSize, n.Database.PageCount, n.Database.PageSize)
	}
	pr, err := newPageResolver(m, load)
	if err != nil {
		return nil, err
	}
	ids := make([]chunk.ID, 0, m.PageCount)
	var seg []chunk.ID
	for i := range m.Segments {
		if seg, err = pr.segment(i, seg); err != nil {
			return nil, err
		}
		ids = append(ids, seg...)
	}
	return ids, nil
}
