package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Reading pages from the database file.
//
// SQLite's pager hands out one page per row of sqlite_dbpage, at about
// 600 MiB/s through the pure-Go driver (BenchmarkPages), while the file
// itself reads at several GiB/s. pagesDirect therefore reads the file in
// large blocks and asks SQLite only for the pages that may differ from the
// file as of the snapshot. That is safe because of what the transaction
// Open started holds:
//
//   - Rollback-journal mode: a SHARED lock on the file. No writer can
//     change the file until it is released (a writer needs EXCLUSIVE to
//     write it), so the file is the snapshot.
//   - WAL mode: a read lock on a read mark in the -shm. A page of the
//     snapshot is the newest frame for it among the WAL frames the
//     transaction sees (its frame count; the mark it locks is at most
//     that), or the file's page if there is none. A checkpoint copies
//     back only frames up to the smallest locked mark (none at all while
//     a reader holds mark 0, which ignores the WAL), and extends or
//     truncates the file only then; the WAL is not restarted or truncated
//     while a reader uses frames of it. So a page for which the WAL holds
//     no frame at all reads the same from the file as through SQLite, for
//     as long as the transaction lasts; and the frames the transaction
//     sees, written before it began, are all in the -wal file when
//     walPages scans it.
//
// Two pages are not in the file although the image has them: the page
// holding SQLite's lock bytes at 1 GiB (pendingByte), which SQLite never
// writes and sqlite_dbpage gives as zeros; and, in a WAL database that
// grew past it before a checkpoint wrote anything beyond it, the pages
// after the file's end, all of which have frames. pagesDirect gives the
// first as zeros and reads any page past the end through SQLite.
//
// walPages collects the page number of every frame in the -wal file,
// whatever its salt or checksum: a superset of the pages the snapshot
// takes from the WAL. Those pages are read through SQLite, the rest from
// the file. Page 1 read from the file is compared with page 1 as SQLite
// gave it in Open.

// directBlock is how much of the file pagesDirect reads at once.
const directBlock = 1 << 20

// WAL file layout (https://sqlite.org/fileformat.html#the_write_ahead_log):
// a 32-byte header, then frames of a 24-byte header (the page number
// first, big-endian) and one page.
const (
	walHeaderSize      = 32
	walFrameHeaderSize = 24
)

// pageSet is a set of page numbers 1..n.
type pageSet struct {
	bits []uint64
	n    int // members
}

func newPageSet(n uint32) pageSet {
	return pageSet{bits: make([]uint64, n/64+1)}
}

func (p *pageSet) add(pgno uint32) {
	w, b := pgno/64, uint64(1)<<(pgno%64)
	if p.bits[w]&b == 0 {
		p.bits[w] |= b
		p.n++
	}
}

func (p *pageSet) has(pgno uint32) bool {
	return p.bits[pgno/64]&(uint64(1)<<(pgno%64)) != 0
}

// walPages returns the pages 1..PageCount that have a frame in the -wal
// file, valid or not (see above); no -wal file means none. ok is false
// when the file cannot be read, or when more than max pages have a frame
// (the scan stops there).
func (s *Snapshot) walPages(max uint32) (set pageSet, ok bool) {
	set = newPageSet(s.info.PageCount)
	f, err := os.Open(s.walPath)
	if errors.Is(err, fs.ErrNotExist) {
		return set, true
	}
	if err != nil {
		return set, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return set, false
	}
	// Frames appended after this are newer than the snapshot.
	size := fi.Size()
	frame := int64(walFrameHeaderSize + s.info.PageSize)
	var hdr [4]byte
	for off := int64(walHeaderSize); off+walFrameHeaderSize <= size; off += frame {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			if err == io.EOF {
				// Truncated meanwhile: only a checkpoint that no reader
				// needs the WAL for can do that.
				break
			}
			return set, false
		}
		if pgno := binary.BigEndian.Uint32(hdr[:]); pgno >= 1 && pgno <= s.info.PageCount {
			set.add(pgno)
			if uint32(set.n) > max {
				return set, false
			}
		}
	}
	return set, true
}

// pendingByte is the offset of SQLite's lock bytes (PENDING_BYTE, 1 GiB).
// The page that holds them is never used or written by SQLite, and
// sqlite_dbpage yields zeros for it, whatever the file holds there.
const pendingByte = 0x40000000

// pagesDirect streams pages 1..PageCount like pagesSQL, reading those not
// in wal from s.file and those in wal through SQLite. So do pages past the
// end of the file without a frame: SQLite's pager reads them as zeros
// (a WAL database that grew past the pending-byte page before a
// checkpoint wrote anything beyond it ends before that page).
func (s *Snapshot) pagesDirect(ctx context.Context, wal pageSet, fn func(pgno uint32, page []byte) error) error {
	var stmt *sql.Stmt
	defer func() {
		if stmt != nil {
			stmt.Close()
		}
	}()
	viaSQL := func(pgno uint32, page []byte) error {
		if stmt == nil {
			var err error
			stmt, err = s.conn.PrepareContext(ctx, "SELECT data FROM sqlite_dbpage WHERE pgno = ?")
			if err != nil {
				return wrap(s.path, fmt.Errorf("read pages: %w", explain(err)))
			}
		}
		return s.readPage(ctx, stmt, pgno, page)
	}
	ps := s.info.PageSize
	per := max(1, directBlock/ps)
	buf := make([]byte, per*ps)
	count := uint64(s.info.PageCount)
	pending := uint64(pendingByte/ps) + 1
	// first is 64 bits wide: a count near 2^32 must not wrap around.
	for first := uint64(1); first <= count; first += uint64(per) {
		n := int(min(uint64(per), count-first+1))
		b := buf[:n*ps]
		got, err := s.file.ReadAt(b, int64(first-1)*int64(ps))
		if err != nil && err != io.EOF {
			return wrap(s.path, fmt.Errorf("read page %d: %w", first, err))
		}
		whole := got / ps // pages read in full
		for i := range n {
			pgno := uint32(first) + uint32(i)
			page := b[i*ps : (i+1)*ps]
			switch {
			case uint64(pgno) == pending:
				clear(page)
			case wal.has(pgno) || i >= whole:
				if err := viaSQL(pgno, page); err != nil {
					return err
				}
			}
			if err := s.emit(ctx, pgno, page, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// emit hands page pgno to fn, after checking page 1 against the header
// Open read, and stops a cancelled stream.
func (s *Snapshot) emit(ctx context.Context, pgno uint32, page []byte, fn func(pgno uint32, page []byte) error) error {
	if pgno == 1 && !bytes.Equal(page[:100], s.head) {
		return wrap(s.path, errors.New("page 1 changed within the transaction"))
	}
	if err := fn(pgno, page); err != nil {
		return err
	}
	// The driver interrupts SQLite from another goroutine when ctx ends,
	// which can come too late for a short stream to notice: a cancelled
	// stream must not look complete.
	if err := ctx.Err(); err != nil {
		return wrap(s.path, fmt.Errorf("read pages: %w", err))
	}
	return nil
}

// readPage reads page pgno through SQLite into page.
func (s *Snapshot) readPage(ctx context.Context, stmt *sql.Stmt, pgno uint32, page []byte) error {
	rows, err := stmt.QueryContext(ctx, pgno)
	if err != nil {
		return wrap(s.path, fmt.Errorf("read page %d: %w", pgno, explain(err)))
	}
	defer rows.Close()
	if !rows.Next() {
		err := rows.Err()
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		} else if err == nil {
			err = errors.New("no such page")
		}
		return wrap(s.path, fmt.Errorf("read page %d: %w", pgno, explain(err)))
	}
	var data sql.RawBytes
	if err := rows.Scan(&data); err != nil {
		return wrap(s.path, fmt.Errorf("read page %d: %w", pgno, err))
	}
	if len(data) != len(page) {
		return wrap(s.path, fmt.Errorf("page %d has %d bytes, want page size %d", pgno, len(data), len(page)))
	}
	copy(page, data)
	return nil
}
