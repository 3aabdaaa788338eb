package repo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo/pack"
)

// Prune removes the data no snapshot uses (docs/prune.md):
//
//  1. Mark: walk every snapshot's trees, file contents and database page
//     maps; the blobs reached are the used ones. If a snapshot cannot be
//     read, or a used blob is in no index or only in missing or visibly
//     damaged packs, prune refuses (*PruneRefusedError) and changes
//     nothing: deleting around damage could make a repair impossible.
//  2. Plan: per pack, the bytes of used blobs against all its blobs. A blob
//     stored in several packs counts in one of them. Packs without a used
//     blob are deleted, packs no index lists (left by interrupted
//     backups) too; partly used packs are repacked, the emptiest first,
//     until the unused space left in kept packs is at most MaxUnused of
//     the used bytes. The plan is saved (SavePlan) before anything changes.
//  3. Repack: the used blobs of those packs are copied, verified, into new
//     packs (indexed in batches as they are written).
//  4. Index: new index files list every kept pack and every new pack; then
//     the old index files are removed.
//  5. Delete: the packs that no index file lists any more; then the plan.
//
// Crash safety rests on one invariant, kept at every instant: every blob a
// snapshot uses is listed in a live index file and present in a pack that
// file names. New objects are written before the objects they replace are
// removed, index files are removed before the packs they list, and packs
// last. A crash therefore leaves at most packs that no index lists and
// duplicate index entries; check reports neither as an error, and running
// prune again recomputes everything from the repository and finishes the
// job (the plan only tells it that it continues an interrupted run).
//
// The caller holds the exclusive lock, so nothing else writes meanwhile.
// Prune reads the index files itself and does not use the local index
// cache, whose first sync of a large repository costs more memory than
// prune needs. Once it starts removing, it empties the cache (which would
// otherwise still place blobs in deleted packs); the next LoadIndex
// fills it again, as after any other change. Memory grows with the
// number of used blobs (one map entry each, 70 to 100 bytes), of tree
// blobs and of packs, not with the size of index files or packs: index
// files are streamed one at a time and packs repacked one at a time.
func (r *Repository) Prune(ctx context.Context, opts PruneOptions) (PruneResult, error) {
	if len(opts.Forgotten) > 0 && !opts.DryRun {
		return PruneResult{}, errors.New("prune: Forgotten snapshots are only for a dry run; remove them first")
	}
	start := time.Now()
	p := &pruner{
		r:       r,
		opts:    opts,
		report:  opts.Report,
		used:    newUsedSet(),
		dups:    map[blobKey][]uint32{},
		packNum: map[chunk.ID]uint32{},
		bad:     map[blobKey]bool{},
	}
	if p.report == nil {
		p.report = func(string) {}
	}
	err := p.run(ctx)
	p.res.Duration = time.Since(start)
	return p.res, err
}

// DefaultMaxUnused is PruneOptions.MaxUnused when zero.
const DefaultMaxUnused = 0.05

// ParseMaxUnused turns a limit as users write it, "N%" (N ≥ 0, decimals
// allowed) or "unlimited", into PruneOptions.MaxUnused: 0% becomes -1
// (repack every partly used pack), unlimited +Inf.
func ParseMaxUnused(s string) (float64, error) {
	if s == "unlimited" {
		return math.Inf(1), nil
	}
	num, ok := strings.CutSuffix(s, "%")
	if !ok || !isDecimal(num) {
		return 0, fmt.Errorf("%q: want N%% (e.g. 5%%) or unlimited", s)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want N%% (e.g. 5%%) or unlimited", s)
	}
	if n == 0 {
		return -1, nil
	}
	return n / 100, nil
}

// PruneOptions configure Prune.
type PruneOptions struct {
	// MaxUnused is the most unused space prune leaves in the packs it
	// keeps, as a fraction of the bytes the snapshots use: partly used
	// packs are repacked until the unused bytes left are at most this
	// much. Zero means DefaultMaxUnused (5%); a negative value means none
	// (every partly used pack is repacked); +Inf means no limit (no pack
	// is repacked, only unused ones are deleted).
	MaxUnused float64
	// DryRun computes and reports everything, and changes nothing.
	DryRun bool
	// Forgotten lists snapshots prune treats as already removed: their
	// blobs count as used only if another snapshot uses them too. With
	// DryRun it shows what forget followed by prune would do (forget
	// --dry-run --prune) while the snapshots are still there. Without
	// DryRun it is refused: deleting data that a listed snapshot still
	// uses would break that snapshot.
	Forgotten []chunk.ID
	// Report receives one line per action (or planned action).
	Report func(msg string)
	// Progress, when set, is updated in phases PhaseIndex (index files
	// read), PhaseMark (snapshots walked), PhaseRepack (packs repacked,
	// with their bytes) and PhaseDelete (packs deleted).
	Progress *Progress

	// indexFileBlobs, when not zero, replaces indexFileBlobs (tests make
	// it small to get several new index files).
	indexFileBlobs int
}

// maxUnused is the effective MaxUnused fraction.
func (o PruneOptions) maxUnused() float64 {
	switch {
	case o.MaxUnused == 0:
		return DefaultMaxUnused
	case o.MaxUnused < 0:
		return 0
	}
	return o.MaxUnused
}

// PruneResult is what Prune did (or, with DryRun, would do). Byte counts
// are sizes on the backend: sealed and compressed blobs, whole pack files.
type PruneResult struct {
	Snapshots int   `json:"snapshots"`
	BlobsUsed int   `json:"blobs_used"`
	BytesUsed int64 `json:"bytes_used"` // the used blobs, one copy each
	// DuplicateBlobs are used blobs stored in more than one pack; each
	// is kept in one of them.
	DuplicateBlobs int `json:"duplicate_blobs"`

	PacksBefore int `json:"packs_before"`
	PacksAfter  int `json:"packs_after"`
	// PacksDeleted counts every pack deleted: PacksUnused (no used blob),
	// PacksRepacked (their used blobs copied first) and PacksUnreferenced
	// (in no index file).
	PacksDeleted      int   `json:"packs_deleted"`
	PacksUnused       int   `json:"packs_unused"`
	PacksRepacked     int   `json:"packs_repacked"`
	PacksUnreferenced int   `json:"packs_unreferenced"`
	BytesDeleted      int64 `json:"bytes_deleted"`
	// PacksMissingDropped are indexed packs missing from the backend
	// whose blobs no snapshot uses: their index entries are dropped.
	PacksMissingDropped int `json:"packs_missing_dropped"`

	BlobsRepacked int   `json:"blobs_repacked"`
	BytesRepacked int64 `json:"bytes_repacked"` // used bytes copied out of repacked packs
	PacksWritten  int   `json:"packs_written"`
	BytesWritten  int64 `json:"bytes_written"` // the new pack files (estimated by a dry run)
	// BytesFreed is BytesDeleted − BytesWritten: what the backend holds
	// less afterwards.
	BytesFreed int64 `json:"bytes_freed"`
	// BytesUnusedLeft is the unused space left in kept packs.
	BytesUnusedLeft int64 `json:"bytes_unused_left"`

	IndexFilesBefore int `json:"index_files_before"`
	IndexFilesAfter  int `json:"index_files_after"`

	TempFilesRemoved int   `json:"temp_files_removed"`
	TempBytesRemoved int64 `json:"temp_bytes_removed"`
	// PlansContinued are plans of interrupted prunes that this run
	// finished and removed (or, with DryRun, found).
	PlansContinued int `json:"plans_continued"`

	Duration time.Duration `json:"duration_ns"`
}

// PruneRefusedError is returned when Prune refuses to run because the
// repository is damaged in a way that deleting data could make worse. Prune
// changed nothing.
type PruneRefusedError struct {
	Reason string
}

func (e *PruneRefusedError) Error() string {
	return "prune: " + e.Reason + "; run 'repo check --repair' first"
}

// tempAge is how old a leftover temporary file must be before prune removes
// it: a Save in progress writes its file continuously, and the exclusive
// lock keeps other writers out anyway.
const tempAge = time.Hour

// indexFileBlobs is how many blob entries prune puts into one index file
// at most (a pack with more gets a file of its own): files stay small
// enough to load and decode quickly.
const indexFileBlobs = 50000

// Pack numbers with a special meaning in usedSet.
const (
	noPack     = math.MaxUint32     // used, but in no pack (yet)
	copiedPack = math.MaxUint32 - 1 // copied into a new pack by the repack
)

// usedSet maps every blob the snapshots use to the pack it is kept in (a
// number into pruner.packs, or noPack or copiedPack). One map per blob
// type, keyed by the id alone and holding only a pack number: at 56 to 84
// bytes an entry it is most of prune's memory.
type usedSet struct{ data, tree map[chunk.ID]uint32 }

func newUsedSet() usedSet {
	return usedSet{data: map[chunk.ID]uint32{}, tree: map[chunk.ID]uint32{}}
}

func (u usedSet) of(t index.BlobType) map[chunk.ID]uint32 {
	if t == index.TreeBlob {
		return u.tree
	}
	return u.data
}

func (u usedSet) get(k blobKey) (uint32, bool) {
	at, ok := u.of(k.t)[k.id]
	return at, ok
}

func (u usedSet) set(k blobKey, at uint32) { u.of(k.t)[k.id] = at }

func (u usedSet) len() int { return len(u.data) + len(u.tree) }

// all iterates over every used blob and where it is kept.
func (u usedSet) all() iter.Seq2[blobKey, uint32] {
	return func(yield func(blobKey, uint32) bool) {
		for id, at := range u.tree {
			if !yield(blobKey{index.TreeBlob, id}, at) {
				return
			}
		}
		for id, at := range u.data {
			if !yield(blobKey{index.DataBlob, id}, at) {
				return
			}
		}
	}
}

// loc is one copy of a blob: its pack and its stored length there.
type loc struct {
	pack   uint32
	length uint32
}

// packAction is what prune does with a pack.
type packAction uint8

const (
	packKeep    packAction = iota
	packRepack             // copy its used blobs, then delete it
	packUnused             // no used blob: delete it
	packUnref              // in no index file: delete it
	packMissing            // indexed but not on the backend: drop its entries
)

// prunePack is what prune knows about one pack.
type prunePack struct {
	id chunk.ID
	// size on the backend; -1 when missing.
	size int64
	// indexed: a live index file describes it (the first description is
	// used); damaged: its size is not the one its entries imply, so its
	// blobs do not count as stored (check reports it as an error).
	indexed, damaged bool
	blobs            int
	blobBytes        int64
	// usedBlobs and usedBytes count the used blobs kept in this pack;
	// potential counts every used blob it holds, also copies kept
	// elsewhere (for choosing among duplicates).
	usedBlobs int
	usedBytes int64
	potential int64
	action    packAction
	emitted   bool // listed in a new index file already
}

func (pp *prunePack) unused() int64 { return pp.blobBytes - pp.usedBytes }

type pruner struct {
	r      *Repository
	opts   PruneOptions
	report func(string)
	res    PruneResult

	// used holds every blob the snapshots use and where it is kept.
	used usedSet
	// dups holds the further copies of the used blobs stored more than
	// once (rare: after an interrupted prune or a resumed backup); the
	// first copy is the one in used.
	dups    map[blobKey][]uint32
	packs   []*prunePack
	packNum map[chunk.ID]uint32

	// indexFiles are the index files listed at the start; live are those
	// not superseded by another listed file, in listing order;
	// supersedes holds each listed file's supersedes list.
	indexFiles []chunk.ID
	live       []chunk.ID
	supersedes map[chunk.ID][]chunk.ID
	// trees locates every tree blob (trees and page map blobs) of the
	// live index files in a pack that exists: the walk reads them here.
	trees map[chunk.ID]index.PackedBlob

	// describedTwice counts packs that two live index files describe.
	describedTwice int

	// bad holds the used blobs the walk could not read; example
	// describes the first problem that makes prune refuse.
	bad     map[blobKey]bool
	example string
}

func (p *pruner) act(format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	if p.opts.DryRun {
		p.report("would " + msg)
	} else {
		p.report(msg)
	}
	return msg
}

func (p *pruner) run(ctx context.Context) (err error) {
	r := p.r
	// Plans of earlier, interrupted prunes; unreadable plans say nothing
	// and are removed at the end.
	var badPlans []chunk.ID
	plans, err := r.Plans(ctx, func(id chunk.ID, err error) { badPlans = append(badPlans, id) })
	if err != nil {
		return err
	}
	var continued []*Plan
	for _, pl := range plans {
		if pl.Op == OpPrune {
			continued = append(continued, pl)
			p.report(continuingMessage(pl))
		}
	}
	p.res.PlansContinued = len(continued)

	if err := p.listPacks(ctx); err != nil {
		return err
	}
	if err := p.readIndexFiles(ctx); err != nil {
		return err
	}
	if err := p.mark(ctx); err != nil {
		return err
	}
	if err := p.countUsage(ctx); err != nil {
		return err
	}
	if err := p.checkUsable(ctx); err != nil {
		return err
	}
	p.trees = nil // the walks are done
	if err := p.resolveDuplicates(ctx); err != nil {
		return err
	}
	steps, remove, rewrite := p.decide()

	if p.opts.DryRun {
		return nil
	}
	var plan *Plan
	if len(steps) > 0 {
		plan = &Plan{Op: OpPrune, Steps: steps, RemovePacks: remove, RemoveIndex: nil}
		if rewrite {
			plan.RemoveIndex = slices.Clone(p.indexFiles)
		}
		if err := r.SavePlan(ctx, plan); err != nil {
			return err
		}
	}
	if tc, ok := backend.As[backend.TempCleaner](r.be); ok {
		n, size, err := tc.RemoveTemp(ctx, tempAge)
		p.res.TempFilesRemoved, p.res.TempBytesRemoved = n, size
		if n > 0 {
			p.report(fmt.Sprintf("removed %d leftover temporary files (%s)", n, FormatBytes(size)))
		}
		// Leftovers are harmless: failing to remove them (a server that
		// refuses to list incomplete uploads, a transient error) must not
		// stop a prune whose plan is saved, or it could never finish.
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p.report(fmt.Sprintf("could not remove leftover temporary files (the next prune tries again): %v", err))
		}
	}

	var rp *repacker
	if p.res.PacksRepacked > 0 {
		var err error
		if rp, err = p.repack(ctx); err != nil {
			return err
		}
	}
	if err := p.verifyKept(); err != nil {
		return err
	}
	if rewrite || len(remove) > 0 {
		defer func() {
			if cerr := p.emptyCache(); err == nil {
				err = cerr
			}
		}()
	}
	if rewrite {
		written, err := p.writeIndex(ctx, rp)
		if err != nil {
			return err
		}
		old := slices.Clone(p.indexFiles)
		if rp != nil {
			old = append(old, rp.indexFiles...)
		}
		if err := p.removeIndexFiles(ctx, old, written); err != nil {
			return err
		}
		p.res.IndexFilesAfter = len(written)
	} else {
		p.res.IndexFilesAfter = p.res.IndexFilesBefore
	}
	if err := p.deletePacks(ctx, remove, rp); err != nil {
		return err
	}

	// Done: this run's plan, those it continued, and unreadable ones.
	if plan != nil {
		continued = append(continued, plan)
	}
	if err := r.RemovePlans(ctx, continued); err != nil {
		return err
	}
	for _, id := range badPlans {
		if err := r.RemovePlan(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// emptyCache empties the local index cache, so that it cannot place a blob
// in a pack that prune deleted; the next LoadIndex loads it afresh.
func (p *pruner) emptyCache() error {
	// A sync against no index files at all drops every entry. Not with
	// ctx: this must happen also when prune was cancelled.
	if _, err := p.r.cache.Sync(context.Background(), noIndex{}); err != nil {
		return fmt.Errorf("prune: empty the index cache: %w", err)
	}
	return nil
}

// noIndex is an index.Source without index files.
type noIndex struct{}

func (noIndex) ListIndex(context.Context, func(chunk.ID) error) error { return nil }

func (noIndex) LoadIndex(context.Context, chunk.ID) (*index.File, error) {
	return nil, errors.New("no index files")
}

// continuingMessage is what an operation reports when it finds the plan of
// an interrupted run of itself.
func continuingMessage(pl *Plan) string {
	return fmt.Sprintf("continuing an interrupted %s started %s on %s (plan %s)", pl.Op, planTime(pl.Created), pl.Host, pl.ID.Short())
}

// problem records that used blob k cannot be read, which makes prune
// refuse.
func (p *pruner) problem(k blobKey, format string, args ...any) {
	p.bad[k] = true
	if p.example == "" {
		p.example = fmt.Sprintf(format, args...)
	}
}

// mark walks every snapshot and puts every blob it uses into p.used, each
// tree and each page map once.
func (p *pruner) mark(ctx context.Context) error {
	unreadable := 0
	var firstBad string
	sns, err := p.r.Snapshots(ctx, func(id chunk.ID, err error) {
		unreadable++
		if firstBad == "" {
			firstBad = fmt.Sprintf("%s: %v", id.Short(), err)
		}
	})
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if unreadable > 0 {
		return &PruneRefusedError{Reason: fmt.Sprintf("%d snapshots cannot be read (e.g. %s)", unreadable, firstBad)}
	}
	sns = p.withoutForgotten(sns)
	p.res.Snapshots = len(sns)
	p.opts.Progress.StartCounted(PhaseMark, int64(len(sns)), 0)
	for _, sn := range sns {
		p.opts.Progress.SetCurrent("snapshot " + sn.ID.Short())
		if err := p.markTree(ctx, sn, "/", sn.Tree); err != nil {
			return err
		}
		p.opts.Progress.AddItem(0)
	}
	return nil
}

// withoutForgotten returns sns without the snapshots of opts.Forgotten.
func (p *pruner) withoutForgotten(sns []*Snapshot) []*Snapshot {
	if len(p.opts.Forgotten) == 0 {
		return sns
	}
	return slices.DeleteFunc(sns, func(sn *Snapshot) bool { return slices.Contains(p.opts.Forgotten, sn.ID) })
}

// use adds blob k to the used set (without a location yet) and reports
// whether it was new.
func (p *pruner) use(k blobKey) bool {
	if _, ok := p.used.get(k); ok {
		return false
	}
	p.used.set(k, noPack)
	return true
}

func (p *pruner) markTree(ctx context.Context, sn *Snapshot, dir string, id chunk.ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !p.use(blobKey{index.TreeBlob, id}) {
		return nil
	}
	t, err := p.loadTree(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.problem(blobKey{index.TreeBlob, id}, "tree %s of %s in snapshot %s: %v", id.Short(), dir, sn.ID.Short(), err)
		return nil
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		np := path.Join(dir, n.Name)
		switch n.Type {
		case NodeDir:
			if err := p.markTree(ctx, sn, np, *n.Subtree); err != nil {
				return err
			}
		case NodeFile:
			if n.Database != nil {
				if err := p.markDatabase(ctx, sn, np, n); err != nil {
					return err
				}
				continue
			}
			for _, c := range n.Content {
				p.use(blobKey{index.DataBlob, c})
			}
		}
	}
	return nil
}

// markDatabase marks a database image's page map blobs and pages, one
// segment at a time (a map's pages are not held in memory at once).
func (p *pruner) markDatabase(ctx context.Context, sn *Snapshot, file string, n *Node) error {
	head := n.Database.PageMap
	if !p.use(blobKey{index.TreeBlob, head}) {
		return nil // the same map, and so the same pages, marked already
	}
	err := p.pages(ctx, n, func(meta []chunk.ID) {
		for _, id := range meta {
			p.use(blobKey{index.TreeBlob, id})
		}
	}, func(ids []chunk.ID) bool {
		for _, id := range ids {
			p.use(blobKey{index.DataBlob, id})
		}
		return true
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.problem(blobKey{index.TreeBlob, head}, "page map %s of %s in snapshot %s: %v", head.Short(), file, sn.ID.Short(), err)
	}
	return nil
}

// loadTreeBlob reads a blob of the tree namespace (a tree, or a page map
// blob) from where the index files place it, verified.
func (p *pruner) loadTreeBlob(ctx context.Context, id chunk.ID) ([]byte, error) {
	pb, ok := p.trees[id]
	if !ok {
		return nil, &BlobError{Type: index.TreeBlob, ID: id, Err: ErrBlobNotIndexed}
	}
	return p.r.LoadBlobAt(ctx, pb, nil)
}

func (p *pruner) loadTree(ctx context.Context, id chunk.ID) (*Tree, error) {
	buf, err := p.loadTreeBlob(ctx, id)
	if err != nil {
		return nil, err
	}
	return decodeTree(id, buf)
}

// pages resolves the page map of database node n: meta is called with the
// blobs that hold the map besides its head, then pages with the page ids,
// one segment at a time, until it returns false.
func (p *pruner) pages(ctx context.Context, n *Node, meta func([]chunk.ID), pages func([]chunk.ID) bool) error {
	head := n.Database.PageMap
	b, err := p.loadTreeBlob(ctx, head)
	if err != nil {
		return fmt.Errorf("load page map %s: %w", head.Short(), err)
	}
	m, err := decodePageMap(b)
	if err != nil {
		return fmt.Errorf("load page map %s: %w", head.Short(), err)
	}
	if m.PageSize != n.Database.PageSize || m.PageCount != n.Database.PageCount {
		return fmt.Errorf("page map %s: %d pages of %d bytes, but the node says %d of %d",
			head.Short(), m.PageCount, m.PageSize, n.Database.PageCount, n.Database.PageSize)
	}
	meta(m.MetaBlobs())
	pr, err := newPageResolver(m, func(id chunk.ID) ([]byte, error) { return p.loadTreeBlob(ctx, id) })
	if err != nil {
		return err
	}
	var seg []chunk.ID
	for i := range m.Segments {
		if err := ctx.Err(); err != nil {
			return err
		}
		if seg, err = pr.segment(i, seg); err != nil {
			return err
		}
		if !pages(seg) {
			return nil
		}
	}
	return nil
}

// listPacks numbers the packs on the backend, with their sizes. Names that
// are not ids are not ours and are left alone.
func (p *pruner) listPacks(ctx context.Context) error {
	err := p.r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		id, err := chunk.ParseID(fi.Name)
		if err != nil {
			return nil // not ours
		}
		if _, dup := p.packNum[id]; !dup {
			p.addPack(id, fi.Size)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	p.res.PacksBefore = len(p.packs)
	return nil
}

func (p *pruner) addPack(id chunk.ID, size int64) *prunePack {
	pp := &prunePack{id: id, size: size}
	p.packNum[id] = uint32(len(p.packs))
	p.packs = append(p.packs, pp)
	return pp
}

// walkIndex calls fn for every pack of every live index file, in order,
// loading one file at a time.
func (p *pruner) walkIndex(ctx context.Context, files []chunk.ID, fn func(file chunk.ID, pk index.Pack) error) error {
	for _, id := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		plain, err := p.r.LoadUnpacked(ctx, backend.IndexFile, id)
		if err != nil {
			return fmt.Errorf("index file %s: %w", id.Short(), err)
		}
		if _, err := index.WalkFile(plain, func(pk index.Pack) error { return fn(id, pk) }); err != nil {
			return fmt.Errorf("index file %s: %w", id.Short(), err)
		}
	}
	return nil
}

// readIndexFiles lists the index files and reads each once for what it
// supersedes and where it places tree blobs. Files that another listed
// file supersedes are ignored from then on, as every reader ignores them.
// An index file that cannot be read makes prune refuse: the packs it lists
// would look unreferenced.
func (p *pruner) readIndexFiles(ctx context.Context) error {
	if err := p.r.listIDs(ctx, backend.IndexFile, func(id chunk.ID) error {
		p.indexFiles = append(p.indexFiles, id)
		return nil
	}); err != nil {
		return fmt.Errorf("list index files: %w", err)
	}
	p.res.IndexFilesBefore = len(p.indexFiles)
	p.supersedes = map[chunk.ID][]chunk.ID{}
	// Tree locations with their file, until it is known which files are
	// live.
	type treeLoc struct {
		file int
		pb   index.PackedBlob
	}
	var trees []treeLoc
	p.opts.Progress.StartCounted(PhaseIndex, int64(len(p.indexFiles)), 0)
	for i, id := range p.indexFiles {
		if err := ctx.Err(); err != nil {
			return err
		}
		plain, err := p.r.LoadUnpacked(ctx, backend.IndexFile, id)
		p.opts.Progress.AddItem(0)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &PruneRefusedError{Reason: fmt.Sprintf("index file %s cannot be read: %v", id.Short(), err)}
		}
		sup, err := index.WalkFile(plain, func(pk index.Pack) error {
			if _, present := p.packNum[pk.ID]; !present {
				return nil
			}
			for _, b := range pk.Blobs {
				if b.Type == index.TreeBlob {
					trees = append(trees, treeLoc{i, index.PackedBlob{Blob: b, Pack: pk.ID}})
				}
			}
			return nil
		})
		if err != nil {
			return &PruneRefusedError{Reason: fmt.Sprintf("index file %s cannot be read: %v", id.Short(), err)}
		}
		if len(sup) > 0 {
			p.supersedes[id] = sup
		}
	}
	listed := map[chunk.ID]bool{}
	for _, id := range p.indexFiles {
		listed[id] = true
	}
	superseded := map[chunk.ID]bool{}
	for id, sup := range p.supersedes {
		for _, s := range sup {
			if s != id && listed[s] {
				superseded[s] = true
			}
		}
	}
	for _, id := range p.indexFiles {
		if !superseded[id] {
			p.live = append(p.live, id)
		}
	}
	p.trees = map[chunk.ID]index.PackedBlob{}
	for _, tl := range trees {
		if superseded[p.indexFiles[tl.file]] {
			continue
		}
		if _, ok := p.trees[tl.pb.ID]; !ok {
			p.trees[tl.pb.ID] = tl.pb
		}
	}
	return nil
}

// countUsage reads the live index files again: which packs are indexed,
// how many bytes each holds, and where each used blob is stored.
func (p *pruner) countUsage(ctx context.Context) error {
	err := p.walkIndex(ctx, p.live, func(_ chunk.ID, pk index.Pack) error {
		p.addIndexed(pk)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return &PruneRefusedError{Reason: err.Error()}
	}
	return err
}

// addIndexed records one pack description of a live index file.
func (p *pruner) addIndexed(pk index.Pack) {
	num, ok := p.packNum[pk.ID]
	if !ok {
		p.addPack(pk.ID, -1)
		num = p.packNum[pk.ID]
	}
	pp := p.packs[num]
	if pp.indexed {
		p.describedTwice++
		return // the first description wins, as for every reader
	}
	pp.indexed = true
	pp.blobs = len(pk.Blobs)
	var end int64
	for _, b := range pk.Blobs {
		pp.blobBytes += int64(b.Length)
		end = max(end, int64(b.Offset)+int64(b.Length))
	}
	if pp.size < 0 {
		return // missing: its blobs are stored nowhere
	}
	if pp.size != end+pack.HeaderSize(p.r.sealer, len(pk.Blobs)) {
		pp.damaged = true // not a place to keep blobs
		return
	}
	for _, b := range pk.Blobs {
		k := blobKey{b.Type, b.ID}
		at, ok := p.used.get(k)
		if !ok {
			continue
		}
		pp.potential += int64(b.Length)
		if at != noPack {
			p.dups[k] = append(p.dups[k], num)
			continue
		}
		// Kept here unless resolveDuplicates finds a better copy.
		p.used.set(k, num)
		pp.usedBlobs++
		pp.usedBytes += int64(b.Length)
	}
}

// checkUsable refuses when a used blob is stored nowhere (or the walk met
// an unreadable tree or page map).
func (p *pruner) checkUsable(ctx context.Context) error {
	missing := len(p.bad)
	for k, at := range p.used.all() {
		if at == noPack && !p.bad[k] {
			missing++
		}
	}
	if missing == 0 {
		return nil
	}
	if p.example == "" {
		ex, err := p.findMissing(ctx)
		if err != nil {
			return err
		}
		p.example = ex
	}
	return &PruneRefusedError{Reason: fmt.Sprintf("%d blobs used by snapshots are missing or unreadable (e.g. %s)", missing, p.example)}
}

// findMissing walks the snapshots again for an example of a used blob
// stored nowhere, to name it with its path.
func (p *pruner) findMissing(ctx context.Context) (string, error) {
	sns, err := p.r.Snapshots(ctx, func(chunk.ID, error) {})
	if err != nil {
		return "", err
	}
	sns = p.withoutForgotten(sns)
	lost := func(t index.BlobType, id chunk.ID) bool {
		at, _ := p.used.get(blobKey{t, id})
		return at == noPack
	}
	seen := map[chunk.ID]bool{}
	var found string
	var walk func(sn *Snapshot, dir string, id chunk.ID) error
	walk = func(sn *Snapshot, dir string, id chunk.ID) error {
		if found != "" || seen[id] {
			return nil
		}
		seen[id] = true
		if lost(index.TreeBlob, id) {
			found = fmt.Sprintf("tree %s of %s in snapshot %s", id.Short(), dir, sn.ID.Short())
			return nil
		}
		t, err := p.loadTree(ctx, id)
		if err != nil {
			return ctx.Err()
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			np := path.Join(dir, n.Name)
			name := func(kind string, id chunk.ID) {
				found = fmt.Sprintf("%s %s of %s in snapshot %s", kind, id.Short(), np, sn.ID.Short())
			}
			switch {
			case n.Type == NodeDir:
				if err := walk(sn, np, *n.Subtree); err != nil {
					return err
				}
			case n.Type == NodeFile && n.Database != nil:
				if lost(index.TreeBlob, n.Database.PageMap) {
					name("page map", n.Database.PageMap)
					break
				}
				_ = p.pages(ctx, n, func(meta []chunk.ID) {
					for _, id := range meta {
						if found == "" && lost(index.TreeBlob, id) {
							name("page map blob", id)
						}
					}
				}, func(ids []chunk.ID) bool {
					for _, id := range ids {
						if found == "" && lost(index.DataBlob, id) {
							name("data blob", id)
						}
					}
					return found == ""
				})
			case n.Type == NodeFile:
				for _, id := range n.Content {
					if lost(index.DataBlob, id) {
						name("data blob", id)
						break
					}
				}
			}
			if found != "" {
				return nil
			}
		}
		return nil
	}
	for _, sn := range sns {
		if err := walk(sn, "/", sn.Tree); err != nil {
			return "", err
		}
	}
	if found == "" {
		found = "one not found again"
	}
	return found, nil
}

// resolveDuplicates keeps each used blob stored more than once in exactly
// one pack, and moves its count there.
//
// Packs are ranked once, and every duplicated blob goes to its best-ranked
// pack: a pack that is fully used when it keeps its copies first (such as
// the new packs of an interrupted prune), then the pack with the larger
// used share, then the one with more used bytes, then the lower id. One
// ranking for all blobs keeps a set of duplicates together, so that the
// losing pack ends up unused rather than both ending up partly used.
func (p *pruner) resolveDuplicates(ctx context.Context) error {
	p.res.BlobsUsed = p.used.len()
	p.res.DuplicateBlobs = len(p.dups)
	if len(p.dups) == 0 {
		return nil
	}
	// The stored length of every copy: the live index files once more,
	// each pack's first description only, as countUsage read them.
	copies := make(map[blobKey][]loc, len(p.dups))
	seen := map[uint32]bool{}
	err := p.walkIndex(ctx, p.live, func(_ chunk.ID, pk index.Pack) error {
		num := p.packNum[pk.ID]
		pp := p.packs[num]
		if seen[num] || pp.size < 0 || pp.damaged {
			return nil
		}
		seen[num] = true
		for _, b := range pk.Blobs {
			k := blobKey{b.Type, b.ID}
			if _, dup := p.dups[k]; dup {
				copies[k] = append(copies[k], loc{num, b.Length})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	better := func(a, b uint32) bool {
		pa, pb := p.packs[a], p.packs[b]
		fa, fb := pa.potential == pa.blobBytes, pb.potential == pb.blobBytes
		if fa != fb {
			return fa
		}
		sa := float64(pa.potential) / float64(max(pa.blobBytes, 1))
		sb := float64(pb.potential) / float64(max(pb.blobBytes, 1))
		if sa != sb {
			return sa > sb
		}
		if pa.potential != pb.potential {
			return pa.potential > pb.potential
		}
		return pa.id.Compare(pb.id) < 0
	}
	for k, locs := range copies {
		first, _ := p.used.get(k)
		i := slices.IndexFunc(locs, func(l loc) bool { return l.pack == first })
		if i < 0 || len(locs) != len(p.dups[k])+1 {
			return fmt.Errorf("prune: internal error: the copies of %s blob %s changed between two reads of the index", k.t, k.id.Short())
		}
		best := locs[i]
		for _, l := range locs {
			if l.pack != best.pack && better(l.pack, best.pack) {
				best = l
			}
		}
		if best.pack == first {
			continue
		}
		pf, pb := p.packs[first], p.packs[best.pack]
		pf.usedBlobs--
		pf.usedBytes -= int64(locs[i].length)
		pb.usedBlobs++
		pb.usedBytes += int64(best.length)
		p.used.set(k, best.pack)
	}
	p.dups = nil
	return nil
}

// decide gives every pack its action, reports the plan and returns its
// steps, the packs to delete (sorted), and whether the index files must be
// rewritten.
func (p *pruner) decide() (steps []string, remove []chunk.ID, rewrite bool) {
	var partly []*prunePack
	var unusedN, unrefN, missingN int
	var unusedBytes, unrefBytes int64
	for _, pp := range p.packs {
		p.res.BytesUsed += pp.usedBytes
		switch {
		case !pp.indexed:
			pp.action = packUnref
			unrefN++
			unrefBytes += pp.size
		case pp.size < 0:
			pp.action = packMissing
			missingN++
		case pp.usedBlobs == 0:
			pp.action = packUnused
			unusedN++
			unusedBytes += pp.size
		case pp.usedBytes == pp.blobBytes:
			pp.action = packKeep
		default:
			pp.action = packKeep
			partly = append(partly, pp)
		}
	}
	// The emptiest first, so that few packs are rewritten for much space.
	slices.SortFunc(partly, func(a, b *prunePack) int {
		ua := float64(a.unused()) / float64(a.blobBytes)
		ub := float64(b.unused()) / float64(b.blobBytes)
		if c := cmp.Compare(ub, ua); c != 0 {
			return c
		}
		return a.id.Compare(b.id)
	})
	var left int64
	for _, pp := range partly {
		left += pp.unused()
	}
	limit := p.opts.maxUnused() * float64(p.res.BytesUsed)
	var repackUsed, repackTotal int64
	for _, pp := range partly {
		if float64(left) <= limit {
			break
		}
		pp.action = packRepack
		left -= pp.unused()
		p.res.PacksRepacked++
		p.res.BlobsRepacked += pp.usedBlobs
		repackUsed += pp.usedBytes
		repackTotal += pp.size
	}
	p.res.BytesUnusedLeft = left
	p.res.BytesRepacked = repackUsed
	p.res.PacksUnused, p.res.PacksUnreferenced, p.res.PacksMissingDropped = unusedN, unrefN, missingN

	for _, pp := range p.packs {
		switch pp.action {
		case packUnused, packUnref, packRepack:
			remove = append(remove, pp.id)
			p.res.BytesDeleted += pp.size
		}
	}
	slices.SortFunc(remove, chunk.ID.Compare)
	p.res.PacksDeleted = len(remove)

	// The index changes when packs leave it; a pack described by two
	// live index files, or a superseded file left by an interrupted run,
	// is worth a rewrite even when nothing else changes.
	rewrite = unusedN > 0 || missingN > 0 || p.res.PacksRepacked > 0 ||
		p.describedTwice > 0 || len(p.live) != len(p.indexFiles)

	if unusedN > 0 {
		steps = append(steps, p.act("delete %d unused packs (%s)", unusedN, FormatBytes(unusedBytes)))
	}
	if unrefN > 0 {
		steps = append(steps, p.act("delete %d unreferenced packs (%s, in no index: left by interrupted backups or prunes)", unrefN, FormatBytes(unrefBytes)))
	}
	if missingN > 0 {
		steps = append(steps, p.act("drop %d missing packs from the index (no snapshot uses their blobs)", missingN))
	}
	if p.res.PacksRepacked > 0 {
		steps = append(steps, p.act("repack %d packs (%s used of %s)", p.res.PacksRepacked, FormatBytes(repackUsed), FormatBytes(repackTotal)))
	}
	if rewrite {
		steps = append(steps, p.act("rewrite the index: replace %d index files", len(p.indexFiles)))
	}
	// New packs hold the repacked blobs plus their headers.
	if p.opts.DryRun {
		p.res.BytesWritten = repackUsed
		if p.res.PacksRepacked > 0 {
			p.res.PacksWritten = int(max(1, (repackUsed+int64(p.r.cfg.PackSize)-1)/int64(p.r.cfg.PackSize)))
		}
	}
	p.res.BytesFreed = p.res.BytesDeleted - p.res.BytesWritten
	p.res.PacksAfter = p.res.PacksBefore - len(remove) + p.res.PacksWritten
	p.res.IndexFilesAfter = p.res.IndexFilesBefore
	if rewrite {
		// An estimate; the run counts the files it writes.
		entries := p.res.BlobsRepacked
		for _, pp := range p.packs {
			if pp.action == packKeep {
				entries += pp.blobs
			}
		}
		p.res.IndexFilesAfter = (entries + indexFileBlobs - 1) / indexFileBlobs
	}
	return steps, remove, rewrite
}

// verifyKept checks, before any index file is removed, that every used
// blob is in a pack that stays or was copied into a new one: the last line
// of defence against a bug deleting data.
func (p *pruner) verifyKept() error {
	for k, at := range p.used.all() {
		if at == copiedPack {
			continue
		}
		if at == noPack || p.packs[at].action != packKeep {
			return fmt.Errorf("prune: internal error: %s blob %s would be lost; nothing was deleted", k.t, k.id.Short())
		}
	}
	return nil
}

// writeIndex writes the new index files: every kept pack as the old index
// describes it (all its entries, unused ones too, as its header lists
// them), then the repack's new packs, at most indexFileBlobs entries per
// file. It returns the ids of the files written.
//
// The new files supersede nothing. A reader ignores a file as soon as any
// file superseding it exists, so a set of several new files that each (or
// only some) named the old ones would hide the old entries while some new
// files were still unwritten, and a crash then would lose blobs. Without
// supersedes, the old files stay in force until they are removed; until
// then the two sets only duplicate each other, which every reader
// accepts.
func (p *pruner) writeIndex(ctx context.Context, rp *repacker) ([]chunk.ID, error) {
	var written []chunk.ID
	var batch []index.Pack
	n := 0
	perFile := indexFileBlobs
	if p.opts.indexFileBlobs > 0 {
		perFile = p.opts.indexFileBlobs
	}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// In id order, so that the same packs give the same file.
		slices.SortFunc(batch, func(a, b index.Pack) int { return a.ID.Compare(b.ID) })
		f := &index.File{Packs: batch}
		id, err := p.r.SaveUnpacked(ctx, backend.IndexFile, f.Encode())
		if err != nil {
			return fmt.Errorf("prune: write index: %w", err)
		}
		written = append(written, id)
		batch, n = nil, 0
		return nil
	}
	add := func(pk index.Pack) error {
		if n > 0 && n+len(pk.Blobs) > perFile {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, pk)
		n += len(pk.Blobs)
		return nil
	}
	err := p.walkIndex(ctx, p.live, func(_ chunk.ID, pk index.Pack) error {
		pp := p.packs[p.packNum[pk.ID]]
		if pp.action != packKeep || pp.emitted {
			return nil
		}
		pp.emitted = true
		return add(index.Pack{ID: pk.ID, Blobs: slices.Clone(pk.Blobs)})
	})
	if err != nil {
		return nil, err
	}
	if rp != nil {
		// The new packs, from the repack's own index files (each new
		// pack is in one of them; one that has the name of an old pack
		// may have been listed above already).
		err := p.walkIndex(ctx, rp.indexFiles, func(_ chunk.ID, pk index.Pack) error {
			if num, ok := p.packNum[pk.ID]; ok {
				if pp := p.packs[num]; pp.emitted {
					return nil
				} else {
					pp.emitted = true
				}
			}
			return add(index.Pack{ID: pk.ID, Blobs: slices.Clone(pk.Blobs)})
		})
		if err != nil {
			return nil, err
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	for _, pp := range p.packs {
		if pp.action == packKeep && !pp.emitted {
			return nil, fmt.Errorf("prune: internal error: pack %s was not written to the new index; nothing was deleted", pp.id.Short())
		}
	}
	return written, nil
}

// removeIndexFiles removes the old index files, except any the new index
// happens to share (identical content gives an identical name in an
// unencrypted repository). A file is removed only after every file it
// supersedes: removing a superseding file first would bring the superseded
// one back into force until it is removed too.
func (p *pruner) removeIndexFiles(ctx context.Context, old, written []chunk.ID) error {
	keep := map[chunk.ID]bool{}
	for _, id := range written {
		keep[id] = true
	}
	remaining := map[chunk.ID]bool{}
	for _, id := range old {
		if !keep[id] {
			remaining[id] = true
		}
	}
	var order []chunk.ID
	for len(remaining) > 0 {
		var ready []chunk.ID
		for id := range remaining {
			blocked := false
			for _, s := range p.supersedes[id] {
				if s != id && remaining[s] {
					blocked = true
					break
				}
			}
			if !blocked {
				ready = append(ready, id)
			}
		}
		if len(ready) == 0 { // a cycle of supersedes lists: nonsense, any order
			for id := range remaining {
				ready = append(ready, id)
			}
		}
		slices.SortFunc(ready, chunk.ID.Compare)
		for _, id := range ready {
			delete(remaining, id)
		}
		order = append(order, ready...)
	}
	lc := p.lockChecker()
	for _, id := range order {
		if err := lc(ctx); err != nil {
			return err
		}
		h := backend.Handle{Type: backend.IndexFile, Name: id.String()}
		if err := p.r.be.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return fmt.Errorf("prune: remove old index file %s: %w", id.Short(), err)
		}
	}
	return nil
}

// deletePacks deletes the packs in remove, which no index file lists any
// more. A new pack of the repack is never deleted, even if it has the name
// of one in remove (identical content in an unencrypted repository).
func (p *pruner) deletePacks(ctx context.Context, remove []chunk.ID, rp *repacker) error {
	lc := p.lockChecker()
	prog := p.opts.Progress
	prog.StartCounted(PhaseDelete, int64(len(remove)), 0)
	for _, id := range remove {
		if rp != nil {
			if _, fresh := rp.fresh[id]; fresh {
				prog.AddItem(0)
				continue
			}
		}
		if err := lc(ctx); err != nil {
			return err
		}
		if err := p.r.be.Remove(ctx, packHandle(id)); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return fmt.Errorf("prune: delete pack %s: %w", id.Short(), err)
		}
		prog.AddItem(0)
	}
	return nil
}

// lockChecker returns the lock check run before each removal: the full
// check (which asks the backend whether the lock object still exists) now
// and then, the in-memory one before every removal.
func (p *pruner) lockChecker() func(ctx context.Context) error {
	n := 0
	return func(ctx context.Context) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		l := p.r.lock.Load()
		if l == nil {
			return nil
		}
		n++
		if n%100 == 1 {
			return l.Check(ctx)
		}
		return l.Valid()
	}
}

// repack copies the used blobs of the packs to repack into new packs and
// returns the repacker, which knows the new packs and the index files that
// list them.
func (p *pruner) repack(ctx context.Context) (*repacker, error) {
	var todo []*prunePack
	for _, pp := range p.packs {
		if pp.action == packRepack {
			todo = append(todo, pp)
		}
	}
	slices.SortFunc(todo, func(a, b *prunePack) int { return a.id.Compare(b.id) })
	var bytes int64
	for _, pp := range todo {
		bytes += pp.size
	}
	prog := p.opts.Progress
	prog.StartCounted(PhaseRepack, int64(len(todo)), bytes)
	rp := newRepacker(ctx, p.r)
	var data, buf []byte
	for _, pp := range todo {
		var err error
		prog.SetCurrent("pack " + pp.id.Short())
		data, buf, err = p.repackOne(rp, pp, data, buf)
		if err != nil {
			rp.abort()
			return nil, err
		}
		prog.AddItem(pp.size)
	}
	if err := rp.finish(); err != nil {
		return nil, err
	}
	p.res.PacksWritten = len(rp.fresh)
	p.res.BytesWritten = rp.bytes
	p.res.BytesFreed = p.res.BytesDeleted - p.res.BytesWritten
	p.res.PacksAfter = p.res.PacksBefore - p.res.PacksDeleted + p.res.PacksWritten
	return rp, nil
}

// repackOne reads pack pp whole and copies the used blobs kept in it, each
// verified (decrypted, decompressed and hashed) but stored as it was. It
// reuses data for the pack and buf for plaintexts, and returns them.
func (p *pruner) repackOne(rp *repacker, pp *prunePack, data, buf []byte) ([]byte, []byte, error) {
	ctx := rp.ctx
	num := p.packNum[pp.id]
	data, err := backend.LoadAll(ctx, p.r.be, packHandle(pp.id), data)
	if err != nil {
		return data, buf, rp.cause(fmt.Errorf("prune: read pack %s: %w", pp.id.Short(), err))
	}
	// The pack's own header says where its blobs are; the index said the
	// same when the size matched. Every blob copied is verified, and the
	// count of copies is checked against what the index promised.
	hdr, err := pack.ParseHeader(p.r.sealer, data, int64(len(data)))
	if err != nil {
		return data, buf, fmt.Errorf("prune: pack %s: %w; run 'repo check --read-data'", pp.id.Short(), err)
	}
	copied := 0
	for _, b := range hdr {
		k := blobKey{b.Type, b.ID}
		if at, ok := p.used.get(k); !ok || at != num {
			continue
		}
		stored := data[int64(b.Offset) : int64(b.Offset)+int64(b.Length)] // inside the pack: ParseHeader checked
		if buf, err = p.r.openBlob(stored, index.PackedBlob{Blob: b, Pack: pp.id}, buf); err != nil {
			return data, buf, fmt.Errorf("prune: %w; run 'repo check --read-data' and 'repo check --repair'", err)
		}
		if err := rp.add(b, stored); err != nil {
			return data, buf, err
		}
		p.used.set(k, copiedPack)
		copied++
	}
	if copied != pp.usedBlobs {
		return data, buf, fmt.Errorf("prune: pack %s: its header lists %d of the %d used blobs the index places there; run 'repo check --read-data'", pp.id.Short(), copied, pp.usedBlobs)
	}
	return data, buf, nil
}

// repacker writes copied blobs into new packs, one per blob type at a
// time, uploads full packs on a few goroutines (at most maxUploads packs
// in memory besides the ones filling) and writes an index file for every
// indexEveryPacks uploaded packs, so that an interrupted prune keeps its
// work (the next run finds the blobs there and prefers those packs).
type repacker struct {
	r      *Repository
	ctx    context.Context
	cancel context.CancelCauseFunc

	writers map[index.BlobType]*pack.Writer
	uploads chan *pack.Writer
	wg      sync.WaitGroup

	mu sync.Mutex
	// fresh holds the ids of the uploaded packs; unindexed those not yet
	// in an index file; indexFiles the index files written for them
	// (after finish, every new pack is in one).
	fresh      map[chunk.ID]struct{}
	unindexed  []index.Pack
	indexFiles []chunk.ID
	bytes      int64
}

// maxUploads bounds the packs uploading at once (and so their buffers).
const maxUploads = 4

func newRepacker(ctx context.Context, r *Repository) *repacker {
	ctx, cancel := context.WithCancelCause(ctx)
	rp := &repacker{
		r: r, ctx: ctx, cancel: cancel,
		writers: map[index.BlobType]*pack.Writer{},
		uploads: make(chan *pack.Writer),
		fresh:   map[chunk.ID]struct{}{},
	}
	for range min(max(r.be.Properties().Connections, 1), maxUploads) {
		rp.wg.Go(rp.uploader)
	}
	return rp
}

// cause returns the error that stopped the repacker, if any, else err.
func (rp *repacker) cause(err error) error {
	if c := context.Cause(rp.ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

func (rp *repacker) maxPackData() int { return rp.r.cfg.PackSize + rp.r.cfg.PackSize/8 }

// add appends one stored blob (verified) to the pack of its type, shipping
// the pack when it is full.
func (rp *repacker) add(b index.Blob, stored []byte) error {
	w := rp.writers[b.Type]
	if w != nil && w.Count() > 0 && w.Size()+len(stored) > rp.maxPackData() {
		delete(rp.writers, b.Type)
		if err := rp.ship(w); err != nil {
			return err
		}
		w = nil
	}
	if w == nil {
		hint := rp.r.cfg.PackSize + rp.r.cfg.PackSize/8 + 512<<10
		if b.Type != index.DataBlob {
			hint = 256 << 10
		}
		w = pack.NewWriter(rp.r.sealer, hint)
		rp.writers[b.Type] = w
	}
	w.Add(index.Blob{Type: b.Type, ID: b.ID, RawLength: b.RawLength, Compression: b.Compression}, stored)
	if w.Size() >= rp.r.cfg.PackSize || w.Count() >= pack.MaxBlobs {
		delete(rp.writers, b.Type)
		return rp.ship(w)
	}
	return nil
}

func (rp *repacker) ship(w *pack.Writer) error {
	select {
	case rp.uploads <- w:
		return nil
	case <-rp.ctx.Done():
		return rp.cause(rp.ctx.Err())
	}
}

func (rp *repacker) uploader() {
	for w := range rp.uploads {
		if rp.ctx.Err() != nil {
			continue
		}
		if err := rp.upload(w); err != nil {
			rp.cancel(err)
		}
	}
}

// upload saves one pack and, every indexEveryPacks packs, an index file
// for the packs saved so far.
func (rp *repacker) upload(w *pack.Writer) error {
	data, id, blobs := w.Finalize()
	if err := rp.r.be.Save(rp.ctx, packHandle(id), backend.NewByteReader(data)); err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("prune: save pack %s: %w", id.Short(), err)
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.fresh[id] = struct{}{}
	rp.unindexed = append(rp.unindexed, index.Pack{ID: id, Blobs: blobs})
	rp.bytes += int64(len(data))
	if len(rp.unindexed) >= indexEveryPacks {
		return rp.writeIndexLocked()
	}
	return nil
}

// writeIndexLocked writes an index file for the packs not yet in one.
func (rp *repacker) writeIndexLocked() error {
	if len(rp.unindexed) == 0 {
		return nil
	}
	f := &index.File{Packs: rp.unindexed}
	id, err := rp.r.SaveUnpacked(rp.ctx, backend.IndexFile, f.Encode())
	if err != nil {
		return fmt.Errorf("prune: write index: %w", err)
	}
	rp.indexFiles = append(rp.indexFiles, id)
	rp.unindexed = nil
	return nil
}

// finish ships the partly filled packs, waits for the uploads and indexes
// the last packs.
func (rp *repacker) finish() error {
	for _, t := range []index.BlobType{index.DataBlob, index.TreeBlob} {
		if w := rp.writers[t]; w != nil && w.Count() > 0 {
			if err := rp.ship(w); err != nil {
				rp.abort()
				return err
			}
		}
	}
	rp.writers = nil
	close(rp.uploads)
	rp.wg.Wait()
	if err := rp.cause(nil); err != nil {
		rp.cancel(nil)
		return err
	}
	if err := rp.ctx.Err(); err != nil {
		return err
	}
	rp.mu.Lock()
	err := rp.writeIndexLocked()
	rp.mu.Unlock()
	rp.cancel(nil)
	return err
}

// abort stops the uploads; what was uploaded stays (in no index, or in the
// repacker's index files: both harmless).
func (rp *repacker) abort() {
	rp.cancel(errors.New("prune: repack aborted"))
	close(rp.uploads)
	rp.wg.Wait()
}

// FormatBytes renders n in binary units with one decimal, e.g. "985.3 MiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
