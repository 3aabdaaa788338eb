package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"repo/chunk"
	"repo/index"
)

// A database image is stored one page per data blob (pages change in
// place, so the page is the unit that dedups; DESIGN.md, "Database
// chunking"). The list of page ids, the page map, would be 32 bytes per page
// in the tree, re-stored with every snapshot; instead it lives in its own
// blobs in the tree namespace:
//
//   - segment blobs: the ids of SegmentPages consecutive pages, 32 bytes
//     each, concatenated (the last segment may be shorter). A segment in
//     which no page changed is the same blob as in the parent snapshot and
//     is not stored again.
//   - one head blob: magic, page size, page count, pages per segment, the
//     number of segments and their ids.
//
// The node of a database file names the head in DatabaseInfo.PageMap.

// pageMapMagic starts a head blob; the trailing digit is the format version.
var pageMapMagic = []byte("RPGMAP1\n")

// SegmentPages is the number of pages per page-map segment: 128 KiB of ids,
// so that a snapshot in which few pages changed adds few segments.
const SegmentPages = 4096

// idSize is the length of a blob id in a page map.
const idSize = len(chunk.ID{})

// pageMapHeadSize is the fixed part of a head blob.
const pageMapHeadSize = 8 + 4*4

// maxPageCount bounds a page map: SQLite's own limit is 2^32-2 pages.
const maxPageCount = 1<<32 - 2

// PageMap is a decoded head blob.
type PageMap struct {
	PageSize     int
	PageCount    uint32
	SegmentPages uint32
	Segments     []chunk.ID
}

// encodePageMap serializes the head.
func encodePageMap(m *PageMap) []byte {
	b := make([]byte, 0, pageMapHeadSize+len(m.Segments)*idSize)
	b = append(b, pageMapMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(m.PageSize))
	b = binary.LittleEndian.AppendUint32(b, m.PageCount)
	b = binary.LittleEndian.AppendUint32(b, m.SegmentPages)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Segments)))
	for _, id := range m.Segments {
		b = append(b, id[:]...)
	}
	return b
}

// decodePageMap parses a head blob and checks that its numbers agree.
func decodePageMap(b []byte) (*PageMap, error) {
	if len(b) < pageMapHeadSize || !bytes.Equal(b[:8], pageMapMagic) {
		return nil, errors.New("not a page map")
	}
	m := &PageMap{
		PageSize:     int(binary.LittleEndian.Uint32(b[8:])),
		PageCount:    binary.LittleEndian.Uint32(b[12:]),
		SegmentPages: binary.LittleEndian.Uint32(b[16:]),
	}
	n := binary.LittleEndian.Uint32(b[20:])
	switch {
	case m.PageSize < 512 || m.PageSize > 65536 || m.PageSize&(m.PageSize-1) != 0:
		return nil, fmt.Errorf("page map: invalid page size %d", m.PageSize)
	case m.PageCount > maxPageCount:
		return nil, fmt.Errorf("page map: invalid page count %d", m.PageCount)
	case m.SegmentPages == 0 || m.SegmentPages > 1<<20:
		return nil, fmt.Errorf("page map: invalid segment size %d", m.SegmentPages)
	case uint64(n) != (uint64(m.PageCount)+uint64(m.SegmentPages)-1)/uint64(m.SegmentPages):
		return nil, fmt.Errorf("page map: %d segments for %d pages", n, m.PageCount)
	case len(b) != pageMapHeadSize+int(n)*idSize:
		return nil, fmt.Errorf("page map: %d bytes for %d segments", len(b), n)
	}
	m.Segments = make([]chunk.ID, n)
	for i := range m.Segments {
		copy(m.Segments[i][:], b[pageMapHeadSize+i*idSize:])
	}
	return m, nil
}

// segmentLen is the number of pages in segment i.
func (m *PageMap) segmentLen(i int) int {
	start := uint64(i) * uint64(m.SegmentPages)
	return int(min(uint64(m.SegmentPages), uint64(m.PageCount)-start))
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

// LoadSegment loads segment i of m: the ids of its pages.
func (r *Repository) LoadSegment(ctx context.Context, m *PageMap, i int) ([]chunk.ID, error) {
	b, err := r.LoadBlob(ctx, index.TreeBlob, m.Segments[i], nil)
	if err != nil {
		return nil, fmt.Errorf("load page map segment %s: %w", m.Segments[i].Short(), err)
	}
	want := m.segmentLen(i)
	if len(b) != want*idSize {
		return nil, fmt.Errorf("page map segment %s: %d bytes, want %d page ids", m.Segments[i].Short(), len(b), want)
	}
	ids := make([]chunk.ID, want)
	for j := range ids {
		copy(ids[j][:], b[j*idSize:])
	}
	return ids, nil
}

// PageIDs calls fn with the ids of all pages of m in order, one segment at a
// time (memory stays at one segment whatever the database's size).
func (r *Repository) PageIDs(ctx context.Context, m *PageMap, fn func(first uint32, ids []chunk.ID) error) error {
	for i := range m.Segments {
		ids, err := r.LoadSegment(ctx, m, i)
		if err != nil {
			return err
		}
		if err := fn(uint32(i)*m.SegmentPages+1, ids); err != nil {
			return err
		}
	}
	return nil
}

// pageMapWriter builds a page map while the pages stream in.
type pageMapWriter struct {
	s   *Saver
	m   PageMap
	seg []byte // ids of the current segment
}

func newPageMapWriter(s *Saver, pageSize int) *pageMapWriter {
	return &pageMapWriter{
		s:   s,
		m:   PageMap{PageSize: pageSize, SegmentPages: SegmentPages},
		seg: make([]byte, 0, SegmentPages*idSize),
	}
}

// add appends the id of the next page.
func (w *pageMapWriter) add(id chunk.ID) error {
	w.seg = append(w.seg, id[:]...)
	w.m.PageCount++
	if len(w.seg) == cap(w.seg) {
		return w.flush()
	}
	return nil
}

func (w *pageMapWriter) flush() error {
	if len(w.seg) == 0 {
		return nil
	}
	id, _, err := w.s.SaveBlob(index.TreeBlob, w.seg)
	if err != nil {
		return err
	}
	w.m.Segments = append(w.m.Segments, id)
	w.seg = w.seg[:0]
	return nil
}

// finish stores the last segment and the head, and returns the head's id.
func (w *pageMapWriter) finish() (chunk.ID, error) {
	if err := w.flush(); err != nil {
		return chunk.ID{}, err
	}
	id, _, err := w.s.SaveBlob(index.TreeBlob, encodePageMap(&w.m))
	return id, err
}
