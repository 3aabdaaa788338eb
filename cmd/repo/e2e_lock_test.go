package main

// End-to-end tests of repository locks: several repo processes on one
// repository, holders that are killed, stopped, interrupted or lose their
// lock, foreign and unreadable lock objects, and the unlock and locks
// commands.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/local"
	"repo/repo"
)

// lockWait bounds the polling for a state that a correct implementation
// reaches in well under a second; it only keeps a broken one from hanging
// the test.
const lockWait = 30 * time.Second

// abortWait is how long a lock holder may take to stop after a signal or
// after losing its lock: "within a few seconds", with room for a loaded
// machine.
const abortWait = 10 * time.Second

// bgProc is a repo process running in the background.
type bgProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser // nil unless started with a stdin pipe
	stdout bytes.Buffer   // read only after done is closed
	stderr bytes.Buffer
	done   chan struct{}
	err    error // Wait's error, once done is closed
}

// startBg starts the binary with env; with pipe, its stdin is a pipe the
// test writes to and closes (else /dev/null). The process is killed and
// waited for when the test ends.
func startBg(t *testing.T, env []string, pipe bool, args ...string) *bgProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	p := &bgProc{done: make(chan struct{})}
	p.cmd = repoCommand(t, ctx, env, nil, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if pipe {
		w, err := p.cmd.StdinPipe()
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		p.stdin = w
	}
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start repo %s: %v", quoteArgs(args), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill() // SIGKILL ends stopped processes too
		}
		<-p.done
		cancel()
	})
	return p
}

func (p *bgProc) pid() int { return p.cmd.Process.Pid }

func (p *bgProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to end and reports whether it did.
func (p *bgProc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// code is the exit code (-1: killed by a signal); only after done.
func (p *bgProc) code() int { return p.cmd.ProcessState.ExitCode() }

// closeStdin ends the process's input stream.
func (p *bgProc) closeStdin() {
	if p.stdin != nil {
		_ = p.stdin.Close() // already closed when the process was waited for
	}
}

// signal sends sig to the process and fails the test if it cannot.
func (p *bgProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %v to PID %d: %v", sig, p.pid(), err)
	}
}

// finish closes stdin and waits for the process, failing the test unless
// it ends within lockWait.
func (p *bgProc) finish(t *testing.T) {
	t.Helper()
	p.closeStdin()
	if !p.waitExit(lockWait) {
		t.Fatalf("PID %d (%s) did not end within %v after its stdin was closed", p.pid(), quoteArgs(p.cmd.Args[1:]), lockWait)
	}
}

func (p *bgProc) describe() string {
	return fmt.Sprintf("repo %s (PID %d): exit %d\nstderr:\n%s\nstdout:\n%s", quoteArgs(p.cmd.Args[1:]), p.pid(), p.code(), p.stderr.String(), truncate(p.stdout.String(), 4000))
}

// lockLine is one lock of 'repo locks --json'.
type lockLine struct {
	MessageType string `json:"message_type"`
	ID          string `json:"id"`
	Gate        bool   `json:"gate"`
	Exclusive   bool   `json:"exclusive"`
	Hostname    string `json:"hostname"`
	PID         int    `json:"pid"`
	Command     string `json:"command"`
	Stale       bool   `json:"stale"`
	StaleReason string `json:"stale_reason"`
	Error       string `json:"error"`
}

// listLocks runs 'repo locks --json' with env and returns its locks.
func listLocks(t *testing.T, env []string) []lockLine {
	t.Helper()
	out := mustRunBin(t, env, nil, "locks", "--json")
	var ls []lockLine
	for _, line := range jsonLines(t, out) {
		if line["message_type"] != "lock" {
			continue
		}
		var l lockLine
		decodeLine(t, line, &l)
		ls = append(ls, l)
	}
	return ls
}

// waitLocks polls 'repo locks --json' until cond holds for its locks and
// returns them; it fails the test after lockWait.
func waitLocks(t *testing.T, env []string, what string, cond func([]lockLine) bool) []lockLine {
	t.Helper()
	deadline := time.Now().Add(lockWait)
	for {
		ls := listLocks(t, env)
		if cond(ls) {
			return ls
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v; locks: %+v", what, lockWait, ls)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// findLock returns the lock record (not the gate) of pid, or nil.
func findLock(ls []lockLine, pid int) *lockLine {
	for i := range ls {
		if !ls[i].Gate && ls[i].PID == pid && ls[i].Error == "" {
			return &ls[i]
		}
	}
	return nil
}

// waitHolding waits until p's lock is listed (shared, or exclusive) and
// fails the test if p ends first.
func waitHolding(t *testing.T, env []string, p *bgProc, exclusive bool) lockLine {
	t.Helper()
	var got lockLine
	waitLocks(t, env, fmt.Sprintf("lock of PID %d", p.pid()), func(ls []lockLine) bool {
		if p.exited() {
			t.Fatalf("the lock holder ended before its lock was seen: %s", p.describe())
		}
		l := findLock(ls, p.pid())
		if l == nil {
			return false
		}
		got = *l
		return true
	})
	if got.Exclusive != exclusive {
		t.Fatalf("lock of PID %d: exclusive=%v, want %v: %+v", p.pid(), got.Exclusive, exclusive, got)
	}
	return got
}

// lockDirNames lists every entry of the repository's locks/ directory,
// temporary files included.
func lockDirNames(t *testing.T, repoDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repoDir, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func checkNoLocks(t *testing.T, repoDir, when string) {
	t.Helper()
	if names := lockDirNames(t, repoDir); len(names) != 0 {
		t.Errorf("%s: locks/ holds %q, want it empty", when, names)
	}
}

var hexName = regexp.MustCompile(`^[0-9a-f]{64}$`)

func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// holderText is how a lock conflict names a holder.
func holderText(host string, pid int) string {
	return fmt.Sprintf("%s PID %d", host, pid)
}

// seedSnapshot backs up data from stdin and returns the snapshot id.
func seedSnapshot(t *testing.T, env []string, data string) string {
	t.Helper()
	out := mustRunBin(t, env, strings.NewReader(data), "backup", "--json", "--stdin")
	return lastSummary[backupSummary](t, out).SnapshotID
}

func snapshotIDs(r *testRepo) []string {
	r.t.Helper()
	var ids []string
	for _, sn := range r.snapshots() {
		ids = append(ids, sn.ID)
	}
	return ids
}

// removedLine reports whether unlock's output has a "removed" line naming
// holder.
func removedLine(out, holder string) bool {
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "removed ") && strings.Contains(l, holder+" ") {
			return true
		}
	}
	return false
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestE2ELockConcurrentBackups: two backups share the repository: both
// hold their shared locks at the same time, both save their snapshot.
func TestE2ELockConcurrentBackups(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	a := startBg(t, r.env, true, "backup", "--json", "--stdin", "--stdin-filename", "a.sql")
	b := startBg(t, r.env, true, "backup", "--json", "--stdin", "--stdin-filename", "b.sql")
	ls := waitLocks(t, r.env, "two shared locks", func(ls []lockLine) bool {
		for _, p := range []*bgProc{a, b} {
			if p.exited() {
				t.Fatalf("backup ended while its stdin was open: %s", p.describe())
			}
		}
		return findLock(ls, a.pid()) != nil && findLock(ls, b.pid()) != nil
	})
	if len(ls) != 2 {
		t.Errorf("locks while two backups run: %+v, want exactly their two", ls)
	}
	for _, l := range ls {
		if l.Exclusive || l.Stale || l.Command != "repo backup" {
			t.Errorf("backup's lock %+v: want a live shared lock of 'repo backup'", l)
		}
	}

	data := map[*bgProc]string{a: strings.Repeat("alpha ", 100000), b: strings.Repeat("beta ", 120000)}
	for _, p := range []*bgProc{a, b} {
		if _, err := io.WriteString(p.stdin, data[p]); err != nil {
			t.Fatalf("write to backup PID %d: %v", p.pid(), err)
		}
	}
	ids := map[*bgProc]string{}
	for _, p := range []*bgProc{a, b} {
		p.finish(t)
		if p.code() != 0 {
			t.Fatalf("concurrent backup: %s", p.describe())
		}
		ids[p] = lastSummary[backupSummary](t, p.stdout.String()).SnapshotID
	}
	if got := snapshotIDs(r); len(got) != 2 || ids[a] == ids[b] {
		t.Errorf("snapshots %q, want the two backups' %s and %s", got, ids[a], ids[b])
	}
	for p, name := range map[*bgProc]string{a: "/a.sql", b: "/b.sql"} {
		if got := r.mustRun("dump", ids[p], name); got != data[p] {
			t.Errorf("dump %s %s: %d bytes that differ from the %d written", ids[p], name, len(got), len(data[p]))
		}
	}
	checkNoLocks(t, r.dir, "after both backups")
}

// TestE2ELockExclusiveVsBackup: forget (exclusive) fails with exit 11
// while a backup holds its shared lock, naming the backup; with
// --retry-lock it waits and runs once the backup ends.
func TestE2ELockExclusiveVsBackup(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	host := hostname(t)
	old := seedSnapshot(t, r.env, "old data")

	holder := startBg(t, r.env, true, "backup", "--json", "--stdin")
	waitHolding(t, r.env, holder, false)

	_, stderr, code := r.run(nil, "forget", old)
	if code != exitLocked {
		t.Errorf("forget beside a running backup: exit %d, want %d\nstderr: %s", code, exitLocked, stderr)
	}
	for _, want := range []string{holderText(host, holder.pid()), "repo backup", "--retry-lock"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("forget beside a running backup: stderr does not mention %q:\n%s", want, stderr)
		}
	}

	waiter := startBg(t, r.env, false, "forget", "--retry-lock", "30s", old)
	// It must neither fail nor remove the snapshot while the backup runs.
	time.Sleep(time.Second)
	if waiter.exited() {
		t.Fatalf("forget --retry-lock 30s ended while the backup held its lock: %s", waiter.describe())
	}
	if ids := snapshotIDs(r); len(ids) != 1 || ids[0] != old {
		t.Fatalf("while forget --retry-lock waits: snapshots %q, want only %s", ids, old)
	}

	if _, err := io.WriteString(holder.stdin, "new data"); err != nil {
		t.Fatal(err)
	}
	holder.finish(t)
	if holder.code() != 0 {
		t.Fatalf("backup: %s", holder.describe())
	}
	newID := lastSummary[backupSummary](t, holder.stdout.String()).SnapshotID
	waiter.finish(t)
	if waiter.code() != 0 || strings.Contains(waiter.stderr.String(), "locked") {
		t.Fatalf("forget --retry-lock after the backup ended: %s", waiter.describe())
	}
	if ids := snapshotIDs(r); len(ids) != 1 || ids[0] != newID {
		t.Errorf("after forget %s: snapshots %q, want only the new %s", old, ids, newID)
	}
	checkNoLocks(t, r.dir, "after forget")
}

// lockedByRE matches a conflict message naming its holder.
var lockedByRE = regexp.MustCompile(`repository is (?:being )?locked by (\S+) PID (\d+) \(`)

// TestE2ELockRace: in each round 20 forget processes race for the
// exclusive lock, and the winner keeps it (REPO_LOCK_TEST_HOLD) until the
// test lets go: exactly one wins, all others fail with exit 11 naming the
// winner (or, when they met the gate, the racer holding it), and the
// winner leaves locks/ empty.
func TestE2ELockRace(t *testing.T) {
	const procs = 20
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	start := time.Now()
	// Unencrypted: twenty key derivations per round would dominate the
	// run time on a small machine without adding anything to the test.
	r := newRepo(t, "--insecure-no-password")
	host := hostname(t)
	hold := filepath.Join(t.TempDir(), "hold")
	env := envWith(r.env, "REPO_LOCK_TEST_HOLD", hold)
	env = envWith(env, "REPO_LOCK_SETTLE", "50ms")
	// No snapshot matches, so the winner's forget ends with exit 1
	// "snapshot not found", after it got the lock.
	const ref = "00000000"

	// A cache directory for each racer: processes sharing one wait up to
	// 200ms for each other's cache lock, which would line them up instead
	// of letting them race.
	caches := make([]string, procs)
	for i := range caches {
		caches[i] = filepath.Join(t.TempDir(), "cache")
	}
	gateNames := 0
	for round := range rounds {
		// Stop each process right after its start and let them all go at
		// once, so that they race rather than queue up behind the first.
		ps := make([]*bgProc, procs)
		for i := range ps {
			ps[i] = startBg(t, envWith(env, "REPO_CACHE_DIR", caches[i]), false, "forget", ref)
			ps[i].signal(t, syscall.SIGSTOP)
		}
		for _, p := range ps {
			p.signal(t, syscall.SIGCONT)
		}
		deadline := time.Now().Add(lockWait)
		var running []*bgProc
		for {
			running = running[:0]
			for _, p := range ps {
				if !p.exited() {
					running = append(running, p)
				}
			}
			if len(running) <= 1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if len(running) != 1 {
			var b strings.Builder
			for _, p := range ps {
				if p.exited() {
					fmt.Fprintf(&b, "\n%s", p.describe())
				}
			}
			t.Fatalf("round %d: %d of %d processes still running %v after the others ended, want exactly 1 (the winner)%s", round, len(running), procs, lockWait, b.String())
		}
		winner := running[0]

		// Once the winner has confirmed its lock (and released the gate,
		// which it may still hold when the losers are gone), its exclusive
		// lock is the only object in locks/.
		ls := waitLocks(t, env, fmt.Sprintf("lone lock of the winner PID %d", winner.pid()), func(ls []lockLine) bool {
			if winner.exited() {
				t.Fatalf("round %d: the winner ended before the hold file appeared: %s", round, winner.describe())
			}
			return len(ls) == 1 && ls[0].PID == winner.pid() && !ls[0].Gate
		})
		if len(ls) != 1 || ls[0].PID != winner.pid() || !ls[0].Exclusive || ls[0].Gate || ls[0].Stale {
			t.Fatalf("round %d: locks %+v, want only the live exclusive lock of the winner PID %d", round, ls, winner.pid())
		}
		if names := lockDirNames(t, r.dir); len(names) != 1 || names[0] != ls[0].ID {
			t.Fatalf("round %d: locks/ holds %q, want only the winner's %s", round, names, ls[0].ID)
		}
		for _, p := range ps {
			if p == winner {
				continue
			}
			stderr := p.stderr.String()
			if p.code() != exitLocked {
				t.Fatalf("round %d: loser %s\nwant exit %d", round, p.describe(), exitLocked)
			}
			// A lock names the winner. The gate may name any racer of
			// the round: one that took it after the winner and is about
			// to find the winner's lock and lose is still, at that
			// instant, the process locking the repository.
			m := lockedByRE.FindStringSubmatch(stderr)
			gate := strings.Contains(stderr, "being locked by")
			named := m != nil && m[1] == host && m[2] == strconv.Itoa(winner.pid())
			if gate && m != nil && m[1] == host {
				for _, q := range ps {
					named = named || (q != p && m[2] == strconv.Itoa(q.pid()))
				}
			}
			if !named {
				t.Fatalf("round %d: loser's message names neither the winner %s nor (for the gate) another racer:\n%s", round, holderText(host, winner.pid()), p.describe())
			}
			if gate {
				gateNames++
			}
		}

		if err := os.WriteFile(hold, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if !winner.waitExit(lockWait) {
			t.Fatalf("round %d: the winner PID %d did not end within %v after the hold file appeared", round, winner.pid(), lockWait)
		}
		if winner.code() != exitError || strings.Contains(winner.stderr.String(), "locked") ||
			!strings.Contains(winner.stderr.String(), "snapshot not found") {
			t.Fatalf("round %d: winner: %s\nwant exit %d, 'snapshot not found' and no lock conflict", round, winner.describe(), exitError)
		}
		if err := os.Remove(hold); err != nil {
			t.Fatal(err)
		}
		if names := lockDirNames(t, r.dir); len(names) != 0 {
			t.Fatalf("round %d: after the winner ended locks/ holds %q, want it empty", round, names)
		}
	}
	t.Logf("%d rounds of %d racing processes in %v; %d losers were stopped at the gate", rounds, procs, time.Since(start).Round(time.Millisecond), gateNames)
}

// TestE2ELockStaleDeadProcess: the lock of a SIGKILLed backup does not
// stop the next exclusive command on the same host: it removes the stale
// lock, says so, and runs.
func TestE2ELockStaleDeadProcess(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	host := hostname(t)
	id := seedSnapshot(t, r.env, "some data")

	holder := startBg(t, r.env, true, "backup", "--stdin")
	waitHolding(t, r.env, holder, false)
	holder.signal(t, syscall.SIGKILL)
	if !holder.waitExit(lockWait) || holder.code() != -1 {
		t.Fatalf("SIGKILLed backup: %s", holder.describe())
	}
	if len(lockDirNames(t, r.dir)) == 0 {
		t.Fatal("the SIGKILLed backup left no lock; the test needs one")
	}

	stdout, stderr, code := r.run(nil, "forget", id)
	if code != 0 {
		t.Fatalf("forget after the holder was killed: exit %d\nstderr: %s\nstdout: %s", code, stderr, stdout)
	}
	want := fmt.Sprintf("removed stale shared lock of %s (repo backup): process %d is dead", holderText(host, holder.pid()), holder.pid())
	if !strings.Contains(stderr, want) {
		t.Errorf("forget's stderr does not say %q:\n%s", want, stderr)
	}
	if ids := snapshotIDs(r); len(ids) != 0 {
		t.Errorf("after forget: snapshots %q, want none", ids)
	}
	checkNoLocks(t, r.dir, "after forget removed the stale lock")
}

// openTestRepo opens the test repository in this process through the Go
// API.
func openTestRepo(t *testing.T, r *testRepo) *repo.Repository {
	t.Helper()
	be, err := local.Open(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.Open(context.Background(), be, repo.OpenOptions{
		Password: func() (string, error) { return testPassword, nil },
		CacheDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rp.Close()
		be.Close()
	})
	return rp
}

// TestE2ELockOtherHolders: locks that repo processes on this host cannot
// judge by their PID. A live lock of another process (this test, through
// the Go API) stops forget; a lock of another host is live while it is
// refreshed, whatever its PID means here, and stale only by its age; a
// stopped process's lock, alive but not refreshed, likewise.
func TestE2ELockOtherHolders(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	host := hostname(t)
	id := seedSnapshot(t, r.env, "first")
	rp := openTestRepo(t, r)
	ctx := context.Background()

	t.Run("live lock of another process", func(t *testing.T) {
		lk, _, err := rp.Lock(ctx, repo.LockOptions{Command: "lock test holder"})
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Unlock()
		_, stderr, code := r.run(nil, "forget", id)
		if code != exitLocked || !strings.Contains(stderr, holderText(host, os.Getpid())) || !strings.Contains(stderr, "lock test holder") {
			t.Errorf("forget beside a live lock of PID %d: exit %d, want %d naming it\nstderr: %s", os.Getpid(), code, exitLocked, stderr)
		}
		_, stderr, code = r.run(nil, "unlock")
		if code != 0 || len(lockDirNames(t, r.dir)) != 1 {
			t.Errorf("unlock removed a live lock of this host: exit %d, locks/ %q\nstderr: %s", code, lockDirNames(t, r.dir), stderr)
		}
		if err := lk.Unlock(); err != nil {
			t.Fatal(err)
		}
		checkNoLocks(t, r.dir, "after Unlock")
	})

	t.Run("lock of another host", func(t *testing.T) {
		const foreign = "elsewhere.example.org"
		// PID 999999999 exists on no Linux host (pid_max ≤ 2^22): were it
		// judged by this host's processes, the lock would count as dead.
		const pid = 999999999
		refreshed := time.Now().Add(-10 * time.Minute).Round(0)
		rec := repo.LockRecord{
			Hostname: foreign, PID: pid, ProcessStart: 12345, BootID: "00000000-1111-2222-3333-444444444444",
			Username: "backup", UID: 1000, Command: "repo backup",
			Created: refreshed.Add(-time.Hour), Refreshed: refreshed,
		}
		plain, err := json.Marshal(&rec)
		if err != nil {
			t.Fatal(err)
		}
		lid, err := rp.SaveUnpacked(ctx, backend.LockFile, plain)
		if err != nil {
			t.Fatal(err)
		}
		ls := listLocks(t, r.env)
		if len(ls) != 1 || ls[0].ID != lid.String() || ls[0].Hostname != foreign || ls[0].PID != pid || ls[0].Stale {
			t.Fatalf("locks: %+v, want only the live lock %s of %s", ls, lid, foreign)
		}

		_, stderr, code := r.run(nil, "forget", id)
		if code != exitLocked || !strings.Contains(stderr, holderText(foreign, pid)) {
			t.Errorf("forget beside another host's live lock: exit %d, want %d naming %s\nstderr: %s", code, exitLocked, holderText(foreign, pid), stderr)
		}
		stdout, stderr, code := r.run(nil, "unlock")
		if code != 0 || !strings.Contains(stdout, "0 lock(s) removed, 1 kept") || len(lockDirNames(t, r.dir)) != 1 {
			t.Errorf("unlock with another host's live lock: exit %d, locks/ %q, want it kept\nstdout: %s\nstderr: %s", code, lockDirNames(t, r.dir), stdout, stderr)
		}

		// Ten minutes unrefreshed is stale under a five-minute stale age.
		// (REPO_LOCK_STALE must exceed the refresh interval, else it is
		// raised to twice that.)
		env := envWith(envWith(r.env, "REPO_LOCK_REFRESH", "1m"), "REPO_LOCK_STALE", "5m")
		stdout, stderr, code = runBin(t, env, nil, "forget", id)
		if code != 0 {
			t.Fatalf("forget under a 5m stale age beside a lock refreshed 10m ago: exit %d\nstderr: %s\nstdout: %s", code, stderr, stdout)
		}
		want := fmt.Sprintf("removed stale shared lock of %s (repo backup): not refreshed for 10m", holderText(foreign, pid))
		if !strings.Contains(stderr, want) {
			t.Errorf("forget's stderr does not say %q:\n%s", want, stderr)
		}
		checkNoLocks(t, r.dir, "after forget removed the foreign stale lock")
	})

	t.Run("stopped process", func(t *testing.T) {
		id := seedSnapshot(t, r.env, "second")
		// A holder that does not refresh within the test, then stopped: it
		// is alive, so only the age of its lock can make it stale.
		holder := startBg(t, envWith(r.env, "REPO_LOCK_REFRESH", "1h"), true, "backup", "--stdin")
		waitHolding(t, r.env, holder, false)
		holder.signal(t, syscall.SIGSTOP)
		defer func() {
			holder.signal(t, syscall.SIGKILL)
			holder.waitExit(lockWait)
		}()
		time.Sleep(3 * time.Second)

		_, stderr, code := r.run(nil, "forget", id)
		if code != exitLocked || !strings.Contains(stderr, holderText(host, holder.pid())) {
			t.Errorf("forget (default stale age) beside a stopped holder: exit %d, want %d naming PID %d\nstderr: %s", code, exitLocked, holder.pid(), stderr)
		}
		env := envWith(envWith(r.env, "REPO_LOCK_REFRESH", "500ms"), "REPO_LOCK_STALE", "2s")
		stdout, stderr, code := runBin(t, env, nil, "forget", id)
		if code != 0 {
			t.Fatalf("forget (stale age 2s) beside a holder stopped 3s: exit %d\nstderr: %s\nstdout: %s", code, stderr, stdout)
		}
		want := fmt.Sprintf("removed stale shared lock of %s (repo backup): not refreshed for", holderText(host, holder.pid()))
		if !strings.Contains(stderr, want) {
			t.Errorf("forget's stderr does not say %q:\n%s", want, stderr)
		}
		checkNoLocks(t, r.dir, "after forget removed the stopped holder's lock")
	})
}

// TestE2ELockLost: a backup whose lock object someone removed notices at
// its next refresh and aborts with exit 11, without saving a snapshot,
// while its input is still open.
func TestE2ELockLost(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	env := envWith(envWith(r.env, "REPO_LOCK_REFRESH", "200ms"), "REPO_LOCK_STALE", "10s")
	holder := startBg(t, env, true, "backup", "--stdin")
	if _, err := io.WriteString(holder.stdin, strings.Repeat("partial stream ", 50000)); err != nil {
		t.Fatal(err)
	}
	waitHolding(t, r.env, holder, false)

	// Remove the holder's current lock object; it is replaced at every
	// refresh, so a removal may miss it and is tried again.
	removed := ""
	deadline := time.Now().Add(lockWait)
	for removed == "" {
		if time.Now().After(deadline) {
			t.Fatalf("could not remove the backup's lock; locks/ holds %q", lockDirNames(t, r.dir))
		}
		for _, n := range lockDirNames(t, r.dir) {
			if !hexName.MatchString(n) {
				continue
			}
			if err := os.Remove(filepath.Join(r.dir, "locks", n)); err == nil {
				removed = n
				break
			}
		}
	}

	start := time.Now()
	if !holder.waitExit(abortWait) {
		t.Errorf("the backup did not abort within %v of its lock %s being removed while its stdin stayed open (PID %d still running)", abortWait, removed[:8], holder.pid())
		holder.finish(t)
	} else {
		t.Logf("the backup aborted %v after its lock was removed", time.Since(start).Round(time.Millisecond))
	}
	stderr := holder.stderr.String()
	if holder.code() != exitLocked || !strings.Contains(stderr, "lock lost") || !strings.Contains(stderr, "removed by another process") {
		t.Errorf("backup that lost its lock: %s\nwant exit %d, 'lock lost' and 'removed by another process'", holder.describe(), exitLocked)
	}
	if ids := snapshotIDs(r); len(ids) != 0 {
		t.Errorf("the backup that lost its lock saved snapshots %q", ids)
	}
	checkNoLocks(t, r.dir, "after the backup lost its lock")
}

// TestE2ELockUnreadable: a lock object that cannot be read is listed as
// such; shared commands go on; exclusive ones stop and point to unlock
// --remove-all, which alone removes it.
func TestE2ELockUnreadable(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	id := seedSnapshot(t, r.env, "data")
	for _, name := range []string{randomHex(t), "exclusive"} {
		t.Run(name[:8], func(t *testing.T) {
			p := filepath.Join(r.dir, "locks", name)
			if err := os.WriteFile(p, []byte("this is not a lock\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			exists := func() bool { _, err := os.Lstat(p); return err == nil }

			stdout, stderr, code := r.run(nil, "locks")
			if code != 0 || !strings.Contains(stdout, name[:8]) || !strings.Contains(stdout, "unreadable") {
				t.Errorf("locks with an unreadable lock: exit %d, want 0 and it listed as unreadable\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			ls := listLocks(t, r.env)
			if len(ls) != 1 || ls[0].ID != name || ls[0].Error == "" {
				t.Errorf("locks --json with an unreadable lock: %+v, want it with an error", ls)
			}
			stdout, stderr, code = r.run(nil, "snapshots")
			if code != 0 || !strings.Contains(stdout, id[:8]) {
				t.Errorf("snapshots (shared) beside an unreadable lock: exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			_, stderr, code = r.run(nil, "forget", id)
			if code != exitLocked || !strings.Contains(stderr, "repo unlock --remove-all") {
				t.Errorf("forget beside an unreadable lock: exit %d, want %d and a hint at 'repo unlock --remove-all'\nstderr: %s", code, exitLocked, stderr)
			}
			stdout, stderr, code = r.run(nil, "unlock")
			if code != 0 || !exists() || !strings.Contains(stdout, "0 lock(s) removed, 1 kept") {
				t.Errorf("unlock: exit %d, lock kept: %v; want 0 and kept\nstdout: %s\nstderr: %s", code, exists(), stdout, stderr)
			}
			stdout, stderr, code = r.run(nil, "unlock", "--remove-all")
			if code != 0 || exists() || !strings.Contains(stdout, "removed unreadable lock") {
				t.Errorf("unlock --remove-all: exit %d, lock still there: %v; want 0 and removed\nstdout: %s\nstderr: %s", code, exists(), stdout, stderr)
			}
			checkNoLocks(t, r.dir, "after unlock --remove-all")
		})
	}
	if stdout, stderr, code := r.run(nil, "forget", id); code != 0 {
		t.Errorf("forget after unlock --remove-all: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// TestE2ELockSignals: SIGINT or SIGTERM makes a backup holding its lock
// stop with an error exit and remove its lock, both while it reads a
// stream and while it waits for input on an open stdin.
func TestE2ELockSignals(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		for _, idle := range []bool{false, true} {
			name := fmt.Sprintf("%v/streaming", sig)
			if idle {
				name = fmt.Sprintf("%v/idle", sig)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := newRepo(t)
				holder := startBg(t, r.env, true, "backup", "--stdin")
				var wg sync.WaitGroup
				stop := make(chan struct{})
				stopWriting := sync.OnceFunc(func() {
					close(stop)
					wg.Wait()
				})
				defer stopWriting()
				if idle {
					if _, err := io.WriteString(holder.stdin, "some input, then none"); err != nil {
						t.Fatal(err)
					}
				} else {
					// Keep the backup busy reading until it ends (its
					// pipe then fails) or the test stops writing.
					wg.Add(1)
					go func() {
						defer wg.Done()
						buf := randomBytes(uint64(sig), 64<<10)
						for {
							select {
							case <-stop:
								return
							default:
							}
							if _, err := holder.stdin.Write(buf); err != nil {
								return
							}
							time.Sleep(5 * time.Millisecond)
						}
					}()
				}
				waitHolding(t, r.env, holder, false)
				holder.signal(t, sig)
				if !holder.waitExit(abortWait) {
					t.Errorf("the backup did not end within %v of %v while its stdin stayed open (PID %d still running)", abortWait, sig, holder.pid())
					stopWriting()
					holder.finish(t)
				}
				if c := holder.code(); c == 0 || c == -1 || !strings.Contains(holder.stderr.String(), "interrupted") {
					t.Errorf("backup after %v: %s\nwant an error exit (not death by the signal) saying 'interrupted'", sig, holder.describe())
				}
				checkNoLocks(t, r.dir, fmt.Sprintf("after %v", sig))
				if ids := snapshotIDs(r); len(ids) != 0 {
					t.Errorf("the interrupted backup saved snapshots %q", ids)
				}
			})
		}
	}
}

// TestE2EUnlockAndLocksJSON: locks --json describes every lock; unlock
// removes stale locks and says which, keeps live ones; unlock --remove-all
// breaks live ones too and says so, and the holder of a broken lock stops
// without saving.
func TestE2EUnlockAndLocksJSON(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	host := hostname(t)

	dead := startBg(t, r.env, true, "backup", "--stdin")
	waitHolding(t, r.env, dead, false)
	dead.signal(t, syscall.SIGKILL)
	if !dead.waitExit(lockWait) {
		t.Fatal("SIGKILLed backup did not end")
	}
	env := envWith(envWith(r.env, "REPO_LOCK_REFRESH", "200ms"), "REPO_LOCK_STALE", "10s")
	live := startBg(t, env, true, "backup", "--stdin")
	waitHolding(t, r.env, live, false)

	out := r.mustRun("locks", "--json")
	lines := jsonLines(t, out)
	byPID := map[int]map[string]any{}
	for _, l := range lines {
		switch l["message_type"] {
		case "lock":
			for _, k := range []string{"id", "exclusive", "hostname", "pid", "command", "stale", "created", "refreshed", "username"} {
				if _, ok := l[k]; !ok {
					t.Errorf("locks --json: lock line without %q: %v", k, l)
				}
			}
			pid, _ := l["pid"].(float64)
			byPID[int(pid)] = l
		case "summary":
			if l["locks"] != float64(2) {
				t.Errorf("locks --json summary: %v, want locks: 2", l)
			}
		default:
			t.Errorf("locks --json: unexpected line %v", l)
		}
	}
	for _, c := range []struct {
		p      *bgProc
		stale  bool
		reason string
	}{{dead, true, fmt.Sprintf("process %d is dead", dead.pid())}, {live, false, ""}} {
		l := byPID[c.p.pid()]
		if l == nil {
			t.Errorf("locks --json: no lock of PID %d:\n%s", c.p.pid(), out)
			continue
		}
		if l["exclusive"] != false || l["hostname"] != host || l["command"] != "repo backup" || l["stale"] != c.stale {
			t.Errorf("locks --json: lock of PID %d: %v, want shared, host %s, command 'repo backup', stale %v", c.p.pid(), l, host, c.stale)
		}
		if reason, _ := l["stale_reason"].(string); reason != c.reason {
			t.Errorf("locks --json: lock of PID %d has stale_reason %q, want %q", c.p.pid(), reason, c.reason)
		}
		if id, _ := l["id"].(string); !hexName.MatchString(id) {
			t.Errorf("locks --json: lock id %q is not 64 hex digits", id)
		}
	}

	stdout, stderr, code := r.run(nil, "unlock")
	want := fmt.Sprintf("removed shared lock of %s (repo backup)", holderText(host, dead.pid()))
	if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, fmt.Sprintf("process %d is dead", dead.pid())) ||
		!strings.Contains(stdout, "1 lock(s) removed, 1 kept") || removedLine(stdout, holderText(host, live.pid())) {
		t.Errorf("unlock with a stale and a live lock: exit %d, want 0 and %q, 'process %d is dead', '1 lock(s) removed, 1 kept'\nstdout: %s\nstderr: %s", code, want, dead.pid(), stdout, stderr)
	}
	ls := listLocks(t, r.env)
	if len(ls) != 1 || findLock(ls, live.pid()) == nil {
		t.Errorf("after unlock: locks %+v, want only the live one of PID %d", ls, live.pid())
	}

	stdout, stderr, code = r.run(nil, "unlock", "--remove-all")
	want = fmt.Sprintf("removed shared lock of %s (repo backup)", holderText(host, live.pid()))
	if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, "LIVE") || !strings.Contains(stdout, "1 lock(s) removed, 0 kept") {
		t.Errorf("unlock --remove-all with a live lock: exit %d, want 0, %q and that it was LIVE\nstdout: %s\nstderr: %s", code, want, stdout, stderr)
	}
	checkNoLocks(t, r.dir, "after unlock --remove-all")

	// The holder notices at its next refresh (200ms) and saves nothing,
	// even when its input then ends normally.
	time.Sleep(time.Second)
	live.finish(t)
	if live.code() != exitLocked || !strings.Contains(live.stderr.String(), "lock lost") {
		t.Errorf("backup whose lock unlock --remove-all broke: %s\nwant exit %d and 'lock lost'", live.describe(), exitLocked)
	}
	if ids := snapshotIDs(r); len(ids) != 0 {
		t.Errorf("the backup whose lock was broken saved snapshots %q", ids)
	}
	checkNoLocks(t, r.dir, "after the broken holder ended")
}
