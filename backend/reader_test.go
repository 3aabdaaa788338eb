package backend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"repo/backend"
	"repo/backend/mem"
)

// readTwice reads rd to the end, rewinds, and reads it again: both reads
// must give want, and Length must be len(want).
func readTwice(t *testing.T, rd backend.RewindReader, want []byte) {
	t.Helper()
	if rd.Length() != int64(len(want)) {
		t.Errorf("Length() = %d, want %d", rd.Length(), len(want))
	}
	for i := range 2 {
		got, err := io.ReadAll(rd)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("read %d: got %q, want %q", i, got, want)
		}
		if err := rd.Rewind(); err != nil {
			t.Fatalf("rewind: %v", err)
		}
	}
}

func TestByteReader(t *testing.T) {
	for _, data := range []string{"", "x", "hello, world"} {
		rd := backend.NewByteReader([]byte(data))
		// A partial read, then Rewind starts over.
		if _, err := rd.Read(make([]byte, 1)); err != nil && data != "" {
			t.Fatal(err)
		}
		if err := rd.Rewind(); err != nil {
			t.Fatal(err)
		}
		readTwice(t, rd, []byte(data))
	}
}

func TestFileReader(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const content = "0123456789"
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	// The file's offset is at the end now: the reader must start at 0
	// without an explicit Rewind.
	tests := []struct {
		length int64
		want   string
	}{
		{10, content},
		{4, "0123"},
		{0, ""},
		{20, content}, // a short file yields fewer bytes; Save rejects that
	}
	for _, tt := range tests {
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		rd := backend.NewFileReader(f, tt.length)
		got, err := io.ReadAll(rd)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("length %d: first read got %q, want %q", tt.length, got, tt.want)
		}
		if err := rd.Rewind(); err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(rd)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("length %d: after Rewind got %q, want %q", tt.length, got, tt.want)
		}
		if rd.Length() != tt.length {
			t.Errorf("Length() = %d, want %d", rd.Length(), tt.length)
		}
	}
}

func TestFileReaderSave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := bytes.Repeat([]byte("abc"), 100000)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	be := mem.New()
	h := backend.Handle{Type: backend.PackFile, Name: "ab"}
	if err := be.Save(ctx, h, backend.NewFileReader(f, int64(len(data)))); err != nil {
		t.Fatal(err)
	}
	got, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("load: %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
}

func TestLoadAll(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	small := backend.Handle{Type: backend.KeyFile, Name: "small"}
	large := backend.Handle{Type: backend.KeyFile, Name: "large"}
	empty := backend.Handle{Type: backend.KeyFile, Name: "empty"}
	largeData := bytes.Repeat([]byte("0123456789"), 100000)
	for h, data := range map[backend.Handle][]byte{small: []byte("small"), large: largeData, empty: nil} {
		if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
			t.Fatal(err)
		}
	}

	buf := make([]byte, 3, 64)
	copy(buf, "old")
	got, err := backend.LoadAll(ctx, be, small, buf)
	if err != nil || string(got) != "small" {
		t.Fatalf("load small: %q, %v", got, err)
	}
	if &got[0] != &buf[0] {
		t.Error("load small: did not reuse buf")
	}
	got, err = backend.LoadAll(ctx, be, large, got)
	if err != nil || !bytes.Equal(got, largeData) {
		t.Fatalf("load large: %d bytes, %v", len(got), err)
	}
	got, err = backend.LoadAll(ctx, be, empty, got)
	if err != nil || len(got) != 0 {
		t.Fatalf("load empty: %q, %v", got, err)
	}
	_, err = backend.LoadAll(ctx, be, backend.Handle{Type: backend.KeyFile, Name: "missing"}, nil)
	if !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("load missing: got %v, want ErrNotExist", err)
	}
}

// retryBackend calls Load's fn twice, as a retry wrapper may after a read
// error, to check that LoadAll's fn starts over.
type retryBackend struct{ backend.Backend }

func (b retryBackend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	if err := b.Backend.Load(ctx, h, length, offset, fn); err != nil {
		return err
	}
	return b.Backend.Load(ctx, h, length, offset, fn)
}

func TestLoadAllIdempotent(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	h := backend.Handle{Type: backend.KeyFile, Name: "k"}
	if err := be.Save(ctx, h, backend.NewByteReader([]byte("once"))); err != nil {
		t.Fatal(err)
	}
	got, err := backend.LoadAll(ctx, retryBackend{be}, h, nil)
	if err != nil || string(got) != "once" {
		t.Errorf("got %q, %v; want %q", got, err, "once")
	}
}

func TestReadAt(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
	if err := be.Save(ctx, h, backend.NewByteReader([]byte("0123456789"))); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		offset int64
		n      int
		want   string // "" with short: an error wrapping io.ErrUnexpectedEOF
		short  bool
	}{
		{0, 10, "0123456789", false},
		{3, 4, "3456", false},
		{9, 1, "9", false},
		{5, 0, "", false},
		{8, 3, "", true},
		{10, 1, "", true},
		{100, 1, "", true},
	}
	for _, tt := range tests {
		buf := make([]byte, tt.n)
		err := backend.ReadAt(ctx, be, h, buf, tt.offset)
		if tt.short {
			if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), h.String()) {
				t.Errorf("offset %d n %d: got %v, want io.ErrUnexpectedEOF naming %v", tt.offset, tt.n, err, h)
			}
			continue
		}
		if err != nil || string(buf) != tt.want {
			t.Errorf("offset %d n %d: got %q, %v; want %q", tt.offset, tt.n, buf, err, tt.want)
		}
	}
	err := backend.ReadAt(ctx, be, backend.Handle{Type: backend.PackFile, Name: "cd"}, make([]byte, 1), 0)
	if !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("missing: got %v, want ErrNotExist", err)
	}
}

func TestFileTypeValid(t *testing.T) {
	for ft := range backend.FileType(255) {
		want := ft >= backend.ConfigFile && ft <= backend.PlanFile
		if got := ft.Valid() == nil; got != want {
			t.Errorf("FileType(%d).Valid() == nil is %v, want %v", ft, got, want)
		}
	}
}

func TestPlanHandle(t *testing.T) {
	if got := backend.PlanFile.String(); got != "plans" {
		t.Errorf("PlanFile.String() = %q, want %q", got, "plans")
	}
	if backend.PlanFile != 8 {
		t.Errorf("PlanFile = %d, want 8", backend.PlanFile)
	}
	name := "3fa2" + strings.Repeat("0", 60)
	if got := (backend.Handle{Type: backend.PlanFile, Name: name}).String(); got != "plans/"+name {
		t.Errorf("Handle.String() = %q, want plans/%s (not sharded)", got, name)
	}
}

func TestQuarantineHandle(t *testing.T) {
	if got := backend.QuarantineFile.String(); got != "quarantine" {
		t.Errorf("QuarantineFile.String() = %q, want %q", got, "quarantine")
	}
	// The types before it keep their values: they are not stored, but
	// code and tests may compare against them.
	if backend.LockFile != 6 || backend.QuarantineFile != 7 {
		t.Errorf("LockFile = %d, QuarantineFile = %d; want 6, 7", backend.LockFile, backend.QuarantineFile)
	}
	name := "3fa2" + strings.Repeat("0", 60)
	if got := (backend.Handle{Type: backend.QuarantineFile, Name: name}).String(); got != "quarantine/"+name {
		t.Errorf("Handle.String() = %q, want quarantine/%s (not sharded)", got, name)
	}
	for _, tt := range []struct {
		name  string
		valid bool
	}{
		{name, true},
		{"a", true}, // unlike packs, no two-character minimum
		{"", false},
		{"AB", false},
		{"a/b", false},
		{".tmp-1", false},
	} {
		err := backend.Handle{Type: backend.QuarantineFile, Name: tt.name}.Valid()
		if (err == nil) != tt.valid {
			t.Errorf("quarantine handle %q: Valid() = %v, want valid %v", tt.name, err, tt.valid)
		}
	}
}
