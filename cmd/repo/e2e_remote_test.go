package main

// End-to-end tests of the remote backends through the built binary: an
// OpenSSH sshd (sftp:) and gofakes3 over TLS (s3:https://), both on
// 127.0.0.1, started by e2e_servers_test.go.
//
// Run them with: go test -count=1 -run Remote ./cmd/repo/
// The upload throughput measurement runs only with REPO_BENCH_REMOTE=1:
//
//	REPO_BENCH_REMOTE=1 go test -count=1 -run RemoteThroughput -v ./cmd/repo/
//
// (1 GiB per backend; 256 MiB with -short; REPO_BENCH_REMOTE_MIB=N sets
// another size).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"repo/internal/gentree"
	"repo/internal/testserver"
)

// remoteBackend names a kind of server and how to start one.
type remoteBackend struct {
	name  string
	start func(t *testing.T) remoteServer
}

var remoteBackends = []remoteBackend{
	{"sftp", func(t *testing.T) remoteServer { return startSSHServer(t) }},
	{"s3-gofakes3", func(t *testing.T) remoteServer { return startS3Server(t) }},
}

// remoteRepo is a repository on a remote server, used through the binary
// with the server's environment and -o options.
type remoteRepo struct {
	t    *testing.T
	srv  remoteServer
	name string
	loc  string
	env  []string // REPO_REPOSITORY, REPO_PASSWORD and the server's env
	opts []string // -o options of every command
}

func newRemoteRepo(t *testing.T, srv remoteServer, name string) *remoteRepo {
	t.Helper()
	r := &remoteRepo{t: t, srv: srv, name: name, loc: srv.location(name), opts: srv.options()}
	r.env = append(baseEnv(t), "REPO_REPOSITORY="+r.loc, "REPO_PASSWORD="+testPassword)
	r.env = append(r.env, srv.env()...)
	return r
}

// args puts the -o options right after the command name.
func (r *remoteRepo) args(args []string) []string {
	out := append([]string{args[0]}, r.opts...)
	return append(out, args[1:]...)
}

func (r *remoteRepo) run(args ...string) (stdout, stderr string, code int) {
	r.t.Helper()
	return runBin(r.t, r.env, nil, r.args(args)...)
}

func (r *remoteRepo) mustRun(args ...string) string {
	r.t.Helper()
	return mustRunBin(r.t, r.env, nil, r.args(args)...)
}

func (r *remoteRepo) backup(args ...string) backupSummary {
	r.t.Helper()
	out := r.mustRun(append([]string{"backup", "--json"}, args...)...)
	return lastSummary[backupSummary](r.t, out)
}

// snapshotCount runs snapshots --json and counts the snapshots.
func (r *remoteRepo) snapshotCount() int {
	r.t.Helper()
	n := 0
	for _, l := range jsonLines(r.t, r.mustRun("snapshots", "--json")) {
		if l["message_type"] == "snapshot" {
			n++
		}
	}
	return n
}

// restoreAndCompare restores snapshot id and compares the restored src
// with src on disk, byte for byte and in metadata.
func (r *remoteRepo) restoreAndCompare(id, src string) {
	r.t.Helper()
	target := filepath.Join(r.t.TempDir(), "target")
	r.mustRun("restore", id, "--target", target)
	compareTrees(r.t, scanTree(r.t, src), scanTree(r.t, restoredPath(target, src)), false)
	checkOnlyPath(r.t, target, src)
}

// TestRemoteRoundTrip runs the everyday commands against each remote
// backend: init, three backups (the later ones incremental), snapshots, ls,
// restore (byte-identical), check --read-data, locks and unlock. On sftp
// the repository is also used through sftp:// and through -o sftp.command
// (a local sftp-server, given only the path).
func TestRemoteRoundTrip(t *testing.T) {
	t.Parallel()
	for _, b := range remoteBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			srv := b.start(t)
			r := newRemoteRepo(t, srv, "roundtrip")

			src := filepath.Join(t.TempDir(), "src")
			generate(t, src, gentree.Spec{
				Seed: 300, TextFiles: 150, TextMax: 16 << 10, BinFiles: 3, BinMax: 512 << 10,
				RandFiles: 2, RandSize: 1 << 20, Odd: true,
			})
			if out := r.mustRun("init"); !strings.Contains(out, "created") {
				t.Errorf("init printed %q", out)
			}
			first := r.backup(src)
			if first.Errors != 0 || first.TotalFiles < 150 || first.BytesAdded == 0 {
				t.Errorf("first backup: %+v", first)
			}

			// A changed file and a new one: the second backup adds only
			// those.
			writeFile(t, filepath.Join(src, "rand", "r000.dat"), randomBytes(301, 1<<20), 0o600, gentree.Epoch.Add(time.Hour))
			writeFile(t, filepath.Join(src, "new.txt"), []byte("new file\n"), 0o644, gentree.Epoch.Add(2*time.Hour))
			second := r.backup(src)
			if second.FilesChanged != 1 || second.FilesNew != 1 || second.BytesAdded > 2<<20 {
				t.Errorf("second backup: want 1 changed and 1 new file and at most 2 MiB added, got %+v", second)
			}
			third := r.backup(src)
			// Nothing is read again. The snapshot also records the
			// directories above src (/tmp, ...), which parallel tests
			// change: their trees, at most one per ancestor, may be new.
			if third.FilesRead != 0 || third.FilesUnmodified != third.TotalFiles || third.BlobsAdded > strings.Count(src, "/") {
				t.Errorf("third backup of an unchanged tree: %+v", third)
			}
			if n := r.snapshotCount(); n != 3 {
				t.Errorf("snapshots lists %d snapshots, want 3", n)
			}

			ls := r.mustRun("ls", second.SnapshotID)
			for _, want := range []string{filepath.Join(src, "new.txt"), filepath.Join(src, "rand", "r001.dat")} {
				if !strings.Contains(ls, want+"\n") {
					t.Errorf("ls %s does not list %s:\n%s", second.SnapshotID, want, truncate(ls, 2000))
				}
			}
			r.restoreAndCompare(second.SnapshotID, src)
			if stdout, stderr, code := r.run("check", "--read-data"); code != 0 {
				t.Errorf("check --read-data: exit %d\n%s%s", code, stdout, stderr)
			}
			if out := r.mustRun("locks"); !strings.Contains(out, "no locks") {
				t.Errorf("locks after the commands ended: %q", out)
			}
			r.mustRun("unlock")

			ssh, ok := srv.(*sshServer)
			if !ok {
				return
			}
			// The same repository as sftp://host:port/path.
			u := &remoteRepo{t: t, srv: srv, opts: r.opts, env: envWith(r.env, "REPO_REPOSITORY", ssh.url("roundtrip"))}
			if n := u.snapshotCount(); n != 3 {
				t.Errorf("snapshots through %s: %d, want 3", ssh.url("roundtrip"), n)
			}
			// Command mode: a local sftp-server on the path; the host in
			// the location is not used, so it need not resolve.
			c := &remoteRepo{
				t: t, srv: srv,
				opts: []string{"-o", "sftp.command=" + testserver.SFTPServerPath},
				env:  envWith(r.env, "REPO_REPOSITORY", "sftp:no-such-host.invalid:"+ssh.dirOf("roundtrip")),
			}
			writeFile(t, filepath.Join(src, "cmd.txt"), []byte("through sftp.command\n"), 0o644, gentree.Epoch.Add(3*time.Hour))
			fourth := c.backup(src)
			if fourth.FilesNew != 1 {
				t.Errorf("backup through sftp.command: %+v", fourth)
			}
			if n := c.snapshotCount(); n != 4 {
				t.Errorf("snapshots through sftp.command: %d, want 4", n)
			}
			c.restoreAndCompare(fourth.SnapshotID, src)
			if stdout, stderr, code := c.run("check", "--read-data"); code != 0 {
				t.Errorf("check --read-data through sftp.command: exit %d\n%s%s", code, stdout, stderr)
			}
		})
	}
}

// How long a backup may take to fail once its server is gone (see
// TestRemoteServerKilled), and when the test stops waiting for it.
const (
	killFailWithin = 80 * time.Second
	killHardLimit  = 120 * time.Second
)

// TestRemoteServerKilled stops the server for good in the middle of a
// backup, once a pack is stored: the backup must fail with an error that
// names the trouble, after retrying, within the retry budget. With the
// server back on the same port and storage, check passes (noting the
// stored pack as unindexed), and the next backup indexes it from the
// upload journal in the local cache instead of uploading it again,
// succeeds and restores exactly.
//
// The retry budget of a backend call (backend/retry: 10 attempts or one
// minute) cannot be shortened from outside the binary, so this test waits
// for it, both backends at once: the pack upload gives up after 16-40 s of
// backoff (plus minio-go's own quick retries on s3), then removing the
// lock is retried for up to 30 s (repo.Lock.Unlock's timeout); about a
// minute in all.
func TestRemoteServerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the retry budget (~30-60 s); skipped with -short")
	}
	t.Parallel()
	// The backends run at once, but in this test's one parallel slot
	// (t.Run may be called from several goroutines): they spend most of
	// the minute waiting, and -parallel (GOMAXPROCS, maybe 2) should not
	// make the other tests wait for them.
	var wg sync.WaitGroup
	for i, b := range remoteBackends {
		wg.Go(func() { t.Run(b.name, func(t *testing.T) { testServerKilled(t, b, uint64(i)) }) })
	}
	wg.Wait()
}

// testServerKilled is TestRemoteServerKilled on one backend.
func testServerKilled(t *testing.T, b remoteBackend, seed uint64) {
	srv := b.start(t)
	r := newRemoteRepo(t, srv, "killed")
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{
		Seed: 310 + seed, TextFiles: 100, TextMax: 16 << 10, RandFiles: 5, RandSize: 16 << 20,
	})
	r.mustRun("init")
	full := dirBytes(t, src)

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, r.env, nil, r.args([]string{"backup", src})...)
	var stderr bytes.Buffer
	cmd.Stderr = &stampWriter{w: &stderr, start: time.Now()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var stopped time.Time
poll:
	for {
		select {
		case err := <-done:
			t.Fatalf("backup ended (%v) before the server could be stopped; make the tree larger\n%s", err, stderr.String())
		case <-time.After(2 * time.Millisecond):
		}
		if srv.packsStored(t, r.name) > 0 {
			srv.stop()
			stopped = time.Now()
			break poll
		}
	}
	stored := srv.packsStored(t, r.name)

	var waitErr error
	select {
	case waitErr = <-done:
	case <-time.After(killHardLimit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("backup still running %v after the server stopped\n%s", killHardLimit, tailLines(stderr.Bytes(), 20))
	}
	took := time.Since(stopped)
	errOut := stderr.String()
	t.Logf("server stopped after %d packs were stored; the backup failed %v later (%v); stderr ends:\n%s",
		stored, took.Round(100*time.Millisecond), waitErr, tailLines(stderr.Bytes(), 3))
	var ee *exec.ExitError
	switch {
	case waitErr == nil:
		t.Fatalf("backup succeeded with the server gone\n%s", errOut)
	case !errors.As(waitErr, &ee) || ee.ExitCode() <= 0:
		t.Fatalf("backup: %v, want an error exit", waitErr)
	}
	if took > killFailWithin {
		t.Errorf("the backup took %v to fail after the server stopped, want at most %v\nstderr (seconds since the start):\n%s", took, killFailWithin, errOut)
	}
	if !strings.Contains(errOut, "retrying save data/") {
		t.Errorf("stderr shows no retried pack upload:\n%s", truncate(errOut, 3000))
	}
	last := lastLine(errOut)
	if !strings.Contains(last, "127.0.0.1:") || !containsAny(strings.ToLower(last), "connect", "connection", "refused", "eof", "closed", "reset") {
		t.Errorf("the final error does not name the server and the connection trouble: %q", last)
	}

	// Back on the same port and storage. The failed backup could
	// not remove its lock; its process is gone, so the lock is
	// stale and unlock removes it.
	srv.restart(t)
	staleBackup := 0
	for _, l := range jsonLines(t, r.mustRun("locks", "--json")) {
		if l["message_type"] == "lock" && l["stale"] == true && strings.Contains(fmt.Sprint(l["command"]), "backup") {
			staleBackup++
		}
	}
	if staleBackup != 1 {
		t.Errorf("locks after the failed backup: %d stale backup locks, want 1 (it could not remove its own)\n%s", staleBackup, r.mustRun("locks"))
	}
	if out := r.mustRun("unlock"); !strings.Contains(out, "1 lock(s) removed") {
		t.Errorf("unlock after the failed backup: %q", out)
	}
	if out := r.mustRun("locks"); !strings.Contains(out, "no locks") {
		t.Errorf("locks after unlock: %q", out)
	}

	// The repository is consistent, with the stored packs noted
	// as unindexed.
	stdout, stderr2, code := r.run("check")
	if code != 0 {
		t.Fatalf("check after the failed backup: exit %d\n%s%s", code, stdout, stderr2)
	}
	if !strings.Contains(stdout, "not in any index") {
		t.Errorf("check after the failed backup does not note the unindexed packs:\n%s", stdout)
	}
	if n := r.snapshotCount(); n != 0 {
		t.Errorf("the failed backup left %d snapshots", n)
	}

	// The next backup finds the failed one's uploads in the journal
	// (repo/journal.go) and indexes them rather than upload again.
	again := r.backup(src)
	if again.PacksResumed == 0 {
		t.Errorf("backup after the failure resumed no packs: %+v", again)
	}
	t.Logf("backup after the server came back: added %d of %d bytes in %d packs", again.BytesAdded, full, again.PacksAdded)
	if again.Errors != 0 || again.BytesAdded >= full-(8<<20) {
		t.Errorf("backup after the failure: %+v; want less than the full %d bytes added: the stored pack reused", again, full)
	}
	r.restoreAndCompare(again.SnapshotID, src)
	if stdout, stderr, code := r.run("check"); code != 0 {
		t.Errorf("check at the end: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestRemoteThroughput backs up incompressible data to each backend (and
// a local one for comparison) and logs the upload rate. It asserts no
// time and runs only with REPO_BENCH_REMOTE=1.
func TestRemoteThroughput(t *testing.T) {
	if os.Getenv("REPO_BENCH_REMOTE") != "1" {
		t.Skip("a measurement, not a test: set REPO_BENCH_REMOTE=1 to run it")
	}
	mib := 1024
	if testing.Short() {
		mib = 256
	}
	if v := os.Getenv("REPO_BENCH_REMOTE_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("REPO_BENCH_REMOTE_MIB=%q: want a positive number", v)
		}
		mib = n
	}
	src := filepath.Join(t.TempDir(), "src")
	const fileMiB = 64
	generate(t, src, gentree.Spec{Seed: 320, RandFiles: max(1, mib/fileMiB), RandSize: min(mib, fileMiB) << 20})
	size := dirBytes(t, src)

	backends := append([]remoteBackend{{"local", nil}}, remoteBackends...)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var r *remoteRepo
			if b.start == nil {
				dir := filepath.Join(t.TempDir(), "repo")
				r = &remoteRepo{t: t, env: append(baseEnv(t), "REPO_REPOSITORY="+dir, "REPO_PASSWORD="+testPassword)}
			} else {
				r = newRemoteRepo(t, b.start(t), "throughput")
			}
			r.mustRun("init")
			start := time.Now()
			s := r.backup(src)
			d := time.Since(start)
			t.Logf("%s: backup of %d MiB took %v: %.1f MiB/s (%d packs, %d MiB stored)",
				b.name, size>>20, d.Round(10*time.Millisecond), float64(size)/(1<<20)/d.Seconds(), s.PacksAdded, s.BytesStored>>20)
		})
	}
}

// dirBytes sums the sizes of the regular files below dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// stampWriter prefixes each write (the binary writes a line at a time) with
// the seconds since start, so a failure shows the timing of the retries.
type stampWriter struct {
	w     *bytes.Buffer
	start time.Time
}

func (s *stampWriter) Write(p []byte) (int, error) {
	fmt.Fprintf(s.w, "[%6.2fs] ", time.Since(s.start).Seconds())
	return s.w.Write(p)
}
