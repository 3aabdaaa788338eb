package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/faulty"
	"repo/backend/mem"
)

// TestBackend checks that the wrapper without faults keeps the contract.
func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return faulty.New(mem.New()) })
}

var (
	pack = backend.Handle{Type: backend.PackFile, Name: "aa01"}
	key  = backend.Handle{Type: backend.KeyFile, Name: "k1"}
	data = []byte("0123456789abcdefghij")
)

func newBackend(t *testing.T) (*faulty.Backend, *mem.Backend) {
	t.Helper()
	m := mem.New()
	for _, h := range []backend.Handle{pack, key} {
		if err := m.Save(context.Background(), h, backend.NewByteReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	return faulty.New(m), m
}

func exists(t *testing.T, be backend.Backend, h backend.Handle) bool {
	t.Helper()
	_, err := be.Stat(context.Background(), h)
	if err != nil && !errors.Is(err, backend.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func loadAll(be backend.Backend, h backend.Handle) ([]byte, error) {
	var got []byte
	err := be.Load(context.Background(), h, 0, 0, func(rd io.Reader) error {
		var err error
		got, err = io.ReadAll(rd)
		return err
	})
	return got, err
}

// countingReader is a RewindReader that counts the bytes read since the last
// Rewind.
type countingReader struct {
	backend.RewindReader
	n int
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.RewindReader.Read(p)
	r.n += n
	return n, err
}

func (r *countingReader) Rewind() error { r.n = 0; return r.RewindReader.Rewind() }

func TestSave(t *testing.T) {
	ctx := context.Background()
	h := backend.Handle{Type: backend.PackFile, Name: "bb02"}
	errX := errors.New("x")
	tests := []struct {
		name      string
		fault     faulty.Fault
		wantErr   error // nil: success
		wantRead  int   // bytes of the reader consumed
		wantSaved bool
	}{
		{"fail", faulty.Fault{}, faulty.ErrInjected, 0, false},
		{"own error", faulty.Fault{Err: errX}, errX, 0, false},
		{"midway", faulty.Fault{Mode: faulty.FailMidway, Bytes: 7}, faulty.ErrInjected, 7, false},
		{"after", faulty.Fault{Mode: faulty.FailAfter}, faulty.ErrInjected, len(data), true},
		{"drop", faulty.Fault{Mode: faulty.Drop}, nil, 0, false},
		{"other op", faulty.Fault{Op: faulty.Load | faulty.Stat}, nil, len(data), true},
		{"other type", faulty.Fault{Type: backend.IndexFile}, nil, len(data), true},
		{"other name", faulty.Fault{Name: "cc"}, nil, len(data), true},
		{"this name", faulty.Fault{Op: faulty.Save, Type: backend.PackFile, Name: h.Name}, faulty.ErrInjected, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be, m := newBackend(t)
			be.Inject(tt.fault)
			rd := &countingReader{RewindReader: backend.NewByteReader(data)}
			err := be.Save(ctx, h, rd)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("save: got %v, want %v", err, tt.wantErr)
			}
			if err != nil && !bytes.Contains([]byte(err.Error()), []byte(h.String())) {
				t.Errorf("save: error %q does not name %v", err, h)
			}
			if rd.n != tt.wantRead {
				t.Errorf("save read %d bytes, want %d", rd.n, tt.wantRead)
			}
			if got := exists(t, m, h); got != tt.wantSaved {
				t.Errorf("after save: exists %v, want %v", got, tt.wantSaved)
			}
			if be.Calls(faulty.Save) != 1 {
				t.Errorf("Calls(Save) = %d, want 1", be.Calls(faulty.Save))
			}
		})
	}
}

func TestLoad(t *testing.T) {
	flip := func(b []byte) []byte { b[3] ^= 0xff; return b }
	flipped := bytes.Clone(data)
	flipped[3] ^= 0xff
	tests := []struct {
		name    string
		fault   faulty.Fault
		want    []byte // what fn read
		wantErr error
	}{
		{"fail", faulty.Fault{}, nil, faulty.ErrInjected},
		{"midway", faulty.Fault{Mode: faulty.FailMidway, Bytes: 5}, data[:5], faulty.ErrInjected},
		{"midway past the end", faulty.Fault{Mode: faulty.FailMidway, Bytes: 100}, data, faulty.ErrInjected},
		{"after", faulty.Fault{Mode: faulty.FailAfter}, data, faulty.ErrInjected},
		{"corrupt", faulty.Fault{Mode: faulty.Corrupt, Mutate: flip}, flipped, nil},
		{"truncate", faulty.Fault{Mode: faulty.Corrupt, Mutate: func(b []byte) []byte { return b[:4] }}, data[:4], nil},
		{"other type", faulty.Fault{Type: backend.KeyFile}, data, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be, m := newBackend(t)
			be.Inject(tt.fault)
			var got []byte
			err := be.Load(context.Background(), pack, 0, 0, func(rd io.Reader) error {
				var err error
				got, err = io.ReadAll(rd)
				return err
			})
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("load: got %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("fn read %q, want %q", got, tt.want)
			}
			// Corruption is on the way, not in the store.
			if got, err := loadAll(m, pack); err != nil || !bytes.Equal(got, data) {
				t.Errorf("load again: %q, %v; want %q", got, err, data)
			}
		})
	}
}

func TestStatRemoveList(t *testing.T) {
	ctx := context.Background()
	be, m := newBackend(t)

	be.Inject(faulty.Fault{Op: faulty.Stat, Times: 1})
	if _, err := be.Stat(ctx, key); !errors.Is(err, faulty.ErrInjected) {
		t.Errorf("stat: got %v, want ErrInjected", err)
	}
	if _, err := be.Stat(ctx, key); err != nil {
		t.Errorf("stat after the fault: %v", err)
	}

	be.Inject(faulty.Fault{Op: faulty.Remove, Mode: faulty.Drop, Times: 1})
	if err := be.Remove(ctx, key); err != nil {
		t.Errorf("dropped remove: %v", err)
	}
	if !exists(t, m, key) {
		t.Error("dropped remove removed the object")
	}
	be.Inject(faulty.Fault{Op: faulty.Remove, Mode: faulty.FailAfter, Times: 1})
	if err := be.Remove(ctx, key); !errors.Is(err, faulty.ErrInjected) {
		t.Errorf("remove with lost reply: got %v, want ErrInjected", err)
	}
	if exists(t, m, key) {
		t.Error("remove with lost reply did not remove the object")
	}

	for _, name := range []string{"k2", "k3", "k4"} {
		if err := m.Save(ctx, backend.Handle{Type: backend.KeyFile, Name: name}, backend.NewByteReader(nil)); err != nil {
			t.Fatal(err)
		}
	}
	be.Inject(faulty.Fault{Op: faulty.List, Mode: faulty.FailMidway, Bytes: 2, Times: 1})
	calls := 0
	err := be.List(ctx, backend.KeyFile, func(backend.FileInfo) error { calls++; return nil })
	if !errors.Is(err, faulty.ErrInjected) || calls != 2 {
		t.Errorf("list failing midway: %v after %d objects, want ErrInjected after 2", err, calls)
	}
	// A fault with a name never applies to List.
	be.Inject(faulty.Fault{Op: faulty.List, Name: "k2"})
	calls = 0
	if err := be.List(ctx, backend.KeyFile, func(backend.FileInfo) error { calls++; return nil }); err != nil || calls != 3 {
		t.Errorf("list: %v after %d objects, want success after 3", err, calls)
	}
	if got := be.Calls(faulty.Stat | faulty.Remove | faulty.List); got != 2+2+2 {
		t.Errorf("Calls(Stat|Remove|List) = %d, want 6", got)
	}
}

// TestSchedule checks Skip, Every and Times.
func TestSchedule(t *testing.T) {
	tests := []struct {
		name  string
		fault faulty.Fault
		want  string // per call: x fails, . succeeds
	}{
		{"always", faulty.Fault{}, "xxxxxxxx"},
		{"skip", faulty.Fault{Skip: 2}, "..xxxxxx"},
		{"times", faulty.Fault{Times: 3}, "xxx....."},
		{"skip times", faulty.Fault{Skip: 1, Times: 2}, ".xx....."},
		{"every", faulty.Fault{Every: 3}, "x..x..x."},
		{"skip every times", faulty.Fault{Skip: 1, Every: 2, Times: 2}, ".x.x...."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be, _ := newBackend(t)
			tt.fault.Op = faulty.Stat
			be.Inject(tt.fault)
			got := ""
			for range len(tt.want) {
				if _, err := be.Stat(context.Background(), key); err != nil {
					got += "x"
				} else {
					got += "."
				}
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestReset(t *testing.T) {
	be, _ := newBackend(t)
	be.Inject(faulty.Fault{})
	if _, err := be.Stat(context.Background(), key); err == nil {
		t.Fatal("stat succeeded despite the fault")
	}
	be.Reset()
	if _, err := be.Stat(context.Background(), key); err != nil {
		t.Errorf("stat after Reset: %v", err)
	}
	if n := be.Calls(faulty.Stat); n != 1 {
		t.Errorf("Calls(Stat) after Reset and one call = %d, want 1", n)
	}
}
