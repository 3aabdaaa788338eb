package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFileAtomic: dump --target replaces the file only with complete
// content; a failed write leaves the old file (or none) and no temporary
// file; an existing file keeps its permissions; a symlink is written
// through, not replaced.
func TestWriteFileAtomic(t *testing.T) {
	failing := func(w io.Writer) error {
		w.Write([]byte("partial"))
		return errors.New("blob damaged")
	}
	writes := func(s string) func(io.Writer) error {
		return func(w io.Writer) error {
			_, err := w.Write([]byte(s))
			return err
		}
	}
	// only checks that dir holds exactly the names want.
	only := func(t *testing.T, dir string, want ...string) {
		t.Helper()
		got := dirNames(t, dir)
		if d := setDiff(got, want); len(d) > 0 {
			t.Errorf("directory holds %q, want %q", got, want)
		}
	}

	t.Run("new file", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "out")
		if err := writeFileAtomic(p, failing); err == nil {
			t.Fatal("a failed write returned no error")
		}
		only(t, dir)
		if err := writeFileAtomic(p, writes("content")); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != "content" {
			t.Errorf("file holds %q", b)
		}
		only(t, dir, "out")
	})

	t.Run("existing file", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "out")
		if err := os.WriteFile(p, []byte("old"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := writeFileAtomic(p, failing); err == nil {
			t.Fatal("a failed write returned no error")
		}
		if b, _ := os.ReadFile(p); string(b) != "old" {
			t.Errorf("a failed write changed the file to %q", b)
		}
		only(t, dir, "out")
		if err := writeFileAtomic(p, writes("new")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != "new" || fi.Mode().Perm() != 0o640 {
			t.Errorf("file holds %q with mode %v, want \"new\" with -rw-r-----", b, fi.Mode().Perm())
		}
	})

	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		real := filepath.Join(dir, "real")
		link := filepath.Join(dir, "link")
		if err := os.WriteFile(real, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("real", link); err != nil {
			t.Fatal(err)
		}
		if err := writeFileAtomic(link, writes("new")); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the symlink was replaced (%v)", err)
		}
		if b, _ := os.ReadFile(real); string(b) != "new" {
			t.Errorf("the link's target holds %q, want \"new\"", b)
		}
	})
}
