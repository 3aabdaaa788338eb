package repo

import (
	"context"
	"errors"
	"fmt"

	"repo/backend"
	"repo/chunk"
	"repo/index"
)

// maxStoredBlob bounds the stored size of one blob read from a pack.
const maxStoredBlob = 256 << 20

// ErrBlobNotIndexed: no index file lists the blob (lost, or never stored).
var ErrBlobNotIndexed = errors.New("blob not in index")

// BlobError says which blob of which pack could not be read.
type BlobError struct {
	Type index.BlobType
	ID   chunk.ID
	Pack chunk.ID // null when the blob is not indexed
	Err  error
}

func (e *BlobError) Error() string {
	if e.Pack.IsNull() {
		return fmt.Sprintf("%s blob %s: %v", e.Type, e.ID.Short(), e.Err)
	}
	return fmt.Sprintf("%s blob %s in pack %s: %v", e.Type, e.ID.Short(), e.Pack.Short(), e.Err)
}

func (e *BlobError) Unwrap() error { return e.Err }

// packHandle names the pack file with id.
func packHandle(id chunk.ID) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: id.String()}
}

// LookupBlob returns where a blob is stored: first among packs this process
// uploaded but has not indexed yet, then in the index cache.
func (r *Repository) LookupBlob(t index.BlobType, id chunk.ID) (index.PackedBlob, bool, error) {
	r.pendingMu.RLock()
	pb, ok := r.pending[blobKey{t, id}]
	r.pendingMu.RUnlock()
	if ok {
		return pb, true, nil
	}
	return r.cache.Lookup(t, id)
}

// LoadBlob reads, opens, decompresses and verifies one blob, appending its
// plaintext to buf[:0]. A blob that does not hash to its id is an error,
// never returned as data.
func (r *Repository) LoadBlob(ctx context.Context, t index.BlobType, id chunk.ID, buf []byte) ([]byte, error) {
	pb, ok, err := r.LookupBlob(t, id)
	if err != nil {
		return nil, &BlobError{Type: t, ID: id, Err: err}
	}
	if !ok {
		return nil, &BlobError{Type: t, ID: id, Err: ErrBlobNotIndexed}
	}
	return r.LoadBlobAt(ctx, pb, buf)
}

// LoadBlobAt reads the blob pb from its pack and verifies it, appending its
// plaintext to buf[:0].
func (r *Repository) LoadBlobAt(ctx context.Context, pb index.PackedBlob, buf []byte) ([]byte, error) {
	// No blob this code writes is larger (chunks are at most 64 MiB, trees
	// are far smaller); a larger entry is damage and must not make us
	// allocate gigabytes.
	if pb.Length > maxStoredBlob {
		return nil, &BlobError{Type: pb.Type, ID: pb.ID, Pack: pb.Pack,
			Err: fmt.Errorf("index entry claims %d bytes: damaged", pb.Length)}
	}
	stored := make([]byte, pb.Length)
	if err := backend.ReadAt(ctx, r.be, packHandle(pb.Pack), stored, int64(pb.Offset)); err != nil {
		return nil, &BlobError{Type: pb.Type, ID: pb.ID, Pack: pb.Pack, Err: err}
	}
	return r.openBlob(stored, pb, buf)
}

// openBlob decodes a stored blob read from its pack and checks its id.
func (r *Repository) openBlob(stored []byte, pb index.PackedBlob, buf []byte) ([]byte, error) {
	plain, err := r.codec.Decode(buf[:0], stored, pb.Blob)
	if err != nil {
		return nil, &BlobError{Type: pb.Type, ID: pb.ID, Pack: pb.Pack, Err: err}
	}
	if got := r.hasher.Sum(plain); got != pb.ID {
		return nil, &BlobError{Type: pb.Type, ID: pb.ID, Pack: pb.Pack,
			Err: fmt.Errorf("content hashes to %s: the pack is damaged", got.Short())}
	}
	return plain, nil
}

// HashBlob returns the blob id of data in this repository.
func (r *Repository) HashBlob(data []byte) chunk.ID { return r.hasher.Sum(data) }
