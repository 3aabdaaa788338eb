package source

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Type is the kind of a file system entry.
type Type uint8

// Entry kinds.
const (
	File Type = iota + 1
	Dir
	Symlink
	Device     // block device
	CharDevice // character device
	FIFO
	Socket
)

// String returns "file", "dir", "symlink", "dev", "chardev", "fifo" or "socket".
func (t Type) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	case Device:
		return "dev"
	case CharDevice:
		return "chardev"
	case FIFO:
		return "fifo"
	case Socket:
		return "socket"
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// ErrNotRegular is returned (wrapped) by OpenFile when the path is not a
// regular file, typically because it was replaced by a symlink, a FIFO or a
// directory between the walk and the open. Backups report it and go on.
var ErrNotRegular = errors.New("not a regular file")

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Info is everything backup records about one entry, read without following
// a final symlink.
type Info struct {
	Name       string // base name
	Type       Type
	Mode       os.FileMode // Go mode: type bits, permissions, setuid/setgid/sticky
	UID, GID   uint32
	User       string // name of UID, "" when unknown (looked up once per id)
	Group      string // name of GID, "" when unknown
	Size       int64  // regular files only
	ModTime    time.Time
	AccessTime time.Time
	ChangeTime time.Time
	Inode      uint64
	DeviceID   uint64 // st_dev of the file system holding the entry
	Rdev       uint64 // device number for Device and CharDevice
	Links      uint64
	LinkTarget string  // Symlink only, raw bytes as stored
	Xattrs     []Xattr // sorted by name; nil when none or unsupported
}

// Lstat describes path. Extended attributes the file system does not support
// or that the caller may not read (ENOTSUP, EPERM, EACCES, ENODATA) are
// skipped silently; other errors are returned.
//
// Lstat runs once per entry of a backup, so it costs one lstat, one
// llistxattr, a readlink for symlinks and an lgetxattr per attribute
// present, nothing more. User and group names are cached for the life of
// the process. It is safe for concurrent use.
func Lstat(path string) (*Info, error) { return LstatReusing(path, nil) }

// LstatReusing is Lstat, except that when reuse, called with the Info
// before its attributes are read, returns ok, its xattrs stand for the
// entry's and llistxattr is not called. Backups pass the attributes of
// the entry in the parent snapshot when the inode and its change time are
// the same: setting or removing an attribute changes the change time, so
// they are the attributes still there, one system call fewer per entry.
func LstatReusing(path string, reuse func(*Info) (xattrs []Xattr, ok bool)) (*Info, error) {
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Lstat(path, &st) }); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	typ, mode, err := typeAndMode(uint32(st.Mode))
	if err != nil {
		return nil, fmt.Errorf("lstat %s: %w", path, err)
	}
	fi := &Info{
		Name:       filepath.Base(path),
		Type:       typ,
		Mode:       mode,
		UID:        st.Uid,
		GID:        st.Gid,
		User:       users.name(st.Uid),
		Group:      groups.name(st.Gid),
		ModTime:    time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec)),
		AccessTime: time.Unix(int64(st.Atim.Sec), int64(st.Atim.Nsec)),
		ChangeTime: time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec)),
		Inode:      uint64(st.Ino),
		DeviceID:   uint64(st.Dev),
		Links:      uint64(st.Nlink),
	}
	switch typ {
	case File:
		fi.Size = st.Size
	case Device, CharDevice:
		fi.Rdev = uint64(st.Rdev)
	case Symlink:
		// os.Readlink returns the target's bytes unchanged (no UTF-8
		// validation), which is what restore must recreate.
		if fi.LinkTarget, err = os.Readlink(path); err != nil {
			return nil, err
		}
	}
	if reuse != nil {
		if xs, ok := reuse(fi); ok {
			fi.Xattrs = xs
			return fi, nil
		}
	}
	if fi.Xattrs, err = listXattrs(path); err != nil {
		return nil, err
	}
	return fi, nil
}

// typeAndMode maps st_mode to a Type and the os.FileMode that os.Lstat
// would report for it (same rules as os.fillFileStatFromSys).
func typeAndMode(m uint32) (Type, os.FileMode, error) {
	mode := os.FileMode(m & 0o777)
	var t Type
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		t = File
	case unix.S_IFDIR:
		t, mode = Dir, mode|os.ModeDir
	case unix.S_IFLNK:
		t, mode = Symlink, mode|os.ModeSymlink
	case unix.S_IFBLK:
		t, mode = Device, mode|os.ModeDevice
	case unix.S_IFCHR:
		t, mode = CharDevice, mode|os.ModeDevice|os.ModeCharDevice
	case unix.S_IFIFO:
		t, mode = FIFO, mode|os.ModeNamedPipe
	case unix.S_IFSOCK:
		t, mode = Socket, mode|os.ModeSocket
	default:
		return 0, 0, fmt.Errorf("unknown file type %#o", m&unix.S_IFMT)
	}
	if m&unix.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return t, mode, nil
}

// xattrSkippable reports errors that mean "no attributes for us here"
// rather than a failure: unsupported by the file system, not permitted to
// the caller, or the attribute vanished between list and get.
func xattrSkippable(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		errors.Is(err, unix.ENODATA)
}

// listXattrBufSize covers the name list of nearly every file in one
// llistxattr call; larger lists take the ERANGE path.
const listXattrBufSize = 1024

// maxXattrRetries bounds the ERANGE loops: each retry follows a concurrent
// change that grew the list or value after we sized the buffer.
const maxXattrRetries = 8

// listXattrs reads all extended attributes of path (not following a final
// symlink), sorted by name; nil when there are none.
func listXattrs(path string) ([]Xattr, error) {
	buf := make([]byte, listXattrBufSize)
	var n int
	for try := 0; ; try++ {
		var err error
		n, err = unix.Llistxattr(path, buf)
		if err == nil {
			break
		}
		if xattrSkippable(err) {
			return nil, nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.ERANGE || try >= maxXattrRetries {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		// Ask for the size; it may grow again before the next call.
		size, err := unix.Llistxattr(path, nil)
		if err != nil {
			if xattrSkippable(err) {
				return nil, nil
			}
			if err == unix.EINTR {
				continue
			}
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		buf = make([]byte, max(size, 2*len(buf)))
	}
	if n == 0 {
		return nil, nil
	}
	var xs []Xattr
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue // the list ends with a NUL
		}
		v, ok, err := getXattr(path, name)
		if err != nil {
			return nil, err
		}
		if ok {
			xs = append(xs, Xattr{Name: name, Value: v})
		}
	}
	if len(xs) == 0 {
		return nil, nil
	}
	slices.SortFunc(xs, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	return xs, nil
}

// getXattr reads one attribute; ok is false when it is skippable (gone,
// unsupported, not permitted).
func getXattr(path, name string) (value []byte, ok bool, err error) {
	buf := make([]byte, 256)
	for try := 0; ; try++ {
		n, err := unix.Lgetxattr(path, name, buf)
		if err == nil {
			return slices.Clip(buf[:n]), true, nil
		}
		if xattrSkippable(err) {
			return nil, false, nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.ERANGE || try >= maxXattrRetries {
			return nil, false, fmt.Errorf("read xattr %q of %s: %w", name, path, err)
		}
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			if xattrSkippable(err) {
				return nil, false, nil
			}
			if err == unix.EINTR {
				continue
			}
			return nil, false, fmt.Errorf("read xattr %q of %s: %w", name, path, err)
		}
		buf = make([]byte, max(size, 2*len(buf)))
	}
}

// idNames caches uid → user name or gid → group name. A lookup may read
// /etc/passwd or ask NSS (LDAP, sssd), so each id is looked up exactly once
// per process, and lookups of different ids do not wait for each other.
type idNames struct {
	lookup func(id string) (string, error)

	mu sync.Mutex
	m  map[uint32]*idName // guarded by mu; entries are never removed
}

type idName struct {
	once sync.Once
	name string // valid after once
}

func (c *idNames) name(id uint32) string {
	c.mu.Lock()
	e := c.m[id]
	if e == nil {
		if c.m == nil {
			c.m = make(map[uint32]*idName)
		}
		e = &idName{}
		c.m[id] = e
	}
	c.mu.Unlock()
	e.once.Do(func() {
		// Any failure (unknown id, NSS error) records "": the numeric id
		// is what restore relies on, the name is a courtesy.
		e.name, _ = c.lookup(strconv.FormatUint(uint64(id), 10))
	})
	return e.name
}

var (
	users = &idNames{lookup: func(id string) (string, error) {
		u, err := user.LookupId(id)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	}}
	groups = &idNames{lookup: func(id string) (string, error) {
		g, err := user.LookupGroupId(id)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	}}
)

// ReadDirNames returns the names in directory path, sorted bytewise.
//
// The directory is opened with O_NOFOLLOW, so a directory replaced by a
// symlink since it was stat'ed fails instead of listing the link's target
// under the directory's name.
func ReadDirNames(path string) ([]string, error) {
	fd, err := openNoATime(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names) // bytewise, like sort.Strings
	return names, nil
}

// OpenFile opens a regular file for reading without following a final
// symlink, with O_NOATIME when the kernel allows it (so backups do not touch
// atimes), and fails if path is not a regular file any more.
//
// The failure wraps ErrNotRegular. The open uses O_NONBLOCK so that a FIFO
// swapped in since the walk fails at once instead of blocking for a writer;
// the flag is cleared again on the returned regular file.
func OpenFile(path string) (*os.File, error) {
	fd, err := openNoATime(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		if err == unix.ELOOP {
			// With O_NOFOLLOW, ELOOP usually means the final component
			// is a symlink; confirm (error path, the extra call is free).
			var st unix.Stat_t
			if unix.Lstat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return nil, fmt.Errorf("open %s: %w (symlink)", path, ErrNotRegular)
			}
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		what := "unknown type"
		if t, _, err := typeAndMode(uint32(st.Mode)); err == nil {
			what = t.String()
		}
		return nil, fmt.Errorf("open %s: %w (%s)", path, ErrNotRegular, what)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openNoATime opens path with flags|O_NOATIME, falling back to flags alone
// when the kernel refuses O_NOATIME (EPERM: only the owner or a privileged
// process may use it).
func openNoATime(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_NOATIME, 0)
		if err == unix.EPERM {
			fd, err = unix.Open(path, flags, 0)
		}
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// ignoringEINTR retries fn while it fails with EINTR, which stat-like calls
// can return on some network and FUSE file systems.
func ignoringEINTR(fn func() error) error {
	for {
		err := fn()
		if err != unix.EINTR {
			return err
		}
	}
}

// SetXattrs sets xs on the open file or directory f. It tries every
// attribute and returns the first error (callers report it and go on).
func SetXattrs(f *os.File, xs []Xattr) error {
	if len(xs) == 0 {
		return nil
	}
	fd := int(f.Fd())
	var first error
	for _, x := range xs {
		err := ignoringEINTR(func() error { return unix.Fsetxattr(fd, x.Name, x.Value, 0) })
		if err != nil && first == nil {
			first = fmt.Errorf("set xattr %q on %s: %w", x.Name, f.Name(), err)
		}
	}
	return first
}
