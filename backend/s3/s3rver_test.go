package s3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/s3"
	"repo/internal/testserver"
)

// s3rverVersion is the npm package the test installs; 3.7.1 is the last
// release.
const s3rverVersion = "3.7.1"

// TestS3rver runs the suite against s3rver (a Node.js S3 clone that keeps
// objects in a directory) served over https in a separate process. It
// ignores If-None-Match, so ExclusiveCreate must be detected as false.
func TestS3rver(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a Node.js server")
	}
	endpoint, srv := startS3rver(t)
	runServerTests(t, srv)

	// s3rver checks the access key id but not V4 signatures.
	t.Run("UnknownAccessKey", func(t *testing.T) {
		opts := srv.options(t)
		create(t, opts)
		opts.AccessKeyID = "nobody"
		_, err := s3.Open(context.Background(), opts)
		if err == nil || !backend.IsPermanent(err) || errors.Is(err, backend.ErrNotExist) {
			t.Errorf("open %s with an unknown key: got %v, want a permanent error", endpoint, err)
		}
	})

	// The reason for srv.skip: a PUT whose body the client aborts is
	// stored, truncated.
	t.Run("AbortedPutStored", func(t *testing.T) {
		be := create(t, srv.options(t))
		ctx := context.Background()
		h := backend.Handle{Type: backend.PackFile, Name: randName(7)}
		rd := &failingReader{data: randBytes(7, 3<<20), failAt: 2 << 20}
		if err := be.Save(ctx, h, rd); !errors.Is(err, errFailing) {
			t.Fatalf("save: %v, want the reader's error", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			fi, err := be.Stat(ctx, h)
			if err == nil {
				if fi.Size >= 3<<20 {
					t.Errorf("aborted PUT stored with %d bytes, want fewer than %d", fi.Size, 3<<20)
				}
				t.Logf("s3rver stored %d of %d bytes of an aborted PUT", fi.Size, 3<<20)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("s3rver no longer stores aborted PUTs (stat: %v): drop the skips of Cancel and SaveBadReader", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// startS3rver installs s3rver (once per machine) and runs it on a free
// port over https until t ends. A machine without node or npm, or where
// the server does not come up, skips the test.
func startS3rver(t *testing.T) (string, server) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "s3rver needs node: %v", err)
	}
	script := installS3rver(t)

	dir := t.TempDir()
	cert := testserver.SelfSignedCert(t, dir)
	certFile, keyFile, pool := cert.CertFile, cert.KeyFile, cert.Pool
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(node, script, "--address", "127.0.0.1", "--port", strconv.Itoa(port),
		"--directory", data, "--silent", "--key", keyFile, "--cert", certFile)
	// Without the legacy provider Node 20 fails listings past 1,000 keys
	// with HTTP 500 (s3rver signs continuation tokens with an old cipher).
	cmd.Env = append(os.Environ(), "NODE_OPTIONS=--openssl-legacy-provider")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		unavailable(t, "start s3rver: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status of a killed server says nothing
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			unavailable(t, "s3rver exited at start: %s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			unavailable(t, "s3rver does not accept connections on %s after 30 s: %s", addr, out.String())
		}
	}
	return addr, server{
		options: func(testing.TB) s3.Options {
			return s3.Options{
				Endpoint:        addr,
				Bucket:          newBucketName(),
				PathStyle:       true,
				AccessKeyID:     "S3RVER",
				SecretAccessKey: "S3RVER",
				RootCAs:         pool,
			}
		},
		exclusive: false,
		skip: map[string]string{
			"SaveBadReader":            "s3rver stores the truncated body of a PUT the client aborts (see AbortedPutStored)",
			"Cancel":                   "s3rver stores the truncated body of a PUT the client aborts (see AbortedPutStored)",
			"SaveSameNameConcurrently": "s3rver overwrites objects in place: concurrent PUTs of one key interleave their bytes",
		},
		transport: func() http.RoundTripper {
			return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 32}
		},
	}
}

// installS3rver returns the path of s3rver's script, installing the npm
// package into the user's cache directory if it is not there yet.
func installS3rver(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		unavailable(t, "no cache directory for s3rver: %v", err)
	}
	dir := filepath.Join(cache, "repo-test", "s3rver-"+s3rverVersion)
	script := filepath.Join(dir, "node_modules", "s3rver", "bin", "s3rver.js")
	if _, err := os.Stat(script); err == nil {
		return script
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		unavailable(t, "installing s3rver needs npm: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		unavailable(t, "install s3rver: %v", err)
	}
	// Install next to the final place and rename, so that a concurrent or
	// interrupted install never leaves a half-filled directory there.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".s3rver-install-")
	if err != nil {
		unavailable(t, "install s3rver: %v", err)
	}
	defer os.RemoveAll(tmp) // gone after a successful rename
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", tmp, "s3rver@"+s3rverVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		unavailable(t, "npm install s3rver@%s: %v\n%s", s3rverVersion, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Fine if a concurrent install got there first.
		if _, serr := os.Stat(script); serr != nil {
			unavailable(t, "install s3rver: %v", err)
		}
	}
	t.Logf("installed s3rver %s into %s", s3rverVersion, dir)
	return script
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("%q", b.buf.String())
}
