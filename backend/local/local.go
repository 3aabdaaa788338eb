package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"repo/backend"
)

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.TempCleaner = (*Backend)(nil)
)

// link is os.Link, replaced by tests to simulate a file system without
// hard links.
var link = os.Link

// Fault hooks for crash and fault-injection tests. They are nil in normal
// builds, where each costs one comparison per call; the faults build tag
// (faults.go) sets them from REPO_FAULTS. A hook that returns an error
// stands for the failure of the system call at that point: the call is
// not made and the error travels on (through classify) as the real one
// would.
var (
	// hookWrite is called before each write of h's data in Save, with
	// the bytes of h written so far and the size n of this write. It
	// returns how many of the n bytes to write (0..n) and the error to
	// fail with after them; with a nil error the whole write is made.
	hookWrite func(h backend.Handle, written int64, n int) (int, error)
	// hookSync is called before the fsync of h's temporary file.
	hookSync func(h backend.Handle) error
	// hookSyncDir is called before the fsync of h's directory after h
	// was published (Save) or removed (Remove).
	hookSyncDir func(h backend.Handle) error
	// hookPublish is called before h's temporary file is linked (or
	// renamed) to its name.
	hookPublish func(h backend.Handle) error
	// hookRemove is called before h is removed.
	hookRemove func(h backend.Handle) error
)

// Backend is a repository in a local directory. It is safe for concurrent
// use; it holds no open files between calls.
type Backend struct {
	location string // the directory as the user gave it, for messages
	dir      string // the same directory made absolute, so a later chdir does not move the repository
	// consistent: the directory is on a local file system, whose
	// listings are read-after-write consistent (Properties).
	consistent bool
}

const (
	dirMode  = 0o700
	fileMode = 0o400 // objects are immutable: read-only once published
)

// types lists the FileTypes that own a directory (all but ConfigFile).
// Create makes all of them; a repository created before a type existed
// (quarantine/) lacks its directory, which Save then makes on first use and
// List treats as empty.
var types = []backend.FileType{backend.KeyFile, backend.IndexFile, backend.SnapshotFile, backend.LockFile, backend.QuarantineFile, backend.PlanFile, backend.PackFile}

// Create makes dir (with parents) and the repository's directory layout,
// including the 256 data/xx directories, and returns a backend on it. dir
// may exist already, empty or not: Create does not look for a config, the
// repository layer does.
func Create(dir string) (*Backend, error) {
	b, err := newBackend(dir)
	if err != nil {
		return nil, err
	}
	for _, t := range types {
		if err := os.MkdirAll(filepath.Join(b.dir, t.String()), dirMode); err != nil {
			return nil, fmt.Errorf("create repository %s: %w", dir, classify(err))
		}
	}
	data := filepath.Join(b.dir, backend.PackFile.String())
	for i := range 256 {
		if err := os.Mkdir(filepath.Join(data, fmt.Sprintf("%02x", i)), dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create repository %s: %w", dir, classify(err))
		}
	}
	// Make the new directory entries durable: a Save's directory fsync does
	// not cover the entries above it.
	for _, d := range []string{data, b.dir, filepath.Dir(b.dir)} {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("create repository %s: %w", dir, err)
		}
	}
	b.probe()
	return b, nil
}

// Open returns a backend on the existing directory dir. A missing dir, or
// one that is not a directory, is an error wrapping backend.ErrNotExist.
func Open(dir string) (*Backend, error) {
	b, err := newBackend(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(b.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open repository %s: %w", dir, backend.ErrNotExist)
	case err != nil:
		return nil, fmt.Errorf("open repository %s: %w", dir, classify(err))
	case !fi.IsDir():
		return nil, fmt.Errorf("open repository %s: not a directory: %w", dir, backend.ErrNotExist)
	}
	b.probe()
	return b, nil
}

func newBackend(dir string) (*Backend, error) {
	if dir == "" {
		return nil, backend.Permanent(errors.New("open repository: empty path"))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	return &Backend{location: dir, dir: abs}, nil
}

// probe records what the file system holding the repository offers; called
// once the directory exists.
func (b *Backend) probe() { b.consistent = consistentListing(b.dir) }

// Location returns the directory as given to Create or Open.
func (b *Backend) Location() string { return b.location }

// Properties: hard links make Save exclusive; two connections keep a disk
// busy without making it seek between many writers.
func (b *Backend) Properties() backend.Properties {
	return backend.Properties{ExclusiveCreate: true, Connections: 2, ConsistentListing: b.consistent}
}

// localFileSystems are the statfs magic numbers of file systems whose
// directory listings show a file as soon as its creation returned: disks
// and memory, not network file systems (NFS, SMB, FUSE filesystems, which
// may cache listings). Anything not listed counts as possibly lagging.
var localFileSystems = map[int64]bool{
	0xEF53:     true, // ext2, ext3, ext4
	0x58465342: true, // xfs
	0x9123683E: true, // btrfs
	0x01021994: true, // tmpfs
	0x2FC12FC1: true, // zfs
	0xF2F52010: true, // f2fs
	0x794C7630: true, // overlayfs (over local layers, as in containers)
}

// consistentListing reports whether dir is on a local file system (see
// localFileSystems).
func consistentListing(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return localFileSystems[int64(st.Type)]
}

// filename returns the path of h, which must be valid: h.String() is its
// path inside the repository.
func (b *Backend) filename(h backend.Handle) string {
	return filepath.Join(b.dir, filepath.FromSlash(h.String()))
}

// copyStep is how much Save copies between two checks of ctx; large enough
// that a 16 MiB pack takes few write calls.
const copyStep = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyStep); return &b }}

// Save writes rd to a temporary file next to h's path and publishes it
// under h's name; see the package documentation for the steps.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("save: %w", err))
	}
	if err := b.save(ctx, h, rd); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	return nil
}

func (b *Backend) save(ctx context.Context, h backend.Handle, rd backend.RewindReader) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	final := b.filename(h)
	dir := filepath.Dir(final)

	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) && h.Type != backend.ConfigFile {
		// data/xx (or a type directory) is missing, e.g. removed by
		// hand: make it and try again.
		if err := mkdirSynced(dir); err != nil {
			return err
		}
		f, err = os.CreateTemp(dir, tempPrefix+"*")
	}
	if err != nil {
		return classify(err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // may be closed already; only the first error matters
			_ = os.Remove(tmp)
		}
	}()

	if err := rd.Rewind(); err != nil {
		return err
	}
	var n int64
	switch {
	case hookWrite != nil:
		n, err = copyCtx(ctx, &hookedWriter{f: f, h: h}, rd)
	case h.Type == backend.PackFile && rd.Length() >= directMin && setDirect(f, true) == nil:
		n, err = copyDirect(ctx, f, rd)
	default:
		n, err = copyCtx(ctx, f, rd)
	}
	if err != nil {
		return classify(err)
	}
	if n != rd.Length() {
		return fmt.Errorf("reader yielded %d bytes, want %d", n, rd.Length())
	}
	if hookSync != nil {
		if err := hookSync(h); err != nil {
			return classify(&fs.PathError{Op: "sync", Path: tmp, Err: err})
		}
	}
	if err := f.Sync(); err != nil {
		return classify(err)
	}
	if err := f.Chmod(fileMode); err != nil {
		return classify(err)
	}
	if err := f.Close(); err != nil {
		return classify(err)
	}
	// Last chance to back out: after the link the object is visible.
	if err := ctx.Err(); err != nil {
		return err
	}
	if hookPublish != nil {
		if err := hookPublish(h); err != nil {
			return classify(&os.LinkError{Op: "link", Old: tmp, New: final, Err: err})
		}
	}
	if err := publish(tmp, final); err != nil {
		return err
	}
	// If this fails the object is visible but maybe not durable; the
	// error tells the caller not to rely on it (a retry sees ErrExists,
	// which for content-addressed objects means the same content).
	if hookSyncDir != nil {
		if err := hookSyncDir(h); err != nil {
			return fmt.Errorf("sync directory: %w", classify(&fs.PathError{Op: "sync", Path: dir, Err: err}))
		}
	}
	return syncDir(dir)
}

// hookedWriter writes to f through hookWrite (fault injection only).
type hookedWriter struct {
	f       *os.File
	h       backend.Handle
	written int64
}

func (w *hookedWriter) Write(p []byte) (int, error) {
	allow, ferr := hookWrite(w.h, w.written, len(p))
	if ferr == nil {
		allow = len(p)
	}
	allow = min(max(allow, 0), len(p))
	n, err := w.f.Write(p[:allow])
	w.written += int64(n)
	if err == nil && ferr != nil {
		err = &fs.PathError{Op: "write", Path: w.f.Name(), Err: ferr}
	}
	return n, err
}

// publish makes tmp visible as final unless final exists. It removes tmp on
// success; on error the caller removes it.
func publish(tmp, final string) error {
	err := link(tmp, final)
	switch {
	case err == nil:
		// final holds the data now; a leftover tmp would only waste
		// space, and List ignores it.
		_ = os.Remove(tmp)
		return nil
	case errors.Is(err, fs.ErrExist):
		return backend.ErrExists
	case !linkUnsupported(err):
		return classify(err)
	}
	// No hard links here: check, then rename. Not atomic against a
	// concurrent Save of the same name; see the package documentation.
	if _, err := os.Lstat(final); err == nil {
		return backend.ErrExists
	} else if !errors.Is(err, fs.ErrNotExist) {
		return classify(err)
	}
	return classify(os.Rename(tmp, final))
}

// linkUnsupported reports whether os.Link failed because the file system
// cannot hard-link (rather than because of the names involved).
func linkUnsupported(err error) bool {
	for _, e := range []error{syscall.EPERM, syscall.ENOTSUP, syscall.EOPNOTSUPP, syscall.EXDEV, syscall.EMLINK, syscall.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Packs are written with direct I/O (O_DIRECT), past the page cache: the
// kernel then moves the bytes to the disk from our buffer instead of
// copying them into cache pages first. On the benchmark machine that took
// writing a first backup's 650 MB of packs from about 0.76 s of CPU to
// about 0.1 s; Save makes every pack durable with fsync before publishing
// it anyway, so the cache held nothing a write would wait less for, and a
// backup no longer pushes the user's files out of the cache with packs it
// will not read again soon. Other objects are small and written through
// the cache.
const (
	// directMin is the smallest pack written with direct I/O.
	directMin = 1 << 20
	// dioAlign is the alignment direct I/O needs of buffer addresses,
	// lengths and file offsets here: the page size, a multiple of every
	// common logical block size. A file system that needs more refuses the
	// first write, and the copy goes on through the cache.
	dioAlign = 4096
)

// directBufs holds copyStep buffers aligned to dioAlign, for copyDirect
// and directReader.
var directBufs = sync.Pool{New: func() any {
	b := make([]byte, copyStep+dioAlign)
	if off := int(uintptr(unsafe.Pointer(&b[0])) & (dioAlign - 1)); off != 0 {
		b = b[dioAlign-off:]
	}
	b = b[:copyStep:copyStep]
	return &b
}}

// writeDirect and readDirectAt are the writes and reads made with
// O_DIRECT set; tests replace them to refuse one.
var (
	writeDirect  = (*os.File).Write
	readDirectAt = (*os.File).ReadAt
)

// copyDirect copies rd to f, a new empty file with O_DIRECT set, checking
// ctx before each step, and returns how many bytes were written. Every
// write but the last is copyStep bytes; the last is padded with zeros to a
// multiple of dioAlign, and the file is then truncated to the bytes read.
// If the first write is refused (EINVAL: the file system wants another
// alignment), O_DIRECT is cleared and the copy goes on through the cache.
func copyDirect(ctx context.Context, f *os.File, rd io.Reader) (int64, error) {
	bufp := directBufs.Get().(*[]byte)
	defer directBufs.Put(bufp)
	buf := *bufp
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, rerr := io.ReadFull(rd, buf)
		if n > 0 {
			padded := (n + dioAlign - 1) &^ (dioAlign - 1)
			clear(buf[n:padded])
			_, err := writeDirect(f, buf[:padded])
			if err != nil && total == 0 && errors.Is(err, syscall.EINVAL) {
				if err := setDirect(f, false); err != nil {
					return 0, err
				}
				if _, err := f.Write(buf[:n]); err != nil {
					return 0, err
				}
				if rerr != nil {
					return int64(n), nil
				}
				rest, err := copyCtx(ctx, f, rd)
				return int64(n) + rest, err
			}
			if err != nil {
				return total, err
			}
			total += int64(n)
			if padded != n {
				if err := f.Truncate(total); err != nil {
					return total, err
				}
			}
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return total, nil
		case rerr != nil:
			return total, fmt.Errorf("read: %w", rerr)
		}
	}
}

// copyCtx copies rd to w in steps of copyStep bytes, checking ctx before
// each, and returns how many bytes were written.
func copyCtx(ctx context.Context, w io.Writer, rd io.Reader) (int64, error) {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		// Fill the whole buffer so that each write is large.
		n, rerr := io.ReadFull(rd, buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return total, err
			}
			total += int64(n)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return total, nil
		case rerr != nil:
			return total, fmt.Errorf("read: %w", rerr)
		}
	}
}

// Load opens h, seeks to offset and calls fn with a reader of at most
// length bytes (all the rest when length is 0).
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("load: %w", err))
	}
	if length < 0 || offset < 0 {
		return backend.Permanent(fmt.Errorf("load %v: invalid range: length %d, offset %d", h, length, offset))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("load %v: %w", h, err)
	}
	f, err := os.Open(b.filename(h))
	if err != nil {
		return fmt.Errorf("load %v: %w", h, notExist(err))
	}
	defer f.Close() // read-only: Close cannot lose data
	if length >= directMin && setDirect(f, true) == nil {
		// A large range (a restore's run of blobs, a pack being checked)
		// is read past the page cache, as packs are written: see
		// directReader.
		bufp := directBufs.Get().(*[]byte)
		defer directBufs.Put(bufp)
		r := &directReader{f: f, pos: offset, end: offset + int64(length), buf: *bufp}
		return fn(backend.ContextReader(ctx, r))
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
	}
	var r io.Reader = f
	if length > 0 {
		r = io.LimitReader(f, int64(length))
	}
	return fn(backend.ContextReader(ctx, r))
}

// directReader reads bytes pos to end of f, which has O_DIRECT set, through
// an aligned buffer: each read covers whole dioAlign blocks around the
// range, and only the range is handed out. Reading a pack the cache does
// not hold (every pack, once they are written past it) then costs no
// cache pages, which on the benchmark machine cost about as much CPU as
// on the write side. A read refused with EINVAL (another alignment)
// clears O_DIRECT, and the rest is read through the cache.
type directReader struct {
	f        *os.File
	pos, end int64  // next byte to hand out; end of the range
	buf      []byte // aligned to dioAlign, a multiple of it long
	data     []byte // bytes of buf not handed out yet
	buffered bool   // O_DIRECT was cleared
}

func (r *directReader) Read(p []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	if len(r.data) == 0 {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.pos += int64(n)
	return n, nil
}

// fill reads the next bytes of the range into buf; io.EOF at the end of
// the file.
func (r *directReader) fill() error {
	start, skip := r.pos, 0
	want := min(int64(len(r.buf)), r.end-r.pos)
	if !r.buffered {
		start = r.pos &^ (dioAlign - 1)
		skip = int(r.pos - start)
		end := (r.end + dioAlign - 1) &^ (dioAlign - 1)
		want = min(int64(len(r.buf)), end-start)
	}
	read := readDirectAt
	if r.buffered {
		read = (*os.File).ReadAt
	}
	n, err := read(r.f, r.buf[:want], start)
	if n == 0 && errors.Is(err, syscall.EINVAL) && !r.buffered {
		if err := setDirect(r.f, false); err != nil {
			return err
		}
		r.buffered = true
		return r.fill()
	}
	if n <= skip {
		if err == nil || errors.Is(err, io.EOF) {
			return io.EOF
		}
		return err
	}
	// Bytes past the range were read only for the alignment.
	r.data = r.buf[skip:min(n, skip+int(r.end-r.pos))]
	return nil
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("stat: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	fi, err := os.Stat(b.filename(h))
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, notExist(err))
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size()}, nil
}

// List walks t's directory (for packs, every data/xx directory). It shows
// only regular files that a Handle of type t addresses: temporary files
// (leading "."), stray names and misplaced packs are skipped, so every
// listed name can be loaded.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := t.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("list: %w", err))
	}
	err := b.list(ctx, t, fn)
	if stop, ok := err.(*errStop); ok {
		return stop.err
	}
	if err != nil {
		return fmt.Errorf("list %v: %w", t, err)
	}
	return nil
}

// errStop carries fn's error out of list so that List can return it
// unchanged instead of wrapping it like its own errors.
type errStop struct{ err error }

func (e *errStop) Error() string { return e.err.Error() }

func (b *Backend) list(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch t {
	case backend.ConfigFile:
		fi, err := os.Lstat(b.filename(backend.Handle{Type: t}))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return classify(err)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		if err := fn(backend.FileInfo{Size: fi.Size()}); err != nil {
			return &errStop{err}
		}
		return nil
	case backend.PackFile:
		return b.listPacks(ctx, fn)
	}
	return b.listDir(ctx, filepath.Join(b.dir, t.String()), t, "", fn)
}

func (b *Backend) listPacks(ctx context.Context, fn func(backend.FileInfo) error) error {
	data := filepath.Join(b.dir, backend.PackFile.String())
	entries, err := os.ReadDir(data)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return classify(err)
	}
	for _, e := range entries {
		// Only data/xx directories hold addressable packs.
		if !e.IsDir() || len(e.Name()) != 2 || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := b.listDir(ctx, filepath.Join(data, e.Name()), backend.PackFile, e.Name(), fn); err != nil {
			return err
		}
	}
	return nil
}

// listDir calls fn for every listable object in dir. prefix, when not
// empty, is the two characters names must start with (the xx of a data/xx
// directory).
// A missing dir lists nothing. fn's error is returned unchanged.
func (b *Backend) listDir(ctx context.Context, dir string, t backend.FileType, prefix string, fn func(backend.FileInfo) error) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return classify(err)
	}
	defer d.Close()
	for {
		// Read in batches: a data/xx directory may hold thousands of packs.
		entries, err := d.ReadDir(1024)
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := e.Name()
			if strings.HasPrefix(name, ".") || !e.Type().IsRegular() || !strings.HasPrefix(name, prefix) {
				continue
			}
			if (backend.Handle{Type: t, Name: name}).Valid() != nil {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since ReadDir
			}
			if err != nil {
				return classify(err)
			}
			if err := fn(backend.FileInfo{Name: name, Size: fi.Size()}); err != nil {
				return &errStop{err}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return classify(err)
		}
	}
}

// Remove deletes h and fsyncs its directory, so that a removal the caller
// relied on (e.g. of a lock) survives a crash.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("remove: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	name := b.filename(h)
	if hookRemove != nil {
		if err := hookRemove(h); err != nil {
			return fmt.Errorf("remove %v: %w", h, notExist(&fs.PathError{Op: "remove", Path: name, Err: err}))
		}
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("remove %v: %w", h, notExist(err))
	}
	if hookSyncDir != nil {
		if err := hookSyncDir(h); err != nil {
			return fmt.Errorf("remove %v: sync directory: %w", h, classify(&fs.PathError{Op: "sync", Path: filepath.Dir(name), Err: err}))
		}
	}
	if err := syncDir(filepath.Dir(name)); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// tempPrefix starts the name of every temporary file of a Save.
const tempPrefix = ".tmp-"

// RemoveTemp removes the temporary files that Saves of killed processes
// left next to the objects they were writing (in the repository directory
// for the config, in every type directory, and in every data/xx), when
// they were last modified more than olderThan ago. A running Save writes
// its file continuously, so it is never that old. Files that vanish
// meanwhile (their Save finished) are skipped.
func (b *Backend) RemoveTemp(ctx context.Context, olderThan time.Duration) (n int, size int64, err error) {
	dirs := []string{b.dir}
	for _, t := range types {
		dirs = append(dirs, filepath.Join(b.dir, t.String()))
	}
	data := filepath.Join(b.dir, backend.PackFile.String())
	entries, err := os.ReadDir(data)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("remove temporary files: %w", classify(err))
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			dirs = append(dirs, filepath.Join(data, e.Name()))
		}
	}
	cutoff := time.Now().Add(-olderThan)
	for _, dir := range dirs {
		dn, dsize, err := removeTempIn(ctx, dir, cutoff)
		n += dn
		size += dsize
		if err != nil {
			return n, size, fmt.Errorf("remove temporary files in %s: %w", dir, err)
		}
	}
	return n, size, nil
}

// removeTempIn removes the temporary files in dir modified before cutoff.
// A missing dir holds none.
func removeTempIn(ctx context.Context, dir string, cutoff time.Time) (n int, size int64, err error) {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, classify(err)
	}
	defer d.Close()
	for {
		// In batches, as listDir does: data/xx may hold thousands of packs.
		entries, rerr := d.ReadDir(1024)
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return n, size, err
			}
			if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return n, size, classify(err)
			}
			if !fi.ModTime().Before(cutoff) {
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return n, size, classify(err)
			}
			n++
			size += fi.Size()
		}
		if rerr == io.EOF {
			return n, size, nil
		}
		if rerr != nil {
			return n, size, classify(rerr)
		}
	}
}

// Close does nothing: no file stays open between calls.
func (b *Backend) Close() error { return nil }

// notExist turns a missing file into backend.ErrNotExist (the message then
// reads "load config: does not exist") and classifies other errors.
func notExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return backend.ErrNotExist
	}
	return classify(err)
}

// classify marks errors that retrying cannot fix as permanent: a full disk
// or quota, and denied access. nil stays nil.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return backend.Permanent(fmt.Errorf("disk is full: %w", err))
	case errors.Is(err, fs.ErrPermission):
		return backend.Permanent(err)
	}
	return err
}

// syncDir fsyncs a directory so that entries created or removed in it
// survive a crash. File systems that cannot fsync a directory (EINVAL,
// ENOTSUP) are accepted as they are.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return classify(err)
	}
	err = d.Sync()
	cerr := d.Close()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("sync directory: %w", classify(err))
	}
	return classify(cerr)
}

// mkdirSynced makes dir and fsyncs its parent, so that a file later
// published in dir is reachable after a crash. It makes only the last
// element: a repository whose root was removed stays missing instead of
// being recreated piecemeal. A concurrent Save may have made dir already.
func mkdirSynced(dir string) error {
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return classify(err)
	}
	return syncDir(filepath.Dir(dir))
}
