// Package bigindex writes synthetic index files into a repository, so that
// the index cache can be measured against a repository of millions of
// blobs without storing their data: the entries point at packs that do not
// exist. Only a backup of new data (which never reads old packs) and the
// index cache itself can use such a repository; check reports every pack
// missing.
package bigindex

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo"
)

// Spec says what to write.
type Spec struct {
	// Blobs is the number of index entries in total.
	Blobs int
	// PerFile is the number of entries per index file (prune writes
	// 50,000); the last file may hold fewer.
	PerFile int
	// PerPack is the number of blobs per fictitious pack (a 16 MiB pack of
	// ~1 MiB chunks holds about 16).
	PerPack int
	// TreeEvery makes every TreeEvery-th pack a tree pack; 0: none.
	TreeEvery int
	// Seed makes the blob and pack ids; the same seed gives the same ids.
	Seed uint64
	// Workers seal and save files concurrently; 0 means 2.
	Workers int
}

// Write saves the index files of s into r and returns their ids in the
// order of their first blob. progress, if not nil, is called after each
// file with the number of entries written so far.
func Write(ctx context.Context, r *repo.Repository, s Spec, progress func(done int)) ([]chunk.ID, error) {
	if s.Blobs < 0 || s.PerFile <= 0 || s.PerPack <= 0 {
		return nil, fmt.Errorf("bigindex: bad spec %+v", s)
	}
	nfiles := (s.Blobs + s.PerFile - 1) / s.PerFile
	ids := make([]chunk.ID, nfiles)
	workers := s.Workers
	if workers <= 0 {
		workers = 2
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				n := min(s.PerFile, s.Blobs-i*s.PerFile)
				f := File(s, i, n)
				id, err := r.SaveUnpacked(ctx, backend.IndexFile, f.Encode())
				if err != nil {
					cancel(fmt.Errorf("save index file %d: %w", i, err))
					return
				}
				mu.Lock()
				ids[i] = id
				done += n
				if progress != nil {
					progress(done)
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range nfiles {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return ids, nil
}

// File returns index file number i of s, holding n entries. Its ids are
// derived from s.Seed and i alone.
func File(s Spec, i, n int) *index.File {
	rng := rand.New(rand.NewPCG(s.Seed, uint64(i)))
	f := &index.File{}
	blobs := make([]index.Blob, n)
	for start, p := 0, 0; start < n; start, p = start+s.PerPack, p+1 {
		pk := index.Pack{ID: randomID(rng), Blobs: blobs[start:min(start+s.PerPack, n)]}
		typ := index.DataBlob
		if s.TreeEvery > 0 && (i*s.PerFile/s.PerPack+p)%s.TreeEvery == s.TreeEvery-1 {
			typ = index.TreeBlob
		}
		off := uint32(0)
		for j := range pk.Blobs {
			raw := uint32(512<<10 + rng.IntN(1<<20))
			if typ == index.TreeBlob {
				raw = uint32(200 + rng.IntN(8<<10))
			}
			b := index.Blob{Type: typ, ID: randomID(rng), Offset: off, Length: raw/2 + 40,
				RawLength: raw, Compression: index.CompressionZstd}
			off += b.Length
			pk.Blobs[j] = b
		}
		f.Packs = append(f.Packs, pk)
	}
	return f
}

func randomID(rng *rand.Rand) (id chunk.ID) {
	for i := 0; i < len(id); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			id[i+j] = byte(v >> (8 * j))
		}
	}
	return id
}

// Rewrite replaces every index file of r by one with the same entries in
// another order (its packs reversed), as a prune that rewrites the index
// would: a cache that knew the old files must rebuild. It writes each new
// file before it removes the old one.
func Rewrite(ctx context.Context, r *repo.Repository, progress func(done int)) error {
	var old []chunk.ID
	err := r.Backend().List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		id, err := chunk.ParseID(fi.Name)
		if err == nil {
			old = append(old, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list index files: %w", err)
	}
	for i, id := range old {
		f, err := r.LoadIndexFile(ctx, id)
		if err != nil {
			return err
		}
		for a, b := 0, len(f.Packs)-1; a < b; a, b = a+1, b-1 {
			f.Packs[a], f.Packs[b] = f.Packs[b], f.Packs[a]
		}
		nid, err := r.SaveUnpacked(ctx, backend.IndexFile, f.Encode())
		if err != nil {
			return err
		}
		if nid == id {
			return errors.New("rewritten index file has the same id (a single pack?)")
		}
		if err := r.Backend().Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}); err != nil {
			return fmt.Errorf("remove index %s: %w", id.Short(), err)
		}
		if progress != nil {
			progress(i + 1)
		}
	}
	return nil
}
