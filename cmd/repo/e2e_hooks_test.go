package main

// End-to-end tests of the freeze and thaw hooks (--freeze-cmd,
// --thaw-cmd, --freeze-timeout) and of --stdin-from-command.
//
// The hooks are small sh scripts that append "freeze" or "thaw" to a log
// file; the log is what says how often, and in which order, they ran. A
// backup that must still be running when something happens to it (a
// timeout, SIGTERM) reads --stdin from a pipe this test feeds slowly and
// never closes: such a backup cannot finish on its own, however fast the
// machine.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"repo/internal/gentree"
)

// hookResultJSON is a hook run recorded in a snapshot.
type hookResultJSON struct {
	Command    string `json:"command"`
	ExitCode   int    `json:"exit_code"`
	DurationNS int64  `json:"duration_ns"`
	Error      string `json:"error"`
}

// hookSnapshotJSON is a line of snapshots --json with the source's hook
// and command fields.
type hookSnapshotJSON struct {
	ID     string   `json:"id"`
	Paths  []string `json:"paths"`
	Source struct {
		Kind    string          `json:"kind"`
		Command []string        `json:"command"`
		Freeze  *hookResultJSON `json:"freeze"`
		Thaw    *hookResultJSON `json:"thaw"`
	} `json:"source"`
}

func hookSnapshots(t *testing.T, r *testRepo) []hookSnapshotJSON {
	t.Helper()
	var sns []hookSnapshotJSON
	for _, line := range jsonLines(t, r.mustRun("snapshots", "--json")) {
		if line["message_type"] != "snapshot" {
			continue
		}
		var sn hookSnapshotJSON
		decodeLine(t, line, &sn)
		sns = append(sns, sn)
	}
	return sns
}

// hookSet is a freeze and a thaw script and the log they append to.
type hookSet struct {
	freeze, thaw, log string
}

// writeHooks writes freeze.sh and thaw.sh into a fresh directory: each
// appends its name to the log and then runs its extra shell lines.
func writeHooks(t *testing.T, freezeExtra, thawExtra string) hookSet {
	t.Helper()
	dir := t.TempDir()
	h := hookSet{
		freeze: filepath.Join(dir, "freeze.sh"),
		thaw:   filepath.Join(dir, "thaw.sh"),
		log:    filepath.Join(dir, "hooks.log"),
	}
	for _, s := range []struct{ path, name, extra string }{{h.freeze, "freeze", freezeExtra}, {h.thaw, "thaw", thawExtra}} {
		script := fmt.Sprintf("#!/bin/sh\necho %s >> '%s'\n%s\n", s.name, h.log, s.extra)
		if err := os.WriteFile(s.path, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// args are the backup flags that run the hooks.
func (h hookSet) args(extra ...string) []string {
	return append([]string{"backup", "--freeze-cmd", h.freeze, "--thaw-cmd", h.thaw}, extra...)
}

// ran returns the lines of the log.
func (h hookSet) ran(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(h.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// checkRan fails the test unless the log says exactly want.
func (h hookSet) checkRan(t *testing.T, when string, want ...string) {
	t.Helper()
	if got := h.ran(t); !slices.Equal(got, want) {
		t.Errorf("%s: hooks ran %q, want %q", when, got, want)
	}
}

// hookProc is the binary running in the background.
type hookProc struct {
	cmd            *exec.Cmd
	done           chan struct{}
	err            error
	stdout, stderr bytes.Buffer
}

// startHookProc starts the binary with stdin (nil: /dev/null); it is
// killed if still running when the test ends.
func startHookProc(t *testing.T, env []string, stdin *os.File, args ...string) *hookProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	p := &hookProc{done: make(chan struct{})}
	p.cmd = repoCommand(t, ctx, env, nil, args...)
	if stdin != nil {
		p.cmd.Stdin = stdin
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// wait waits up to d for the process to exit and reports whether it did.
func (p *hookProc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// code is the exit code (-1: killed by a signal); only after wait.
func (p *hookProc) code() int { return p.cmd.ProcessState.ExitCode() }

func (p *hookProc) String() string {
	return fmt.Sprintf("exit %v\nstdout:\n%s\nstderr:\n%s", p.err, truncate(p.stdout.String(), 4000), p.stderr.String())
}

// trickle returns the read end of a pipe that gets 4 KiB of data every
// 10 ms until the reader is gone or the test ends: a backup of it as
// --stdin runs until something stops it. The caller passes it to
// startHookProc and then closes it.
func trickle(t *testing.T, seed uint64) *os.File {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer pw.Close()
		rng := newRand(seed)
		for {
			if _, err := pw.Write(gentree.Random(rng, 4096)); err != nil {
				return // EPIPE: the backup is gone
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
	return pr
}

// waitFor waits up to d until the hooks' log has line.
func (h hookSet) waitFor(t *testing.T, line string, d time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if slices.Contains(h.ran(t), line) {
			return true
		}
	}
	return false
}

// hookRepo is a repository for a hook test with a small source tree.
func hookRepo(t *testing.T) (*testRepo, string) {
	t.Helper()
	r := newRepo(t)
	fastLocks(r)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 200, TextFiles: 20, TextMax: 8 << 10})
	return r, src
}

// TestE2EFreezeThawSuccess: the freeze hook runs before the data is read,
// the thaw hook once after it, their output reaches stderr (stdout stays
// JSON), and the snapshot records both runs.
func TestE2EFreezeThawSuccess(t *testing.T) {
	t.Parallel()
	r, src := hookRepo(t)
	state := filepath.Join(src, "state")
	writeFile(t, state, []byte("running\n"), 0o644, time.Now())
	h := writeHooks(t,
		fmt.Sprintf("echo 'freeze hook says hello'\necho frozen > '%s'", state),
		fmt.Sprintf("echo running > '%s'", state))

	stdout, stderr, code := r.run(nil, h.args("--json", src)...)
	if code != 0 {
		t.Fatalf("backup with hooks: exit %d\n%s%s", code, stdout, stderr)
	}
	jsonLines(t, stdout) // the hooks' output must not mix into it
	h.checkRan(t, "successful backup", "freeze", "thaw")
	if !strings.Contains(stderr, "freeze hook says hello") {
		t.Errorf("the freeze hook's output is not on stderr: %q", stderr)
	}
	if got := r.mustRun("dump", "latest", state); got != "frozen\n" {
		t.Errorf("snapshot has state %q, want \"frozen\\n\": the data was not read while frozen", got)
	}
	if got := string(mustRead(t, state)); got != "running\n" {
		t.Errorf("after the backup the state is %q: the thaw hook did not run last", got)
	}
	sns := hookSnapshots(t, r)
	if len(sns) != 1 {
		t.Fatalf("%d snapshots, want 1", len(sns))
	}
	src0 := sns[0].Source
	for _, c := range []struct {
		name string
		res  *hookResultJSON
		cmd  string
	}{{"freeze", src0.Freeze, h.freeze}, {"thaw", src0.Thaw, h.thaw}} {
		switch {
		case c.res == nil:
			t.Errorf("snapshot does not record the %s hook (source %+v)", c.name, src0)
		case c.res.Command != c.cmd || c.res.ExitCode != 0 || c.res.Error != "" || c.res.DurationNS <= 0:
			t.Errorf("snapshot records the %s hook as %+v, want command %q, exit 0, no error, a duration", c.name, *c.res, c.cmd)
		}
	}
}

// TestE2EFreezeThawBackupFails: a backup that fails after the freeze
// thaws once and saves nothing. It fails because a path to back up does
// not exist: that is checked after the freeze (a missing path is a fatal
// error, unlike an unreadable file, which only gives exit 3), and because
// the dump command it saves fails. TestE2EFreezeTimeout fails one midway.
func TestE2EFreezeThawBackupFails(t *testing.T) {
	t.Parallel()
	r, src := hookRepo(t)
	h := writeHooks(t, "", "")
	missing := filepath.Join(t.TempDir(), "missing")
	stdout, stderr, code := r.run(nil, h.args(src, missing)...)
	if code != exitError || !strings.Contains(stderr, missing) {
		t.Errorf("backup of a missing path: exit %d, want %d naming %s\n%s%s", code, exitError, missing, stdout, stderr)
	}
	h.checkRan(t, "failed backup", "freeze", "thaw")

	// A dump command that fails after the freeze.
	h = writeHooks(t, "", "")
	args := h.args("--stdin-from-command", "--", "sh", "-c", "echo partial; exit 5")
	if stdout, stderr, code := r.run(nil, args...); code != exitError || !strings.Contains(stderr, "status 5") {
		t.Errorf("frozen backup of a failing dump command: exit %d, want %d naming status 5\n%s%s", code, exitError, stdout, stderr)
	}
	h.checkRan(t, "failed dump command", "freeze", "thaw")
	if n := len(hookSnapshots(t, r)); n != 0 {
		t.Errorf("failed backups saved %d snapshots", n)
	}
}

// TestE2EFreezeTimeout: when --freeze-timeout expires during the backup,
// the thaw hook runs once and the backup fails without a snapshot.
func TestE2EFreezeTimeout(t *testing.T) {
	t.Parallel()
	r, _ := hookRepo(t)
	h := writeHooks(t, "", "")
	in := trickle(t, 201)
	start := time.Now()
	p := startHookProc(t, r.env, in, h.args("--freeze-timeout", "1500ms", "--stdin")...)
	in.Close()
	if !p.wait(60 * time.Second) {
		t.Fatalf("backup still running 60s after it started, with a freeze timeout of 1.5s\n%s", h.ran(t))
	}
	t.Logf("backup ended after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(p.stderr.String()))
	if code := p.code(); code != exitError || !strings.Contains(p.stderr.String(), "freeze timeout") {
		t.Errorf("backup past its freeze timeout: exit %d, want %d saying \"freeze timeout\"\n%v", code, exitError, p)
	}
	h.checkRan(t, "freeze timeout", "freeze", "thaw")
	if n := len(hookSnapshots(t, r)); n != 0 {
		t.Errorf("backup past its freeze timeout saved %d snapshots", n)
	}
}

// TestE2EFreezeTimeoutIdleStdin: the freeze timeout must end a --stdin
// backup whose producer is idle (say, a dump tool that waits on the
// frozen database) too, not only one that keeps receiving data.
func TestE2EFreezeTimeoutIdleStdin(t *testing.T) {
	t.Parallel()
	r, _ := hookRepo(t)
	h := writeHooks(t, "", "")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	p := startHookProc(t, r.env, pr, h.args("--freeze-timeout", "1s", "--stdin")...)
	pr.Close()
	if !h.waitFor(t, "thaw", 30*time.Second) {
		t.Fatalf("no thaw within 30s of a 1s freeze timeout; hooks ran %q", h.ran(t))
	}
	if !p.wait(10 * time.Second) {
		t.Errorf("backup --stdin still running 10s after its freeze timeout expired and the thaw ran: " +
			"the timeout does not interrupt a read of an idle stdin")
		pw.Close() // EOF ends it
		if !p.wait(30 * time.Second) {
			t.Fatalf("backup still running after its stdin was closed\n%v", p)
		}
	}
	if code := p.code(); code == 0 {
		t.Errorf("backup past its freeze timeout exited 0\n%v", p)
	}
	h.checkRan(t, "freeze timeout, idle stdin", "freeze", "thaw")
	if n := len(hookSnapshots(t, r)); n != 0 {
		t.Errorf("backup past its freeze timeout saved %d snapshots", n)
	}
}

// TestE2EFreezeThawSIGTERM: SIGTERM during a frozen backup thaws once
// and the backup exits with an error, not killed by the signal.
func TestE2EFreezeThawSIGTERM(t *testing.T) {
	t.Parallel()
	r, _ := hookRepo(t)
	h := writeHooks(t, "", "")
	in := trickle(t, 202)
	p := startHookProc(t, r.env, in, h.args("--stdin")...)
	in.Close()
	if !h.waitFor(t, "freeze", 30*time.Second) {
		p.cmd.Process.Kill()
		t.Fatalf("the freeze hook did not run within 30s\n%v", p)
	}
	time.Sleep(200 * time.Millisecond) // into the backup proper
	if slices.Contains(h.ran(t), "thaw") {
		t.Fatalf("thawed before the signal: %q", h.ran(t))
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !p.wait(30 * time.Second) {
		p.cmd.Process.Kill()
		t.Fatalf("backup still running 30s after SIGTERM")
	}
	if code := p.code(); code == 0 || code == -1 {
		t.Errorf("backup after SIGTERM: exit %d, want an error exit code\n%v", code, p)
	}
	if !strings.Contains(p.stderr.String(), "interrupted") {
		t.Errorf("backup after SIGTERM does not say it was interrupted\n%v", p)
	}
	h.checkRan(t, "SIGTERM", "freeze", "thaw")
	if n := len(hookSnapshots(t, r)); n != 0 {
		t.Errorf("backup stopped by SIGTERM saved %d snapshots", n)
	}
}

// TestE2EFreezeFails: a freeze hook that exits non-zero stops the backup
// before anything is read, and the thaw hook does not run (nothing is
// frozen; thawing could release someone else's lock).
func TestE2EFreezeFails(t *testing.T) {
	t.Parallel()
	r, src := hookRepo(t)
	h := writeHooks(t, "exit 3", "")
	stdout, stderr, code := r.run(nil, h.args(src)...)
	if code == 0 || !strings.Contains(stderr, "freeze") || !strings.Contains(stderr, "status 3") {
		t.Errorf("backup whose freeze hook exits 3: exit %d, want non-zero naming the freeze and status 3\n%s%s", code, stdout, stderr)
	}
	h.checkRan(t, "failed freeze", "freeze")
	if n := len(hookSnapshots(t, r)); n != 0 {
		t.Errorf("backup whose freeze failed saved %d snapshots", n)
	}
}

// TestE2EFreezeKilledByTimeout: a freeze hook still running when
// --freeze-timeout expires is killed; it may have frozen part of the
// source, so the thaw hook runs, once.
func TestE2EFreezeKilledByTimeout(t *testing.T) {
	t.Parallel()
	r, src := hookRepo(t)
	h := writeHooks(t, "sleep 30", "")
	start := time.Now()
	stdout, stderr, code := r.run(nil, h.args("--freeze-timeout", "500ms", src)...)
	if code == 0 || !strings.Contains(stderr, "freeze") {
		t.Errorf("backup whose freeze hook outlives the timeout: exit %d, want non-zero naming the freeze\n%s%s", code, stdout, stderr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("backup took %v with a freeze timeout of 500ms", d)
	}
	h.checkRan(t, "freeze killed by the timeout", "freeze", "thaw")
	if n := len(hookSnapshots(t, r)); n != 0 {
		t.Errorf("backup whose freeze timed out saved %d snapshots", n)
	}
}

// TestE2EThawFails: a thaw hook that fails keeps the snapshot (the data
// was read while frozen) but fails the command, saying so.
func TestE2EThawFails(t *testing.T) {
	t.Parallel()
	r, src := hookRepo(t)
	h := writeHooks(t, "", "exit 4")
	stdout, stderr, code := r.run(nil, h.args(src)...)
	if code == 0 || !strings.Contains(stderr, "thaw") || !strings.Contains(stderr, "status 4") {
		t.Errorf("backup whose thaw hook exits 4: exit %d, want non-zero naming the thaw and status 4\n%s%s", code, stdout, stderr)
	}
	h.checkRan(t, "failed thaw", "freeze", "thaw")
	sns := hookSnapshots(t, r)
	if len(sns) != 1 {
		t.Fatalf("backup whose thaw failed: %d snapshots, want 1 (the data was read while frozen)", len(sns))
	}
	if !strings.Contains(stderr, sns[0].ID[:8]) {
		t.Errorf("the error does not name the saved snapshot %.8s: %q", sns[0].ID, stderr)
	}
	if th := sns[0].Source.Thaw; th == nil || th.ExitCode != 4 || !strings.Contains(th.Error, "status 4") {
		t.Errorf("snapshot records the thaw as %+v, want exit code 4 and its error", th)
	}
	if fz := sns[0].Source.Freeze; fz == nil || fz.ExitCode != 0 {
		t.Errorf("snapshot records the freeze as %+v, want exit code 0", fz)
	}
}

// TestE2EStdinFromCommand: the output of a command that exits 0 is saved
// byte for byte; a command that fails, is killed or cannot start saves
// nothing, and its stderr reaches ours.
func TestE2EStdinFromCommand(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	fastLocks(r)
	rng := newRand(210)
	var data []byte
	for len(data) < 3500000 {
		data = append(data, gentree.Text(rng, 300<<10)...)
		data = append(data, gentree.Random(rng, 100<<10)...)
	}
	file := filepath.Join(t.TempDir(), "dump.src")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}

	sum := r.backup("--stdin-from-command", "--", "cat", file)
	if sum.BytesRead != int64(len(data)) || sum.TotalFiles != 1 {
		t.Errorf("backup of cat: read %d bytes in %d files, want %d in 1", sum.BytesRead, sum.TotalFiles, len(data))
	}
	if got := r.mustRun("dump", "latest", "/stdin"); got != string(data) {
		t.Errorf("dump /stdin: %d bytes that differ from the command's %d", len(got), len(data))
	}
	head := fmt.Sprintf("head -c 3000000 '%s'", file)
	r.mustRun("backup", "--stdin-filename", "db.sql", "--stdin-from-command", "--", "sh", "-c", head)
	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", "latest", "--target", target)
	if got := scanTree(t, target); len(got) != 2 || !bytes.Equal(mustRead(t, filepath.Join(target, "db.sql")), data[:3000000]) {
		t.Errorf("restore of the command snapshot: %v, want only db.sql with the first 3000000 bytes", sortedKeys(got))
	}
	sns := hookSnapshots(t, r)
	if len(sns) != 2 {
		t.Fatalf("%d snapshots, want 2", len(sns))
	}
	for i, want := range []struct {
		path string
		cmd  []string
	}{{"/stdin", []string{"cat", file}}, {"/db.sql", []string{"sh", "-c", head}}} {
		sn := sns[i]
		if sn.Source.Kind != "command" || !slices.Equal(sn.Source.Command, want.cmd) || !slices.Equal(sn.Paths, []string{want.path}) {
			t.Errorf("snapshot %d: source %+v, paths %q; want kind command, command %q, paths [%s]", i+1, sn.Source, sn.Paths, want.cmd, want.path)
		}
	}

	for _, c := range []struct {
		name, script, stderr string
	}{
		{"exits 1", fmt.Sprintf("head -c 100000 '%s'; echo 'dump failed: disk on fire' >&2; exit 1", file), "dump failed: disk on fire"},
		{"exits 1 after all of it", fmt.Sprintf("cat '%s'; exit 1", file), "status 1"},
		{"is killed", fmt.Sprintf("head -c 100000 '%s'; kill -9 $$", file), "killed"},
		{"exits 0 with nothing", "exit 0", ""},
	} {
		stdout, stderr, code := r.run(nil, "backup", "--stdin-from-command", "--", "sh", "-c", c.script)
		if c.stderr == "" {
			// An empty dump is a valid (empty) stream.
			if code != 0 {
				t.Errorf("command that %s: exit %d\n%s%s", c.name, code, stdout, stderr)
			}
			continue
		}
		if code != exitError || !strings.Contains(stderr, c.stderr) {
			t.Errorf("command that %s: exit %d, want %d with %q on stderr\n%s%s", c.name, code, exitError, c.stderr, stdout, stderr)
		}
	}
	_, stderr, code := r.run(nil, "backup", "--stdin-from-command", "--", filepath.Join(t.TempDir(), "no-such-dump-tool"))
	if code != exitError || !strings.Contains(stderr, "no-such-dump-tool") {
		t.Errorf("command that cannot start: exit %d, want %d naming it: %q", code, exitError, stderr)
	}
	if n := len(hookSnapshots(t, r)); n != 3 {
		t.Errorf("%d snapshots after the failed commands and the empty dump, want 3", n)
	}
	if got := r.mustRun("dump", "latest", "/stdin"); got != "" {
		t.Errorf("empty dump: got %d bytes", len(got))
	}

	for _, args := range [][]string{
		{"backup", "--stdin-from-command", "cat", file}, // no --
		{"backup", "--stdin-from-command", file, "--", "cat", file},
		{"backup", "--stdin", "--stdin-from-command", "--", "cat", file},
		{"backup", "--stdin-from-command", "--"},
	} {
		if _, stderr, code := r.run(nil, args...); code != exitUsage {
			t.Errorf("repo %s: exit %d, want %d (usage)\n%s", quoteArgs(args), code, exitUsage, stderr)
		}
	}
}
