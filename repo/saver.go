package repo

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo/pack"
)

// A Saver writes an index file for its uploaded packs as soon as
// indexEveryPacks packs or indexEveryBlobs blobs wait for one, or the
// oldest waiting pack has waited IndexInterval. That bounds the work a
// crash can orphan even where the upload journal cannot help (another
// host, a lost cache): at most 4 packs (64 MiB at the default pack size)
// or a few minutes of uploads. The blob bound matters for databases,
// whose 4 KiB pages fill a pack with thousands of blobs: 16384 pages are
// about 45 MB of a typical database's packs, an index file of about 1 MB.
const (
	indexEveryPacks = 4
	indexEveryBlobs = 16384
)

// DefaultIndexInterval is the default of OpenOptions.IndexInterval.
const DefaultIndexInterval = 2 * time.Minute

// Saver adds blobs to the repository: it dedups them against the index and
// against what it saved already, encodes them on all cores, fills packs and
// uploads them, and writes index files for uploaded packs. It implements
// the write ordering: an index file is written only after every pack it
// lists was saved. Safe for concurrent use. Call Finish once at the end;
// nothing a Saver stored is referenced by the index before Finish (or a
// periodic index write) returns.
type Saver struct {
	r      *Repository
	ctx    context.Context
	cancel context.CancelCauseFunc

	encodeCh chan encodeJob
	encodeWG sync.WaitGroup
	uploadCh chan packJob
	uploadWG sync.WaitGroup
	// packBufs holds the data pack buffers not in use, nil until first
	// allocated; there are exactly uploaders+1 of them (one filling, the
	// others uploading), which bounds the memory of a backup. Without
	// recycling every pack is a fresh allocation and the garbage doubles
	// peak memory.
	packBufs chan []byte

	mu sync.Mutex
	// reserved holds every blob this Saver accepted whose index file is not
	// yet in the cache; a blob leaves it only after the cache knows it, so
	// a blob is always found in one of the two (see Reserve).
	reserved  map[blobKey]struct{}
	packers   map[index.BlobType]*pack.Writer
	unindexed []index.Pack
	// unindexedBlobs counts the blobs of unindexed; unindexedSince is
	// when the oldest of them was uploaded.
	unindexedBlobs int
	unindexedSince time.Time
	stats          SaverStats
	finished       bool

	// stopTimer ends the goroutine that writes an index file for packs
	// that waited too long; timerDone is closed when it has ended.
	stopTimer chan struct{}
	timerDone chan struct{}

	// indexMu serializes index writes so files are written in order.
	indexMu sync.Mutex
}

// SaverStats counts what a Saver added.
type SaverStats struct {
	Blobs       int   // new blobs stored
	RawBytes    int64 // their plaintext size
	StoredBytes int64 // their size in packs (compressed and sealed)
	Packs       int   // packs uploaded
	IndexFiles  int   // index files written
}

type encodeJob struct {
	t       index.BlobType
	id      chunk.ID
	data    []byte
	release func()
}

type packJob struct {
	t index.BlobType
	w *pack.Writer
}

// NewSaver starts a Saver whose goroutines live until Finish or until ctx
// is cancelled.
func (r *Repository) NewSaver(ctx context.Context) *Saver {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &Saver{
		r:        r,
		ctx:      ctx,
		cancel:   cancel,
		encodeCh: make(chan encodeJob, runtime.GOMAXPROCS(0)),
		uploadCh: make(chan packJob),
		packBufs: make(chan []byte, max(r.be.Properties().Connections, 1)+1),
		reserved: make(map[blobKey]struct{}),
		packers:  make(map[index.BlobType]*pack.Writer),

		stopTimer: make(chan struct{}),
		timerDone: make(chan struct{}),
	}
	go s.indexTimer(r.indexInterval)
	for range runtime.GOMAXPROCS(0) {
		s.encodeWG.Add(1)
		go s.encoder()
	}
	for range cap(s.packBufs) {
		s.packBufs <- nil
	}
	uploaders := max(r.be.Properties().Connections, 1)
	for range uploaders {
		s.uploadWG.Add(1)
		go s.uploader()
	}
	return s
}

// fail records the first error and stops all work.
func (s *Saver) fail(err error) { s.cancel(err) }

// Err returns the error that stopped the Saver, or nil.
func (s *Saver) Err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	return context.Cause(s.ctx)
}

// Known reports whether the repository or this Saver already holds blob id.
func (s *Saver) Known(t index.BlobType, id chunk.ID) (bool, error) {
	k := blobKey{t, id}
	s.mu.Lock()
	_, ok := s.reserved[k]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	return s.r.cache.Has(t, id)
}

// KnownMany sets known[i] for every blob ids[i] that is stored or being
// stored, with one cache transaction for all; known must be as long as
// ids. A true is definite. A false is not: a blob whose store finished
// between the cache's look and the reserved set's can be missed, so a
// caller that would store a blob asks Reserve, which settles it.
func (s *Saver) KnownMany(t index.BlobType, ids []chunk.ID, known []bool) error {
	if err := s.r.cache.HasMany(t, ids, known); err != nil {
		return err
	}
	s.mu.Lock()
	for i, id := range ids {
		if !known[i] {
			_, known[i] = s.reserved[blobKey{t, id}]
		}
	}
	s.mu.Unlock()
	return nil
}

// Reserve reports whether the caller must store blob id: true exactly once
// per new blob, however many goroutines ask, false when it is stored or
// being stored already.
func (s *Saver) Reserve(t index.BlobType, id chunk.ID) (bool, error) {
	// Checking reserved before the cache is what makes this race-free:
	// writeIndex adds a blob to the cache before removing it from reserved.
	if known, err := s.Known(t, id); known || err != nil {
		return false, err
	}
	k := blobKey{t, id}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.reserved[k]; ok {
		return false, nil
	}
	s.reserved[k] = struct{}{}
	return true, nil
}

// ReserveMany is Reserve for each ids[i] that KnownMany left !known[i]:
// it sets store[i] when the caller must store that blob, with one lock for
// the batch and no second look in the cache. An id twice in ids is stored
// once. Skipping the cache is safe: a blob is only ever missing from both
// the cache and reserved while nobody stores it, so it is never lost; the
// one cost is that a blob another goroutine of this Saver stored and
// indexed just between KnownMany's look in the cache and its look in
// reserved is stored a second time, which is harmless (the index may list
// a blob twice) and rare. On a day-0 database that second look cost a
// cache transaction per new page, 5% of the backup's CPU.
func (s *Saver) ReserveMany(t index.BlobType, ids []chunk.ID, known, store []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, id := range ids {
		store[i] = false
		if known[i] {
			continue
		}
		k := blobKey{t, id}
		if _, ok := s.reserved[k]; ok {
			continue
		}
		s.reserved[k] = struct{}{}
		store[i] = true
	}
}

// SaveBlob stores data as a blob of type t unless it is known, in the
// calling goroutine, and returns its id and whether it was new.
func (s *Saver) SaveBlob(t index.BlobType, data []byte) (chunk.ID, bool, error) {
	id := s.r.hasher.Sum(data)
	ok, err := s.Reserve(t, id)
	if err != nil || !ok {
		return id, false, err
	}
	stored, comp := s.r.codec.Encode(nil, data)
	return id, true, s.add(t, id, len(data), stored, comp)
}

// SaveBlobAgain stores data as a blob of type t even when the index lists
// it already: repair salvages blobs whose listed copy is in a damaged pack.
// Only a blob this Saver stores already is not stored twice.
func (s *Saver) SaveBlobAgain(t index.BlobType, data []byte) (chunk.ID, bool, error) {
	id := s.r.hasher.Sum(data)
	k := blobKey{t, id}
	s.mu.Lock()
	if _, ok := s.reserved[k]; ok {
		s.mu.Unlock()
		return id, false, nil
	}
	s.reserved[k] = struct{}{}
	s.mu.Unlock()
	stored, comp := s.r.codec.Encode(nil, data)
	return id, true, s.add(t, id, len(data), stored, comp)
}

// StoreAsync queues a reserved blob for encoding on a worker; release is
// called once data is no longer needed. It blocks while the workers are
// busy, which is what bounds memory.
func (s *Saver) StoreAsync(t index.BlobType, id chunk.ID, data []byte, release func()) error {
	select {
	case s.encodeCh <- encodeJob{t, id, data, release}:
		return nil
	case <-s.ctx.Done():
		release()
		return s.Err()
	}
}

func (s *Saver) encoder() {
	defer s.encodeWG.Done()
	var scratch []byte
	for job := range s.encodeCh {
		if s.ctx.Err() != nil {
			job.release()
			continue
		}
		var comp uint8
		scratch, comp = s.r.codec.Encode(scratch[:0], job.data)
		n := len(job.data)
		job.release()
		if err := s.add(job.t, job.id, n, scratch, comp); err != nil {
			s.fail(err)
		}
	}
}

// add puts an encoded blob into the pack of its type and hands full packs
// to the uploaders. A pack is shipped before a blob that would overflow its
// buffer, so recycled buffers never grow.
func (s *Saver) add(t index.BlobType, id chunk.ID, rawLen int, stored []byte, comp uint8) error {
	for {
		s.mu.Lock()
		if s.finished {
			s.mu.Unlock()
			return errors.New("saver: add after finish")
		}
		w := s.packers[t]
		if w == nil {
			// Waiting for a buffer must not hold the lock: uploaders and
			// Reserve need it meanwhile.
			s.mu.Unlock()
			buf, err := s.packBuf(t)
			if err != nil {
				return err
			}
			s.mu.Lock()
			if s.packers[t] == nil {
				s.packers[t] = pack.NewWriterBuffer(s.r.sealer, buf)
			} else {
				s.releasePackBuf(t, buf)
			}
			s.mu.Unlock()
			continue
		}
		if w.Count() > 0 && w.Size()+len(stored) > s.maxPackData() {
			delete(s.packers, t)
			s.mu.Unlock()
			if err := s.ship(t, w); err != nil {
				return err
			}
			continue
		}
		w.Add(index.Blob{Type: t, ID: id, RawLength: uint32(rawLen), Compression: comp}, stored)
		s.stats.Blobs++
		s.stats.RawBytes += int64(rawLen)
		s.stats.StoredBytes += int64(len(stored))
		full := w.Size() >= s.r.cfg.PackSize || w.Count() >= pack.MaxBlobs
		if full {
			delete(s.packers, t)
		}
		s.mu.Unlock()
		if full {
			return s.ship(t, w)
		}
		return nil
	}
}

// maxPackData is the most blob bytes a pack may hold before it must be
// shipped: the target plus slack so that packs end near the target.
func (s *Saver) maxPackData() int { return s.r.cfg.PackSize + s.r.cfg.PackSize/8 }

// packBufCap leaves room for the header of a pack of small blobs too.
func (s *Saver) packBufCap() int { return s.maxPackData() + 512<<10 }

// ship hands a finished pack to an uploader.
func (s *Saver) ship(t index.BlobType, w *pack.Writer) error {
	select {
	case s.uploadCh <- packJob{t, w}:
		return nil
	case <-s.ctx.Done():
		return s.Err()
	}
}

// packBuf returns a buffer for a new pack of type t. Data packs take one of
// a fixed number of recycled buffers, blocking while all are in use: that
// bounds the memory of a backup to that many packs whatever the speed of
// the backend. Tree packs are small and rare and are allocated small.
func (s *Saver) packBuf(t index.BlobType) ([]byte, error) {
	if t != index.DataBlob {
		return make([]byte, 0, 256<<10), nil
	}
	select {
	case b := <-s.packBufs:
		if b == nil {
			b = make([]byte, 0, s.packBufCap())
		}
		return b, nil
	case <-s.ctx.Done():
		return nil, s.Err()
	}
}

// releasePackBuf returns a data pack buffer to the pool.
func (s *Saver) releasePackBuf(t index.BlobType, b []byte) {
	if t == index.DataBlob {
		s.packBufs <- b[:0]
	}
}

func (s *Saver) uploader() {
	defer s.uploadWG.Done()
	for job := range s.uploadCh {
		if s.ctx.Err() != nil {
			continue
		}
		if err := s.upload(job); err != nil {
			s.fail(err)
		}
	}
}

// upload saves one pack, then records its blobs as pending and writes an
// index file when enough packs are waiting for one.
func (s *Saver) upload(job packJob) error {
	data, id, blobs := job.w.Finalize()
	h := packHandle(id)
	err := s.r.be.Save(s.ctx, h, backend.NewByteReader(data))
	s.releasePackBuf(job.t, data)
	if err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("save pack %s: %w", id.Short(), err)
	}
	s.r.journalAdd(index.Pack{ID: id, Blobs: blobs})
	s.r.pendingMu.Lock()
	for _, b := range blobs {
		s.r.pending[blobKey{b.Type, b.ID}] = index.PackedBlob{Blob: b, Pack: id}
	}
	s.r.pendingMu.Unlock()

	s.mu.Lock()
	if len(s.unindexed) == 0 {
		s.unindexedSince = time.Now()
	}
	s.unindexed = append(s.unindexed, index.Pack{ID: id, Blobs: blobs})
	s.unindexedBlobs += len(blobs)
	s.stats.Packs++
	var batch []index.Pack
	if len(s.unindexed) >= indexEveryPacks || s.unindexedBlobs >= indexEveryBlobs {
		batch = s.takeUnindexed()
	}
	s.mu.Unlock()
	return s.writeIndex(batch)
}

// takeUnindexed returns the packs waiting for an index file and forgets
// them. The caller holds s.mu.
func (s *Saver) takeUnindexed() []index.Pack {
	batch := s.unindexed
	s.unindexed, s.unindexedBlobs = nil, 0
	return batch
}

// indexTimer writes an index file for packs that waited interval since
// the first of them was uploaded, so that a backup that uploads slowly or
// stops uploading for a while (reading unchanged data) still gets its
// packs indexed every few minutes. It ends when stopTimer is closed or the
// Saver fails.
func (s *Saver) indexTimer(interval time.Duration) {
	defer close(s.timerDone)
	if interval <= 0 {
		interval = DefaultIndexInterval
	}
	// Wall-clock checks at a fraction of the interval: a timer set for
	// the oldest pack would need resetting on every batch.
	tick := time.NewTicker(max(interval/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.stopTimer:
			return
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		var batch []index.Pack
		if len(s.unindexed) > 0 && time.Since(s.unindexedSince) >= interval {
			batch = s.takeUnindexed()
		}
		s.mu.Unlock()
		if err := s.writeIndex(batch); err != nil {
			s.fail(err)
			return
		}
	}
}

// writeIndex writes one index file for packs that are all saved, tells the
// cache, and only then forgets the blobs as reserved and pending.
func (s *Saver) writeIndex(packs []index.Pack) error {
	if len(packs) == 0 {
		return nil
	}
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	f := &index.File{Packs: packs}
	id, err := s.r.SaveUnpacked(s.ctx, backend.IndexFile, f.Encode())
	if err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	if err := s.r.cache.Add(id, f); err != nil {
		return fmt.Errorf("add index %s to cache: %w", id.Short(), err)
	}
	s.r.journalDone(packs)
	s.mu.Lock()
	s.stats.IndexFiles++
	for _, p := range packs {
		for _, b := range p.Blobs {
			delete(s.reserved, blobKey{b.Type, b.ID})
		}
	}
	s.mu.Unlock()
	s.r.pendingMu.Lock()
	for _, p := range packs {
		for _, b := range p.Blobs {
			if pb, ok := s.r.pending[blobKey{b.Type, b.ID}]; ok && pb.Pack == p.ID {
				delete(s.r.pending, blobKey{b.Type, b.ID})
			}
		}
	}
	s.r.pendingMu.Unlock()
	return nil
}

// Finish encodes what is queued, uploads the partial packs, writes the last
// index file and returns the first error any stage met. After a nil return
// every blob the Saver accepted is stored and indexed. The Saver is spent.
func (s *Saver) Finish() (SaverStats, error) {
	close(s.encodeCh)
	s.encodeWG.Wait()
	s.mu.Lock()
	s.finished = true
	var last []packJob
	for _, t := range []index.BlobType{index.DataBlob, index.TreeBlob} {
		if w := s.packers[t]; w != nil && w.Count() > 0 {
			last = append(last, packJob{t, w})
		}
	}
	s.packers = nil
	s.mu.Unlock()
	for _, j := range last {
		select {
		case s.uploadCh <- j:
		case <-s.ctx.Done():
		}
	}
	close(s.uploadCh)
	s.uploadWG.Wait()
	// After the timer ended no index write is in flight, so the batch
	// below is all that is left.
	close(s.stopTimer)
	<-s.timerDone
	if err := s.Err(); err != nil {
		s.cancel(err)
		return s.stats, err
	}
	s.mu.Lock()
	batch := s.takeUnindexed()
	s.mu.Unlock()
	if err := s.writeIndex(batch); err != nil {
		s.cancel(err)
		return s.stats, err
	}
	s.cancel(nil)
	return s.stats, nil
}
