package index

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The parts of bbolt's on-disk format (file format version 2, unchanged
// since 2014) that checkFile reads. Fields are in native byte order.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltPageHeader   = 16 // page id (8), flags (2), count (2), overflow (4)
	boltMetaSize     = 64 // magic, version, page size, flags (4 each); root, sequence, freelist, pgid, txid, checksum (8 each)
	boltChecksumOff  = 56 // the checksum is FNV-64a of the meta bytes before it
	boltNoFreelist   = ^uint64(0)
	boltMinPageSize  = 512
	boltMaxPageSize  = 1 << 24
	boltFirstPageTry = 1 << 10 // page sizes bbolt tries for the second meta page: 1 KiB…
	boltLastPageTry  = 1 << 24 // …16 MiB
)

// boltMeta is the part of a bbolt meta page that checkFile uses.
type boltMeta struct {
	pageSize uint64
	root     uint64
	freelist uint64
	pgid     uint64 // high-water mark: pages [0, pgid) are in use
	txid     uint64
}

// readMeta reads and validates the meta page at off; ok is false when it
// cannot be read or is invalid (magic, version, checksum).
func readMeta(f *os.File, off int64) (m boltMeta, ok bool) {
	var buf [boltPageHeader + boltMetaSize]byte
	if _, err := f.ReadAt(buf[:], off); err != nil {
		return boltMeta{}, false
	}
	b := buf[boltPageHeader:]
	ne := binary.NativeEndian
	if ne.Uint32(b[0:]) != boltMagic || ne.Uint32(b[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(b[:boltChecksumOff])
	if h.Sum64() != ne.Uint64(b[boltChecksumOff:]) {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: uint64(ne.Uint32(b[8:])),
		root:     ne.Uint64(b[16:]),
		freelist: ne.Uint64(b[32:]),
		pgid:     ne.Uint64(b[40:]),
		txid:     ne.Uint64(b[48:]),
	}, true
}

// checkFile checks, before bbolt reads the file, what bbolt does not: that
// the meta page bbolt will use (the valid one with the highest transaction
// id) describes pages that all lie inside the file. bbolt maps the file and
// follows page ids without bounds checks, so a truncated file (a disk that
// filled up, a partial copy) would make it read past the end of the file —
// a SIGBUS — or past the end of the mapping. An empty file is fine: bbolt
// initialises it. Errors wrap ErrCacheCorrupt.
func checkFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return &openFileError{err}
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	m0, ok0 := readMeta(f, 0)
	var m1 boltMeta
	var ok1 bool
	if ok0 && m0.pageSize >= boltMinPageSize && m0.pageSize <= boltMaxPageSize {
		m1, ok1 = readMeta(f, int64(m0.pageSize))
	} else {
		// Like bbolt: the first meta page is unreadable, so look for the
		// second at every plausible page size.
		for ps := int64(boltFirstPageTry); ps <= boltLastPageTry && ps < size; ps <<= 1 {
			if m1, ok1 = readMeta(f, ps); ok1 && m1.pageSize == uint64(ps) {
				break
			}
			ok1 = false
		}
	}
	var m boltMeta
	switch {
	case ok0 && ok1:
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case ok0:
		m = m0
	case ok1:
		m = m1
	default:
		return fmt.Errorf("not a bbolt file (no valid meta page): %w", ErrCacheCorrupt)
	}
	switch {
	case m.pageSize < boltMinPageSize || m.pageSize > boltMaxPageSize || m.pageSize&(m.pageSize-1) != 0:
		return fmt.Errorf("bbolt page size %d: %w", m.pageSize, ErrCacheCorrupt)
	case m.pgid < 2 || m.pgid > uint64(size)/m.pageSize:
		return fmt.Errorf("bbolt file of %d bytes holds %d pages of %d bytes, meta claims %d (truncated?): %w",
			size, uint64(size)/m.pageSize, m.pageSize, m.pgid, ErrCacheCorrupt)
	case m.root < 2 || m.root >= m.pgid:
		return fmt.Errorf("bbolt root page %d outside [2, %d): %w", m.root, m.pgid, ErrCacheCorrupt)
	case m.freelist != boltNoFreelist && (m.freelist < 2 || m.freelist >= m.pgid):
		return fmt.Errorf("bbolt freelist page %d outside [2, %d): %w", m.freelist, m.pgid, ErrCacheCorrupt)
	}
	return nil
}

// removeStalePrivate removes the private cache directories under dir that
// their process left behind (it crashed before Close): those older than
// stalePrivateAge whose file nobody holds locked. keep is this process's
// own private directory, if any. Errors are ignored: this is housekeeping.
func removeStalePrivate(dir, keep string) {
	if !lockSupported {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "private-") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if p == keep {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < stalePrivateAge {
			continue
		}
		if lockedByOther(filepath.Join(p, cacheFile)) {
			continue
		}
		_ = os.RemoveAll(p)
	}
}

// removeStaleTemp removes the temporary files that a crashed holder of the
// shared cache in dir left behind: new cache files of createFile that
// nobody holds locked, and run files of a bulk load (normally unlinked as
// soon as they are created), once stalePrivateAge old. The caller holds
// the shared cache. Errors are ignored: this is housekeeping.
func removeStaleTemp(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		isNew := strings.HasPrefix(name, cacheFile+tempFileSuffix)
		if e.IsDir() || !isNew && !strings.HasPrefix(name, bulkRunPrefix) {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < stalePrivateAge {
			continue
		}
		p := filepath.Join(dir, name)
		if isNew && lockSupported && lockedByOther(p) {
			continue
		}
		_ = os.Remove(p)
	}
}
