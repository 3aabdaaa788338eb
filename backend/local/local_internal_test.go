package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"

	"repo/backend"
)

func TestClassify(t *testing.T) {
	pathErr := func(errno syscall.Errno) error {
		return &fs.PathError{Op: "write", Path: "/r/data/ab/.tmp-1", Err: errno}
	}
	tests := []struct {
		err       error
		permanent bool
		full      bool // message says the disk is full
	}{
		{pathErr(syscall.ENOSPC), true, true},
		{pathErr(syscall.EDQUOT), true, true},
		{pathErr(syscall.EACCES), true, false},
		{pathErr(syscall.EPERM), true, false},
		{pathErr(syscall.EIO), false, false},
		{pathErr(syscall.EINTR), false, false},
	}
	for _, tt := range tests {
		got := classify(tt.err)
		if !errors.Is(got, tt.err) {
			t.Errorf("classify(%v) = %v, does not wrap the error", tt.err, got)
		}
		if backend.IsPermanent(got) != tt.permanent {
			t.Errorf("classify(%v): permanent %v, want %v", tt.err, backend.IsPermanent(got), tt.permanent)
		}
		if strings.Contains(got.Error(), "disk is full") != tt.full {
			t.Errorf("classify(%v) = %q: says disk full %v, want %v", tt.err, got, !tt.full, tt.full)
		}
	}
	if classify(nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

// TestSaveWithoutHardLinks runs Save on a file system that refuses hard
// links, through the check-then-rename fallback.
func TestSaveWithoutHardLinks(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.ENOTSUP, syscall.EXDEV, syscall.EMLINK} {
		t.Run(errno.Error(), func(t *testing.T) {
			link = func(oldname, newname string) error {
				return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: errno}
			}
			t.Cleanup(func() { link = os.Link })

			be, err := Create(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
			if err := be.Save(ctx, h, backend.NewByteReader([]byte("first"))); err != nil {
				t.Fatalf("save: %v", err)
			}
			err = be.Save(ctx, h, backend.NewByteReader([]byte("second")))
			if !errors.Is(err, backend.ErrExists) {
				t.Errorf("save existing: got %v, want ErrExists", err)
			}
			got, err := backend.LoadAll(ctx, be, h, nil)
			if err != nil || string(got) != "first" {
				t.Errorf("load: got %q, %v; want %q", got, err, "first")
			}
			var names []string
			if err := be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
				names = append(names, fi.Name)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(names) != 1 || names[0] != "ab01" {
				t.Errorf("list: got %q, want [ab01] and no temporary files", names)
			}
		})
	}
}

// directSupported reports whether the file system of dir takes O_DIRECT.
func directSupported(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return setDirect(f, true) == nil
}

// TestSaveDirect saves packs of sizes around the direct-I/O step and
// alignment and reads them back: the padding of the last write must not
// survive, and small packs go through the cache.
func TestSaveDirect(t *testing.T) {
	dir := t.TempDir()
	be, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	supported := directSupported(t, dir)
	if !supported {
		t.Logf("%s does not take O_DIRECT: only the contents are checked", dir)
	}
	writes := 0
	writeDirect = func(f *os.File, b []byte) (int, error) {
		writes++
		return f.Write(b)
	}
	t.Cleanup(func() { writeDirect = (*os.File).Write })
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	for i, size := range []int{directMin - 1, directMin, directMin + 1, copyStep + dioAlign, 3*copyStep + 4095, 5<<20 - 17} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		h := backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("cd%02d", i)}
		before := writes
		if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
			t.Fatalf("save %d bytes: %v", size, err)
		}
		got, err := backend.LoadAll(ctx, be, h, nil)
		if err != nil {
			t.Fatalf("load %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%d bytes: read back %d bytes that differ", size, len(got))
		}
		wantWrites := 0
		if supported && size >= directMin {
			wantWrites = (size + copyStep - 1) / copyStep
		}
		if writes-before != wantWrites {
			t.Errorf("%d bytes: %d direct writes, want %d", size, writes-before, wantWrites)
		}
	}
}

// TestSaveDirectRefused: a file system that refuses the first direct
// write (another alignment) gets the pack through the cache instead.
func TestSaveDirectRefused(t *testing.T) {
	dir := t.TempDir()
	be, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !directSupported(t, dir) {
		t.Skipf("%s does not take O_DIRECT", dir)
	}
	refused := 0
	writeDirect = func(f *os.File, b []byte) (int, error) {
		refused++
		return 0, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.EINVAL}
	}
	t.Cleanup(func() { writeDirect = (*os.File).Write })
	ctx := context.Background()
	for i, size := range []int{directMin, 3*copyStep + 5} {
		data := bytes.Repeat([]byte{byte(i + 1), 2, 3}, size/3+1)[:size]
		h := backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("ef%02d", i)}
		if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
			t.Fatalf("save %d bytes: %v", size, err)
		}
		got, err := backend.LoadAll(ctx, be, h, nil)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%d bytes: read back %d bytes (%v), want the same %d", size, len(got), err, size)
		}
	}
	if refused != 2 {
		t.Errorf("%d direct writes tried, want 2 (the first of each pack)", refused)
	}
}

// TestLoadDirect reads ranges of a pack around the alignment and the
// direct-I/O threshold, including ones that run past its end, and once
// more with the first direct read refused.
func TestLoadDirect(t *testing.T) {
	dir := t.TempDir()
	be, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	supported := directSupported(t, dir)
	size := 3*copyStep + 1234
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	ctx := context.Background()
	h := backend.Handle{Type: backend.PackFile, Name: "ab02"}
	if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	ranges := []struct{ off, n int }{
		{0, directMin}, {1, directMin}, {4095, directMin + 1}, {dioAlign, 2 * copyStep},
		{777, size - 777}, {0, size}, {size - directMin, directMin}, {100, directMin - 1},
	}
	t.Cleanup(func() { readDirectAt = (*os.File).ReadAt })
	for _, refuse := range []bool{false, true} {
		reads, refused := 0, 0
		readDirectAt = func(f *os.File, b []byte, off int64) (int, error) {
			reads++
			if refuse && reads == 1 {
				refused++
				return 0, &fs.PathError{Op: "read", Path: f.Name(), Err: syscall.EINVAL}
			}
			return f.ReadAt(b, off)
		}
		for _, r := range ranges {
			reads = 0
			buf := make([]byte, r.n)
			if err := backend.ReadAt(ctx, be, h, buf, int64(r.off)); err != nil {
				t.Fatalf("refuse=%v: read %d at %d: %v", refuse, r.n, r.off, err)
			}
			if !bytes.Equal(buf, data[r.off:r.off+r.n]) {
				t.Errorf("refuse=%v: read %d at %d: bytes differ", refuse, r.n, r.off)
			}
			if direct := supported && r.n >= directMin; direct != (reads > 0) {
				t.Errorf("refuse=%v: read %d at %d: %d direct reads", refuse, r.n, r.off, reads)
			}
		}
		// Past the end: the bytes that exist, then a short read.
		buf := make([]byte, directMin)
		err := backend.ReadAt(ctx, be, h, buf, int64(size-1000))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("refuse=%v: read past the end: %v, want ErrUnexpectedEOF", refuse, err)
		}
		if refuse && supported && refused == 0 {
			t.Error("no direct read was refused")
		}
	}
}
