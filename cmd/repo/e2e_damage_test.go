package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// damageFixture is a repository whose data packs each hold the content of
// one known file: every backup adds one new file (the others are unchanged
// and taken from the parent), so the one large pack it adds is that
// file's.
type damageFixture struct {
	r   *testRepo
	src string
	// pack maps a file (relative to src) to the path of its data pack.
	pack map[string]string
}

// damagedFile is the file whose pack the damage tests break.
const damagedFile = "b.bin"

func newDamageFixture(t *testing.T) *damageFixture {
	t.Helper()
	f := &damageFixture{r: newRepo(t), src: filepath.Join(t.TempDir(), "src"), pack: map[string]string{}}
	mt := gentree.Epoch
	writeFile(t, filepath.Join(f.src, "keep", "small.txt"), gentree.Text(newRand(50), 100<<10), 0o644, mt)
	for i, name := range []string{"a.bin", damagedFile, "c.bin"} {
		writeFile(t, filepath.Join(f.src, name), randomBytes(uint64(51+i), 3<<20+i*12345), 0o644, mt)
		before := packFiles(t, f.r.dir)
		f.r.backup(f.src)
		var large []string
		for p, size := range packFiles(t, f.r.dir) {
			if _, ok := before[p]; !ok && size >= 1<<20 {
				large = append(large, p)
			}
		}
		if len(large) != 1 {
			t.Fatalf("backup adding %s added %d large packs (%v), want 1: the fixture needs rethinking", name, len(large), large)
		}
		f.pack[name] = large[0]
	}
	return f
}

// packID is the id of the pack file at p.
func packID(p string) string { return filepath.Base(p) }

// checkRestoreAfterDamage restores the latest snapshot and checks that it
// fails naming the damaged file and its pack, that every other file is
// restored exactly, and that the damaged file is absent.
func (f *damageFixture) checkRestoreAfterDamage(t *testing.T) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "target")
	_, stderr, code := f.r.run(nil, "restore", "latest", "--target", target)
	if code == 0 {
		t.Errorf("restore from a damaged repository exited 0")
	}
	bad := filepath.Join(f.src, damagedFile)
	id := packID(f.pack[damagedFile])
	if !strings.Contains(stderr, bad) || !strings.Contains(stderr, id[:8]) {
		t.Errorf("restore: stderr should name %s and pack %s:\n%s", bad, id[:8], stderr)
	}
	want := scanTree(t, f.src)
	delete(want, damagedFile)
	compareTrees(t, want, scanTree(t, restoredPath(target, f.src)), true)

	// dump verifies too: the damaged file fails, a sound one is exact.
	stdout, stderr, code := f.r.run(nil, "dump", "latest", bad)
	if code == 0 {
		t.Errorf("dump of the damaged file exited 0")
	}
	orig, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(orig, []byte(stdout)) {
		t.Errorf("dump of the damaged file wrote %d bytes that are not a prefix of the original", len(stdout))
	}
	if !strings.Contains(stderr, id[:8]) {
		t.Errorf("dump: stderr does not name pack %s: %q", id[:8], stderr)
	}
	good := filepath.Join(f.src, "c.bin")
	if out := f.r.mustRun("dump", "latest", good); out != string(mustRead(t, good)) {
		t.Errorf("dump of an intact file differs from the original")
	}
}

// checkFinds runs check (with extra args) and expects exit 1 and a
// finding naming the pack.
func (f *damageFixture) checkFinds(t *testing.T, args ...string) {
	t.Helper()
	id := packID(f.pack[damagedFile])
	stdout, stderr, code := f.r.run(nil, append([]string{"check"}, args...)...)
	if code != exitError {
		t.Errorf("check %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, exitError, stdout, stderr)
	}
	if !strings.Contains(stdout+stderr, id[:8]) {
		t.Errorf("check %s does not name pack %s:\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), id[:8], stdout, stderr)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestE2EDamage breaks one data pack in three ways and checks that
// restore, dump and check notice, name the pack and the file, and never
// write wrong content.
func TestE2EDamage(t *testing.T) {
	t.Run("truncated pack", func(t *testing.T) {
		f := newDamageFixture(t)
		f.r.damaged = true
		p := f.pack[damagedFile]
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		f.checkRestoreAfterDamage(t)
		f.checkFinds(t)
		f.checkFinds(t, "--read-data")
	})

	t.Run("deleted pack", func(t *testing.T) {
		f := newDamageFixture(t)
		f.r.damaged = true
		if err := os.Remove(f.pack[damagedFile]); err != nil {
			t.Fatal(err)
		}
		f.checkRestoreAfterDamage(t)
		f.checkFinds(t)
		f.checkFinds(t, "--read-data")
	})

	t.Run("flipped byte", func(t *testing.T) {
		f := newDamageFixture(t)
		f.r.damaged = true
		p := f.pack[damagedFile]
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		b := mustRead(t, p)
		// The pack is ~3 MiB of blobs and a header of a few hundred bytes:
		// its middle is inside a blob.
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		f.checkRestoreAfterDamage(t)
		f.checkFinds(t, "--read-data")
	})

	t.Run("intact", func(t *testing.T) {
		// The fixture itself restores and checks cleanly, so the failures
		// above are caused by the damage.
		f := newDamageFixture(t)
		target := filepath.Join(t.TempDir(), "target")
		f.r.mustRun("restore", "latest", "--target", target)
		compareTrees(t, scanTree(t, f.src), scanTree(t, restoredPath(target, f.src)), false)
		if out := f.r.mustRun("check", "--read-data"); !strings.Contains(out, "0 errors") {
			t.Errorf("check of the intact fixture: %s", out)
		}
	})
}
