package limit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/limit"
	"repo/backend/mem"
)

func TestRateBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return limit.NewRate(mem.New(), limit.NewLimiter(1<<30), limit.NewLimiter(1<<30))
	})
}

func TestNewLimiter(t *testing.T) {
	tests := []struct {
		rate      int
		wantLimit rate.Limit
		wantBurst int
	}{
		{1 << 20, 1 << 20, 64 << 10},
		{64 << 10, 64 << 10, 64 << 10},
		{10 << 10, 10 << 10, 10 << 10},
		{0, 1, 1},
	}
	for _, tt := range tests {
		l := limit.NewLimiter(tt.rate)
		if l.Limit() != tt.wantLimit || l.Burst() != tt.wantBurst {
			t.Errorf("NewLimiter(%d): limit %v burst %d, want %v and %d", tt.rate, l.Limit(), l.Burst(), tt.wantLimit, tt.wantBurst)
		}
	}
}

// counter is a Limiter that lets everything pass and counts.
type counter struct {
	burst int
	mu    sync.Mutex
	total int
	calls int
	bad   []int // requests of more than burst or less than 1 byte
}

func (c *counter) WaitN(ctx context.Context, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += n
	c.calls++
	if n < 1 || n > c.burst {
		c.bad = append(c.bad, n)
	}
	return ctx.Err()
}

func (c *counter) Burst() int { return c.burst }

func (c *counter) check(t *testing.T, what string, want int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total != want {
		t.Errorf("%s: %d bytes accounted, want %d", what, c.total, want)
	}
	if len(c.bad) > 0 {
		t.Errorf("%s: requests outside 1..burst: %v", what, c.bad)
	}
	c.total, c.calls, c.bad = 0, 0, nil
}

func randomData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}

// TestRateAccounting checks that exactly the bytes saved and loaded are
// accounted, in the right direction, in requests the limiter accepts, and
// that lock files and metadata calls are not.
func TestRateAccounting(t *testing.T) {
	ctx := context.Background()
	up, down := &counter{burst: 4096}, &counter{burst: 1000}
	be := limit.NewRate(mem.New(), up, down)
	data := randomData(1<<20 + 17)
	pack := backend.Handle{Type: backend.PackFile, Name: "aa01"}

	if err := be.Save(ctx, pack, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	up.check(t, "save: upload", len(data))
	down.check(t, "save: download", 0)

	got, err := backend.LoadAll(ctx, be, pack, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("load: %d bytes, %v", len(got), err)
	}
	down.check(t, "load: download", len(data))
	up.check(t, "load: upload", 0)

	buf := make([]byte, 100)
	if err := backend.ReadAt(ctx, be, pack, buf, 5000); err != nil || !bytes.Equal(buf, data[5000:5100]) {
		t.Fatalf("read at: %v", err)
	}
	down.check(t, "read 100 bytes: download", 100)

	if _, err := be.Stat(ctx, pack); err != nil {
		t.Fatal(err)
	}
	if err := be.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	lock := backend.Handle{Type: backend.LockFile, Name: "l1"}
	if err := be.Save(ctx, lock, backend.NewByteReader(data[:500])); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.LoadAll(ctx, be, lock, nil); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(ctx, pack); err != nil {
		t.Fatal(err)
	}
	up.check(t, "stat, list, remove, lock file: upload", 0)
	down.check(t, "stat, list, remove, lock file: download", 0)
}

// virtual is a Limiter over a rate.Limiter on a virtual clock: WaitN
// reserves the tokens at the current virtual time and advances the clock
// by the delay the reservation asks for, instead of sleeping.
type virtual struct {
	lim   *rate.Limiter
	mu    sync.Mutex
	start time.Time
	now   time.Time
}

func newVirtual(lim *rate.Limiter) *virtual {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return &virtual{lim: lim, start: t0, now: t0}
}

func (v *virtual) WaitN(ctx context.Context, n int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.lim.ReserveN(v.now, n)
	if !r.OK() {
		return fmt.Errorf("reserve %d tokens: more than the burst %d", n, v.lim.Burst())
	}
	v.now = v.now.Add(r.DelayFrom(v.now))
	return nil
}

func (v *virtual) Burst() int { return v.lim.Burst() }

func (v *virtual) elapsed() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.now.Sub(v.start)
}

// TestRateVirtualTime: 1 MiB at 512 KiB/s takes 2 s less the initial burst
// of 64 KiB, i.e. 1.875 s, up and down.
func TestRateVirtualTime(t *testing.T) {
	ctx := context.Background()
	up, down := newVirtual(limit.NewLimiter(512<<10)), newVirtual(limit.NewLimiter(512<<10))
	be := limit.NewRate(mem.New(), up, down)
	data := randomData(1 << 20)
	pack := backend.Handle{Type: backend.PackFile, Name: "aa01"}
	if err := be.Save(ctx, pack, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.LoadAll(ctx, be, pack, nil); err != nil {
		t.Fatal(err)
	}
	want := 1875 * time.Millisecond
	for name, v := range map[string]*virtual{"upload": up, "download": down} {
		if got := v.elapsed(); got < want-time.Millisecond || got > want+time.Millisecond {
			t.Errorf("%s of 1 MiB at 512 KiB/s took %v of virtual time, want %v", name, got, want)
		}
	}
}

// TestRateCancel: a read waiting for the limiter ends with the context's
// error.
func TestRateCancel(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	pack := backend.Handle{Type: backend.PackFile, Name: "aa01"}
	data := randomData(5000)
	if err := m.Save(ctx, pack, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}

	// 1 byte per second; the burst lets the first byte pass.
	be := limit.NewRate(m, nil, limit.NewLimiter(1))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := be.Load(cctx, pack, 0, 0, func(rd io.Reader) error {
		if _, err := io.ReadFull(rd, make([]byte, 1)); err != nil {
			return err
		}
		cancel()
		_, err := io.ReadFull(rd, make([]byte, 1))
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("load cancelled while paced: got %v, want context.Canceled", err)
	}

	// A wait that would outlast the deadline fails at once.
	be = limit.NewRate(m, rate.NewLimiter(1, 1000), nil)
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	h := backend.Handle{Type: backend.PackFile, Name: "bb02"}
	if err := be.Save(dctx, h, backend.NewByteReader(data)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("save that cannot finish before the deadline: got %v, want context.DeadlineExceeded", err)
	}
	if _, err := m.Stat(ctx, h); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("stat after failed save: got %v, want ErrNotExist", err)
	}
}
