package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/creack/pty"

	"repo/internal/gentree"
)

// writeRandomFile writes size incompressible bytes made from seed to path,
// a megabyte at a time (no holes, no file in memory).
func writeRandomFile(t *testing.T, path string, seed uint64, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := newRand(seed)
	for left := size; left > 0; {
		n := min(left, 1<<20)
		if _, err := f.Write(gentree.Random(rng, n)); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// runOnPTY runs the binary with stdout on a pseudo-terminal of 120
// columns and returns what it wrote there, its stderr and its exit code.
func runOnPTY(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatalf("set pty size: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, env, nil, args...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = tty, &errb
	if err := cmd.Start(); err != nil {
		tty.Close()
		t.Fatalf("start repo %s: %v", quoteArgs(args), err)
	}
	// Only the child holds the terminal now: reading ends (with EIO)
	// when it exits.
	tty.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(&out, ptmx)
	}()
	err = cmd.Wait()
	<-copied
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run repo %s: %v", quoteArgs(args), err)
	}
	return out.String(), errb.String(), code
}

var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*[a-zA-Z]")

// progressFrames returns the progress lines drawn in out (colour codes
// removed), in order: the pieces between carriage returns and newlines
// that start with a percentage and a bar.
func progressFrames(out string) []string {
	var frames []string
	for _, piece := range strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }) {
		piece = strings.TrimSpace(ansiEscape.ReplaceAllString(piece, ""))
		if framePrefix.MatchString(piece) {
			frames = append(frames, piece)
		}
	}
	return frames
}

var framePrefix = regexp.MustCompile(`^\d+% \|`)

// backupFrame is a progress line of backup: percentage, elapsed time,
// files done of total, bytes done.
var backupFrame = regexp.MustCompile(`^(\d+)% \|[^|]*\| +\[\d+:\d\d\] backup (\d+)/(\d+)\+? files, ([0-9.]+ (?:[KMGTPE]i)?B)/`)

// TestE2EProgressTerminal: with stdout on a terminal, backup draws a
// progress line that updates (bytes done advance; the upload limit makes
// the backup last many updates), coloured unless --no-color or NO_COLOR
// say otherwise, and wiped before the summary; with stdout on a pipe the
// same backup prints only its summary.
func TestE2EProgressTerminal(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	env := append(slices.Clone(r.env), "REPO_PROGRESS_FPS=20")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	// More than the backup keeps in flight, so reading waits for the
	// limited upload and bytes done advance over the whole run.
	const size = 160 << 20
	writeRandomFile(t, filepath.Join(src, "big"), 61, size)

	out, stderr, code := runOnPTY(t, env, "backup", "--limit-upload", "40960", src)
	if code != 0 {
		t.Fatalf("backup on a terminal: exit %d\nstderr: %s\nstdout: %q", code, stderr, truncate(out, 4000))
	}
	frames := progressFrames(out)
	done := map[string]bool{}
	for _, f := range frames {
		m := backupFrame.FindStringSubmatch(f)
		if m == nil {
			t.Errorf("progress line %q does not look like a backup's", f)
			continue
		}
		if m[3] != "1" {
			t.Errorf("progress line %q: want 1 file in total", f)
		}
		done[m[4]] = true
	}
	if len(done) < 2 {
		t.Errorf("progress line drawn %d times with %d different byte counts, want at least 2; output:\n%q", len(frames), len(done), truncate(out, 4000))
	}
	if !strings.Contains(out, "\x1b[32m") {
		t.Errorf("no colour in the progress line on a terminal: %q", truncate(out, 2000))
	}
	// The line is wiped (overwritten with spaces) before the summary.
	if !regexp.MustCompile(`\r +\rfiles: +1 new`).MatchString(out) {
		t.Errorf("summary does not follow a wiped progress line: %q", truncate(out[max(0, len(out)-600):], 600))
	}

	// The same (re-read, deduplicated) backup to a pipe: no progress.
	out = r.mustRun("backup", "--force", src)
	if strings.ContainsAny(out, "\r\x1b") || len(progressFrames(out)) > 0 || !strings.HasPrefix(out, "files:") {
		t.Errorf("backup to a pipe printed more than its summary: %q", truncate(out, 2000))
	}

	// check --read-data, slowed by the download limit: a plain line with
	// --no-color or NO_COLOR.
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"--no-color", env, []string{"--no-color"}},
		{"NO_COLOR", append(slices.Clone(env), "NO_COLOR=1"), nil},
	} {
		args := append([]string{"check", "--read-data", "--limit-download", "153600"}, c.args...)
		out, stderr, code := runOnPTY(t, c.env, args...)
		if code != 0 {
			t.Fatalf("%s: check on a terminal: exit %d\nstderr: %s", c.name, code, stderr)
		}
		frames := progressFrames(out)
		if len(frames) == 0 || !strings.Contains(frames[len(frames)-1], "reading packs") {
			t.Errorf("%s: check drew no progress line of reading packs: %q", c.name, truncate(out, 2000))
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("%s: escape sequences in the output: %q", c.name, truncate(out, 2000))
		}
	}
}

// statusLine is the status object of --json.
type statusLine struct {
	MessageType      string   `json:"message_type"`
	Phase            string   `json:"phase"`
	SecondsElapsed   float64  `json:"seconds_elapsed"`
	SecondsRemaining *float64 `json:"seconds_remaining"`
	PercentDone      float64  `json:"percent_done"`
	TotalFiles       int64    `json:"total_files"`
	FilesDone        int64    `json:"files_done"`
	TotalBytes       int64    `json:"total_bytes"`
	BytesDone        int64    `json:"bytes_done"`
	TotalsFinal      bool     `json:"totals_final"`
	CurrentFiles     []string `json:"current_files"`
	Errors           int64    `json:"errors"`
}

// TestE2EProgressJSON: backup --json prints status objects while it runs
// (the upload limit makes it last many intervals), each with sensible
// figures, and its summary stays the last line.
func TestE2EProgressJSON(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	env := append(slices.Clone(r.env), "REPO_PROGRESS_FPS=50")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 48 << 20
	big := filepath.Join(src, "big")
	writeRandomFile(t, big, 62, size)

	out := mustRunBin(t, env, nil, "backup", "--json", "--limit-upload", "32768", src)
	lines := jsonLines(t, out)
	sum := lastSummary[backupSummary](t, out)
	if sum.TotalBytes != size {
		t.Errorf("summary: %d bytes, want %d", sum.TotalBytes, size)
	}
	var statuses []statusLine
	for i, l := range lines[:len(lines)-1] {
		switch l["message_type"] {
		case "status":
			var s statusLine
			decodeLine(t, l, &s)
			statuses = append(statuses, s)
		case "summary":
			t.Errorf("summary on line %d of %d", i+1, len(lines))
		}
	}
	if len(statuses) == 0 {
		t.Fatalf("no status object before the summary:\n%s", truncate(out, 4000))
	}
	var last statusLine
	for _, s := range statuses {
		if s.Phase != "backup" || s.PercentDone < 0 || s.PercentDone > 1 || s.BytesDone < last.BytesDone || s.SecondsElapsed < last.SecondsElapsed || s.Errors != 0 {
			t.Errorf("status %+v after %+v", s, last)
		}
		// The time left is known once the totals are and some work is done.
		if s.TotalsFinal && (s.TotalFiles != 1 || s.TotalBytes != size || (s.SecondsRemaining == nil) != (s.BytesDone == 0)) {
			t.Errorf("status with final totals: %+v", s)
		}
		if len(s.CurrentFiles) > 0 && s.CurrentFiles[0] != big {
			t.Errorf("status names current files %q, want %s", s.CurrentFiles, big)
		}
		last = s
	}

	// --quiet: no status objects, only the summary.
	out = mustRunBin(t, env, nil, "backup", "--json", "--quiet", "--force", "--limit-upload", "32768", src)
	if lines := jsonLines(t, out); len(lines) != 1 || lines[0]["message_type"] != "summary" {
		t.Errorf("backup --json --quiet printed %d lines, want only the summary:\n%s", len(lines), truncate(out, 2000))
	}
}

// verboseLine matches a -v line of text output.
var verboseLine = regexp.MustCompile(`^(new|changed|unchanged|restored|skipped) +(/\S*) \(([0-9.]+ (?:[KMGTPE]i)?B)\)$`)

// verboseItems returns action by path of the -v lines in out, failing the
// test on a file named twice.
func verboseItems(t *testing.T, out string) map[string]string {
	t.Helper()
	items := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if m := verboseLine.FindStringSubmatch(l); m != nil {
			if old, dup := items[m[2]]; dup {
				t.Errorf("%s named twice: %s, %s", m[2], old, m[1])
			}
			items[m[2]] = m[1]
		}
	}
	return items
}

// verboseJSONItems returns action by path of the verbose_status objects
// in out, checking each size against the file at the path in src.
func verboseJSONItems(t *testing.T, out string, sizes map[string]int64) map[string]string {
	t.Helper()
	items := map[string]string{}
	lines := jsonLines(t, out)
	for _, l := range lines {
		if l["message_type"] != "verbose_status" || l["action"] == nil {
			continue
		}
		var v struct {
			Action string `json:"action"`
			Item   string `json:"item"`
			Size   int64  `json:"size"`
		}
		decodeLine(t, l, &v)
		if _, dup := items[v.Item]; dup {
			t.Errorf("%s named twice", v.Item)
		}
		items[v.Item] = v.Action
		if v.Size != sizes[v.Item] {
			t.Errorf("verbose_status %+v: size %d, want %d", v, v.Size, sizes[v.Item])
		}
	}
	if len(lines) == 0 || lines[len(lines)-1]["message_type"] != "summary" {
		t.Errorf("last line is not the summary")
	}
	return items
}

// expectItems compares action by path with want.
func expectItems(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for p, a := range want {
		if got[p] != a {
			t.Errorf("%s: %s: %q, want %q", what, p, got[p], a)
		}
	}
	for p, a := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s: %q, want no line", what, p, a)
		}
	}
}

// TestE2EVerbose: -v prints one line (or with --json one verbose_status
// object) per file saved as new or changed, or restored; -vv also per file
// left as it was; --quiet prints none.
func TestE2EVerbose(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 23, TextFiles: 25, TextMax: 6 << 10, BinFiles: 2, BinMax: 300 << 10})
	sizes := map[string]int64{}
	scan := func() {
		clear(sizes)
		if err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				fi, err := d.Info()
				if err != nil {
					return err
				}
				sizes[p] = fi.Size()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	scan()
	all := func(action string, except map[string]string) map[string]string {
		m := map[string]string{}
		for p := range sizes {
			m[p] = action
		}
		for p, a := range except {
			if a == "" {
				delete(m, p)
			} else {
				m[p] = a
			}
		}
		return m
	}
	files := slices.Sorted(func(yield func(string) bool) {
		for p := range sizes {
			if !yield(p) {
				return
			}
		}
	})
	touch := func(p string) {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, "more")
		f.Close()
		scan()
	}

	out := r.mustRun("backup", "-v", src)
	expectItems(t, "first backup -v", verboseItems(t, out), all("new", nil))

	touch(files[0])
	out = r.mustRun("backup", "-v", src)
	expectItems(t, "backup -v after a change", verboseItems(t, out), map[string]string{files[0]: "changed"})

	out = r.mustRun("backup", "-vv", src)
	expectItems(t, "backup -vv", verboseItems(t, out), all("unchanged", nil))

	out = r.mustRun("backup", "-q", "-vv", src)
	expectItems(t, "backup -q -vv", verboseItems(t, out), nil)

	touch(files[1])
	out = r.mustRun("backup", "--json", "-vv", src)
	expectItems(t, "backup --json -vv", verboseJSONItems(t, out, sizes), all("unchanged", map[string]string{files[1]: "changed"}))

	target := filepath.Join(t.TempDir(), "target")
	out = r.mustRun("restore", "latest", "--target", target, "-v")
	expectItems(t, "restore -v", verboseItems(t, out), all("restored", nil))

	// Everything is at the target now: if-changed keeps it all.
	out = r.mustRun("restore", "latest", "--target", target, "--overwrite", "if-changed", "-v")
	expectItems(t, "restore -v of what is there", verboseItems(t, out), nil)
	out = r.mustRun("restore", "latest", "--target", target, "--overwrite", "if-changed", "-vv")
	expectItems(t, "restore -vv of what is there", verboseItems(t, out), all("skipped", nil))

	out = r.mustRun("restore", "latest", "--target", filepath.Join(t.TempDir(), "t2"), "--json", "-v")
	expectItems(t, "restore --json -v", verboseJSONItems(t, out, sizes), all("restored", nil))
}
