package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// TestE2ERestoreSafety restores into targets that hold symlinks where the
// snapshot has directories or files: nothing may be written through them
// to the outside, and they are replaced by what the snapshot holds.
func TestE2ERestoreSafety(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	mt := gentree.Epoch
	writeFile(t, filepath.Join(src, "x", "file"), []byte("inside x"), 0o644, mt)
	writeFile(t, filepath.Join(src, "x", "sub", "deep"), []byte("deep inside x"), 0o644, mt)
	writeFile(t, filepath.Join(src, "plain"), []byte("plain file"), 0o644, mt)
	setMtimes(t, src, mt)
	want := scanTree(t, src)
	r.backup(src)

	// outside is a directory the restores must not touch: an empty
	// directory and a file with known content.
	newOutside := func(t *testing.T) (dir, file string) {
		dir = filepath.Join(t.TempDir(), "outside")
		file = filepath.Join(t.TempDir(), "outside-file")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte("outside"), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir, file
	}
	checkOutside := func(t *testing.T, dir, file string) {
		t.Helper()
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
			t.Errorf("restore wrote into the outside directory: %v (err %v)", ents, err)
		}
		if b, err := os.ReadFile(file); err != nil || string(b) != "outside" {
			t.Errorf("restore changed the outside file: %q (err %v)", b, err)
		}
	}
	symlink := func(t *testing.T, target, link string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("sub-path restore over symlinks", func(t *testing.T) {
		dir, file := newOutside(t)
		target := filepath.Join(t.TempDir(), "target")
		symlink(t, dir, filepath.Join(target, "x"))      // where the snapshot has a directory
		symlink(t, file, filepath.Join(target, "plain")) // where it has a file
		r.mustRun("restore", "latest:"+src, "--target", target)
		checkOutside(t, dir, file)
		compareTrees(t, want, scanTree(t, target), true)
	})

	t.Run("symlink inside a directory", func(t *testing.T) {
		dir, file := newOutside(t)
		target := filepath.Join(t.TempDir(), "target")
		symlink(t, dir, filepath.Join(target, "x", "sub"))
		symlink(t, file, filepath.Join(target, "x", "file"))
		r.mustRun("restore", "latest:"+src, "--target", target)
		checkOutside(t, dir, file)
		compareTrees(t, want, scanTree(t, target), true)
	})

	t.Run("whole restore over a symlinked ancestor", func(t *testing.T) {
		// The first component of src's absolute path ("tmp") is a
		// symlink to the outside directory.
		dir, file := newOutside(t)
		target := filepath.Join(t.TempDir(), "target")
		first := strings.Split(strings.TrimPrefix(src, "/"), "/")[0]
		symlink(t, dir, filepath.Join(target, first))
		r.mustRun("restore", "latest", "--target", target)
		checkOutside(t, dir, file)
		compareTrees(t, want, scanTree(t, restoredPath(target, src)), false)
		checkOnlyPath(t, target, src)
	})

	t.Run("relative symlink escaping", func(t *testing.T) {
		// A relative link that climbs out of the target.
		dir, file := newOutside(t)
		target := filepath.Join(t.TempDir(), "target")
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(target, dir)
		if err != nil {
			t.Fatal(err)
		}
		symlink(t, rel, filepath.Join(target, "x"))
		r.mustRun("restore", "latest:"+src, "--target", target)
		checkOutside(t, dir, file)
		compareTrees(t, want, scanTree(t, target), true)
	})
}
