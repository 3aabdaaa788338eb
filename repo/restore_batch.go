package repo

import (
	"cmp"
	"context"
	"os"
	"slices"

	"repo/backend"
	"repo/chunk"
	"repo/index"
)

// Limits of the batches of small files that restore reads together.
const (
	// batchFiles and batchBytes (stored bytes) bound one batch: enough
	// that a batch is one or a few ranged reads instead of one per file,
	// small enough that the workers share the work.
	batchFiles = 128
	batchBytes = 8 << 20
	// maxPendingFiles bounds the files waiting in unfinished batches.
	// Each holds its directory open (see dirState), so this also bounds
	// the descriptors a restore of files spread over many packs holds.
	maxPendingFiles = 512
	// maxBatchGap is the most unneeded bytes one read of a batch spans
	// between two blobs rather than being split in two.
	maxBatchGap = 1 << 20
)

// packBatcher groups files whose content is a single blob by the pack that
// holds it, so that the blobs of many small files are fetched with one
// ranged read per run instead of one read each: on a remote backend that
// is the difference between a request per file and a request per pack
// region. Files larger than a blob go to the workers one by one (their own
// blobs are read in coalesced runs already). Used by the walker only.
type packBatcher struct {
	byPack  map[chunk.ID][]restoreJob
	bytes   map[chunk.ID]int64 // stored bytes in byPack
	pending int                // files in byPack
}

// batch takes job into the batch of its blob's pack if it is a one-blob
// file whose blob is found in the index, and sends the batch once it is
// full, or all batches once too many files wait. A file it does not take
// (a database image, several blobs, a known block of zeros, a blob the
// index lacks) is the caller's to send.
func (rs *restorer) batch(ctx context.Context, job restoreJob) (bool, error) {
	n := job.node
	if n.Database != nil || len(n.Content) != 1 {
		return false, nil
	}
	if _, ok := rs.zeros.length(n.Content[0]); ok {
		return false, nil
	}
	pb, ok, err := rs.r.LookupBlob(index.DataBlob, n.Content[0])
	if err != nil || !ok || pb.Length > maxCoalesce {
		return false, nil
	}
	job.blob = pb
	b := &rs.batcher
	if b.byPack == nil {
		b.byPack = make(map[chunk.ID][]restoreJob)
		b.bytes = make(map[chunk.ID]int64)
	}
	b.byPack[pb.Pack] = append(b.byPack[pb.Pack], job)
	b.bytes[pb.Pack] += int64(pb.Length)
	b.pending++
	switch {
	case b.pending >= maxPendingFiles:
		return true, rs.flushBatches(ctx)
	case len(b.byPack[pb.Pack]) >= batchFiles || b.bytes[pb.Pack] >= batchBytes:
		return true, rs.sendBatch(ctx, pb.Pack)
	}
	return true, nil
}

// sendBatch sends the batch of pack to the workers.
func (rs *restorer) sendBatch(ctx context.Context, pack chunk.ID) error {
	b := &rs.batcher
	jobs := b.byPack[pack]
	delete(b.byPack, pack)
	delete(b.bytes, pack)
	b.pending -= len(jobs)
	return rs.send(ctx, jobs)
}

// flushBatches sends every batch, the largest first. After an error (the
// restore was cancelled) the rest are released unsent.
func (rs *restorer) flushBatches(ctx context.Context) error {
	b := &rs.batcher
	packs := make([]chunk.ID, 0, len(b.byPack))
	for p := range b.byPack {
		packs = append(packs, p)
	}
	slices.SortFunc(packs, func(x, y chunk.ID) int { return cmp.Compare(len(b.byPack[y]), len(b.byPack[x])) })
	var err error
	for _, p := range packs {
		if err == nil {
			err = rs.sendBatch(ctx, p)
			continue
		}
		for _, job := range b.byPack[p] {
			rs.release(job.dir)
		}
		delete(b.byPack, p)
	}
	b.pending = 0
	return err
}

// restoreBatch restores a batch of one-blob files of one pack: those the
// Overwrite mode keeps are finished first, the blobs of the rest read in
// offset order with as few ranged reads as maxBatchGap and maxCoalesce
// allow, each blob decoded and verified once and written to every file
// that has it. A read that fails is retried blob by blob, so that damage
// to one part of a pack costs only the files stored there.
func (rs *restorer) restoreBatch(ctx context.Context, w *contentWriter, jobs []restoreJob) {
	todo := jobs[:0]
	for _, job := range jobs {
		if ctx.Err() != nil {
			rs.release(job.dir)
			continue
		}
		kept, err := rs.keepExisting(ctx, w, job)
		if kept || err != nil {
			rs.finish(job, kept, err)
			continue
		}
		todo = append(todo, job)
	}
	slices.SortFunc(todo, func(a, b restoreJob) int { return cmp.Compare(a.blob.Offset, b.blob.Offset) })
	for i := 0; i < len(todo); {
		if ctx.Err() != nil {
			for _, job := range todo[i:] {
				rs.release(job.dir)
			}
			return
		}
		// The run [i, j) is read at once.
		start := int64(todo[i].blob.Offset)
		end := start + int64(todo[i].blob.Length)
		j := i + 1
		for ; j < len(todo); j++ {
			off := int64(todo[j].blob.Offset)
			e := max(end, off+int64(todo[j].blob.Length))
			if off > end+maxBatchGap || e-start > maxCoalesce {
				break
			}
			end = e
		}
		run := todo[i:j]
		i = j
		w.raw = slices.Grow(w.raw[:0], int(end-start))[:end-start]
		if err := backend.ReadAt(ctx, rs.r.be, packHandle(run[0].blob.Pack), w.raw, start); err != nil {
			if len(run) == 1 || ctx.Err() != nil {
				for _, job := range run {
					rs.finish(job, false, &BlobError{Type: job.blob.Type, ID: job.blob.ID, Pack: job.blob.Pack, Err: err})
				}
				continue
			}
			for _, job := range run {
				rs.retryBatched(ctx, w, job)
			}
			continue
		}
		for k := 0; k < len(run); {
			pb := run[k].blob
			o := int64(pb.Offset) - start
			var err error
			w.plain, err = rs.r.openBlob(w.raw[o:o+int64(pb.Length)], pb, w.plain)
			// Every file of this blob (deduplicated content) is next.
			for ; k < len(run) && run[k].blob.Offset == pb.Offset; k++ {
				if err == nil {
					rs.finish(run[k], false, rs.writeBlobFile(run[k], w.plain))
				} else {
					rs.finish(run[k], false, err)
				}
			}
		}
	}
}

// retryBatched reads and writes the blob of one batched file on its own,
// after the read it was part of failed.
func (rs *restorer) retryBatched(ctx context.Context, w *contentWriter, job restoreJob) {
	pb := job.blob
	w.raw = slices.Grow(w.raw[:0], int(pb.Length))[:pb.Length]
	err := backend.ReadAt(ctx, rs.r.be, packHandle(pb.Pack), w.raw, int64(pb.Offset))
	if err != nil {
		rs.finish(job, false, &BlobError{Type: pb.Type, ID: pb.ID, Pack: pb.Pack, Err: err})
		return
	}
	w.plain, err = rs.r.openBlob(w.raw, pb, w.plain)
	if err == nil {
		err = rs.writeBlobFile(job, w.plain)
	}
	rs.finish(job, false, err)
}

// writeBlobFile writes the file of job, whose whole content is plain (its
// verified blob); a blob of zeros leaves the file one hole.
func (rs *restorer) writeBlobFile(job restoreJob, plain []byte) error {
	return rs.writeFile(job, func(f *os.File) (int64, error) {
		if allZero(plain) {
			rs.zeros.add(job.blob.ID, uint32(len(plain)))
			return int64(len(plain)), f.Truncate(int64(len(plain)))
		}
		m, err := f.WriteAt(plain, 0)
		return int64(m), err
	})
}
