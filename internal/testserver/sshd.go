package testserver

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const (
	// SSHDPath is where StartSSHD expects sshd.
	SSHDPath = "/usr/sbin/sshd"
	// SFTPServerPath is OpenSSH's sftp-server, installed with sshd.
	SFTPServerPath = "/usr/lib/openssh/sftp-server"
)

// EnsureSSHD installs openssh-server with apt-get when sshd is missing
// (once per test binary), and skips t (fails it under CI=true) when that
// does not work.
func EnsureSSHD(t testing.TB) {
	t.Helper()
	EnsurePackage(t, SSHDPath, "openssh-server")
}

// SSHDOptions are what StartSSHD can vary.
type SSHDOptions struct {
	// Home, when set, makes a directory of that name in Dir where SFTP
	// sessions start (internal-sftp -d): relative paths resolve there.
	Home string
	// LogTail is how many of the last lines of sshd's log are logged
	// when the test fails; 0 logs all of it.
	LogTail int
}

// SSHD is an OpenSSH sshd on 127.0.0.1 that lets the current user in
// with a generated ed25519 key and serves SFTP with internal-sftp.
// Nothing is mocked: it is the server users run.
type SSHD struct {
	Port           string
	Dir            string // scratch directory of keys and logs
	Home           string // the SFTP start directory (SSHDOptions.Home), or ""
	KnownHostsFile string // a known_hosts file listing the host key
	IdentityFile   string // the client's unencrypted private key
	HostKey        ssh.PublicKey
	ClientKey      ed25519.PrivateKey

	hostKeyFile string
	log         lockedLog
	run         running
}

// StartSSHD starts sshd for t and stops it at t's end.
func StartSSHD(t testing.TB, opts SSHDOptions) *SSHD {
	t.Helper()
	EnsureSSHD(t)
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			Unavailable(t, "privilege separation directory: %v", err)
		}
		_ = os.Chmod("/run/sshd", 0o755) // sshd refuses a group- or world-writable one
	} else if _, err := os.Stat("/run/sshd"); err != nil {
		Unavailable(t, "sshd needs /run/sshd, which only root can make: %v", err)
	}

	dir := t.TempDir()
	s := &SSHD{
		Dir:            dir,
		KnownHostsFile: filepath.Join(dir, "known_hosts"),
		IdentityFile:   filepath.Join(dir, "id_ed25519"),
		hostKeyFile:    filepath.Join(dir, "host_ed25519"),
	}
	if opts.Home != "" {
		s.Home = filepath.Join(dir, opts.Home)
		if err := os.Mkdir(s.Home, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hostPub, hostPriv := NewKey(t)
	WriteKey(t, s.hostKeyFile, hostPriv)
	s.HostKey = hostPub
	clientPub, clientPriv := NewKey(t)
	WriteKey(t, s.IdentityFile, clientPriv)
	s.ClientKey = clientPriv
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}

	var err error
	for range 3 { // a lost race for the port shows as a failed start
		s.Port = FreePort(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		Unavailable(t, "%v", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize("127.0.0.1:" + s.Port)}, s.HostKey)
	if err := os.WriteFile(s.KnownHostsFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			if opts.LogTail > 0 {
				t.Logf("sshd log (last lines): %s", tailLines([]byte(s.Log()), opts.LogTail))
			} else {
				t.Logf("sshd log:\n%s", s.Log())
			}
		}
	})
	return s
}

// NewKey makes an ed25519 key pair.
func NewKey(t testing.TB) (ssh.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub, priv
}

// WriteKey writes key to file as an unencrypted OpenSSH private key.
func WriteKey(t testing.TB, file string, key ed25519.PrivateKey) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Log is what sshd has logged so far.
func (s *SSHD) Log() string { return s.log.String() }

// start runs sshd on s.Port and waits until it listens.
func (s *SSHD) start() error {
	subsystem := "sftp internal-sftp"
	if s.Home != "" {
		subsystem += " -d " + s.Home
	}
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", "/dev/null",
		"-h", s.hostKeyFile, "-p", s.Port,
		"-o", "ListenAddress=127.0.0.1",
		"-o", "PidFile=none",
		"-o", "AuthorizedKeysFile="+filepath.Join(s.Dir, "authorized_keys"),
		"-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no",
		"-o", "PermitRootLogin=prohibit-password",
		"-o", "UsePAM=no",
		"-o", "StrictModes=no",
		"-o", "MaxStartups=100",
		"-o", "Subsystem="+subsystem,
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sshd: %w", err)
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		want := "Server listening on 127.0.0.1 port " + s.Port
		signalled := false
		for sc.Scan() {
			s.log.add(sc.Text())
			if !signalled && strings.Contains(sc.Text(), want) {
				close(ready)
				signalled = true
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-ready:
	case <-exited:
		return fmt.Errorf("sshd exited: %s", tailLines([]byte(s.Log()), 5))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("sshd did not start listening in 10s: %s", tailLines([]byte(s.Log()), 5))
	}
	pid := cmd.Process.Pid
	s.run.set(func() { signalTree(pid, syscall.SIGKILL) }, exited, pid)
	return nil
}

// Stop kills sshd and every process it started (the per-connection ones
// run in sessions of their own, so a process group would not do).
func (s *SSHD) Stop() { s.run.stop() }

// Restart starts sshd again on the same port with the same keys.
func (s *SSHD) Restart(t testing.TB) {
	t.Helper()
	restart(t, "sshd", s.start)
}

// Signal sends sig to every sshd process, e.g. SIGSTOP to freeze it
// (connections stay open, but nothing answers) and SIGCONT to thaw it.
func (s *SSHD) Signal(sig syscall.Signal) {
	s.run.mu.Lock()
	defer s.run.mu.Unlock()
	if s.run.kill != nil {
		signalTree(s.run.pid, sig)
	}
}

// signalTree sends sig to pid and all its descendants, found through
// /proc. The whole tree is collected first, so that killing a parent
// (which re-parents its children) loses nobody.
func signalTree(pid int, sig syscall.Signal) {
	for _, p := range append([]int{pid}, Descendants(pid)...) {
		_ = syscall.Kill(p, sig)
	}
}

// Descendants lists the descendants of the process root, found through
// /proc.
func Descendants(root int) []int {
	children := make(map[int][]int)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// parentOf reads the parent pid from /proc/PID/stat ("pid (comm) state
// ppid …"; comm may hold spaces and parentheses).
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}
