package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// killGrace is how long a process group has between SIGTERM and SIGKILL
// once its context is cancelled: time enough for a freeze script's trap to
// undo a partial freeze, short enough for Ctrl-C to stay prompt.
const killGrace = 5 * time.Second

// pipeDelay bounds how long waiting for a process lasts after it has
// exited while a pipe to one of our writers is still open, typically held
// by a background helper it started; past it the pipe is closed.
const pipeDelay = 2 * time.Second

// ErrOutputNotRead is the Cause of a Command's error when Wait was called
// before its standard output had been read to io.EOF: the stream is
// incomplete whatever the exit status says.
var ErrOutputNotRead = errors.New("output not read to the end")

// errKilled is the Cause of a Command's error after Kill.
var errKilled = errors.New("killed by the caller")

// CommandError reports a freeze or thaw hook, or a stream command, that did
// not succeed: it could not start, exited with a non-zero status, was
// killed by a signal, or (a Command only) its output was not read to the
// end. errors.Is and errors.As see through it to Err and Cause, so
// errors.Is(err, ErrFreezeTimeout) or errors.As(err, new(*exec.ExitError))
// work on the error as returned.
type CommandError struct {
	Hook    string // "freeze" or "thaw" for a hook, "" for a stream command
	Command string // the shell line of a hook; a command's argv joined, shell-quoted where needed
	// State is how the process ended; nil when it did not start.
	State *os.ProcessState
	// Err is an *exec.ExitError when the process ran and failed, the reason
	// it could not start when State is nil, and nil when it exited with
	// status 0 (only a Command whose output was not read to the end).
	Err error
	// Cause is why the process was stopped by us: the context's cause
	// (context.Canceled, ErrFreezeTimeout, context.DeadlineExceeded), Kill,
	// or ErrOutputNotRead; nil when it ended on its own.
	Cause error
}

// Error reads like `freeze command "nbackup -L db" exited with status 3` or
// `command "pg_dump mydb" killed by signal terminated: context canceled`.
func (e *CommandError) Error() string {
	prefix := "command "
	if e.Hook != "" {
		prefix = e.Hook + " command "
	}
	return fmt.Sprintf("%s%q %s", prefix, e.Command, e.outcome())
}

// Unwrap returns Err and Cause, those that are set.
func (e *CommandError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	return errs
}

// outcome is the message without the command: how it ended and why.
func (e *CommandError) outcome() string {
	var s string
	if e.State == nil {
		s = "could not start"
		if e.Err != nil {
			s += ": " + e.Err.Error()
		}
	} else {
		s = exitString(e.State)
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// exitString is "exited with status N" or "killed by signal NAME".
func exitString(ps *os.ProcessState) string {
	if killedBySignal(ps) {
		return "killed by signal " + ps.Sys().(syscall.WaitStatus).Signal().String()
	}
	return fmt.Sprintf("exited with status %d", ps.ExitCode())
}

func killedBySignal(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// proc is a process started in a process group of its own, so that the
// terminal's Ctrl-C (sent to the foreground group) does not reach it and
// cancellation can stop it together with its children.
type proc struct {
	cmd       *exec.Cmd
	start     time.Time
	stopWatch func() bool // unregisters the context watch

	mu        sync.Mutex
	reaped    bool        // wait has returned: the pid may be reused, never signal it again
	cause     error       // why the group was signalled; nil if it never was
	killTimer *time.Timer // SIGKILL after killGrace, once terminate ran
}

// startProc starts cmd unless ctx is already done. When ctx is done before
// the process is reaped, its group gets SIGTERM and, killGrace later,
// SIGKILL. Output written to a non-*os.File writer goes through a pipe that
// wait gives up on pipeDelay after the process exits.
func startProc(ctx context.Context, cmd *exec.Cmd) (*proc, error) {
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = pipeDelay
	p := &proc{cmd: cmd, start: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.stopWatch = context.AfterFunc(ctx, func() { p.terminate(context.Cause(ctx)) })
	return p, nil
}

// terminate sends SIGTERM to the group now and SIGKILL killGrace later.
func (p *proc) terminate(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped || p.cause != nil {
		return
	}
	p.cause = cause
	p.signalLocked(unix.SIGTERM)
	p.killTimer = time.AfterFunc(killGrace, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.reaped {
			p.signalLocked(unix.SIGKILL)
		}
	})
}

// kill sends SIGKILL to the group now.
func (p *proc) kill(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return
	}
	if p.cause == nil {
		p.cause = cause
	}
	p.signalLocked(unix.SIGKILL)
}

// signalLocked signals the whole group; the leader's pid is its id.
// ESRCH (everyone already gone) is not an error here.
func (p *proc) signalLocked(sig unix.Signal) {
	_ = unix.Kill(-p.cmd.Process.Pid, sig)
}

// wait waits for the process. err is nil when it exited with status 0:
// trouble copying its output to a writer, or giving up on a pipe a
// background child kept open, does not turn a success into a failure.
// cause is why we signalled it, if we did.
func (p *proc) wait() (err, cause error, d time.Duration) {
	err = p.cmd.Wait()
	d = time.Since(p.start)
	p.stopWatch()
	p.mu.Lock()
	p.reaped = true
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
	cause = p.cause
	p.mu.Unlock()
	if ps := p.cmd.ProcessState; ps != nil && ps.Success() {
		err = nil
	}
	return err, cause, d
}

// Command is a running command whose standard output is read as a
// stream, for dump tools (`repo backup --stdin-from-command -- pg_dump
// mydb`). Its exit status decides whether what was read is a complete
// stream: see Wait.
//
// Read is not safe for concurrent use with itself or with Wait; Kill may
// be called from any goroutine at any time, typically to unblock a Read.
type Command struct {
	p      *proc
	name   string
	stdout io.ReadCloser
	eof    atomic.Bool // Read has returned io.EOF

	waitOnce sync.Once
	waitErr  error
}

var _ io.Reader = (*Command)(nil)

// StartCommand runs argv (argv[0] looked up in $PATH, no shell) with its
// standard output as a pipe that Read reads, its standard error copied to
// stderr (nil discards it) and standard input from /dev/null. It runs in a
// process group of its own: the terminal's Ctrl-C does not reach it
// directly; instead, when ctx is done, the whole group gets SIGTERM and,
// 5 seconds later, SIGKILL.
//
// When it cannot start, the error is a *CommandError with a nil State.
func StartCommand(ctx context.Context, argv []string, stderr io.Writer) (*Command, error) {
	if len(argv) == 0 {
		return nil, errors.New("start command: empty command line")
	}
	name := quoteArgv(argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start command %q: %w", name, err)
	}
	p, err := startProc(ctx, cmd)
	if err != nil {
		stdout.Close() // not started: nobody else closes it
		return nil, &CommandError{Command: name, Err: err}
	}
	return &Command{p: p, name: name, stdout: stdout}, nil
}

// Read reads the command's standard output. It returns io.EOF once the
// command and every process that inherited its standard output have closed
// it, normally at exit.
func (c *Command) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

// Wait waits for the command to exit and releases its resources. It
// returns nil only when the command exited with status 0 and its output
// was read to io.EOF; otherwise a *CommandError naming the command and its
// exit status or signal, e.g. `command "pg_dump mydb" exited with status 1`.
//
// Call it after Read returned io.EOF, or to abort, after Kill. Calling it
// with output still unread does not hang: Wait first closes the read end,
// so a command still writing gets SIGPIPE (or EPIPE) and ends, and the
// error's Cause is ErrOutputNotRead even when the command exited with
// status 0, because the stream the caller got is then incomplete. A caller
// that keeps a snapshot only when Wait returns nil can therefore not keep a
// truncated one. Later calls return the first result.
func (c *Command) Wait() error {
	c.waitOnce.Do(func() {
		eof := c.eof.Load()
		if !eof {
			c.stdout.Close()
		}
		err, cause, _ := c.p.wait()
		if err == nil && eof {
			return
		}
		if cause == nil && !eof {
			cause = ErrOutputNotRead
		}
		ce := &CommandError{Command: c.name, State: c.p.cmd.ProcessState, Err: err, Cause: cause}
		if ce.State == nil {
			// Waiting itself failed; there is no exit status to report.
			ce.Err = fmt.Errorf("wait: %w", err)
		}
		c.waitErr = ce
	})
	return c.waitErr
}

// Kill sends SIGKILL to the command's process group, which ends a blocked
// Read with io.EOF once every writer is gone. Wait must still be called.
// Kill after Wait does nothing.
func (c *Command) Kill() {
	c.p.kill(errKilled)
}

// quoteArgv joins argv with spaces, single-quoting the arguments a shell
// would split or expand, so a message shows what was run unambiguously.
func quoteArgv(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
			b.WriteString(a)
			continue
		}
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(a, "'", `'\''`))
		b.WriteByte('\'')
	}
	return b.String()
}
