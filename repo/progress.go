package repo

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Progress is how a long operation (Backup, Restore, Check, Prune, Repair,
// Scan) tells how far it is. The operation updates it; a display polls
// State from another goroutine at its own pace. Updates are atomic adds and
// stores, never a lock, so they may sit in per-chunk paths.
//
// Every method is safe for concurrent use, and a nil *Progress ignores
// every update (and State returns the zero state): operations call the
// methods without checking whether anyone watches. Giving an operation a
// Progress may make it do extra work to know its totals (Backup walks the
// targets a second time, Restore may read the trees twice); pass nil when
// nothing is shown.
//
// An operation runs in phases (the Phase constants). StartPhase zeroes the
// done and total counters, so the figures are those of the current phase;
// the error count is the whole operation's. A State taken while a phase
// starts may mix the two phases' figures for that one poll.
type Progress struct {
	phase   atomic.Pointer[string]
	current atomic.Pointer[string]
	// started is when the phase started, in Unix nanoseconds.
	started atomic.Int64

	filesDone, filesTotal atomic.Int64
	bytesDone, bytesTotal atomic.Int64
	itemsDone, itemsTotal atomic.Int64
	errors                atomic.Int64
	// final is set once the totals of the phase are complete; until then
	// they only grow (Backup's scanner is still counting).
	final atomic.Bool
}

// Phases of the operations, in ProgressState.Phase. Which counters a phase
// fills is said next to it; the others stay zero.
const (
	// PhaseBackup: files and bytes of regular files and database images
	// processed (unchanged ones count as done at once, with their size);
	// totals from a concurrent walk of the targets, final when it ends.
	PhaseBackup = "backup"
	// PhaseRestore: regular files and bytes written or kept.
	PhaseRestore = "restore"
	// PhaseIndex: index files read (items), by check and prune.
	PhaseIndex = "index"
	// PhaseSnapshots: snapshots whose trees were checked (items).
	PhaseSnapshots = "snapshots"
	// PhaseReadData: packs read and verified by check --read-data (items
	// and their bytes).
	PhaseReadData = "read-data"
	// PhaseMark: snapshots whose trees prune walked to find the used
	// blobs (items).
	PhaseMark = "mark"
	// PhaseRepack: packs prune repacked (items and their bytes).
	PhaseRepack = "repack"
	// PhaseDelete: packs prune deleted (items).
	PhaseDelete = "delete"
	// PhaseScan: packs read by repair and list-broken-files to find damage
	// (items and their bytes).
	PhaseScan = "scan"
	// PhaseSalvage: damaged packs whose readable blobs repair stored again
	// (items).
	PhaseSalvage = "salvage"
	// PhaseHeal: source files repair read looking for missing blobs (files
	// and bytes done; no totals: the walk stops once everything is found).
	PhaseHeal = "heal"
	// PhasePurge: snapshots repair rewrote without their broken files
	// (items).
	PhasePurge = "purge"
)

// Actions passed to the per-item callbacks (BackupOptions.OnItem,
// RestoreOptions.OnItem).
const (
	ItemNew       = "new"       // backup: a file not in the parent snapshot
	ItemChanged   = "changed"   // backup: a file read again
	ItemUnchanged = "unchanged" // backup: a file taken from the parent unread
	ItemRestored  = "restored"  // restore: a file written
	ItemSkipped   = "skipped"   // restore: a file the Overwrite mode kept
)

// ProgressState is one poll of a Progress.
type ProgressState struct {
	// Phase is one of the Phase constants, "" before the first;
	// PhaseStarted is when it started (a display estimates the time left
	// from the phase's pace).
	Phase        string
	PhaseStarted time.Time
	// FilesDone of FilesTotal regular files, BytesDone of BytesTotal
	// bytes, ItemsDone of ItemsTotal items (packs, snapshots or index
	// files, as Phase says). Done may exceed total when files grew
	// since they were counted.
	FilesDone, FilesTotal int64
	BytesDone, BytesTotal int64
	ItemsDone, ItemsTotal int64
	// TotalsFinal says that the totals are complete; before, they are a
	// lower bound and no time left can be estimated.
	TotalsFinal bool
	// Current is the file or item being worked on (one of them when
	// several are), "" when none was named.
	Current string
	// Errors counts the entries that could not be processed in the whole
	// operation (reported through the operation's OnError or findings).
	Errors int64
}

// NewProgress returns a Progress before its first phase.
func NewProgress() *Progress { return &Progress{} }

// State returns the current figures.
func (p *Progress) State() ProgressState {
	if p == nil {
		return ProgressState{}
	}
	s := ProgressState{
		FilesDone:   p.filesDone.Load(),
		FilesTotal:  p.filesTotal.Load(),
		BytesDone:   p.bytesDone.Load(),
		BytesTotal:  p.bytesTotal.Load(),
		ItemsDone:   p.itemsDone.Load(),
		ItemsTotal:  p.itemsTotal.Load(),
		TotalsFinal: p.final.Load(),
		Errors:      p.errors.Load(),
	}
	if ph := p.phase.Load(); ph != nil {
		s.Phase = *ph
		s.PhaseStarted = time.Unix(0, p.started.Load())
	}
	if c := p.current.Load(); c != nil {
		s.Current = *c
	}
	return s
}

// StartPhase begins phase name: done and total counters are zeroed, the
// totals are not final and Current is cleared.
func (p *Progress) StartPhase(name string) {
	if p == nil {
		return
	}
	for _, c := range []*atomic.Int64{&p.filesDone, &p.filesTotal, &p.bytesDone, &p.bytesTotal, &p.itemsDone, &p.itemsTotal} {
		c.Store(0)
	}
	p.final.Store(false)
	p.current.Store(nil)
	p.started.Store(time.Now().UnixNano())
	p.phase.Store(&name)
}

// StartCounted begins phase name with its totals known: items and bytes
// (0 when the phase counts no bytes).
func (p *Progress) StartCounted(name string, items, bytes int64) {
	if p == nil {
		return
	}
	p.StartPhase(name)
	p.itemsTotal.Store(items)
	p.bytesTotal.Store(bytes)
	p.final.Store(true)
}

// AddTotals adds files and bytes to the phase's totals (negative to
// correct an estimate).
func (p *Progress) AddTotals(files, bytes int64) {
	if p == nil {
		return
	}
	if files != 0 {
		p.filesTotal.Add(files)
	}
	if bytes != 0 {
		p.bytesTotal.Add(bytes)
	}
}

// SetTotals sets the phase's file and byte totals and marks them final.
func (p *Progress) SetTotals(files, bytes int64) {
	if p == nil {
		return
	}
	p.filesTotal.Store(files)
	p.bytesTotal.Store(bytes)
	p.final.Store(true)
}

// TotalsFinal marks the phase's totals as complete.
func (p *Progress) TotalsFinal() {
	if p == nil {
		return
	}
	p.final.Store(true)
}

// AddFiles counts n files as done.
func (p *Progress) AddFiles(n int64) {
	if p != nil {
		p.filesDone.Add(n)
	}
}

// AddBytes counts n bytes as done.
func (p *Progress) AddBytes(n int64) {
	if p != nil && n != 0 {
		p.bytesDone.Add(n)
	}
}

// AddItem counts one item, of size bytes, as done.
func (p *Progress) AddItem(size int64) {
	if p == nil {
		return
	}
	p.itemsDone.Add(1)
	if size != 0 {
		p.bytesDone.Add(size)
	}
}

// AddError counts an entry that could not be processed.
func (p *Progress) AddError() {
	if p != nil {
		p.errors.Add(1)
	}
}

// SetCurrent names the file or item being worked on. It allocates (when p
// is not nil), so it is for per-file paths, not per-chunk ones.
func (p *Progress) SetCurrent(name string) {
	if p != nil {
		p.setCurrent(name)
	}
}

// setCurrent is apart from SetCurrent so that only a watched Progress pays
// for name escaping to the heap.
func (p *Progress) setCurrent(name string) { p.current.Store(&name) }

// countTargets walks the backup targets as the archiver will (same
// excludes, same databases, no symlinks followed) and adds every regular
// file with its size to p's totals, which it marks final when the walk is
// complete. It is the scanner that gives a backup its percentage and time
// left; it runs beside the backup and stops, its totals left not final,
// when ctx ends. Entries it cannot read are skipped silently: the backup
// reports them. Directory entries' types come from the listing, so only
// regular files cost an lstat.
func (a *archiver) countTargets(ctx context.Context, p *Progress, targets []string) {
	skip := func(path string) bool {
		return (a.excl.Excluded(path) && !a.isDatabase(path)) || a.isDatabaseSidecar(path)
	}
	var walkDir func(dir string) bool // false: cancelled
	walkDir = func(dir string) bool {
		f, err := openDirNoATime(dir)
		if err != nil {
			return true
		}
		defer f.Close()
		for {
			if ctx.Err() != nil {
				return false
			}
			// In batches, so that a huge directory is never held whole.
			ents, err := f.ReadDir(1024)
			for _, e := range ents {
				path := filepath.Join(dir, e.Name())
				if skip(path) {
					continue
				}
				switch {
				case e.Type().IsRegular():
					if fi, err := e.Info(); err == nil {
						p.AddTotals(1, fi.Size())
					}
				case e.IsDir():
					if !walkDir(path) {
						return false
					}
				}
			}
			if err != nil {
				return true
			}
		}
	}
	for _, t := range targets {
		if ctx.Err() != nil {
			return
		}
		// A target is excluded like a directory entry, except "/" (see
		// saveVirtual); a database named by --sqlite always counts.
		if t != "/" && a.excl.Excluded(t) && !a.isDatabase(t) {
			continue
		}
		fi, err := os.Lstat(t)
		switch {
		case err != nil:
		case fi.Mode().IsRegular():
			p.AddTotals(1, fi.Size())
		case fi.IsDir():
			if !walkDir(t) {
				return
			}
		}
	}
	p.TotalsFinal()
}

// openDirNoATime opens directory dir for listing without following a
// final symlink and, where the kernel allows it, without updating its
// access time (as the backup itself reads directories).
func openDirNoATime(dir string) (*os.File, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Open(dir, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		// O_NOATIME needs ownership (or CAP_FOWNER).
		fd, err = unix.Open(dir, flags, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}
