package sftp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path"
	"strings"
	"sync"
	"time"

	pkgsftp "github.com/pkg/sftp"

	"repo/backend"
)

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.TempCleaner = (*Backend)(nil)
)

// Options configure how Open and Create reach the server. The zero value
// does what ssh would: keys from the agent and ~/.ssh, host keys checked
// against ~/.ssh/known_hosts, 4 connections.
type Options struct {
	// KnownHostsFile is the known_hosts file host keys are checked
	// against; "" means ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts.
	// A missing file counts as empty.
	KnownHostsFile string
	// IdentityFiles are unencrypted private key files to log in with.
	// When set, they are the only keys offered (like OpenSSH's
	// IdentitiesOnly): neither the ssh agent nor ~/.ssh/id_* are used.
	// Empty means the agent's keys (SSH_AUTH_SOCK), then ~/.ssh/id_ed25519,
	// id_ecdsa and id_rsa; encrypted ones among these are skipped.
	IdentityFiles []string
	// HostKeyFingerprint, e.g. "SHA256:uNiVzt…" as ssh-keygen -l prints
	// it, accepts a server offering exactly that host key whatever
	// known_hosts says, and refuses any other key. "" relies on
	// known_hosts alone.
	HostKeyFingerprint string
	// Connections is how many SFTP sessions run at once, each over its
	// own SSH connection (or Command process); 0 means 4.
	Connections int
	// Command, when set, is run (once per connection) instead of
	// connecting over SSH, and must speak SFTP on its stdin and stdout,
	// like "ssh -s backup@host sftp" or "/usr/lib/openssh/sftp-server".
	// It is split into arguments like a shell would, without expansions.
	// Only the location's path is used then; the command's stderr is
	// kept for error messages. The SSH options above do not apply.
	Command string
}

// defaultConnections: four sessions, each over its own SSH connection.
// OpenSSH serves a connection in one process, and x/crypto/ssh encrypts a
// connection's traffic in one goroutine, so separate connections can use
// more CPUs on both ends than channels of one connection; and a hung
// connection can be closed without failing the other sessions' work.
// Measured uploading 16 MiB files over loopback on a 2-CPU machine (both
// ends share the CPUs, so this shows no scaling): 1 session 166-237
// MiB/s, 4 sessions on 4 connections 151-183, on 2 connections 142-203,
// on 1 connection 118-174 (four runs each, noisy).
const defaultConnections = 4

// Backend is a repository on an SFTP server. It is safe for concurrent
// use; see the package documentation for how it uses its connections.
type Backend struct {
	loc  Location
	dir  string // the repository directory, absolute on the server
	d    *dialer
	conn int // Options.Connections with the default applied

	// What the server offered, from the first session; the same server
	// answers every session.
	hardlink, posixRename, fsync bool

	// tokens limits how many operations hold a session at once: an
	// operation takes a token for its whole duration, including Load's
	// fn, then an idle session (or dials one).
	tokens chan struct{}

	closeCtx  context.Context    // cancelled by Close
	closed    context.CancelFunc // cancels closeCtx
	closeOnce sync.Once

	mu sync.Mutex
	// idle are live sessions no operation uses, the most recently
	// used last, so that a sequential caller keeps reusing one
	// connection. idle and the sessions in use number at most conn.
	idle []*session
	// all holds every session not closed yet, for Close; nil once
	// closed.
	all map[*session]bool
}

// errClosed is returned by operations on a closed Backend.
var errClosed = backend.Permanent(errors.New("sftp backend is closed"))

// Open connects to an existing repository. A missing directory (or one
// that is not a directory) gives an error wrapping backend.ErrNotExist.
func Open(ctx context.Context, loc Location, opts Options) (*Backend, error) {
	b, err := newBackend(ctx, loc, opts)
	if err != nil {
		return nil, fmt.Errorf("open repository %v: %w", loc, err)
	}
	err = b.withSession(ctx, func(c *pkgsftp.Client) error {
		fi, err := c.Stat(b.dir)
		switch {
		case err != nil:
			return notExist(err)
		case !fi.IsDir():
			return fmt.Errorf("not a directory: %w", backend.ErrNotExist)
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("open repository %v: %w", loc, err)
	}
	return b, nil
}

// dirMode is the mode of the repository directory; the type directories
// below it get the server's default.
const dirMode = 0o700

// fileMode: objects are immutable, read-only once published.
const fileMode = 0o400

// types lists the FileTypes that own a directory (all but ConfigFile).
var types = []backend.FileType{backend.KeyFile, backend.IndexFile, backend.SnapshotFile, backend.LockFile, backend.QuarantineFile, backend.PlanFile, backend.PackFile}

// Create makes the repository directory (with parents) and its layout,
// including the 256 data/xx directories, and returns a backend on it. The
// directory may exist already; Create does not look for a config.
func Create(ctx context.Context, loc Location, opts Options) (*Backend, error) {
	b, err := newBackend(ctx, loc, opts)
	if err != nil {
		return nil, fmt.Errorf("create repository %v: %w", loc, err)
	}
	if err := b.withSession(ctx, b.mkdirs); err != nil {
		b.Close()
		return nil, fmt.Errorf("create repository %v: %w", loc, err)
	}
	return b, nil
}

// mkdirs makes the directory layout. The 263 mkdirs go out concurrently:
// one after the other they would cost a round trip each.
func (b *Backend) mkdirs(c *pkgsftp.Client) error {
	// A directory that exists keeps its mode: its owner chose it.
	if _, err := c.Stat(b.dir); errors.Is(err, fs.ErrNotExist) {
		if err := c.MkdirAll(b.dir); err != nil {
			return classify(err)
		}
		if err := c.Chmod(b.dir, dirMode); err != nil {
			return classify(err)
		}
	} else if err != nil {
		return classify(err)
	}
	var dirs []string
	for _, t := range types {
		dirs = append(dirs, path.Join(b.dir, t.String()))
	}
	if err := mkdirEach(c, dirs); err != nil {
		return err
	}
	dirs = dirs[:0]
	for i := range 256 {
		dirs = append(dirs, path.Join(b.dir, backend.PackFile.String(), fmt.Sprintf("%02x", i)))
	}
	return mkdirEach(c, dirs)
}

// mkdirEach makes every directory in dirs (their parents exist),
// accepting those that exist already.
func mkdirEach(c *pkgsftp.Client, dirs []string) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, 32)
	for _, d := range dirs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := mkdir(c, d); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// mkdir makes dir, whose parent exists; an existing directory is fine.
// (OpenSSH reports an existing name as a generic failure, hence the
// Lstat.)
func mkdir(c *pkgsftp.Client, dir string) error {
	err := c.Mkdir(dir)
	if err == nil {
		return nil
	}
	if fi, serr := c.Lstat(dir); serr == nil && fi.IsDir() {
		return nil
	}
	return fmt.Errorf("mkdir %s: %w", dir, classify(err))
}

// newBackend checks opts, makes the first session and learns from it the
// server's extensions and the absolute repository path.
func newBackend(ctx context.Context, loc Location, opts Options) (*Backend, error) {
	if err := loc.check(); err != nil {
		return nil, backend.Permanent(err)
	}
	if loc.Path == "" {
		return nil, backend.Permanent(errors.New("empty path"))
	}
	if opts.Connections < 0 {
		return nil, backend.Permanent(fmt.Errorf("invalid number of connections %d", opts.Connections))
	}
	d := &dialer{loc: loc}
	if opts.Command != "" {
		args, err := splitCommand(opts.Command)
		if err != nil {
			return nil, backend.Permanent(err)
		}
		d.command = args
	} else {
		d.user = loc.User
		if d.user == "" {
			u, err := user.Current()
			if err != nil {
				return nil, backend.Permanent(fmt.Errorf("no user name in the location, and the local one is unknown: %w", err))
			}
			d.user = u.Username
		}
		if opts.HostKeyFingerprint != "" {
			fp, err := normFingerprint(opts.HostKeyFingerprint)
			if err != nil {
				return nil, backend.Permanent(err)
			}
			opts.HostKeyFingerprint = fp
		}
		var err error
		if d.hosts, err = newHostKeys(opts, loc, d.user); err != nil {
			return nil, backend.Permanent(err)
		}
		if d.keys, err = loadKeys(opts); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}

	b := &Backend{
		loc:  loc,
		d:    d,
		conn: opts.Connections,
		idle: []*session{s},
		all:  map[*session]bool{s: true},
	}
	if b.conn == 0 {
		b.conn = defaultConnections
	}
	b.tokens = make(chan struct{}, b.conn)
	b.closeCtx, b.closed = context.WithCancel(context.Background())
	ext := func(name string) bool {
		v, ok := s.c.HasExtension(name)
		return ok && v == "1"
	}
	b.hardlink = ext("hardlink@openssh.com")
	b.posixRename = ext("posix-rename@openssh.com")
	b.fsync = ext("fsync@openssh.com")

	b.dir = loc.Path
	if !path.IsAbs(b.dir) {
		err := b.withSession(ctx, func(c *pkgsftp.Client) error {
			wd, err := c.Getwd()
			if err != nil {
				return fmt.Errorf("find the login directory: %w", classify(err))
			}
			b.dir = path.Join(wd, b.dir)
			return nil
		})
		if err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

// Location returns the location in the form ParseLocation reads.
func (b *Backend) Location() string { return b.loc.String() }

// Properties: Save is exclusive when the server can hard-link.
func (b *Backend) Properties() backend.Properties {
	return backend.Properties{ExclusiveCreate: b.hardlink, Connections: b.conn}
}

// acquire takes a token and returns a live session: the most recently
// used idle one, or a new one.
func (b *Backend) acquire(ctx context.Context) (*session, error) {
	if b.closeCtx.Err() != nil {
		return nil, errClosed
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.closeCtx.Done():
		return nil, errClosed
	case b.tokens <- struct{}{}:
	}
	b.mu.Lock()
	for len(b.idle) > 0 {
		s := b.idle[len(b.idle)-1]
		b.idle = b.idle[:len(b.idle)-1]
		if !s.isDead() {
			b.mu.Unlock()
			return s, nil
		}
		delete(b.all, s)
		go s.close()
	}
	b.mu.Unlock()

	// Close must not wait for a dial to a server that hangs.
	dctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.closeCtx, cancel)
	s, err := b.d.dial(dctx)
	stop()
	cancel()
	if err == nil {
		b.mu.Lock()
		if b.all == nil {
			err = errClosed
		} else {
			b.all[s] = true
		}
		b.mu.Unlock()
		if err != nil {
			s.close()
		}
	}
	if err != nil {
		<-b.tokens
		if b.closeCtx.Err() != nil {
			return nil, errClosed
		}
		return nil, err
	}
	return s, nil
}

// release makes s idle again, or closes it if it died, and returns the
// token.
func (b *Backend) release(s *session) {
	b.mu.Lock()
	switch {
	case b.all == nil: // closed: Close took care of s
	case s.isDead():
		delete(b.all, s)
		go s.close()
	default:
		b.idle = append(b.idle, s)
	}
	b.mu.Unlock()
	<-b.tokens
}

// withSession runs op on a session of its own. If ctx is cancelled and op
// has not returned hangGrace later, the session's transport is closed so
// that op's pending requests fail and op returns: pkg/sftp requests do
// not watch a context. An error of op after ctx ended is reported as
// ctx's error.
func (b *Backend) withSession(ctx context.Context, op func(c *pkgsftp.Client) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, err := b.acquire(ctx)
	if err != nil {
		return err
	}
	var (
		done     = make(chan struct{})
		mu       sync.Mutex
		finished bool // guarded by mu: once set, s may serve another operation
	)
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(hangGrace)
		defer t.Stop()
		select {
		case <-done:
			return
		case <-t.C:
		}
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			s.kill()
		}
	})
	err = op(s.c)
	mu.Lock()
	finished = true
	mu.Unlock()
	close(done)
	stop()
	if err != nil && !serverReported(err) {
		// The transport may have failed before s.dead says so (the
		// goroutines that watch it have not run yet): never hand such a
		// session to the next operation. A healthy session dropped here
		// costs one new connection, on an error path.
		s.kill()
	}
	b.release(s)
	if err != nil && ctx.Err() != nil {
		var fe *fnError
		if !errors.As(err, &fe) {
			return ctx.Err()
		}
	}
	return err
}

// fnError carries the error of a caller's callback through withSession,
// which would otherwise replace it with ctx's error; the caller unwraps it.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// filename returns the path of h, which must be valid: h.String() is its
// path inside the repository.
func (b *Backend) filename(h backend.Handle) string {
	return path.Join(b.dir, h.String())
}

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

func (b *Backend) save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	final := b.filename(h)
	dir := path.Dir(final)
	tmp := path.Join(dir, tempPrefix+randomHex())
	leftover := false
	err := b.withSession(ctx, func(c *pkgsftp.Client) error {
		f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if errors.Is(err, fs.ErrNotExist) && h.Type != backend.ConfigFile {
			// data/xx (or a type directory) is missing, e.g. removed
			// by hand: make it (only it: a removed repository stays
			// removed) and try again.
			if err := mkdir(c, dir); err != nil {
				return err
			}
			f, err = c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		}
		if err != nil {
			return classify(err)
		}
		err = b.write(ctx, f, rd)
		if cerr := f.Close(); err == nil {
			err = classify(cerr)
		}
		if err == nil {
			// Last chance to back out: after publishing the object is
			// visible.
			err = ctx.Err()
		}
		if err == nil {
			err = b.publish(c, tmp, final)
		}
		if err != nil && c.Remove(tmp) != nil {
			leftover = true
		}
		return err
	})
	if leftover && ctx.Err() == nil {
		// The session died under the Save; try once on a fresh one
		// so that a flaky network does not pile up temporary files.
		// (After a cancellation the caller wants out at once; the
		// file stays, unlisted.)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = b.withSession(cctx, func(c *pkgsftp.Client) error { return c.Remove(tmp) })
		cancel()
	}
	return err
}

// write copies rd into f, checks its length, makes f read-only and
// flushes it to disk when the server can.
func (b *Backend) write(ctx context.Context, f *pkgsftp.File, rd backend.RewindReader) error {
	if err := rd.Rewind(); err != nil {
		return err
	}
	// Read one byte more than announced to notice a longer reader. Up to
	// 64 writes of a packet each are in flight; fewer for a small object.
	src := io.LimitReader(backend.ContextReader(ctx, &srcReader{rd}), rd.Length()+1)
	n, err := f.ReadFromWithConcurrency(src, int(min(maxRequests, rd.Length()/maxPacket+1)))
	var se *srcError
	switch {
	case errors.As(err, &se):
		return se
	case err != nil:
		return classify(err)
	case n != rd.Length():
		return fmt.Errorf("reader yielded %d bytes, want %d", n, rd.Length())
	}
	// Servers that cannot chmod (some are not Unix) still store the
	// object; read-only files are a safeguard, not a requirement.
	_ = f.Chmod(fileMode)
	if b.fsync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync: %w", classify(err))
		}
	}
	return nil
}

// srcReader marks the errors of Save's reader, so that they are not
// taken for (and classified as) the server's.
type srcReader struct{ rd io.Reader }

func (r *srcReader) Read(p []byte) (int, error) {
	n, err := r.rd.Read(p)
	if err != nil && err != io.EOF {
		err = &srcError{err}
	}
	return n, err
}

type srcError struct{ err error }

func (e *srcError) Error() string { return "read: " + e.err.Error() }
func (e *srcError) Unwrap() error { return e.err }

// publish makes tmp visible as final. With hard links that is exclusive:
// link fails if final exists, and publish returns ErrExists. Without, it
// renames: posix-rename replaces an existing final atomically, and plain
// SFTP rename, which refuses to, leaves the existing object in place. It
// removes tmp on success; on error the caller does.
func (b *Backend) publish(c *pkgsftp.Client, tmp, final string) error {
	if b.hardlink {
		err := c.Link(tmp, final)
		if err == nil {
			// final holds the data; a leftover tmp only wastes space
			// and is never listed.
			_ = c.Remove(tmp)
			return nil
		}
		// OpenSSH reports EEXIST as a generic failure: look.
		if _, serr := c.Lstat(final); serr == nil {
			return backend.ErrExists
		}
		return classify(err)
	}
	if b.posixRename {
		return classify(c.PosixRename(tmp, final))
	}
	err := c.Rename(tmp, final)
	if err != nil {
		// SFTP's plain rename refuses to replace (OpenSSH's links,
		// then unlinks). Not replacing is as good: the caller sees
		// one complete object either way.
		if _, serr := c.Lstat(final); serr == nil {
			_ = c.Remove(tmp)
			return nil
		}
	}
	return classify(err)
}

func randomHex() string {
	var buf [16]byte
	_, _ = rand.Read(buf[:])
	return hex.EncodeToString(buf[:])
}

// Load opens h, seeks to offset and calls fn with a reader of at most
// length bytes (all the rest when length is 0). The session stays taken
// while fn runs.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("load: %w", err))
	}
	if length < 0 || offset < 0 {
		return backend.Permanent(fmt.Errorf("load %v: invalid range: length %d, offset %d", h, length, offset))
	}
	err := b.withSession(ctx, func(c *pkgsftp.Client) error {
		f, err := c.Open(b.filename(h))
		if err != nil {
			return notExist(err)
		}
		defer f.Close() // read-only: Close cannot lose data
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return err
		}
		var r io.Reader = f
		if length > 0 {
			r = io.LimitReader(f, int64(length))
		}
		if err := fn(&loadReader{ctx: ctx, rd: r}); err != nil {
			return &fnError{err}
		}
		return nil
	})
	var fe *fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	if err != nil {
		return fmt.Errorf("load %v: %w", h, err)
	}
	return nil
}

// loadReader is the reader Load's fn gets: it fails with ctx's error once
// ctx is cancelled, also when a read was cut short by closing the
// connection, so that fn sees (and returns) the cancellation.
type loadReader struct {
	ctx context.Context
	rd  io.Reader
}

func (r *loadReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.rd.Read(p)
	if err != nil && err != io.EOF {
		if cerr := r.ctx.Err(); cerr != nil {
			return n, cerr
		}
		err = classify(err)
	}
	return n, err
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("stat: %w", err))
	}
	var fi os.FileInfo
	err := b.withSession(ctx, func(c *pkgsftp.Client) error {
		var err error
		fi, err = c.Stat(b.filename(h))
		return notExist(err)
	})
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size()}, nil
}

// Remove deletes h. (SFTP has no directory fsync: the removal is as
// durable as the server's file system makes it.)
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("remove: %w", err))
	}
	err := b.withSession(ctx, func(c *pkgsftp.Client) error {
		return notExist(c.Remove(b.filename(h)))
	})
	if err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// List reads t's directory (for packs, every data/xx directory) and calls
// fn for the regular files a Handle of type t addresses: temporary files
// (leading "."), stray names and misplaced packs are skipped. Directories
// are read a whole one at a time, without holding a session while fn
// runs, so fn may use the backend; data/xx directories are read ahead
// concurrently.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := t.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("list: %w", err))
	}
	err := b.list(ctx, t, fn)
	var fe *fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	if err != nil {
		return fmt.Errorf("list %v: %w", t, err)
	}
	return nil
}

func (b *Backend) list(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch t {
	case backend.ConfigFile:
		var fi os.FileInfo
		err := b.withSession(ctx, func(c *pkgsftp.Client) error {
			var err error
			fi, err = c.Lstat(b.filename(backend.Handle{Type: t}))
			return err
		})
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return classify(err)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		return callFn(ctx, fn, backend.FileInfo{Size: fi.Size()})
	case backend.PackFile:
		return b.listPacks(ctx, fn)
	}
	infos, err := b.readDir(ctx, path.Join(b.dir, t.String()), t, "")
	if err != nil {
		return err
	}
	for _, fi := range infos {
		if err := callFn(ctx, fn, fi); err != nil {
			return err
		}
	}
	return nil
}

// callFn calls fn unless ctx is cancelled; fn's error comes back as an
// *fnError.
func callFn(ctx context.Context, fn func(backend.FileInfo) error, fi backend.FileInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := fn(fi); err != nil {
		return &fnError{err}
	}
	return nil
}

// listReaders is how many data/xx directories List reads at once.
const listReaders = 4

func (b *Backend) listPacks(ctx context.Context, fn func(backend.FileInfo) error) error {
	data := path.Join(b.dir, backend.PackFile.String())
	var entries []os.FileInfo
	err := b.withSession(ctx, func(c *pkgsftp.Client) error {
		var err error
		entries, err = c.ReadDirContext(ctx, data)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return classify(err)
	}
	var prefixes []string
	for _, e := range entries {
		// Only data/xx directories hold addressable packs.
		if e.IsDir() && len(e.Name()) == 2 && !strings.HasPrefix(e.Name(), ".") {
			prefixes = append(prefixes, e.Name())
		}
	}

	// Readers fill results while this goroutine calls fn; stopping
	// (fn's error, cancellation) cancels the readers and waits for them.
	rctx, cancel := context.WithCancel(ctx)
	type result struct {
		infos []backend.FileInfo
		err   error
	}
	jobs := make(chan string)
	results := make(chan result, listReaders)
	var wg sync.WaitGroup
	for range min(listReaders, b.conn) {
		wg.Go(func() {
			for p := range jobs {
				infos, err := b.readDir(rctx, path.Join(data, p), backend.PackFile, p)
				select {
				case results <- result{infos, err}:
				case <-rctx.Done():
					return
				}
			}
		})
	}
	go func() {
		defer close(jobs)
		for _, p := range prefixes {
			select {
			case jobs <- p:
			case <-rctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(results)
	}()
	defer func() {
		cancel()
		for range results { // let the readers finish
		}
	}()
	for r := range results {
		if r.err != nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			return r.err
		}
		for _, fi := range r.infos {
			if err := callFn(ctx, fn, fi); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// readDir returns the listable objects in dir. prefix, when not empty, is
// the two characters names must start with (the xx of a data/xx
// directory). A missing dir lists nothing.
func (b *Backend) readDir(ctx context.Context, dir string, t backend.FileType, prefix string) ([]backend.FileInfo, error) {
	var entries []os.FileInfo
	err := b.withSession(ctx, func(c *pkgsftp.Client) error {
		var err error
		entries, err = c.ReadDirContext(ctx, dir)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(err)
	}
	var infos []backend.FileInfo
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.Mode().IsRegular() || !strings.HasPrefix(name, prefix) {
			continue
		}
		if (backend.Handle{Type: t, Name: name}).Valid() != nil {
			continue
		}
		infos = append(infos, backend.FileInfo{Name: name, Size: e.Size()})
	}
	return infos, nil
}

// tempPrefix starts the name of every temporary file of a Save.
const tempPrefix = ".tmp-"

// RemoveTemp removes the temporary files that Saves of killed processes
// (or of connections that died) left next to the objects they were
// writing: in the repository directory for the config, in every type
// directory and in every data/xx, when they were last modified more than
// olderThan ago. A running Save writes its file continuously, so it is
// never that old. Files that vanish meanwhile (their Save finished) are
// skipped. Directories are read by up to listReaders sessions at once: one
// after the other, the 264 directories would cost a few round trips each.
//
// The modification times come from the server's clock and the cutoff from
// ours. The two may differ, but by seconds or minutes, not by the hour or
// more that callers (prune) pass as olderThan.
func (b *Backend) RemoveTemp(ctx context.Context, olderThan time.Duration) (n int, size int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("remove temporary files: %w", err)
	}
	dirs := []string{b.dir}
	for _, t := range types {
		dirs = append(dirs, path.Join(b.dir, t.String()))
	}
	data := path.Join(b.dir, backend.PackFile.String())
	var entries []os.FileInfo
	err = b.withSession(ctx, func(c *pkgsftp.Client) error {
		var err error
		entries, err = c.ReadDirContext(ctx, data)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("remove temporary files: %w", classify(err))
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			dirs = append(dirs, path.Join(data, e.Name()))
		}
	}

	cutoff := time.Now().Add(-olderThan)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error // guarded by mu, as are n and size
	)
	jobs := make(chan string)
	for range min(listReaders, b.conn) {
		wg.Go(func() {
			for dir := range jobs {
				dn, dsize, err := b.removeTempIn(rctx, dir, cutoff)
				mu.Lock()
				n += dn
				size += dsize
				if err != nil && first == nil {
					first = fmt.Errorf("remove temporary files in %s: %w", dir, err)
					cancel() // the others stop too
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, dir := range dirs {
		select {
		case jobs <- dir:
		case <-rctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = fmt.Errorf("remove temporary files: %w", ctx.Err())
	}
	return n, size, first
}

// removeTempIn removes the temporary files in dir modified before cutoff,
// on one session. A missing dir holds none.
func (b *Backend) removeTempIn(ctx context.Context, dir string, cutoff time.Time) (n int, size int64, err error) {
	err = b.withSession(ctx, func(c *pkgsftp.Client) error {
		// READDIR returns lstat attributes: a symbolic link named like a
		// temporary file is not regular and stays.
		entries, err := c.ReadDirContext(ctx, dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return classify(err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Mode().IsRegular() || !e.ModTime().Before(cutoff) {
				continue
			}
			if err := c.Remove(path.Join(dir, e.Name())); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // its Save finished (or gave up) meanwhile
				}
				return classify(err)
			}
			n++
			size += e.Size()
		}
		return nil
	})
	return n, size, err
}

// Close ends every session, also those of operations still running
// (which then fail). It does not wait for the server.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed()
		b.mu.Lock()
		all := b.all
		b.all, b.idle = nil, nil
		b.mu.Unlock()
		var wg sync.WaitGroup
		for s := range all {
			wg.Go(s.close)
		}
		wg.Wait()
	})
	return nil
}

// serverReported tells whether err is an answer of the server (a status
// such as "no such file" or "permission denied") or a check of ours, after
// which the session is still known to be usable.
func serverReported(err error) bool {
	var fe *fnError
	if errors.As(err, &fe) {
		err = fe.err
	}
	var se *pkgsftp.StatusError
	return errors.As(err, &se) || errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, backend.ErrNotExist) || errors.Is(err, fs.ErrPermission)
}

// notExist turns a missing file into backend.ErrNotExist (the message
// then reads "load config: does not exist") and classifies other errors.
func notExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return backend.ErrNotExist
	}
	return classify(err)
}

// classify marks errors that retrying cannot fix as permanent: denied
// access and operations the server does not support. Everything else,
// notably a lost connection, may be transient. nil stays nil.
func classify(err error) error {
	var se *pkgsftp.StatusError
	switch {
	case err == nil:
		return nil
	case backend.IsPermanent(err):
		return err
	case errors.Is(err, fs.ErrPermission):
		return backend.Permanent(err)
	case errors.As(err, &se) && se.FxCode() == pkgsftp.ErrSSHFxOpUnsupported:
		return backend.Permanent(err)
	}
	return err
}
