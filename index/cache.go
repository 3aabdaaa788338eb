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
	// leaf decoded on the heap until the commit.
	batchBlobs = 200_000
	// initialMmapSize is 1 GiB on 64-bit platforms, 0 (bbolt's default)
	// where address space is scarce.
	initialMmapSize = 1 << 30 * (strconv.IntSize / 64)
	// allocSize is how far ahead bbolt grows the file.
	allocSize = 1 << 20
	// stalePrivateAge is how old an unlocked private cache directory must
	// be before another process removes it (a younger one may belong to a
	// process between creating it and locking its file).
	stalePrivateAge = time.Minute
)

// Cache answers blob lookups from a bbolt file under a per-repository
// directory. It is only a cache: Sync makes it equal to the repository's
// index files, a corrupt or foreign file is rebuilt, and a file held by
// another process is replaced by a private temporary one, so opening never
// hangs or fails because of the cache's state. Safe for concurrent use.
type Cache struct {
	db      *bolt.DB
	path    string // of the bbolt file
	private string // the private temporary directory; "" for the shared cache

	// mu serialises the writers (Sync, Add), whose read-check-write
	// sequences must not interleave. Lookup and Each do not take it: bbolt
	// read transactions run concurrently with each other and with a writer.
	mu sync.Mutex

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
// it). Files are committed in batches as they load, so a cancelled Sync
// keeps what it finished. A file that fails to load is not recorded: Sync
// goes on with the others and returns the failures joined, with the stats
// of what it did; the next Sync tries the file again. Cancellation of ctx
// stops Sync at once.
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

// syncPass loads and inserts every listed file that is neither complete in
// files nor in sup, updating both. It reports needRebuild when a loaded file
// supersedes one whose entries are in the cache; from then on it only loads
// files to learn what they supersede, and commits nothing more.
func (c *Cache) syncPass(ctx context.Context, src Source, listed []chunk.ID, files map[chunk.ID]fileState,
	sup map[chunk.ID]bool, stats *SyncStats) (needRebuild bool, loadErrs []error, err error) {
	w := c.newWriter()
	defer w.abort()
	// stop ends the pass on cancellation, committing what was loaded
	// unless it is to be cleared anyway.
	stop := func(ctxErr error) (bool, []error, error) {
		err := fmt.Errorf("sync index cache: %w", ctxErr)
		if !needRebuild {
			err = errors.Join(err, w.finish())
		}
		return needRebuild, nil, err
	}
	for _, id := range listed {
		if files[id].complete || sup[id] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return stop(err)
		}
		f, err := src.LoadIndex(ctx, id)
		stats.Loaded++
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return stop(ctxErr)
			}
			loadErrs = append(loadErrs, fmt.Errorf("load index %s: %w", id.Short(), err))
			continue
		}
		for _, s := range f.Supersedes {
			if s == id {
				continue // nonsense, but must not make a file ignore itself
			}
			sup[s] = true
			if _, cached := files[s]; cached {
				needRebuild = true
			}
		}
		if needRebuild {
			continue // everything is cleared before the next pass
		}
		if err := w.add(id, f); err != nil {
			return false, nil, err
		}
		files[id] = fileState{complete: true, supersedes: f.Supersedes}
	}
	if needRebuild {
		return true, loadErrs, nil // the deferred abort drops the batch
	}
	return false, loadErrs, w.finish()
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

// clear empties the data buckets in one transaction.
func (c *Cache) clear() error {
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
	pending []kv     // blob entries to put before the commit
	arena   []byte   // backs the keys and values handed to Put
}

type kv struct{ k, v []byte }

// arenaChunk is the allocation unit of writer.copy.
const arenaChunk = 256 << 10

// copy returns a copy of b that stays valid until the transaction ends, as
// bbolt's Put requires, without one allocation per key and value. Slices
// handed out earlier keep the old chunk alive when a new one is started.
func (w *writer) copy(b []byte) []byte {
	if len(w.arena)+len(b) > cap(w.arena) {
		w.arena = make([]byte, 0, max(arenaChunk, len(b)))
	}
	start := len(w.arena)
	w.arena = append(w.arena, b...)
	return w.arena[start:len(w.arena):len(w.arena)]
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
	if len(w.pending) > 0 && len(w.pending)+total > batchBlobs {
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
	if len(w.pending)+total > batchBlobs {
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
			if len(w.pending) >= batchBlobs {
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
	if len(w.pending) >= batchBlobs {
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
	w.tx = tx
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
	return nil
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

	tx, err := c.db.Begin(false)
	if err != nil {
		return PackedBlob{}, false, err
	}
	defer func() { _ = tx.Rollback() }()
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
	return c.db.View(func(tx *bolt.Tx) error {
		blobs, packs := tx.Bucket(blobsBucket), tx.Bucket(packsBucket)
		if blobs == nil || packs == nil {
			return fmt.Errorf("missing bucket: %w", ErrCacheCorrupt)
		}
		memo := make(map[uint32]chunk.ID)
		cur := blobs.Cursor()
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
		}
		return nil
	})
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
		if err := guard(c.db.Close); err != nil {
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
