package main

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"repo/internal/gentree"
)

// TestE2EUnreadable runs backup as the unprivileged user nobody on a tree
// where one file and one directory belong to root and are private: the
// backup saves everything else, names both, and exits 3.
func TestE2EUnreadable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}

	// t.TempDir's directories are private to root; this one is open to
	// nobody and holds everything of the test.
	base, err := os.MkdirTemp("", "repo-e2e-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(base, "home")
	for _, d := range []string{home, filepath.Join(home, "tmp")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	repoDir := filepath.Join(home, "repo")
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + home,
		"TMPDIR=" + filepath.Join(home, "tmp"),
		"REPO_CACHE_DIR=" + filepath.Join(home, "cache"),
		"REPO_REPOSITORY=" + repoDir,
		"REPO_PASSWORD=" + testPassword,
	}
	if _, stderr, code := runCred(t, cred, env, nil, "init"); code != 0 {
		if strings.Contains(stderr, "operation not permitted") || code < 0 {
			t.Skipf("cannot run as nobody here: %s", stderr)
		}
		t.Fatalf("init as nobody: exit %d: %s", code, stderr)
	}
	r := &testRepo{t: t, dir: repoDir, env: env}
	r.cleanupCheck()

	src := filepath.Join(base, "src")
	generate(t, src, gentree.Spec{Seed: 6, TextFiles: 40, TextMax: 8 << 10, BinFiles: 2, BinMax: 1 << 20})
	secretFile := filepath.Join(src, "d01", "secret.txt")
	secretDir := filepath.Join(src, "d02", "private")
	writeFile(t, secretFile, []byte("root only"), 0o600, gentree.Epoch)
	writeFile(t, filepath.Join(secretDir, "inside.txt"), []byte("root only"), 0o644, gentree.Epoch)
	if err := os.Chmod(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	setMtimes(t, src, gentree.Epoch)

	stdout, stderr, code := runCred(t, cred, env, nil, "backup", src)
	if code != exitIncomplete {
		t.Fatalf("backup with unreadable entries: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitIncomplete, stdout, stderr)
	}
	for _, p := range []string{secretFile, secretDir} {
		if !strings.Contains(stderr, p) {
			t.Errorf("backup: stderr does not name unreadable %s:\n%s", p, stderr)
		}
	}
	sns := r.snapshots()
	if len(sns) != 1 {
		t.Fatalf("%d snapshots after an incomplete backup, want 1", len(sns))
	}

	// The same with --json: an error object per entry, the summary
	// counts them, and the snapshot is saved.
	stdout, stderr, code = runCred(t, cred, env, nil, "backup", "--json", src)
	if code != exitIncomplete {
		t.Fatalf("backup --json with unreadable entries: exit %d, want %d\nstderr:\n%s", code, exitIncomplete, stderr)
	}
	var items []string
	var sum backupSummary
	for _, l := range jsonLines(t, stdout) {
		switch l["message_type"] {
		case "error":
			item, _ := l["item"].(string)
			items = append(items, item)
		case "summary":
			decodeLine(t, l, &sum)
		}
	}
	for _, d := range setDiff(items, []string{secretFile, secretDir}) {
		t.Errorf("backup --json error objects: %s", d)
	}
	if sum.Errors != 2 || sum.SnapshotID == "" {
		t.Errorf("backup --json summary: %d errors, snapshot %q; want 2 and a snapshot", sum.Errors, sum.SnapshotID)
	}
	if n := len(r.snapshots()); n != 2 {
		t.Errorf("%d snapshots after two incomplete backups, want 2", n)
	}

	// Everything else is in the snapshot: the unreadable directory is
	// saved empty (with its metadata), the unreadable file is left out.
	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", "latest", "--target", target)
	want := scanTree(t, src)
	delete(want, "d01/secret.txt")
	delete(want, "d02/private/inside.txt")
	compareTrees(t, want, scanTree(t, restoredPath(target, src)), false)
}
