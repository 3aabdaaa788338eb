package wrap_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/faulty"
	"repo/backend/limit"
	"repo/backend/mem"
	"repo/backend/retry"
	"repo/backend/wrap"
)

// all turns every wrapper on, with limits that do not slow the suite down.
var all = wrap.Options{
	Retry:       &retry.Options{MaxAttempts: 30, InitialDelay: time.Microsecond, MaxDelay: time.Millisecond},
	Connections: 2,
	Upload:      1 << 30,
	Download:    1 << 30,
}

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return wrap.Wrap(mem.New(), all) })
}

// TestFlaky: with every wrapper on, transient failures stay hidden.
func TestFlaky(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		be := faulty.New(mem.New())
		be.Inject(faulty.Fault{Op: faulty.Save, Mode: faulty.FailAfter, Every: 5})
		be.Inject(faulty.Fault{Op: faulty.Save | faulty.Load, Mode: faulty.FailMidway, Bytes: 1000, Every: 4})
		be.Inject(faulty.Fault{Op: faulty.Save | faulty.Load | faulty.Stat | faulty.List, Every: 3})
		return wrap.Wrap(be, all)
	})
}

func TestNone(t *testing.T) {
	m := mem.New()
	if be := wrap.Wrap(m, wrap.Options{}); be != backend.Backend(m) {
		t.Errorf("Wrap with no options returned %T, want the backend itself", be)
	}
}

// TestOrder checks the stack: retry, connection limit, rate limit, backend.
func TestOrder(t *testing.T) {
	m := mem.New()
	r, ok := wrap.Wrap(m, all).(*retry.Backend)
	if !ok {
		t.Fatalf("outermost is not *retry.Backend")
	}
	c, ok := r.Backend.(*limit.Connections)
	if !ok {
		t.Fatalf("inside retry is %T, want *limit.Connections", r.Backend)
	}
	rt, ok := c.Backend.(*limit.Rate)
	if !ok {
		t.Fatalf("inside the connection limit is %T, want *limit.Rate", c.Backend)
	}
	if rt.Backend != backend.Backend(m) {
		t.Fatalf("inside the rate limit is %T, want the backend", rt.Backend)
	}

	for _, tt := range []struct {
		name string
		o    wrap.Options
		want string
	}{
		{"retry only", wrap.Options{Retry: &retry.Options{}}, "*retry.Backend"},
		{"connections only", wrap.Options{Connections: 1}, "*limit.Connections"},
		{"upload only", wrap.Options{Upload: 1}, "*limit.Rate"},
		{"download only", wrap.Options{Download: 1}, "*limit.Rate"},
	} {
		var got string
		switch be := wrap.Wrap(m, tt.o).(type) {
		case *retry.Backend:
			got = "*retry.Backend"
			if be.Backend != backend.Backend(m) {
				got += " over something"
			}
		case *limit.Connections:
			got = "*limit.Connections"
			if be.Backend != backend.Backend(m) {
				got += " over something"
			}
		case *limit.Rate:
			got = "*limit.Rate"
			if be.Backend != backend.Backend(m) {
				got += " over something"
			}
		default:
			got = "other"
		}
		if got != tt.want {
			t.Errorf("%s: got %s, want %s over the backend", tt.name, got, tt.want)
		}
	}
}

// TestRetryWaitHoldsNoSlot: while a call waits to be retried, its
// connection slot is free for others; this is why retry is outermost.
func TestRetryWaitHoldsNoSlot(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(mem.New())
	fb.Inject(faulty.Fault{Op: faulty.Save})
	waiting := make(chan struct{}, 1)
	be := wrap.Wrap(fb, wrap.Options{
		Retry: &retry.Options{InitialDelay: time.Hour, MaxDelay: time.Hour, MaxElapsed: 10 * time.Hour,
			OnRetry: func(string, backend.Handle, error, time.Duration) { waiting <- struct{}{} }},
		Connections: 1,
	})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- be.Save(sctx, backend.Handle{Type: backend.PackFile, Name: "aa01"}, backend.NewByteReader([]byte("x")))
	}()
	<-waiting

	// The only slot must be free: a Stat gets it. The timeout turns a hang
	// into a failure.
	tctx, tcancel := context.WithTimeout(ctx, time.Minute)
	defer tcancel()
	if _, err := be.Stat(tctx, backend.Handle{Type: backend.PackFile, Name: "bb02"}); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("stat while a save waits to retry: got %v, want ErrNotExist", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("save: got %v, want context.Canceled", err)
	}
}

// cleaner is a backend with the optional TempCleaner interface.
type cleaner struct{ backend.Backend }

func (cleaner) RemoveTemp(context.Context, time.Duration) (int, int64, error) { return 3, 42, nil }

// TestAsThroughWrappers: optional interfaces of the innermost backend stay
// reachable through every wrapper (and fault injection), and a backend
// without one is reported as such.
func TestAsThroughWrappers(t *testing.T) {
	be := wrap.Wrap(faulty.New(cleaner{mem.New()}), all)
	tc, ok := backend.As[backend.TempCleaner](be)
	if !ok {
		t.Fatal("TempCleaner not found through the wrappers")
	}
	if n, size, err := tc.RemoveTemp(context.Background(), time.Hour); n != 3 || size != 42 || err != nil {
		t.Errorf("RemoveTemp = %d, %d, %v; want the inner backend's 3, 42, nil", n, size, err)
	}
	if _, ok := backend.As[backend.TempCleaner](wrap.Wrap(mem.New(), all)); ok {
		t.Error("TempCleaner found on a wrapped mem backend, which has none")
	}
}
