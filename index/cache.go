package index

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"repo/chunk"
)

// Source is where a Cache syncs from: the repository's index files.
type Source interface {
	// ListIndex calls fn for the id of every index file in the repository.
	ListIndex(ctx context.Context, fn func(id chunk.ID) error) error
	// LoadIndex loads and decodes one index file.
	LoadIndex(ctx context.Context, id chunk.ID) (*File, error)
}

// ErrCacheCorrupt is wrapped by the errors of a Cache whose file turned out
// to be damaged after it was opened (a bbolt panic or memory fault, or a
// record of the wrong size). From then on the Cache answers only with this
// error, and Close deletes the file so that the next OpenCache starts
// afresh; a caller may also Close, OpenCache and Sync again at once.
var ErrCacheCorrupt = errors.New("index cache corrupt")

// Layout of the cache file, format version cacheVersion.
//
//	meta   "version" → cacheVersion
//	files  index file id (32) → state (1: filePending or fileComplete)
//	       followed by the ids the file supersedes (32 each)
//	packs  pack number (uint32 big-endian) → pack id (32)
//	blobs  type (1) + blob id (32) → pack number (uint32 BE), offset,
//	       length, raw length (uint32 BE each), compression (1)
//
// A file is recorded fileComplete in the transaction that inserts its last
// blob. One too large for a single transaction is recorded filePending in
// the first: after a crash its entries are partly there, and Sync loads it
// again (Put overwrites) — while a pending file that vanished from the
// repository still triggers a rebuild like a complete one, so no entry ever
// outlives its index file.
const (
	cacheFile    = "index.db"
	cacheVersion = "1"

	filePending  byte = 0
	fileComplete byte = 1

	blobKeySize   = 1 + 32
	blobValueSize = 4 + 4 + 4 + 4 + 1
)

var (
	metaBucket  = []byte("meta")
	filesBucket = []byte("files")
	packsBucket = []byte("packs")
	blobsBucket = []byte("blobs")
	dataBuckets = [][]byte{filesBucket, packsBucket, blobsBucket}
	versionKey  = []byte("version")
)

// Tuning. Vars, not consts, so that tests can shrink them.
var (
	// lockTimeout bounds the wait for another process's lock on the cache
	// file before falling back to a private cache.
	lockTimeout = 200 * time.Millisecond
	// batchBlobs is the number of blobs inserted per write transaction.
	// Ids are random, so a batch touches leaves all over the tree, and a
	// commit rewrites every page it touched: on a 1M-blob cache a batch of
	// 50k rewrites nearly the whole file. Measured on a fresh 1M-blob Sync:
	// 50k per batch wrote 1127 MiB, 100k 601 MiB, 250k 323 MiB, 1M 171 MiB
	// (the file is 180 MiB). The cost is memory: bbolt keeps every touched
	// leaf decoded on the heap until the commit, and reads it through the
	// memory map (see trimMapping) — so in a large cache a transaction
	// takes largeCacheBatch blobs at most.
	batchBlobs = 200_000
	// largeCacheBytes and largeCacheBatch: once the pages in use exceed
	// largeCacheBytes, the memory map is trimmed (see trimMapping), and a
	// write transaction of the incremental writer takes at most
	// largeCacheBatch blobs. Each put into a large tree
	// dirties a leaf of its own and its parent, which the commit reads
	// again to free them, so the transaction maps about 130 KiB per put
	// (fault-around) before the trim after the commit, and holds as much
	// decoded on the heap: 256 puts, about 32 MiB. Bulk loads fill large
	// caches; this is for what backups and other hosts add later.
	largeCacheBytes int64 = 64 << 20
	largeCacheBatch       = 256
	// initialMmapSize is 1 GiB on 64-bit platforms, 0 (bbolt's default)
	// where address space is scarce.
	initialMmapSize = 1 << 30 * (strconv.IntSize / 64)
	// allocSize is how far ahead bbolt grows the file.
	allocSize = 1 << 20
	// stalePrivateAge is how old an unlocked private cache directory must
	// be before another process removes it (a younger one may belong to a
	// process between creating it and locking its file). The same age
	// applies to the temporary files of createFile and of bulk loads.
	stalePrivateAge = time.Minute
	// trimLookups is how many lookups may run between two trims of the
	// memory map (see trimMapping): each maps up to about 200 KiB (a leaf
	// and a branch page or two, 64 KiB each with fault-around), so 64
	// lookups, at most about 12 MiB.
	trimLookups uint64 = 64
	// trimEach is how many entries Each reads between two trims.
	trimEach = 1 << 16
)

// Cache answers blob lookups from a bbolt file under a per-repository
// directory. It is only a cache: Sync makes it equal to the repository's
// index files, a corrupt or foreign file is rebuilt, and a file held by
// another process is replaced by a private temporary one, so opening never
// hangs or fails because of the cache's state. Safe for concurrent use.
type Cache struct {
	path    string // of the bbolt file
	private string // the private temporary directory; "" for the shared cache

	// mu serialises the writers (Sync, Add), whose read-check-write
	// sequences must not interleave. Lookup and Each do not take it: bbolt
	// read transactions run concurrently with each other and with a writer.
	mu sync.Mutex

	// db is the open bbolt file. install replaces it (holding mu, and
	// dbMu for the swap alone); readers take dbMu only to start a transaction
	// (beginRead), which then finishes on the file it started on: the old
	// file is closed once its transactions end. Writers, holding mu, use
	// db directly.
	dbMu sync.RWMutex
	db   *bolt.DB

	lookups atomic.Uint64 // counts Lookups, to trim the memory map every trimLookups

	broken atomic.Bool // set once a corruption was detected; never cleared

	closeOnce sync.Once
	closeErr  error
}

// OpenCache opens or creates the cache in dir (created if missing). When the
// file there is locked by another process it uses a private cache file in a
// new temporary directory under dir, removed by Close; when it is corrupt or
// of another format version it is deleted and recreated.
//
// It fails only when dir cannot be used (not creatable, not writable).
// The caller must use one directory per repository (e.g. named by the
// repository id): the cache cannot tell repositories apart.
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create index cache dir: %w", err)
	}
	path := filepath.Join(dir, cacheFile)
	db, err := openChecked(path, false)
	if err != nil && !errors.Is(err, bolterrors.ErrTimeout) && !isOpenFileError(err) {
		// Corrupt, truncated, foreign or of another version: it is only a
		// cache. Empty it (under the lock) and start again.
		db, err = openChecked(path, true)
	}
	switch {
	case err == nil:
		removeStalePrivate(dir, "")
		// Only the holder of the shared cache creates temporary files
		// beside it (private caches keep theirs in their directory).
		removeStaleTemp(dir)
		return &Cache{db: db, path: path}, nil
	case isOpenFileError(err):
		return nil, fmt.Errorf("open index cache: %w", err)
	}

	// Locked by another process (or by another Cache in this one), or
	// still unusable after a reset: use a private cache.
	pdir, mkErr := os.MkdirTemp(dir, "private-*")
	if mkErr != nil {
		return nil, fmt.Errorf("create private index cache: %w", mkErr)
	}
	ppath := filepath.Join(pdir, cacheFile)
	db, perr := openChecked(ppath, false)
	if perr != nil {
		_ = os.RemoveAll(pdir)
		return nil, fmt.Errorf("open private index cache (shared one: %v): %w", err, perr)
	}
	removeStalePrivate(dir, pdir)
	return &Cache{db: db, path: ppath, private: pdir}, nil
}

// openFileError marks a failure to open or lock the file itself
// (permissions, a file system without locks): recreating the file would
// not help.
type openFileError struct{ err error }

func (e *openFileError) Error() string { return e.err.Error() }
func (e *openFileError) Unwrap() error { return e.err }

func isOpenFileError(err error) bool {
	var oe *openFileError
	return errors.As(err, &oe)
}

// openChecked opens the bbolt file at path and makes sure it is a cache of
// this version, creating the buckets in a new file. With reset, it empties
// the file first. Every panic and memory fault of bbolt is returned as an
// error wrapping ErrCacheCorrupt.
func openChecked(path string, reset bool) (*bolt.DB, error) {
	db, err := openBolt(path, reset)
	if err != nil {
		return nil, err
	}
	if err := initOrVerify(db); err != nil {
		_ = guard(db.Close)
		return nil, err
	}
	return db, nil
}

// openBolt is bolt.Open with the cache's options, turning panics and
// faults into errors.
//
// Through bbolt's OpenFile hook it locks the file before bbolt does (see
// lockFile), checks it with checkFile — or, with reset, truncates it so
// that bbolt initialises a new one — all under the lock, so that no other
// process can be using the file meanwhile. If bbolt panics half-way, the
// file is unlocked and closed.
func openBolt(path string, reset bool) (db *bolt.DB, err error) {
	var file *os.File
	opts := &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
		// fsync stays on (NoSync false): after a power loss the cache must
		// hold exactly what was committed, or it could claim a blob that
		// was never stored. The freelist is synced too (NoFreelistSync
		// false): without it every Open rebuilds the freelist by walking
		// the whole file in a bbolt goroutine where a damaged page panics
		// beyond any recover, killing the process (see doc.go).
		NoFreelistSync: false,
		// Map ahead (address space only) so that the file can grow to
		// 1 GiB without a remap: each remap copies every key and value of
		// the transaction's dirty nodes to the heap.
		InitialMmapSize: initialMmapSize,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			if reset && !lockSupported {
				// Not an openFileError: if another process has the file
				// open (Windows refuses the removal), use a private cache.
				if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("remove damaged index cache: %w", err)
				}
			}
			f, err := os.OpenFile(name, flag, perm)
			if err != nil {
				return nil, &openFileError{err}
			}
			if err := lockFile(f, lockTimeout); err != nil {
				_ = f.Close()
				if errors.Is(err, bolterrors.ErrTimeout) {
					return nil, err
				}
				return nil, &openFileError{err}
			}
			if reset && lockSupported {
				if err := f.Truncate(0); err != nil {
					_ = f.Close()
					return nil, &openFileError{err}
				}
			} else if err := checkFile(f); err != nil {
				_ = f.Close()
				return nil, err
			}
			file = f
			return f, nil
		},
	}
	err = guard(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, opts)
		if err == nil {
			// Once the mapping exceeds AllocSize (at once, with
			// initialMmapSize), bbolt grows the file AllocSize beyond what
			// a commit needs: 16 MiB by default, even for an empty cache.
			// Growth happens once per commit at most, so a smaller step
			// costs few extra fsyncs.
			db.AllocSize = allocSize
		}
		return err
	})
	if err != nil && errors.Is(err, ErrCacheCorrupt) && file != nil {
		// bbolt panicked half-way: release what it could not. Its memory
		// map, if any, stays until the process exits.
		unlockFile(file)
		_ = file.Close()
	}
	return db, err
}

// initOrVerify creates the buckets of a new cache, or checks that an
// existing file is a cache of this version.
func initOrVerify(db *bolt.DB) error {
	var fresh bool
	err := guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			meta := tx.Bucket(metaBucket)
			if meta == nil {
				// A new file has no bucket at all; anything else is foreign.
				c := tx.Cursor()
				if k, _ := c.First(); k != nil {
					return fmt.Errorf("not an index cache (bucket %q): %w", k, ErrCacheCorrupt)
				}
				fresh = true
				return nil
			}
			if v := meta.Get(versionKey); string(v) != cacheVersion {
				return fmt.Errorf("index cache version %q, want %q: %w", v, cacheVersion, ErrCacheCorrupt)
			}
			for _, name := range dataBuckets {
				if tx.Bucket(name) == nil {
					return fmt.Errorf("index cache lacks bucket %q: %w", name, ErrCacheCorrupt)
				}
			}
			return nil
		})
	})
	if err != nil || !fresh {
		return err
	}
	return guard(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			if err := meta.Put(versionKey, []byte(cacheVersion)); err != nil {
				return err
			}
			for _, name := range dataBuckets {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// guard runs fn, turning a panic or a memory fault (a damaged file read
// through bbolt's memory map) into an error wrapping ErrCacheCorrupt.
// Faults become panics only with SetPanicOnFault, which is per goroutine:
// bbolt code that runs in goroutines of its own is not covered.
func guard(fn func() error) (err error) {
	defer recoverCorrupt(&err, debug.SetPanicOnFault(true))
	return fn()
}

// recoverCorrupt is deferred (directly: recover works only there) by
// functions that read or write the bbolt file. It restores the
// goroutine's panic-on-fault setting to old and turns a panic into an
// error wrapping ErrCacheCorrupt.
func recoverCorrupt(err *error, old bool) {
	debug.SetPanicOnFault(old)
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: bbolt panicked: %v", ErrCacheCorrupt, r)
	}
}

// Private reports whether this is a private temporary cache.
func (c *Cache) Private() bool { return c.private != "" }

// markBroken records a detected corruption: the cache stops answering and
// Close deletes its file.
func (c *Cache) markBroken(err error) {
	if errors.Is(err, ErrCacheCorrupt) {
		c.broken.Store(true)
	}
}

func (c *Cache) usable() error {
	if c.broken.Load() {
		return fmt.Errorf("use index cache %s: %w", c.path, ErrCacheCorrupt)
	}
	return nil
}

// SyncStats says what Sync did.
type SyncStats struct {
	Loaded  int  // index files read from the repository
	Known   int  // index files already in the cache
	Rebuilt bool // the cache was emptied and rebuilt (an index file vanished)
}

// fileState is the cache's record of one index file.
type fileState struct {
	complete   bool
	supersedes []chunk.ID
}

// Sync makes the cache reflect exactly the index files src lists: new files
// are loaded and added; if a file the cache knows is gone, the cache is
// rebuilt from scratch.
//
// A listed file that another loaded file supersedes is ignored (not loaded,
// or, if its entries are already in the cache, the cache is rebuilt without
// it). A file that fails to load is not recorded: Sync goes on with the
// others and returns the failures joined, with the stats of what it did;
// the next Sync tries the file again. Cancellation of ctx stops Sync at
// once; it keeps the files it loaded if they fit in one transaction.
//
// New files are loaded first and then written through the incremental
// writer, in batches; when they hold many entries (more than bulkMinBlobs,
// and more than a small fraction of those cached), Sync bulk-loads them
// instead (see bulk.go): their entries are sorted into temporary runs and
// merged with the cached ones into a new file, which then replaces the old
// one, so that memory stays bounded however many blobs the repository
// holds. A bulk load is all or nothing: cancelled, it keeps nothing.
func (c *Cache) Sync(ctx context.Context, src Source) (SyncStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var stats SyncStats
	if err := c.usable(); err != nil {
		return stats, err
	}

	var listed []chunk.ID
	seen := make(map[chunk.ID]struct{})
	err := src.ListIndex(ctx, func(id chunk.ID) error {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			listed = append(listed, id)
		}
		return nil
	})
	if err != nil {
		return stats, fmt.Errorf("list index files: %w", err)
	}

	files, err := c.readFiles()
	if err != nil {
		return stats, err
	}
	sup := supersededBy(files)
	rebuild := false
	for id := range files {
		_, listed := seen[id]
		if !listed || sup[id] {
			rebuild = true // gone, or superseded with its entries in the cache
			break
		}
	}
	if rebuild {
		if err := c.clear(); err != nil {
			return stats, err
		}
		files = map[chunk.ID]fileState{}
		stats.Rebuilt = true
	}
	for _, id := range listed {
		if files[id].complete {
			stats.Known++
		}
	}

	// At most two passes: the second only after the first learned that a
	// file it loaded (or one already cached) is superseded, and then with
	// every supersedes list of the first pass known in advance.
	for pass := 0; ; pass++ {
		needRebuild, loadErrs, err := c.syncPass(ctx, src, listed, files, sup, &stats)
		if err != nil {
			if needRebuild {
				// Cancelled after learning that cached entries are
				// superseded: drop them rather than keep them until the
				// next Sync.
				err = errors.Join(err, c.clear())
			}
			return stats, err
		}
		if !needRebuild {
			return stats, errors.Join(loadErrs...)
		}
		if pass > 0 {
			return stats, errors.New("sync index cache: supersedes lists of the index files changed during sync")
		}
		if err := c.clear(); err != nil {
			return stats, err
		}
		clear(files)
		stats.Known = 0
		stats.Rebuilt = true
	}
}

// supersededBy returns the set of ids that the files supersede.
func supersededBy(files map[chunk.ID]fileState) map[chunk.ID]bool {
	sup := make(map[chunk.ID]bool)
	for id, st := range files {
		for _, s := range st.supersedes {
			if s != id {
				sup[s] = true
			}
		}
	}
	return sup
}

// Add records an index file this process has just written, so that the next
// Sync need not load it.
//
// If f supersedes a file the cache holds, the cache is emptied first (the
// superseded entries cannot be told apart from the others); the next Sync
// reloads the rest. A file that a cached file supersedes is not added.
func (c *Cache) Add(id chunk.ID, f *File) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return err
	}
	files, err := c.readFiles()
	if err != nil {
		return err
	}
	if files[id].complete || supersededBy(files)[id] {
		return nil
	}
	for _, s := range f.Supersedes {
		if _, cached := files[s]; cached && s != id {
			if err := c.clear(); err != nil {
				return err
			}
			break
		}
	}
	w := c.newWriter()
	defer w.abort()
	if err := w.add(id, f); err != nil {
		return err
	}
	return w.finish()
}

// readFiles returns the records of the "files" bucket.
func (c *Cache) readFiles() (files map[chunk.ID]fileState, err error) {
	files = make(map[chunk.ID]fileState)
	err = guard(func() error {
		return c.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(filesBucket)
			if b == nil {
				return fmt.Errorf("no files bucket: %w", ErrCacheCorrupt)
			}
			return b.ForEach(func(k, v []byte) error {
				if len(k) != len(chunk.ID{}) || len(v) < 1 || (len(v)-1)%len(chunk.ID{}) != 0 {
					return fmt.Errorf("files record of %d+%d bytes: %w", len(k), len(v), ErrCacheCorrupt)
				}
				st := fileState{complete: v[0] == fileComplete}
				for rest := v[1:]; len(rest) > 0; rest = rest[len(chunk.ID{}):] {
					st.supersedes = append(st.supersedes, chunk.ID(rest))
				}
				files[chunk.ID(k)] = st
				return nil
			})
		})
	})
	if err != nil {
		c.markBroken(err)
		return nil, fmt.Errorf("read index cache %s: %w", c.path, err)
	}
	return files, nil
}

// clear empties the cache: by replacing its file with a new one where the
// cache file can be locked and renamed over (see replaceFile), else, or if
// that fails, by emptying the data buckets in one transaction.
//
// Emptying the buckets is cheap for bbolt's heap but not for the resident
// set: DeleteBucket reads every page of the bucket (to find sub-buckets and
// free the pages), which maps the whole file into the process — on a cache
// of 10 million blobs about 700 MiB at once — while a new file costs two
// small commits.
func (c *Cache) clear() error {
	if err := c.replaceFile(); err == nil {
		return nil
	}
	return c.clearBuckets()
}

// replaceFile swaps in a new, empty cache file for the current one. The
// caller holds mu.
func (c *Cache) replaceFile() error {
	db, name, err := c.createFile()
	if err != nil {
		return err
	}
	if err := c.install(db, name); err != nil {
		_ = guard(db.Close)
		_ = os.Remove(name)
		return err
	}
	return nil
}

// createFile creates a new, empty cache file beside the current one (as
// cacheFile.new-*, removed by a later OpenCache if a crash leaves it
// behind), opened and locked like any cache file, for install.
func (c *Cache) createFile() (*bolt.DB, string, error) {
	if !lockSupported {
		// The lock would be bbolt's own, and Windows cannot rename over
		// an open file anyway.
		return nil, "", errors.New("cache files cannot be replaced here")
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), cacheFile+tempFileSuffix+"*")
	if err != nil {
		return nil, "", err
	}
	name := tmp.Name()
	if err := tmp.Close(); err != nil {
		_ = os.Remove(name)
		return nil, "", err
	}
	db, err := openChecked(name, false)
	if err != nil {
		_ = os.Remove(name)
		return nil, "", err
	}
	return db, name, nil
}

// install renames the file name, open as db (from createFile), over the
// cache file and makes it the cache's; the old file is closed once the
// read transactions still running on it end. The caller holds mu, and has
// no transaction open on the old file.
//
// The lock is never released meanwhile: from the rename on, OpenCache in
// another process finds the new file, locked. One that opened the old file
// just before the rename and then gets its lock when it is closed holds a
// valid cache that no name leads to any more: it stays correct (Sync
// brings it up to date) and vanishes when that process closes it.
func (c *Cache) install(db *bolt.DB, name string) error {
	if err := os.Rename(name, c.path); err != nil {
		return err
	}
	c.dbMu.Lock()
	old := c.db
	c.db = db
	c.dbMu.Unlock()
	// The old file has no name any more: an error closing it loses
	// nothing.
	_ = guard(old.Close)
	return nil
}

// tempFileSuffix follows cacheFile in the name of the new file of
// replaceFile; bulkRunPrefix starts the names of the bulk load's run files.
const (
	tempFileSuffix = ".new-"
	bulkRunPrefix  = "bulk-"
)

// clearBuckets empties the data buckets in one transaction.
func (c *Cache) clearBuckets() error {
	err := guard(func() error {
		return c.db.Update(func(tx *bolt.Tx) error {
			for _, name := range dataBuckets {
				if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
					return err
				}
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		c.markBroken(err)
		return fmt.Errorf("clear index cache %s: %w", c.path, err)
	}
	return nil
}

// writer inserts index files in batches of about batchBlobs blobs per
// transaction. A file that fits in a batch never spans two transactions.
//
// Blob entries are buffered and put in key order at commit: bbolt splits
// nodes only at commit, so tens of thousands of random-order puts into a
// small tree make its few nodes huge and every put a long memmove
// (quadratic; a fresh 1M-blob Sync spent a third of its time there).
type writer struct {
	c       *Cache
	tx      *bolt.Tx // nil between transactions
	limit   int      // blobs per transaction: batchBlobs, or less in a large cache (set by begin)
	pending []kv     // blob entries to put before the commit
	arena   []byte   // backs the keys and values handed to Put
}

type kv struct{ k, v []byte }

// arenaChunk is the allocation unit of arenaCopy.
const arenaChunk = 256 << 10

// copy returns a copy of b that stays valid until the transaction ends, as
// bbolt's Put requires (see arenaCopy).
func (w *writer) copy(b []byte) []byte { return arenaCopy(&w.arena, b) }

// arenaCopy returns a copy of b in *arena, without one allocation per key
// and value. Slices handed out earlier keep the old chunk alive when a new
// one is started.
func arenaCopy(arena *[]byte, b []byte) []byte {
	if len(*arena)+len(b) > cap(*arena) {
		*arena = make([]byte, 0, max(arenaChunk, len(b)))
	}
	start := len(*arena)
	*arena = append(*arena, b...)
	return (*arena)[start:len(*arena):len(*arena)]
}

func (c *Cache) newWriter() *writer { return &writer{c: c} }

// add inserts f's entries and records it as a complete file.
func (w *writer) add(id chunk.ID, f *File) (err error) {
	defer w.fail(&err)
	defer recoverCorrupt(&err, debug.SetPanicOnFault(true))
	total := 0
	for _, p := range f.Packs {
		total += len(p.Blobs)
	}
	if len(w.pending) > 0 && len(w.pending)+total > w.limit {
		if err := w.commit(); err != nil {
			return err
		}
	}
	if err := w.begin(); err != nil {
		return err
	}
	state := make([]byte, 1, 1+len(f.Supersedes)*len(chunk.ID{}))
	for _, s := range f.Supersedes {
		state = append(state, s[:]...)
	}
	if len(w.pending)+total > w.limit {
		// The file will span transactions: record it pending in the first.
		state[0] = filePending
		if err := w.tx.Bucket(filesBucket).Put(w.copy(id[:]), w.copy(state)); err != nil {
			return err
		}
	}

	var key [blobKeySize]byte
	var val [blobValueSize]byte
	for _, p := range f.Packs {
		if len(p.Blobs) == 0 {
			continue
		}
		packs := w.tx.Bucket(packsBucket)
		num, err := packs.NextSequence()
		if err != nil {
			return err
		}
		if num > math.MaxUint32 {
			return fmt.Errorf("more than %d packs in the index cache", uint64(math.MaxUint32))
		}
		binary.BigEndian.PutUint32(val[0:], uint32(num))
		if err := packs.Put(w.copy(val[0:4]), w.copy(p.ID[:])); err != nil {
			return err
		}
		for _, b := range p.Blobs {
			key[0] = byte(b.Type)
			copy(key[1:], b.ID[:])
			binary.BigEndian.PutUint32(val[4:], b.Offset)
			binary.BigEndian.PutUint32(val[8:], b.Length)
			binary.BigEndian.PutUint32(val[12:], b.RawLength)
			val[16] = b.Compression
			w.pending = append(w.pending, kv{w.copy(key[:]), w.copy(val[:])})
			if len(w.pending) >= w.limit {
				if err := w.commit(); err != nil {
					return err
				}
				if err := w.begin(); err != nil {
					return err
				}
			}
		}
	}
	state[0] = fileComplete
	if err := w.tx.Bucket(filesBucket).Put(w.copy(id[:]), state); err != nil {
		return err
	}
	if len(w.pending) >= w.limit {
		return w.commit()
	}
	return nil
}

func (w *writer) begin() error {
	if w.tx != nil {
		return nil
	}
	tx, err := w.c.db.Begin(true)
	if err != nil {
		return err
	}
	w.tx, w.limit = tx, batchBlobs
	if tx.Size() > largeCacheBytes {
		w.limit = min(batchBlobs, largeCacheBatch)
	}
	return nil
}

// commit puts the pending entries (sorted; stable, so that of two entries
// for one blob the later wins, as with unbuffered puts) and commits.
func (w *writer) commit() error {
	if w.tx == nil {
		return nil
	}
	tx, pending := w.tx, w.pending
	w.tx, w.pending = nil, w.pending[:0]
	slices.SortStableFunc(pending, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
	blobs := tx.Bucket(blobsBucket)
	for _, e := range pending {
		if err := blobs.Put(e.k, e.v); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	clear(pending) // drop references to the arena
	w.arena = nil
	if err := tx.Commit(); err != nil {
		return err
	}
	if testHookCommitted != nil {
		testHookCommitted(w.c)
	}
	return trim(w.c.db)
}

// trim drops the pages of db read so far from the resident set (see
// trimMapping). The caller holds mu: no other goroutine commits.
func trim(db *bolt.DB) error {
	tx, err := db.Begin(false)
	if err != nil {
		return err
	}
	trimMapping(db, tx)
	return tx.Rollback()
}

// beginRead starts a read transaction on the current file (see dbMu).
func (c *Cache) beginRead() (*bolt.DB, *bolt.Tx, error) {
	c.dbMu.RLock()
	defer c.dbMu.RUnlock()
	tx, err := c.db.Begin(false)
	return c.db, tx, err
}

// testHookCommitted, when set by a test, is called after each commit of a
// writer.
var testHookCommitted func(*Cache)

// finish commits the last batch.
func (w *writer) finish() (err error) {
	defer w.fail(&err)
	defer recoverCorrupt(&err, debug.SetPanicOnFault(true))
	return w.commit()
}

// abort rolls back an uncommitted batch; deferred by every user of a writer
// (a no-op after finish).
func (w *writer) abort() {
	if w.tx != nil {
		_ = guard(w.tx.Rollback)
		w.tx = nil
	}
}

// fail, deferred, rolls back the open transaction after an error (a failed
// Put or Commit leaves it unusable) and wraps the error.
func (w *writer) fail(err *error) {
	if *err == nil {
		return
	}
	w.abort()
	w.c.markBroken(*err)
	*err = fmt.Errorf("write index cache %s: %w", w.c.path, *err)
}

// Lookup returns where blob id of type t is stored.
func (c *Cache) Lookup(t BlobType, id chunk.ID) (pb PackedBlob, ok bool, err error) {
	return c.lookup(t, id, true)
}

// Has reports whether blob id of type t is in the cache. It is Lookup
// without decoding the entry's pack, which costs a second B-tree search:
// a backup asks this once per chunk or database page and needs no more.
func (c *Cache) Has(t BlobType, id chunk.ID) (bool, error) {
	_, ok, err := c.lookup(t, id, false)
	return ok, err
}

// HasMany sets found[i] to whether blob ids[i] of type t is in the cache,
// all in one read transaction: the transaction's setup is most of the cost
// of a single Has. found must be as long as ids.
func (c *Cache) HasMany(t BlobType, ids []chunk.ID, found []bool) (err error) {
	if err := c.usable(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.markBroken(err)
			err = fmt.Errorf("look up %d %s blobs: %w", len(ids), t, err)
		}
	}()
	defer recoverCorrupt(&err, debug.SetPanicOnFault(true))

	db, tx, err := c.beginRead()
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	// Trim as often as that many single lookups would.
	n := uint64(len(ids))
	if after := c.lookups.Add(n); n > 0 && after/trimLookups != (after-n)/trimLookups {
		trimMapping(db, tx)
	}
	blobs := tx.Bucket(blobsBucket)
	if blobs == nil {
		return fmt.Errorf("missing bucket: %w", ErrCacheCorrupt)
	}
	var key [blobKeySize]byte
	key[0] = byte(t)
	for i, id := range ids {
		copy(key[1:], id[:])
		found[i] = blobs.Get(key[:]) != nil
	}
	return nil
}

// lookup finds blob id of type t; the entry is decoded only with decode
// (otherwise pb is the zero value).
func (c *Cache) lookup(t BlobType, id chunk.ID, decode bool) (pb PackedBlob, ok bool, err error) {
	if err := c.usable(); err != nil {
		return PackedBlob{}, false, err
	}
	defer func() {
		if err != nil {
			c.markBroken(err)
			err = fmt.Errorf("look up %s blob %s: %w", t, id.Short(), err)
		}
	}()
	defer recoverCorrupt(&err, debug.SetPanicOnFault(true))

	db, tx, err := c.beginRead()
	if err != nil {
		return PackedBlob{}, false, err
	}
	defer func() { _ = tx.Rollback() }()
	if c.lookups.Add(1)%trimLookups == 0 {
		trimMapping(db, tx)
	}
	blobs, packs := tx.Bucket(blobsBucket), tx.Bucket(packsBucket)
	if blobs == nil || packs == nil {
		return PackedBlob{}, false, fmt.Errorf("missing bucket: %w", ErrCacheCorrupt)
	}
	var key [blobKeySize]byte
	key[0] = byte(t)
	copy(key[1:], id[:])
	v := blobs.Get(key[:])
	if v == nil {
		return PackedBlob{}, false, nil
	}
	if !decode {
		return PackedBlob{}, true, nil
	}
	pb, err = decodeEntry(packs, key[:], v, nil)
	if err != nil {
		return PackedBlob{}, false, err
	}
	return pb, true, nil
}

// decodeEntry decodes a blobs record, looking its pack up in packs (or in
// memo, when not nil).
func decodeEntry(packs *bolt.Bucket, k, v []byte, memo map[uint32]chunk.ID) (PackedBlob, error) {
	if len(k) != blobKeySize || len(v) != blobValueSize {
		return PackedBlob{}, fmt.Errorf("blob record of %d+%d bytes: %w", len(k), len(v), ErrCacheCorrupt)
	}
	num := binary.BigEndian.Uint32(v[0:])
	pb := PackedBlob{Blob: Blob{
		Type:        BlobType(k[0]),
		ID:          chunk.ID(k[1:]),
		Offset:      binary.BigEndian.Uint32(v[4:]),
		Length:      binary.BigEndian.Uint32(v[8:]),
		RawLength:   binary.BigEndian.Uint32(v[12:]),
		Compression: v[16],
	}}
	if id, ok := memo[num]; ok {
		pb.Pack = id
		return pb, nil
	}
	p := packs.Get(v[0:4])
	if len(p) != len(chunk.ID{}) {
		return PackedBlob{}, fmt.Errorf("pack %d of blob %s: record of %d bytes: %w", num, pb.ID.Short(), len(p), ErrCacheCorrupt)
	}
	pb.Pack = chunk.ID(p)
	if memo != nil {
		memo[num] = pb.Pack
	}
	return pb, nil
}

// Each calls fn for every indexed blob (one location per blob id and type).
//
// It runs in one read transaction, in key order (type, then id), and stops
// at the first error of fn, which it returns as is. fn must not call Sync
// or Add: a writer that needs to grow the file waits for the transaction
// to end.
func (c *Cache) Each(fn func(PackedBlob) error) (err error) {
	if err := c.usable(); err != nil {
		return err
	}
	var fnErr error
	inFn := false
	defer func() {
		if err != nil && fnErr == nil {
			c.markBroken(err)
			err = fmt.Errorf("iterate index cache %s: %w", c.path, err)
		}
	}()
	defer func(old bool) {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if inFn {
				panic(r) // fn's own panic: not a sign of corruption
			}
			err = fmt.Errorf("%w: bbolt panicked: %v", ErrCacheCorrupt, r)
		}
	}(debug.SetPanicOnFault(true))
	db, tx, err := c.beginRead()
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	blobs, packs := tx.Bucket(blobsBucket), tx.Bucket(packsBucket)
	if blobs == nil || packs == nil {
		return fmt.Errorf("missing bucket: %w", ErrCacheCorrupt)
	}
	memo := make(map[uint32]chunk.ID)
	cur := blobs.Cursor()
	n := 0
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		pb, err := decodeEntry(packs, k, v, memo)
		if err != nil {
			return err
		}
		inFn = true
		fnErr = fn(pb)
		inFn = false
		if fnErr != nil {
			return fnErr
		}
		if n++; n%trimEach == 0 {
			trimMapping(db, tx)
		}
	}
	return nil
}

// Close closes the cache and removes it if private.
//
// A cache found corrupt is deleted too (before its lock is released), so
// that the next OpenCache creates a fresh one. Close waits for running
// lookups; calling it again returns the first result.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		if c.broken.Load() && c.private == "" {
			if err := os.Remove(c.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				c.closeErr = fmt.Errorf("remove corrupt index cache: %w", err)
			}
		}
		c.dbMu.RLock()
		db := c.db
		c.dbMu.RUnlock()
		if err := guard(db.Close); err != nil {
			c.closeErr = errors.Join(c.closeErr, fmt.Errorf("close index cache: %w", err))
		}
		if c.private != "" {
			if err := os.RemoveAll(c.private); err != nil {
				c.closeErr = errors.Join(c.closeErr, fmt.Errorf("remove private index cache: %w", err))
			}
		}
	})
	return c.closeErr
}
