package repo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"repo/index"
)

// VerifyStats counts what VerifyRestore read back.
type VerifyStats struct {
	Files  int   `json:"files_verified"`
	Bytes  int64 `json:"bytes_verified"`
	Errors int   `json:"verify_errors"`
}

// VerifyRestore reads back what Restore(ctx, sn, subpath, ...) wrote into
// target and checks every regular file against the snapshot: its size, and
// the id of every blob of its content (so a page or chunk that differs is
// found wherever it is). It reads through os.Root, so it never leaves
// target. Mismatches are reported to onError and counted; the returned
// error is for failures that stop the whole check.
func (r *Repository) VerifyRestore(ctx context.Context, sn *Snapshot, subpath, target string, onError func(path string, err error)) (VerifyStats, error) {
	var st VerifyStats
	node, clean, err := r.FindNode(ctx, sn, subpath)
	if err != nil {
		return st, err
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		return st, fmt.Errorf("open target: %w", err)
	}
	defer root.Close()
	// Restore puts a directory's contents directly into the target, and a
	// single file into it under its name.
	base := clean
	if node.Type != NodeDir {
		base = path.Dir(clean)
	}
	br := bufio.NewReaderSize(nil, 1<<20)
	var buf []byte
	err = r.Walk(ctx, clean, node, func(p string, n *Node) error {
		if n.Type != NodeFile {
			return nil
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
		n2, err := r.verifyFile(ctx, root, filepath.FromSlash(rel), n, br, &buf)
		st.Bytes += n2
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			st.Errors++
			onError(p, err)
			return nil
		}
		st.Files++
		return nil
	})
	return st, err
}

// errVerifyMismatch marks restored content that differs from the snapshot.
var errVerifyMismatch = errors.New("restored content differs from the snapshot")

// verifyFile checks one restored file; it returns the bytes it read.
func (r *Repository) verifyFile(ctx context.Context, root *os.Root, rel string, n *Node, br *bufio.Reader, buf *[]byte) (int64, error) {
	f, err := root.Open(rel)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%w: not a regular file", errVerifyMismatch)
	}
	if uint64(fi.Size()) != n.Size {
		return 0, fmt.Errorf("%w: %d bytes, the snapshot says %d", errVerifyMismatch, fi.Size(), n.Size)
	}
	ids, err := r.FileContent(ctx, n)
	if err != nil {
		return 0, err
	}
	br.Reset(f)
	var read int64
	for i, id := range ids {
		pb, ok, err := r.LookupBlob(index.DataBlob, id)
		if err != nil {
			return read, err
		}
		if !ok {
			return read, &BlobError{Type: index.DataBlob, ID: id, Err: ErrBlobNotIndexed}
		}
		if cap(*buf) < int(pb.RawLength) {
			*buf = make([]byte, pb.RawLength)
		}
		b := (*buf)[:pb.RawLength]
		if _, err := io.ReadFull(br, b); err != nil {
			return read, fmt.Errorf("%w: read blob %d of %d: %v", errVerifyMismatch, i+1, len(ids), err)
		}
		read += int64(len(b))
		if r.hasher.Sum(b) != id {
			return read, fmt.Errorf("%w: bytes %d to %d", errVerifyMismatch, read-int64(len(b)), read)
		}
		if i%64 == 0 && ctx.Err() != nil {
			return read, ctx.Err()
		}
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return read, fmt.Errorf("%w: longer than its content", errVerifyMismatch)
	}
	return read, nil
}
