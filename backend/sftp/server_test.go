package sftp

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const (
	sshdPath       = "/usr/sbin/sshd"
	sftpServerPath = "/usr/lib/openssh/sftp-server"
)

// testServer is an OpenSSH sshd on 127.0.0.1 that lets the current user
// in with a generated key and serves SFTP through internal-sftp. Nothing
// is mocked: it is the server users run.
type testServer struct {
	Port       string
	Dir        string // scratch directory of keys and logs
	Home       string // where the SFTP session starts: relative paths resolve here
	KnownHosts string // a known_hosts file listing the server's key
	Identity   string // the client's private key (unencrypted ed25519)
	HostKey    ssh.PublicKey
	ClientKey  ed25519.PrivateKey

	hostKeyFile string
	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{}
	log         *lockedBuffer
}

// serverUnavailable skips the test with the reason the server cannot run,
// or fails it when CI=true: in CI a skipped SFTP test is a failure.
func serverUnavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "sftp test server unavailable: " + fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var (
	installOnce sync.Once
	installErr  error
)

// ensureSSHD installs openssh-server with apt-get when sshd is missing
// (once per test binary).
func ensureSSHD(t testing.TB) {
	t.Helper()
	installOnce.Do(func() {
		if _, err := os.Stat(sshdPath); err == nil {
			return
		}
		if _, err := exec.LookPath("apt-get"); err != nil {
			installErr = fmt.Errorf("%s is missing and there is no apt-get to install openssh-server", sshdPath)
			return
		}
		install := func() error {
			cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "openssh-server")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("apt-get install openssh-server: %v: %s", err, lastLines(out, 5))
			}
			return nil
		}
		t.Logf("%s is missing: installing openssh-server", sshdPath)
		if err := install(); err != nil {
			t.Logf("%v; running apt-get update and trying again", err)
			if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
				installErr = fmt.Errorf("apt-get update: %v: %s", err, lastLines(out, 5))
				return
			}
			if err := install(); err != nil {
				installErr = err
				return
			}
		}
		if _, err := os.Stat(sshdPath); err != nil {
			installErr = fmt.Errorf("openssh-server installed, but: %v", err)
		}
	})
	if installErr != nil {
		serverUnavailable(t, "%v", installErr)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// startServer starts a server for t and stops it at t's end.
func startServer(t testing.TB) *testServer {
	t.Helper()
	ensureSSHD(t)
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			serverUnavailable(t, "privilege separation directory: %v", err)
		}
		_ = os.Chmod("/run/sshd", 0o755) // sshd refuses a group- or world-writable one
	} else if _, err := os.Stat("/run/sshd"); err != nil {
		serverUnavailable(t, "sshd needs /run/sshd, which only root can make: %v", err)
	}

	dir := t.TempDir()
	srv := &testServer{
		Dir:         dir,
		Home:        filepath.Join(dir, "home"),
		KnownHosts:  filepath.Join(dir, "known_hosts"),
		Identity:    filepath.Join(dir, "id_ed25519"),
		hostKeyFile: filepath.Join(dir, "host_ed25519"),
	}
	if err := os.Mkdir(srv.Home, 0o755); err != nil {
		t.Fatal(err)
	}
	hostPub, hostPriv := newKey(t)
	writeKey(t, srv.hostKeyFile, hostPriv)
	srv.HostKey = hostPub
	clientPub, clientPriv := newKey(t)
	writeKey(t, srv.Identity, clientPriv)
	srv.ClientKey = clientPriv
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}

	// A port that was free a moment ago; a lost race shows as a failed
	// start and is retried.
	var err error
	for range 3 {
		srv.Port = freePort(t)
		if err = srv.start(); err == nil {
			break
		}
	}
	if err != nil {
		serverUnavailable(t, "%v", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize("127.0.0.1:" + srv.Port)}, srv.HostKey)
	if err := os.WriteFile(srv.KnownHosts, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", srv.log.String())
		}
	})
	return srv
}

func newKey(t testing.TB) (ssh.PublicKey, ed25519.PrivateKey) {
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

func writeKey(t testing.TB, file string, key ed25519.PrivateKey) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// start runs sshd on srv.Port and waits until it listens.
func (srv *testServer) start() error {
	args := []string{"-D", "-e", "-f", "/dev/null",
		"-h", srv.hostKeyFile, "-p", srv.Port,
		"-o", "ListenAddress=127.0.0.1",
		"-o", "PidFile=none",
		"-o", "AuthorizedKeysFile=" + filepath.Join(srv.Dir, "authorized_keys"),
		"-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no",
		"-o", "PermitRootLogin=prohibit-password",
		"-o", "UsePAM=no",
		"-o", "StrictModes=no",
		"-o", "MaxStartups=100",
		"-o", "Subsystem=sftp internal-sftp -d " + srv.Home,
	}
	cmd := exec.Command(sshdPath, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sshd: %w", err)
	}
	if srv.log == nil {
		srv.log = &lockedBuffer{}
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		want := "Server listening on 127.0.0.1 port " + srv.Port
		signalled := false
		for sc.Scan() {
			srv.log.WriteString(sc.Text() + "\n")
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
		return fmt.Errorf("sshd exited: %s", lastLines([]byte(srv.log.String()), 5))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("sshd did not start listening in 10s: %s", lastLines([]byte(srv.log.String()), 5))
	}
	srv.mu.Lock()
	srv.cmd, srv.exited = cmd, exited
	srv.mu.Unlock()
	return nil
}

// stop kills sshd and every process it started (the per-connection
// ones run in sessions of their own, so a process group would not do).
func (srv *testServer) stop() {
	srv.mu.Lock()
	cmd, exited := srv.cmd, srv.exited
	srv.cmd = nil
	srv.mu.Unlock()
	if cmd == nil {
		return
	}
	signalTree(cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

// restart starts sshd again on the same port with the same keys.
func (srv *testServer) restart(t testing.TB) {
	t.Helper()
	var err error
	for range 50 { // the port may linger a moment
		if err = srv.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restart sshd: %v", err)
}

// freeze stops every sshd process (SIGSTOP): connections stay open, but
// nothing answers. thaw resumes them.
func (srv *testServer) freeze() { srv.signal(syscall.SIGSTOP) }
func (srv *testServer) thaw()   { srv.signal(syscall.SIGCONT) }

func (srv *testServer) signal(sig syscall.Signal) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.cmd != nil {
		signalTree(srv.cmd.Process.Pid, sig)
	}
}

// signalTree sends sig to pid and all its descendants, found through
// /proc. The whole tree is collected first, so that killing a parent
// (which re-parents its children) loses nobody.
func signalTree(pid int, sig syscall.Signal) {
	pids := append([]int{pid}, descendants(pid)...)
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
}

func descendants(root int) []int {
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
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
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

// location returns a location on srv for the directory dir.
func (srv *testServer) location(dir string) Location {
	return Location{Host: "127.0.0.1", Port: srv.Port, Path: dir}
}

// options returns Options that trust srv and log in with its client key.
func (srv *testServer) options() Options {
	return Options{KnownHostsFile: srv.KnownHosts, IdentityFiles: []string{srv.Identity}}
}

// fingerprint is the server's host key fingerprint.
func (srv *testServer) fingerprint() string { return ssh.FingerprintSHA256(srv.HostKey) }

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
