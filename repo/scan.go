package repo

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo/pack"
)

// Damage is what Scan found wrong with the repository's storage, and where
// every recoverable blob can be read. It is the common ground of
// list-broken-files and check --repair; Scan itself writes nothing.
type Damage struct {
	// IndexFiles are all index files listed; BadIndex those that cannot
	// be read, Superseded those another index file supersedes.
	IndexFiles []chunk.ID
	BadIndex   map[chunk.ID]error
	Superseded map[chunk.ID]bool

	// Packs the readable index files describe (first description wins),
	// and the packs present in the backend with their sizes.
	indexed map[chunk.ID]*scanPack
	present map[chunk.ID]int64

	// MissingPacks are indexed but absent; DamagedPacks are present but
	// damaged (wrong size, bad header, blobs that fail verification), with
	// the reason; UnindexedPacks are present but in no readable index file.
	MissingPacks   []chunk.ID
	DamagedPacks   map[chunk.ID]string
	UnindexedPacks []chunk.ID

	// good: blobs in intact indexed packs; salvage: verified blobs of
	// damaged packs; unindexed: blobs the headers of unindexed packs list.
	// Together they are every blob a repair can keep.
	good      map[blobKey]index.PackedBlob
	salvage   map[blobKey]index.PackedBlob
	unindexed map[blobKey]index.PackedBlob
	// intactUnindexed holds the header of every intact unindexed pack,
	// whole (a blob may be in several packs; an index entry must list
	// them all).
	intactUnindexed map[chunk.ID][]index.Blob
	// lost holds the index entries of blobs in missing packs and of blobs
	// that failed verification, for their sizes.
	lost map[blobKey]index.Blob
}

type scanPack struct {
	blobs []index.Blob
	size  int64 // expected from the entries
	index chunk.ID
}

// ScanOptions configure Scan.
type ScanOptions struct {
	// ReadData reads every indexed pack and verifies every blob; without
	// it only packs that are visibly damaged (wrong size) and unindexed
	// packs are read.
	ReadData bool
	// Progress, when set, is updated in phase PhaseScan: the packs read,
	// with their bytes.
	Progress *Progress
}

// Scan inspects index files and packs and returns what is damaged and what
// can be recovered. It never writes.
func (r *Repository) Scan(ctx context.Context, opts ScanOptions) (*Damage, error) {
	d := &Damage{
		BadIndex:        map[chunk.ID]error{},
		Superseded:      map[chunk.ID]bool{},
		indexed:         map[chunk.ID]*scanPack{},
		present:         map[chunk.ID]int64{},
		DamagedPacks:    map[chunk.ID]string{},
		good:            map[blobKey]index.PackedBlob{},
		salvage:         map[blobKey]index.PackedBlob{},
		unindexed:       map[blobKey]index.PackedBlob{},
		intactUnindexed: map[chunk.ID][]index.Blob{},
		lost:            map[blobKey]index.Blob{},
	}
	if err := r.listIDs(ctx, backend.IndexFile, func(id chunk.ID) error {
		d.IndexFiles = append(d.IndexFiles, id)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list index files: %w", err)
	}
	files := map[chunk.ID]*index.File{}
	for _, id := range d.IndexFiles {
		f, err := r.LoadIndexFile(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			d.BadIndex[id] = err
			continue
		}
		files[id] = f
		for _, old := range f.Supersedes {
			d.Superseded[old] = true
		}
	}
	for _, id := range d.IndexFiles {
		f := files[id]
		if f == nil || d.Superseded[id] {
			continue
		}
		for _, p := range f.Packs {
			if _, ok := d.indexed[p.ID]; ok {
				continue
			}
			var end int64
			for _, b := range p.Blobs {
				end = max(end, int64(b.Offset)+int64(b.Length))
			}
			d.indexed[p.ID] = &scanPack{blobs: p.Blobs, size: end + pack.HeaderSize(r.sealer, len(p.Blobs)), index: id}
		}
	}
	if err := r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := chunk.ParseID(fi.Name); err == nil {
			d.present[id] = fi.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}

	var toRead []chunk.ID
	for id, sp := range d.indexed {
		size, ok := d.present[id]
		switch {
		case !ok:
			d.MissingPacks = append(d.MissingPacks, id)
			for _, b := range sp.blobs {
				d.lost[blobKey{b.Type, b.ID}] = b
			}
		case size != sp.size || opts.ReadData:
			toRead = append(toRead, id)
		default:
			d.addGood(id, sp.blobs)
		}
	}
	for id := range d.present {
		if _, ok := d.indexed[id]; !ok {
			d.UnindexedPacks = append(d.UnindexedPacks, id)
			toRead = append(toRead, id)
		}
	}
	slices.SortFunc(d.MissingPacks, chunk.ID.Compare)
	slices.SortFunc(d.UnindexedPacks, chunk.ID.Compare)
	slices.SortFunc(toRead, chunk.ID.Compare)
	var bytes int64
	for _, id := range toRead {
		bytes += d.present[id]
	}
	opts.Progress.StartCounted(PhaseScan, int64(len(toRead)), bytes)
	for _, id := range toRead {
		opts.Progress.SetCurrent("pack " + id.Short())
		if err := d.readPack(ctx, r, id); err != nil {
			return nil, err
		}
		opts.Progress.AddItem(d.present[id])
	}
	// A blob good somewhere needs no salvage.
	for k := range d.good {
		delete(d.salvage, k)
		delete(d.lost, k)
	}
	for k := range d.salvage {
		delete(d.lost, k)
	}
	for k := range d.unindexed {
		delete(d.lost, k)
	}
	return d, nil
}

func (d *Damage) addGood(id chunk.ID, blobs []index.Blob) {
	for _, b := range blobs {
		k := blobKey{b.Type, b.ID}
		if _, ok := d.good[k]; !ok {
			d.good[k] = index.PackedBlob{Blob: b, Pack: id}
		}
	}
}

// readPack reads pack id whole and sorts its blobs into good (an indexed
// pack that is intact), salvage (verified blobs of a damaged pack) and
// unindexed (verified blobs of an intact unindexed pack).
func (d *Damage) readPack(ctx context.Context, r *Repository, id chunk.ID) error {
	sp := d.indexed[id]
	data, err := backend.LoadAll(ctx, r.be, packHandle(id), nil)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, backend.ErrNotExist) {
			return nil // removed meanwhile: treated as not there
		}
		d.DamagedPacks[id] = fmt.Sprintf("cannot be read: %v", err)
		if sp != nil {
			for _, b := range sp.blobs {
				d.lost[blobKey{b.Type, b.ID}] = b
			}
		}
		return nil
	}
	var problems []string
	if chunk.Hash(data) != id {
		problems = append(problems, "content does not hash to its name")
	}
	hdr, herr := pack.ParseHeader(r.sealer, data, int64(len(data)))
	if herr != nil {
		problems = append(problems, fmt.Sprintf("header: %v", herr))
	}
	blobs := hdr
	if sp != nil {
		// The index is the better guide to where blobs are when the
		// header is damaged; both are verified blob by blob anyway.
		blobs = sp.blobs
		if herr == nil && !slices.Equal(hdr, sp.blobs) {
			problems = append(problems, "header differs from the index")
		}
		if int64(len(data)) != sp.size {
			problems = append(problems, fmt.Sprintf("size %d, the index expects %d", len(data), sp.size))
		}
	}
	var ok []index.Blob
	var buf []byte
	bad := 0
	for _, b := range blobs {
		end := int64(b.Offset) + int64(b.Length)
		if end > int64(len(data)) {
			bad++
			d.lost[blobKey{b.Type, b.ID}] = b
			continue
		}
		if buf, err = r.openBlob(data[b.Offset:end], index.PackedBlob{Blob: b, Pack: id}, buf); err != nil {
			bad++
			d.lost[blobKey{b.Type, b.ID}] = b
			continue
		}
		ok = append(ok, b)
	}
	if bad > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d blobs are damaged", bad, len(blobs)))
	}
	target := d.salvage
	switch {
	case len(problems) == 0 && sp != nil:
		d.addGood(id, ok)
		return nil
	case len(problems) == 0:
		target = d.unindexed
		d.intactUnindexed[id] = hdr
	default:
		d.DamagedPacks[id] = strings.Join(problems, "; ")
	}
	for _, b := range ok {
		k := blobKey{b.Type, b.ID}
		if _, dup := target[k]; !dup {
			target[k] = index.PackedBlob{Blob: b, Pack: id}
		}
	}
	return nil
}

// locate returns where blob k can be read, in a pack intact or not.
func (d *Damage) locate(k blobKey) (index.PackedBlob, bool) {
	if pb, ok := d.good[k]; ok {
		return pb, true
	}
	if pb, ok := d.unindexed[k]; ok {
		return pb, true
	}
	pb, ok := d.salvage[k]
	return pb, ok
}

// Recoverable reports whether blob k survives a repair without healing.
func (d *Damage) Recoverable(t index.BlobType, id chunk.ID) bool {
	_, ok := d.locate(blobKey{t, id})
	return ok
}

// NeedsIndexRewrite reports whether the index files must be replaced: an
// index file is unreadable or superseded, or describes a pack that is
// missing or damaged.
func (d *Damage) NeedsIndexRewrite() bool {
	if len(d.BadIndex) > 0 || len(d.MissingPacks) > 0 {
		return true
	}
	for _, id := range d.IndexFiles {
		if d.Superseded[id] {
			return true // a leftover of an interrupted prune or repair
		}
	}
	for id := range d.DamagedPacks {
		if _, ok := d.indexed[id]; ok {
			return true
		}
	}
	return false
}

// loadBlob reads blob k from wherever Scan found it.
func (d *Damage) loadBlob(ctx context.Context, r *Repository, k blobKey) ([]byte, error) {
	pb, ok := d.locate(k)
	if !ok {
		return nil, &BlobError{Type: k.t, ID: k.id, Err: ErrBlobNotIndexed}
	}
	return r.LoadBlobAt(ctx, pb, nil)
}

// BrokenFile is a file (or database image, or a whole directory whose
// tree is lost) of a snapshot whose content cannot be recovered from the
// repository.
type BrokenFile struct {
	Snapshot chunk.ID `json:"snapshot"`
	Path     string   `json:"path"`
	// Kind: "file", "database", or "dir" (the directory's tree is lost,
	// and with it everything below).
	Kind string `json:"kind"`
	// MissingBlobs of TotalBlobs are lost; BytesLost counts the plaintext
	// bytes of those whose size is known (from an index entry).
	MissingBlobs int    `json:"missing_blobs"`
	TotalBlobs   int    `json:"total_blobs"`
	BytesLost    int64  `json:"bytes_lost"`
	Size         uint64 `json:"size"`
}

// brokenWalker finds the broken files of snapshots; avail decides which
// blobs survive.
type brokenWalker struct {
	r     *Repository
	avail func(t index.BlobType, id chunk.ID) bool
	load  func(ctx context.Context, t index.BlobType, id chunk.ID) ([]byte, error)
	size  func(t index.BlobType, id chunk.ID) int64
}

// BrokenFiles lists, for each snapshot given, the files whose content a
// repair cannot recover from the repository (what healing from the source
// or purging would have to deal with). A snapshot whose root tree is lost
// is listed with path "/" and kind "dir".
func (r *Repository) BrokenFiles(ctx context.Context, d *Damage, sns []*Snapshot, fn func(BrokenFile)) error {
	w := d.walker(r)
	for _, sn := range sns {
		if err := w.walk(ctx, sn, "/", sn.Tree, fn); err != nil {
			return err
		}
	}
	return nil
}

func (d *Damage) walker(r *Repository) *brokenWalker {
	return &brokenWalker{
		r:     r,
		avail: d.Recoverable,
		load: func(ctx context.Context, t index.BlobType, id chunk.ID) ([]byte, error) {
			return d.loadBlob(ctx, r, blobKey{t, id})
		},
		size: func(t index.BlobType, id chunk.ID) int64 {
			if b, ok := d.lost[blobKey{t, id}]; ok {
				return int64(b.RawLength)
			}
			return 0
		},
	}
}

func (w *brokenWalker) tree(ctx context.Context, id chunk.ID) (*Tree, error) {
	if !w.avail(index.TreeBlob, id) {
		return nil, &BlobError{Type: index.TreeBlob, ID: id, Err: ErrBlobNotIndexed}
	}
	buf, err := w.load(ctx, index.TreeBlob, id)
	if err != nil {
		return nil, err
	}
	return decodeTree(id, buf)
}

func (w *brokenWalker) walk(ctx context.Context, sn *Snapshot, p string, id chunk.ID, fn func(BrokenFile)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := w.tree(ctx, id)
	if err != nil {
		fn(BrokenFile{Snapshot: sn.ID, Path: p, Kind: "dir", MissingBlobs: 1, TotalBlobs: 1})
		return nil
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		np := path.Join(p, n.Name)
		switch n.Type {
		case NodeDir:
			if err := w.walk(ctx, sn, np, *n.Subtree, fn); err != nil {
				return err
			}
		case NodeFile:
			if bf, broken := w.file(ctx, n); broken {
				bf.Snapshot, bf.Path = sn.ID, np
				fn(bf)
			}
		}
	}
	return nil
}

// file checks one file node.
func (w *brokenWalker) file(ctx context.Context, n *Node) (BrokenFile, bool) {
	bf := BrokenFile{Kind: "file", Size: n.Size}
	ids := n.Content
	if n.Database != nil {
		bf.Kind = "database"
		var err error
		if ids, err = w.pageIDs(ctx, n); err != nil {
			bf.MissingBlobs, bf.TotalBlobs, bf.BytesLost = 1, 1, int64(n.Size)
			return bf, true
		}
	}
	bf.TotalBlobs = len(ids)
	for _, id := range ids {
		if !w.avail(index.DataBlob, id) {
			bf.MissingBlobs++
			bf.BytesLost += w.size(index.DataBlob, id)
		}
	}
	return bf, bf.MissingBlobs > 0
}

// pageIDs resolves a database's page map through the walker's blobs.
func (w *brokenWalker) pageIDs(ctx context.Context, n *Node) ([]chunk.ID, error) {
	loadMeta := func(id chunk.ID) ([]byte, error) {
		if !w.avail(index.TreeBlob, id) {
			return nil, &BlobError{Type: index.TreeBlob, ID: id, Err: ErrBlobNotIndexed}
		}
		return w.load(ctx, index.TreeBlob, id)
	}
	return pageIDsWith(n, loadMeta)
}
