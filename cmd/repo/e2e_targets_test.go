package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// TestE2ETargets backs up several targets given as relative paths (a file,
// two directories, one target inside another) with excludes, and checks
// what the snapshot records and restores; then snapshot filters pick
// "latest" by host, tag and path.
func TestE2ETargets(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	base := t.TempDir()
	mt := gentree.Epoch
	generate(t, filepath.Join(base, "a"), gentree.Spec{Seed: 20, TextFiles: 30, TextMax: 4 << 10})
	generate(t, filepath.Join(base, "b"), gentree.Spec{Seed: 21, TextFiles: 30, TextMax: 4 << 10})
	writeFile(t, filepath.Join(base, "file.txt"), []byte("a lone file"), 0o640, mt)
	writeFile(t, filepath.Join(base, "not-a-target"), []byte("left alone"), 0o644, mt)
	// Excluded: *.tmp anywhere, an anchored path, and any "cache" directory.
	for _, p := range []string{"a/x.tmp", "a/d01/e1/y.tmp", "b/skip/me", "a/d02/cache/c1", "b/cache/c2"} {
		writeFile(t, filepath.Join(base, p), []byte(p), 0o644, mt)
	}
	setMtimes(t, base, mt)
	excludes := []string{"--exclude", "*.tmp", "--exclude", filepath.Join(base, "b", "skip"), "-e", "cache"}

	// Relative paths, one nested in another and one named twice.
	args := append([]string{"backup", "--json", "--tag", "first", "--host", "host-a", "a", "./b", "file.txt", "a/d01", "b"}, excludes...)
	stdout, stderr, code := runWith(t, runOptions{dir: base}, r.env, nil, args...)
	if code != 0 {
		t.Fatalf("backup: exit %d\n%s", code, stderr)
	}
	first := lastSummary[backupSummary](t, stdout)
	sns := r.snapshots()
	want := []string{filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "file.txt")}
	if len(sns) != 1 || !slices.Equal(sns[0].Paths, want) {
		t.Fatalf("snapshot paths: %+v, want %q", sns, want)
	}

	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", "latest", "--target", target)
	excluded := []string{"x.tmp", "d01/e1/y.tmp", "skip", "skip/me", "d02/cache", "d02/cache/c1", "cache", "cache/c2"}
	for _, d := range []string{"a", "b"} {
		wantTree := scanTree(t, filepath.Join(base, d))
		for _, p := range excluded {
			delete(wantTree, p)
		}
		compareTrees(t, wantTree, scanTree(t, restoredPath(target, filepath.Join(base, d))), false)
	}
	if got, err := os.ReadFile(restoredPath(target, filepath.Join(base, "file.txt"))); err != nil || string(got) != "a lone file" {
		t.Errorf("restored file.txt: %q, %v", got, err)
	}
	checkOnlyPath(t, target, want...)

	// Filters: a second snapshot of b alone from another host.
	stdout, stderr, code = runWith(t, runOptions{dir: base}, r.env, nil, "backup", "--json", "--host", "host-b", "--tag", "second", "b")
	if code != 0 {
		t.Fatalf("backup of b: exit %d\n%s", code, stderr)
	}
	second := lastSummary[backupSummary](t, stdout)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--host", "host-a"}, first.SnapshotID},
		{[]string{"--host", "host-b"}, second.SnapshotID},
		{[]string{"--tag", "first"}, first.SnapshotID},
		{[]string{"--path", "b"}, second.SnapshotID},
		{nil, second.SnapshotID},
	} {
		out, stderr, code := runWith(t, runOptions{dir: base}, r.env, nil, append([]string{"ls", "--json", "latest"}, c.args...)...)
		if code != 0 {
			t.Errorf("ls latest %q: exit %d: %s", c.args, code, stderr)
			continue
		}
		if got := lastSummary[map[string]any](t, out)["snapshot_id"]; got != c.want {
			t.Errorf("ls latest %q: snapshot %v, want %s", c.args, got, c.want)
		}
		out, stderr, code = runWith(t, runOptions{dir: base}, r.env, nil, append([]string{"snapshots", "--json"}, c.args...)...)
		if code != 0 {
			t.Errorf("snapshots %q: exit %d: %s", c.args, code, stderr)
		} else if c.args != nil {
			var ids []string
			for _, l := range jsonLines(t, out) {
				if l["message_type"] == "snapshot" {
					ids = append(ids, l["id"].(string))
				}
			}
			if !slices.Equal(ids, []string{c.want}) {
				t.Errorf("snapshots %q: %q, want [%s]", c.args, ids, c.want)
			}
		}
	}
	if _, _, code := r.run(nil, "ls", "latest", "--host", "no-such-host"); code != exitError {
		t.Errorf("ls latest --host no-such-host: exit %d, want %d", code, exitError)
	}
}

// TestE2ESymlinkedAncestor backs up a path that leads through a symlink to
// a directory (as /var/run → /run, or a home on another disk): the
// snapshot must be readable, check clean and restore the tree.
func TestE2ESymlinkedAncestor(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	base := t.TempDir()
	real := filepath.Join(base, "real")
	generate(t, filepath.Join(real, "src"), gentree.Spec{Seed: 22, TextFiles: 10, TextMax: 4 << 10})
	if err := os.Symlink("real", filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "link", "src")
	r.backup(src)

	if stdout, stderr, code := r.run(nil, "ls", "latest"); code != 0 || !strings.Contains(stdout, filepath.Join(src, "d00")) {
		t.Errorf("ls of the snapshot: exit %d, stderr %s\nstdout:\n%s", code, stderr, stdout)
	}
	if stdout, stderr, code := r.run(nil, "check"); code != 0 {
		t.Errorf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	target := filepath.Join(t.TempDir(), "target")
	if _, stderr, code := r.run(nil, "restore", "latest", "--target", target); code != 0 {
		t.Errorf("restore: exit %d\n%s", code, stderr)
	}
	compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
}
