package main

// End-to-end tests: they build the repo binary once and run it as a
// subprocess with a clean environment, as a user would. Every test
// repository made with newRepo checks itself (check --read-data) when its
// test ends, unless the test damaged it on purpose.
//
// Run them with: go test -count=1 -run E2E ./cmd/repo/
// With -short the heavy ones (hundreds of MiB) are skipped.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"repo/internal/gentree"
)

// e2eBinDir holds the binary; world-readable so tests can run it as nobody.
var e2eBinDir string

var (
	e2eBuildOnce sync.Once
	e2eBin       string
	e2eBuildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "repo-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: make binary directory:", err)
		os.Exit(1)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: chmod binary directory:", err)
		os.Exit(1)
	}
	e2eBinDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoBinary returns the path of the repo binary, building it on first use
// (so unit tests in this package do not pay for the build).
func repoBinary(t *testing.T) string {
	t.Helper()
	e2eBuildOnce.Do(func() {
		bin := filepath.Join(e2eBinDir, "repo")
		cmd := exec.Command("go", "build", "-o", bin, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			e2eBuildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		e2eBin = bin
	})
	if e2eBuildErr != nil {
		t.Fatal(e2eBuildErr)
	}
	return e2eBin
}

// testPassword is the password of every test repository.
const testPassword = "correct horse battery staple"

// cmdTimeout stops a hung command so the test fails instead of hanging;
// no assertion depends on it.
const cmdTimeout = 10 * time.Minute

// baseEnv returns a clean environment without a password or repository:
// PATH, HOME, TMPDIR and REPO_CACHE_DIR, each below a fresh temporary
// directory.
func baseEnv(t *testing.T) []string {
	t.Helper()
	home := t.TempDir()
	tmp := filepath.Join(home, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + home,
		"TMPDIR=" + tmp,
		"REPO_CACHE_DIR=" + filepath.Join(home, "cache"),
		// The settle pause of lock acquisition is for backends whose
		// listings lag; the local one never does, and 200 ms per command
		// adds up over hundreds of commands. The lock tests set their own.
		"REPO_LOCK_SETTLE=20ms",
	}
}

// repoCommand prepares the binary with env and stdin (nil: /dev/null) in
// its own session, so it has no controlling terminal to prompt on.
func repoCommand(t *testing.T, ctx context.Context, env []string, stdin io.Reader, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, repoBinary(t), args...)
	cmd.Env = env
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

// runBin runs the binary and returns what it printed and its exit code (-1
// when it was killed by a signal).
func runBin(t *testing.T, env []string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCred(t, nil, env, stdin, args...)
}

// runCred is runBin as the user cred (nil: as this process).
func runCred(t *testing.T, cred *syscall.Credential, env []string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runWith(t, runOptions{cred: cred}, env, stdin, args...)
}

// runOptions are the less common ways to start the binary.
type runOptions struct {
	cred *syscall.Credential // run as this user; nil: as this process
	dir  string              // working directory; "": this process's
}

// runWith is runBin with options.
func runWith(t *testing.T, o runOptions, env []string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, env, stdin, args...)
	cmd.SysProcAttr.Credential = o.cred
	cmd.Dir = o.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("run repo %s: %v", quoteArgs(args), err)
	return "", "", 0
}

// mustRunBin runs the binary and fails the test unless it exits 0.
func mustRunBin(t *testing.T, env []string, stdin io.Reader, args ...string) string {
	t.Helper()
	stdout, stderr, code := runBin(t, env, stdin, args...)
	if code != 0 {
		t.Fatalf("repo %s: exit %d\nstderr:\n%s\nstdout:\n%s", quoteArgs(args), code, stderr, truncate(stdout, 4000))
	}
	return stdout
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t\n\"'\\") || a == "" {
			a = fmt.Sprintf("%q", a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("… (%d more bytes)", len(s)-n)
}

// testRepo is a repository made for one test.
type testRepo struct {
	t   *testing.T
	dir string
	// env has REPO_REPOSITORY and REPO_PASSWORD set.
	env []string
	// damaged skips the final check: the test broke the repository on
	// purpose.
	damaged bool
}

// newRepo inits a repository in a temporary directory (extra init flags in
// initArgs) and registers a check --read-data of it at the end of the test.
func newRepo(t *testing.T, initArgs ...string) *testRepo {
	t.Helper()
	r := &testRepo{t: t, dir: filepath.Join(t.TempDir(), "repo")}
	r.env = append(baseEnv(t), "REPO_REPOSITORY="+r.dir, "REPO_PASSWORD="+testPassword)
	// A cheap password hash: tests run hundreds of commands, and each
	// would spend 0.2 s of CPU on the default argon2id cost.
	r.mustRun(append([]string{"init", "--kdf-memory", "1", "--kdf-time", "1"}, initArgs...)...)
	r.cleanupCheck()
	return r
}

// cleanupCheck registers the final check of the repository.
func (r *testRepo) cleanupCheck() {
	t := r.t
	t.Cleanup(func() {
		if r.damaged {
			return
		}
		stdout, stderr, code := runBin(t, r.env, nil, "check", "--read-data")
		if code != 0 {
			t.Errorf("final check --read-data of the test repository: exit %d\nstdout:\n%s\nstderr:\n%s", code, truncate(stdout, 8000), stderr)
		}
	})
}

func (r *testRepo) run(stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	r.t.Helper()
	return runBin(r.t, r.env, stdin, args...)
}

func (r *testRepo) mustRun(args ...string) string {
	r.t.Helper()
	return mustRunBin(r.t, r.env, nil, args...)
}

// backupSummary is the summary line of backup --json.
type backupSummary struct {
	MessageType     string `json:"message_type"`
	SnapshotID      string `json:"snapshot_id"`
	FilesNew        int    `json:"files_new"`
	FilesChanged    int    `json:"files_changed"`
	FilesUnmodified int    `json:"files_unmodified"`
	FilesRead       int    `json:"files_read"`
	BytesRead       int64  `json:"bytes_read"`
	BytesSkipped    int64  `json:"bytes_skipped"`
	TotalFiles      int    `json:"total_files"`
	TotalBytes      int64  `json:"total_bytes"`
	BlobsAdded      int    `json:"blobs_added"`
	BytesAdded      int64  `json:"bytes_added"`
	BytesStored     int64  `json:"bytes_stored"`
	PacksResumed    int    `json:"packs_resumed"`
	PacksAdded      int    `json:"packs_added"`
	Errors          int    `json:"errors"`
}

// backup runs backup --json of paths (extra flags first) and returns its
// summary; it fails the test unless the backup exits 0.
func (r *testRepo) backup(args ...string) backupSummary {
	r.t.Helper()
	out := r.mustRun(append([]string{"backup", "--json"}, args...)...)
	return lastSummary[backupSummary](r.t, out)
}

// snapshotJSON is one line of snapshots --json.
type snapshotJSON struct {
	MessageType string   `json:"message_type"`
	ID          string   `json:"id"`
	ShortID     string   `json:"short_id"`
	Paths       []string `json:"paths"`
	Parent      string   `json:"parent"`
	Source      struct {
		Kind string `json:"kind"`
	} `json:"source"`
}

// snapshots lists the repository's snapshots, oldest first.
func (r *testRepo) snapshots() []snapshotJSON {
	r.t.Helper()
	out := r.mustRun("snapshots", "--json")
	var sns []snapshotJSON
	for _, line := range jsonLines(r.t, out) {
		if line["message_type"] != "snapshot" {
			continue
		}
		var sn snapshotJSON
		decodeLine(r.t, line, &sn)
		sns = append(sns, sn)
	}
	return sns
}

// jsonLines parses out as JSON objects, one per non-empty line, each with a
// string message_type; anything else fails the test.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" && out == "" {
			break
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("output line %d is not a JSON object: %v\n%q", i+1, err, truncate(l, 500))
		}
		if mt, ok := m["message_type"].(string); !ok || mt == "" {
			t.Fatalf("output line %d has no message_type: %q", i+1, truncate(l, 500))
		}
		lines = append(lines, m)
	}
	return lines
}

func decodeLine(t *testing.T, line map[string]any, v any) {
	t.Helper()
	b, err := json.Marshal(line)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// lastSummary decodes the last line of out, which must be the summary.
func lastSummary[T any](t *testing.T, out string) T {
	t.Helper()
	lines := jsonLines(t, out)
	var v T
	if len(lines) == 0 {
		t.Fatalf("no JSON output")
	}
	last := lines[len(lines)-1]
	if last["message_type"] != "summary" {
		t.Fatalf("last output line has message_type %v, want summary", last["message_type"])
	}
	decodeLine(t, last, &v)
	return v
}

// --- deterministic data ---

// newRand returns a PCG generator for seed.
func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
}

// randomBytes returns n incompressible bytes made from seed.
func randomBytes(seed uint64, n int) []byte {
	return gentree.Random(newRand(seed), n)
}

// writeFile writes data to p with mode (exactly, via chmod) and mtime.
func writeFile(t *testing.T, p string, data []byte, mode uint32, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// generate writes a gentree tree and fails the test on error.
func generate(t *testing.T, dir string, spec gentree.Spec) {
	t.Helper()
	if err := gentree.Generate(dir, spec); err != nil {
		t.Fatalf("generate %s: %v", dir, err)
	}
}

// --- trees on disk ---

// entry is what the tests compare of one file system entry.
type entry struct {
	typ    string // file, dir, symlink, fifo, other
	mode   fs.FileMode
	uid    uint32
	gid    uint32
	size   int64
	mtime  int64    // ns since the epoch; not for symlinks: restore cannot set them
	target string   // symlinks
	rdev   uint64   // devices
	sum    [32]byte // files: SHA-256 of the content
	xattrs string   // user.* attributes, "name=value;" sorted
}

func (e entry) String() string {
	s := fmt.Sprintf("%s %v uid=%d gid=%d", e.typ, e.mode, e.uid, e.gid)
	switch e.typ {
	case "file":
		s += fmt.Sprintf(" size=%d sha256=%x", e.size, e.sum[:6])
	case "symlink":
		s += fmt.Sprintf(" -> %q", e.target)
	case "chardev", "blockdev":
		s += fmt.Sprintf(" rdev=%d:%d", unix.Major(e.rdev), unix.Minor(e.rdev))
	}
	if e.typ != "symlink" {
		s += " mtime=" + time.Unix(0, e.mtime).UTC().Format(time.RFC3339Nano)
	}
	if e.xattrs != "" {
		s += " xattrs=" + e.xattrs
	}
	return s
}

// scanTree describes everything below root (root itself is "."), keyed by
// slash-separated relative path.
func scanTree(t *testing.T, root string) map[string]entry {
	t.Helper()
	m := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		e, err := describe(p)
		if err != nil {
			return err
		}
		m[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return m
}

func describe(p string) (entry, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return entry{}, err
	}
	st := fi.Sys().(*syscall.Stat_t)
	e := entry{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, mtime: fi.ModTime().UnixNano()}
	switch {
	case fi.Mode().IsRegular():
		e.typ, e.size = "file", fi.Size()
		f, err := os.Open(p)
		if err != nil {
			return entry{}, err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return entry{}, err
		}
		copy(e.sum[:], h.Sum(nil))
	case fi.IsDir():
		e.typ = "dir"
	case fi.Mode()&fs.ModeSymlink != 0:
		e.typ, e.mtime = "symlink", 0
		if e.target, err = os.Readlink(p); err != nil {
			return entry{}, err
		}
	case fi.Mode()&fs.ModeNamedPipe != 0:
		e.typ = "fifo"
	case fi.Mode()&fs.ModeCharDevice != 0:
		e.typ, e.rdev = "chardev", uint64(st.Rdev)
	case fi.Mode()&fs.ModeDevice != 0:
		e.typ, e.rdev = "blockdev", uint64(st.Rdev)
	default:
		e.typ = "other"
	}
	if e.typ != "symlink" {
		e.xattrs = userXattrs(p)
	}
	return e, nil
}

// userXattrs renders the user.* extended attributes of p ("" when none or
// unsupported).
func userXattrs(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var parts []string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 4096)
		k, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q;", name, v[:k]))
	}
	sort.Strings(parts)
	return strings.Join(parts, "")
}

// compareTrees reports every difference between the trees want and got
// (from scanTree). With skipRootMeta the roots' metadata is not compared
// (a sub-path restore does not restore its target's own metadata).
func compareTrees(t *testing.T, want, got map[string]entry, skipRootMeta bool) {
	t.Helper()
	var diffs []string
	for _, p := range sortedKeys(want) {
		g, ok := got[p]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("missing %q (%v)", p, want[p]))
			continue
		}
		w := want[p]
		if p == "." && skipRootMeta {
			if w.typ != g.typ {
				diffs = append(diffs, fmt.Sprintf("root: want %s, got %s", w.typ, g.typ))
			}
			continue
		}
		if w != g {
			diffs = append(diffs, fmt.Sprintf("%q differs:\n\t\twant %v\n\t\tgot  %v", p, w, g))
		}
	}
	for _, p := range sortedKeys(got) {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %q (%v)", p, got[p]))
		}
	}
	if len(diffs) > 0 {
		if len(diffs) > 40 {
			diffs = append(diffs[:40], fmt.Sprintf("… and %d more", len(diffs)-40))
		}
		t.Errorf("restored tree differs from the source in %d places:\n\t%s", len(diffs), strings.Join(diffs, "\n\t"))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// restoredPath is where a whole-snapshot restore into target puts the
// backed-up absolute path src.
func restoredPath(target, src string) string {
	return filepath.Join(target, src)
}

// checkOnlyPath fails the test if target holds anything but the srcs
// (restored below it, see restoredPath) and the directories leading to
// them.
func checkOnlyPath(t *testing.T, target string, srcs ...string) {
	t.Helper()
	var extra []string
	err := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == target {
			return nil
		}
		for _, src := range srcs {
			want := restoredPath(target, src)
			switch {
			case p == want && d.IsDir():
				return fs.SkipDir // all of it is src's
			case p == want:
				return nil
			case strings.HasPrefix(want, p+"/"):
				return nil
			}
		}
		extra = append(extra, p)
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(extra) > 0 {
		t.Errorf("restore wrote entries besides %q: %q", srcs, extra)
	}
}

// setMtimes gives every entry below root (except symlinks, whose times
// restore does not set) a fixed mtime with nanoseconds, deepest first so
// a directory's own time is set after its contents changed.
func setMtimes(t *testing.T, root string, base time.Time) {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(paths) - 1; i >= 0; i-- {
		mt := base.Add(time.Duration(i)*1234567891*time.Nanosecond + 7)
		if err := os.Chtimes(paths[i], mt, mt); err != nil {
			t.Fatal(err)
		}
	}
}

// packFiles lists the pack files under the repository's data/ (name →
// size), ignoring temporary files.
func packFiles(t *testing.T, repoDir string) map[string]int64 {
	t.Helper()
	packs := map[string]int64{}
	data := filepath.Join(repoDir, "data")
	subs, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if !s.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(data, s.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			packs[filepath.Join(data, s.Name(), e.Name())] = fi.Size()
		}
	}
	return packs
}

// dataSize sums the sizes of the pack files.
func dataSize(t *testing.T, repoDir string) int64 {
	t.Helper()
	var n int64
	for _, s := range packFiles(t, repoDir) {
		n += s
	}
	return n
}

// envWith returns env with the variable key set to value (replaced if
// present).
func envWith(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// envWithout returns env without the variable key.
func envWithout(env []string, key string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// envValue returns the value of key in env.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// copyDir copies the tree src to dst (contents and permission bits).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, fi.Mode().Perm()|0o700)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// setDiff describes how the multisets got and want differ, one line per
// path that is missing from got or extra in it.
func setDiff(got, want []string) []string {
	count := map[string]int{}
	for _, p := range want {
		count[p]++
	}
	for _, p := range got {
		count[p]--
	}
	var out []string
	for _, p := range sortedKeys(count) {
		switch n := count[p]; {
		case n > 0:
			out = append(out, fmt.Sprintf("missing %q (%d times)", p, n))
		case n < 0:
			out = append(out, fmt.Sprintf("unexpected %q (%d times)", p, -n))
		}
	}
	return out
}

// jsonString is s after a round trip through a JSON string.
func jsonString(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// skipHeavy skips tests that move hundreds of MiB in -short mode.
func skipHeavy(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("moves hundreds of MiB; skipped with -short")
	}
}
