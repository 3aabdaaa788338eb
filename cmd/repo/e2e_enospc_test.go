package main

// A full disk under the repository: a backup that runs out of space ends
// at once with one clear error line and exit code 1, leaves no snapshot
// (partial or otherwise) and no temporary file, keeps the earlier
// snapshots, and leaves a repository that check accepts. Once by filling a
// real (tmpfs) file system, once through the fault hooks of the local
// backend (a binary built with -tags faults, see backend/local/faults.go),
// at each kind of object the backup writes.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"repo/internal/gentree"
)

// TestE2EENOSPC fills a 48 MiB tmpfs that holds the repository with a
// backup of 64 MiB of incompressible data.
func TestE2EENOSPC(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=48m"); err != nil {
		// Needs root (or CAP_SYS_ADMIN); TestE2EENOSPCInjected covers the
		// same ground without a real file system.
		t.Skipf("cannot mount a tmpfs to fill up (%v): needs root or CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	r := &testRepo{t: t, dir: filepath.Join(mnt, "repo")}
	r.env = append(baseEnv(t), "REPO_REPOSITORY="+r.dir, "REPO_PASSWORD="+testPassword)
	r.mustRun("init", "--kdf-memory", "1", "--kdf-time", "1")
	r.cleanupCheck() // runs before the unmount

	small := filepath.Join(t.TempDir(), "small")
	generate(t, small, gentree.Spec{Seed: 80, TextFiles: 40, TextMax: 16 << 10, Odd: true})
	earlier := r.backup(small)

	big := filepath.Join(t.TempDir(), "big")
	generate(t, big, gentree.Spec{Seed: 81, TextFiles: 20, TextMax: 8 << 10, RandFiles: 4, RandSize: 16 << 20})
	checkFullDiskBackup(t, r.dir, repoBinary(t), r.env, r.env, big, earlier.SnapshotID)

	// The disk is still nearly full, but a small backup fits: it also
	// indexes the packs the failed one left (its journal on this host).
	more := filepath.Join(t.TempDir(), "more")
	generate(t, more, gentree.Spec{Seed: 82, TextFiles: 20, TextMax: 8 << 10})
	sum := r.backup(more)
	t.Logf("backup after the full disk: %d packs resumed, %d added", sum.PacksResumed, sum.PacksAdded)
	for _, c := range []struct{ id, src string }{{earlier.SnapshotID, small}, {sum.SnapshotID, more}} {
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", c.id, "--target", target)
		compareTrees(t, scanTree(t, c.src), scanTree(t, restoredPath(target, c.src)), false)
	}
}

// TestE2EENOSPCInjected makes the disk fill up, through REPO_FAULTS, while
// the backup writes each kind of object: a pack midway, the index file,
// the snapshot, the lock.
func TestE2EENOSPCInjected(t *testing.T) {
	t.Parallel()
	bin := repoFaultsBinary(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 83, TextFiles: 100, TextMax: 32 << 10, RandFiles: 3, RandSize: 2 << 20})
	small := filepath.Join(t.TempDir(), "small")
	generate(t, small, gentree.Spec{Seed: 84, TextFiles: 10, TextMax: 4 << 10})
	for _, tt := range []struct{ name, faults string }{
		{"pack", "enospc:after=3000000"},
		{"pack at once", "enospc:type=pack"},
		{"index", "enospc:type=index"},
		{"snapshot", "enospc:type=snapshot"},
		{"lock", "enospc:type=lock"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRepo(t, "--pack-size", "1")
			earlier := r.backup(small)
			env := envWith(r.env, "REPO_FAULTS", tt.faults)
			env = envWith(env, "REPO_FAULTS_LOG", filepath.Join(t.TempDir(), "faults.log"))
			checkFullDiskBackup(t, r.dir, bin, env, r.env, src, earlier.SnapshotID)
			if log, err := os.ReadFile(envValue(env, "REPO_FAULTS_LOG")); err != nil || !strings.Contains(string(log), "enospc") {
				t.Errorf("the fault never fired (log: %q, %v): the test proves nothing", log, err)
			}
		})
	}
}

// checkFullDiskBackup runs a backup of src into the repository dir that
// must run out of space (by the binary bin with runEnv) and checks the
// outcome with the repository's plain environment env: exit 1 (a backup
// that retried forever would end at the test's timeout instead), one error
// line saying the disk is full, only the snapshot earlier, no temporary
// files or locks left, and a clean check.
func checkFullDiskBackup(t *testing.T, dir, bin string, runEnv, env []string, src, earlier string) {
	t.Helper()
	res := runBinary(t, bin, runEnv, nil, "backup", src)
	stdout, stderr, code, took := res.stdout, res.stderr, res.code, res.took
	t.Logf("backup on a full disk: exit %d after %v: %s", code, took.Round(time.Millisecond), strings.TrimSpace(stderr))
	if code != exitError {
		t.Errorf("backup on a full disk: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitError, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "repo: ") || !strings.Contains(lines[0], "disk is full") {
		t.Errorf("backup on a full disk: stderr is not one line saying the disk is full:\n%s", stderr)
	}
	sns := listSnapshotIDs(t, env)
	if !slices.Equal(sns, []string{earlier}) {
		t.Errorf("snapshots after the failed backup: %q, want only %q", sns, earlier)
	}
	var tmps []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			tmps = append(tmps, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tmps) > 0 {
		t.Errorf("temporary files left in the repository: %q", tmps)
	}
	if names := dirNames(t, filepath.Join(dir, "locks")); len(names) != 0 {
		t.Errorf("locks left after the failed backup: %q", names)
	}
	if out, errOut, code := runBin(t, env, nil, "check"); code != 0 {
		t.Errorf("check after the failed backup: exit %d\n%s%s", code, out, errOut)
	} else {
		t.Logf("check: %s", strings.TrimSpace(out))
	}
}

// listSnapshotIDs returns the ids of the repository's snapshots, oldest
// first.
func listSnapshotIDs(t *testing.T, env []string) []string {
	t.Helper()
	var ids []string
	for _, sn := range listSnaps(t, env) {
		ids = append(ids, sn.ID)
	}
	return ids
}
