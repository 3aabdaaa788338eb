package limit

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/time/rate"

	"repo/backend"
)

// Limiter paces a stream of bytes. *rate.Limiter satisfies it; tests use
// fakes that count or run on a virtual clock.
type Limiter interface {
	// WaitN blocks until n more bytes may pass, or ctx is done. n is at
	// most Burst.
	WaitN(ctx context.Context, n int) error
	// Burst is the most bytes one WaitN may ask for.
	Burst() int
}

// maxBurst is the burst NewLimiter gives fast limits. Smaller than a
// second's worth keeps the pace even; it must stay above typical read
// sizes (32 KiB for io.Copy) so that reads are not split needlessly.
const maxBurst = 64 << 10

// NewLimiter returns a limiter for bytesPerSec bytes per second (at least
// 1), with a burst of one second's worth, at most 64 KiB.
func NewLimiter(bytesPerSec int) *rate.Limiter {
	bytesPerSec = max(bytesPerSec, 1)
	return rate.NewLimiter(rate.Limit(bytesPerSec), min(bytesPerSec, maxBurst))
}

// Rate is the wrapper that paces uploads and downloads; see the package
// documentation. It is safe for concurrent use if the limiters are.
type Rate struct {
	backend.Backend
	// up paces the bytes Save reads, down the bytes read from Load's
	// reader; nil means no limit.
	up, down Limiter
}

var _ backend.Backend = (*Rate)(nil)

// NewRate returns be wrapped so that uploads are paced by up and downloads
// by down; a nil limiter means no limit in that direction. One limiter may
// be shared by several backends to limit them together.
func NewRate(be backend.Backend, up, down Limiter) *Rate {
	return &Rate{Backend: be, up: up, down: down}
}

// Unwrap returns the wrapped backend (see backend.As).
func (r *Rate) Unwrap() backend.Backend { return r.Backend }

// Save saves h, pacing the reads of rd.
func (r *Rate) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	if r.up == nil || h.Type == backend.LockFile {
		return r.Backend.Save(ctx, h, rd)
	}
	return r.Backend.Save(ctx, h, &rewindReader{pacedReader{ctx, rd, r.up}, rd})
}

// Load loads h, pacing fn's reads.
func (r *Rate) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if r.down == nil || h.Type == backend.LockFile {
		return r.Backend.Load(ctx, h, length, offset, fn)
	}
	return r.Backend.Load(ctx, h, length, offset, func(rd io.Reader) error {
		return fn(&pacedReader{ctx, rd, r.down})
	})
}

// pacedReader waits for lim after every read, for the bytes read.
type pacedReader struct {
	ctx context.Context
	rd  io.Reader
	lim Limiter
}

func (p *pacedReader) Read(buf []byte) (int, error) {
	if b := p.lim.Burst(); len(buf) > b {
		buf = buf[:b]
	}
	n, err := p.rd.Read(buf)
	if n > 0 {
		if werr := p.lim.WaitN(p.ctx, n); werr != nil {
			return 0, p.waitErr(werr)
		}
	}
	return n, err
}

// waitErr turns an error of WaitN into one that wraps the context's error:
// rate.Limiter also fails, without wrapping, when ctx's deadline would
// pass before the wait ends, and then the call cannot finish in time.
func (p *pacedReader) waitErr(err error) error {
	if cerr := p.ctx.Err(); cerr != nil {
		return cerr
	}
	if _, ok := p.ctx.Deadline(); ok {
		return fmt.Errorf("wait for rate limit: %v: %w", err, context.DeadlineExceeded)
	}
	return backend.Permanent(fmt.Errorf("wait for rate limit: %w", err))
}

// rewindReader is a pacedReader over a RewindReader.
type rewindReader struct {
	pacedReader
	rd backend.RewindReader
}

func (r *rewindReader) Rewind() error { return r.rd.Rewind() }
func (r *rewindReader) Length() int64 { return r.rd.Length() }
