package repo

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestAllZero(t *testing.T) {
	for _, n := range []int{0, 1, 7, len(zeroPage) - 1, len(zeroPage), 3*len(zeroPage) + 5} {
		b := make([]byte, n)
		if !allZero(b) {
			t.Errorf("%d zeros: not all zero", n)
		}
		for _, at := range []int{0, n / 2, n - 1} {
			if n == 0 {
				continue
			}
			b[at] = 1
			if allZero(b) {
				t.Errorf("%d bytes with a one at %d: all zero", n, at)
			}
			b[at] = 0
		}
	}
}

// allocated returns the bytes of disk that file p takes.
func allocated(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestRestoreSparse backs up files with large holes and checks that
// restore leaves holes where they were: the same content and size, in
// fewer disk blocks than the size.
func TestRestoreSparse(t *testing.T) {
	const mib = 1 << 20
	type extent struct{ off, n int64 }
	files := []struct {
		name string
		size int64
		data []extent // the rest is a hole
	}{
		{"middle-hole", 48 * mib, []extent{{0, mib}, {40 * mib, mib + 123}}},
		{"trailing-hole", 24 * mib, []extent{{0, mib + 77}}},
		{"leading-hole", 20*mib + 5, []extent{{19 * mib, mib + 5}}},
		{"only-zeros", 16 * mib, nil},
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	var data int64 // bytes of data, the rest of the files is holes
	for i, f := range files {
		buf := make([]byte, f.size)
		for j, e := range f.data {
			copy(buf[e.off:], randomBytes(uint64(10*i+j), int(e.n)))
			data += e.n
		}
		want[f.name] = buf
		p := filepath.Join(src, f.name)
		fd, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range f.data {
			if _, err := fd.WriteAt(buf[e.off:e.off+e.n], e.off); err != nil {
				t.Fatal(err)
			}
		}
		if err := fd.Truncate(f.size); err != nil {
			t.Fatal(err)
		}
		if err := fd.Close(); err != nil {
			t.Fatal(err)
		}
		if allocated(t, p) >= f.size/2 {
			t.Skipf("the file system of %s does not keep holes", src)
		}
	}

	r, _ := newTestRepo(t, true)
	sn := backup(t, r, BackupOptions{Paths: []string{src}})
	target, st := restore(t, r, sn, src)
	if st.Files != len(files) {
		t.Errorf("restored %d files, want %d", st.Files, len(files))
	}
	var total int64
	for _, f := range files {
		p := filepath.Join(target, f.name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[f.name]) {
			t.Errorf("%s: content differs (%d bytes, want %d)", f.name, len(got), len(want[f.name]))
		}
		a := allocated(t, p)
		total += a
		// Allow for blobs that hold data and zeros (a blob around the
		// boundary is written whole) and for metadata blocks.
		if a >= f.size/4 {
			t.Errorf("%s: %d bytes allocated for %d of size: holes filled", f.name, a, f.size)
		}
	}
	t.Logf("%d bytes of data: %d allocated", data, total)
}
