package limit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/faulty"
	"repo/backend/limit"
	"repo/backend/mem"
)

func TestConnectionsBackend(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T) backend.Backend { return limit.NewConnections(mem.New(), n) })
		})
	}
}

func TestConnectionsProperties(t *testing.T) {
	tests := []struct{ n, want int }{{1, 1}, {2, 2}, {100, 4}, {0, 1}, {-3, 1}}
	for _, tt := range tests {
		// mem serves 4 connections.
		if got := limit.NewConnections(mem.New(), tt.n).Properties().Connections; got != tt.want {
			t.Errorf("NewConnections(mem, %d).Properties().Connections = %d, want %d", tt.n, got, tt.want)
		}
	}
}

// gauge measures how many operations run at once in the backend it wraps.
type gauge struct {
	backend.Backend
	cur, peak atomic.Int32
}

func (g *gauge) enter() {
	n := g.cur.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	// Give the others a chance to pile up.
	time.Sleep(100 * time.Microsecond)
}

func (g *gauge) leave() { g.cur.Add(-1) }

func (g *gauge) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	g.enter()
	defer g.leave()
	return g.Backend.Save(ctx, h, rd)
}

func (g *gauge) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	g.enter()
	defer g.leave()
	return g.Backend.Load(ctx, h, length, offset, fn)
}

func (g *gauge) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	g.enter()
	defer g.leave()
	return g.Backend.Stat(ctx, h)
}

func (g *gauge) Remove(ctx context.Context, h backend.Handle) error {
	g.enter()
	defer g.leave()
	return g.Backend.Remove(ctx, h)
}

func TestConnectionsAtMostN(t *testing.T) {
	const n = 3
	g := &gauge{Backend: mem.New()}
	be := limit.NewConnections(g, n)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 10 {
				h := backend.Handle{Type: backend.PackFile, Name: string(rune('a'+w)) + string(rune('a'+i))}
				if err := be.Save(ctx, h, backend.NewByteReader([]byte("x"))); err != nil {
					t.Error(err)
				}
				if _, err := backend.LoadAll(ctx, be, h, nil); err != nil {
					t.Error(err)
				}
				if _, err := be.Stat(ctx, h); err != nil {
					t.Error(err)
				}
				if err := be.Remove(ctx, h); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if p := g.peak.Load(); p > n || p < 1 {
		t.Errorf("%d operations ran at once, want 1 to %d", p, n)
	}
}

// TestConnectionsLockBypass fills every slot with Loads blocked in fn: other
// operations wait, lock file operations go through.
func TestConnectionsLockBypass(t *testing.T) {
	const n = 2
	ctx := context.Background()
	m := mem.New()
	pack := backend.Handle{Type: backend.PackFile, Name: "aa01"}
	if err := m.Save(ctx, pack, backend.NewByteReader([]byte("pack"))); err != nil {
		t.Fatal(err)
	}
	fb := faulty.New(m)
	be := limit.NewConnections(fb, n)

	entered := make(chan struct{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			err := be.Load(ctx, pack, 0, 0, func(io.Reader) error {
				entered <- struct{}{}
				<-release
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	for range n {
		<-entered
	}
	defer func() {
		close(release)
		wg.Wait()
	}()

	// Every slot is taken: another operation waits until its context ends,
	// without reaching the backend.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	other := backend.Handle{Type: backend.PackFile, Name: "bb02"}
	if err := be.Save(short, other, backend.NewByteReader([]byte("x"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("save with every slot taken: got %v, want context.DeadlineExceeded", err)
	}
	if c := fb.Calls(faulty.Save); c != 0 {
		t.Errorf("save with every slot taken reached the backend %d times", c)
	}

	// Lock files do not wait. The timeout only turns a hang into a
	// failure.
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	lock := backend.Handle{Type: backend.LockFile, Name: "l1"}
	if err := be.Save(lctx, lock, backend.NewByteReader([]byte("lock"))); err != nil {
		t.Fatalf("save lock: %v", err)
	}
	if _, err := be.Stat(lctx, lock); err != nil {
		t.Errorf("stat lock: %v", err)
	}
	if got, err := backend.LoadAll(lctx, be, lock, nil); err != nil || !bytes.Equal(got, []byte("lock")) {
		t.Errorf("load lock: %q, %v", got, err)
	}
	if err := be.List(lctx, backend.LockFile, func(backend.FileInfo) error { return nil }); err != nil {
		t.Errorf("list locks: %v", err)
	}
	if err := be.Remove(lctx, lock); err != nil {
		t.Errorf("remove lock: %v", err)
	}
}

// TestConnectionsListFnMayCall: List holds no slot, so its fn may call the
// backend even when the limit is one.
func TestConnectionsListFnMayCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	be := limit.NewConnections(mem.New(), 1)
	h := backend.Handle{Type: backend.KeyFile, Name: "k"}
	if err := be.Save(ctx, h, backend.NewByteReader([]byte("key"))); err != nil {
		t.Fatal(err)
	}
	err := be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		_, err := backend.LoadAll(ctx, be, backend.Handle{Type: backend.KeyFile, Name: fi.Name}, nil)
		return err
	})
	if err != nil {
		t.Errorf("list: %v", err)
	}
}
