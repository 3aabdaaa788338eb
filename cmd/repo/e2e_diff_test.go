package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestE2EDiff: diff lists exactly the added, removed, changed and
// retyped entries between two backups of a changed tree, with metadata-only
// changes behind --metadata, and a summary that counts them and their bytes.
func TestE2EDiff(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	mt := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	fill := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	writeFile(t, filepath.Join(src, "a.txt"), fill(100, 'a'), 0o644, mt)
	writeFile(t, filepath.Join(src, "b.txt"), fill(200, 'b'), 0o644, mt)
	writeFile(t, filepath.Join(src, "keep.txt"), fill(50, 'k'), 0o644, mt)
	writeFile(t, filepath.Join(src, "meta.txt"), fill(60, 'm'), 0o644, mt)
	writeFile(t, filepath.Join(src, "d", "x.txt"), fill(10, 'x'), 0o644, mt)
	writeFile(t, filepath.Join(src, "d", "y.txt"), fill(20, 'y'), 0o644, mt)
	writeFile(t, filepath.Join(src, "t"), fill(5, 't'), 0o644, mt)
	for i := range 30 {
		writeFile(t, filepath.Join(src, "big", "sub", string(rune('a'+i%26))+strings.Repeat("f", i/26+1)), randomBytes(uint64(i), 3000), 0o644, mt)
	}
	if err := os.Symlink("target1", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	first := r.backup(src).SnapshotID

	writeFile(t, filepath.Join(src, "a.txt"), fill(150, 'A'), 0o644, mt.Add(time.Hour))
	mustNoErr(t, os.Remove(filepath.Join(src, "b.txt")))
	writeFile(t, filepath.Join(src, "c.txt"), fill(300, 'c'), 0o644, mt)
	mustNoErr(t, os.Chmod(filepath.Join(src, "meta.txt"), 0o600))
	mustNoErr(t, os.RemoveAll(filepath.Join(src, "d")))
	mustNoErr(t, os.Remove(filepath.Join(src, "t")))
	writeFile(t, filepath.Join(src, "t", "z.txt"), fill(7, 'z'), 0o644, mt)
	writeFile(t, filepath.Join(src, "newdir", "n.txt"), fill(40, 'n'), 0o644, mt)
	mustNoErr(t, os.Remove(filepath.Join(src, "link")))
	mustNoErr(t, os.Symlink("target2", filepath.Join(src, "link")))
	second := r.backup(src).SnapshotID

	want := []string{
		"M " + src + "/a.txt",
		"- " + src + "/b.txt",
		"+ " + src + "/c.txt",
		"- " + src + "/d/",
		"- " + src + "/d/x.txt",
		"- " + src + "/d/y.txt",
		"M " + src + "/link",
		"+ " + src + "/newdir/",
		"+ " + src + "/newdir/n.txt",
		"T " + src + "/t/",
		"+ " + src + "/t/z.txt",
	}
	changeLines := func(out string) []string {
		var l []string
		for line := range strings.Lines(out) {
			line = strings.TrimSuffix(line, "\n")
			if len(line) > 2 && strings.Contains("+-MTU", line[:1]) && line[1] == ' ' {
				l = append(l, line)
			}
		}
		return l
	}

	out := r.mustRun("diff", first[:8], "latest")
	if got := changeLines(out); !slices.Equal(got, want) {
		t.Errorf("diff:\n got %q\nwant %q\noutput:\n%s", got, want, out)
	}
	for _, s := range []string{
		"files:  3 added, 3 removed, 1 changed\n",
		"dirs:   1 added, 1 removed\n",
		"others: 0 added, 0 removed, 1 changed\n",
		"bytes:  497 B added, 335 B removed\n",
		"(listed with --metadata)",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("diff summary lacks %q:\n%s", s, out)
		}
	}

	out = r.mustRun("diff", "--metadata", first, second)
	if got := changeLines(out); !slices.Contains(got, "U "+src+"/meta.txt") || slices.Contains(got, "U "+src+"/keep.txt") {
		t.Errorf("diff --metadata lists %q, want U for meta.txt and nothing for keep.txt", got)
	}

	out = r.mustRun("diff", "--json", first, second)
	var got []string
	for _, line := range jsonLines(t, out) {
		if line["message_type"] != "change" {
			continue
		}
		var c diffChangeJSON
		decodeLine(t, line, &c)
		p := c.Path
		if c.Type == "dir" {
			p += "/"
		}
		got = append(got, c.Modifier+" "+p)
		switch c.Path {
		case src + "/a.txt":
			if c.Size == nil || *c.Size != 150 || c.OldSize == nil || *c.OldSize != 100 {
				t.Errorf("json change of a.txt: %+v", line)
			}
		case src + "/t":
			if c.Type != "dir" || c.OldType != "file" {
				t.Errorf("json change of t: %+v", line)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff --json:\n got %q\nwant %q", got, want)
	}
	sum := lastSummary[struct {
		OldSnapshot     string `json:"old_snapshot"`
		NewSnapshot     string `json:"new_snapshot"`
		FilesAdded      int    `json:"files_added"`
		FilesRemoved    int    `json:"files_removed"`
		FilesChanged    int    `json:"files_changed"`
		DirsAdded       int    `json:"dirs_added"`
		DirsRemoved     int    `json:"dirs_removed"`
		OthersChanged   int    `json:"others_changed"`
		TypeChanged     int    `json:"type_changed"`
		MetadataChanged int    `json:"metadata_changed"`
		BytesAdded      int64  `json:"bytes_added"`
		BytesRemoved    int64  `json:"bytes_removed"`
	}](t, out)
	if sum.OldSnapshot != first || sum.NewSnapshot != second || sum.FilesAdded != 3 || sum.FilesRemoved != 3 || sum.FilesChanged != 1 ||
		sum.DirsAdded != 1 || sum.DirsRemoved != 1 || sum.OthersChanged != 1 || sum.TypeChanged != 1 || sum.MetadataChanged < 1 ||
		sum.BytesAdded != 497 || sum.BytesRemoved != 335 {
		t.Errorf("diff --json summary: %+v", sum)
	}

	// A snapshot against itself, and an unchanged subdirectory.
	for _, args := range [][]string{{"diff", first, first}, {"diff", first + ":" + src + "/big", second + ":" + src + "/big"}} {
		out := r.mustRun(args...)
		if l := changeLines(out); len(l) != 0 || !strings.Contains(out, "files:  0 added, 0 removed, 0 changed\n") {
			t.Errorf("repo %s: changes %q\n%s", quoteArgs(args), l, out)
		}
	}
	// Subpaths: a file that became a directory.
	out = r.mustRun("diff", first+":"+src+"/t", second+":"+src+"/t")
	if l, w := changeLines(out), []string{"T " + src + "/t/", "+ " + src + "/t/z.txt"}; !slices.Equal(l, w) {
		t.Errorf("diff of t: %q, want %q", l, w)
	}

	for _, args := range [][]string{{"diff", first}, {"diff", first, second, "latest"}, {"diff", "--bogus", first, second}} {
		if _, stderr, code := r.run(nil, args...); code != 2 {
			t.Errorf("repo %s: exit %d, want 2\n%s", quoteArgs(args), code, stderr)
		}
	}
	if _, stderr, code := r.run(nil, "diff", first, "deadbeef"); code != 1 || !strings.Contains(stderr, "deadbeef") {
		t.Errorf("diff with a missing snapshot: exit %d\n%s", code, stderr)
	}
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
