package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// RewindReader is what Save reads: a reader of known length that can start
// over, so that a retried Save sends the same bytes again.
type RewindReader interface {
	io.Reader
	// Rewind goes back to the first byte.
	Rewind() error
	// Length is the total number of bytes the reader yields.
	Length() int64
}

// byteReader is the RewindReader over a byte slice. pos is the index of the
// next byte to return; 0 <= pos <= len(buf).
type byteReader struct {
	buf []byte
	pos int
}

// NewByteReader returns a RewindReader over buf (not copied).
//
// The caller must not modify buf until Save has returned: a retried Save
// reads it again.
func NewByteReader(buf []byte) RewindReader { return &byteReader{buf: buf} }

func (r *byteReader) Read(p []byte) (int, error) {
	if r.pos >= len(r.buf) {
		return 0, io.EOF
	}
	n := copy(p, r.buf[r.pos:])
	r.pos += n
	return n, nil
}

func (r *byteReader) Rewind() error { r.pos = 0; return nil }

func (r *byteReader) Length() int64 { return int64(len(r.buf)) }

// fileReader is the RewindReader over the first length bytes of a file.
// left is how many bytes Read may still return; rewound is false until the
// first Rewind, which Read does itself so that a fresh reader starts at 0
// whatever the file's current offset is.
type fileReader struct {
	f       io.ReadSeeker
	length  int64
	left    int64
	rewound bool
}

// NewFileReader returns a RewindReader over the first length bytes of f,
// starting at offset 0.
//
// It seeks f to 0 before the first read and on every Rewind, so f must not
// be read by anyone else meanwhile. A file shorter than length yields fewer
// bytes, which Save reports as an error.
func NewFileReader(f io.ReadSeeker, length int64) RewindReader {
	return &fileReader{f: f, length: length}
}

func (r *fileReader) Read(p []byte) (int, error) {
	if !r.rewound {
		if err := r.Rewind(); err != nil {
			return 0, err
		}
	}
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.Read(p)
	r.left -= int64(n)
	return n, err
}

func (r *fileReader) Rewind() error {
	if _, err := r.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind file: %w", err)
	}
	r.left = r.length
	r.rewound = true
	return nil
}

func (r *fileReader) Length() int64 { return r.length }

// LoadAll reads the whole object h into buf (grown as needed) and returns it.
//
// buf's contents are overwritten from index 0; pass the previous result to
// reuse its memory across calls. Errors of the backend are returned as the
// backend gave them (they already name h).
func LoadAll(ctx context.Context, be Backend, h Handle, buf []byte) ([]byte, error) {
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		// fn may run more than once: always start over at 0.
		var err error
		buf, err = readAll(rd, buf[:0])
		if err != nil {
			return fmt.Errorf("read %v: %w", h, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// readAll appends everything rd yields to buf, like io.ReadAll but reusing
// buf's capacity.
func readAll(rd io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // let append pick the growth
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// ReadAt fills buf with the bytes of h at offset; a short object is an error
// that wraps io.ErrUnexpectedEOF and names h.
//
// An empty buf reads nothing and returns nil without asking the backend
// (Load's length 0 would mean "to the end").
func ReadAt(ctx context.Context, be Backend, h Handle, buf []byte, offset int64) error {
	if len(buf) == 0 {
		return nil
	}
	return be.Load(ctx, h, len(buf), offset, func(rd io.Reader) error {
		n, err := io.ReadFull(rd, buf)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("read %v at %d: got %d of %d bytes: %w", h, offset, n, len(buf), io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("read %v at %d: %w", h, offset, err)
		}
		return nil
	})
}

// ContextReader returns a reader that fails with ctx's error once ctx is
// cancelled, so that a long read loop over rd (a Load, a stream being
// backed up) stops promptly.
func ContextReader(ctx context.Context, rd io.Reader) io.Reader {
	return &ctxReader{ctx: ctx, rd: rd}
}

type ctxReader struct {
	ctx context.Context
	rd  io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.rd.Read(p)
}
