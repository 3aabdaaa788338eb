package repo

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/source"
)

// RepairOptions configure Repair.
type RepairOptions struct {
	// ReadData reads every pack to find damaged blobs; without it only
	// packs that are visibly damaged (wrong size) and unindexed packs are
	// read.
	ReadData bool
	// DryRun reports what would be done and writes nothing.
	DryRun bool
	// From are the paths to heal missing blobs from; nil means the paths of
	// the snapshots with broken files, where they exist on this host; an
	// empty non-nil slice disables healing.
	From []string
	// NoQuarantine removes damaged packs instead of moving them to
	// quarantine/.
	NoQuarantine bool
	// SkipHeal and SkipPurge stop after the earlier steps
	// (purge-broken-files runs only the purge).
	SkipHeal, SkipPurge bool
	// Report receives one line per action taken (or planned).
	Report func(msg string)
	// Op names the operation in its plan: OpRepair (the default) or
	// OpPurge (purge-broken-files).
	Op string
	// Progress, when set, is updated in phases PhaseScan (packs read to
	// find damage), PhaseSalvage (damaged packs salvaged), PhaseHeal
	// (source files read) and PhasePurge (snapshots rewritten).
	Progress *Progress
}

// RepairResult is what Repair did (or, with DryRun, would do).
type RepairResult struct {
	PacksReindexed     int          `json:"packs_reindexed"`
	PacksMissing       int          `json:"packs_missing"`
	PacksDamaged       int          `json:"packs_damaged"`
	BlobsSalvaged      int          `json:"blobs_salvaged"`
	IndexFilesReplaced int          `json:"index_files_replaced"`
	BlobsHealed        int          `json:"blobs_healed"`
	FilesHealed        []string     `json:"files_healed,omitempty"`
	FilesPurged        []BrokenFile `json:"files_purged,omitempty"`
	SnapshotsRewritten int          `json:"snapshots_rewritten"`
	SnapshotsRemoved   int          `json:"snapshots_removed"`
	BytesLost          int64        `json:"bytes_lost"`
}

// Repair brings the repository back to a state that check accepts, in
// steps that are each safe to interrupt and re-run (docs/repair.md):
//
//  1. Salvage: every verifiable blob of a damaged pack is stored again in
//     new packs (with their own index file).
//  2. Index: one new index file, listing every intact pack (including
//     intact packs that no index listed, from their headers), supersedes
//     all existing ones (unreadable ones included), which are then
//     removed. Missing and damaged packs drop out with it; the damaged
//     ones are then moved to quarantine/ (or removed).
//  3. Heal: sources are read and every chunk whose id is among the missing
//     blobs is uploaded again, which makes old snapshots whole without
//     rewriting them.
//  4. Purge: snapshots that still miss blobs are rewritten without the
//     broken files (tagged "repaired", naming the original) and the
//     originals removed; a snapshot whose root tree is lost is removed.
//
// The caller holds the exclusive lock; the index must not be loaded (a
// broken index file would make that fail) — Repair loads it itself.
func (r *Repository) Repair(ctx context.Context, opts RepairOptions) (RepairResult, error) {
	if opts.Report == nil {
		opts.Report = func(string) {}
	}
	pl := &repairPlan{r: r, op: cmp.Or(opts.Op, OpRepair), dryRun: opts.DryRun}
	if !opts.DryRun {
		prior, err := r.InterruptedPlans(ctx, pl.op, opts.Report)
		if err != nil {
			return RepairResult{}, err
		}
		pl.prior = prior
	}
	res, err := r.repair(ctx, opts, pl)
	if err == nil && !opts.DryRun {
		err = pl.done(ctx)
	}
	return res, err
}

// repairPlan writes a repair's plan (plan.go) once, right before its first
// change, with the actions announced so far as its steps; and removes it,
// together with the plans of interrupted earlier runs, when the repair
// completed. A repair that finds nothing to do writes no plan.
type repairPlan struct {
	r      *Repository
	op     string
	dryRun bool
	steps  []string
	plan   *Plan
	prior  []*Plan
}

// note records an announced action as a step of the plan.
func (p *repairPlan) note(msg string) { p.steps = append(p.steps, msg) }

// begin saves the plan unless it was saved already; call it before every
// change. removePacks and removeIndex name what the repair will remove.
func (p *repairPlan) begin(ctx context.Context, removePacks, removeIndex []chunk.ID) error {
	if p.dryRun || p.plan != nil {
		return nil
	}
	pl := &Plan{
		Op:          p.op,
		Steps:       append(slices.Clone(p.steps), "then heal or purge the files that still miss data"),
		RemovePacks: removePacks,
		RemoveIndex: removeIndex,
	}
	if err := p.r.SavePlan(ctx, pl); err != nil {
		return err
	}
	p.plan = pl
	return nil
}

// done removes the plan and those of interrupted earlier runs: a completed
// repair has finished their work too.
func (p *repairPlan) done(ctx context.Context) error {
	plans := p.prior
	if p.plan != nil {
		plans = append(plans, p.plan)
	}
	return p.r.RemovePlans(ctx, plans)
}

func (r *Repository) repair(ctx context.Context, opts RepairOptions, pl *repairPlan) (RepairResult, error) {
	var res RepairResult
	report := opts.Report
	act := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		pl.note(msg)
		if opts.DryRun {
			msg = "would " + msg
		}
		report(msg)
	}
	prog := opts.Progress
	d, err := r.Scan(ctx, ScanOptions{ReadData: opts.ReadData, Progress: prog})
	if err != nil {
		return res, err
	}
	res.PacksMissing = len(d.MissingPacks)
	res.PacksDamaged = len(d.DamagedPacks)

	// 1. Re-index: intact packs no index lists (written with step 3).
	var healthyUnindexed []index.Pack
	for _, id := range d.UnindexedPacks {
		blobs, ok := d.intactUnindexed[id]
		if !ok {
			continue
		}
		healthyUnindexed = append(healthyUnindexed, index.Pack{ID: id, Blobs: blobs})
		act("re-index pack %s (%d blobs, in no index)", id.Short(), len(blobs))
	}
	res.PacksReindexed = len(healthyUnindexed)
	for _, id := range d.MissingPacks {
		act("drop pack %s from the index: it is missing", id.Short())
	}
	// 2. Salvage, before the index that drops the damaged packs is
	// written: a crash in between leaves the salvaged copies indexed, and
	// a re-run finds the blobs intact there.
	damaged := slices.SortedFunc(maps.Keys(d.DamagedPacks), chunk.ID.Compare)
	if !opts.DryRun {
		// The cache may fail to take unreadable index files: it still
		// holds the others, which is all the Saver needs.
		if _, err := r.LoadIndex(ctx); err != nil && ctx.Err() != nil {
			return res, err
		}
	}
	var removeIndex []chunk.ID
	if d.NeedsIndexRewrite() || len(healthyUnindexed) > 0 {
		removeIndex = d.IndexFiles
	}
	begin := func() error { return pl.begin(ctx, damaged, removeIndex) }
	if len(damaged) > 0 {
		var s *Saver
		if !opts.DryRun {
			if err := begin(); err != nil {
				return res, err
			}
			s = r.NewSaver(ctx)
		}
		prog.StartCounted(PhaseSalvage, int64(len(damaged)), 0)
		for _, id := range damaged {
			prog.SetCurrent("pack " + id.Short())
			n := 0
			for k, pb := range d.salvage {
				if pb.Pack != id {
					continue
				}
				n++
				if s == nil {
					continue
				}
				plain, err := r.LoadBlobAt(ctx, pb, nil)
				if err != nil {
					// Verified by Scan a moment ago: the pack changed
					// under us; leave the blob lost.
					report(fmt.Sprintf("warning: blob %s of pack %s no longer readable: %v", k.id.Short(), id.Short(), err))
					continue
				}
				if _, _, err := s.SaveBlobAgain(k.t, plain); err != nil {
					s.Finish()
					return res, err
				}
			}
			res.BlobsSalvaged += n
			prog.AddItem(0)
			act("salvage %d readable blobs of damaged pack %s (%s)", n, id.Short(), d.DamagedPacks[id])
		}
		if s != nil {
			if _, err := s.Finish(); err != nil {
				return res, fmt.Errorf("salvage: %w", err)
			}
		}
	}

	// 3. The new index: every intact pack, the old files superseded. The
	// salvage's own index file is not among them and stays.
	if d.NeedsIndexRewrite() || len(healthyUnindexed) > 0 {
		f := &index.File{Supersedes: slices.Clone(d.IndexFiles)}
		for id, sp := range d.indexed {
			if _, ok := d.present[id]; !ok {
				continue
			}
			if _, bad := d.DamagedPacks[id]; bad {
				continue
			}
			f.Packs = append(f.Packs, index.Pack{ID: id, Blobs: sp.blobs})
		}
		f.Packs = append(f.Packs, healthyUnindexed...)
		slices.SortFunc(f.Packs, func(a, b index.Pack) int { return a.ID.Compare(b.ID) })
		act("replace %d index files by one listing %d intact packs", len(d.IndexFiles), len(f.Packs))
		res.IndexFilesReplaced = len(d.IndexFiles)
		if !opts.DryRun {
			if err := begin(); err != nil {
				return res, err
			}
			// Written first, so that a crash leaves the old files
			// superseded, never a repository without an index.
			if _, err := r.SaveUnpacked(ctx, backend.IndexFile, f.Encode()); err != nil {
				return res, fmt.Errorf("write index: %w", err)
			}
			for _, old := range d.IndexFiles {
				if err := r.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: old.String()}); err != nil && !errors.Is(err, backend.ErrNotExist) {
					return res, fmt.Errorf("remove old index file %s: %w", old.Short(), err)
				}
			}
		}
	}

	if !opts.DryRun {
		if _, err := r.LoadIndex(ctx); err != nil {
			return res, err
		}
	}
	// 4. Quarantine what was salvaged, now that no index names it.
	if len(damaged) > 0 {
		for _, id := range damaged {
			where := "move damaged pack %s to quarantine/"
			if opts.NoQuarantine {
				where = "remove damaged pack %s"
			}
			act(where, id.Short())
			if opts.DryRun {
				continue
			}
			if err := r.quarantine(ctx, id, !opts.NoQuarantine); err != nil {
				return res, err
			}
		}
	}

	// What is missing now: with DryRun, what Scan says a repair keeps.
	avail := func(t index.BlobType, id chunk.ID) bool {
		if opts.DryRun {
			return d.Recoverable(t, id)
		}
		_, ok, err := r.LookupBlob(t, id)
		return err == nil && ok
	}
	var badSnaps []chunk.ID
	sns, err := r.Snapshots(ctx, func(id chunk.ID, err error) {
		if ctx.Err() == nil {
			act("move unreadable snapshot %s to quarantine/ (%v)", id.Short(), err)
			badSnaps = append(badSnaps, id)
		}
	})
	if err != nil {
		return res, err
	}
	res.SnapshotsRemoved += len(badSnaps)
	if !opts.DryRun && len(badSnaps) > 0 {
		if err := begin(); err != nil {
			return res, err
		}
		for _, id := range badSnaps {
			if err := r.quarantineObject(ctx, backend.Handle{Type: backend.SnapshotFile, Name: id.String()}, !opts.NoQuarantine); err != nil {
				return res, err
			}
		}
	}
	broken, err := r.brokenFiles(ctx, d, sns, avail, opts.DryRun)
	if err != nil {
		return res, err
	}
	if len(broken) == 0 {
		return res, nil
	}

	// 5. Heal.
	if !opts.SkipHeal {
		from := opts.From
		if from == nil {
			from = healSources(sns, broken)
		}
		missing := map[blobKey]bool{}
		w := r.availWalker(d, avail, opts.DryRun)
		for _, sn := range sns {
			if err := w.missingBlobs(ctx, sn, missing); err != nil {
				return res, err
			}
		}
		missingBefore := maps.Clone(missing)
		if len(missing) > 0 {
			if err := begin(); err != nil {
				return res, err
			}
		}
		healed, err := r.heal(ctx, from, missing, opts.DryRun, report, prog)
		if err != nil {
			return res, err
		}
		res.BlobsHealed = healed
		if healed > 0 {
			act("heal %d missing blobs from %v", healed, from)
			if opts.DryRun {
				inner := avail
				avail = func(t index.BlobType, id chunk.ID) bool {
					k := blobKey{t, id}
					return inner(t, id) || missingBefore[k] && !missing[k]
				}
			}
			after, err := r.brokenFiles(ctx, d, sns, avail, opts.DryRun)
			if err != nil {
				return res, err
			}
			still := map[string]bool{}
			for _, bf := range after {
				still[bf.Snapshot.String()+bf.Path] = true
			}
			for _, bf := range broken {
				if !still[bf.Snapshot.String()+bf.Path] {
					res.FilesHealed = append(res.FilesHealed, fmt.Sprintf("snapshot %s %s", bf.Snapshot.Short(), bf.Path))
				}
			}
			broken = after
		}
	}
	if len(broken) == 0 || opts.SkipPurge {
		return res, nil
	}

	// 6. Purge.
	if err := begin(); err != nil {
		return res, err
	}
	err = r.purge(ctx, d, sns, broken, avail, opts, &res, act)
	return res, err
}

// quarantine moves pack id to quarantine/ (keep) or removes it.
func (r *Repository) quarantine(ctx context.Context, id chunk.ID, keep bool) error {
	return r.quarantineObject(ctx, packHandle(id), keep)
}

// quarantineObject moves the object h to quarantine/ under its name (keep)
// or removes it. Names are hashes, so a pack and a snapshot never collide.
func (r *Repository) quarantineObject(ctx context.Context, h backend.Handle, keep bool) error {
	if keep {
		data, err := backend.LoadAll(ctx, r.be, h, nil)
		if errors.Is(err, backend.ErrNotExist) {
			return nil // done by an earlier, interrupted run
		}
		if err != nil {
			return fmt.Errorf("quarantine %v: %w", h, err)
		}
		q := backend.Handle{Type: backend.QuarantineFile, Name: h.Name}
		if err := r.be.Save(ctx, q, backend.NewByteReader(data)); err != nil && !errors.Is(err, backend.ErrExists) {
			return fmt.Errorf("quarantine %v: %w", h, err)
		}
	}
	if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("remove damaged %v: %w", h, err)
	}
	return nil
}

// availWalker is a broken-file walker over what is available now (or,
// with dryRun, what Scan says survives).
func (r *Repository) availWalker(d *Damage, avail func(index.BlobType, chunk.ID) bool, dryRun bool) *brokenWalker {
	w := d.walker(r)
	w.avail = avail
	if !dryRun {
		w.load = func(ctx context.Context, t index.BlobType, id chunk.ID) ([]byte, error) {
			return r.LoadBlob(ctx, t, id, nil)
		}
	}
	return w
}

// brokenFiles lists the broken files of sns against avail.
func (r *Repository) brokenFiles(ctx context.Context, d *Damage, sns []*Snapshot, avail func(index.BlobType, chunk.ID) bool, dryRun bool) ([]BrokenFile, error) {
	w := r.availWalker(d, avail, dryRun)
	var out []BrokenFile
	for _, sn := range sns {
		if err := w.walk(ctx, sn, "/", sn.Tree, func(bf BrokenFile) { out = append(out, bf) }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// missingBlobs adds the data blobs sn references that are not available.
func (w *brokenWalker) missingBlobs(ctx context.Context, sn *Snapshot, missing map[blobKey]bool) error {
	var walk func(id chunk.ID) error
	walk = func(id chunk.ID) error {
		t, err := w.tree(ctx, id)
		if err != nil {
			return nil // a lost tree cannot be healed from files
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			switch n.Type {
			case NodeDir:
				if err := walk(*n.Subtree); err != nil {
					return err
				}
			case NodeFile:
				ids := n.Content
				if n.Database != nil {
					if ids, err = w.pageIDs(ctx, n); err != nil {
						continue
					}
				}
				for _, id := range ids {
					if !w.avail(index.DataBlob, id) {
						missing[blobKey{index.DataBlob, id}] = true
					}
				}
			}
		}
		return ctx.Err()
	}
	return walk(sn.Tree)
}

// healSources are the paths of the snapshots with broken files that exist
// on this host.
func healSources(sns []*Snapshot, broken []BrokenFile) []string {
	affected := map[chunk.ID]bool{}
	for _, bf := range broken {
		affected[bf.Snapshot] = true
	}
	seen := map[string]bool{}
	var out []string
	for _, sn := range sns {
		if !affected[sn.ID] || sn.Source.Kind == SourceStdin || sn.Source.Kind == SourceCommand {
			continue
		}
		for _, p := range sn.Paths {
			if seen[p] {
				continue
			}
			seen[p] = true
			if _, err := os.Lstat(p); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// sqliteMagic starts every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// heal reads every regular file below the paths in from, cuts it as a
// backup would (files class, streams class, and SQLite pages for a
// database file), and uploads each chunk whose id is in missing, deleting
// it from missing. It returns how many blobs it found.
func (r *Repository) heal(ctx context.Context, from []string, missing map[blobKey]bool, dryRun bool, report func(string), prog *Progress) (int, error) {
	if len(missing) == 0 || len(from) == 0 {
		return 0, nil
	}
	prog.StartPhase(PhaseHeal)
	var s *Saver
	if !dryRun {
		s = r.NewSaver(ctx)
	}
	found := 0
	consider := func(data []byte) error {
		id := r.hasher.Sum(data)
		k := blobKey{index.DataBlob, id}
		if !missing[k] {
			return nil
		}
		delete(missing, k)
		found++
		if s == nil {
			return nil
		}
		_, _, err := s.SaveBlob(index.DataBlob, data)
		return err
	}
	classes := []chunk.Class{r.cfg.ChunkClasses[ClassFiles]}
	if c, ok := r.cfg.ChunkClasses[ClassStreams]; ok {
		classes = append(classes, c)
	}
	var chunkers []*chunk.Chunker
	for _, c := range classes {
		chunkers = append(chunkers, chunk.NewChunker(r.cfg.Polynomial, c))
	}
	scratch := make([]byte, r.cfg.ChunkClasses[ClassFiles].MaxSize)
	healFile := func(p string) error {
		prog.SetCurrent(p)
		defer prog.AddFiles(1)
		for _, c := range chunkers {
			f, err := source.OpenFile(p)
			if err != nil {
				report(fmt.Sprintf("warning: heal: %s: %v", p, err))
				return nil
			}
			c.Reset(f)
			for len(missing) > 0 {
				b, err := c.Next(scratch)
				if err == io.EOF {
					break
				}
				if err != nil {
					report(fmt.Sprintf("warning: heal: %s: %v", p, err))
					break
				}
				prog.AddBytes(int64(len(b)))
				if err := consider(b); err != nil {
					f.Close()
					return err
				}
			}
			f.Close()
		}
		return healPages(p, consider)
	}
	var err error
	for _, root := range from {
		err = filepath.WalkDir(root, func(p string, de fs.DirEntry, werr error) error {
			if werr != nil {
				report(fmt.Sprintf("warning: heal: %v", werr))
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(missing) == 0 {
				return filepath.SkipAll
			}
			if de.Type().IsRegular() {
				return healFile(p)
			}
			return nil
		})
		if err != nil {
			break
		}
	}
	if s != nil {
		if _, ferr := s.Finish(); err == nil && ferr != nil {
			err = fmt.Errorf("heal: %w", ferr)
		}
	}
	return found, err
}

// healPages offers the pages of p to consider when p is a SQLite database
// (the unit a database image is stored in). The file is read as it is on
// disk: pages a -wal holds are not seen, which only means fewer heal.
func healPages(p string, consider func([]byte) error) error {
	f, err := source.OpenFile(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	hdr := make([]byte, 100)
	if _, err := io.ReadFull(f, hdr); err != nil || !bytes.Equal(hdr[:16], sqliteMagic) {
		return nil
	}
	size := int(hdr[16])<<8 | int(hdr[17])
	if size == 1 {
		size = 65536
	}
	if size < 512 || size&(size-1) != 0 {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	page := make([]byte, size)
	for {
		if _, err := io.ReadFull(f, page); err != nil {
			return nil
		}
		if err := consider(page); err != nil {
			return err
		}
	}
}

// purge rewrites the snapshots with broken files without them.
func (r *Repository) purge(ctx context.Context, d *Damage, sns []*Snapshot, broken []BrokenFile, avail func(index.BlobType, chunk.ID) bool, opts RepairOptions, res *RepairResult, act func(string, ...any)) error {
	bySnap := map[chunk.ID][]BrokenFile{}
	for _, bf := range broken {
		bySnap[bf.Snapshot] = append(bySnap[bf.Snapshot], bf)
	}
	w := r.availWalker(d, avail, opts.DryRun)
	var s *Saver
	if !opts.DryRun {
		s = r.NewSaver(ctx)
	}
	prog := opts.Progress
	prog.StartCounted(PhasePurge, int64(len(bySnap)), 0)
	type rewrite struct {
		old *Snapshot
		new *Snapshot // nil: remove
		// rewritten: the rewrite exists already (an interrupted run);
		// only the old one is left to remove.
		rewritten bool
	}
	var plan []rewrite
	for _, sn := range sns {
		bfs := bySnap[sn.ID]
		if len(bfs) == 0 {
			continue
		}
		for _, bf := range bfs {
			res.FilesPurged = append(res.FilesPurged, bf)
			res.BytesLost += bf.BytesLost
		}
		prog.SetCurrent("snapshot " + sn.ID.Short())
		prog.AddItem(0)
		root, err := w.rewriteTree(ctx, s, sn.Tree)
		if err != nil {
			if s != nil {
				s.Finish()
			}
			return err
		}
		if root == nil {
			act("remove snapshot %s: its root tree is lost", sn.ID.Short())
			plan = append(plan, rewrite{old: sn})
			continue
		}
		orig := sn.ID
		if sn.Original != nil {
			orig = *sn.Original // repaired twice: keep the first original
		}
		// A run interrupted after saving the rewrite but before removing
		// the original left the rewrite behind; sealed snapshots get a new
		// id each time, so look for it by content rather than save another.
		if slices.ContainsFunc(sns, func(o *Snapshot) bool {
			return o.ID != sn.ID && o.Original != nil && *o.Original == orig && o.Tree == *root
		}) {
			act("remove snapshot %s: its rewrite exists already", sn.ID.Short())
			plan = append(plan, rewrite{old: sn, rewritten: true})
			continue
		}
		nsn := *sn
		nsn.Tree = *root
		nsn.Original = &orig
		if !slices.Contains(nsn.Tags, "repaired") {
			nsn.Tags = append(slices.Clone(nsn.Tags), "repaired")
		}
		nsn.Purged = slices.Clone(sn.Purged)
		if sn.Summary != nil {
			sum := *sn.Summary
			nsn.Summary = &sum
		}
		for _, bf := range bfs {
			nsn.Purged = append(nsn.Purged, bf.Path)
			if nsn.Summary != nil && bf.Kind != "dir" {
				nsn.Summary.TotalFiles--
				nsn.Summary.TotalBytes -= int64(bf.Size)
			}
		}
		act("rewrite snapshot %s without %d broken entries", sn.ID.Short(), len(bfs))
		plan = append(plan, rewrite{old: sn, new: &nsn})
	}
	if s != nil {
		if _, err := s.Finish(); err != nil {
			return fmt.Errorf("purge: %w", err)
		}
	}
	for _, p := range plan {
		if p.new == nil && !p.rewritten {
			res.SnapshotsRemoved++
		} else {
			res.SnapshotsRewritten++
		}
		if opts.DryRun {
			continue
		}
		// The new snapshot before the removal of the old: a crash in
		// between leaves both, and a re-run finds the rewrite (same
		// original, same tree) and only removes the old one.
		if p.new != nil {
			if err := r.SaveSnapshot(ctx, p.new); err != nil {
				return err
			}
		}
		if err := r.RemoveSnapshot(ctx, p.old.ID); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return err
		}
	}
	return nil
}

// rewriteTree returns the id of tree id without its broken entries, stored
// with s (nil: a dry run, ids computed but nothing stored); nil when the
// tree itself is lost.
func (w *brokenWalker) rewriteTree(ctx context.Context, s *Saver, id chunk.ID) (*chunk.ID, error) {
	t, err := w.tree(ctx, id)
	if err != nil {
		return nil, nil
	}
	out := &Tree{Nodes: make([]Node, 0, len(t.Nodes))}
	changed := false
	for i := range t.Nodes {
		n := t.Nodes[i]
		switch n.Type {
		case NodeDir:
			sub, err := w.rewriteTree(ctx, s, *n.Subtree)
			if err != nil {
				return nil, err
			}
			if sub == nil {
				changed = true
				continue
			}
			if *sub != *n.Subtree {
				changed = true
				n.Subtree = sub
			}
		case NodeFile:
			if _, broken := w.file(ctx, &n); broken {
				changed = true
				continue
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	if !changed {
		return &id, nil
	}
	if s == nil {
		buf, err := encodeTree(out)
		if err != nil {
			return nil, err
		}
		nid := w.r.hasher.Sum(buf)
		return &nid, nil
	}
	nid, err := s.SaveTree(out)
	if err != nil {
		return nil, err
	}
	return &nid, nil
}
