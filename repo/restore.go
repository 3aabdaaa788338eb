package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
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
	var buf []byte
	for _, id := range n.Content {
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
	// OnError is told about each entry that could not be restored; the
	// restore goes on. May be called concurrently.
	OnError func(path string, err error)
}

// RestoreStats counts what Restore wrote.
type RestoreStats struct {
	Files    int   `json:"files"`
	Dirs     int   `json:"dirs"`
	Symlinks int   `json:"symlinks"`
	Other    int   `json:"other"`
	Bytes    int64 `json:"bytes"`
	Errors   int   `json:"errors"`
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
	defer root.Close()
	rs := &restorer{
		r:       r,
		root:    root,
		onError: opts.OnError,
		files:   make(chan restoreJob, 64),
		isRoot:  os.Geteuid() == 0,
	}
	if rs.onError == nil {
		rs.onError = func(string, error) {}
	}
	var wg sync.WaitGroup
	for range restoreWorkers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs.fileWorker(ctx)
		}()
	}
	if node.Type == NodeDir {
		err = rs.restoreTree(ctx, clean, ".", *node.Subtree)
	} else {
		err = rs.restoreNode(ctx, clean, node.Name, node)
	}
	close(rs.files)
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	// Directory metadata last, deepest first: restoring a read-only mode or
	// an mtime earlier would block or undo the writes inside.
	if err == nil {
		for i := len(rs.dirs) - 1; i >= 0; i-- {
			d := rs.dirs[i]
			rs.applyMeta(d.rel, d.shown, d.node)
		}
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
	root    *os.Root
	onError func(string, error)
	files   chan restoreJob
	isRoot  bool

	dirs   []restoreDir // in creation order; only the walker touches it
	mu     sync.Mutex
	stats  RestoreStats
	bytes  atomic.Int64
	errors atomic.Int64
}

type restoreJob struct {
	rel, shown string
	node       *Node
}

type restoreDir struct {
	rel, shown string
	node       *Node
}

func (rs *restorer) report(shown string, err error) {
	rs.errors.Add(1)
	rs.onError(shown, err)
}

func (rs *restorer) count(f func(*RestoreStats)) {
	rs.mu.Lock()
	f(&rs.stats)
	rs.mu.Unlock()
}

// restoreTree restores the entries of tree id into directory rel (relative
// to the target); shown is the snapshot path, for messages.
func (rs *restorer) restoreTree(ctx context.Context, shown, rel string, id chunk.ID) error {
	t, err := rs.r.LoadTree(ctx, id)
	if err != nil {
		// The whole directory is lost; say so and go on with the rest.
		rs.report(shown, err)
		return nil
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := rs.restoreNode(ctx, path.Join(shown, n.Name), path.Join(rel, n.Name), n); err != nil {
			return err
		}
	}
	return nil
}

// restoreNode restores one entry at rel. Names were validated when the tree
// was loaded, and os.Root refuses any path that leaves the target.
func (rs *restorer) restoreNode(ctx context.Context, shown, rel string, n *Node) error {
	switch n.Type {
	case NodeDir:
		if err := rs.mkdir(rel); err != nil {
			rs.report(shown, err)
			return nil
		}
		rs.count(func(s *RestoreStats) { s.Dirs++ })
		rs.dirs = append(rs.dirs, restoreDir{rel, shown, n})
		return rs.restoreTree(ctx, shown, rel, *n.Subtree)
	case NodeFile:
		select {
		case rs.files <- restoreJob{rel, shown, n}:
		case <-ctx.Done():
			return ctx.Err()
		}
	case NodeSymlink:
		if err := rs.clear(rel); err != nil {
			rs.report(shown, err)
			return nil
		}
		if err := rs.root.Symlink(n.LinkTarget, rel); err != nil {
			rs.report(shown, err)
			return nil
		}
		if rs.isRoot {
			if err := rs.root.Lchown(rel, int(n.UID), int(n.GID)); err != nil {
				rs.report(shown, err)
			}
		}
		if err := rs.lchtimes(rel, n); err != nil {
			rs.report(shown, err)
		}
		rs.count(func(s *RestoreStats) { s.Symlinks++ })
	case NodeFIFO, NodeDevice, NodeCharDevice:
		if err := rs.mknod(rel, n); err != nil {
			rs.report(shown, err)
			return nil
		}
		rs.applyMeta(rel, shown, n)
		rs.count(func(s *RestoreStats) { s.Other++ })
	case NodeSocket:
		// A socket is created by the program that listens on it; there is
		// nothing to restore.
	}
	return nil
}

// clear removes whatever is at rel (not following symlinks) so a new entry
// can be created there; a missing entry is fine.
func (rs *restorer) clear(rel string) error {
	fi, err := rs.root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return rs.root.RemoveAll(rel)
	}
	return rs.root.Remove(rel)
}

// mkdir makes directory rel, keeping an existing directory and replacing
// anything else (such as a symlink) found there.
func (rs *restorer) mkdir(rel string) error {
	if rel == "." {
		return nil
	}
	fi, err := rs.root.Lstat(rel)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		if err := rs.root.Remove(rel); err != nil {
			return err
		}
	}
	return rs.root.Mkdir(rel, 0o700)
}

// mknod creates a fifo or device node. os.Root has no mknod, so the parent
// is opened through the root (which guarantees it is inside the target) and
// the node is made relative to that directory's descriptor.
func (rs *restorer) mknod(rel string, n *Node) error {
	if err := rs.clear(rel); err != nil {
		return err
	}
	dir, err := rs.root.Open(path.Dir(rel))
	if err != nil {
		return err
	}
	defer dir.Close()
	mode := uint32(0o600)
	switch n.Type {
	case NodeFIFO:
		mode |= unix.S_IFIFO
	case NodeDevice:
		mode |= unix.S_IFBLK
	case NodeCharDevice:
		mode |= unix.S_IFCHR
	}
	if err := unix.Mknodat(int(dir.Fd()), path.Base(rel), mode, int(n.Rdev)); err != nil {
		return fmt.Errorf("mknod %s: %w", rel, err)
	}
	return nil
}

// lchtimes sets the times of the symlink rel itself. os.Root has no
// lchtimes, so as in mknod the parent is opened through the root and the
// link changed relative to its descriptor. Backup does not record a link's
// atime (reading the link changes it), so the mtime stands in for it.
func (rs *restorer) lchtimes(rel string, n *Node) error {
	dir, err := rs.root.Open(path.Dir(rel))
	if err != nil {
		return err
	}
	defer dir.Close()
	atime := n.AccessTime
	if atime.IsZero() {
		atime = n.ModTime
	}
	ts := []unix.Timespec{timespec(atime), timespec(n.ModTime)}
	if err := unix.UtimesNanoAt(int(dir.Fd()), path.Base(rel), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", rel, err)
	}
	return nil
}

// timespec converts t without UnixNano, which overflows past 2262.
func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// applyMeta sets owner, mode, extended attributes and times of rel.
func (rs *restorer) applyMeta(rel, shown string, n *Node) {
	if rs.isRoot {
		if err := rs.root.Lchown(rel, int(n.UID), int(n.GID)); err != nil {
			rs.report(shown, err)
		}
	}
	if len(n.Xattrs) > 0 && n.Type == NodeDir {
		if f, err := rs.root.Open(rel); err == nil {
			if err := source.SetXattrs(f, toSourceXattrs(n.Xattrs)); err != nil {
				rs.report(shown, err)
			}
			f.Close()
		}
	}
	// chmod after chown: chown clears setuid and setgid bits.
	if err := rs.root.Chmod(rel, goMode(n.Mode)); err != nil {
		rs.report(shown, err)
	}
	if err := rs.root.Chtimes(rel, n.AccessTime, n.ModTime); err != nil {
		rs.report(shown, err)
	}
}

func toSourceXattrs(xs []Xattr) []source.Xattr {
	out := make([]source.Xattr, len(xs))
	for i, x := range xs {
		out[i] = source.Xattr{Name: x.Name, Value: x.Value}
	}
	return out
}

func (rs *restorer) fileWorker(ctx context.Context) {
	var w contentWriter
	for job := range rs.files {
		if ctx.Err() != nil {
			continue
		}
		if err := rs.restoreFile(ctx, &w, job); err != nil {
			rs.report(job.shown, err)
			continue
		}
		rs.count(func(s *RestoreStats) { s.Files++ })
	}
}

// restoreFile writes one file: created new (an existing entry is removed
// first, so a symlink in its place is never followed), every blob verified,
// removed again if anything fails.
func (rs *restorer) restoreFile(ctx context.Context, w *contentWriter, job restoreJob) error {
	if err := rs.clear(job.rel); err != nil {
		return err
	}
	f, err := rs.root.OpenFile(job.rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := w.write(ctx, rs.r, f, job.node)
	if err == nil && uint64(n) != job.node.Size {
		err = fmt.Errorf("content is %d bytes, the snapshot says %d", n, job.node.Size)
	}
	if err == nil && rs.isRoot {
		err = f.Chown(int(job.node.UID), int(job.node.GID))
	}
	if err == nil && len(job.node.Xattrs) > 0 {
		if xerr := source.SetXattrs(f, toSourceXattrs(job.node.Xattrs)); xerr != nil {
			rs.report(job.shown, xerr)
		}
	}
	if err == nil {
		err = f.Chmod(goMode(job.node.Mode))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		rs.root.Remove(job.rel)
		return err
	}
	rs.bytes.Add(n)
	if err := rs.root.Chtimes(job.rel, job.node.AccessTime, job.node.ModTime); err != nil {
		rs.report(job.shown, err)
	}
	return nil
}

// maxCoalesce bounds one ranged read that serves several adjacent blobs.
const maxCoalesce = 16 << 20

// contentWriter writes file contents, reading runs of blobs that lie next
// to each other in one pack with a single ranged read. One per worker.
type contentWriter struct {
	raw   []byte
	plain []byte
	locs  []index.PackedBlob
}

func (w *contentWriter) write(ctx context.Context, r *Repository, f io.Writer, n *Node) (int64, error) {
	w.locs = w.locs[:0]
	for _, id := range n.Content {
		pb, ok, err := r.LookupBlob(index.DataBlob, id)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, &BlobError{Type: index.DataBlob, ID: id, Err: ErrBlobNotIndexed}
		}
		w.locs = append(w.locs, pb)
	}
	var written int64
	for i := 0; i < len(w.locs); {
		// Extend the run while the next blob follows in the same pack.
		j := i + 1
		end := int64(w.locs[i].Offset) + int64(w.locs[i].Length)
		for j < len(w.locs) && w.locs[j].Pack == w.locs[i].Pack &&
			int64(w.locs[j].Offset) == end && end+int64(w.locs[j].Length)-int64(w.locs[i].Offset) <= maxCoalesce {
			end += int64(w.locs[j].Length)
			j++
		}
		start := int64(w.locs[i].Offset)
		if end-start > maxStoredBlob {
			first := w.locs[i]
			return written, &BlobError{Type: first.Type, ID: first.ID, Pack: first.Pack,
				Err: fmt.Errorf("index entry claims %d bytes: damaged", end-start)}
		}
		w.raw = slices.Grow(w.raw[:0], int(end-start))[:end-start]
		first := w.locs[i]
		if err := backend.ReadAt(ctx, r.be, packHandle(first.Pack), w.raw, start); err != nil {
			return written, &BlobError{Type: first.Type, ID: first.ID, Pack: first.Pack, Err: err}
		}
		for k := i; k < j; k++ {
			pb := w.locs[k]
			off := int64(pb.Offset) - start
			var err error
			w.plain, err = r.openBlob(w.raw[off:off+int64(pb.Length)], pb, w.plain)
			if err != nil {
				return written, err
			}
			m, err := f.Write(w.plain)
			written += int64(m)
			if err != nil {
				return written, err
			}
		}
		i = j
	}
	return written, nil
}
