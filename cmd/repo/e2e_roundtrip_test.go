package main

import (
	"bytes"
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"repo/internal/gentree"
)

// Chunk size class of files (chunk.FileClass): the edges are where
// off-by-one errors in the chunker or the content list would show.
const (
	minChunk = 512 << 10
	maxChunk = 8 << 20
)

// roundTripTree writes the tree of TestE2ERoundTrip under dir: gentree's
// text, binaries and odd entries, files at the chunk size edges, large
// random and compressible files, special modes, owners, a fifo, device
// nodes, a hard link, xattrs and
// fixed mtimes with nanoseconds.
func roundTripTree(t *testing.T, dir string) {
	t.Helper()
	generate(t, filepath.Join(dir, "gen"), gentree.Spec{
		Seed: 1, TextFiles: 120, TextMax: 64 << 10, BinFiles: 3, BinMax: 3 << 20, Odd: true,
	})
	mt := gentree.Epoch
	sizes := []int{0, 1, minChunk - 1, minChunk, minChunk + 1, maxChunk - 1, maxChunk, maxChunk + 1, 50 << 20}
	for i, n := range sizes {
		writeFile(t, filepath.Join(dir, "sizes", "random-"+strconv.Itoa(n)), randomBytes(uint64(100+i), n), 0o644, mt)
	}
	// Compressible data, and zeros: every chunk of the zeros is the same
	// blob, so the content list repeats one id.
	writeFile(t, filepath.Join(dir, "sizes", "text-10M"), gentree.Text(newRand(7), 10<<20), 0o644, mt)
	writeFile(t, filepath.Join(dir, "sizes", "zeros-20M"), make([]byte, 20<<20), 0o644, mt)

	m := filepath.Join(dir, "modes")
	for _, d := range []struct {
		name string
		mode uint32
	}{{"private-dir", 0o700}, {"setgid-dir", 0o2755}, {"sticky-dir", 0o1777}, {"readonly-dir", 0o555}} {
		p := filepath.Join(m, d.name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(p, "inside"), []byte(d.name), 0o644, mt)
		if err := os.Mkdir(filepath.Join(p, "subdir"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(filepath.Join(p, "subdir"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(p, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(m, "exec-0755"), []byte("#!/bin/sh\n"), 0o755, mt)
	writeFile(t, filepath.Join(m, "secret-0600"), []byte("secret"), 0o600, mt)
	writeFile(t, filepath.Join(m, "setuid-04755"), []byte("suid"), 0o4755, mt)
	writeFile(t, filepath.Join(m, "none-0000"), []byte("no bits"), 0, mt)
	owned := filepath.Join(m, "owned-by-12345")
	writeFile(t, owned, []byte("chowned"), 0o640, mt)
	if err := os.Lchown(owned, 12345, 23456); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(m, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		name string
		mode uint32
		dev  uint64
	}{{"char-1-3", unix.S_IFCHR | 0o640, unix.Mkdev(1, 3)}, {"block-7-0", unix.S_IFBLK | 0o600, unix.Mkdev(7, 0)}} {
		if err := unix.Mknod(filepath.Join(m, d.name), d.mode, int(d.dev)); err != nil {
			t.Logf("mknod %s: %v; device nodes not tested", d.name, err)
		}
	}
	// Two names of one file: restored as two files with the content.
	if err := os.Link(filepath.Join(m, "secret-0600"), filepath.Join(m, "hardlink-to-secret")); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ target, name string }{
		{"/etc/hostname", "abs-link"},
		{"../sizes/random-1", "rel-link"},
		{"not-utf8-\xff-target", "odd-target-link"},
		{strings.Repeat("long/", 200) + "end", "long-target-link"},
	} {
		if err := os.Symlink(l.target, filepath.Join(m, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Lchown(filepath.Join(m, "rel-link"), 12345, 23456); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(m, "private-dir"), 12345, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(m, "exec-0755"), "user.e2e", []byte("file attribute\x00with nul"), 0); err != nil {
		if !errors.Is(err, unix.ENOTSUP) {
			t.Fatal(err)
		}
		t.Log("extended attributes not supported here; not tested")
	} else if err := unix.Lsetxattr(filepath.Join(m, "private-dir"), "user.dir", []byte("dir attribute"), 0); err != nil {
		t.Fatal(err)
	}

	setMtimes(t, dir, gentree.Epoch)
	// Times around the epoch and far away: negative seconds, 0 and 1 ns
	// below a second, a date after 2038.
	for name, ts := range map[string]time.Time{
		"before-epoch": time.Unix(-1, 999999999),
		"epoch":        time.Unix(0, 0),
		"year-2100":    time.Date(2100, 1, 2, 3, 4, 5, 123456789, time.UTC),
		"year-1901":    time.Date(1901, 12, 14, 0, 0, 0, 1, time.UTC),
	} {
		writeFile(t, filepath.Join(dir, "times", name), []byte(name), 0o644, ts)
	}
	times := time.Date(2001, 2, 3, 4, 5, 6, 999999999, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "times"), times, times); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir, times, times); err != nil {
		t.Fatal(err)
	}
}

// TestE2ERoundTrip backs up a tree with every kind of entry, restores it
// whole and in part, and compares content, modes, owners, mtimes (to the
// nanosecond), link targets and the exact set of entries; dump and ls are
// checked against the same tree.
func TestE2ERoundTrip(t *testing.T) {
	skipHeavy(t)
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	roundTripTree(t, src)
	want := scanTree(t, src)

	sum := r.backup(src)
	if sum.Errors != 0 {
		t.Errorf("backup reported %d errors", sum.Errors)
	}

	t.Run("restore latest", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", "latest", "--target", target)
		compareTrees(t, want, scanTree(t, restoredPath(target, src)), false)
		checkOnlyPath(t, target, src)
	})

	t.Run("restore sub-path", func(t *testing.T) {
		sub := filepath.Join(src, "gen")
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", sum.SnapshotID[:8]+":"+sub, "--target", target)
		compareTrees(t, scanTree(t, sub), scanTree(t, target), true)
	})

	t.Run("restore single file", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", "latest:"+filepath.Join(src, "sizes", "random-"+strconv.Itoa(minChunk)), "--target", target)
		got := scanTree(t, target)
		w := want["sizes/random-"+strconv.Itoa(minChunk)]
		if g, ok := got["random-"+strconv.Itoa(minChunk)]; !ok || g != w || len(got) != 2 {
			t.Errorf("restore of one file: got %v, want only random-%d = %v", got, minChunk, w)
		}
	})

	t.Run("dump", func(t *testing.T) {
		for _, name := range []string{"sizes/random-" + strconv.Itoa(maxChunk+1), "sizes/random-0", "sizes/zeros-20M", "gen/odd/not-utf8-\xff\xfe"} {
			orig, err := os.ReadFile(filepath.Join(src, name))
			if err != nil {
				t.Fatal(err)
			}
			out := r.mustRun("dump", "latest", filepath.Join(src, name))
			if !bytes.Equal([]byte(out), orig) {
				t.Errorf("dump %q: %d bytes differ from the original's %d", name, len(out), len(orig))
			}
		}
		if _, _, code := r.run(nil, "dump", "latest", filepath.Join(src, "sizes")); code == 0 {
			t.Errorf("dump of a directory exited 0")
		}
		if _, _, code := r.run(nil, "dump", "latest", filepath.Join(src, "no-such-file")); code == 0 {
			t.Errorf("dump of a missing path exited 0")
		}
	})

	t.Run("ls", func(t *testing.T) {
		// Every path of the snapshot: the directories leading to src, src
		// and everything below it.
		var paths []string
		for d := src; d != "/"; d = filepath.Dir(d) {
			paths = append(paths, d)
		}
		for rel := range want {
			if rel != "." {
				paths = append(paths, path.Join(src, rel))
			}
		}
		slices.Sort(paths)

		// Plain ls: one line per path (names with a newline span lines).
		lines := strings.Split(strings.TrimSuffix(r.mustRun("ls", "latest"), "\n"), "\n")
		var plain []string
		for _, p := range paths {
			if !strings.Contains(p, "\n") {
				plain = append(plain, p)
			}
		}
		for _, p := range plain {
			if !slices.Contains(lines, p) {
				t.Errorf("ls does not list %q", p)
			}
		}
		wantLines := 0
		for _, p := range paths {
			wantLines += strings.Count(p, "\n") + 1
		}
		if len(lines) != wantLines {
			t.Errorf("ls printed %d lines, want %d", len(lines), wantLines)
		}

		// ls --json: exactly the set of paths (JSON strings cannot hold
		// invalid UTF-8: encoding/json writes U+FFFD for each such byte).
		var got, wantJSON []string
		for _, l := range jsonLines(t, r.mustRun("ls", "--json", "latest")) {
			if l["message_type"] == "node" {
				got = append(got, l["path"].(string))
			}
		}
		for _, p := range paths {
			wantJSON = append(wantJSON, jsonString(t, p))
		}
		for _, d := range setDiff(got, wantJSON) {
			t.Errorf("ls --json: %s", d)
		}
	})
}
