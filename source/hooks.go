package source

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// ErrFreezeTimeout is the cause of a Frozen context, and of a freeze
// command's error, when FreezeOptions.Timeout expired.
var ErrFreezeTimeout = errors.New("freeze timeout expired")

// ErrThawed is the cause of a Frozen context cancelled because Thaw was
// called: reading on would read a source that is no longer frozen.
var ErrThawed = errors.New("source thawed")

// defaultThawTimeout bounds the thaw command when FreezeOptions.ThawTimeout
// is zero.
const defaultThawTimeout = 5 * time.Minute

// HookResult records one hook run, stored in the snapshot.
type HookResult struct {
	Command  string        `json:"command"`
	ExitCode int           `json:"exit_code"` // -1 when it could not start or was killed
	Duration time.Duration `json:"duration_ns"`
	// Error says how it failed, without the command: "exited with status
	// 3", "killed by signal terminated: freeze timeout expired"; empty on
	// success.
	Error string `json:"error,omitempty"`
}

// FreezeOptions configures StartFreeze.
type FreezeOptions struct {
	// FreezeCmd and ThawCmd are shell lines run with /bin/sh -c, e.g.
	// "nbackup -L /db/main.fdb" and "nbackup -N /db/main.fdb". Both are
	// required.
	FreezeCmd, ThawCmd string
	// Timeout is the longest the source may stay frozen, counted from the
	// start of the freeze command; when it expires the thaw command runs
	// at once and Frozen contexts are cancelled with ErrFreezeTimeout.
	// 0 means no limit.
	Timeout time.Duration
	// ThawTimeout bounds the thaw command, which never runs under the
	// caller's context (that is typically what was cancelled). 0 means
	// 5 minutes.
	ThawTimeout time.Duration
	// Stdout and Stderr receive the hooks' output; nil discards it.
	Stdout, Stderr io.Writer
	// Env is added to this process's environment for the hooks, "KEY=value".
	Env []string
}

// Freeze is a source frozen by a freeze command and waiting for its thaw
// command. The thaw command runs exactly once, at the first of: Thaw, the
// context given to StartFreeze done, or FreezeOptions.Timeout expired.
// All methods are safe for concurrent use.
type Freeze struct {
	o      FreezeOptions // ThawTimeout already defaulted
	freeze HookResult

	thawOnce sync.Once
	thaw     HookResult // set inside thawOnce
	thawErr  error

	mu sync.Mutex
	// thawed is set, and every Frozen context cancelled with cause, before
	// the thaw command starts; a Frozen context made later is born
	// cancelled.
	thawed  bool
	cause   error
	cancels []context.CancelCauseFunc
	// timer and stopWatch trigger the thaw on timeout and on the done of
	// StartFreeze's context; nil until the freeze succeeded.
	timer     *time.Timer
	stopWatch func() bool
}

// StartFreeze runs the freeze command and returns once it has exited with
// status 0. The caller runs the backup under Frozen(ctx) and then calls
// Thaw, also on error and on cancellation (a deferred Thaw does it):
//
//	f, err := source.StartFreeze(ctx, opts)
//	if err != nil {
//		return err // not frozen, or already thawed again
//	}
//	defer f.Thaw() // or call it and record its result
//	err = backup(f.Frozen(ctx))
//
// The freeze command runs under ctx and, when Timeout is set, under the
// timeout too. When ctx is done after the freeze, the thaw runs at once,
// without waiting for the backup to notice.
//
// A failed freeze returns an error (a *CommandError, Hook "freeze") and
// what happens to the thaw command depends on how it failed:
//
//   - It exited with a non-zero status, or could not start: the thaw
//     command does not run. The freeze command's status is its verdict, and
//     a failing freeze command must leave nothing frozen (a script that
//     freezes several things undoes those it froze before exiting non-zero).
//     Thawing what was not frozen is not always harmless: it may release a
//     lock someone else holds.
//   - It was killed by a signal, normally ours because ctx was cancelled
//     or the timeout expired during the freeze: it may have frozen part of
//     the source and could not say, and leaving a database locked is worse
//     than a thaw command that finds nothing to thaw, so the thaw command
//     runs before StartFreeze returns, and its error, if any, is joined to the
//     freeze error. A freeze script that traps SIGTERM, undoes its work and
//     exits with a status is back in the first case.
func StartFreeze(ctx context.Context, o FreezeOptions) (*Freeze, error) {
	if o.FreezeCmd == "" || o.ThawCmd == "" {
		return nil, errors.New("start freeze: both a freeze and a thaw command are required")
	}
	if o.ThawTimeout == 0 {
		o.ThawTimeout = defaultThawTimeout
	}
	f := &Freeze{o: o}

	fctx, cancel := ctx, context.CancelFunc(func() {})
	var deadline time.Time
	if o.Timeout > 0 {
		// The source may be frozen from the moment the command starts.
		deadline = time.Now().Add(o.Timeout)
		fctx, cancel = context.WithDeadlineCause(ctx, deadline, ErrFreezeTimeout)
	}
	var err error
	f.freeze, err = runHook(fctx, "freeze", o.FreezeCmd, &f.o)
	cause := context.Cause(fctx)
	cancel()
	if err != nil {
		var ce *CommandError
		if errors.As(err, &ce) && ce.State != nil && killedBySignal(ce.State) {
			_, thawErr := f.thawBecause(cause)
			return nil, errors.Join(err, thawErr)
		}
		return nil, err
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if o.Timeout > 0 {
		f.timer = time.AfterFunc(time.Until(deadline), func() { f.thawBecause(ErrFreezeTimeout) })
	}
	f.stopWatch = context.AfterFunc(ctx, func() { f.thawBecause(context.Cause(ctx)) })
	return f, nil
}

// Frozen returns a context derived from ctx that is also cancelled when the
// source stops being frozen, before the thaw command starts: with cause
// ErrFreezeTimeout when the timeout expired, ErrThawed after Thaw, or the
// cause of the context given to StartFreeze. The backup runs under it, so
// it stops reading a source that is no longer consistent. Thaw releases
// every Frozen context.
func (f *Freeze) Frozen(ctx context.Context) context.Context {
	c, cancel := context.WithCancelCause(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed {
		cancel(f.cause)
	} else {
		f.cancels = append(f.cancels, cancel)
	}
	return c
}

// FreezeResult returns the freeze command's run.
func (f *Freeze) FreezeResult() HookResult {
	return f.freeze
}

// Thaw runs the thaw command, unless it already ran or is running, and
// returns its result: later and concurrent calls wait for the one run and
// return its result. It runs under a context of its own bounded by
// ThawTimeout, so it works after the caller's context was cancelled, and
// in a process group of its own, so a second Ctrl-C at the terminal does
// not kill it midway. The error is a *CommandError (Hook "thaw") when the
// command did not exit with status 0; the result says the same.
//
// Nothing thaws a source whose backup process was killed with SIGKILL;
// the Timeout is measured inside this process too.
func (f *Freeze) Thaw() (HookResult, error) {
	return f.thawBecause(ErrThawed)
}

// thawBecause runs the thaw command once; cause becomes the cause of the
// Frozen contexts if this call is the one that runs it.
func (f *Freeze) thawBecause(cause error) (HookResult, error) {
	f.thawOnce.Do(func() {
		f.mu.Lock()
		if f.timer != nil {
			f.timer.Stop()
		}
		if f.stopWatch != nil {
			f.stopWatch()
		}
		f.thawed, f.cause = true, cause
		for _, cancel := range f.cancels {
			cancel(cause)
		}
		f.cancels = nil
		f.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), f.o.ThawTimeout)
		defer cancel()
		f.thaw, f.thawErr = runHook(ctx, "thaw", f.o.ThawCmd, &f.o)
	})
	return f.thaw, f.thawErr
}

// runHook runs line with /bin/sh -c in a process group of its own and
// waits for it; when ctx is done first the group is terminated.
func runHook(ctx context.Context, hook, line string, o *FreezeOptions) (HookResult, error) {
	cmd := exec.Command("/bin/sh", "-c", line)
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	if len(o.Env) > 0 {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	res := HookResult{Command: line, ExitCode: -1}
	p, err := startProc(ctx, cmd)
	if err != nil {
		ce := &CommandError{Hook: hook, Command: line, Err: err}
		res.Error = ce.outcome()
		return res, ce
	}
	err, cause, d := p.wait()
	res.Duration = d
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if err == nil {
		return res, nil
	}
	ce := &CommandError{Hook: hook, Command: line, State: cmd.ProcessState, Err: err, Cause: cause}
	res.Error = ce.outcome()
	return res, ce
}
