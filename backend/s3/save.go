package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"repo/backend"
)

// maxStep bounds one Read of the caller's reader, so that a cancelled ctx
// stops a Save after at most this much more data.
const maxStep = 1 << 20

// abortTimeout bounds the clean-up requests that run even when ctx is
// cancelled: aborting a failed multipart upload, removing the probe key.
const abortTimeout = 30 * time.Second

// conflictRetries is how often Save repeats a conditional PUT that the
// server refused with 409 ConditionalRequestConflict (AWS does when two
// conditional writes of one key overlap); the next try then ends in
// success or 412.
const conflictRetries = 3

var errDetached = errors.New("read after the request ended")

// Save stores rd under h: objects up to PartSize in one PUT, larger ones by
// a multipart upload. Both become visible only when complete. With
// Properties().ExclusiveCreate the PUT carries If-None-Match: *; see the
// package documentation for multipart uploads.
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
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := rd.Rewind(); err != nil {
		return err
	}
	size := rd.Length()
	switch {
	case size < 0:
		return backend.Permanent(fmt.Errorf("reader has negative length %d", size))
	case size > b.partSize:
		return b.saveMultipart(ctx, b.key(h), rd, size)
	case size == 0:
		// net/http sends no body at all, so nothing else would notice a
		// reader that yields bytes after announcing none.
		if err := checkEOF(rd, 0); err != nil {
			return err
		}
	}
	var hash string
	if b.signPayload {
		var err error
		if hash, err = hashReader(ctx, rd, size); err != nil {
			return err
		}
	}
	for try := 0; ; try++ {
		err := b.put(ctx, b.key(h), rd, size, hash)
		if try == conflictRetries || errCode(err) != "ConditionalRequestConflict" {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(100<<try) * time.Millisecond):
		}
		if err := rd.Rewind(); err != nil {
			return err
		}
	}
}

// put sends rd in a single PUT. hash is the payload's SHA-256 in hex, or ""
// for an unsigned payload (https).
func (b *Backend) put(ctx context.Context, key string, rd io.Reader, size int64, hash string) error {
	body := newBody(ctx, rd, size)
	var opts minio.PutObjectOptions
	b.setPutOptions(&opts)
	if b.props.ExclusiveCreate {
		opts.SetMatchETagExcept("*")
	}
	_, err := b.core.PutObject(ctx, b.bucket, key, body, size, "", hash, opts)
	if berr := body.detach(); berr != nil {
		// The request failed because of the reader (or ctx), whatever
		// the transport made of it.
		return berr
	}
	return b.classify(ctx, err)
}

// saveMultipart uploads rd in parts of b.partSize, one at a time, and
// aborts the upload on any failure.
func (b *Backend) saveMultipart(ctx context.Context, key string, rd io.Reader, size int64) (err error) {
	if b.props.ExclusiveCreate {
		// Servers that honour If-None-Match on single PUTs may ignore it
		// on CompleteMultipartUpload (gofakes3 does; AWS does not), so
		// check first as well. See the package documentation.
		_, err := b.client.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
		if err == nil {
			return backend.ErrExists
		}
		if err := b.classify(ctx, err); !errors.Is(err, backend.ErrNotExist) {
			return err
		}
	}
	var opts minio.PutObjectOptions
	b.setPutOptions(&opts)
	uploadID, err := b.core.NewMultipartUpload(ctx, b.bucket, key, opts)
	if err != nil {
		return b.classify(ctx, err)
	}
	body := newBody(ctx, rd, size)
	defer func() {
		if berr := body.detach(); berr != nil {
			err = berr
		}
		if err != nil {
			// Also when ctx is cancelled: parts are stored, and billed,
			// until aborted.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
			defer cancel()
			_ = b.core.AbortMultipartUpload(actx, b.bucket, key, uploadID)
		}
	}()

	bufp := b.partBufs.Get().(*[]byte)
	defer b.partBufs.Put(bufp)
	var parts []minio.CompletePart
	for n, left := 1, size; left > 0; n++ {
		part := (*bufp)[:min(b.partSize, left)]
		if _, err := io.ReadFull(body, part); err != nil {
			return err // detach reports the reader's error instead
		}
		left -= int64(len(part))
		p, err := b.core.PutObjectPart(ctx, b.bucket, key, uploadID, n, bytes.NewReader(part), int64(len(part)),
			minio.PutObjectPartOptions{Sha256Hex: b.payloadHash(part), DisableContentSha256: true})
		if err != nil {
			return b.classify(ctx, err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
	}
	var copts minio.PutObjectOptions
	if b.props.ExclusiveCreate {
		copts.SetMatchETagExcept("*")
	}
	if _, err := b.core.CompleteMultipartUpload(ctx, b.bucket, key, uploadID, parts, copts); err != nil {
		return b.classify(ctx, err)
	}
	return nil
}

// setPutOptions sets what every new object gets.
func (b *Backend) setPutOptions(o *minio.PutObjectOptions) {
	o.ContentType = "application/octet-stream"
	o.StorageClass = b.storageClass
	// Never AWS's chunked streaming signature (minio-go's default over
	// http): gofakes3 and s3rver store its chunk headers as data.
	// payloadHash signs the body instead.
	o.DisableContentSha256 = true
}

// payloadHash returns the hex SHA-256 of data over http, where it signs the
// payload, and "" (unsigned payload) over https, where TLS protects it.
func (b *Backend) payloadHash(data []byte) string {
	if !b.signPayload {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// hashReader returns the hex SHA-256 of rd, which must yield exactly size
// bytes, and rewinds it.
func hashReader(ctx context.Context, rd backend.RewindReader, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, newBody(ctx, rd, size)); err != nil {
		return "", err
	}
	if err := rd.Rewind(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkEOF fails unless rd, having yielded want bytes, is at its end.
func checkEOF(rd io.Reader, want int64) error {
	var one [1]byte
	n, err := io.ReadFull(rd, one[:])
	switch {
	case n > 0:
		return fmt.Errorf("reader yields more than the announced %d bytes", want)
	case err != io.EOF:
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// body is what a request sends of the caller's reader: exactly size bytes,
// read in steps of at most maxStep with ctx checked before each.
//
// It holds back the last bytes until rd has proven to end there, so the
// server never receives a complete body from a reader that then fails or
// yields more: it would store the object although Save fails.
//
// net/http may read a request body after the request returned; detach
// ends that, so Save never touches rd after returning.
type body struct {
	ctx  context.Context
	size int64

	mu   sync.Mutex
	rd   io.Reader // nil once detached
	left int64     // bytes still to come
	err  error     // the first failure: rd's, a wrong length, or ctx's
}

func newBody(ctx context.Context, rd io.Reader, size int64) *body {
	return &body{ctx: ctx, size: size, rd: rd, left: size}
}

func (r *body) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.err != nil:
		return 0, r.err
	case r.rd == nil:
		return 0, errDetached
	case r.left == 0:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return 0, err
	}
	p = p[:min(len(p), maxStep)]
	if int64(len(p)) < r.left {
		n, err := r.rd.Read(p)
		r.left -= int64(n)
		switch {
		case err == io.EOF:
			r.err = r.short()
			return 0, r.err
		case err != nil:
			r.err = fmt.Errorf("read: %w", err)
			return 0, r.err
		}
		return n, nil
	}
	// The last step.
	p = p[:r.left]
	n, err := io.ReadFull(r.rd, p)
	r.left -= int64(n)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		r.err = r.short()
		return 0, r.err
	case err != nil:
		r.err = fmt.Errorf("read: %w", err)
		return 0, r.err
	}
	if err := checkEOF(r.rd, r.size); err != nil {
		r.err = err
		return 0, err
	}
	return n, nil
}

func (r *body) short() error {
	return fmt.Errorf("reader yielded %d bytes, want %d", r.size-r.left, r.size)
}

// detach stops further reads of rd and returns the error that made a
// read fail, if any.
func (r *body) detach() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rd = nil
	return r.err
}
