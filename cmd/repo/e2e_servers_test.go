package main

// Servers for the remote end-to-end tests (e2e_remote_test.go): a real
// OpenSSH sshd with generated keys, and gofakes3 over TLS in this process.
// Both listen on 127.0.0.1 only, can be stopped in the middle of a command
// and started again on the same port with the same storage, and are
// stopped when their test ends. backend/sftp and backend/s3 have fuller
// versions in their _test.go files, which this package cannot import.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// remoteServer is a server a remote end-to-end test runs the binary
// against.
type remoteServer interface {
	// location is the repository location of the repository name on the
	// server.
	location(name string) string
	// env is what the binary's environment needs besides baseEnv.
	env() []string
	// options are the -o arguments every command gets.
	options() []string
	// packsStored is how many pack files the server has stored for the
	// repository name (all of them, indexed or not).
	packsStored(t *testing.T, name string) int
	// stop kills the server and its connections at once; restart starts
	// it again on the same port with the same storage.
	stop()
	restart(t *testing.T)
}

// remoteUnavailable skips t because a server cannot run, or fails it under
// CI=true, where every test must run.
func remoteUnavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true, but the test server cannot run: " + msg)
	}
	t.Skip("test server unavailable: " + msg)
}

// freeLocalPort returns a port on 127.0.0.1 that was free a moment ago.
func freeLocalPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// --- sshd ---

const (
	sshdPath       = "/usr/sbin/sshd"
	sftpServerPath = "/usr/lib/openssh/sftp-server"
)

var (
	sshdInstallOnce sync.Once
	sshdInstallErr  error
)

// ensureSSHD installs openssh-server with apt-get when sshd is missing
// (once per test binary).
func ensureSSHD(t testing.TB) {
	t.Helper()
	sshdInstallOnce.Do(func() {
		if _, err := os.Stat(sshdPath); err == nil {
			return
		}
		if _, err := exec.LookPath("apt-get"); err != nil {
			sshdInstallErr = fmt.Errorf("%s is missing and there is no apt-get to install openssh-server", sshdPath)
			return
		}
		install := func() error {
			cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "openssh-server")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get install openssh-server: %v: %s", err, tailLines(out, 5))
			}
			return nil
		}
		t.Logf("%s is missing: installing openssh-server", sshdPath)
		if err := install(); err != nil {
			t.Logf("%v; running apt-get update and trying again", err)
			if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
				sshdInstallErr = fmt.Errorf("apt-get update: %v: %s", err, tailLines(out, 5))
				return
			}
			if sshdInstallErr = install(); sshdInstallErr != nil {
				return
			}
		}
		if _, err := os.Stat(sshdPath); err != nil {
			sshdInstallErr = fmt.Errorf("openssh-server installed, but: %v", err)
		}
	})
	if sshdInstallErr != nil {
		remoteUnavailable(t, "%v", sshdInstallErr)
	}
}

func tailLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// sshServer is an OpenSSH sshd on 127.0.0.1 that lets the current user in
// with a generated ed25519 key and serves SFTP with internal-sftp.
// Repositories live below Root, addressed by absolute path.
type sshServer struct {
	Port       string
	Root       string // where the repositories are
	KnownHosts string // known_hosts listing the host key
	Identity   string // the client's unencrypted private key

	dir     string
	hostKey string
	log     lockedLog

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// startSSHServer starts sshd for t and stops it at t's end.
func startSSHServer(t *testing.T) *sshServer {
	t.Helper()
	ensureSSHD(t)
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			remoteUnavailable(t, "privilege separation directory: %v", err)
		}
		_ = os.Chmod("/run/sshd", 0o755) // sshd refuses a group- or world-writable one
	} else if _, err := os.Stat("/run/sshd"); err != nil {
		remoteUnavailable(t, "sshd needs /run/sshd, which only root can make: %v", err)
	}
	dir := t.TempDir()
	s := &sshServer{
		Root:       filepath.Join(dir, "root"),
		KnownHosts: filepath.Join(dir, "known_hosts"),
		Identity:   filepath.Join(dir, "id_ed25519"),
		dir:        dir,
		hostKey:    filepath.Join(dir, "host_ed25519"),
	}
	if err := os.Mkdir(s.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	hostPub := writeSSHKey(t, s.hostKey)
	clientPub := writeSSHKey(t, s.Identity)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	for range 3 { // a lost race for the port shows as a failed start
		s.Port = freeLocalPort(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		remoteUnavailable(t, "%v", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize("127.0.0.1:" + s.Port)}, hostPub)
	if err := os.WriteFile(s.KnownHosts, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshd log (last lines): %s", tailLines([]byte(s.log.String()), 20))
		}
	})
	return s
}

// writeSSHKey writes a new unencrypted ed25519 private key to file and
// returns its public key.
func writeSSHKey(t testing.TB, file string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub
}

// start runs sshd on s.Port and waits until it listens.
func (s *sshServer) start() error {
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", "/dev/null",
		"-h", s.hostKey, "-p", s.Port,
		"-o", "ListenAddress=127.0.0.1",
		"-o", "PidFile=none",
		"-o", "AuthorizedKeysFile="+filepath.Join(s.dir, "authorized_keys"),
		"-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no",
		"-o", "PermitRootLogin=prohibit-password",
		"-o", "UsePAM=no",
		"-o", "StrictModes=no",
		"-o", "MaxStartups=100",
		"-o", "Subsystem=sftp internal-sftp",
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
		return fmt.Errorf("sshd exited: %s", tailLines([]byte(s.log.String()), 5))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("sshd did not listen within 10s: %s", tailLines([]byte(s.log.String()), 5))
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

// stop kills sshd and every process it started (the per-connection ones
// run in sessions of their own, so a process group would not do).
func (s *sshServer) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	pids := append([]int{cmd.Process.Pid}, descendantPids(cmd.Process.Pid)...)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	<-exited
}

func (s *sshServer) restart(t *testing.T) {
	t.Helper()
	var err error
	for range 50 { // the port may linger a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restart sshd: %v", err)
}

func (s *sshServer) location(name string) string {
	return "sftp:127.0.0.1:" + s.Port + ":" + s.dirOf(name)
}

// url is location in the sftp:// form.
func (s *sshServer) url(name string) string {
	return "sftp://127.0.0.1:" + s.Port + s.dirOf(name)
}

func (s *sshServer) dirOf(name string) string { return filepath.Join(s.Root, name) }

func (s *sshServer) env() []string { return nil }

func (s *sshServer) options() []string {
	return []string{"-o", "sftp.known-hosts=" + s.KnownHosts, "-o", "sftp.identity=" + s.Identity}
}

func (s *sshServer) packsStored(t *testing.T, name string) int {
	return len(packFiles(t, s.dirOf(name)))
}

// descendantPids lists the descendants of root, found through /proc; the
// whole tree is collected before anything is killed, so that killing a
// parent (which re-parents its children) loses nobody.
func descendantPids(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid …"; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
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

// --- gofakes3 over TLS ---

// s3Server is gofakes3 with in-memory storage, served over TLS on
// 127.0.0.1 with a self-signed certificate that the binary trusts through
// SSL_CERT_FILE. Each repository is a bucket of its own.
type s3Server struct {
	addr     string // 127.0.0.1:port
	certFile string
	cert     tls.Certificate
	handler  http.Handler

	// dataPuts counts the successful PUTs of keys under data/, by bucket.
	mu       sync.Mutex
	dataPuts map[string]int
	srv      *http.Server
	done     chan struct{}
}

// startS3Server starts gofakes3 for t and stops it at t's end.
func startS3Server(t *testing.T) *s3Server {
	t.Helper()
	s := &s3Server{dataPuts: map[string]int{}}
	s.cert, s.certFile = selfSignedCert(t)
	faker := gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog()))
	s.handler = s.count(faker.Server())
	var err error
	for range 3 {
		s.addr = "127.0.0.1:" + freeLocalPort(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		remoteUnavailable(t, "gofakes3: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// count wraps h so that successful PUTs of pack files are counted.
func (s *s3Server) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		// Path style: /bucket/prefix/data/xx/name.
		bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if r.Method == http.MethodPut && sw.status/100 == 2 && strings.Contains("/"+key, "/data/") && !r.URL.Query().Has("partNumber") {
			s.mu.Lock()
			s.dataPuts[bucket]++
			s.mu.Unlock()
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (s *s3Server) start() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:   s.handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{s.cert}},
		// Quiet: clients that drop connections make TLS handshake
		// errors, which are not this test's business.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(ln, "", "")
	}()
	s.mu.Lock()
	s.srv, s.done = srv, done
	s.mu.Unlock()
	return nil
}

// stop closes the listener and every connection at once.
func (s *s3Server) stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

func (s *s3Server) restart(t *testing.T) {
	t.Helper()
	var err error
	for range 50 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restart gofakes3: %v", err)
}

// bucketOf is the bucket of the repository name: lower case, no '_'.
func bucketOf(name string) string {
	return "repo-" + strings.NewReplacer("_", "-", "/", "-").Replace(strings.ToLower(name))
}

func (s *s3Server) location(name string) string {
	return "s3:https://" + s.addr + "/" + bucketOf(name) + "/some/prefix"
}

func (s *s3Server) env() []string {
	return []string{
		"SSL_CERT_FILE=" + s.certFile,
		"AWS_ACCESS_KEY_ID=test-id",
		"AWS_SECRET_ACCESS_KEY=test-secret",
	}
}

func (s *s3Server) options() []string { return nil }

func (s *s3Server) packsStored(t *testing.T, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dataPuts[bucketOf(name)]
}

// selfSignedCert makes a certificate for 127.0.0.1 and localhost that is
// its own CA, and writes it (PEM) to a file for SSL_CERT_FILE.
func selfSignedCert(t testing.TB) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "repo e2e test server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, file
}
