package repo

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"repo/backend/local"
	"repo/internal/gentree"
)

// benchTree is a deterministic tree shaped like the shared dataset's
// files/ (many small text files, some binaries, random data), about
// 110 MiB, generated once per test binary.
var benchTree = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "repo-bench-tree-")
	if err != nil {
		return "", err
	}
	benchTreeMade.Store(true)
	return dir, gentree.Generate(dir, gentree.Spec{
		Seed: 42, TextFiles: 2000, TextMax: 50 << 10,
		BinFiles: 6, BinMax: 8 << 20, RandFiles: 2, RandSize: 16 << 20,
	})
})

// TestMain removes the benchmark tree, if a benchmark made one.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchTreeMade.Load() {
		if dir, err := benchTree(); err == nil {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// benchTreeMade is set once benchTree has run.
var benchTreeMade atomic.Bool

func treeBytes(b *testing.B, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// benchRepo makes a fresh encrypted repository on the local backend with
// the default pack size and compression, as the command line would.
func benchRepo(b *testing.B) *Repository {
	b.Helper()
	be, err := local.Create(filepath.Join(b.TempDir(), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := Init(b.Context(), be, InitOptions{Password: testPassword, KDF: testKDF}); err != nil {
		b.Fatal(err)
	}
	r, err := Open(b.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	if _, err := r.LoadIndex(b.Context()); err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkBackupFirst measures the whole backup pipeline (walk, read,
// chunk, hash, compress, seal, pack, write to a local repository) on new
// data; MB/s is of the tree's bytes.
func BenchmarkBackupFirst(b *testing.B) {
	dir, err := benchTree()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(treeBytes(b, dir))
	for b.Loop() {
		b.StopTimer()
		r := benchRepo(b)
		b.StartTimer()
		if _, err := r.Backup(b.Context(), BackupOptions{Paths: []string{dir}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackupUnchanged measures a backup of the same tree with the
// previous snapshot as parent: no file is read.
func BenchmarkBackupUnchanged(b *testing.B) {
	dir, err := benchTree()
	if err != nil {
		b.Fatal(err)
	}
	r := benchRepo(b)
	if _, err := r.Backup(b.Context(), BackupOptions{Paths: []string{dir}}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(treeBytes(b, dir))
	for b.Loop() {
		sn, err := r.Backup(b.Context(), BackupOptions{Paths: []string{dir}})
		if err != nil {
			b.Fatal(err)
		}
		if sn.Summary.FilesRead != 0 {
			b.Fatalf("unchanged backup read %d files", sn.Summary.FilesRead)
		}
	}
}

// BenchmarkRestore measures restoring the tree into a new directory.
func BenchmarkRestore(b *testing.B) {
	dir, err := benchTree()
	if err != nil {
		b.Fatal(err)
	}
	r := benchRepo(b)
	sn, err := r.Backup(b.Context(), BackupOptions{Paths: []string{dir}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(treeBytes(b, dir))
	for b.Loop() {
		b.StopTimer()
		target := filepath.Join(b.TempDir(), "restore")
		b.StartTimer()
		st, err := r.Restore(b.Context(), sn, dir, RestoreOptions{Target: target})
		if err != nil || st.Errors > 0 {
			b.Fatalf("restore: %v, %d errors", err, st.Errors)
		}
	}
}
