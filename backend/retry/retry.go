package retry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"repo/backend"
)

// Options tune the retries. The zero value gives the defaults.
type Options struct {
	// MaxAttempts is how often a call is tried in all; zero means 10, and
	// 1 turns retrying off.
	MaxAttempts int
	// MaxElapsed is the time budget of one call: no retry starts whose
	// wait would end later than this after the first attempt started;
	// zero means one minute.
	MaxElapsed time.Duration
	// InitialDelay is the wait before the first retry, doubled for every
	// further one; zero means 100ms. Each wait is randomised to between
	// half and one and a half times the nominal delay, so that clients
	// that failed together do not retry together.
	InitialDelay time.Duration
	// MaxDelay caps the wait between two attempts; zero means 10s.
	MaxDelay time.Duration
	// OnRetry, when set, is called before each wait with the operation
	// ("save", "load", "stat", "list", "remove"), the object (for list,
	// only its Type is set), the error of the failed attempt and the wait.
	// It is called from the goroutines doing the calls, so it must be
	// safe for concurrent use, and it should return quickly.
	OnRetry func(op string, h backend.Handle, err error, wait time.Duration)
}

// Defaults used for zero Options fields.
const (
	DefaultMaxAttempts  = 10
	DefaultMaxElapsed   = time.Minute
	DefaultInitialDelay = 100 * time.Millisecond
	DefaultMaxDelay     = 10 * time.Second
)

func (o Options) withDefaults() Options {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = DefaultMaxElapsed
	}
	if o.InitialDelay <= 0 {
		o.InitialDelay = DefaultInitialDelay
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	o.InitialDelay = min(o.InitialDelay, o.MaxDelay)
	return o
}

// Backend is the retrying wrapper. It is safe for concurrent use if the
// wrapped backend is.
type Backend struct {
	backend.Backend
	opts Options
}

var _ backend.Backend = (*Backend)(nil)

// New returns be wrapped so that transient errors are retried as o says.
func New(be backend.Backend, o Options) *Backend {
	return &Backend{Backend: be, opts: o.withDefaults()}
}

// Unwrap returns the wrapped backend (see backend.As).
func (b *Backend) Unwrap() backend.Backend { return b.Backend }

// do calls try until it succeeds, fails in a way try says is final, ctx is
// done, or the attempts or the time budget are used up; it returns the
// last attempt's error. try reports whether its error may be retried.
func (b *Backend) do(ctx context.Context, op string, h backend.Handle, try func() (err error, retriable bool)) error {
	start := time.Now()
	delay := b.opts.InitialDelay
	for attempt := 1; ; attempt++ {
		err, retriable := try()
		if err == nil || !retriable {
			return err
		}
		if ctx.Err() != nil {
			// The attempt may have failed for another reason first; what
			// matters to the caller now is that it cancelled.
			return ctx.Err()
		}
		if attempt >= b.opts.MaxAttempts {
			return err
		}
		// Between half and one and a half times delay.
		wait := min(delay/2+rand.N(delay), b.opts.MaxDelay)
		if time.Since(start)+wait > b.opts.MaxElapsed {
			return err
		}
		// A wait that would outlast the caller's deadline only turns the
		// real error into "deadline exceeded": give up with the real one.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err
		}
		if b.opts.OnRetry != nil {
			b.opts.OnRetry(op, h, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, b.opts.MaxDelay)
	}
}

// transient reports whether err may go away by retrying.
func transient(err error) bool { return !backend.IsPermanent(err) }

// Save saves h, retrying transient failures; the wrapped backend rewinds rd
// for every attempt.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	tr := &trackedReader{rd: rd}
	failedBefore := false
	return b.do(ctx, "save", h, func() (error, bool) {
		tr.reset()
		err := b.Backend.Save(ctx, h, tr)
		switch {
		case err == nil:
			return nil, false
		case tr.misbehaved():
			// The caller's reader is at fault; another attempt would read
			// the same.
			return err, false
		case failedBefore && errors.Is(err, backend.ErrExists) && b.sameContent(ctx, h, rd):
			// An earlier attempt stored the object but its reply was lost.
			return nil, false
		}
		if transient(err) {
			failedBefore = true
			return err, true
		}
		return err, false
	})
}

// sameContent reports whether h holds exactly the bytes of rd. It loads h
// with retries, since the connection that lost a reply may still be bad.
// Any error counts as "no".
func (b *Backend) sameContent(ctx context.Context, h backend.Handle, rd backend.RewindReader) bool {
	same := false
	err := b.Load(ctx, h, 0, 0, func(stored io.Reader) error {
		same = false // fn may run more than once
		if err := rd.Rewind(); err != nil {
			return err
		}
		var err error
		same, err = equalReaders(stored, rd)
		return err
	})
	return err == nil && same
}

// equalReaders reports whether a and b yield the same bytes.
func equalReaders(a, b io.Reader) (bool, error) {
	const chunk = 32 << 10
	bufA, bufB := make([]byte, chunk), make([]byte, chunk)
	for {
		na, errA := io.ReadFull(a, bufA)
		nb, errB := io.ReadFull(b, bufB)
		endA := errA == io.EOF || errA == io.ErrUnexpectedEOF
		endB := errB == io.EOF || errB == io.ErrUnexpectedEOF
		if errA != nil && !endA {
			return false, errA
		}
		if errB != nil && !endB {
			return false, errB
		}
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if endA || endB {
			return endA && endB, nil
		}
	}
}

// trackedReader watches the caller's RewindReader during one attempt of a
// Save, to tell the caller's faults from the backend's.
type trackedReader struct {
	rd backend.RewindReader
	// n is the number of bytes read since the last Rewind; eof is true
	// once rd reported io.EOF since then.
	n   int64
	eof bool
	// err is the first error of rd other than io.EOF in this attempt.
	err error
}

func (t *trackedReader) reset() { t.n, t.eof, t.err = 0, false, nil }

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.rd.Read(p)
	t.n += int64(n)
	switch {
	case err == io.EOF:
		t.eof = true
	case err != nil && t.err == nil:
		t.err = err
	}
	return n, err
}

func (t *trackedReader) Rewind() error {
	t.n, t.eof = 0, false
	err := t.rd.Rewind()
	if err != nil && t.err == nil {
		t.err = err
	}
	return err
}

func (t *trackedReader) Length() int64 { return t.rd.Length() }

// misbehaved reports whether rd failed, or yielded more or fewer bytes than
// its Length, in this attempt.
func (t *trackedReader) misbehaved() bool {
	return t.err != nil || t.n > t.rd.Length() || (t.eof && t.n < t.rd.Length())
}

// Load loads h, retrying transient failures of the backend, also those
// that reach fn as read errors; fn's own errors end the call unchanged.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	return b.do(ctx, "load", h, func() (error, bool) {
		var fnFailed bool
		var readErr error
		err := b.Backend.Load(ctx, h, length, offset, func(rd io.Reader) error {
			er := &errReader{rd: rd}
			err := fn(er)
			// The last call of fn decides: fn may run more than once.
			fnFailed, readErr = err != nil, er.err
			return err
		})
		switch {
		case err == nil:
			return nil, false
		case fnFailed:
			// Unchanged, as the contract says; retried only if the
			// backend's reader failed fn, transiently.
			return err, readErr != nil && transient(readErr)
		}
		return err, transient(err)
	})
}

// errReader remembers the first error other than io.EOF that rd returned.
type errReader struct {
	rd  io.Reader
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	n, err := r.rd.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// Stat stats h, retrying transient failures.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	var fi backend.FileInfo
	err := b.do(ctx, "stat", h, func() (error, bool) {
		var err error
		fi, err = b.Backend.Stat(ctx, h)
		return err, err != nil && transient(err)
	})
	if err != nil {
		return backend.FileInfo{}, err
	}
	return fi, nil
}

// List lists t, retrying transient failures; fn is called once per object
// even when the listing is retried, and fn's errors end it unchanged.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	// seen holds the names fn was called for, so that a retried listing
	// skips them.
	seen := make(map[string]struct{})
	return b.do(ctx, "list", backend.Handle{Type: t}, func() (error, bool) {
		fnFailed := false
		err := b.Backend.List(ctx, t, func(fi backend.FileInfo) error {
			if _, ok := seen[fi.Name]; ok {
				return nil
			}
			seen[fi.Name] = struct{}{}
			if err := fn(fi); err != nil {
				fnFailed = true
				return err
			}
			return nil
		})
		return err, err != nil && !fnFailed && transient(err)
	})
}

// Remove removes h, retrying transient failures.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	failedBefore := false
	return b.do(ctx, "remove", h, func() (error, bool) {
		err := b.Backend.Remove(ctx, h)
		switch {
		case err == nil:
			return nil, false
		case failedBefore && errors.Is(err, backend.ErrNotExist):
			// Most likely an earlier attempt removed it and its reply
			// was lost; either way, the object is gone.
			return nil, false
		case transient(err):
			failedBefore = true
			return err, true
		}
		return err, false
	})
}
