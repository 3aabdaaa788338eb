package index

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"

	bolt "go.etcd.io/bbolt"

	"repo/chunk"
)

// Bulk loading: how Sync loads many entries.
//
// The incremental writer puts each batch in key order, but the keys of
// successive batches are spread over the whole tree: once the tree is
// larger than a batch, each put dirties a leaf of its own, so a batch of
// 200,000 keeps about as many leaves decoded on the heap and reads as many
// pages through the memory map (with the incremental writer alone, a
// backup with a cold Sync of 2M blobs peaked at 824 MiB; one that added
// 500k entries to a 10M-blob cache, at 3.1 GiB).
//
// A bulk load instead reads the new index files first, sorting their
// entries into runs of at most runBlobs entries written to temporary files,
// then builds a new cache file: the cached files, packs and entries are
// copied into it, the entries merged in key order with the runs, so that
// every put appends to the rightmost leaf and a transaction only ever
// dirties the rightmost path. The new file then replaces the old one
// (install). Its cost is proportional to the whole cache, that of the
// incremental writer to the new entries (but much higher per entry, since
// a large cache takes largeCacheBatch entries per transaction), hence
// bulkRatio.
//
// Crash safety: the new file is synced before it is renamed over the old
// one, which stays untouched until then, so a crash or cancellation at any
// point leaves the cache as it was before the load (and a temporary file,
// which the next OpenCache removes). The files are recorded complete in
// the new file from the start: nothing reads it before all is in.
//
// Duplicates resolve as with the incremental writer: of two entries for one
// blob, the one loaded later wins (later file in list order, later within a
// file, any new file over a cached one), so both paths give the same
// lookups for the same input.

// Tuning. Vars, not consts, so that tests can shrink them.
var (
	// bulkMinBlobs, bulkRatio and bulkMaxKept: Sync loads new entries
	// through the incremental writer up to bulkMinBlobs of them or
	// 1/bulkRatio of the entries cached (estimated from the file size),
	// whichever is more, but never more than bulkMaxKept (they are kept
	// in memory, decoded, until that is known), and bulk-loads beyond.
	// Measured on a 10M-blob cache (760 MB, so up to 185k entries
	// incrementally), on a busy machine: 500k new entries took 29 s in
	// bulk (the whole cache is rewritten), 56 s incrementally; 100k, 20 s
	// incrementally (10 s with the machine idle).
	bulkMinBlobs = 50_000
	bulkRatio    = 64
	bulkMaxKept  = 200_000
	// runBlobs is the most entries sorted in memory at once: 66 bytes
	// each (the record and a sortKey), so 33 MiB. Ten million blobs make
	// twenty runs, 500 MB on disk. Twice as many (66 MiB) kept the heap
	// at cmd/repo's soft memory limit (150 MiB) throughout the loading,
	// and made the load no faster.
	runBlobs = 1 << 19
	// bulkCommitBlobs is the number of records put per transaction of a
	// bulk load. A transaction dirties only the rightmost path of the
	// tree, so its cost is the records themselves (about 120 bytes each on
	// the heap until the commit); the new file is synced only once, at the
	// end.
	bulkCommitBlobs = 100_000
	// bulkFillPercent is how full the bulk load packs the leaves of the
	// blobs tree: not quite, so that the blobs added later by backups
	// mostly fit without splitting a page (which grows the file by a page
	// and writes both halves).
	bulkFillPercent = 0.9
)

// runRecordSize is the size of one record of a run file: the blobs key and
// value, as stored in the cache.
const runRecordSize = blobKeySize + blobValueSize

// runEntry is a blobs record: key, then value.
type runEntry [runRecordSize]byte

// sortKey stands for a runEntry while a run is sorted: 16 bytes to move
// instead of 50, and one integer comparison for keys that differ in their
// first 8 bytes (nearly all: ids are hashes).
type sortKey struct {
	prefix uint64 // the key's first 8 bytes, big-endian
	i      uint32 // the entry's index in the run, which orders duplicates
}

// loadedFile is an index file of a bulk load.
type loadedFile struct {
	id         chunk.ID
	supersedes []chunk.ID
}

// keptFile is an index file held in memory until the load is known to be
// large enough for a bulk load.
type keptFile struct {
	id chunk.ID
	f  *File
}

// bulkLoad collects the index files of one Sync pass. Until their entries
// exceed threshold it only keeps them (kept); beyond, it turns them into
// sorted runs (bulk).
type bulkLoad struct {
	c         *Cache
	loaded    map[chunk.ID]bool // ids loaded in this pass
	threshold int               // the most entries to load incrementally
	base      uint32            // the cache's last pack number

	kept      []keptFile
	keptBlobs int

	bulk  bool
	files []loadedFile // in load order
	buf   []runEntry   // the run being filled
	keys  []sortKey    // buf's order once sorted (sortRun)
	runs  []*os.File   // full runs, sorted, in load order
	temps []*os.File   // every temporary file, runs and packFile
	// packFile holds the id of each new pack, numbered base+1 to
	// base+npacks, written through packs.
	packFile *os.File
	packs    *bufio.Writer
	npacks   uint32
}

// syncPass loads and inserts every listed file that is neither complete in
// files nor in sup, updating both: through the incremental writer, or in
// bulk if they hold many entries (see bulkMinBlobs). It reports
// needRebuild when a loaded file supersedes one whose entries are in the
// cache or loaded; from then on it only loads files to learn what they
// supersede, and writes nothing.
func (c *Cache) syncPass(ctx context.Context, src Source, listed []chunk.ID, files map[chunk.ID]fileState,
	sup map[chunk.ID]bool, stats *SyncStats) (needRebuild bool, loadErrs []error, err error) {
	size, base, err := c.usage()
	if err != nil {
		return false, nil, err
	}
	// A cache entry takes 64 bytes or more in the file.
	estimate := int(min(size/64, math.MaxInt32))
	b := &bulkLoad{c: c, loaded: make(map[chunk.ID]bool), base: base,
		threshold: max(bulkMinBlobs, min(estimate/bulkRatio, bulkMaxKept))}
	defer func() {
		b.close()
		if b.bulk {
			// Hand the run buffers and the garbage of the load (tens of
			// MiB) back to the system now: the Go runtime would return
			// them only gradually, under the work that follows (a
			// backup), which would then peak higher.
			debug.FreeOSMemory()
		}
	}()
	// stop ends the pass on cancellation, committing what was loaded if
	// it fits in one transaction — not if it is to be cleared anyway, nor
	// in a bulk load: that would not stop at once.
	oneTx := batchBlobs
	if size > largeCacheBytes {
		oneTx = min(batchBlobs, largeCacheBatch)
	}
	stop := func(ctxErr error) (bool, []error, error) {
		err := fmt.Errorf("sync index cache: %w", ctxErr)
		if !needRebuild && !b.bulk && b.keptBlobs <= oneTx {
			err = errors.Join(err, b.writeKept(files))
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
			if _, cached := files[s]; cached || b.loaded[s] {
				needRebuild = true
			}
		}
		if needRebuild {
			b.drop() // everything is cleared before the next pass
			continue
		}
		if err := b.add(id, f, files); err != nil {
			return false, nil, err
		}
	}
	if needRebuild {
		return true, loadErrs, nil
	}
	if !b.bulk {
		return false, loadErrs, b.writeKept(files)
	}
	return false, loadErrs, b.write(ctx, files)
}

// add takes one loaded file.
func (b *bulkLoad) add(id chunk.ID, f *File, files map[chunk.ID]fileState) error {
	b.loaded[id] = true
	if b.bulk {
		return b.spill(id, f)
	}
	b.kept = append(b.kept, keptFile{id, f})
	for _, p := range f.Packs {
		b.keptBlobs += len(p.Blobs)
	}
	if b.keptBlobs <= b.threshold {
		return nil
	}
	if !lockSupported {
		// No bulk load where the cache file cannot be replaced (see
		// createFile): write what was kept, and keep on.
		b.keptBlobs = 0
		return b.writeKept(files)
	}
	b.bulk = true
	b.buf = make([]runEntry, 0, runBlobs)
	b.keys = make([]sortKey, 0, runBlobs)
	kept := b.kept
	b.kept = nil
	for _, k := range kept {
		if err := b.spill(k.id, k.f); err != nil {
			return err
		}
	}
	return nil
}

// drop forgets every file loaded so far.
func (b *bulkLoad) drop() {
	b.kept, b.buf, b.keys = nil, nil, nil
}

// writeKept inserts the kept files through the incremental writer and
// records them in files.
func (b *bulkLoad) writeKept(files map[chunk.ID]fileState) error {
	w := b.c.newWriter()
	defer w.abort()
	for _, k := range b.kept {
		if err := w.add(k.id, k.f); err != nil {
			return err
		}
		files[k.id] = fileState{complete: true, supersedes: k.f.Supersedes}
	}
	b.kept = nil
	return w.finish()
}

// spill numbers f's packs and adds its entries to the runs.
func (b *bulkLoad) spill(id chunk.ID, f *File) error {
	b.files = append(b.files, loadedFile{id: id, supersedes: f.Supersedes})
	if b.packs == nil {
		t, err := b.tempFile()
		if err != nil {
			return err
		}
		b.packFile, b.packs = t, bufio.NewWriterSize(t, 64<<10)
	}
	for _, p := range f.Packs {
		if len(p.Blobs) == 0 {
			continue // as in writer.add: a pack without blobs needs no number
		}
		if uint64(b.base)+uint64(b.npacks) >= math.MaxUint32 {
			return fmt.Errorf("more than %d packs in the index cache", uint64(math.MaxUint32))
		}
		b.npacks++
		if _, err := b.packs.Write(p.ID[:]); err != nil {
			return fmt.Errorf("bulk load index cache: %w", err)
		}
		for _, bl := range p.Blobs {
			if len(b.buf) == runBlobs {
				if err := b.flushRun(); err != nil {
					return err
				}
			}
			var e runEntry
			r := e[:]
			r[0] = byte(bl.Type)
			copy(r[1:blobKeySize], bl.ID[:])
			v := r[blobKeySize:]
			binary.BigEndian.PutUint32(v[0:], b.base+b.npacks)
			binary.BigEndian.PutUint32(v[4:], bl.Offset)
			binary.BigEndian.PutUint32(v[8:], bl.Length)
			binary.BigEndian.PutUint32(v[12:], bl.RawLength)
			v[16] = bl.Compression
			b.buf = append(b.buf, e)
		}
	}
	return nil
}

// sortRun sets keys to the order of the run being filled, by key, keeping
// only the last of each key's entries.
func (b *bulkLoad) sortRun() {
	keys := b.keys[:0]
	for i := range b.buf {
		keys = append(keys, sortKey{binary.BigEndian.Uint64(b.buf[i][:8]), uint32(i)})
	}
	slices.SortFunc(keys, func(x, y sortKey) int {
		if x.prefix != y.prefix {
			return cmp.Compare(x.prefix, y.prefix)
		}
		if c := bytes.Compare(b.buf[x.i][8:blobKeySize], b.buf[y.i][8:blobKeySize]); c != 0 {
			return c
		}
		return cmp.Compare(x.i, y.i)
	})
	out := keys[:0]
	for j, k := range keys {
		if j+1 < len(keys) && keys[j+1].prefix == k.prefix &&
			bytes.Equal(b.buf[keys[j+1].i][8:blobKeySize], b.buf[k.i][8:blobKeySize]) {
			continue // a later entry for the same blob follows
		}
		out = append(out, k)
	}
	b.keys = out
}

// flushRun writes the run being filled to a temporary file.
func (b *bulkLoad) flushRun() error {
	b.sortRun()
	t, err := b.tempFile()
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(t, 256<<10)
	for _, k := range b.keys {
		if _, err := w.Write(b.buf[k.i][:]); err != nil {
			return fmt.Errorf("bulk load index cache: write run: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("bulk load index cache: write run: %w", err)
	}
	b.runs = append(b.runs, t)
	b.buf = b.buf[:0]
	return nil
}

// tempFile creates a temporary file beside the cache file. Where the
// system allows, it is unlinked at once, so that nothing is left behind
// whatever happens; elsewhere close removes it.
func (b *bulkLoad) tempFile() (*os.File, error) {
	t, err := os.CreateTemp(filepath.Dir(b.c.path), bulkRunPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("bulk load index cache: %w", err)
	}
	if runtime.GOOS != "windows" {
		_ = os.Remove(t.Name())
	}
	b.temps = append(b.temps, t)
	return t, nil
}

// close closes and removes the temporary files.
func (b *bulkLoad) close() {
	for _, t := range b.temps {
		_ = t.Close()
		if runtime.GOOS == "windows" {
			_ = os.Remove(t.Name())
		}
	}
	b.temps, b.runs, b.buf, b.keys, b.kept = nil, nil, nil, nil, nil
}

// write builds a new cache file of the cached files and entries and the
// collected ones, installs it, and records the collected files in files.
func (b *bulkLoad) write(ctx context.Context, files map[chunk.ID]fileState) (err error) {
	c := b.c
	db, name, err := c.createFile()
	if err != nil {
		return fmt.Errorf("bulk load index cache: %w", err)
	}
	installed := false
	defer func() {
		if !installed {
			_ = guard(db.Close)
			_ = os.Remove(name)
		}
	}()
	// Nothing reads the file before install, which syncs it first; and
	// it grows by large steps meanwhile.
	db.NoSync, db.NoGrowSync, db.AllocSize = true, true, 16<<20

	// The sources of the merge, oldest first: the cache, the full runs in
	// load order, and the last run, still in memory.
	oldTx, err := c.db.Begin(false)
	if err != nil {
		return fmt.Errorf("read index cache %s: %w", c.path, err)
	}
	defer func() { _ = guard(oldTx.Rollback) }()
	old := &treeRun{db: c.db, tx: oldTx}
	srcs := []runSource{old}
	for _, t := range b.runs {
		if _, err := t.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("bulk load index cache: %w", err)
		}
		srcs = append(srcs, &fileRun{r: bufio.NewReaderSize(t, 64<<10)})
	}
	b.sortRun()
	srcs = append(srcs, &memRun{buf: b.buf, keys: b.keys})
	if err := b.packs.Flush(); err != nil {
		return fmt.Errorf("bulk load index cache: %w", err)
	}
	if _, err := b.packFile.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("bulk load index cache: %w", err)
	}

	w := &bulkWriter{c: c, db: db, ctx: ctx}
	defer w.abort()
	err = w.run(func() error {
		if err := old.open(); err != nil {
			return err
		}
		if err := w.begin(); err != nil {
			return err
		}
		// Files: the cached records, then the new ones, complete (the
		// file is installed only once everything is in).
		state := func(id chunk.ID, st byte, sup []chunk.ID) error {
			v := make([]byte, 1, 1+len(sup)*len(chunk.ID{}))
			v[0] = st
			for _, s := range sup {
				v = append(v, s[:]...)
			}
			return w.put(filesBucket, id[:], v)
		}
		for id, st := range files {
			s := filePending
			if st.complete {
				s = fileComplete
			}
			if err := state(id, s, st.supersedes); err != nil {
				return err
			}
		}
		for _, f := range b.files {
			if err := state(f.id, fileComplete, f.supersedes); err != nil {
				return err
			}
		}
		// Packs: the cached ones, then the new ones; their numbers only
		// grow.
		cur := old.packs.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			if len(k) != 4 || len(v) != len(chunk.ID{}) || binary.BigEndian.Uint32(k) > b.base {
				return fmt.Errorf("packs record of %d+%d bytes: %w", len(k), len(v), ErrCacheCorrupt)
			}
			if err := w.put(packsBucket, k, v); err != nil {
				return err
			}
		}
		rd := bufio.NewReaderSize(b.packFile, 64<<10)
		var num [4]byte
		var id chunk.ID
		for n := range b.npacks {
			if _, err := io.ReadFull(rd, id[:]); err != nil {
				return fmt.Errorf("bulk load index cache: read packs: %w", err)
			}
			binary.BigEndian.PutUint32(num[:], b.base+n+1)
			if err := w.put(packsBucket, num[:], id[:]); err != nil {
				return err
			}
		}
		if err := w.tx.Bucket(packsBucket).SetSequence(uint64(b.base) + uint64(b.npacks)); err != nil {
			return err
		}
		err := merge(srcs, func(rec []byte) error {
			return w.put(blobsBucket, rec[:blobKeySize], rec[blobKeySize:])
		})
		if err != nil {
			return err
		}
		return w.commit()
	})
	if err != nil {
		return err
	}
	db.NoSync, db.NoGrowSync, db.AllocSize = false, false, allocSize
	if err := guard(db.Sync); err != nil {
		return fmt.Errorf("bulk load index cache: %w", err)
	}
	_ = guard(oldTx.Rollback) // install closes the old file: no transaction may be open
	if err := c.install(db, name); err != nil {
		return fmt.Errorf("bulk load index cache: %w", err)
	}
	installed = true
	for _, f := range b.files {
		files[f.id] = fileState{complete: true, supersedes: f.supersedes}
	}
	return nil
}

// usage returns the size of the pages in use and the last pack number.
func (c *Cache) usage() (size int64, lastPack uint32, err error) {
	err = guard(func() error {
		return c.db.View(func(tx *bolt.Tx) error {
			packs := tx.Bucket(packsBucket)
			if packs == nil {
				return fmt.Errorf("no packs bucket: %w", ErrCacheCorrupt)
			}
			seq := packs.Sequence()
			if seq > math.MaxUint32 {
				return fmt.Errorf("pack sequence %d: %w", seq, ErrCacheCorrupt)
			}
			size, lastPack = tx.Size(), uint32(seq)
			return nil
		})
	})
	if err != nil {
		c.markBroken(err)
		return 0, 0, fmt.Errorf("read index cache %s: %w", c.path, err)
	}
	return size, lastPack, nil
}

// bulkWriter puts records into the new file db in the order given,
// committing every bulkCommitBlobs of them. The packs and blobs buckets
// take pages full, or nearly (bulkFillPercent): their keys only grow.
type bulkWriter struct {
	c     *Cache
	db    *bolt.DB
	ctx   context.Context // checked between transactions
	tx    *bolt.Tx        // nil between transactions
	n     int             // records put in tx
	arena []byte          // backs the keys and values handed to Put
}

// run runs fn, turning bbolt's panics and faults into errors. After an
// error it rolls back the open transaction (a failed Put or Commit leaves
// it unusable) and wraps the error, unless it is the cancellation.
func (w *bulkWriter) run(fn func() error) (err error) {
	defer func() {
		if err == nil {
			return
		}
		w.abort()
		w.c.markBroken(err)
		if ctxErr := w.ctx.Err(); ctxErr == nil || !errors.Is(err, ctxErr) {
			err = fmt.Errorf("write index cache %s: %w", w.c.path, err)
		}
	}()
	defer recoverCorrupt(&err, debug.SetPanicOnFault(true))
	return fn()
}

func (w *bulkWriter) begin() error {
	tx, err := w.db.Begin(true)
	if err != nil {
		return err
	}
	for _, name := range dataBuckets {
		if tx.Bucket(name) == nil {
			_ = tx.Rollback()
			return fmt.Errorf("no %s bucket: %w", name, ErrCacheCorrupt)
		}
	}
	// Pack numbers only grow, later too; files come in any order.
	tx.Bucket(packsBucket).FillPercent = 1
	tx.Bucket(blobsBucket).FillPercent = bulkFillPercent
	w.tx, w.n = tx, 0
	return nil
}

// bucket returns the named bucket of the open transaction (bbolt hands out
// the same *Bucket, with its FillPercent, for the whole transaction).
func (w *bulkWriter) bucket(name []byte) *bolt.Bucket { return w.tx.Bucket(name) }

// put puts one record, first committing the transaction if it is full.
func (w *bulkWriter) put(name, k, v []byte) error {
	if w.n >= bulkCommitBlobs {
		if err := w.commit(); err != nil {
			return err
		}
		if err := w.ctx.Err(); err != nil {
			return fmt.Errorf("sync index cache: %w", err)
		}
		if err := w.begin(); err != nil {
			return err
		}
	}
	w.n++
	return w.bucket(name).Put(arenaCopy(&w.arena, k), arenaCopy(&w.arena, v))
}

func (w *bulkWriter) commit() error {
	tx := w.tx
	w.tx, w.arena = nil, nil
	if err := tx.Commit(); err != nil {
		return err
	}
	if testHookCommitted != nil {
		testHookCommitted(w.c)
	}
	return trim(w.db)
}

// abort rolls back an uncommitted transaction; a no-op after commit.
func (w *bulkWriter) abort() {
	if w.tx != nil {
		_ = guard(w.tx.Rollback)
		w.tx = nil
	}
}

// runSource yields the records of one sorted run, each key once; nil at
// the end. A record is valid until the next call.
type runSource interface {
	next() ([]byte, error)
}

// fileRun reads a run file.
type fileRun struct {
	r   *bufio.Reader
	rec [runRecordSize]byte
}

func (f *fileRun) next() ([]byte, error) {
	switch _, err := io.ReadFull(f.r, f.rec[:]); {
	case err == io.EOF:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("bulk load index cache: read run: %w", err)
	}
	return f.rec[:], nil
}

// treeRun reads the blobs of the cache through tx, trimming the memory
// map as it goes (the whole cache is read).
type treeRun struct {
	db    *bolt.DB
	tx    *bolt.Tx
	packs *bolt.Bucket
	cur   *bolt.Cursor
	n     int
	rec   [runRecordSize]byte
}

// open positions the cursor; called inside bulkWriter.run, where a
// damaged page becomes an error.
func (t *treeRun) open() error {
	blobs, packs := t.tx.Bucket(blobsBucket), t.tx.Bucket(packsBucket)
	if blobs == nil || packs == nil {
		return fmt.Errorf("missing bucket: %w", ErrCacheCorrupt)
	}
	t.packs, t.cur = packs, blobs.Cursor()
	return nil
}

func (t *treeRun) next() ([]byte, error) {
	var k, v []byte
	if t.n == 0 {
		k, v = t.cur.First()
	} else {
		k, v = t.cur.Next()
	}
	if k == nil {
		return nil, nil
	}
	if t.n++; t.n%trimEach == 0 {
		trimMapping(t.db, t.tx)
	}
	if len(k) != blobKeySize || len(v) != blobValueSize {
		return nil, fmt.Errorf("blob record of %d+%d bytes: %w", len(k), len(v), ErrCacheCorrupt)
	}
	copy(t.rec[:], k)
	copy(t.rec[blobKeySize:], v)
	return t.rec[:], nil
}

// memRun reads the run still in memory, in the order of keys.
type memRun struct {
	buf  []runEntry
	keys []sortKey
}

func (m *memRun) next() ([]byte, error) {
	if len(m.keys) == 0 {
		return nil, nil
	}
	k := m.keys[0]
	m.keys = m.keys[1:]
	return m.buf[k.i][:], nil
}

// merge calls emit for every key of srcs in key order, with the record of
// the last source that has it (the one loaded last). emit must copy what
// it keeps.
func merge(srcs []runSource, emit func(rec []byte) error) error {
	h := make(mergeHeap, 0, len(srcs))
	for i, s := range srcs {
		rec, err := s.next()
		if err != nil {
			return err
		}
		if rec != nil {
			h = append(h, &mergeHead{rec: rec, src: s, order: i})
		}
	}
	heap.Init(&h)
	var cur [runRecordSize]byte
	have := false
	for len(h) > 0 {
		top := h[0]
		if have && !bytes.Equal(cur[:blobKeySize], top.rec[:blobKeySize]) {
			if err := emit(cur[:]); err != nil {
				return err
			}
		}
		// Of equal keys the heap yields the earlier source first: the
		// later one overwrites cur.
		copy(cur[:], top.rec)
		have = true
		rec, err := top.src.next()
		if err != nil {
			return err
		}
		if rec == nil {
			heap.Pop(&h)
		} else {
			top.rec = rec
			heap.Fix(&h, 0)
		}
	}
	if have {
		return emit(cur[:])
	}
	return nil
}

// mergeHead is the current record of one source of merge.
type mergeHead struct {
	rec   []byte
	src   runSource
	order int
}

// mergeHeap orders the heads by key, then by source.
type mergeHeap []*mergeHead

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if c := bytes.Compare(h[i].rec[:blobKeySize], h[j].rec[:blobKeySize]); c != 0 {
		return c < 0
	}
	return h[i].order < h[j].order
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(*mergeHead)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
