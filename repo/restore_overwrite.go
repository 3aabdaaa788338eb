package repo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"repo/source"
)

// Overwrite says what Restore does with an entry that already exists where
// it would create one. Whatever the mode, an existing directory is restored
// into (never removed), and nothing is ever written through a symlink.
type Overwrite int

const (
	// OverwriteAlways replaces every existing entry (the default).
	OverwriteAlways Overwrite = iota
	// OverwriteIfChanged keeps an existing regular file whose size and
	// mtime equal the snapshot's without reading it; one of the same size
	// but another mtime is read and each blob-sized region hashed against
	// the snapshot's blob ids, and kept if all match. A kept file, and a
	// symlink, device or FIFO equal to the snapshot's, only get their
	// metadata set. Everything else is replaced. This makes re-running an
	// interrupted restore cheap: a file it had not finished has neither
	// the snapshot's mtime (set last) nor, usually, its content.
	OverwriteIfChanged
	// OverwriteIfNewer replaces an existing entry only if the snapshot's
	// mtime is later than the entry's; one that is as new or newer is left
	// as it is, metadata included.
	OverwriteIfNewer
	// OverwriteNever leaves every existing entry as it is, metadata
	// included; a non-directory where the snapshot has a directory keeps
	// that directory's contents from being restored.
	OverwriteNever
)

var overwriteNames = [...]string{"always", "if-changed", "if-newer", "never"}

// String returns the mode's command-line name.
func (o Overwrite) String() string {
	if o < 0 || int(o) >= len(overwriteNames) {
		return fmt.Sprintf("Overwrite(%d)", int(o))
	}
	return overwriteNames[o]
}

// ParseOverwrite parses a mode's command-line name (see String).
func ParseOverwrite(s string) (Overwrite, error) {
	for i, name := range overwriteNames {
		if s == name {
			return Overwrite(i), nil
		}
	}
	return 0, fmt.Errorf("invalid overwrite mode %q: want always, if-changed, if-newer or never", s)
}

// keeps reports whether mode o leaves the entry fi, found where node n
// goes, as it is regardless of its content: always under OverwriteNever,
// under OverwriteIfNewer when the snapshot's version is not newer. Equal
// times keep the entry (as restic does), so running the same restore twice
// writes nothing the second time.
func (o Overwrite) keeps(fi fs.FileInfo, n *Node) bool {
	switch o {
	case OverwriteNever:
		return true
	case OverwriteIfNewer:
		return !n.ModTime.After(fi.ModTime())
	}
	return false
}

// existing returns what is at name in dir, or nil if nothing is. Under
// OverwriteAlways it does not look (the entry is replaced anyway) and
// returns nil.
func (rs *restorer) existing(dir *os.Root, name string) (fs.FileInfo, error) {
	if rs.overwrite == OverwriteAlways {
		return nil, nil
	}
	fi, err := dir.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return fi, err
}

// sameSpecial reports whether fi, at name in dir, is already the symlink,
// device or FIFO that n describes, apart from metadata.
func sameSpecial(dir *os.Root, name string, fi fs.FileInfo, n *Node) bool {
	typ := fi.Mode().Type()
	switch n.Type {
	case NodeSymlink:
		if typ != fs.ModeSymlink {
			return false
		}
		target, err := dir.Readlink(name)
		return err == nil && target == n.LinkTarget
	case NodeFIFO:
		return typ == fs.ModeNamedPipe
	case NodeDevice, NodeCharDevice:
		want := fs.ModeDevice
		if n.Type == NodeCharDevice {
			want |= fs.ModeCharDevice
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		return typ == want && ok && uint64(st.Rdev) == n.Rdev
	}
	return false
}

// keepSpecial decides whether the entry at name in dir stays instead of
// the symlink, device or FIFO n being created. A kept entry is counted,
// and under OverwriteIfChanged given n's metadata. An error has been
// reported already.
func (rs *restorer) keepSpecial(dir *os.Root, name, shown string, n *Node) (bool, error) {
	fi, err := rs.existing(dir, name)
	if err != nil {
		rs.report(shown, err)
		return false, err
	}
	if fi == nil {
		return false, nil
	}
	switch {
	case rs.overwrite == OverwriteIfChanged:
		if !sameSpecial(dir, name, fi, n) {
			return false, nil
		}
		if n.Type == NodeSymlink {
			rs.symlinkMeta(dir, name, shown, n)
		} else {
			rs.applyMeta(dir, name, shown, n)
		}
	case !rs.overwrite.keeps(fi, n):
		return false, nil
	}
	rs.count(func(s *RestoreStats) { s.OtherSkipped++ })
	return true, nil
}

// keepFile decides whether the existing entry fi at name in dir stays
// instead of file node n being written. Under OverwriteIfChanged it may
// read the file, with w's buffers. A file that cannot be read is not kept
// (rewriting it reports what is wrong, if anything still is); only a
// cancelled ctx is an error.
func (rs *restorer) keepFile(ctx context.Context, w *contentWriter, dir *os.Root, name string, fi fs.FileInfo, n *Node) (bool, error) {
	if rs.overwrite != OverwriteIfChanged {
		return rs.overwrite.keeps(fi, n), nil
	}
	if !fi.Mode().IsRegular() || uint64(fi.Size()) != n.Size {
		return false, nil
	}
	if fi.ModTime().Equal(n.ModTime) {
		return true, nil
	}
	if w.br == nil {
		w.br = bufio.NewReaderSize(nil, 1<<20)
	}
	_, err := rs.r.verifyFile(ctx, dir, name, n, w.br, &w.cmp)
	w.br.Reset(nil) // drop the file
	if err != nil && ctx.Err() != nil {
		return false, ctx.Err()
	}
	return err == nil, nil
}

// fixFileMeta gives the kept file name in dir node n's metadata in the
// order restoreFile sets it: owner, xattrs (after chown, which drops
// security.capability), mode (after chown, which drops setuid), times.
func (rs *restorer) fixFileMeta(dir *os.Root, name, shown string, n *Node) {
	if rs.isRoot {
		if err := dir.Lchown(name, int(n.UID), int(n.GID)); err != nil {
			rs.report(shown, err)
		}
	}
	if len(n.Xattrs) > 0 {
		if f, err := dir.Open(name); err != nil {
			rs.report(shown, err)
		} else {
			if err := source.SetXattrs(f, toSourceXattrs(n.Xattrs)); err != nil {
				rs.report(shown, err)
			}
			f.Close()
		}
	}
	if err := dir.Chmod(name, goMode(n.Mode)); err != nil {
		rs.report(shown, err)
	}
	if err := dir.Chtimes(name, n.AccessTime, n.ModTime); err != nil {
		rs.report(shown, err)
	}
}
