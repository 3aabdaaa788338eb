package repo

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"repo/chunk"
	"repo/index"
)

// pageModel is a database's pages as versions: page p's id is a hash of
// (p, version[p]), so a changed page gets a new id and identical states
// give identical ids, without storing page contents.
type pageModel struct{ version []uint32 }

func (m *pageModel) id(p int) chunk.ID {
	var b [8]byte
	binary.LittleEndian.PutUint32(b[:], uint32(p))
	binary.LittleEndian.PutUint32(b[4:], m.version[p])
	return chunk.Hash(b[:])
}

// writeMap stores the model's map against parent (nil: none) in one Saver
// and returns its head, the writer and the bytes the Saver stored.
func writeMap(t *testing.T, r *Repository, pm *pageModel, parent *PageMap) (*PageMap, *pageMapWriter, SaverStats) {
	t.Helper()
	ctx := t.Context()
	s := r.NewSaver(ctx)
	save := func(b []byte) (chunk.ID, error) {
		id, _, err := s.SaveBlob(index.TreeBlob, b)
		return id, err
	}
	w, err := newPageMapWriter(ctx, r, save, 4096, uint32(len(pm.version)), parent)
	if err != nil {
		t.Fatal(err)
	}
	for p := range pm.version {
		if err := w.add(pm.id(p)); err != nil {
			t.Fatal(err)
		}
	}
	head, err := w.finish()
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.LoadPageMap(ctx, head)
	if err != nil {
		t.Fatal(err)
	}
	return m, w, st
}

// checkMap resolves m and compares every page with the model.
func checkMap(t *testing.T, r *Repository, m *PageMap, pm *pageModel) {
	t.Helper()
	if int(m.PageCount) != len(pm.version) {
		t.Fatalf("map has %d pages, model %d", m.PageCount, len(pm.version))
	}
	next := 0
	err := r.PageIDs(t.Context(), m, func(first uint32, ids []chunk.ID) error {
		if int(first) != next+1 {
			t.Fatalf("segment starts at page %d, want %d", first, next+1)
		}
		for _, id := range ids {
			if id != pm.id(next) {
				t.Fatalf("generation %d: page %d resolves to %s, want %s", m.Gen, next+1, id.Short(), pm.id(next).Short())
			}
			next++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != len(pm.version) {
		t.Fatalf("resolved %d pages, want %d", next, len(pm.version))
	}
}

// TestPageMapGenerations writes a long history of a changing database
// (pages rewritten, the file growing and shrinking) and checks that every
// map resolves to exactly the model's pages, that the chain of deltas stays
// within MaxChain, and that deltas are dropped once folded.
func TestPageMapGenerations(t *testing.T) {
	r, _ := newTestRepo(t, true)
	rng := rand.New(rand.NewPCG(3, 4))
	pm := &pageModel{version: make([]uint32, 3*SegmentPages+100)}
	var parent *PageMap
	gens := 3*MaxChain + 10
	if testing.Short() {
		gens = MaxChain + 10
	}
	for g := 1; g <= gens; g++ {
		switch {
		case g%37 == 0: // grow by a segment and a bit
			pm.version = append(pm.version, make([]uint32, SegmentPages+17)...)
		case g%53 == 0: // shrink
			pm.version = pm.version[:len(pm.version)-SegmentPages/2-3]
		}
		for range rng.IntN(40) {
			pm.version[rng.IntN(len(pm.version))]++
		}
		m, _, _ := writeMap(t, r, pm, parent)
		if m.Gen != uint32(g) {
			t.Fatalf("generation %d, want %d", m.Gen, g)
		}
		if len(m.Deltas) > MaxChain {
			t.Fatalf("generation %d: chain of %d deltas, bound %d", g, len(m.Deltas), MaxChain)
		}
		oldest := slices.Min(m.Folded)
		for _, d := range m.Deltas {
			if d.Gen <= oldest {
				t.Fatalf("generation %d keeps delta %d that every segment folded", g, d.Gen)
			}
		}
		checkMap(t, r, m, pm)
		parent = m
	}
}

// TestPageMapParentIgnored: a map with another page size than its parent
// is written in full and resolves correctly.
func TestPageMapParentIgnored(t *testing.T) {
	r, _ := newTestRepo(t, false)
	pm := &pageModel{version: make([]uint32, SegmentPages+5)}
	m1, _, _ := writeMap(t, r, pm, nil)
	m1.PageSize = 8192 // as if the database had been rebuilt with another page size
	pm.version[7]++
	m2, w, _ := writeMap(t, r, pm, m1)
	if m2.Gen != 1 || len(m2.Deltas) != 0 || w.Changed != uint32(len(pm.version)) {
		t.Fatalf("gen %d, %d deltas, %d changed: want a full map", m2.Gen, len(m2.Deltas), w.Changed)
	}
	checkMap(t, r, m2, pm)
}

func TestPageMapDecodeRejects(t *testing.T) {
	m := &PageMap{PageSize: 4096, PageCount: 5, SegmentPages: 4, Gen: 3,
		Segments: []chunk.ID{{1}, {2}}, Folded: []uint32{3, 2}, Deltas: []DeltaRef{{3, chunk.ID{9}}}}
	b := encodePageMap(m)
	got, err := decodePageMap(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Gen != 3 || got.Folded[1] != 2 || got.Deltas[0].ID != (chunk.ID{9}) {
		t.Fatalf("round trip: %+v", got)
	}
	for name, mut := range map[string]func([]byte) []byte{
		"magic":         func(b []byte) []byte { b[0] = 'X'; return b },
		"truncated":     func(b []byte) []byte { return b[:len(b)-1] },
		"page size":     func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 1000); return b },
		"segment count": func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 100); return b },
		"generation 0":  func(b []byte) []byte { binary.LittleEndian.PutUint32(b[20:], 0); return b },
		"folded later":  func(b []byte) []byte { binary.LittleEndian.PutUint32(b[32+32:], 7); return b },
	} {
		if _, err := decodePageMap(mut(slices.Clone(b))); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	d := encodeDelta(4, []deltaEntry{{5, chunk.ID{1}}, {3, chunk.ID{2}}})
	if _, err := decodeDelta(d); err == nil {
		t.Error("delta with unordered pages decoded without error")
	}
}

// TestPageMapMetadataAtScale simulates the page map of a 20 GiB database
// (4 KiB pages) of which 0.1% of the pages change between snapshots, and
// measures what each snapshot stores for its map. The bound is
// 2 MiB per snapshot after the first.
func TestPageMapMetadataAtScale(t *testing.T) {
	pages := 20 << 30 / 4096
	snaps := 6
	if testing.Short() {
		pages, snaps = pages/8, 3
	}
	r, _ := newTestRepo(t, true)
	rng := rand.New(rand.NewPCG(5, 6))
	pm := &pageModel{version: make([]uint32, pages)}
	var parent *PageMap
	for i := range snaps {
		if i > 0 {
			for range pages / 1000 {
				pm.version[rng.IntN(pages)]++
			}
		}
		m, w, st := writeMap(t, r, pm, parent)
		t.Logf("snapshot %d: %d pages changed, map stored %d bytes in %d blobs (%d deltas in the chain)", i+1, w.Changed, st.StoredBytes, st.Blobs, len(m.Deltas))
		if i > 0 && st.StoredBytes >= 2<<20 {
			t.Errorf("snapshot %d stored %d bytes of page map, bound 2 MiB", i+1, st.StoredBytes)
		}
		parent = m
	}
	checkMap(t, r, parent, pm)
}
