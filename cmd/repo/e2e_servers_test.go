package main

// Servers for the remote end-to-end tests (e2e_remote_test.go): a real
// OpenSSH sshd and gofakes3 over TLS, started by internal/testserver,
// with what these tests need on top.

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"repo/internal/testserver"
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

// --- sshd ---

// sshServer is sshd serving SFTP. Repositories live below Root,
// addressed by absolute path.
type sshServer struct {
	*testserver.SSHD
	Root string // where the repositories are
}

// startSSHServer starts sshd for t and stops it at t's end.
func startSSHServer(t *testing.T) *sshServer {
	t.Helper()
	d := testserver.StartSSHD(t, testserver.SSHDOptions{LogTail: 20})
	s := &sshServer{SSHD: d, Root: filepath.Join(d.Dir, "root")}
	if err := os.Mkdir(s.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sshServer) stop()                { s.Stop() }
func (s *sshServer) restart(t *testing.T) { s.Restart(t) }

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
	return []string{"-o", "sftp.known-hosts=" + s.KnownHostsFile, "-o", "sftp.identity=" + s.IdentityFile}
}

func (s *sshServer) packsStored(t *testing.T, name string) int {
	return len(packFiles(t, s.dirOf(name)))
}

// --- gofakes3 over TLS ---

// s3Server is gofakes3 over TLS; the binary trusts its certificate
// through SSL_CERT_FILE. Each repository is a bucket of its own.
type s3Server struct {
	*testserver.S3

	// dataPuts counts the successful PUTs of keys under data/, by bucket.
	mu       sync.Mutex
	dataPuts map[string]int
}

// startS3Server starts gofakes3 for t and stops it at t's end.
func startS3Server(t *testing.T) *s3Server {
	t.Helper()
	s := &s3Server{dataPuts: map[string]int{}}
	s.S3 = testserver.StartS3(t, testserver.S3Options{Wrap: s.count})
	return s
}

func (s *s3Server) stop()                { s.Stop() }
func (s *s3Server) restart(t *testing.T) { s.Restart(t) }

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

// bucketOf is the bucket of the repository name: lower case, no '_'.
func bucketOf(name string) string {
	return "repo-" + strings.NewReplacer("_", "-", "/", "-").Replace(strings.ToLower(name))
}

func (s *s3Server) location(name string) string {
	return "s3:https://" + s.Endpoint + "/" + bucketOf(name) + "/some/prefix"
}

func (s *s3Server) env() []string {
	return []string{
		"SSL_CERT_FILE=" + s.CertFile,
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

// tailLines is the last n lines of b, joined with " | ".
func tailLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
