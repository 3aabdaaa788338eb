package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/faulty"
	"repo/backend/mem"
	"repo/backend/retry"
)

// fast are options for tests: many quick attempts.
var fast = retry.Options{MaxAttempts: 30, InitialDelay: time.Microsecond, MaxDelay: time.Millisecond}

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return retry.New(mem.New(), fast) })
}

// TestFlaky runs the conformance suite against a backend that fails every
// third call of each kind, in the ways retry must hide: before doing
// anything, midway through the data, and (Save) after storing the object.
func TestFlaky(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		be := faulty.New(mem.New())
		be.Inject(faulty.Fault{Op: faulty.Save, Mode: faulty.FailAfter, Every: 5})
		be.Inject(faulty.Fault{Op: faulty.Save | faulty.Load, Mode: faulty.FailMidway, Bytes: 1000, Every: 4})
		be.Inject(faulty.Fault{Op: faulty.List, Mode: faulty.FailMidway, Bytes: 1, Every: 3})
		// Not Remove: a Remove retried after a failure cannot tell "I
		// removed it" from "it was not there", and the suite checks the
		// latter.
		be.Inject(faulty.Fault{Op: faulty.Save | faulty.Load | faulty.Stat | faulty.List, Every: 3})
		return retry.New(be, fast)
	})
}

var (
	pack = backend.Handle{Type: backend.PackFile, Name: "aa01"}
	data = bytes.Repeat([]byte("0123456789abcdef"), 1000)
)

// newBackend returns a faulty backend over mem holding pack, and the mem
// backend.
func newBackend(t *testing.T) (*faulty.Backend, *mem.Backend) {
	t.Helper()
	m := mem.New()
	if err := m.Save(context.Background(), pack, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	return faulty.New(m), m
}

// retries records the OnRetry calls.
type retries struct {
	mu    sync.Mutex
	calls []string
	waits []time.Duration
}

func (r *retries) onRetry(op string, h backend.Handle, err error, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s %v: %v", op, h, err))
	r.waits = append(r.waits, wait)
}

// ops calls each operation once on h (List on h's type), the way the
// table tests need: load reads everything, save saves data.
var ops = []struct {
	op   faulty.Op
	call func(ctx context.Context, be backend.Backend, h backend.Handle) error
}{
	{faulty.Save, func(ctx context.Context, be backend.Backend, h backend.Handle) error {
		return be.Save(ctx, h, backend.NewByteReader(data))
	}},
	{faulty.Load, func(ctx context.Context, be backend.Backend, h backend.Handle) error {
		got, err := backend.LoadAll(ctx, be, h, nil)
		if err == nil && !bytes.Equal(got, data) {
			return errors.New("loaded wrong content")
		}
		return err
	}},
	{faulty.Stat, func(ctx context.Context, be backend.Backend, h backend.Handle) error {
		_, err := be.Stat(ctx, h)
		return err
	}},
	{faulty.List, func(ctx context.Context, be backend.Backend, h backend.Handle) error {
		n := 0
		err := be.List(ctx, h.Type, func(backend.FileInfo) error { n++; return nil })
		if err == nil && n != 1 {
			return fmt.Errorf("listed %d objects, want 1", n)
		}
		return err
	}},
	{faulty.Remove, func(ctx context.Context, be backend.Backend, h backend.Handle) error {
		return be.Remove(ctx, h)
	}},
}

// handleFor returns the handle op works on: a new one for Save, pack for
// the others.
func handleFor(op faulty.Op) backend.Handle {
	if op == faulty.Save {
		return backend.Handle{Type: backend.PackFile, Name: "bb02"}
	}
	return pack
}

func TestTransientThenSuccess(t *testing.T) {
	for _, o := range ops {
		t.Run(o.op.String(), func(t *testing.T) {
			be, _ := newBackend(t)
			be.Inject(faulty.Fault{Op: o.op, Times: 3})
			var r retries
			opts := retry.Options{InitialDelay: 100 * time.Microsecond, MaxDelay: 300 * time.Microsecond, OnRetry: r.onRetry}
			h := handleFor(o.op)
			if err := o.call(context.Background(), retry.New(be, opts), h); err != nil {
				t.Fatalf("%v: %v", o.op, err)
			}
			if n := be.Calls(o.op); n != 4 {
				t.Errorf("%v called %d times, want 4", o.op, n)
			}
			if len(r.calls) != 3 {
				t.Fatalf("OnRetry called %d times, want 3: %q", len(r.calls), r.calls)
			}
			wantH := h
			if o.op == faulty.List {
				wantH = backend.Handle{Type: h.Type}
			}
			want := fmt.Sprintf("%v %v: %v %v: %v", o.op, wantH, o.op, wantH, faulty.ErrInjected)
			if o.op == faulty.List {
				want = fmt.Sprintf("list %v: list %v: %v", wantH, h.Type, faulty.ErrInjected)
			}
			if r.calls[0] != want {
				t.Errorf("OnRetry got %q, want %q", r.calls[0], want)
			}
			// Nominal delays 100µs, 200µs, 300µs (capped), each randomised
			// to between half and one and a half of it, and capped again.
			for i, nominal := range []time.Duration{100, 200, 300} {
				nominal *= time.Microsecond
				if w := r.waits[i]; w < nominal/2 || w > min(nominal*3/2, 300*time.Microsecond) {
					t.Errorf("wait %d is %v, want about %v", i, w, nominal)
				}
			}
		})
	}
}

func TestGiveUp(t *testing.T) {
	for _, o := range ops {
		t.Run(o.op.String(), func(t *testing.T) {
			be, _ := newBackend(t)
			be.Inject(faulty.Fault{Op: o.op})
			opts := fast
			opts.MaxAttempts = 4
			err := o.call(context.Background(), retry.New(be, opts), handleFor(o.op))
			if !errors.Is(err, faulty.ErrInjected) {
				t.Errorf("%v: got %v, want ErrInjected", o.op, err)
			}
			if n := be.Calls(o.op); n != 4 {
				t.Errorf("%v called %d times, want 4", o.op, n)
			}
		})
	}
}

func TestTimeBudget(t *testing.T) {
	be, _ := newBackend(t)
	be.Inject(faulty.Fault{Op: faulty.Stat})
	var r retries
	// The first wait alone, at least 50ms, would overrun the budget.
	opts := retry.Options{MaxElapsed: time.Nanosecond, InitialDelay: 100 * time.Millisecond, OnRetry: r.onRetry}
	if _, err := retry.New(be, opts).Stat(context.Background(), pack); !errors.Is(err, faulty.ErrInjected) {
		t.Errorf("stat: got %v, want ErrInjected", err)
	}
	if n := be.Calls(faulty.Stat); n != 1 || len(r.calls) != 0 {
		t.Errorf("stat called %d times, OnRetry %d times; want 1 and 0", n, len(r.calls))
	}
}

func TestPermanentNotRetried(t *testing.T) {
	errX := errors.New("access denied")
	for _, o := range ops {
		t.Run(o.op.String(), func(t *testing.T) {
			be, _ := newBackend(t)
			be.Inject(faulty.Fault{Op: o.op, Err: backend.Permanent(errX)})
			err := o.call(context.Background(), retry.New(be, fast), handleFor(o.op))
			if !errors.Is(err, errX) {
				t.Errorf("%v: got %v, want %v", o.op, err, errX)
			}
			if n := be.Calls(o.op); n != 1 {
				t.Errorf("%v called %d times, want 1", o.op, n)
			}
		})
	}

	be, _ := newBackend(t)
	missing := backend.Handle{Type: backend.PackFile, Name: "cc03"}
	if _, err := backend.LoadAll(context.Background(), retry.New(be, fast), missing, nil); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("load missing: got %v, want ErrNotExist", err)
	}
	if n := be.Calls(faulty.Load); n != 1 {
		t.Errorf("load of a missing object called %d times, want 1", n)
	}
}

// TestCancelDuringBackoff cancels while a retry waits an hour.
func TestCancelDuringBackoff(t *testing.T) {
	for _, o := range ops {
		t.Run(o.op.String(), func(t *testing.T) {
			be, _ := newBackend(t)
			be.Inject(faulty.Fault{Op: o.op})
			waiting := make(chan struct{}, 1)
			opts := retry.Options{InitialDelay: time.Hour, MaxDelay: time.Hour, MaxElapsed: 10 * time.Hour,
				OnRetry: func(string, backend.Handle, error, time.Duration) { waiting <- struct{}{} }}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- o.call(ctx, retry.New(be, opts), handleFor(o.op)) }()
			<-waiting
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("%v: got %v, want context.Canceled", o.op, err)
				}
			case <-time.After(time.Minute):
				t.Fatalf("%v: still waiting a minute after cancel", o.op)
			}
			if n := be.Calls(o.op); n != 1 {
				t.Errorf("%v called %d times, want 1", o.op, n)
			}
		})
	}
}

// TestCancelledAttempt: an attempt that fails transiently after the
// context was cancelled ends the call with the context's error.
func TestCancelledAttempt(t *testing.T) {
	be, _ := newBackend(t)
	be.Inject(faulty.Fault{Op: faulty.Stat})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := retry.New(be, fast).Stat(ctx, pack); !errors.Is(err, context.Canceled) {
		t.Errorf("stat: got %v, want context.Canceled", err)
	}
	if n := be.Calls(faulty.Stat); n != 1 {
		t.Errorf("stat called %d times, want 1", n)
	}
}

func TestLoadFnErrorNotRetried(t *testing.T) {
	be, _ := newBackend(t)
	errFn := errors.New("fn failed")
	calls := 0
	err := retry.New(be, fast).Load(context.Background(), pack, 0, 0, func(rd io.Reader) error {
		calls++
		if _, err := io.ReadFull(rd, make([]byte, 10)); err != nil {
			return err
		}
		return errFn
	})
	if err != errFn {
		t.Errorf("load: got %v, want fn's error unchanged", err)
	}
	if calls != 1 || be.Calls(faulty.Load) != 1 {
		t.Errorf("fn called %d times, Load %d times; want 1 and 1", calls, be.Calls(faulty.Load))
	}
}

// TestLoadReadErrorRetried: a download that breaks reaches fn as a read
// error; the load is retried and fn sees the whole object in the end.
func TestLoadReadErrorRetried(t *testing.T) {
	be, _ := newBackend(t)
	be.Inject(faulty.Fault{Op: faulty.Load, Mode: faulty.FailMidway, Bytes: 1000, Times: 2})
	calls := 0
	var got []byte
	err := retry.New(be, fast).Load(context.Background(), pack, 0, 0, func(rd io.Reader) error {
		calls++
		var err error
		got, err = io.ReadAll(rd)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("loaded %d bytes, want %d", len(got), len(data))
	}
	if calls != 3 {
		t.Errorf("fn called %d times, want 3", calls)
	}
}

// TestLoadGiveUpReturnsFnError: when retries of broken downloads are used
// up, Load returns fn's last error unchanged.
func TestLoadGiveUpReturnsFnError(t *testing.T) {
	be, _ := newBackend(t)
	be.Inject(faulty.Fault{Op: faulty.Load, Mode: faulty.FailMidway, Bytes: 10})
	opts := fast
	opts.MaxAttempts = 3
	var last error
	err := retry.New(be, opts).Load(context.Background(), pack, 0, 0, func(rd io.Reader) error {
		_, err := io.ReadAll(rd)
		last = fmt.Errorf("mine: %w", err)
		return last
	})
	if err != last {
		t.Errorf("load: got %v, want fn's last error %v unchanged", err, last)
	}
	if n := be.Calls(faulty.Load); n != 3 {
		t.Errorf("load called %d times, want 3", n)
	}
}

// TestLoadPermanentReadError: a read error that is permanent (here, the
// caller's cancellation) is not retried.
func TestLoadPermanentReadError(t *testing.T) {
	be, _ := newBackend(t)
	be.Inject(faulty.Fault{Op: faulty.Load, Mode: faulty.FailMidway, Bytes: 10, Err: backend.Permanent(errors.New("gone"))})
	err := retry.New(be, fast).Load(context.Background(), pack, 0, 0, func(rd io.Reader) error {
		_, err := io.ReadAll(rd)
		return err
	})
	if err == nil || be.Calls(faulty.Load) != 1 {
		t.Errorf("load: got %v after %d calls, want an error after 1", err, be.Calls(faulty.Load))
	}
}

// TestSaveResends checks that a Save failing midway is retried with the
// whole content, from a byte slice and from a file.
func TestSaveResends(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	readers := map[string]backend.RewindReader{
		"bytes": backend.NewByteReader(data),
		"file":  backend.NewFileReader(f, int64(len(data))),
	}
	for name, rd := range readers {
		t.Run(name, func(t *testing.T) {
			be, m := newBackend(t)
			be.Inject(faulty.Fault{Op: faulty.Save, Mode: faulty.FailMidway, Bytes: 5000, Times: 2})
			h := backend.Handle{Type: backend.PackFile, Name: "bb02"}
			if err := retry.New(be, fast).Save(context.Background(), h, rd); err != nil {
				t.Fatalf("save: %v", err)
			}
			if n := be.Calls(faulty.Save); n != 3 {
				t.Errorf("save called %d times, want 3", n)
			}
			got, err := backend.LoadAll(context.Background(), m, h, nil)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("stored %d bytes (%v), want the %d saved", len(got), err, len(data))
			}
		})
	}
}

// badReader fails after n bytes.
type badReader struct {
	backend.RewindReader
	n, pos int
}

var errReader = errors.New("disk read error")

func (r *badReader) Read(p []byte) (int, error) {
	if r.pos >= r.n {
		return 0, errReader
	}
	p = p[:min(len(p), r.n-r.pos)]
	n, err := r.RewindReader.Read(p)
	r.pos += n
	return n, err
}

func (r *badReader) Rewind() error { r.pos = 0; return r.RewindReader.Rewind() }

// lengthReader reports a wrong length.
type lengthReader struct {
	backend.RewindReader
	length int64
}

func (r *lengthReader) Length() int64 { return r.length }

func TestSaveReaderFaultNotRetried(t *testing.T) {
	readers := map[string]backend.RewindReader{
		"read error":   &badReader{RewindReader: backend.NewByteReader(data), n: 100},
		"shorter":      &lengthReader{backend.NewByteReader(data), int64(len(data)) + 1},
		"longer":       &lengthReader{backend.NewByteReader(data), int64(len(data)) - 1},
		"rewind error": &rewindFails{backend.NewByteReader(data)},
	}
	for name, rd := range readers {
		t.Run(name, func(t *testing.T) {
			be, _ := newBackend(t)
			h := backend.Handle{Type: backend.PackFile, Name: "bb02"}
			if err := retry.New(be, fast).Save(context.Background(), h, rd); err == nil {
				t.Fatal("save succeeded")
			}
			if n := be.Calls(faulty.Save); n != 1 {
				t.Errorf("save called %d times, want 1", n)
			}
		})
	}
}

type rewindFails struct{ backend.RewindReader }

func (r *rewindFails) Rewind() error { return errReader }

// TestSaveLostReply: the first attempt stored the object but its reply was
// lost; the retry finds the object with the same content and succeeds.
func TestSaveLostReply(t *testing.T) {
	be, m := newBackend(t)
	be.Inject(faulty.Fault{Op: faulty.Save, Mode: faulty.FailAfter, Times: 1})
	h := backend.Handle{Type: backend.LockFile, Name: "gate"}
	if err := retry.New(be, fast).Save(context.Background(), h, backend.NewByteReader(data)); err != nil {
		t.Fatalf("save: %v", err)
	}
	if n := be.Calls(faulty.Save); n != 2 {
		t.Errorf("save called %d times, want 2", n)
	}
	if got, err := backend.LoadAll(context.Background(), m, h, nil); err != nil || !bytes.Equal(got, data) {
		t.Errorf("stored %d bytes (%v), want %d", len(got), err, len(data))
	}
}

// TestSaveExistsAfterRetry: a retry that finds other content reports
// ErrExists, and so does a first attempt.
func TestSaveExistsAfterRetry(t *testing.T) {
	for _, times := range []int{0, 1} {
		t.Run(fmt.Sprint("failures ", times), func(t *testing.T) {
			be, m := newBackend(t)
			if times > 0 {
				be.Inject(faulty.Fault{Op: faulty.Save, Times: times})
			}
			other := append(bytes.Clone(data), 'x')
			err := retry.New(be, fast).Save(context.Background(), pack, backend.NewByteReader(other))
			if !errors.Is(err, backend.ErrExists) {
				t.Errorf("save: got %v, want ErrExists", err)
			}
			if got, err := backend.LoadAll(context.Background(), m, pack, nil); err != nil || !bytes.Equal(got, data) {
				t.Errorf("stored object changed: %d bytes (%v)", len(got), err)
			}
		})
	}
}

func TestRemoveLostReply(t *testing.T) {
	be, m := newBackend(t)
	be.Inject(faulty.Fault{Op: faulty.Remove, Mode: faulty.FailAfter, Times: 1})
	if err := retry.New(be, fast).Remove(context.Background(), pack); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if n := be.Calls(faulty.Remove); n != 2 {
		t.Errorf("remove called %d times, want 2", n)
	}
	if _, err := m.Stat(context.Background(), pack); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("stat after remove: got %v, want ErrNotExist", err)
	}
	// Without an earlier failure, a missing object is reported.
	if err := retry.New(be, fast).Remove(context.Background(), pack); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("remove missing: got %v, want ErrNotExist", err)
	}
}

// TestListNoDuplicates: a listing that breaks twice is retried, and fn sees
// each object once.
func TestListNoDuplicates(t *testing.T) {
	be, m := newBackend(t)
	want := map[string]bool{}
	for i := range 10 {
		h := backend.Handle{Type: backend.KeyFile, Name: fmt.Sprintf("k%d", i)}
		if err := m.Save(context.Background(), h, backend.NewByteReader(nil)); err != nil {
			t.Fatal(err)
		}
		want[h.Name] = true
	}
	be.Inject(faulty.Fault{Op: faulty.List, Mode: faulty.FailMidway, Bytes: 4, Times: 2})
	got := map[string]int{}
	err := retry.New(be, fast).List(context.Background(), backend.KeyFile, func(fi backend.FileInfo) error {
		got[fi.Name]++
		return nil
	})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for name, n := range got {
		if !want[name] || n != 1 {
			t.Errorf("listed %q %d times, want it once if at all", name, n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("listed %d objects, want %d", len(got), len(want))
	}
	if n := be.Calls(faulty.List); n != 3 {
		t.Errorf("list called %d times, want 3", n)
	}
}

func TestListFnErrorNotRetried(t *testing.T) {
	be, _ := newBackend(t)
	errFn := errors.New("fn failed")
	err := retry.New(be, fast).List(context.Background(), backend.PackFile, func(backend.FileInfo) error { return errFn })
	if err != errFn || be.Calls(faulty.List) != 1 {
		t.Errorf("list: got %v after %d calls, want fn's error after 1", err, be.Calls(faulty.List))
	}
}
