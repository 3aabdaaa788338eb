package source

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTypeString(t *testing.T) {
	for _, tc := range []struct {
		t    Type
		want string
	}{
		{File, "file"}, {Dir, "dir"}, {Symlink, "symlink"}, {Device, "dev"},
		{CharDevice, "chardev"}, {FIFO, "fifo"}, {Socket, "socket"},
		{0, "type(0)"}, {42, "type(42)"},
	} {
		if got := tc.t.String(); got != tc.want {
			t.Errorf("Type(%d).String() = %q, want %q", tc.t, got, tc.want)
		}
	}
}

// sysStat is the reference for the fields os.Lstat does not expose.
func sysStat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// osLstat is the reference for Lstat. Take it before calling Lstat: the
// readlink in Lstat may update a symlink's atime.
func osLstat(t *testing.T, p string) fs.FileInfo {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// checkAgainstOS compares info with what os.Lstat and the raw stat said.
func checkAgainstOS(t *testing.T, p string, fi fs.FileInfo, info *Info) {
	t.Helper()
	st := fi.Sys().(*syscall.Stat_t)
	if info.Name != filepath.Base(p) {
		t.Errorf("Name = %q, want %q", info.Name, filepath.Base(p))
	}
	if info.Mode != fi.Mode() {
		t.Errorf("Mode = %v, os.Lstat says %v", info.Mode, fi.Mode())
	}
	if !info.ModTime.Equal(fi.ModTime()) {
		t.Errorf("ModTime = %v, os.Lstat says %v", info.ModTime, fi.ModTime())
	}
	if want := time.Unix(st.Atim.Sec, st.Atim.Nsec); !info.AccessTime.Equal(want) {
		t.Errorf("AccessTime = %v, want %v", info.AccessTime, want)
	}
	if want := time.Unix(st.Ctim.Sec, st.Ctim.Nsec); !info.ChangeTime.Equal(want) {
		t.Errorf("ChangeTime = %v, want %v", info.ChangeTime, want)
	}
	if info.Inode != st.Ino || info.DeviceID != st.Dev || info.Links != uint64(st.Nlink) {
		t.Errorf("Inode, DeviceID, Links = %d, %d, %d; want %d, %d, %d",
			info.Inode, info.DeviceID, info.Links, st.Ino, st.Dev, st.Nlink)
	}
	if info.UID != st.Uid || info.GID != st.Gid {
		t.Errorf("UID, GID = %d, %d; want %d, %d", info.UID, info.GID, st.Uid, st.Gid)
	}
	wantUser, wantGroup := "", ""
	if u, err := user.LookupId(strconv.Itoa(int(st.Uid))); err == nil {
		wantUser = u.Username
	}
	if g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid))); err == nil {
		wantGroup = g.Name
	}
	if info.User != wantUser || info.Group != wantGroup {
		t.Errorf("User, Group = %q, %q; want %q, %q", info.User, info.Group, wantUser, wantGroup)
	}
	var wantSize int64
	if fi.Mode().IsRegular() {
		wantSize = fi.Size()
	}
	if info.Size != wantSize {
		t.Errorf("Size = %d, want %d", info.Size, wantSize)
	}
}

func TestLstat(t *testing.T) {
	dir := t.TempDir()
	join := func(name string) string { return filepath.Join(dir, name) }

	if err := os.WriteFile(join("file"), []byte("hello, world"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(join("file"), 0o640); err != nil { // beat the umask
		t.Fatal(err)
	}
	if err := os.WriteFile(join("setuid"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(join("setuid"), 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(join("file"), join("hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(join("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(join("dir"), 0o775|os.ModeSetgid|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(join("fifo"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		path     string
		typ      Type
		mode     os.FileMode
		size     int64
		links    uint64
		checkAll bool // owner, times etc. against os.Lstat
	}{
		{name: "regular", path: join("file"), typ: File, mode: 0o640, size: 12, links: 2},
		{name: "setuid", path: join("setuid"), typ: File, mode: 0o755 | os.ModeSetuid},
		{name: "dir setgid sticky", path: join("dir"), typ: Dir, mode: 0o775 | os.ModeDir | os.ModeSetgid | os.ModeSticky},
		{name: "fifo", path: join("fifo"), typ: FIFO, mode: 0o600 | os.ModeNamedPipe},
		{name: "dev null", path: "/dev/null", typ: CharDevice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := osLstat(t, tc.path)
			info, err := Lstat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if info.Type != tc.typ {
				t.Errorf("Type = %v, want %v", info.Type, tc.typ)
			}
			if tc.mode != 0 && info.Mode != tc.mode {
				t.Errorf("Mode = %v, want %v", info.Mode, tc.mode)
			}
			if info.Size != tc.size {
				t.Errorf("Size = %d, want %d", info.Size, tc.size)
			}
			if tc.links != 0 && info.Links != tc.links {
				t.Errorf("Links = %d, want %d", info.Links, tc.links)
			}
			if info.LinkTarget != "" {
				t.Errorf("LinkTarget = %q, want none", info.LinkTarget)
			}
			checkAgainstOS(t, tc.path, ref, info)
		})
	}

	t.Run("rdev", func(t *testing.T) {
		info, err := Lstat("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		if want := unix.Mkdev(1, 3); info.Rdev != want {
			t.Errorf("Rdev of /dev/null = %#x, want %#x", info.Rdev, want)
		}
		info, err = Lstat(join("file"))
		if err != nil {
			t.Fatal(err)
		}
		if info.Rdev != 0 {
			t.Errorf("Rdev of a regular file = %#x, want 0", info.Rdev)
		}
	})

	t.Run("socket", func(t *testing.T) {
		p := join("sock")
		if len(p) >= 108 {
			t.Skipf("socket path %q too long for sun_path", p)
		}
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ref := osLstat(t, p)
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Type != Socket || info.Mode&os.ModeSocket == 0 {
			t.Errorf("Type, Mode = %v, %v; want a socket", info.Type, info.Mode)
		}
		checkAgainstOS(t, p, ref, info)
	})

	t.Run("not exist", func(t *testing.T) {
		_, err := Lstat(join("missing"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err = %v, want fs.ErrNotExist", err)
		}
	})
}

func TestLstatTimes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	atime := time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC)
	mtime := time.Date(2021, 7, 8, 9, 10, 11, 987654321, time.UTC)
	if err := os.Chtimes(p, atime, mtime); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Minute)
	ref := osLstat(t, p)
	info, err := Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !info.AccessTime.Equal(atime) {
		t.Errorf("AccessTime = %v, want %v", info.AccessTime, atime)
	}
	if !info.ModTime.Equal(mtime) {
		t.Errorf("ModTime = %v, want %v", info.ModTime, mtime)
	}
	if info.ChangeTime.Before(before) || info.ChangeTime.After(time.Now().Add(time.Minute)) {
		t.Errorf("ChangeTime = %v, want about now", info.ChangeTime)
	}
	checkAgainstOS(t, p, ref, info)
}

func TestLstatSymlink(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, target string }{
		{"relative", "target"},
		{"absolute with space", "/no such/dir/file name"},
		{"invalid utf8", "bad\xff\xfe\x80name"},
		{"newline", "line1\nline2"},
		{"unicode", "ünïcödé/日本語"},
		{"long", strings.Repeat("d/", 2000) + "end"}, // longer than any first readlink buffer
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.Symlink(tc.target, p); err != nil {
				t.Fatal(err)
			}
			ref := osLstat(t, p)
			info, err := Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if info.Type != Symlink || info.Mode&os.ModeSymlink == 0 {
				t.Errorf("Type, Mode = %v, %v; want a symlink", info.Type, info.Mode)
			}
			if info.LinkTarget != tc.target {
				t.Errorf("LinkTarget = %q, want %q", info.LinkTarget, tc.target)
			}
			checkAgainstOS(t, p, ref, info)
		})
	}
	t.Run("to file is not followed", func(t *testing.T) {
		f := filepath.Join(dir, "real")
		if err := os.WriteFile(f, []byte("12345"), 0o644); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "link-to-real")
		if err := os.Symlink("real", p); err != nil {
			t.Fatal(err)
		}
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Type != Symlink || info.Size != 0 || info.LinkTarget != "real" {
			t.Errorf("Type, Size, LinkTarget = %v, %d, %q; want symlink, 0, \"real\"", info.Type, info.Size, info.LinkTarget)
		}
	})
}

// setUserXattr sets a user.* attribute or skips the test when the file
// system does not support them.
func setUserXattr(t *testing.T, p, name string, value []byte) {
	t.Helper()
	if err := unix.Setxattr(p, name, value, 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			t.Skipf("file system of %s does not support user xattrs: %v", p, err)
		}
		t.Fatalf("setxattr %s %s: %v", p, name, err)
	}
}

// osXattrNames lists the attributes already on p (e.g. security.selinux
// set by the system), which Lstat must report too.
func osXattrNames(t *testing.T, p string) int {
	t.Helper()
	n, err := unix.Llistxattr(p, nil)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		t.Fatal(err)
	}
	return n
}

func TestLstatXattrs(t *testing.T) {
	dir := t.TempDir()

	t.Run("none", func(t *testing.T) {
		p := filepath.Join(dir, "plain")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if osXattrNames(t, p) != 0 {
			t.Skip("the system labels new files with xattrs")
		}
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Xattrs != nil {
			t.Errorf("Xattrs = %v, want nil", info.Xattrs)
		}
	})

	t.Run("sorted values", func(t *testing.T) {
		p := filepath.Join(dir, "attrs")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if osXattrNames(t, p) != 0 {
			t.Skip("the system labels new files with xattrs")
		}
		want := []Xattr{
			{"user.a", []byte("first")},
			{"user.big", bytes.Repeat([]byte("0123456789"), 300)}, // > first getxattr buffer
			{"user.binary", []byte{0, 1, 2, 0xff, 0}},
			{"user.empty", []byte{}},
			{"user.z", []byte("last")},
		}
		for _, i := range []int{4, 1, 3, 0, 2} { // set out of order
			setUserXattr(t, p, want[i].Name, want[i].Value)
		}
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		checkXattrs(t, info.Xattrs, want)
	})

	t.Run("long name list", func(t *testing.T) {
		p := filepath.Join(dir, "many")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if osXattrNames(t, p) != 0 {
			t.Skip("the system labels new files with xattrs")
		}
		var want []Xattr
		total := 0
		for i := 0; total <= 2*listXattrBufSize; i++ {
			x := Xattr{Name: "user.attribute-with-a-long-name-" + strconv.Itoa(1000+i), Value: []byte{byte(i)}}
			setUserXattr(t, p, x.Name, x.Value)
			want = append(want, x)
			total += len(x.Name) + 1
		}
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		checkXattrs(t, info.Xattrs, want)
	})

	t.Run("dir", func(t *testing.T) {
		p := filepath.Join(dir, "d")
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if osXattrNames(t, p) != 0 {
			t.Skip("the system labels new files with xattrs")
		}
		setUserXattr(t, p, "user.dir", []byte("v"))
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		checkXattrs(t, info.Xattrs, []Xattr{{"user.dir", []byte("v")}})
	})
}

func checkXattrs(t *testing.T, got, want []Xattr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d xattrs, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Name != want[i].Name || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Errorf("xattr %d = %q=%q, want %q=%q", i, got[i].Name, got[i].Value, want[i].Name, want[i].Value)
		}
	}
}

func TestReadDirNames(t *testing.T) {
	dir := t.TempDir()
	names := []string{
		"b", "a", "Z", ".hidden", "with space", " leading", "new\nline",
		"tab\there", "ünïcödé", "日本語", "bad\xff\xfeutf8", "\x01ctrl", "a.b", "a-b",
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatalf("create %q: %v", n, err)
		}
	}
	got, err := ReadDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("ReadDirNames = %q, want %q", got, want)
	}
	for _, n := range got {
		info, err := Lstat(filepath.Join(dir, n))
		if err != nil {
			t.Errorf("Lstat %q: %v", n, err)
			continue
		}
		if info.Name != n {
			t.Errorf("Lstat %q: Name = %q", n, info.Name)
		}
	}

	t.Run("empty", func(t *testing.T) {
		got, err := ReadDirNames(t.TempDir())
		if err != nil || len(got) != 0 {
			t.Errorf("ReadDirNames(empty) = %q, %v; want nothing", got, err)
		}
	})
	t.Run("symlink to dir", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadDirNames(link); err == nil {
			t.Errorf("ReadDirNames(symlink) = %q, want an error", got)
		}
	})
	t.Run("regular file", func(t *testing.T) {
		if _, err := ReadDirNames(filepath.Join(dir, "a")); !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("err = %v, want ENOTDIR", err)
		}
	})
	t.Run("not exist", func(t *testing.T) {
		if _, err := ReadDirNames(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err = %v, want fs.ErrNotExist", err)
		}
	})
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "file")
	content := []byte("some content\n")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("regular", func(t *testing.T) {
		// An atime older than the mtime is updated by a read under
		// relatime; O_NOATIME must prevent that.
		old := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		if err := os.Chtimes(p, old, time.Now()); err != nil {
			t.Fatal(err)
		}
		f, err := OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.O_NONBLOCK != 0 {
			t.Error("returned file is still O_NONBLOCK")
		}
		if flags&unix.O_NOATIME == 0 {
			t.Error("returned file lacks O_NOATIME although we own it")
		}
		got, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("read %q, want %q", got, content)
		}
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !info.AccessTime.Equal(old) {
			t.Errorf("atime changed to %v by reading", info.AccessTime)
		}
	})

	link := filepath.Join(dir, "link")
	if err := os.Symlink("file", link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{"symlink", link},
		{"fifo", fifo},
		{"dir", dir},
		{"char device", "/dev/null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				f, err := OpenFile(tc.path)
				if err == nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrNotRegular) {
					t.Errorf("OpenFile(%s) = %v, want ErrNotRegular", tc.name, err)
				} else {
					t.Logf("error: %v", err)
				}
			case <-time.After(10 * time.Second):
				// Unblock the opener so the test binary can exit.
				if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatalf("OpenFile(%s) blocked", tc.name)
			}
		})
	}

	t.Run("not exist", func(t *testing.T) {
		if _, err := OpenFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err = %v, want fs.ErrNotExist", err)
		}
	})
}

// TestOpenFileNotOwner checks the fallback when O_NOATIME is refused
// (EPERM for files of other users). As root it re-runs itself as nobody.
func TestOpenFileNotOwner(t *testing.T) {
	const victim = "/etc/passwd" // world-readable, owned by root
	st := sysStat(t, victim)
	if os.Getenv("SOURCE_TEST_AS_NOBODY") == "" && os.Getuid() == 0 {
		runAsNobody(t)
		return
	}
	if st.Uid == uint32(os.Getuid()) {
		t.Skipf("we own %s", victim)
	}
	f, err := OpenFile(victim)
	if err != nil {
		t.Fatalf("OpenFile of another user's file: %v", err)
	}
	defer f.Close()
	if _, err := io.ReadAll(f); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDirNames("/etc"); err != nil {
		t.Fatalf("ReadDirNames of another user's directory: %v", err)
	}
}

func runAsNobody(t *testing.T) {
	t.Helper()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	// The test binary may sit in a directory nobody cannot enter.
	dir, err := os.MkdirTemp("", "source-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "source.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestOpenFileNotOwner$", "-test.v")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "SOURCE_TEST_AS_NOBODY=1", "GOCOVERDIR=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			t.Skipf("cannot run the test as nobody: %v", err)
		}
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestOpenFileNotOwner")) {
		t.Fatalf("as nobody, the test did not pass:\n%s", out)
	}
}

func TestSetXattrs(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	setUserXattr(t, p, "user.probe", nil) // skip early if unsupported
	if err := unix.Removexattr(p, "user.probe"); err != nil {
		t.Fatal(err)
	}
	if osXattrNames(t, p) != 0 {
		t.Skip("the system labels new files with xattrs")
	}

	t.Run("roundtrip", func(t *testing.T) {
		want := []Xattr{
			{"user.a", []byte("1")},
			{"user.b", bytes.Repeat([]byte{0, 0xff}, 1000)},
			{"user.c", []byte{}},
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := SetXattrs(f, want); err != nil {
			t.Fatal(err)
		}
		info, err := Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		checkXattrs(t, info.Xattrs, want)
	})

	t.Run("dir", func(t *testing.T) {
		d := filepath.Join(dir, "d")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		want := []Xattr{{"user.d", []byte("dir value")}}
		if err := SetXattrs(f, want); err != nil {
			t.Fatal(err)
		}
		info, err := Lstat(d)
		if err != nil {
			t.Fatal(err)
		}
		checkXattrs(t, info.Xattrs, want)
	})

	t.Run("error tries all", func(t *testing.T) {
		q := filepath.Join(dir, "g")
		if err := os.WriteFile(q, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(q)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		err = SetXattrs(f, []Xattr{
			{"nonamespace.first", []byte("x")}, // unknown namespace: EOPNOTSUPP
			{"user.ok", []byte("y")},
			{"nonamespace.second", []byte("z")},
		})
		if err == nil {
			t.Fatal("SetXattrs with a bad name succeeded")
		}
		if !strings.Contains(err.Error(), `"nonamespace.first"`) {
			t.Errorf("error %q does not name the first failing attribute", err)
		}
		info, err := Lstat(q)
		if err != nil {
			t.Fatal(err)
		}
		checkXattrs(t, info.Xattrs, []Xattr{{"user.ok", []byte("y")}})
	})

	t.Run("none", func(t *testing.T) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := SetXattrs(f, nil); err != nil {
			t.Errorf("SetXattrs(nil) = %v", err)
		}
	})
}

func TestIDNamesOncePerID(t *testing.T) {
	var calls atomic.Int32
	c := &idNames{lookup: func(id string) (string, error) {
		calls.Add(1)
		time.Sleep(10 * time.Millisecond) // widen the race window
		if id == "7" {
			return "", errors.New("no such id")
		}
		return "name" + id, nil
	}}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if got := c.name(5); got != "name5" {
				t.Errorf("name(5) = %q", got)
			}
			if got := c.name(7); got != "" {
				t.Errorf("name(7) = %q, want \"\"", got)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Errorf("lookup called %d times, want 2 (once per id)", n)
	}
}

func TestLstatConcurrent(t *testing.T) {
	dir := t.TempDir()
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) + 2 {
		wg.Go(func() {
			for i := range 20 {
				if _, err := Lstat(filepath.Join(dir, strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkLstat(b *testing.B) {
	p := filepath.Join(b.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Lstat(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLstatReusing: attributes that reuse supplies stand for the entry's
// (llistxattr is not called); when it declines, the real ones are read.
func TestLstatReusing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(p, "user.real", []byte("1"), 0); err != nil {
		t.Skipf("user extended attributes not supported here: %v", err)
	}
	sentinel := []Xattr{{Name: "user.from-parent", Value: []byte("2")}}
	var seen *Info
	fi, err := LstatReusing(p, func(fi *Info) ([]Xattr, bool) {
		seen = fi
		return sentinel, true
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.Inode == 0 || seen.ChangeTime.IsZero() {
		t.Errorf("reuse saw %+v: want the entry's inode and change time", seen)
	}
	if len(fi.Xattrs) != 1 || fi.Xattrs[0].Name != "user.from-parent" {
		t.Errorf("xattrs %v, want the reused ones", fi.Xattrs)
	}
	fi, err = LstatReusing(p, func(*Info) ([]Xattr, bool) { return sentinel, false })
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Xattrs) != 1 || fi.Xattrs[0].Name != "user.real" || string(fi.Xattrs[0].Value) != "1" {
		t.Errorf("xattrs %v, want the file's own", fi.Xattrs)
	}
}
