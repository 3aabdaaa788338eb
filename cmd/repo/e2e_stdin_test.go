package main

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// TestE2EStdin backs up a 30 MiB stream from standard input and reads it
// back with dump and restore; names that are not one path component are
// refused.
func TestE2EStdin(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	// A dump-like stream: text with random runs, deterministic.
	rng := newRand(8)
	var stream []byte
	for len(stream) < 30<<20 {
		stream = append(stream, gentree.Text(rng, 1<<20)...)
		stream = append(stream, gentree.Random(rng, 256<<10)...)
	}
	stream = stream[:30<<20]

	out := mustRunBin(t, r.env, bytes.NewReader(stream), "backup", "--json", "--stdin", "--stdin-filename", "db.sql")
	sum := lastSummary[backupSummary](t, out)
	if sum.BytesRead != int64(len(stream)) || sum.TotalBytes != int64(len(stream)) {
		t.Errorf("stdin backup: read %d bytes, total %d; want %d", sum.BytesRead, sum.TotalBytes, len(stream))
	}

	if got := r.mustRun("dump", "latest", "/db.sql"); got != string(stream) {
		t.Errorf("dump of the stream: %d bytes that differ from the %d backed up", len(got), len(stream))
	}
	sns := r.snapshots()
	if len(sns) != 1 || sns[0].Source.Kind != "stdin" || !slices.Equal(sns[0].Paths, []string{"/db.sql"}) {
		t.Errorf("snapshots: %+v, want one with source kind stdin and paths [/db.sql]", sns)
	}
	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", "latest", "--target", target)
	got := scanTree(t, target)
	if len(got) != 2 || got["db.sql"].typ != "file" || !bytes.Equal(mustRead(t, filepath.Join(target, "db.sql")), stream) {
		t.Errorf("restore of the stream snapshot: %v, want only db.sql with the stream", got)
	}

	// An empty stream under a name with a space and unicode.
	mustRunBin(t, r.env, strings.NewReader(""), "backup", "--stdin", "--stdin-filename", "empty dump ü.sql")
	if out, stderr, code := r.run(nil, "dump", "latest", "/empty dump ü.sql"); code != 0 || out != "" {
		t.Errorf("dump of an empty stream: exit %d, %d bytes; stderr %s", code, len(out), stderr)
	}

	for _, name := range []string{"a/b", "/abs", "..", ".", "", "dir/"} {
		_, stderr, code := runBin(t, r.env, strings.NewReader("data"), "backup", "--stdin", "--stdin-filename", name)
		if code != exitUsage {
			t.Errorf("--stdin-filename %q: exit %d, want %d (usage)\nstderr: %s", name, code, exitUsage, stderr)
		}
	}
	if n := len(r.snapshots()); n != 2 {
		t.Errorf("refused stdin backups saved snapshots: %d, want 2", n)
	}
}
