package s3

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"repo/backend"
)

var _ backend.TempCleaner = (*Backend)(nil)

// RemoveTemp aborts the incomplete multipart uploads that Saves of killed
// processes left under the repository's keys: the server keeps (and
// bills) their parts until they are aborted, and no listing of objects
// shows them. It aborts an upload when it was initiated more than
// olderThan ago and no part of it was uploaded since then. n counts the
// aborted uploads and size the bytes of their parts as the server lists
// them.
//
// Only keys of the repository's layout are considered (PREFIX/config,
// PREFIX/<type>/...): an upload of another program that shares the bucket
// or the prefix is not ours to abort. Uploads that end meanwhile (their
// Save completed or aborted them) are skipped.
//
// Caveats:
//   - The times come from the server's clock and the cutoff from ours; they
//     may differ by seconds or minutes, not by the hour or more that
//     callers (prune) pass as olderThan.
//   - A multipart Save sends its parts one after the other, and a part
//     counts only once it is stored: a Save whose single part takes longer
//     than olderThan to send looks abandoned. At 32 MiB per part and an
//     hour, that is below 10 KB/s.
//   - The size of an upload whose parts the server does not list (or
//     refuses to) counts as 0.
//   - A server that cannot list multipart uploads at all (NotImplemented,
//     like s3rver) has nothing RemoveTemp can find: it returns 0, 0 and no
//     error, so that prune still works there. Any other failure, denied
//     access included, is an error.
func (b *Backend) RemoveTemp(ctx context.Context, olderThan time.Duration) (n int, size int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("remove incomplete uploads: %w", err)
	}
	cutoff := time.Now().Add(-olderThan)
	uploads, err := b.oldUploads(ctx, cutoff)
	if err != nil {
		if errCode(err) == "NotImplemented" {
			return 0, 0, nil
		}
		return 0, 0, fmt.Errorf("remove incomplete uploads: list: %w", b.classify(ctx, err))
	}
	for _, u := range uploads {
		if err := ctx.Err(); err != nil {
			return n, size, fmt.Errorf("remove incomplete uploads: %w", err)
		}
		parts, gone, fresh := b.uploadParts(ctx, u, cutoff)
		if gone || fresh {
			continue
		}
		err := b.core.AbortMultipartUpload(ctx, b.bucket, u.Key, u.UploadID)
		if errCode(err) == "NoSuchUpload" {
			continue // completed or aborted since the listing
		}
		if err != nil {
			return n, size, fmt.Errorf("remove incomplete uploads: abort upload of %s: %w", u.Key, b.classify(ctx, err))
		}
		n++
		size += parts
	}
	return n, size, nil
}

// oldUploads lists the multipart uploads of the repository's keys
// initiated before cutoff. Its errors are minio-go's, unclassified.
func (b *Backend) oldUploads(ctx context.Context, cutoff time.Time) ([]minio.ObjectMultipartInfo, error) {
	var (
		old                 []minio.ObjectMultipartInfo
		keyMarker, idMarker string
	)
	// The whole listing comes first, the aborts after it: whether a
	// server's markers still work once the upload they name is gone is
	// not something to depend on.
	for {
		res, err := b.core.ListMultipartUploads(ctx, b.bucket, b.prefix, keyMarker, idMarker, "", 0)
		if errCode(err) == "NoSuchUpload" {
			// gofakes3's answer for a bucket that never had an upload.
			return old, nil
		}
		if err != nil {
			return nil, err
		}
		for _, u := range res.Uploads {
			// A server that does not say when an upload began gives no
			// way to tell an abandoned one from a running one.
			if b.ownKey(u.Key) && !u.Initiated.IsZero() && u.Initiated.Before(cutoff) {
				old = append(old, u)
			}
		}
		if !res.IsTruncated {
			return old, nil
		}
		if res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker {
			return nil, fmt.Errorf("the server repeats the page after key %q, upload %q", keyMarker, idMarker)
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// ownKey reports whether key belongs to the repository's layout: the
// config or a key in one of the type directories.
func (b *Backend) ownKey(key string) bool {
	rel, ok := strings.CutPrefix(key, b.prefix)
	if !ok {
		return false
	}
	if rel == backend.ConfigFile.String() {
		return true
	}
	dir, _, ok := strings.Cut(rel, "/")
	if !ok {
		return false
	}
	for t := backend.KeyFile; t.Valid() == nil; t++ {
		if dir == t.String() {
			return true
		}
	}
	return false
}

// uploadParts lists the parts of u and returns their total size, whether
// the upload is gone, and whether a part was stored at or after cutoff (a
// Save still sending). Listing is best effort: a server that cannot list
// parts gives size 0, and u counts as old by its initiation alone.
func (b *Backend) uploadParts(ctx context.Context, u minio.ObjectMultipartInfo, cutoff time.Time) (size int64, gone, fresh bool) {
	marker := 0
	for {
		res, err := b.core.ListObjectParts(ctx, b.bucket, u.Key, u.UploadID, marker, 0)
		if errCode(err) == "NoSuchUpload" {
			return 0, true, false
		}
		if err != nil {
			return 0, false, false
		}
		for _, p := range res.ObjectParts {
			size += p.Size
			if !p.LastModified.Before(cutoff) {
				return size, false, true
			}
		}
		if !res.IsTruncated || res.NextPartNumberMarker <= marker {
			return size, false, false
		}
		marker = res.NextPartNumberMarker
	}
}
