package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"repo/internal/gentree"
)

// TestE2EKill kills a backup with SIGKILL once it has written a pack: the
// repository keeps its earlier snapshot, a new backup of the same tree
// completes, check passes, and both snapshots restore exactly.
func TestE2EKill(t *testing.T) {
	skipHeavy(t)
	r := newRepo(t)
	small := filepath.Join(t.TempDir(), "small")
	generate(t, small, gentree.Spec{Seed: 70, TextFiles: 50, TextMax: 16 << 10, Odd: true})
	earlier := r.backup(small)

	big := filepath.Join(t.TempDir(), "big")
	generate(t, big, gentree.Spec{
		Seed: 71, TextFiles: 400, TextMax: 64 << 10, BinFiles: 4, BinMax: 16 << 20,
		RandFiles: 8, RandSize: 18 << 20,
	})

	before := len(packFiles(t, r.dir))
	signalBackupMidway(t, r, big, syscall.SIGKILL)
	t.Logf("killed the backup after it wrote %d of its packs", len(packFiles(t, r.dir))-before)

	sns := r.snapshots()
	if len(sns) != 1 || sns[0].ID != earlier.SnapshotID {
		t.Fatalf("after the killed backup: snapshots %+v, want only %s", sns, earlier.SnapshotID)
	}

	again := r.backup(big)
	if again.Errors != 0 {
		t.Errorf("backup after the kill reported %d errors", again.Errors)
	}
	if stdout, stderr, code := r.run(nil, "check"); code != 0 {
		t.Errorf("check after the killed backup: exit %d\n%s%s", code, stdout, stderr)
	}

	for _, c := range []struct{ id, src string }{{earlier.SnapshotID, small}, {again.SnapshotID, big}} {
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", c.id, "--target", target)
		compareTrees(t, scanTree(t, c.src), scanTree(t, restoredPath(target, c.src)), false)
		checkOnlyPath(t, target, c.src)
	}
}

// signalBackupMidway starts a backup of src, sends it sig as soon as it
// has written a pack of its own, and waits for it to end. It fails the test
// if the backup ended before the signal; for SIGKILL, also unless the
// signal killed it. It returns what the backup printed on stderr.
func signalBackupMidway(t *testing.T, r *testRepo, src string, sig syscall.Signal) (stderr string, exitCode int) {
	t.Helper()
	before := packFiles(t, r.dir)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, r.env, nil, "backup", src)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	signalled := false
poll:
	for {
		select {
		case waitErr = <-done:
			break poll
		case <-time.After(2 * time.Millisecond):
		}
		for p := range packFiles(t, r.dir) {
			if _, ok := before[p]; !ok {
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				signalled = true
				waitErr = <-done
				break poll
			}
		}
	}
	if !signalled {
		t.Fatalf("backup ended (%v) before it could be signalled; make the tree larger\n%s", waitErr, errb.String())
	}
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		t.Fatal(waitErr)
	}
	if sig == syscall.SIGKILL && (ee == nil || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL) {
		t.Fatalf("backup was not killed by SIGKILL: %v\n%s", waitErr, errb.String())
	}
	return errb.String(), cmd.ProcessState.ExitCode()
}

// TestE2EInterrupt: SIGINT stops a backup cleanly: a non-zero exit saying
// it was interrupted, no snapshot, and a repository that checks clean and
// takes the next backup.
func TestE2EInterrupt(t *testing.T) {
	skipHeavy(t)
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 72, TextFiles: 100, TextMax: 64 << 10, RandFiles: 6, RandSize: 16 << 20})

	stderr, code := signalBackupMidway(t, r, src, syscall.SIGINT)
	if code == 0 || code == -1 {
		t.Errorf("interrupted backup: exit %d, want an error exit code\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "interrupted") {
		t.Errorf("interrupted backup: stderr does not say so: %q", stderr)
	}
	if sns := r.snapshots(); len(sns) != 0 {
		t.Errorf("interrupted backup saved a snapshot: %+v", sns)
	}
	if stdout, stderr, code := r.run(nil, "check"); code != 0 {
		t.Errorf("check after the interrupted backup: exit %d\n%s%s", code, stdout, stderr)
	}
	r.backup(src)
	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", "latest", "--target", target)
	compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
}

// TestE2EKillResume: a backup of large files killed after it wrote several
// packs is resumed by the next one: the data of the packs the killed run
// completed is found in the repository (periodic index files, or the
// upload journal for the rest) and not stored again.
func TestE2EKillResume(t *testing.T) {
	skipHeavy(t)
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 73, RandFiles: 8, RandSize: 16 << 20})

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, r.env, nil, "backup", src)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	const killAfter = 5
	killed := false
	for !killed {
		select {
		case err := <-done:
			t.Fatalf("backup ended (%v) before it wrote %d packs; make the tree larger", err, killAfter)
		case <-time.After(2 * time.Millisecond):
		}
		if len(packFiles(t, r.dir)) >= killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-done
			killed = true
		}
	}
	packs := len(packFiles(t, r.dir))

	again := r.backup(src)
	// Every pack the killed run completed holds about 16 MiB of chunks;
	// one may have been published just before its journal record.
	const perPack = 12 << 20
	if want := int64(packs-1) * perPack; again.BytesSkipped < want {
		t.Errorf("after a kill with %d packs written: next backup skipped %d bytes, want at least %d (resumed %d packs)",
			packs, again.BytesSkipped, want, again.PacksResumed)
	}
	if again.BytesSkipped+again.BytesAdded < again.BytesRead {
		t.Errorf("skipped %d + added %d < read %d", again.BytesSkipped, again.BytesAdded, again.BytesRead)
	}
	t.Logf("killed after %d packs; next backup: read %d, skipped %d, added %d, resumed %d packs",
		packs, again.BytesRead, again.BytesSkipped, again.BytesAdded, again.PacksResumed)
	if stdout, stderr, code := r.run(nil, "check", "--read-data"); code != 0 {
		t.Errorf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", again.SnapshotID, "--target", target)
	compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
}
