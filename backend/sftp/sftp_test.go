package sftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/internal/testserver"
)

// create makes a repository in dir on srv and checks at the end of the
// test that no temporary file was left behind.
func create(t *testing.T, srv *testServer, dir string, opts Options) *Backend {
	t.Helper()
	be, err := Create(context.Background(), srv.location(dir), opts)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		be.Close()
		checkNoTemp(t, dir)
	})
	return be
}

// checkNoTemp fails if a temporary file of a Save is left in dir (the
// server is local, so the test looks at its files directly).
func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p == dir && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestBackend(t *testing.T) {
	srv := startServer(t)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		be := create(t, srv, filepath.Join(t.TempDir(), "repo"), srv.options())
		if !be.Properties().ExclusiveCreate {
			t.Fatal("OpenSSH offers hardlink@openssh.com, but ExclusiveCreate is false")
		}
		return be
	})
}

// TestWithoutHardLinks saves as on a server without the hardlink
// extension: with posix-rename, which replaces, and with plain SFTP
// rename, which refuses to (the first object stays). Either way Save
// succeeds on an existing object, and the object is one whole content.
func TestWithoutHardLinks(t *testing.T) {
	srv := startServer(t)
	for _, posix := range []bool{true, false} {
		t.Run(fmt.Sprintf("posix-rename=%v", posix), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			be := create(t, srv, dir, srv.options())
			be.hardlink, be.posixRename = false, posix
			if be.Properties().ExclusiveCreate {
				t.Fatal("ExclusiveCreate without hard links")
			}
			ctx := context.Background()
			h := backend.Handle{Type: backend.LockFile, Name: "l1"}
			save(t, be, h, "first")
			save(t, be, h, "second")
			want := map[bool]string{true: "second", false: "first"}[posix]
			if got := load(t, be, h); got != want {
				t.Errorf("after saving again: %q, want %q", got, want)
			}

			h2 := backend.Handle{Type: backend.PackFile, Name: "ab01"}
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Go(func() {
					data := bytes.Repeat([]byte{byte('a' + i)}, 300<<10+i)
					errs[i] = be.Save(ctx, h2, backend.NewByteReader(data))
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("concurrent save %d: %v", i, err)
				}
			}
			got := load(t, be, h2)
			if i := len(got) - 300<<10; i < 0 || i >= len(errs) || got != strings.Repeat(string(rune('a'+i)), len(got)) {
				t.Errorf("after concurrent saves: %d bytes, not one of the saved contents", len(got))
			}
			var names []string
			if err := be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
				names = append(names, fi.Name)
				return nil
			}); err != nil || fmt.Sprint(names) != "[ab01]" {
				t.Errorf("list: %q, %v; want [ab01]", names, err)
			}
		})
	}
}

// TestBackendCommand runs the suite over Options.Command, with OpenSSH's
// sftp-server as the command: no network at all.
func TestBackendCommand(t *testing.T) {
	testserver.EnsureSSHD(t) // the same package brings sftp-server
	if _, err := os.Stat(sftpServerPath); err != nil {
		testserver.Unavailable(t, "%v", err)
	}
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		dir := filepath.Join(t.TempDir(), "repo")
		be, err := Create(context.Background(), Location{Host: "ignored", Path: dir}, Options{Command: sftpServerPath})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { checkNoTemp(t, dir) })
		return be
	})
}

// TestCommandSSH uses the ssh client as the command, as a user would.
func TestCommandSSH(t *testing.T) {
	srv := startServer(t)
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		t.Skipf("no ssh client: %v", err)
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	cmd := fmt.Sprintf("%s -F none -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o 'UserKnownHostsFile=%s' -p %s root@127.0.0.1 -s sftp",
		sshPath, srv.IdentityFile, srv.KnownHostsFile, srv.Port)
	opts := Options{Command: cmd, Connections: 2}
	be := create(t, srv, dir, opts)
	h := backend.Handle{Type: backend.KeyFile, Name: "k1"}
	save(t, be, h, "over ssh")
	if got := load(t, be, h); got != "over ssh" {
		t.Errorf("load: got %q", got)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "keys", "k1")); err != nil || string(got) != "over ssh" {
		t.Errorf("file on the server: %q, %v", got, err)
	}

	// A command that fails says why, with its stderr.
	bad := Options{Command: fmt.Sprintf("%s -F none -o BatchMode=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -p %s root@127.0.0.1 -s sftp", sshPath, srv.Port)}
	_, err = Open(ctx, srv.location(dir), bad)
	if err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("open with a failing command: got %v, want ssh's complaint", err)
	}
	_, err = Open(ctx, srv.location(dir), Options{Command: "/nonexistent/sftp-server"})
	if err == nil || !backend.IsPermanent(err) {
		t.Errorf("open with a missing command: got %v, want a permanent error", err)
	}
}

func save(t *testing.T, be backend.Backend, h backend.Handle, data string) {
	t.Helper()
	if err := be.Save(context.Background(), h, backend.NewByteReader([]byte(data))); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

func load(t *testing.T, be backend.Backend, h backend.Handle) string {
	t.Helper()
	b, err := backend.LoadAll(context.Background(), be, h, nil)
	if err != nil {
		t.Fatalf("load %v: %v", h, err)
	}
	return string(b)
}

func TestLayout(t *testing.T) {
	srv := startServer(t)
	dir := filepath.Join(t.TempDir(), "a", "repo") // parents are made too
	be := create(t, srv, dir, srv.options())
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("repository directory has mode %v, want 0700", fi.Mode().Perm())
	}
	want := []string{"keys", "index", "snapshots", "locks", "quarantine", "data"}
	for i := range 256 {
		want = append(want, fmt.Sprintf("data/%02x", i))
	}
	for _, d := range want {
		fi, err := os.Stat(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() {
			t.Errorf("%s is not a directory", d)
		}
	}

	pack := strings.Repeat("3f", 32)
	objects := []struct {
		h    backend.Handle
		path string
	}{
		{backend.Handle{Type: backend.ConfigFile}, "config"},
		{backend.Handle{Type: backend.KeyFile, Name: "k1"}, "keys/k1"},
		{backend.Handle{Type: backend.PackFile, Name: pack}, "data/3f/" + pack},
		{backend.Handle{Type: backend.IndexFile, Name: "i1"}, "index/i1"},
		{backend.Handle{Type: backend.SnapshotFile, Name: "s1"}, "snapshots/s1"},
		{backend.Handle{Type: backend.LockFile, Name: "l1"}, "locks/l1"},
		{backend.Handle{Type: backend.QuarantineFile, Name: pack}, "quarantine/" + pack},
	}
	for _, o := range objects {
		save(t, be, o.h, o.path)
		p := filepath.Join(dir, o.path)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%v: %v", o.h, err)
		} else if string(got) != o.path {
			t.Errorf("%s holds %q, want %q", o.path, got, o.path)
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() != 0o400 {
			t.Errorf("%s has mode %v, want read-only 0400", o.path, fi.Mode().Perm())
		}
	}

	// A second Create keeps what is there.
	be2 := create(t, srv, dir, srv.options())
	if got := load(t, be2, objects[1].h); got != "keys/k1" {
		t.Errorf("after a second Create: %q", got)
	}

	// A removed data/xx directory is made again; a removed repository
	// is not.
	if err := os.Remove(filepath.Join(dir, "data", "7a")); err != nil {
		t.Fatal(err)
	}
	save(t, be, backend.Handle{Type: backend.PackFile, Name: "7a00"}, "pack")
	if _, err := os.Stat(filepath.Join(dir, "data", "7a", "7a00")); err != nil {
		t.Error(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, h := range []backend.Handle{{Type: backend.KeyFile, Name: "k2"}, {Type: backend.PackFile, Name: "ab"}, {Type: backend.ConfigFile}} {
		if err := be.Save(context.Background(), h, backend.NewByteReader([]byte("x"))); err == nil {
			t.Errorf("save %v into a removed repository succeeded", h)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("repository directory was recreated: %v", err)
	}
}

func TestOpen(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), file} {
		_, err := Open(ctx, srv.location(p), srv.options())
		if !errors.Is(err, backend.ErrNotExist) || !strings.Contains(err.Error(), p) {
			t.Errorf("open %s: got %v, want ErrNotExist naming the path", p, err)
		}
	}

	repo := filepath.Join(dir, "repo")
	be := create(t, srv, repo, srv.options())
	save(t, be, backend.Handle{Type: backend.KeyFile, Name: "k1"}, "key")
	be2, err := Open(ctx, srv.location(repo), srv.options())
	if err != nil {
		t.Fatal(err)
	}
	defer be2.Close()
	if got := load(t, be2, backend.Handle{Type: backend.KeyFile, Name: "k1"}); got != "key" {
		t.Errorf("load through Open: %q", got)
	}
	if want := "sftp:127.0.0.1:" + srv.Port + ":" + repo; be2.Location() != want {
		t.Errorf("Location() = %q, want %q", be2.Location(), want)
	}
	if p := be2.Properties(); !p.ExclusiveCreate || p.Connections != defaultConnections {
		t.Errorf("Properties() = %+v, want exclusive create and %d connections", p, defaultConnections)
	}

	// After Close every call fails at once.
	be2.Close()
	if _, err := be2.Stat(ctx, backend.Handle{Type: backend.KeyFile, Name: "k1"}); err == nil || !backend.IsPermanent(err) {
		t.Errorf("stat after close: got %v, want a permanent error", err)
	}
}

// TestRelativePath checks that relative paths start in the login
// directory (here the start directory of internal-sftp).
func TestRelativePath(t *testing.T) {
	srv := startServer(t)
	for _, s := range []string{
		"sftp:127.0.0.1:%s:repo1",
		"sftp:root@127.0.0.1:%s:~/repo2",
		"sftp://root@127.0.0.1:%s/~/repo3",
		"sftp://127.0.0.1:%s/~/sub/repo4",
	} {
		s = fmt.Sprintf(s, srv.Port)
		loc, err := ParseLocation(s)
		if err != nil {
			t.Fatal(err)
		}
		be, err := Create(context.Background(), loc, srv.options())
		if err != nil {
			t.Fatalf("create %s: %v", s, err)
		}
		save(t, be, backend.Handle{Type: backend.KeyFile, Name: "k"}, s)
		be.Close()
		p := filepath.Join(srv.Home, filepath.FromSlash(loc.Path), "keys", "k")
		if got, err := os.ReadFile(p); err != nil || string(got) != s {
			t.Errorf("%s: %s holds %q, %v", s, p, got, err)
		}
	}
}

// TestListMany lists directories of more entries than one SFTP READDIR
// answer holds (OpenSSH sends 100 at most).
func TestListMany(t *testing.T) {
	srv := startServer(t)
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, srv, dir, srv.options())
	// Written behind the backend's back: the server is local, and this
	// is about reading, not about 2500 Saves.
	want := map[backend.FileType]map[string]int64{backend.KeyFile: {}, backend.PackFile: {}}
	for i := range 1500 {
		name := fmt.Sprintf("%064x", i)
		if err := os.WriteFile(filepath.Join(dir, "keys", name), []byte("k"), 0o400); err != nil {
			t.Fatal(err)
		}
		want[backend.KeyFile][name] = 1
	}
	for i := range 1100 {
		name := fmt.Sprintf("ab%062x", i)
		if err := os.WriteFile(filepath.Join(dir, "data", "ab", name), []byte("pack"), 0o400); err != nil {
			t.Fatal(err)
		}
		want[backend.PackFile][name] = 4
	}
	for i := range 300 { // and some in other prefixes
		name := fmt.Sprintf("%02x%062x", i%256, i)
		if err := os.WriteFile(filepath.Join(dir, "data", name[:2], name), []byte("p"), 0o400); err != nil {
			t.Fatal(err)
		}
		want[backend.PackFile][name] = 1
	}
	// Strays are not listed.
	for _, p := range []string{"keys/.tmp-x", "keys/README", "data/ab/cd12", "data/abc/abc1"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "keys", fmt.Sprintf("%064x", 0)), filepath.Join(dir, "keys", "abcd")); err != nil {
		t.Fatal(err)
	}
	for ft, w := range want {
		got := make(map[string]int64)
		err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
			if _, dup := got[fi.Name]; dup {
				t.Errorf("list %v: %s twice", ft, fi.Name)
			}
			got[fi.Name] = fi.Size
			return nil
		})
		if err != nil {
			t.Fatalf("list %v: %v", ft, err)
		}
		if len(got) != len(w) {
			t.Errorf("list %v: %d objects, want %d", ft, len(got), len(w))
		}
		for name, size := range w {
			if got[name] != size {
				t.Errorf("list %v: %s has size %d, want %d", ft, name, got[name], size)
				break
			}
		}
	}
	if err := os.Remove(filepath.Join(dir, "keys", ".tmp-x")); err != nil { // not ours: keep checkNoTemp quiet
		t.Fatal(err)
	}
}

// TestListCallsBackend checks that fn may use the backend while List
// runs, even with a single connection.
func TestListCallsBackend(t *testing.T) {
	srv := startServer(t)
	opts := srv.options()
	opts.Connections = 1
	be := create(t, srv, filepath.Join(t.TempDir(), "repo"), opts)
	for _, name := range []string{"ab01", "cd02", "ef03"} {
		save(t, be, backend.Handle{Type: backend.PackFile, Name: name}, name)
	}
	save(t, be, backend.Handle{Type: backend.KeyFile, Name: "k1"}, "k1")
	for _, ft := range []backend.FileType{backend.PackFile, backend.KeyFile} {
		n := 0
		err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
			n++
			if got := load(t, be, backend.Handle{Type: ft, Name: fi.Name}); got != fi.Name {
				t.Errorf("load %s inside List: %q", fi.Name, got)
			}
			return nil
		})
		if err != nil || n == 0 {
			t.Errorf("list %v: %d objects, %v", ft, n, err)
		}
	}
}

// TestHungServer freezes the server (SIGSTOP) in the middle of a Load and
// a Save: cancelling the context must end them promptly, by closing the
// connection, and the backend must work again once the server does.
func TestHungServer(t *testing.T) {
	srv := startServer(t)
	t.Cleanup(srv.thaw)
	be := create(t, srv, filepath.Join(t.TempDir(), "repo"), srv.options())
	h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	save(t, be, h, string(data))

	ctx, cancel := context.WithCancel(context.Background())
	var cancelledAt time.Time
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		if _, err := io.ReadFull(rd, make([]byte, 1024)); err != nil {
			return err
		}
		srv.freeze()
		time.AfterFunc(200*time.Millisecond, func() { cancelledAt = time.Now(); cancel() })
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("load from a hung server: got %v, want context.Canceled", err)
	}
	if d := time.Since(cancelledAt); d > 5*time.Second {
		t.Errorf("load returned %v after the cancellation", d)
	}
	srv.thaw()

	ctx, cancel = context.WithCancel(context.Background())
	h2 := backend.Handle{Type: backend.PackFile, Name: "ab02"}
	frozen := false
	rd := &hookReader{data: data, after: func(pos int) {
		if pos >= 1<<20 && !frozen {
			frozen = true
			srv.freeze()
			time.AfterFunc(200*time.Millisecond, func() { cancelledAt = time.Now(); cancel() })
		}
	}}
	err = be.Save(ctx, h2, rd)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("save to a hung server: got %v, want context.Canceled", err)
	}
	if d := time.Since(cancelledAt); d > 5*time.Second {
		t.Errorf("save returned %v after the cancellation", d)
	}
	srv.thaw()

	// The killed sessions are replaced.
	if got := load(t, be, h); got != string(data) {
		t.Error("load after the server recovered: wrong content")
	}
	if _, err := be.Stat(context.Background(), h2); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("stat of the cancelled save: got %v, want ErrNotExist", err)
	}
	// The cancelled Save's temporary file may remain (it is never
	// listed); the check at the end must not trip over it.
	removeTemp(t, filepath.Join(be.dir, "data", "ab"))
}

// TestRemoveTemp plants temporary files as killed Saves leave them (the
// server is local, so the test writes them directly) and checks that
// RemoveTemp removes exactly the old ones, everywhere a Save puts them,
// and leaves objects alone.
func TestRemoveTemp(t *testing.T) {
	srv := startServer(t)
	dir := filepath.Join(t.TempDir(), "repo")
	backendtest.RunRemoveTemp(t, create(t, srv, dir, srv.options()), dir)
}

// removeTemp removes temporary files that a test left on purpose.
func removeTemp(t *testing.T, dir string) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			t.Error(err)
		}
	}
}

// hookReader is a RewindReader that calls after with the position after
// every read.
type hookReader struct {
	data  []byte
	pos   int
	after func(pos int)
}

func (r *hookReader) Read(p []byte) (int, error) {
	if r.pos >= len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.pos:min(len(r.data), r.pos+64<<10)])
	r.pos += n
	r.after(r.pos)
	return n, nil
}

func (r *hookReader) Rewind() error { r.pos = 0; return nil }
func (r *hookReader) Length() int64 { return int64(len(r.data)) }

// TestKeepalive freezes the server without any cancellation: the
// keepalive must notice and fail the operation instead of hanging.
func TestKeepalive(t *testing.T) {
	i, to := keepaliveInterval, keepaliveTimeout
	t.Cleanup(func() { keepaliveInterval, keepaliveTimeout = i, to })
	keepaliveInterval, keepaliveTimeout = 100*time.Millisecond, 500*time.Millisecond

	srv := startServer(t)
	t.Cleanup(srv.thaw)
	be := create(t, srv, filepath.Join(t.TempDir(), "repo"), srv.options())
	h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
	data := bytes.Repeat([]byte("x"), 8<<20)
	save(t, be, h, string(data))

	start := time.Now()
	err := be.Load(context.Background(), h, 0, 0, func(rd io.Reader) error {
		if _, err := io.ReadFull(rd, make([]byte, 1024)); err != nil {
			return err
		}
		srv.freeze()
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	if err == nil || backend.IsPermanent(err) {
		t.Errorf("load from a frozen server: got %v, want a transient error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("load took %v to notice", d)
	}
	srv.thaw()
	if got := load(t, be, h); got != string(data) {
		t.Error("load after the server recovered: wrong content")
	}
}

// TestServerKilled kills sshd (and its session processes) in the middle
// of a Save and a Load: both fail with a transient error, and once a new
// server runs on the same port the backend reconnects.
func TestServerKilled(t *testing.T) {
	srv := startServer(t)
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, srv, dir, srv.options())
	ctx := context.Background()
	data := bytes.Repeat([]byte("y"), 8<<20)
	h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
	save(t, be, h, string(data))

	killed := false
	rd := &hookReader{data: data, after: func(pos int) {
		if pos >= 1<<20 && !killed {
			killed = true
			srv.stop()
		}
	}}
	h2 := backend.Handle{Type: backend.PackFile, Name: "ab02"}
	start := time.Now()
	err := be.Save(ctx, h2, rd)
	if err == nil || backend.IsPermanent(err) {
		t.Errorf("save while the server dies: got %v, want a transient error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("save took %v to fail", d)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "ab", "ab02")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed save left an object: %v", err)
	}
	removeTemp(t, filepath.Join(dir, "data", "ab"))

	srv.restart(t)
	err = be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		if _, err := io.ReadFull(rd, make([]byte, 1024)); err != nil {
			return err
		}
		srv.stop()
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	if err == nil || backend.IsPermanent(err) {
		t.Errorf("load while the server dies: got %v, want a transient error", err)
	}
	if _, err := be.Stat(ctx, h); err == nil || backend.IsPermanent(err) {
		t.Errorf("stat without a server: got %v, want a transient error", err)
	}

	srv.restart(t)
	if got := load(t, be, h); got != string(data) {
		t.Error("load after the restart: wrong content")
	}
	save(t, be, h2, "again")
}

// TestCommandKilled does the same with Options.Command: the command's
// process dies under a Load.
func TestCommandKilled(t *testing.T) {
	testserver.EnsureSSHD(t)
	if _, err := os.Stat(sftpServerPath); err != nil {
		testserver.Unavailable(t, "%v", err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	ctx := context.Background()
	be, err := Create(ctx, Location{Host: "x", Path: dir}, Options{Command: sftpServerPath, Connections: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
	data := bytes.Repeat([]byte("z"), 8<<20)
	save(t, be, h, string(data))
	err = be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		if _, err := io.ReadFull(rd, make([]byte, 1024)); err != nil {
			return err
		}
		for _, pid := range testserver.Descendants(os.Getpid()) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "sftp-server" {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	if err == nil || backend.IsPermanent(err) {
		t.Errorf("load while the command dies: got %v, want a transient error", err)
	}
	// A new command is started for the next call.
	if got := load(t, be, h); got != string(data) {
		t.Error("load after the command died: wrong content")
	}
}

// TestCloseWhileHung checks that Close does not wait for a hung server,
// and that the operation it interrupts fails.
func TestCloseWhileHung(t *testing.T) {
	srv := startServer(t)
	t.Cleanup(srv.thaw)
	be := create(t, srv, filepath.Join(t.TempDir(), "repo"), srv.options())
	h := backend.Handle{Type: backend.KeyFile, Name: "k1"}
	save(t, be, h, "key")
	srv.freeze()
	errc := make(chan error, 1)
	go func() {
		_, err := be.Stat(context.Background(), h)
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := be.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("close took %v", d)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("stat on a frozen server succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Error("stat still hangs after Close")
	}
	srv.thaw()
}

func TestNotExistMessage(t *testing.T) {
	srv := startServer(t)
	be := create(t, srv, filepath.Join(t.TempDir(), "repo"), srv.options())
	name := "3f" + strings.Repeat("0", 62)
	err := be.Load(context.Background(), backend.Handle{Type: backend.PackFile, Name: name}, 0, 0, nil)
	if want := "load data/3f/" + name + ": does not exist"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// BenchmarkSave measures Save of 16 MiB packs over loopback, one at a
// time and from as many goroutines as there are connections, and through
// OpenSSH's sftp-server as the Command (no SSH, no encryption).
func BenchmarkSave(b *testing.B) {
	srv := startServer(b)
	data := make([]byte, 16<<20)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	tests := []struct {
		name     string
		parallel int
		opts     Options
	}{
		{"ssh/parallel=1", 1, srv.options()},
		{fmt.Sprintf("ssh/parallel=%d", defaultConnections), defaultConnections, srv.options()},
		{"command/parallel=1", 1, Options{Command: sftpServerPath}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			be, err := Create(context.Background(), srv.location(filepath.Join(b.TempDir(), "repo")), tt.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			b.SetBytes(int64(len(data)))
			var (
				next atomic.Int64
				wg   sync.WaitGroup
			)
			b.ResetTimer()
			for range tt.parallel {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						h := backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("%064x", i)}
						if err := be.Save(context.Background(), h, backend.NewByteReader(data)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// BenchmarkLoad measures Load of a 16 MiB pack over loopback.
func BenchmarkLoad(b *testing.B) {
	srv := startServer(b)
	be, err := Create(context.Background(), srv.location(filepath.Join(b.TempDir(), "repo")), srv.options())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	data := make([]byte, 16<<20)
	h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
	if err := be.Save(context.Background(), h, backend.NewByteReader(data)); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if buf, err = backend.LoadAll(context.Background(), be, h, buf); err != nil || len(buf) != len(data) {
			b.Fatal(err, len(buf))
		}
	}
}
