package repo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/source"
	"repo/source/sqlite"
)

// FindNode returns the node at path p of snapshot sn ("/" or "" is the
// root, a directory node with the snapshot's tree) and p cleaned.
func (r *Repository) FindNode(ctx context.Context, sn *Snapshot, p string) (*Node, string, error) {
	tid := sn.Tree
	node := &Node{Name: "", Type: NodeDir, Subtree: &tid}
	clean := path.Clean("/" + p)
	if clean == "/" {
		return node, clean, nil
	}
	for _, name := range strings.Split(clean[1:], "/") {
		if node.Type != NodeDir {
			return nil, clean, fmt.Errorf("%s: not found in snapshot %s", clean, sn.ID.Short())
		}
		t, err := r.LoadTree(ctx, *node.Subtree)
		if err != nil {
			return nil, clean, err
		}
		node = t.Find(name)
		if node == nil {
			return nil, clean, fmt.Errorf("%s: not found in snapshot %s", clean, sn.ID.Short())
		}
	}
	return node, clean, nil
}

// Walk calls fn for node (at path p) and, if it is a directory, for
// everything below it, depth first in name order. fn returning
// fs.SkipDir for a directory skips its contents.
func (r *Repository) Walk(ctx context.Context, p string, node *Node, fn func(p string, n *Node) error) error {
	if err := fn(p, node); err != nil {
		if errors.Is(err, fs.SkipDir) {
			return nil
		}
		return err
	}
	if node.Type != NodeDir || node.Subtree == nil {
		return nil
	}
	t, err := r.LoadTree(ctx, *node.Subtree)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		if err := r.Walk(ctx, path.Join(p, t.Nodes[i].Name), &t.Nodes[i], fn); err != nil {
			return err
		}
	}
	return nil
}

// WriteContent writes the content of file node n to w, verifying every
// blob.
func (r *Repository) WriteContent(ctx context.Context, n *Node, w io.Writer) error {
	ids, err := r.FileContent(ctx, n)
	if err != nil {
		return err
	}
	var buf []byte
	for _, id := range ids {
		var err error
		buf, err = r.LoadBlob(ctx, index.DataBlob, id, buf)
		if err != nil {
			return err
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Target directory; created if missing. Nothing is written outside it,
	// whatever names or symlinks the snapshot holds.
	Target string
	// Overwrite says what happens to entries already at the target; the
	// zero value, OverwriteAlways, replaces them.
	Overwrite Overwrite
	// OnError is told about each entry that could not be restored; the
	// restore goes on. May be called concurrently.
	OnError func(path string, err error)
	// OnDatabase is told, once everything is written, the verdict of
	// PRAGMA integrity_check on each restored database image ("ok" when
	// sound) or the error that kept it from running.
	OnDatabase func(path, verdict string, err error)
	// Progress, when set, is updated in phase PhaseRestore. Its totals
	// come from the snapshot's summary when the whole snapshot is
	// restored, else from a walk of the subtree beside the restore
	// (which reads its trees a second time); nil saves that.
	Progress *Progress
	// OnItem, when set, is told about every regular file finished:
	// ItemRestored (written) or ItemSkipped (kept by Overwrite), with its
	// snapshot path and size. Not for files reported to OnError. May be
	// called concurrently.
	OnItem func(action, path string, size int64)
}

// RestoreStats counts what Restore wrote.
type RestoreStats struct {
	Files    int   `json:"files"`
	Dirs     int   `json:"dirs"`
	Symlinks int   `json:"symlinks"`
	Other    int   `json:"other"`
	Bytes    int64 `json:"bytes"`
	Errors   int   `json:"errors"`
	// FilesSkipped regular files were left at the target instead of being
	// written (RestoreOptions.Overwrite: unchanged, or kept by the mode),
	// BytesSkipped is their size in the snapshot, and OtherSkipped counts
	// symlinks, devices, FIFOs and entries in the place of a directory
	// left the same way. Files, Symlinks and Other do not include them.
	FilesSkipped int   `json:"files_skipped"`
	BytesSkipped int64 `json:"bytes_skipped"`
	OtherSkipped int   `json:"other_skipped"`
	// Databases is the number of database images restored, and
	// DatabasesDamaged how many of them failed their integrity check.
	Databases        int `json:"databases,omitempty"`
	DatabasesDamaged int `json:"databases_damaged,omitempty"`
}

// Restore writes the subtree at subpath of sn into opts.Target: a directory's
// contents go directly into the target, a single file or link is created in
// it under its name. Every blob is verified; a file that cannot be restored
// completely is removed and reported, never left with wrong content.
// Entries that fail are reported to OnError and counted; the returned error
// is for failures that stop the whole restore.
func (r *Repository) Restore(ctx context.Context, sn *Snapshot, subpath string, opts RestoreOptions) (RestoreStats, error) {
	node, clean, err := r.FindNode(ctx, sn, subpath)
	if err != nil {
		return RestoreStats{}, err
	}
	if err := os.MkdirAll(opts.Target, 0o700); err != nil {
		return RestoreStats{}, fmt.Errorf("create target: %w", err)
	}
	root, err := os.OpenRoot(opts.Target)
	if err != nil {
		return RestoreStats{}, fmt.Errorf("open target: %w", err)
	}
	rs := &restorer{
		r:         r,
		onError:   opts.OnError,
		onItem:    opts.OnItem,
		progress:  opts.Progress,
		files:     make(chan []restoreJob, 64),
		isRoot:    os.Geteuid() == 0,
		overwrite: opts.Overwrite,
	}
	if rs.onError == nil {
		rs.onError = func(string, error) {}
	}
	if rs.onItem == nil {
		rs.onItem = func(string, string, int64) {}
	}
	if stop := r.countRestore(ctx, opts.Progress, sn, clean, node); stop != nil {
		defer stop()
	}
	var wg sync.WaitGroup
	for range restoreWorkers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs.fileWorker(ctx)
		}()
	}
	// The target keeps its own metadata: its dirState has no node.
	top := &dirState{root: root, shown: clean}
	top.refs.Store(1)
	if node.Type == NodeDir {
		err = rs.restoreTree(ctx, top, *node.Subtree)
	} else {
		err = rs.restoreNode(ctx, top, node.Name, clean, node)
	}
	if ferr := rs.flushBatches(ctx); err == nil {
		err = ferr
	}
	close(rs.files)
	wg.Wait()
	rs.release(top)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		rs.checkDatabases(ctx, opts)
	}
	st := rs.stats
	st.Bytes = rs.bytes.Load()
	st.Errors = int(rs.errors.Load())
	return st, err
}

// restoreWorkers is how many files are restored at once: enough to keep
// the disk and both stages (read, decode) busy, few enough that the
// buffers (one coalesced read of up to maxCoalesce each) stay bounded on
// machines with many cores.
func restoreWorkers() int { return min(max(4, 2*runtime.GOMAXPROCS(0)), 8) }

type restorer struct {
	r       *Repository
	onError func(string, error)
	onItem  func(action, path string, size int64)
	// progress is nil unless the caller watches.
	progress *Progress
	// files carries a single file to a worker, or a batch of small
	// files stored in one pack (see packBatcher).
	files     chan []restoreJob
	batcher   packBatcher
	isRoot    bool
	overwrite Overwrite
	zeros     zeroBlobs

	mu     sync.Mutex
	stats  RestoreStats
	bytes  atomic.Int64
	errors atomic.Int64
	// databases restored: their path relative to the target and the
	// snapshot path shown; guarded by mu.
	databases []restoredDatabase
}

type restoredDatabase struct{ rel, shown string }

// checkDatabases runs the integrity check on every database image
// restored. It runs after all files are closed and directories finished.
func (rs *restorer) checkDatabases(ctx context.Context, opts RestoreOptions) {
	for _, db := range rs.databases {
		verdict, err := sqlite.IntegrityCheck(ctx, filepath.Join(opts.Target, db.rel))
		rs.stats.Databases++
		if err != nil || verdict != "ok" {
			rs.stats.DatabasesDamaged++
		}
		if opts.OnDatabase != nil {
			opts.OnDatabase(db.shown, verdict, err)
		}
	}
}

// rel is d's path relative to the target.
func (d *dirState) rel() string {
	if d.parent == nil {
		return "."
	}
	return filepath.Join(d.parent.rel(), d.name)
}

// removeDatabaseSidecars removes the -wal, -shm and -journal files next to
// a database image about to be restored as name: they belong to whatever
// database was there before, and SQLite would apply a -wal or roll back a
// -journal onto the restored image, corrupting it.
func removeDatabaseSidecars(dir *os.Root, name string) error {
	for _, suf := range []string{"-wal", "-shm", "-journal"} {
		if err := dir.Remove(name + suf); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale %s%s: %w", name, suf, err)
		}
	}
	return nil
}

// dirState is a directory of the target being restored. Everything in it is
// created through root, opened from the parent's root by a single name, so
// no operation resolves more than one name (os.Root walks a relative path
// one component at a time: a full path per file costs a dozen openat
// calls) and none can leave the target.
//
// refs counts what is still to be done in the directory: one for the walker
// until it has queued every entry, one per queued file, one per
// subdirectory until that is finished. At zero the directory is complete:
// its own metadata is set (only now, so that no later entry changes its
// mtime and a read-only mode blocks nothing), its root closed, and its
// reference on the parent dropped. So only directories with work pending
// hold a descriptor.
type dirState struct {
	root   *os.Root
	parent *dirState // nil for the target
	name   string    // in the parent
	shown  string    // the snapshot path, for messages
	// node's metadata is set when the directory is complete; nil for the
	// target and for an existing directory the Overwrite mode keeps as
	// it is.
	node *Node
	refs atomic.Int64
}

type restoreJob struct {
	dir   *dirState
	name  string
	shown string
	node  *Node
	// blob is where the one blob of a batched file is stored.
	blob index.PackedBlob
	// counted is how many of the file's bytes were counted as done in the
	// progress while it was written; finish counts the rest.
	counted int64
}

func (rs *restorer) report(shown string, err error) {
	rs.errors.Add(1)
	rs.progress.AddError()
	rs.onError(shown, err)
}

func (rs *restorer) count(f func(*RestoreStats)) {
	rs.mu.Lock()
	f(&rs.stats)
	rs.mu.Unlock()
}

// release drops one reference on d and completes it at zero.
func (rs *restorer) release(d *dirState) {
	if d.refs.Add(-1) != 0 {
		return
	}
	if d.node != nil && d.parent != nil {
		rs.applyMeta(d.parent.root, d.name, d.shown, d.node)
	}
	d.root.Close()
	if d.parent != nil {
		rs.release(d.parent)
	}
}

// restoreTree restores the entries of tree id into d.
func (rs *restorer) restoreTree(ctx context.Context, d *dirState, id chunk.ID) error {
	t, err := rs.r.LoadTree(ctx, id)
	if err != nil {
		// The whole directory is lost; say so and go on with the rest.
		rs.report(d.shown, err)
		return nil
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := rs.restoreNode(ctx, d, n.Name, path.Join(d.shown, n.Name), n); err != nil {
			return err
		}
	}
	return nil
}

// restoreNode restores one entry called name in d. Names were validated
// when the tree was loaded, and os.Root refuses any name that leaves d.
func (rs *restorer) restoreNode(ctx context.Context, d *dirState, name, shown string, n *Node) error {
	switch n.Type {
	case NodeDir:
		meta := n
		fi, err := rs.existing(d.root, name)
		if err != nil {
			rs.report(shown, err)
			return nil
		}
		if fi != nil && rs.overwrite.keeps(fi, n) {
			if !fi.IsDir() {
				// Kept in the directory's place: nothing to restore into.
				rs.count(func(s *RestoreStats) { s.OtherSkipped++ })
				return nil
			}
			meta = nil
		}
		sub, err := mkdirRoot(d.root, name)
		if err != nil {
			rs.report(shown, err)
			return nil
		}
		rs.count(func(s *RestoreStats) { s.Dirs++ })
		child := &dirState{root: sub, parent: d, name: name, shown: shown, node: meta}
		child.refs.Store(1)
		d.refs.Add(1)
		err = rs.restoreTree(ctx, child, *n.Subtree)
		rs.release(child)
		return err
	case NodeFile:
		d.refs.Add(1)
		job := restoreJob{dir: d, name: name, shown: shown, node: n}
		if batched, err := rs.batch(ctx, job); batched || err != nil {
			return err
		}
		return rs.send(ctx, []restoreJob{job})
	case NodeSymlink:
		if kept, err := rs.keepSpecial(d.root, name, shown, n); kept || err != nil {
			return nil
		}
		if err := clearEntry(d.root, name); err != nil {
			rs.report(shown, err)
			return nil
		}
		if err := d.root.Symlink(n.LinkTarget, name); err != nil {
			rs.report(shown, err)
			return nil
		}
		rs.symlinkMeta(d.root, name, shown, n)
		rs.count(func(s *RestoreStats) { s.Symlinks++ })
	case NodeFIFO, NodeDevice, NodeCharDevice:
		if kept, err := rs.keepSpecial(d.root, name, shown, n); kept || err != nil {
			return nil
		}
		if err := mknod(d.root, name, n); err != nil {
			rs.report(shown, err)
			return nil
		}
		rs.applyMeta(d.root, name, shown, n)
		rs.count(func(s *RestoreStats) { s.Other++ })
	case NodeSocket:
		// A socket is created by the program that listens on it; there is
		// nothing to restore.
	}
	return nil
}

// clearEntry removes whatever is called name in dir (not following
// symlinks) so that a new entry can be created there; a missing entry is
// fine.
func clearEntry(dir *os.Root, name string) error {
	fi, err := dir.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return dir.RemoveAll(name)
	}
	return dir.Remove(name)
}

// mkdirRoot makes directory name in dir, keeping an existing directory and
// replacing anything else (such as a symlink) found there, and opens it.
func mkdirRoot(dir *os.Root, name string) (*os.Root, error) {
	err := dir.Mkdir(name, 0o700)
	if errors.Is(err, fs.ErrExist) {
		fi, lerr := dir.Lstat(name)
		switch {
		case lerr != nil:
			return nil, lerr
		case fi.IsDir():
			err = nil
		default:
			if err := dir.Remove(name); err != nil {
				return nil, err
			}
			err = dir.Mkdir(name, 0o700)
		}
	}
	if err != nil {
		return nil, err
	}
	return dir.OpenRoot(name)
}

// mknod creates a fifo or device node. os.Root has no mknod, so the node is
// made relative to the directory's descriptor (opened through the root, so
// inside the target).
func mknod(dir *os.Root, name string, n *Node) error {
	if err := clearEntry(dir, name); err != nil {
		return err
	}
	f, err := dir.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	mode := uint32(0o600)
	switch n.Type {
	case NodeFIFO:
		mode |= unix.S_IFIFO
	case NodeDevice:
		mode |= unix.S_IFBLK
	case NodeCharDevice:
		mode |= unix.S_IFCHR
	}
	if err := unix.Mknodat(int(f.Fd()), name, mode, int(n.Rdev)); err != nil {
		return fmt.Errorf("mknod %s: %w", name, err)
	}
	return nil
}

// lchtimes sets the times of the symlink name itself, relative to the
// directory's descriptor as in mknod (os.Root has no lchtimes). Backup does
// not record a link's atime (reading the link changes it), so the mtime
// stands in for it.
func lchtimes(dir *os.Root, name string, n *Node) error {
	f, err := dir.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	atime := n.AccessTime
	if atime.IsZero() {
		atime = n.ModTime
	}
	ts := []unix.Timespec{timespec(atime), timespec(n.ModTime)}
	if err := unix.UtimesNanoAt(int(f.Fd()), name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", name, err)
	}
	return nil
}

// symlinkMeta sets the owner (when running as root) and times of the
// symlink name in dir; a link has no mode of its own.
func (rs *restorer) symlinkMeta(dir *os.Root, name, shown string, n *Node) {
	if rs.isRoot {
		if err := dir.Lchown(name, int(n.UID), int(n.GID)); err != nil {
			rs.report(shown, err)
		}
	}
	if err := lchtimes(dir, name, n); err != nil {
		rs.report(shown, err)
	}
}

// timespec converts t without UnixNano, which overflows past 2262.
func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// applyMeta sets owner, mode, extended attributes and times of the entry
// name in dir.
func (rs *restorer) applyMeta(dir *os.Root, name, shown string, n *Node) {
	if rs.isRoot {
		if err := dir.Lchown(name, int(n.UID), int(n.GID)); err != nil {
			rs.report(shown, err)
		}
	}
	if len(n.Xattrs) > 0 && n.Type == NodeDir {
		if f, err := dir.Open(name); err == nil {
			if err := source.SetXattrs(f, toSourceXattrs(n.Xattrs)); err != nil {
				rs.report(shown, err)
			}
			f.Close()
		}
	}
	// chmod after chown: chown clears setuid and setgid bits.
	if err := dir.Chmod(name, goMode(n.Mode)); err != nil {
		rs.report(shown, err)
	}
	if err := dir.Chtimes(name, n.AccessTime, n.ModTime); err != nil {
		rs.report(shown, err)
	}
}

func toSourceXattrs(xs []Xattr) []source.Xattr {
	if len(xs) == 0 {
		return nil
	}
	out := make([]source.Xattr, len(xs))
	for i, x := range xs {
		out[i] = source.Xattr{Name: x.Name, Value: x.Value}
	}
	return out
}

// send queues jobs for the workers; on cancellation it releases them.
func (rs *restorer) send(ctx context.Context, jobs []restoreJob) error {
	select {
	case rs.files <- jobs:
		return nil
	case <-ctx.Done():
		for _, job := range jobs {
			rs.release(job.dir)
		}
		return ctx.Err()
	}
}

func (rs *restorer) fileWorker(ctx context.Context) {
	w := contentWriter{progress: rs.progress}
	for jobs := range rs.files {
		switch {
		case ctx.Err() != nil:
			for _, job := range jobs {
				rs.release(job.dir)
			}
		case len(jobs) == 1 && jobs[0].blob.Pack.IsNull():
			job := jobs[0]
			rs.progress.SetCurrent(job.shown)
			w.counted = 0
			kept, err := rs.keepExisting(ctx, &w, job)
			if err == nil && !kept {
				err = rs.writeFile(job, func(f *os.File) (int64, error) {
					return w.write(ctx, rs.r, &rs.zeros, f, job.node)
				})
			}
			job.counted = w.counted
			rs.finish(job, kept, err)
		default:
			rs.progress.SetCurrent(jobs[0].shown)
			rs.restoreBatch(ctx, &w, jobs)
		}
	}
}

// finish counts the file of job as written, kept or failed, and releases
// its directory.
func (rs *restorer) finish(job restoreJob, kept bool, err error) {
	size := int64(job.node.Size)
	rs.progress.AddFiles(1)
	if size > job.counted {
		rs.progress.AddBytes(size - job.counted)
	}
	switch {
	case err != nil:
		rs.report(job.shown, err)
	case kept:
		rs.count(func(s *RestoreStats) {
			s.FilesSkipped++
			s.BytesSkipped += size
		})
		rs.onItem(ItemSkipped, job.shown, size)
	default:
		rs.count(func(s *RestoreStats) { s.Files++ })
		rs.onItem(ItemRestored, job.shown, size)
	}
	rs.release(job.dir)
}

// countRestore gives p its totals for restoring node (at path clean of
// sn): the snapshot's summary when that is the whole snapshot, else a
// walk of the subtree on another goroutine, stopped by the returned func
// (nil when there is nothing to stop).
func (r *Repository) countRestore(ctx context.Context, p *Progress, sn *Snapshot, clean string, node *Node) (stop func()) {
	if p == nil {
		return nil
	}
	p.StartPhase(PhaseRestore)
	switch {
	case node.Type == NodeFile:
		p.SetTotals(1, int64(node.Size))
		return nil
	case node.Type != NodeDir:
		p.SetTotals(0, 0)
		return nil
	case clean == "/" && sn.Summary != nil:
		p.SetTotals(int64(sn.Summary.TotalFiles), sn.Summary.TotalBytes)
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := r.Walk(ctx, clean, node, func(_ string, n *Node) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if n.Type == NodeFile {
				p.AddTotals(1, int64(n.Size))
			}
			return nil
		})
		if err == nil {
			p.TotalsFinal()
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// keepExisting looks at what is already where job's file goes and reports
// whether the Overwrite mode keeps it (never under OverwriteAlways, which
// does not look). A file kept under OverwriteIfChanged is the snapshot's:
// it is finished as if it had been written.
func (rs *restorer) keepExisting(ctx context.Context, w *contentWriter, job restoreJob) (bool, error) {
	dir, name, n := job.dir.root, job.name, job.node
	fi, err := rs.existing(dir, name)
	if err != nil || fi == nil {
		return false, err
	}
	keep, err := rs.keepFile(ctx, w, dir, name, fi, n)
	if err != nil || !keep {
		return false, err
	}
	if rs.overwrite == OverwriteIfChanged {
		if n.Database != nil {
			if err := removeDatabaseSidecars(dir, name); err != nil {
				return false, err
			}
			rs.addDatabase(job)
		}
		rs.fixFileMeta(dir, name, job.shown, n)
	}
	return true, nil
}

// writeFile writes the file of job: created new (an entry already there is
// removed first, so a symlink in its place is never followed), its content
// written by fill (which returns the length) and verified, removed again
// if anything fails.
func (rs *restorer) writeFile(job restoreJob, fill func(*os.File) (int64, error)) error {
	dir, name, n := job.dir.root, job.name, job.node
	if n.Database != nil {
		if err := removeDatabaseSidecars(dir, name); err != nil {
			return err
		}
	}
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	f, err := dir.OpenFile(name, flags, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Rare (restoring over an earlier restore): only then pay for
		// looking at what is there.
		if err := clearEntry(dir, name); err != nil {
			return err
		}
		f, err = dir.OpenFile(name, flags, 0o600)
	}
	if err != nil {
		return err
	}
	size, err := fill(f)
	if err == nil && uint64(size) != n.Size {
		err = fmt.Errorf("content is %d bytes, the snapshot says %d", size, n.Size)
	}
	if err == nil && rs.isRoot {
		err = f.Chown(int(n.UID), int(n.GID))
	}
	if err == nil && len(n.Xattrs) > 0 {
		if xerr := source.SetXattrs(f, toSourceXattrs(n.Xattrs)); xerr != nil {
			rs.report(job.shown, xerr)
		}
	}
	if err == nil {
		err = f.Chmod(goMode(n.Mode))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		dir.Remove(name)
		return err
	}
	rs.bytes.Add(size)
	if err := dir.Chtimes(name, n.AccessTime, n.ModTime); err != nil {
		rs.report(job.shown, err)
	}
	if n.Database != nil {
		rs.addDatabase(job)
	}
	return nil
}

// addDatabase queues the database image of job for the integrity check.
func (rs *restorer) addDatabase(job restoreJob) {
	rs.mu.Lock()
	rs.databases = append(rs.databases, restoredDatabase{rel: filepath.Join(job.dir.rel(), job.name), shown: job.shown})
	rs.mu.Unlock()
}

// maxCoalesce bounds one ranged read that serves several adjacent blobs.
const maxCoalesce = 16 << 20

// contentWriter writes file contents, reading runs of blobs that lie next
// to each other in one pack with a single ranged read. One per worker.
type contentWriter struct {
	raw   []byte
	plain []byte
	locs  []contentLoc
	// progress counts the bytes written (and holes left) as they go;
	// counted is how many that was for the file written last.
	progress *Progress
	counted  int64
	// br and cmp read existing files back for OverwriteIfChanged; made
	// on first use.
	br  *bufio.Reader
	cmp []byte
}

// advance counts n more bytes of the file being written as done.
func (w *contentWriter) advance(n int64) {
	w.counted += n
	w.progress.AddBytes(n)
}

// contentLoc is one blob of the file being written: where it is stored,
// or (zero) that it is a known block of zeros, which is not read.
type contentLoc struct {
	index.PackedBlob
	zero bool
}

// write writes the content of n into the new, empty file f and returns its
// length. Blobs of zeros are not written: the file gets a hole there (and
// is extended to its full length at the end if it ends in one).
func (w *contentWriter) write(ctx context.Context, r *Repository, zeros *zeroBlobs, f *os.File, n *Node) (int64, error) {
	w.locs = w.locs[:0]
	ids, err := r.FileContent(ctx, n)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if l, ok := zeros.length(id); ok {
			w.locs = append(w.locs, contentLoc{PackedBlob: index.PackedBlob{Blob: index.Blob{Type: index.DataBlob, ID: id, RawLength: l}}, zero: true})
			continue
		}
		pb, ok, err := r.LookupBlob(index.DataBlob, id)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, &BlobError{Type: index.DataBlob, ID: id, Err: ErrBlobNotIndexed}
		}
		w.locs = append(w.locs, contentLoc{PackedBlob: pb})
	}
	var off int64 // where the next blob goes in f
	hole := false // f ends in a hole that must still be covered
	for i := 0; i < len(w.locs); {
		if w.locs[i].zero {
			off += int64(w.locs[i].RawLength)
			w.advance(int64(w.locs[i].RawLength))
			hole = true
			i++
			continue
		}
		// Extend the run while the next blob follows in the same pack.
		j := i + 1
		end := int64(w.locs[i].Offset) + int64(w.locs[i].Length)
		for j < len(w.locs) && !w.locs[j].zero && w.locs[j].Pack == w.locs[i].Pack &&
			int64(w.locs[j].Offset) == end && end+int64(w.locs[j].Length)-int64(w.locs[i].Offset) <= maxCoalesce {
			end += int64(w.locs[j].Length)
			j++
		}
		start := int64(w.locs[i].Offset)
		if end-start > maxStoredBlob {
			first := w.locs[i]
			return off, &BlobError{Type: first.Type, ID: first.ID, Pack: first.Pack,
				Err: fmt.Errorf("index entry claims %d bytes: damaged", end-start)}
		}
		w.raw = slices.Grow(w.raw[:0], int(end-start))[:end-start]
		first := w.locs[i]
		if err := backend.ReadAt(ctx, r.be, packHandle(first.Pack), w.raw, start); err != nil {
			return off, &BlobError{Type: first.Type, ID: first.ID, Pack: first.Pack, Err: err}
		}
		for k := i; k < j; k++ {
			pb := w.locs[k].PackedBlob
			o := int64(pb.Offset) - start
			var err error
			w.plain, err = r.openBlob(w.raw[o:o+int64(pb.Length)], pb, w.plain)
			if err != nil {
				return off, err
			}
			if allZero(w.plain) {
				// Verified zeros: leave a hole, and skip this blob
				// unread wherever it comes again.
				zeros.add(pb.ID, uint32(len(w.plain)))
				off += int64(len(w.plain))
				w.advance(int64(len(w.plain)))
				hole = true
				continue
			}
			m, err := f.WriteAt(w.plain, off)
			off += int64(m)
			w.advance(int64(m))
			if err != nil {
				return off, err
			}
			hole = false
		}
		i = j
	}
	if hole {
		if err := f.Truncate(off); err != nil {
			return off, err
		}
	}
	return off, nil
}
