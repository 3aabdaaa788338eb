package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"repo/internal/gentree"
)

// TestE2EIncremental: a second backup of an unchanged tree reads nothing
// and adds next to nothing, its parent is the first snapshot; after one
// append and one touch exactly those two files are read, and the result
// restores exactly.
func TestE2EIncremental(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{
		Seed: 2, TextFiles: 300, TextMax: 32 << 10, BinFiles: 4, BinMax: 2 << 20,
		RandFiles: 3, RandSize: 4 << 20, Odd: true,
	})

	first := r.backup(src)
	if first.FilesRead == 0 || first.BytesAdded == 0 {
		t.Fatalf("first backup read %d files and added %d bytes", first.FilesRead, first.BytesAdded)
	}
	second := r.backup(src)
	if second.FilesRead != 0 || second.BytesRead != 0 {
		t.Errorf("unchanged tree: second backup read %d files, %d bytes; want 0, 0", second.FilesRead, second.BytesRead)
	}
	if second.BytesAdded*100 >= first.BytesAdded {
		t.Errorf("unchanged tree: second backup added %d bytes, not < 1%% of the first's %d", second.BytesAdded, first.BytesAdded)
	}
	if second.FilesUnmodified != first.TotalFiles {
		t.Errorf("second backup: %d files unmodified, want all %d", second.FilesUnmodified, first.TotalFiles)
	}

	// Append to one file, change only the mtime of another.
	appended := filepath.Join(src, "d03", "e3", "t00003.txt")
	touched := filepath.Join(src, "rand", "r001.dat")
	f, err := os.OpenFile(appended, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("appended line\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2023, 5, 6, 7, 8, 9, 101112131, time.UTC)
	if err := os.Chtimes(touched, mt, mt); err != nil {
		t.Fatal(err)
	}
	var wantBytes int64
	for _, p := range []string{appended, touched} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		wantBytes += fi.Size()
	}

	third := r.backup(src)
	if third.FilesRead != 2 || third.BytesRead != wantBytes {
		t.Errorf("after changing 2 files: backup read %d files, %d bytes; want 2, %d", third.FilesRead, third.BytesRead, wantBytes)
	}
	if third.FilesChanged != 2 {
		t.Errorf("after changing 2 files: %d files changed, want 2", third.FilesChanged)
	}

	// Same size and mtime, new content: only the ctime tells, and the
	// file must be read.
	sneaky := filepath.Join(src, "d05", "e0", "t00005.txt")
	fi, err := os.Stat(sneaky)
	if err != nil {
		t.Fatal(err)
	}
	content := mustRead(t, sneaky)
	copy(content, "CHANGED")
	writeFile(t, sneaky, content, uint32(fi.Mode().Perm()), fi.ModTime())
	fourth := r.backup(src)
	if fourth.FilesRead != 1 || fourth.BytesRead != fi.Size() {
		t.Errorf("after rewriting a file with the same size and mtime: backup read %d files, %d bytes; want 1, %d", fourth.FilesRead, fourth.BytesRead, fi.Size())
	}

	// --force reads everything again, and adds nothing.
	forced := r.backup("--force", src)
	if forced.FilesRead != forced.TotalFiles || forced.FilesUnmodified != 0 {
		t.Errorf("--force: read %d of %d files, %d unmodified; want all read", forced.FilesRead, forced.TotalFiles, forced.FilesUnmodified)
	}
	if forced.BytesAdded*100 >= first.BytesAdded {
		t.Errorf("--force of an unchanged tree added %d bytes", forced.BytesAdded)
	}

	sns := r.snapshots()
	if len(sns) != 5 {
		t.Fatalf("%d snapshots, want 5", len(sns))
	}
	if sns[4].Parent != "" {
		t.Errorf("--force snapshot has parent %s, want none", sns[4].Parent)
	}
	for i, id := range []string{first.SnapshotID, second.SnapshotID, third.SnapshotID, fourth.SnapshotID, forced.SnapshotID} {
		if sns[i].ID != id {
			t.Errorf("snapshot %d is %s, want %s", i, sns[i].ID, id)
		}
	}
	if sns[0].Parent != "" {
		t.Errorf("first snapshot has parent %s", sns[0].Parent)
	}
	if sns[1].Parent != first.SnapshotID || sns[2].Parent != second.SnapshotID {
		t.Errorf("parents: second %q, third %q; want %s, %s", sns[1].Parent, sns[2].Parent, first.SnapshotID, second.SnapshotID)
	}

	// Restore the first snapshot, then the latest over it: existing files
	// are replaced, so the target ends up equal to the source.
	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", first.SnapshotID, "--target", target)
	r.mustRun("restore", "latest", "--target", target)
	compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
	checkOnlyPath(t, target, src)
}

// TestE2EDedup: two copies of a 20 MiB random file in one backup are
// stored once.
func TestE2EDedup(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	data := randomBytes(3, 20<<20)
	mt := gentree.Epoch
	writeFile(t, filepath.Join(src, "a", "copy1.bin"), data, 0o644, mt)
	writeFile(t, filepath.Join(src, "b", "c", "copy2.dat"), data, 0o600, mt)

	before := dataSize(t, r.dir)
	sum := r.backup(src)
	grown := dataSize(t, r.dir) - before
	if sum.BytesAdded >= 21<<20 {
		t.Errorf("backup added %d bytes for two copies of 20 MiB, want < 21 MiB", sum.BytesAdded)
	}
	// Random data does not compress: the one copy stored is at least 20 MiB.
	if grown < 20<<20 || grown >= 21<<20 {
		t.Errorf("data/ grew by %d bytes (%.2f MiB), want about 20 MiB", grown, float64(grown)/(1<<20))
	}

	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", "latest", "--target", target)
	compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
}
