package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pkgsftp "github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"repo/backend"
)

// Timeouts; variables so that tests can shorten them.
var (
	// dialTimeout bounds connecting and the SSH and SFTP handshakes.
	dialTimeout = 30 * time.Second
	// keepaliveInterval is how often an idle or busy SSH connection is
	// asked for a sign of life, and keepaliveTimeout how long the answer
	// may take before the connection is declared dead and closed, so
	// that an operation on a vanished server fails instead of hanging
	// until TCP gives up (minutes to hours).
	keepaliveInterval = 15 * time.Second
	keepaliveTimeout  = 45 * time.Second
	// hangGrace is how long an operation whose context was cancelled may
	// still take to finish by itself before its connection is closed
	// under it. A Save cancelled midway needs that time to collect the
	// answers to its writes in flight (up to 2 MiB), close and remove its
	// temporary file: 250 ms was not always enough on a loaded machine
	// (a CI run left a temporary file behind), and a second more on a
	// hung server is little next to the keepalive's 45 s.
	hangGrace = time.Second
	// commandExitWait is how long Close waits for a Command to exit after
	// its stdin closed, before killing it.
	commandExitWait = 2 * time.Second
)

// sftpOptions tune pkg/sftp for throughput: 128 KiB packets (OpenSSH
// takes up to 256 KiB minus headers; 256 KiB packets make it drop the
// connection) with up to 64 requests in flight per file, for reads and
// writes.
var sftpOptions = []pkgsftp.ClientOption{
	pkgsftp.UseConcurrentWrites(true),
	pkgsftp.UseConcurrentReads(true),
	pkgsftp.MaxConcurrentRequestsPerFile(maxRequests),
	pkgsftp.MaxPacketUnchecked(maxPacket),
}

const (
	maxPacket   = 128 << 10
	maxRequests = 64
)

// session is one SFTP session with its own transport: an SSH connection,
// or the process of Options.Command.
type session struct {
	c *pkgsftp.Client
	// killTransport ends the transport at once, so that every pending
	// request fails; it is safe to call more than once and
	// concurrently.
	killTransport func()
	// shutdown ends the transport politely (EOF to the server) within a
	// bounded time.
	shutdown func()
	// dead is closed once the transport is gone; killed is set at once
	// by kill, before dead follows.
	dead   chan struct{}
	killed atomic.Bool
}

// kill ends the transport at once; see killTransport.
func (s *session) kill() {
	s.killed.Store(true)
	s.killTransport()
}

// isDead reports whether s is unusable.
func (s *session) isDead() bool {
	if s.killed.Load() {
		return true
	}
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

// close shuts s down and releases pkg/sftp's goroutines.
func (s *session) close() {
	s.shutdown()
	s.kill() // no-op when shutdown finished the job
	_ = s.c.Close()
}

// dialer makes sessions; it holds everything that Open checked once.
type dialer struct {
	loc     Location
	user    string
	command []string // Options.Command split into arguments; nil for SSH
	keys    *keys
	hosts   *hostKeys
}

// dial makes a new session. It returns ctx's error when ctx ends first.
func (d *dialer) dial(ctx context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var (
		s   *session
		err error
	)
	if d.command != nil {
		s, err = d.dialCommand(ctx)
	} else {
		s, err = d.dialSSH(ctx)
	}
	if err != nil && ctx.Err() != nil {
		// The transport was closed under the handshake.
		return nil, ctx.Err()
	}
	return s, err
}

func (d *dialer) dialSSH(ctx context.Context) (*session, error) {
	addr := d.loc.addr()
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	// Until the SFTP session is up, ctx (with the dial timeout) may end
	// the connection.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	ok := false
	defer func() {
		if !ok {
			stop()
			nc.Close()
		}
	}()

	signers, notes, agentDone := d.keys.session()
	defer agentDone()
	authTried := false
	cfg := &ssh.ClientConfig{
		User: d.user,
		Auth: []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			authTried = true
			return signers, nil
		})},
		HostKeyCallback:   d.hosts.callback,
		HostKeyAlgorithms: d.hosts.algos,
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		var hke *HostKeyError
		switch {
		case errors.As(err, &hke):
			return nil, backend.Permanent(hke)
		case authTried && !isNetworkError(err):
			return nil, backend.Permanent(fmt.Errorf("log in to %s as %s: %w (%s)", addr, d.user, err, strings.Join(notes, "; ")))
		}
		return nil, fmt.Errorf("ssh to %s: %w", addr, err)
	}
	client := ssh.NewClient(conn, chans, reqs)
	c, err := pkgsftp.NewClient(client, sftpOptions...)
	if err != nil {
		return nil, fmt.Errorf("start sftp on %s: %w", addr, err)
	}
	if !stop() {
		// ctx ended just as the handshake finished: the connection
		// is closed already.
		return nil, ctx.Err()
	}
	ok = true
	s := &session{
		c:             c,
		killTransport: func() { client.Close() },
		shutdown:      func() { client.Close() },
		dead:          make(chan struct{}),
	}
	go func() {
		// The session is dead when the SSH connection closes, or when
		// only the server's sftp-server process died (its channel closed
		// while the connection lives on): then the connection is closed
		// too, so the pool opens a new one instead of reusing it forever.
		select {
		case <-waitChan(c):
			client.Close()
		case <-waitChan(client):
		}
		close(s.dead)
	}()
	go keepalive(client, s.dead, keepaliveInterval, keepaliveTimeout)
	return s, nil
}

// keepalive asks client for a sign of life every interval and closes it
// when an answer takes longer than timeout; it returns when dead is
// closed.
func keepalive(client *ssh.Client, dead <-chan struct{}, interval, timeout time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-dead:
			return
		case <-tick.C:
		}
		answered := make(chan error, 1)
		go func() {
			// OpenSSH answers an unknown request with a failure,
			// which is as good a sign of life as any.
			_, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		timer := time.NewTimer(timeout)
		select {
		case err := <-answered:
			timer.Stop()
			if err != nil {
				client.Close()
				return
			}
		case <-timer.C:
			client.Close()
			return
		case <-dead:
			timer.Stop()
			return
		}
	}
}

// isNetworkError reports whether err is the connection failing rather
// than the server refusing us.
func isNetworkError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// dialCommand starts Options.Command and speaks SFTP over its stdin and
// stdout. The command runs in its own process group, so that a Ctrl-C on
// the terminal reaches only this process, which can then still release
// its locks through the command, and so that kill can end the command's
// children too.
func (d *dialer) dialCommand(ctx context.Context) (*session, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	stderr := &tailBuffer{max: 2048}
	cmd := exec.Command(d.command[0], d.command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
	setProcessGroup(cmd)
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		err = fmt.Errorf("start sftp command %q: %w", d.command[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			err = backend.Permanent(err)
		}
		return nil, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	kill := func() {
		once.Do(func() {
			killProcessGroup(cmd.Process)
			inW.Close()
			outR.Close() // unblocks pkg/sftp's reader even if a child keeps stdout open
		})
	}
	stop := context.AfterFunc(ctx, kill)
	c, err := pkgsftp.NewClientPipe(outR, inW, sftpOptions...)
	if !stop() && err == nil {
		err = ctx.Err() // killed just as the handshake finished
	}
	if err != nil {
		kill()
		<-exited
		if msg := stderr.String(); msg != "" {
			return nil, fmt.Errorf("start sftp command %q: %w (stderr: %s)", d.command[0], err, msg)
		}
		return nil, fmt.Errorf("start sftp command %q: %w", d.command[0], err)
	}
	s := &session{
		c:             c,
		killTransport: kill,
		shutdown: func() {
			inW.Close() // EOF: the server exits
			select {
			case <-exited:
			case <-time.After(commandExitWait):
			}
		},
		dead: make(chan struct{}),
	}
	go func() {
		// The session is dead when pkg/sftp's reader stops (EOF or
		// error) or the command exits, whichever comes first.
		select {
		case <-exited:
		case <-waitChan(c):
		}
		close(s.dead)
	}()
	return s, nil
}

// waitChan returns a channel closed when c's Wait returns (an SSH
// connection's or an SFTP session's shutdown).
func waitChan(c interface{ Wait() error }) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		_ = c.Wait()
		close(ch)
	}()
	return ch
}

// tailBuffer keeps the last max bytes written to it: the end of a
// command's stderr, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

// splitCommand splits a command line into arguments like a POSIX shell
// without expansions: whitespace separates, single quotes keep
// everything, double quotes keep everything but \" and \\, and a
// backslash outside quotes escapes the next character.
func splitCommand(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool
		quote rune // 0, '\'' or '"'
		esc   bool
	)
	for _, c := range s {
		switch {
		case esc:
			cur.WriteRune(c)
			esc = false
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteRune(c)
			}
		case quote == '"':
			switch c {
			case '"':
				quote = 0
			case '\\':
				esc = true
			default:
				cur.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, inArg = c, true
		case c == '\\':
			esc, inArg = true, true
		case c == ' ' || c == '\t' || c == '\n':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(c)
			inArg = true
		}
	}
	if quote != 0 || esc {
		return nil, fmt.Errorf("invalid command %q: unterminated quote or escape", s)
	}
	if inArg {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("invalid command %q: empty", s)
	}
	return args, nil
}
