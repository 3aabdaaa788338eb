// Package testserver starts real servers for tests: an OpenSSH sshd with
// generated keys, and gofakes3 over TLS. Both listen on 127.0.0.1 only,
// can be stopped in the middle of a test and started again on the same
// port, and are stopped when their test ends. When a server cannot run,
// the test is skipped with the reason, or fails under CI=true.
//
// Only tests import this package.
package testserver

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Unavailable skips t because a server cannot run, or fails it under
// CI=true, where every test must run.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true, but the test server cannot run: " + msg)
	}
	t.Skip("test server unavailable: " + msg)
}

// FreePort returns a port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// tailLines is the last n lines of b, joined with " | ".
func tailLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// lockedLog is a log that goroutines can add lines to.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(line + "\n")
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// running is the current run of a server that can be stopped and
// started again.
type running struct {
	mu   sync.Mutex
	kill func()        // stops the run at once; nil when stopped
	done chan struct{} // closed when the run has ended
	pid  int           // the server process, if it is one
}

func (r *running) set(kill func(), done chan struct{}, pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kill, r.done, r.pid = kill, done, pid
}

// stop ends the run, if there is one, and waits for it.
func (r *running) stop() {
	r.mu.Lock()
	kill, done := r.kill, r.done
	r.kill = nil
	r.mu.Unlock()
	if kill != nil {
		kill()
		<-done
	}
}

// restart calls start until it works, while the port may linger a
// moment, and fails t when it never does.
func restart(t testing.TB, what string, start func() error) {
	t.Helper()
	var err error
	for range 50 {
		if err = start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restart %s: %v", what, err)
}

var (
	installMu   sync.Mutex
	installErrs = map[string]error{} // by package, once tried
)

// EnsurePackage makes sure the file path exists (a server or a tool the
// test runs), installing the Debian package pkg with apt-get when it does
// not (once per package and test binary; apt-get update and a second try
// if the first fails), and skips t (fails it under CI=true) when that
// does not work. CI's machines start without such packages: the tests
// install what they need themselves.
func EnsurePackage(t testing.TB, path, pkg string) {
	t.Helper()
	installMu.Lock()
	err, tried := installErrs[pkg]
	if !tried {
		err = installPackage(t, path, pkg)
		installErrs[pkg] = err
	}
	installMu.Unlock()
	if err != nil {
		Unavailable(t, "%v", err)
	}
}

func installPackage(t testing.TB, path, pkg string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("%s is missing and there is no apt-get to install %s", path, pkg)
	}
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", pkg)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get install %s: %v: %s", pkg, err, tailLines(out, 5))
		}
		return nil
	}
	t.Logf("%s is missing: installing %s", path, pkg)
	if err := install(); err != nil {
		t.Logf("%v; running apt-get update and trying again", err)
		if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get update: %v: %s", err, tailLines(out, 5))
		}
		if err := install(); err != nil {
			return err
		}
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s installed, but: %v", pkg, err)
	}
	return nil
}
