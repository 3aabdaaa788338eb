package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"repo/chunk"
	"repo/index"
	"repo/source"
	"repo/source/sqlite"
)

// BackupOptions describe one backup.
type BackupOptions struct {
	// Paths to back up (files or directories; made absolute). Ignored when
	// Stdin is set.
	Paths    []string
	Excludes []string
	Tags     []string
	// Hostname recorded in the snapshot; empty means os.Hostname.
	Hostname string
	// Parent is the snapshot whose unchanged files are reused without
	// reading them. Nil: the latest snapshot of the same host and paths,
	// unless NoParent.
	Parent   *Snapshot
	NoParent bool
	// Stdin, when not nil, is stored as one file named StdinName instead of
	// Paths.
	Stdin     io.Reader
	StdinName string
	// Time of the snapshot; zero means now.
	Time time.Time
	// OnError is told about every entry that could not be read; the entry
	// is left out and the backup goes on. May be called concurrently.
	OnError func(path string, err error)
	// ProgramVersion is recorded in the snapshot.
	ProgramVersion string
	// Databases are SQLite database files saved as consistent images, each
	// taken in one read transaction (see saveDatabase). They may lie below
	// Paths (then they replace the plain copy, and their -wal, -shm and
	// -journal files are left out) or elsewhere.
	Databases []string
	// OnDatabase is told when the image of a database starts, with what
	// SQLite reports about it (journal mode: in rollback-journal mode
	// writers wait until the image is read).
	OnDatabase func(path string, info sqlite.Info)
	// AfterRead, when set, is called once every source was read and
	// before the snapshot is written: it may annotate sn (hook results) or
	// veto the snapshot by returning an error (a dump command that
	// failed), and then Backup returns that error and saves no snapshot.
	AfterRead func(sn *Snapshot) error
	// Progress, when set, is updated in phase PhaseBackup. It also makes
	// Backup walk the targets a second time, beside the backup, to know
	// the totals; nil saves that walk.
	Progress *Progress
	// OnItem, when set, is told about every regular file (and database
	// image) saved: ItemNew, ItemChanged (both once stored) or
	// ItemUnchanged (taken from the parent), with the path and size. Not
	// for entries reported to OnError. Called from one goroutine at a
	// time.
	OnItem func(action, path string, size int64)
}

// Backup saves a snapshot of opts.Paths (or opts.Stdin). Entries that
// cannot be read are reported to opts.OnError, counted in Summary.Errors and
// left out; the snapshot is still saved. Any other error (the repository,
// cancellation) aborts without a snapshot. The index must be loaded.
func (r *Repository) Backup(ctx context.Context, opts BackupOptions) (*Snapshot, error) {
	start := now()
	if opts.Time.IsZero() {
		opts.Time = start
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	if opts.OnError == nil {
		opts.OnError = func(string, error) {}
	}
	if opts.OnDatabase == nil {
		opts.OnDatabase = func(string, sqlite.Info) {}
	}
	sn := &Snapshot{
		Time:           opts.Time,
		Hostname:       opts.Hostname,
		Tags:           opts.Tags,
		UID:            uint32(os.Getuid()),
		GID:            uint32(os.Getgid()),
		ProgramVersion: opts.ProgramVersion,
		Source:         SourceInfo{Kind: SourceFiles},
	}
	if u, err := user.Current(); err == nil {
		sn.Username = u.Username
	}

	var targets, databases []string
	if len(opts.Databases) > 0 {
		if opts.Stdin != nil {
			return nil, errors.New("databases cannot be combined with stdin")
		}
		var err error
		if databases, err = cleanDatabases(opts.Databases); err != nil {
			return nil, err
		}
	}
	if opts.Stdin != nil {
		if !ValidName(opts.StdinName) {
			return nil, fmt.Errorf("invalid stdin file name %q: want a single path component", opts.StdinName)
		}
		sn.Source.Kind = SourceStdin
		sn.Paths = []string{"/" + opts.StdinName}
	} else {
		var err error
		targets, err = cleanTargets(append(slices.Clone(opts.Paths), databases...))
		if err != nil {
			return nil, err
		}
		sn.Paths = targets
		if len(opts.Paths) == 0 {
			sn.Source.Kind = SourceSQLite
		}
	}

	parent := opts.Parent
	if parent == nil && !opts.NoParent {
		p, err := r.FindSnapshot(ctx, "latest", SnapshotFilter{Host: sn.Hostname, Paths: sn.Paths})
		if err != nil && !errors.Is(err, ErrSnapshotNotFound) {
			return nil, fmt.Errorf("find parent snapshot: %w", err)
		}
		parent = p
	}
	var parentRoot *Node
	if parent != nil {
		id := parent.ID
		sn.Parent = &id
		tid := parent.Tree
		parentRoot = &Node{Type: NodeDir, Subtree: &tid}
	}

	excl, err := source.NewExcluder(opts.Excludes)
	if err != nil {
		return nil, err
	}
	// Packs an interrupted backup on this host uploaded but did not index
	// are indexed now, so their blobs are not uploaded again.
	resumed, err := r.ResumeUploads(ctx)
	if err != nil {
		return nil, err
	}
	a := &archiver{
		r:          r,
		s:          r.NewSaver(ctx),
		excl:       excl,
		onError:    opts.OnError,
		onDatabase: opts.OnDatabase,
		onItem:     opts.OnItem,
		progress:   opts.Progress,
		databases:  map[string]bool{},
		fileCh:     make(chan fileJob, 64),
		class:      r.cfg.ChunkClasses[ClassFiles],
	}
	a.trees = newTreePrefetcher(a.s.ctx, r)
	a.sum.Start = start
	for _, d := range databases {
		a.databases[d] = true
	}
	a.dbFiles = databaseFiles(databases)
	a.progress.StartPhase(PhaseBackup)
	if opts.Stdin != nil {
		size, known := streamSize(opts.Stdin)
		a.progress.AddTotals(1, size)
		if known {
			a.progress.TotalsFinal()
		}
	} else if a.progress != nil {
		// The scanner ends with the backup, whichever way it ends.
		sctx, stopScan := context.WithCancel(a.s.ctx)
		scanned := make(chan struct{})
		go func() {
			defer close(scanned)
			a.countTargets(sctx, a.progress, targets)
		}()
		defer func() {
			stopScan()
			<-scanned
		}()
	}
	workers := max(2, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.fileWorker(a.s.ctx)
		}()
	}

	var root *Node
	if opts.Stdin != nil {
		root, err = a.saveStdin(a.s.ctx, opts.Stdin, opts.StdinName, opts.Time)
	} else {
		root, err = a.saveVirtual(a.s.ctx, "/", buildTargetTree(targets), parentRoot)
	}
	close(a.fileCh)
	wg.Wait()
	a.trees.wait()
	if err == nil && opts.AfterRead != nil {
		err = opts.AfterRead(sn)
	}
	stats, ferr := a.s.Finish()
	if err == nil {
		err = ferr
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return nil, cause
		}
		return nil, err
	}

	sn.Tree = *root.Subtree
	sum := a.summary()
	sum.BlobsAdded, sum.BytesAdded, sum.BytesStored, sum.PacksAdded = stats.Blobs, stats.RawBytes, stats.StoredBytes, stats.Packs
	sum.PacksResumed = resumed.Packs
	sum.End = now()
	sn.Summary = &sum
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		return nil, err
	}
	return sn, nil
}

// streamSize returns how many bytes are left to read from rd when it is a
// regular file (stdin redirected from one); known is false for anything
// else (a pipe, a command's output).
func streamSize(rd io.Reader) (size int64, known bool) {
	f, ok := rd.(*os.File)
	if !ok {
		return 0, false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off > fi.Size() {
		return 0, false
	}
	return fi.Size() - off, true
}

// cleanTargets makes paths absolute and clean, checks they exist, sorts
// them, and drops any inside another (it is saved with its ancestor).
func cleanTargets(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("nothing to back up: no paths given")
	}
	var out []string
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", p, err)
		}
		if _, err := os.Lstat(abs); err != nil {
			return nil, fmt.Errorf("back up %s: %w", p, err)
		}
		out = append(out, abs)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	kept := out[:0]
	for _, p := range out {
		if len(kept) > 0 && within(kept[len(kept)-1], p) {
			continue
		}
		kept = append(kept, p)
	}
	return kept, nil
}

// within reports whether p is dir or below it.
func within(dir, p string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// targetNode is a node of the virtual tree of path components that leads
// from "/" to the backup targets.
type targetNode struct {
	children map[string]*targetNode
	target   bool // back up this path and everything below it
}

func buildTargetTree(targets []string) *targetNode {
	root := &targetNode{children: map[string]*targetNode{}}
	for _, t := range targets {
		if t == "/" {
			root.target = true
			continue
		}
		n := root
		for _, c := range strings.Split(t[1:], "/") {
			child := n.children[c]
			if child == nil {
				child = &targetNode{children: map[string]*targetNode{}}
				n.children[c] = child
			}
			n = child
		}
		n.target = true
	}
	return root
}

type archiver struct {
	r       *Repository
	s       *Saver
	excl    *source.Excluder
	onError func(string, error)
	onItem  func(action, path string, size int64)
	// progress is nil unless the caller watches (all its methods accept
	// a nil receiver).
	progress *Progress
	fileCh   chan fileJob
	// databases are the paths saved as database images.
	databases map[string]bool
	// dbFiles are the databases and their -wal, -shm and -journal files
	// that existed when the backup started, by file system and inode,
	// each with its database's path (see databaseAlias).
	dbFiles    map[fileID]string
	onDatabase func(string, sqlite.Info)
	class      chunk.Class
	bufs       sync.Pool // *[]byte chunk copies in flight to the encoders
	trees      *treePrefetcher

	filesRead atomic.Int64
	bytesRead atomic.Int64
	// bytesKnown counts bytes read whose blobs were stored already.
	bytesKnown atomic.Int64
	errors     atomic.Int64

	mu  sync.Mutex
	sum Summary // counters other than the atomics above
}

type fileJob struct {
	path string
	size int64           // as Lstat saw it
	res  chan fileResult // buffered, receives exactly one result
}

type fileResult struct {
	content []chunk.ID
	size    int64
	err     error // the file could not be read: report and leave it out
	fatal   error // the repository failed: abort the backup
}

func (a *archiver) summary() Summary {
	a.mu.Lock()
	s := a.sum
	a.mu.Unlock()
	s.FilesRead = int(a.filesRead.Load())
	s.BytesRead = a.bytesRead.Load()
	s.BytesSkipped = a.bytesKnown.Load()
	s.Errors = int(a.errors.Load())
	return s
}

// item tells OnItem, if set, about a file saved.
func (a *archiver) item(action, path string, size int64) {
	if a.onItem != nil {
		a.onItem(action, path, size)
	}
}

func (a *archiver) report(path string, err error) {
	a.errors.Add(1)
	a.progress.AddError()
	a.onError(path, err)
}

// fileWorker reads, chunks and hashes files; new chunks go to the Saver's
// encoders, so reading and chunking overlap with compression and sealing.
func (a *archiver) fileWorker(ctx context.Context) {
	c := chunk.NewChunker(a.r.cfg.Polynomial, a.class)
	scratch := make([]byte, a.class.MaxSize)
	for job := range a.fileCh {
		if ctx.Err() != nil {
			job.res <- fileResult{fatal: a.s.Err()}
			continue
		}
		a.progress.SetCurrent(job.path)
		f, err := source.OpenFile(job.path)
		if err != nil {
			a.fileDone(job.size, 0)
			job.res <- fileResult{err: err}
			continue
		}
		a.filesRead.Add(1)
		var res fileResult
		if job.size < int64(a.class.MinSize) {
			res = a.saveSmall(c, scratch, f, job.size)
		} else {
			res = a.saveStream(c, scratch, f)
		}
		f.Close()
		a.fileDone(job.size, res.size)
		job.res <- res
	}
}

// fileDone counts a file as done in the progress: its bytes read were
// counted as they were read, and what was not read of the size the
// scanner counted (a read error, a file that shrank) is counted now, so
// that the bytes done reach the total.
func (a *archiver) fileDone(size, read int64) {
	a.progress.AddFiles(1)
	if size > read {
		a.progress.AddBytes(size - read)
	}
}

// saveSmall stores a file that Lstat found smaller than the minimum chunk
// size: the chunker would return it as one chunk, so it is read straight
// into the buffer handed to the encoders, without the chunker and its two
// copies. Most files of a typical tree take this path. A file that grew
// meanwhile goes through the chunker after all.
func (a *archiver) saveSmall(c *chunk.Chunker, scratch []byte, f io.Reader, size int64) fileResult {
	bp := a.buf(int(size) + 1)
	n, err := io.ReadFull(f, (*bp)[:size+1])
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		a.bytesRead.Add(int64(n))
		a.progress.AddBytes(int64(n))
		if n == 0 {
			a.bufs.Put(bp)
			return fileResult{}
		}
		id, err := a.storeChunk((*bp)[:n], bp)
		if err != nil {
			return fileResult{fatal: err}
		}
		return fileResult{content: []chunk.ID{id}, size: int64(n)}
	case nil:
		res := a.saveStream(c, scratch, io.MultiReader(bytes.NewReader((*bp)[:n]), f))
		a.bufs.Put(bp)
		return res
	default:
		a.bufs.Put(bp)
		return fileResult{err: err}
	}
}

// buf returns a pooled buffer of length n.
func (a *archiver) buf(n int) *[]byte {
	bp, _ := a.bufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < n {
		b := make([]byte, max(n, 64<<10))
		bp = &b
	}
	*bp = (*bp)[:n]
	return bp
}

// storeChunk hashes data and, if it is new, hands it to the encoders. owned
// is the pooled buffer holding data, passed on to the encoders (which put it
// back); when nil, data is copied first.
func (a *archiver) storeChunk(data []byte, owned *[]byte) (chunk.ID, error) {
	id := a.r.hasher.Sum(data)
	ok, err := a.s.Reserve(index.DataBlob, id)
	if err == nil && !ok {
		a.bytesKnown.Add(int64(len(data)))
	}
	if err != nil || !ok {
		if owned != nil {
			a.bufs.Put(owned)
		}
		return id, err
	}
	if owned == nil {
		owned = a.buf(len(data))
		copy(*owned, data)
		data = *owned
	}
	return id, a.s.StoreAsync(index.DataBlob, id, data, func() { a.bufs.Put(owned) })
}

// saveStream chunks rd and stores the new chunks.
func (a *archiver) saveStream(c *chunk.Chunker, scratch []byte, rd io.Reader) fileResult {
	var res fileResult
	c.Reset(rd)
	for {
		data, err := c.Next(scratch)
		if err == io.EOF {
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
		a.bytesRead.Add(int64(len(data)))
		a.progress.AddBytes(int64(len(data)))
		res.size += int64(len(data))
		id, err := a.storeChunk(data, nil)
		if err != nil {
			res.fatal = err
			return res
		}
		res.content = append(res.content, id)
	}
}

// saveStdin stores one stream as the only file of the snapshot.
func (a *archiver) saveStdin(ctx context.Context, rd io.Reader, name string, mtime time.Time) (*Node, error) {
	class, ok := a.r.cfg.ChunkClasses[ClassStreams]
	if !ok {
		class = a.class
	}
	c := chunk.NewChunker(a.r.cfg.Polynomial, class)
	res := a.saveStream(c, make([]byte, class.MaxSize), source.StreamReader(ctx, rd))
	if res.fatal != nil {
		return nil, res.fatal
	}
	if res.err != nil {
		return nil, fmt.Errorf("read stdin: %w", res.err)
	}
	a.filesRead.Add(1)
	a.progress.AddFiles(1)
	a.item(ItemNew, "/"+name, res.size)
	a.mu.Lock()
	a.sum.FilesNew++
	a.sum.TotalFiles++
	a.sum.TotalBytes += res.size
	a.mu.Unlock()
	node := Node{
		Name: name, Type: NodeFile, Mode: 0o600,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		ModTime: mtime, AccessTime: mtime, ChangeTime: mtime,
		Size: uint64(res.size), Content: res.content,
	}
	id, err := a.s.SaveTree(&Tree{Nodes: []Node{node}})
	if err != nil {
		return nil, err
	}
	return &Node{Type: NodeDir, Subtree: &id}, nil
}

// loadParentTree returns the tree of the parent snapshot's node for the same
// directory, or nil when there is none or it cannot be read (then every file
// is read again, which is slower but correct).
func (a *archiver) loadParentTree(ctx context.Context, pn *Node) *Tree {
	if pn == nil || pn.Type != NodeDir || pn.Subtree == nil {
		return nil
	}
	t := a.trees.take(*pn.Subtree)
	if t == nil {
		var err error
		if t, err = a.r.LoadTree(ctx, *pn.Subtree); err != nil {
			return nil
		}
	}
	a.trees.prefetch(t)
	return t
}

// saveVirtual saves the directory dir of the virtual tree leading to the
// targets: its children that are targets are backed up whole, the others are
// intermediate directories holding only the way to deeper targets.
func (a *archiver) saveVirtual(ctx context.Context, dir string, tn *targetNode, pn *Node) (*Node, error) {
	if tn.target {
		info, err := source.Lstat(dir)
		if err != nil {
			return nil, fmt.Errorf("back up %s: %w", dir, err)
		}
		return a.saveDir(ctx, dir, info, pn)
	}
	ptree := a.loadParentTree(ctx, pn)
	names := make([]string, 0, len(tn.children))
	for name := range tn.children {
		names = append(names, name)
	}
	slices.Sort(names)
	var entries []pendingNode
	for _, name := range names {
		child := tn.children[name]
		p := filepath.Join(dir, name)
		// A database named with --sqlite is saved even if an exclude
		// pattern matches it: it was asked for by name.
		if child.target && a.excl.Excluded(p) && !a.isDatabase(p) {
			continue
		}
		info, err := source.Lstat(p)
		if err != nil {
			return nil, fmt.Errorf("back up %s: %w", p, err)
		}
		if !child.target {
			n, err := a.saveVirtual(ctx, p, child, ptree.Find(name))
			if err != nil {
				return nil, err
			}
			sub := *n.Subtree
			node, err := intermediateNode(p, info)
			if err != nil {
				return nil, err
			}
			node.Subtree = &sub
			entries = append(entries, pendingNode{node: node})
			continue
		}
		e, err := a.saveEntry(ctx, p, info, ptree.Find(name))
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return a.finishDir(ctx, dir, nil, entries, pn, ptree)
}

// intermediateNode describes a directory on the way to a target. When
// the path passes through a symlink (/home -> /data/home), the snapshot
// holds it as the directory it leads to: a symlink node cannot have a
// subtree.
func intermediateNode(p string, info *source.Info) (Node, error) {
	node := nodeFromInfo(info)
	if info.Type == source.Dir {
		return node, nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Node{}, fmt.Errorf("back up %s: %w", p, err)
	}
	if !fi.IsDir() {
		return Node{}, fmt.Errorf("back up %s: not a directory", p)
	}
	node.Type, node.LinkTarget, node.Size = NodeDir, "", 0
	node.Mode = unixMode(fi.Mode())
	node.ModTime = fi.ModTime()
	return node, nil
}

// pendingNode is a directory entry whose file content may still be read.
type pendingNode struct {
	node Node
	res  chan fileResult // nil when node is complete
	path string
	skip bool // the entry could not be saved and was reported: leave it out
	// changed: the parent snapshot has the file (for OnItem).
	changed bool
}

// saveEntry saves one file system entry below a target.
func (a *archiver) saveEntry(ctx context.Context, p string, info *source.Info, pn *Node) (pendingNode, error) {
	if info.Type == source.File && a.isDatabase(p) {
		return a.saveDatabase(ctx, p, info, pn)
	}
	if err := a.databaseAlias(p, info); err != nil {
		a.fileDone(info.Size, 0)
		a.report(p, err)
		return pendingNode{skip: true}, nil
	}
	node := nodeFromInfo(info)
	switch info.Type {
	case source.Dir:
		n, err := a.saveDir(ctx, p, info, pn)
		if err != nil {
			return pendingNode{}, err
		}
		return pendingNode{node: *n}, nil
	case source.File:
		a.mu.Lock()
		a.sum.TotalFiles++
		a.sum.TotalBytes += info.Size
		a.mu.Unlock()
		if pn != nil && unchanged(pn, info) {
			known, err := a.allKnown(pn.Content)
			if err != nil {
				return pendingNode{}, err
			}
			if known {
				node.Content = pn.Content
				a.mu.Lock()
				a.sum.FilesUnmodified++
				a.mu.Unlock()
				a.progress.AddFiles(1)
				a.progress.AddBytes(info.Size)
				a.item(ItemUnchanged, p, info.Size)
				return pendingNode{node: node}, nil
			}
		}
		a.mu.Lock()
		if pn == nil {
			a.sum.FilesNew++
		} else {
			a.sum.FilesChanged++
		}
		a.mu.Unlock()
		res := make(chan fileResult, 1)
		select {
		case a.fileCh <- fileJob{path: p, size: info.Size, res: res}:
		case <-ctx.Done():
			return pendingNode{}, a.s.Err()
		}
		return pendingNode{node: node, res: res, path: p, changed: pn != nil}, nil
	}
	return pendingNode{node: node}, nil
}

// unchanged reports whether a file may be taken from the parent snapshot
// without reading it: same type, size, mtime, ctime and inode.
func unchanged(pn *Node, info *source.Info) bool {
	return pn.Type == NodeFile &&
		pn.Size == uint64(info.Size) &&
		pn.ModTime.Equal(info.ModTime) &&
		pn.ChangeTime.Equal(info.ChangeTime) &&
		pn.Inode == info.Inode
}

// allKnown reports whether every blob is in the repository, so a file
// taken from the parent does not reference a blob that was lost since.
func (a *archiver) allKnown(ids []chunk.ID) (bool, error) {
	for _, id := range ids {
		ok, err := a.s.Known(index.DataBlob, id)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// saveDir saves directory dir (described by info) and everything below it.
func (a *archiver) saveDir(ctx context.Context, dir string, info *source.Info, pn *Node) (*Node, error) {
	ptree := a.loadParentTree(ctx, pn)
	names, err := source.ReadDirNames(dir)
	if err != nil {
		// Saved as an empty directory so its metadata is kept.
		a.report(dir, err)
	}
	entries := make([]pendingNode, 0, len(names))
	for _, name := range names {
		p := filepath.Join(dir, name)
		if (a.excl.Excluded(p) && !a.isDatabase(p)) || a.isDatabaseSidecar(p) {
			continue
		}
		pcn := ptree.Find(name)
		ci, err := source.LstatReusing(p, parentXattrs(pcn))
		if err != nil {
			a.report(p, err)
			continue
		}
		e, err := a.saveEntry(ctx, p, ci, pcn)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return a.finishDir(ctx, dir, info, entries, pn, ptree)
}

// parentXattrs returns, for source.LstatReusing, the extended attributes
// of pn (the entry's node in the parent snapshot, may be nil) when the
// entry is the same inode of the same device with the same change time:
// setting or removing an attribute sets the change time, so pn's are the
// attributes the entry still has.
func parentXattrs(pn *Node) func(*source.Info) ([]source.Xattr, bool) {
	if pn == nil || pn.Inode == 0 || pn.ChangeTime.IsZero() {
		return nil
	}
	return func(info *source.Info) ([]source.Xattr, bool) {
		if pn.Inode != info.Inode || pn.DeviceID != info.DeviceID || !pn.ChangeTime.Equal(info.ChangeTime) {
			return nil, false
		}
		return toSourceXattrs(pn.Xattrs), true
	}
}

// finishDir waits for the directory's files, stores its tree and returns
// its node (info nil: the virtual root, which has no metadata). pn is the
// directory's node in the parent snapshot and ptree its tree (both may be
// nil).
func (a *archiver) finishDir(ctx context.Context, dir string, info *source.Info, entries []pendingNode, pn *Node, ptree *Tree) (*Node, error) {
	t := &Tree{Nodes: make([]Node, 0, len(entries))}
	for _, e := range entries {
		if e.skip {
			continue
		}
		if e.res != nil {
			res := <-e.res
			if res.fatal != nil {
				return nil, res.fatal
			}
			if res.err != nil {
				a.report(e.path, res.err)
				a.mu.Lock()
				a.sum.TotalFiles--
				a.sum.TotalBytes -= int64(e.node.Size)
				a.mu.Unlock()
				continue
			}
			// The size is what was read: the file may have changed since
			// Lstat, and the content list must match the recorded size.
			if int64(e.node.Size) != res.size {
				a.mu.Lock()
				a.sum.TotalBytes += res.size - int64(e.node.Size)
				a.mu.Unlock()
			}
			e.node.Size = uint64(res.size)
			e.node.Content = res.content
			action := ItemNew
			if e.changed {
				action = ItemChanged
			}
			a.item(action, e.path, res.size)
		}
		t.Nodes = append(t.Nodes, e.node)
	}
	if err := ctx.Err(); err != nil {
		return nil, a.s.Err()
	}
	a.trees.drop(ptree)
	id, err := a.saveTree(t, pn, ptree)
	if err != nil {
		return nil, err
	}
	var node Node
	if info != nil {
		node = nodeFromInfo(info)
	} else {
		node = Node{Type: NodeDir}
	}
	node.Subtree = &id
	a.mu.Lock()
	switch {
	case pn == nil || pn.Subtree == nil:
		a.sum.DirsNew++
	case *pn.Subtree == id:
		a.sum.DirsUnmodified++
	default:
		a.sum.DirsChanged++
	}
	a.mu.Unlock()
	return &node, nil
}

// saveTree stores t like Saver.SaveTree, except that a tree equal to the
// parent snapshot's tree ptree (at pn) is not encoded again: its id is the
// parent's. In an unchanged directory hierarchy encoding the trees is most
// of a backup's work. nodesEqual compares times as instants, so the reused
// tree may spell a time in the zone offset of the parent's backup: the
// same instant, restored the same. The parent's tree blob must still be
// indexed, which it normally is, having just been loaded.
func (a *archiver) saveTree(t *Tree, pn *Node, ptree *Tree) (chunk.ID, error) {
	if ptree != nil && pn != nil && pn.Subtree != nil {
		t.Sort()
		if nodesEqual(t.Nodes, ptree.Nodes) {
			known, err := a.s.Known(index.TreeBlob, *pn.Subtree)
			if err != nil {
				return chunk.ID{}, err
			}
			if known {
				return *pn.Subtree, nil
			}
		}
	}
	return a.s.SaveTree(t)
}

// nodeFromInfo converts what source read into a tree node (without
// content or subtree).
func nodeFromInfo(info *source.Info) Node {
	n := Node{
		Name:       info.Name,
		Mode:       unixMode(info.Mode),
		UID:        info.UID,
		GID:        info.GID,
		User:       info.User,
		Group:      info.Group,
		ModTime:    info.ModTime,
		AccessTime: info.AccessTime,
		ChangeTime: info.ChangeTime,
		Inode:      info.Inode,
		DeviceID:   info.DeviceID,
		Links:      info.Links,
		LinkTarget: info.LinkTarget,
	}
	switch info.Type {
	case source.File:
		n.Type = NodeFile
		n.Size = uint64(info.Size)
	case source.Dir:
		n.Type = NodeDir
	case source.Symlink:
		// Reading a link's target updates its atime, and restore cannot set
		// it: recording it would only make identical trees differ.
		n.Type = NodeSymlink
		n.AccessTime = time.Time{}
	case source.Device:
		n.Type, n.Rdev = NodeDevice, info.Rdev
	case source.CharDevice:
		n.Type, n.Rdev = NodeCharDevice, info.Rdev
	case source.FIFO:
		n.Type = NodeFIFO
	case source.Socket:
		n.Type = NodeSocket
	default:
		n.Type = "unknown-" + strconv.Itoa(int(info.Type))
	}
	for _, x := range info.Xattrs {
		n.Xattrs = append(n.Xattrs, Xattr{Name: x.Name, Value: x.Value})
	}
	return n
}

// unixMode turns a Go file mode into Unix permission and special bits.
func unixMode(m os.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// goMode is the inverse of unixMode for the permission and special bits.
func goMode(u uint32) os.FileMode {
	m := os.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}
