package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"repo/internal/gentree"
)

// restoreSummary is the summary line of restore --json.
type restoreSummary struct {
	MessageType  string `json:"message_type"`
	Files        int    `json:"files"`
	Bytes        int64  `json:"bytes"`
	Errors       int    `json:"errors"`
	FilesSkipped int    `json:"files_skipped"`
	BytesSkipped int64  `json:"bytes_skipped"`
	OtherSkipped int    `json:"other_skipped"`
}

// TestE2ERestoreOverwrite restores over an earlier restore that was
// damaged (files cut short, removed, touched, replaced by a symlink to the
// outside) with --overwrite if-changed, then never, and a sparse file.
func TestE2ERestoreOverwrite(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 90, TextFiles: 60, TextMax: 16 << 10, RandFiles: 2, RandSize: 3 << 20})
	// A sparse file: 1 MiB of data, 30 MiB of hole, 1 MiB of data.
	sparse := filepath.Join(src, "sparse")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 31 << 20} {
		if _, err := f.WriteAt(randomBytes(uint64(off), 1<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	setMtimes(t, src, gentree.Epoch)
	want := scanTree(t, src)
	var files int
	var size int64
	for _, e := range want {
		if e.typ == "file" {
			files++
			size += e.size
		}
	}
	r.backup(src)

	target := filepath.Join(t.TempDir(), "target")
	restore := func(args ...string) restoreSummary {
		t.Helper()
		out := r.mustRun(append([]string{"restore", "latest:" + src, "--target", target, "--json"}, args...)...)
		return lastSummary[restoreSummary](t, out)
	}
	st := restore()
	if st.Files != files || st.FilesSkipped != 0 || st.Bytes != size {
		t.Errorf("first restore: %+v, want %d files, %d bytes", st, files, size)
	}
	compareTrees(t, want, scanTree(t, target), true)
	if allocated(t, filepath.Join(target, "sparse")) >= 16<<20 && allocated(t, sparse) < 16<<20 {
		t.Errorf("the sparse file was restored with its hole filled")
	}

	t.Run("if-changed", func(t *testing.T) {
		var victims []string
		for p, e := range want {
			if e.typ == "file" && len(victims) < 3 && filepath.Base(p) != "sparse" {
				victims = append(victims, p)
			}
		}
		if len(victims) < 3 {
			t.Fatal("setup: fewer than three files")
		}
		outside := filepath.Join(t.TempDir(), "outside")
		if err := os.WriteFile(outside, []byte("outside"), 0o644); err != nil {
			t.Fatal(err)
		}
		at := func(p string) string { return filepath.Join(target, p) }
		if err := os.Truncate(at(victims[0]), 1); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(at(victims[1])); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(at(victims[2])); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, at(victims[2])); err != nil {
			t.Fatal(err)
		}
		// Content intact, only the time changed: kept.
		if err := os.Chtimes(at("sparse"), time.Now(), time.Now()); err != nil {
			t.Fatal(err)
		}
		st := restore("--overwrite", "if-changed")
		if st.Files != 3 || st.FilesSkipped != files-3 {
			t.Errorf("restore --overwrite if-changed: %+v; want 3 files written, %d skipped", st, files-3)
		}
		compareTrees(t, want, scanTree(t, target), true)
		if b, err := os.ReadFile(outside); err != nil || string(b) != "outside" {
			t.Errorf("restore wrote through a symlink: %q, %v", b, err)
		}
	})

	t.Run("never", func(t *testing.T) {
		p := filepath.Join(target, "sparse")
		if err := os.WriteFile(p, []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
		st := restore("--overwrite", "never")
		if st.Files != 0 || st.FilesSkipped != files || st.BytesSkipped != size {
			t.Errorf("restore --overwrite never: %+v; want all %d files skipped", st, files)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != "mine" {
			t.Errorf("--overwrite never replaced a file: %q, %v", b, err)
		}
		// The default replaces it.
		restore()
		compareTrees(t, want, scanTree(t, target), true)
	})

	t.Run("usage", func(t *testing.T) {
		if _, stderr, code := r.run(nil, "restore", "latest", "--target", target, "--overwrite", "sometimes"); code != exitUsage {
			t.Errorf("--overwrite sometimes: exit %d, want %d\n%s", code, exitUsage, stderr)
		}
	})
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
