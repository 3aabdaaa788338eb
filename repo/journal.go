package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo/pack"
)

// The upload journal: every pack a Saver uploads is recorded in the local
// cache (cache/<repository id>/unindexed/<pack id>) until an index file
// names it. A backup that dies between the two (the server went away, the
// process was killed) leaves the records behind, and the next backup on
// this host indexes those packs instead of uploading their blobs again
// (ResumeUploads). Like the rest of the cache it is only a cache: without
// it (another host, a temporary cache) the packs stay unindexed until
// check --repair re-indexes them.

// journalName is the record of pack id in this process's journal.
func (r *Repository) journalName(id chunk.ID) string {
	return filepath.Join(r.journalDir, id.String())
}

// journalAdd records an uploaded pack. Failing to write the record only
// loses the resume, so it is not an error.
func (r *Repository) journalAdd(p index.Pack) {
	if r.journalDir == "" {
		return
	}
	if err := os.MkdirAll(r.journalDir, 0o700); err != nil {
		return
	}
	f := &index.File{Packs: []index.Pack{p}}
	tmp := r.journalName(p.ID) + ".tmp"
	if err := os.WriteFile(tmp, f.Encode(), 0o600); err != nil {
		return
	}
	_ = os.Rename(tmp, r.journalName(p.ID))
}

// journalDone drops the records of packs an index file now names.
func (r *Repository) journalDone(packs []index.Pack) {
	if r.journalDir == "" {
		return
	}
	for _, p := range packs {
		_ = os.Remove(r.journalName(p.ID))
	}
}

// deadJournals returns the journal directories of processes that are gone:
// a running backup's packs are its own to index.
func (r *Repository) deadJournals() []string {
	entries, err := os.ReadDir(r.journalRoot)
	if err != nil {
		return nil
	}
	var dirs []string
	for _, e := range entries {
		var pid int
		var start uint64
		if _, err := fmt.Sscanf(e.Name(), "%d-%d", &pid, &start); err != nil {
			continue
		}
		if alive, s := processStart(pid); alive && (s == start || s == 0 || start == 0) {
			continue
		}
		dirs = append(dirs, filepath.Join(r.journalRoot, e.Name()))
	}
	return dirs
}

// ResumeStats is what ResumeUploads recovered.
type ResumeStats struct {
	Packs int
	Blobs int
}

// ResumeUploads indexes the packs that an earlier, interrupted run on this
// host uploaded but did not index (see the journal above): those still
// stored with the size their blobs imply get an index file; records of
// packs that are indexed already or gone are dropped. The index must be
// loaded; the caller holds at least a shared lock.
func (r *Repository) ResumeUploads(ctx context.Context) (ResumeStats, error) {
	var st ResumeStats
	if r.journalRoot == "" {
		return st, nil
	}
	var packs []index.Pack
	var files []string // records of packs, in the order of packs
	var drop []string  // records of packs that need nothing
	for _, dir := range r.deadJournals() {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // only a cache
		}
		if len(entries) == 0 {
			_ = os.Remove(dir)
		}
		for _, e := range entries {
			name := filepath.Join(dir, e.Name())
			id, err := chunk.ParseID(e.Name())
			if err != nil {
				drop = append(drop, name) // a leftover .tmp
				continue
			}
			b, err := os.ReadFile(name)
			if err != nil {
				continue
			}
			f, err := index.DecodeFile(b)
			if err != nil || len(f.Packs) != 1 || f.Packs[0].ID != id || len(f.Packs[0].Blobs) == 0 {
				drop = append(drop, name)
				continue
			}
			p, keep, err := r.resumable(ctx, f.Packs[0])
			if err != nil {
				return st, err
			}
			if !keep {
				drop = append(drop, name)
				continue
			}
			packs = append(packs, p)
			files = append(files, name)
			st.Packs++
			st.Blobs += len(p.Blobs)
		}
	}
	removeAll := func(names []string) {
		for _, n := range names {
			_ = os.Remove(n)
		}
	}
	removeAll(drop)
	if len(packs) == 0 {
		return st, nil
	}
	f := &index.File{Packs: packs}
	id, err := r.SaveUnpacked(ctx, backend.IndexFile, f.Encode())
	if err != nil {
		return st, fmt.Errorf("resume uploads: write index: %w", err)
	}
	if err := r.cache.Add(id, f); err != nil {
		return st, fmt.Errorf("resume uploads: %w", err)
	}
	removeAll(files)
	return st, nil
}

// resumable reports whether the recorded pack p needs indexing: it is
// not indexed yet and is stored with the size its blobs imply.
func (r *Repository) resumable(ctx context.Context, p index.Pack) (index.Pack, bool, error) {
	id := p.ID
	if pb, ok, err := r.cache.Lookup(p.Blobs[0].Type, p.Blobs[0].ID); err == nil && ok && pb.Pack == id {
		return p, false, nil // indexed after all
	}
	var end int64
	for _, b := range p.Blobs {
		end = max(end, int64(b.Offset)+int64(b.Length))
	}
	fi, err := r.be.Stat(ctx, packHandle(id))
	switch {
	case errors.Is(err, backend.ErrNotExist):
		return p, false, nil
	case err != nil:
		return p, false, fmt.Errorf("resume uploads: %w", err)
	case fi.Size != end+pack.HeaderSize(r.sealer, len(p.Blobs)):
		return p, false, nil // not the pack recorded: leave it to check
	}
	return p, true, nil
}
