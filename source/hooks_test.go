package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hookScript is run as `hook.sh NAME STATUS [SLEEP]`: it appends NAME and
// its process group to $HOOK_LOG, writes to stdout and stderr, sleeps
// SLEEP seconds if given, and exits with STATUS.
const hookScript = `#!/bin/sh
read -r stat < /proc/$$/stat
set -- "$@" $stat
echo "$1 pgid=$8" >> "$HOOK_LOG"
echo "$1 out"
echo "$1 err" >&2
if [ "$3" != "-" ]; then sleep "$3"; fi
exit "$2"
`

// hookEnv is a directory with the hook script and the log it appends to.
type hookEnv struct {
	script, log string
}

func newHookEnv(t *testing.T) *hookEnv {
	t.Helper()
	dir := t.TempDir()
	h := &hookEnv{script: filepath.Join(dir, "hook.sh"), log: filepath.Join(dir, "log")}
	if err := os.WriteFile(h.script, []byte(hookScript), 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

// cmd is the shell line that runs the hook script as name, exiting with
// status after sleeping sleep seconds ("-": no sleep).
func (h *hookEnv) cmd(name string, status int, sleep string) string {
	return "'" + h.script + "' " + name + " " + strconv.Itoa(status) + " " + sleep
}

func (h *hookEnv) options(freezeStatus, thawStatus int) FreezeOptions {
	return FreezeOptions{
		FreezeCmd: h.cmd("freeze", freezeStatus, "-"),
		ThawCmd:   h.cmd("thaw", thawStatus, "-"),
		Env:       []string{"HOOK_LOG=" + h.log},
	}
}

// calls returns the hook names logged so far, in order.
func (h *hookEnv) calls(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(h.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(string(data)) {
		name, _, _ := strings.Cut(line, " ")
		names = append(names, name)
	}
	return names
}

// waitCalls polls the log until it holds want, for at most 10 seconds.
func (h *hookEnv) waitCalls(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := h.calls(t)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hook calls = %q, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *hookEnv) wantCalls(t *testing.T, want ...string) {
	t.Helper()
	if got := h.calls(t); !slices.Equal(got, want) {
		t.Fatalf("hook calls = %q, want %q", got, want)
	}
}

// thawAtEnd thaws f when the test ends, so a failing test leaves no
// goroutine or timer behind.
func thawAtEnd(t *testing.T, f *Freeze) {
	t.Cleanup(func() { f.Thaw() })
}

func TestFreezeThaw(t *testing.T) {
	h := newHookEnv(t)
	o := h.options(0, 0)
	var stdout, stderr bytes.Buffer
	o.Stdout, o.Stderr = &stdout, &stderr

	f, err := StartFreeze(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	thawAtEnd(t, f)
	h.wantCalls(t, "freeze")
	fr := f.FreezeResult()
	if fr.Command != o.FreezeCmd || fr.ExitCode != 0 || fr.Duration <= 0 || fr.Error != "" {
		t.Errorf("FreezeResult() = %+v", fr)
	}

	frozen := f.Frozen(t.Context())
	if err := frozen.Err(); err != nil {
		t.Fatalf("Frozen context done before Thaw: %v", err)
	}

	tr, err := f.Thaw()
	if err != nil {
		t.Fatal(err)
	}
	h.wantCalls(t, "freeze", "thaw")
	if tr.Command != o.ThawCmd || tr.ExitCode != 0 || tr.Duration <= 0 || tr.Error != "" {
		t.Errorf("Thaw() = %+v", tr)
	}
	if got := context.Cause(frozen); !errors.Is(got, ErrThawed) {
		t.Errorf("Frozen context cause after Thaw = %v, want ErrThawed", got)
	}
	if got := context.Cause(f.Frozen(t.Context())); !errors.Is(got, ErrThawed) {
		t.Errorf("Frozen after Thaw: cause = %v, want ErrThawed", got)
	}
	if got, want := stdout.String(), "freeze out\nthaw out\n"; got != want {
		t.Errorf("hooks' stdout = %q, want %q", got, want)
	}
	if got, want := stderr.String(), "freeze err\nthaw err\n"; got != want {
		t.Errorf("hooks' stderr = %q, want %q", got, want)
	}

	data, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"command":` + strconv.Quote(o.ThawCmd) + `,"exit_code":0,"duration_ns":` + strconv.FormatInt(int64(tr.Duration), 10) + `}`
	if string(data) != want {
		t.Errorf("HookResult JSON = %s, want %s", data, want)
	}
}

// The hooks run in a process group of their own, so the terminal's SIGINT,
// sent to the foreground group, does not reach them.
func TestFreezeOwnProcessGroup(t *testing.T) {
	h := newHookEnv(t)
	f, err := StartFreeze(t.Context(), h.options(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(h.log)
	if err != nil {
		t.Fatal(err)
	}
	ours := strconv.Itoa(syscall.Getpgrp())
	for line := range strings.Lines(string(data)) {
		_, pgid, _ := strings.Cut(strings.TrimSpace(line), " pgid=")
		if pgid == "" || pgid == ours {
			t.Errorf("hook log line %q: want a process group other than ours (%s)", line, ours)
		}
	}
}

func TestFreezeFails(t *testing.T) {
	h := newHookEnv(t)
	f, err := StartFreeze(t.Context(), h.options(3, 0))
	if err == nil {
		f.Thaw()
		t.Fatal("StartFreeze succeeded, want an error")
	}
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Hook != "freeze" {
		t.Fatalf("error %v (%T), want a freeze *CommandError", err, err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("error %v: want exit status 3", err)
	}
	want := `freeze command "` + h.cmd("freeze", 3, "-") + `" exited with status 3`
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	// The thaw would have run inside StartFreeze, so it is decided by now.
	h.wantCalls(t, "freeze")
}

// A freeze killed by the timeout may have frozen part of the source, so the
// thaw command runs before StartFreeze returns.
func TestFreezeKilledByTimeoutThaws(t *testing.T) {
	h := newHookEnv(t)
	o := h.options(0, 0)
	o.FreezeCmd = h.cmd("freeze", 0, "30")
	o.Timeout = 200 * time.Millisecond
	f, err := StartFreeze(t.Context(), o)
	if err == nil {
		f.Thaw()
		t.Fatal("StartFreeze succeeded, want an error")
	}
	if !errors.Is(err, ErrFreezeTimeout) {
		t.Errorf("error %v: want ErrFreezeTimeout", err)
	}
	if !strings.Contains(err.Error(), "killed by signal terminated") {
		t.Errorf("error %q: want it to say the freeze was killed", err)
	}
	h.wantCalls(t, "freeze", "thaw")
}

func TestFreezeCancelledBeforeStart(t *testing.T) {
	h := newHookEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f, err := StartFreeze(ctx, h.options(0, 0))
	if err == nil {
		f.Thaw()
		t.Fatal("StartFreeze succeeded, want an error")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v: want context.Canceled", err)
	}
	h.wantCalls(t)
}

func TestThawRunsOnce(t *testing.T) {
	h := newHookEnv(t)
	f, err := StartFreeze(t.Context(), h.options(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]HookResult, 4)
	for i := range results {
		wg.Go(func() {
			var err error
			results[i], err = f.Thaw()
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	again, err := f.Thaw()
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r != again {
			t.Errorf("Thaw call %d = %+v, later call = %+v", i, r, again)
		}
	}
	h.wantCalls(t, "freeze", "thaw")
}

func TestFreezeTimeout(t *testing.T) {
	h := newHookEnv(t)
	o := h.options(0, 0)
	o.Timeout = 200 * time.Millisecond
	f, err := StartFreeze(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	thawAtEnd(t, f)
	frozen := f.Frozen(t.Context())

	// The backup's work: it runs until its context says stop.
	select {
	case <-frozen.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Frozen context not cancelled 10s after a 200ms freeze timeout")
	}
	if got := context.Cause(frozen); !errors.Is(got, ErrFreezeTimeout) {
		t.Errorf("Frozen context cause = %v, want ErrFreezeTimeout", got)
	}
	// The timer runs the thaw command itself, without a Thaw call.
	h.waitCalls(t, "freeze", "thaw")

	tr, err := f.Thaw()
	if err != nil || tr.ExitCode != 0 {
		t.Errorf("Thaw() = %+v, %v; want the timer's successful run", tr, err)
	}
	h.wantCalls(t, "freeze", "thaw")
}

// main cancels the context on SIGINT/SIGTERM: the thaw runs at once,
// without a Thaw call, and a Thaw call afterwards reports that run.
func TestFreezeParentCancelled(t *testing.T) {
	h := newHookEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f, err := StartFreeze(ctx, h.options(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	thawAtEnd(t, f)
	// Not derived from ctx: only the Freeze can cancel it.
	frozen := f.Frozen(t.Context())
	cancel()
	select {
	case <-frozen.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Frozen context not cancelled 10s after StartFreeze's context")
	}
	if got := context.Cause(frozen); !errors.Is(got, context.Canceled) {
		t.Errorf("Frozen context cause = %v, want context.Canceled", got)
	}
	h.waitCalls(t, "freeze", "thaw")
	tr, err := f.Thaw()
	if err != nil || tr.ExitCode != 0 {
		t.Errorf("Thaw() after cancel = %+v, %v; want a successful run", tr, err)
	}
	h.wantCalls(t, "freeze", "thaw")
}

// Thaw called by the caller after its context was cancelled, without the
// cancellation having been seen by anything else first.
func TestThawAfterCancelledContext(t *testing.T) {
	h := newHookEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	f, err := StartFreeze(ctx, h.options(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	tr, err := f.Thaw()
	if err != nil || tr.ExitCode != 0 {
		t.Errorf("Thaw() = %+v, %v; want a successful run", tr, err)
	}
	h.wantCalls(t, "freeze", "thaw")
}

func TestThawFails(t *testing.T) {
	h := newHookEnv(t)
	f, err := StartFreeze(t.Context(), h.options(0, 5))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := f.Thaw()
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Hook != "thaw" {
		t.Fatalf("Thaw error %v (%T), want a thaw *CommandError", err, err)
	}
	want := `thaw command "` + h.cmd("thaw", 5, "-") + `" exited with status 5`
	if err.Error() != want {
		t.Errorf("Thaw error = %q, want %q", err, want)
	}
	if tr.ExitCode != 5 || tr.Error != "exited with status 5" || tr.Duration <= 0 {
		t.Errorf("Thaw() result = %+v, want exit code 5 and its error", tr)
	}
	if tr2, err2 := f.Thaw(); tr2 != tr || err2 != err {
		t.Errorf("second Thaw() = %+v, %v; want the first result", tr2, err2)
	}
	h.wantCalls(t, "freeze", "thaw")
}

// A thaw command that hangs is killed after ThawTimeout.
func TestThawTimeout(t *testing.T) {
	h := newHookEnv(t)
	o := h.options(0, 0)
	o.ThawCmd = h.cmd("thaw", 0, "30")
	o.ThawTimeout = 200 * time.Millisecond
	f, err := StartFreeze(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := f.Thaw()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Thaw error = %v, want context.DeadlineExceeded", err)
	}
	if tr.ExitCode != -1 || !strings.HasPrefix(tr.Error, "killed by signal terminated") {
		t.Errorf("Thaw() = %+v, want killed by SIGTERM", tr)
	}
}

func TestStartFreezeNeedsBothCommands(t *testing.T) {
	h := newHookEnv(t)
	for _, o := range []FreezeOptions{{FreezeCmd: "true"}, {ThawCmd: "true"}} {
		o.Env = []string{"HOOK_LOG=" + h.log}
		if f, err := StartFreeze(t.Context(), o); err == nil {
			f.Thaw()
			t.Errorf("StartFreeze(%+v) succeeded, want an error", o)
		}
	}
}
