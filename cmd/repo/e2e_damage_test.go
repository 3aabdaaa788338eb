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
	// firstTreePack is the tree pack of the first backup: the only one
	// holding the tree of keep/, which never changes.
	firstTreePack string
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
		var large, small []string
		for p, size := range packFiles(t, f.r.dir) {
			switch _, ok := before[p]; {
			case ok:
			case size >= 1<<20:
				large = append(large, p)
			default:
				small = append(small, p)
			}
		}
		if len(large) != 1 || len(small) != 1 {
			t.Fatalf("backup adding %s added %d large packs (%v) and %d small ones, want 1 and 1: the fixture needs rethinking", name, len(large), large, len(small))
		}
		f.pack[name] = large[0]
		if i == 0 {
			f.firstTreePack = small[0]
		}
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
	compareTrees(t, want, scanTree(t, restoredPath(target, f.src)), false)

	// With --json the failure is an error object naming the file.
	target = filepath.Join(t.TempDir(), "target")
	stdout, _, code := f.r.run(nil, "restore", "--json", "latest", "--target", target)
	var items []string
	for _, l := range jsonLines(t, stdout) {
		if l["message_type"] == "error" {
			items = append(items, l["item"].(string))
			if msg, _ := l["error"].(string); !strings.Contains(msg, id[:8]) {
				t.Errorf("restore --json: error object does not name pack %s: %v", id[:8], l)
			}
		}
	}
	if code == 0 || len(items) != 1 || items[0] != bad {
		t.Errorf("restore --json: exit %d, error items %q; want non-zero and [%s]", code, items, bad)
	}

	// dump verifies too: the damaged file fails, a sound one is exact.
	stdout, stderr, code = f.r.run(nil, "dump", "latest", bad)
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

	// The same as JSON: findings, a summary counting them, and the exit
	// error last.
	args = append([]string{"check", "--json"}, args...)
	stdout, _, code = f.r.run(nil, args...)
	lines := jsonLines(t, stdout)
	findings, summaryErrors := 0, -1.0
	for _, l := range lines {
		switch l["message_type"] {
		case "finding":
			if l["severity"] == "error" && strings.Contains(l["object"].(string)+l["message"].(string), id) {
				findings++
			}
		case "summary":
			summaryErrors, _ = l["errors"].(float64)
		}
	}
	if code != exitError || findings == 0 || summaryErrors < 1 || lines[len(lines)-1]["message_type"] != "exit_error" {
		t.Errorf("repo %s: exit %d, %d error findings naming pack %s, summary errors %v, want exit 1, >0, >0 and exit_error last:\n%s",
			quoteArgs(args), code, findings, id[:8], summaryErrors, stdout)
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

	t.Run("deleted tree pack", func(t *testing.T) {
		// keep/ is lost; everything else restores, and the loss is named.
		f := newDamageFixture(t)
		f.r.damaged = true
		if err := os.Remove(f.firstTreePack); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(t.TempDir(), "target")
		_, stderr, code := f.r.run(nil, "restore", "latest", "--target", target)
		id := packID(f.firstTreePack)
		keep := filepath.Join(f.src, "keep")
		if code == 0 || !strings.Contains(stderr, keep) || !strings.Contains(stderr, id[:8]) {
			t.Errorf("restore without keep/'s tree: exit %d; stderr should name %s and pack %s:\n%s", code, keep, id[:8], stderr)
		}
		want := scanTree(t, f.src)
		delete(want, "keep")
		delete(want, "keep/small.txt")
		got := scanTree(t, restoredPath(target, f.src))
		delete(got, "keep") // may be left as an empty directory
		compareTrees(t, want, got, false)
		stdout, stderr, code := f.r.run(nil, "check")
		if code != exitError || !strings.Contains(stdout, id[:8]) {
			t.Errorf("check without a tree pack: exit %d, want %d naming pack %s\n%s%s", code, exitError, id[:8], stdout, stderr)
		}
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
