package local_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/local"
)

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return create(t, t.TempDir())
	})
}

func create(t *testing.T, dir string) *local.Backend {
	t.Helper()
	be, err := local.Create(dir)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { checkNoTemp(t, dir) })
	return be
}

// checkNoTemp fails if a temporary file of a Save is left in dir: Save
// removes it on success and on every error.
func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if path == dir && errors.Is(err, fs.ErrNotExist) {
			return nil // removed by the test
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func save(t *testing.T, be backend.Backend, h backend.Handle, data string) {
	t.Helper()
	if err := be.Save(context.Background(), h, backend.NewByteReader([]byte(data))); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

func TestLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "repo") // parents are made too
	be := create(t, dir)
	want := []string{"keys", "index", "snapshots", "locks", "quarantine", "data"}
	for i := range 256 {
		want = append(want, fmt.Sprintf("data/%02x", i))
	}
	for _, d := range want {
		fi, err := os.Stat(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a directory with mode 0700", d, fi.Mode())
		}
	}

	pack := strings.Repeat("3f", 32)
	objects := []struct {
		h    backend.Handle
		path string
	}{
		{backend.Handle{Type: backend.ConfigFile}, "config"},
		{backend.Handle{Type: backend.KeyFile, Name: "k1"}, "keys/k1"},
		{backend.Handle{Type: backend.PackFile, Name: pack}, "data/3f/" + pack},
		{backend.Handle{Type: backend.IndexFile, Name: "i1"}, "index/i1"},
		{backend.Handle{Type: backend.SnapshotFile, Name: "s1"}, "snapshots/s1"},
		{backend.Handle{Type: backend.LockFile, Name: "l1"}, "locks/l1"},
		{backend.Handle{Type: backend.QuarantineFile, Name: pack}, "quarantine/" + pack},
	}
	for _, o := range objects {
		save(t, be, o.h, o.path)
		got, err := os.ReadFile(filepath.Join(dir, o.path))
		if err != nil {
			t.Errorf("%v: %v", o.h, err)
		} else if string(got) != o.path {
			t.Errorf("%s holds %q, want %q", o.path, got, o.path)
		}
	}
}

func TestFilesReadOnly(t *testing.T) {
	dir := t.TempDir()
	be := create(t, dir)
	h := backend.Handle{Type: backend.PackFile, Name: "abcdef"}
	save(t, be, h, "data")
	path := filepath.Join(dir, "data", "ab", "abcdef")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o222 != 0 {
		t.Errorf("%s has mode %v, want read-only", path, perm)
	}
	if err := be.Remove(context.Background(), h); err != nil {
		t.Fatalf("remove read-only %v: %v", h, err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after remove: lstat %s: %v", path, err)
	}
}

// TestListSkips checks that what a crashed Save or a stray hand leaves in
// the repository is not listed.
func TestListSkips(t *testing.T) {
	dir := t.TempDir()
	be := create(t, dir)
	save(t, be, backend.Handle{Type: backend.PackFile, Name: "ab12"}, "pack")
	save(t, be, backend.Handle{Type: backend.KeyFile, Name: "k1"}, "key")
	// Not a hex prefix, but a valid handle: listed.
	save(t, be, backend.Handle{Type: backend.PackFile, Name: "zz99"}, "pack")

	stray := map[string]bool{ // path → is a directory
		"data/ab/.tmp-x":  false, // temp file of a crashed Save
		"keys/.tmp-y":     false,
		"keys/sub":        true,  // not a regular file
		"keys/README.txt": false, // no handle can name it
		"data/ab/cd12":    false, // a pack in the wrong prefix directory
		"data/a/a9":       false, // no handle names a pack here
		"data/abc/abc1":   false,
		".tmp-config":     false,
	}
	for p, isDir := range stray {
		p = filepath.Join(dir, p)
		var err error
		if isDir {
			err = os.Mkdir(p, 0o700)
		} else {
			err = os.MkdirAll(filepath.Dir(p), 0o700)
			if err == nil {
				err = os.WriteFile(p, []byte("x"), 0o600)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "keys", "k1"), filepath.Join(dir, "keys", "k2")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		t    backend.FileType
		want []string
	}{
		{backend.PackFile, []string{"ab12", "zz99"}},
		{backend.KeyFile, []string{"k1"}},
		{backend.ConfigFile, nil},
	}
	for _, tt := range tests {
		var got []string
		err := be.List(context.Background(), tt.t, func(fi backend.FileInfo) error {
			got = append(got, fi.Name)
			return nil
		})
		if err != nil {
			t.Fatalf("list %v: %v", tt.t, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("list %v: got %q, want %q", tt.t, got, tt.want)
		}
	}
	// The stray temporary files are someone else's: cleaning them up is
	// not List's job, and checkNoTemp must not trip on them.
	for p := range stray {
		if strings.Contains(p, ".tmp-") {
			if err := os.Remove(filepath.Join(dir, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), file} {
		_, err := local.Open(p)
		if !errors.Is(err, backend.ErrNotExist) || !strings.Contains(err.Error(), p) {
			t.Errorf("open %s: got %v, want ErrNotExist naming the path", p, err)
		}
	}

	be := create(t, filepath.Join(dir, "repo"))
	save(t, be, backend.Handle{Type: backend.KeyFile, Name: "k1"}, "key")
	be2, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := backend.LoadAll(context.Background(), be2, backend.Handle{Type: backend.KeyFile, Name: "k1"}, nil)
	if err != nil || string(got) != "key" {
		t.Errorf("load through Open: got %q, %v", got, err)
	}

	// Create on an existing repository keeps its objects.
	be3 := create(t, filepath.Join(dir, "repo"))
	if _, err := be3.Stat(context.Background(), backend.Handle{Type: backend.KeyFile, Name: "k1"}); err != nil {
		t.Errorf("stat after a second Create: %v", err)
	}
}

func TestLocation(t *testing.T) {
	t.Chdir(t.TempDir())
	be := create(t, "repo")
	if got := be.Location(); got != "repo" {
		t.Errorf("Location() = %q, want %q as given", got, "repo")
	}
	h := backend.Handle{Type: backend.KeyFile, Name: "k1"}
	save(t, be, h, "key")
	// A later change of directory does not move the repository.
	t.Chdir(t.TempDir())
	if _, err := be.Stat(context.Background(), h); err != nil {
		t.Errorf("stat after chdir: %v", err)
	}
}

// TestMissingPrefixDir checks that Save remakes a data/xx directory that
// was removed.
func TestMissingPrefixDir(t *testing.T) {
	dir := t.TempDir()
	be := create(t, dir)
	if err := os.Remove(filepath.Join(dir, "data", "7a")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "locks")); err != nil {
		t.Fatal(err)
	}
	save(t, be, backend.Handle{Type: backend.PackFile, Name: "7a00"}, "pack")
	save(t, be, backend.Handle{Type: backend.LockFile, Name: "l1"}, "lock")
	for _, p := range []string{"data/7a/7a00", "locks/l1"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
}

// TestMissingTypeDir checks a repository created before quarantine/ or
// plans/ existed: Open works, List finds nothing instead of failing, a
// missing object is ErrNotExist, and the first Save makes the directory.
func TestMissingTypeDir(t *testing.T) {
	for _, ft := range []backend.FileType{backend.QuarantineFile, backend.PlanFile} {
		t.Run(ft.String(), func(t *testing.T) { testMissingTypeDir(t, ft) })
	}
}

func testMissingTypeDir(t *testing.T, ft backend.FileType) {
	ctx := context.Background()
	dir := t.TempDir()
	create(t, dir)
	qdir := filepath.Join(dir, ft.String())
	if err := os.Remove(qdir); err != nil {
		t.Fatal(err)
	}
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}

	list := func() []string {
		t.Helper()
		var got []string
		if err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			got = append(got, fi.Name)
			return nil
		}); err != nil {
			t.Fatalf("list %v: %v", ft, err)
		}
		return got
	}
	if got := list(); len(got) != 0 {
		t.Errorf("list without %v/: got %q, want nothing", ft, got)
	}
	h := backend.Handle{Type: ft, Name: "ab12"}
	if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("stat without %v/: got %v, want ErrNotExist", ft, err)
	}
	if err := be.Remove(ctx, h); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("remove without %v/: got %v, want ErrNotExist", ft, err)
	}

	save(t, be, h, "damaged")
	fi, err := os.Stat(qdir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("%v/: mode %v, want a directory with mode 0700", ft, fi.Mode())
	}
	if got := list(); fmt.Sprint(got) != "[ab12]" {
		t.Errorf("list after save: got %q, want [ab12]", got)
	}
	got, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil || string(got) != "damaged" {
		t.Errorf("load %v: got %q, %v", h, got, err)
	}
	if err := be.Remove(ctx, h); err != nil {
		t.Errorf("remove %v: %v", h, err)
	}
	if got := list(); len(got) != 0 {
		t.Errorf("list after remove: got %q, want nothing", got)
	}
}

// TestRemoveTemp: the temporary files of killed Saves, and only those,
// are removed (backendtest.RunRemoveTemp).
func TestRemoveTemp(t *testing.T) {
	dir := t.TempDir()
	backendtest.RunRemoveTemp(t, create(t, dir), dir)
}

// TestNotExistMessage pins the message format callers see.
func TestNotExistMessage(t *testing.T) {
	be := create(t, t.TempDir())
	name := "3f" + strings.Repeat("0", 62)
	err := be.Load(context.Background(), backend.Handle{Type: backend.PackFile, Name: name}, 0, 0, nil)
	if want := "load data/3f/" + name + ": does not exist"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// BenchmarkSave measures Save of a 16 MiB pack, the backup's hot path
// (including both fsyncs).
func BenchmarkSave(b *testing.B) {
	be, err := local.Create(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 16<<20)
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		h := backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("%064x", i)}
		if err := be.Save(context.Background(), h, backend.NewByteReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSaveRemovedRoot checks that Save does not recreate a repository
// whose directory was removed.
func TestSaveRemovedRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, dir)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, h := range []backend.Handle{{Type: backend.KeyFile, Name: "k1"}, {Type: backend.PackFile, Name: "ab"}, {Type: backend.ConfigFile}} {
		if err := be.Save(context.Background(), h, backend.NewByteReader([]byte("x"))); err == nil {
			t.Errorf("save %v into a removed repository succeeded", h)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("repository directory was recreated: %v", err)
	}
}
