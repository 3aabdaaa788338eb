package floor

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"repo/chunk"
	"repo/internal/gentree"
)

// tree writes a small fixed-seed tree with files below and above the
// chunker's minimum, and returns its root, file count and byte count.
func tree(t *testing.T) (string, int, int64) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	spec := gentree.Spec{Seed: 7, TextFiles: 60, TextMax: 20 << 10, BinFiles: 3, BinMax: 3 << 20, RandFiles: 2, RandSize: 2 << 20}
	if err := gentree.Generate(dir, spec); err != nil {
		t.Fatal(err)
	}
	var n int
	var size int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n++
			size += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir, n, size
}

func TestCopyTree(t *testing.T) {
	src, n, _ := tree(t)
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := CopyTree(src, dst, 2); err != nil {
		t.Fatal(err)
	}
	copied := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: copy differs", rel)
		}
		copied++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if copied != n {
		t.Fatalf("compared %d files, want %d", copied, n)
	}
	if _, err := CopyTree(src, dst, 2); err == nil {
		t.Fatal("CopyTree into an existing directory succeeded")
	}
}

func TestStages(t *testing.T) {
	src, n, size := tree(t)
	st, err := Stages(src, 2)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != n || st.Bytes != size {
		t.Fatalf("saw %d files, %d bytes; want %d, %d", st.Files, st.Bytes, n, size)
	}
	// The 3 MiB binaries are cut, the small files are not.
	if st.Chunks <= n {
		t.Errorf("%d chunks for %d files: nothing was cut", st.Chunks, n)
	}
	if st.Chunks > n+int(size/int64(chunk.FileClass.MinSize)) {
		t.Errorf("%d chunks for %d bytes in %d files: chunks below the class minimum", st.Chunks, size, n)
	}
	// Text compresses; the random files are stored as they are.
	if st.Stored >= size {
		t.Errorf("compression left %d of %d bytes", st.Stored, size)
	}
	if st.Total() <= 0 || st.Wall <= 0 {
		t.Error("no time measured")
	}
}
