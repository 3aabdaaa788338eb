package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no cgo)
)

// BusyTimeoutMillis is how long Open waits for a lock it needs to start its
// read transaction (a writer holding an EXCLUSIVE lock in rollback-journal
// mode, WAL recovery by another connection) before giving up with
// SQLITE_BUSY.
const BusyTimeoutMillis = 10000

// ErrNotDatabase is returned (wrapped) by Open when the file exists and is
// readable but SQLite does not recognise it as a database (SQLITE_NOTADB).
var ErrNotDatabase = errors.New("file is not a database")

// headerMagic starts page 1 of every SQLite 3 database.
const headerMagic = "SQLite format 3\x00"

// SQLite result codes this package tells apart (primary codes are the low
// byte of the extended ones the driver reports).
const (
	codeBusy              = 5
	codeCantOpen          = 14
	codeNotADB            = 26
	codeReadOnlyRecovery  = 8 | 1<<8 // WAL needs recovery; a read-only connection cannot run it
	codeReadOnlyRollback  = 8 | 3<<8 // hot journal; a read-only connection cannot roll it back
	codeReadOnlyCantInit  = 8 | 5<<8 // the -shm cannot be initialised read-only
	codeReadOnlyDirectory = 8 | 6<<8 // the -shm cannot be created in a read-only directory
)

// Info describes the database as of the snapshot's transaction. Everything
// in it is read inside that transaction; the header fields come from page 1
// exactly as Pages streams it.
type Info struct {
	PageSize      int    // bytes
	PageCount     uint32 // pages in the image streamed (PRAGMA page_count)
	JournalMode   string // "wal", "delete", ... (lowercase); see the package caveats
	SQLiteVersion string // sqlite_version() of the library used
	SchemaVersion uint32 // PRAGMA schema_version: bumped by every schema change
	FreelistCount uint32 // unused pages in the image (PRAGMA freelist_count)

	// ChangeCounter is the file change counter of the database header
	// (bytes 24..27 of page 1, as streamed). In rollback-journal mode every
	// committed write transaction increments it, so together with the
	// file's identity it names the captured state. In WAL mode it is only
	// incremented by commits that write page 1 (a schema change, a change
	// to the freelist head or the page count, ...), so many different
	// states share one value: it is a hint, not an identity.
	ChangeCounter uint32

	// UserVersion (header bytes 60..63, PRAGMA user_version) and
	// ApplicationID (bytes 68..71, PRAGMA application_id) are the
	// application's own markers, as of the transaction.
	UserVersion   uint32
	ApplicationID uint32

	// WAL is true when the header marks the database as a WAL database
	// (bytes 18 and 19 are 2). The streamed image keeps these bytes, so a
	// file restored from it opens in WAL mode as well.
	WAL bool
}

// Snapshot is a read transaction on a live SQLite database. Its view is
// fixed when Open returns: Pages streams the pages as of that moment, no
// matter what writers commit meanwhile. A Snapshot is not safe for
// concurrent use.
type Snapshot struct {
	path   string // as given to Open, for messages
	db     *sql.DB
	conn   *sql.Conn
	info   Info
	head   []byte // the first 100 bytes of page 1 as read by Open
	inTx   bool
	closed bool // Close has run

	// file is the database file, opened by us before SQLite opened it and
	// closed after SQLite closed it (see Open). direct is true when pages
	// may be read from it (see pagesDirect); walPath is then the -wal file
	// SQLite uses.
	file    *os.File
	direct  bool
	walPath string
}

// sameFile reports whether SQLite's main database is s.file, and sets
// s.walPath. SQLite names its file in PRAGMA database_list (symbolic links
// resolved) and opened it after us: if that name is our file now, it is
// the file SQLite has open, short of the path being swapped away and back
// in between. If not, pages come through SQL only.
func (s *Snapshot) sameFile(ctx context.Context) bool {
	rows, err := s.conn.QueryContext(ctx, "PRAGMA database_list")
	if err != nil {
		return false
	}
	defer rows.Close()
	var name string
	for rows.Next() {
		var seq int64
		var schema, file string
		if rows.Scan(&seq, &schema, &file) == nil && schema == "main" {
			name = file
		}
	}
	if rows.Err() != nil || name == "" {
		return false
	}
	fi, err := s.file.Stat()
	if err != nil {
		return false
	}
	pi, err := os.Stat(name)
	if err != nil || !os.SameFile(fi, pi) {
		return false
	}
	s.walPath = name + "-wal"
	return true
}

// Open opens path read-only and starts a read transaction; the transaction's
// view is fixed once Open returns. It never creates, truncates or writes the
// database file (it may create the -wal and -shm files of a WAL database; see
// the package documentation). A missing file, a directory, anything but a
// regular file, an unreadable file and a file that is not an SQLite database
// are errors.
//
// ctx bounds the opening only; the Snapshot stays valid until Close.
func Open(ctx context.Context, path string) (*Snapshot, error) {
	// file is our own descriptor, for reading pages directly (see
	// pagesDirect). It is opened before SQLite opens the file and closed
	// only after SQLite has closed it: closing any descriptor of a file
	// drops every POSIX lock the process holds on it, SQLite's SHARED lock
	// included.
	file, err := checkFile(path)
	if err != nil {
		return nil, wrap(path, err)
	}
	dsn, err := dsnFor(path)
	if err != nil {
		file.Close()
		return nil, wrap(path, err)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		file.Close()
		return nil, wrap(path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	s := &Snapshot{path: path, db: db, file: file}
	if err := s.begin(ctx); err != nil {
		s.Close()
		return nil, wrap(path, err)
	}
	s.direct = s.sameFile(ctx)
	return s, nil
}

// checkFile turns the common mistakes into plain file system errors before
// SQLite sees the path: SQLite would report all of them as "unable to open
// database file", and would block opening a FIFO. It returns the regular
// file, open for reading (O_NONBLOCK means nothing to regular files).
func checkFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, unwrapPathError(err)
	}
	switch {
	case fi.IsDir():
		f.Close()
		return nil, syscall.EISDIR
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, fmt.Errorf("not a regular file but a %s", typeName(fi.Mode()))
	}
	return f, nil
}

// typeName names the type of a non-regular file.
func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// unwrapPathError drops the *fs.PathError around err: the message names
// the path already.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// dsnFor builds the URI filename SQLite opens: file:///abs/path with every
// byte that means something in a URI percent-escaped ('?', '#', '%', spaces,
// non-UTF-8 bytes), mode=ro so that a missing file is never created, and the
// busy timeout. The driver splits the DSN at the first '?', which is ours
// because the path's question marks are escaped.
func dsnFor(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	u := url.URL{Scheme: "file", Path: abs}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeoutMillis))
	// url.URL leaves a few sub-delimiters unescaped in paths; SQLite takes
	// them literally, so that is fine. It always escapes '%', '?' and '#'.
	return u.String() + "?" + q.Encode(), nil
}

// begin takes the connection, starts the transaction and reads Info.
func (s *Snapshot) begin(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return explain(err)
	}
	s.conn = conn
	// A plain BEGIN rather than sql.Conn.BeginTx: database/sql rolls a Tx
	// back when the context given to BeginTx ends, and ctx only bounds Open.
	if _, err := conn.ExecContext(ctx, "BEGIN DEFERRED"); err != nil {
		return fmt.Errorf("begin: %w", explain(err))
	}
	s.inTx = true
	// The first read starts the read transaction (SHARED lock, or a WAL
	// read mark); from here on every statement sees the same state.
	var schemaVersion int64
	if err := conn.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&schemaVersion); err != nil {
		if err = explain(err); errors.Is(err, ErrNotDatabase) {
			return err
		}
		return fmt.Errorf("start read transaction: %w", err)
	}
	var pageSize, pageCount, freelist int64
	var journal, version string
	for _, q := range []struct {
		sql string
		dst any
	}{
		{"PRAGMA page_size", &pageSize},
		{"PRAGMA page_count", &pageCount},
		{"PRAGMA freelist_count", &freelist},
		{"PRAGMA journal_mode", &journal},
		{"SELECT sqlite_version()", &version},
	} {
		if err := conn.QueryRowContext(ctx, q.sql).Scan(q.dst); err != nil {
			return fmt.Errorf("%s: %w", strings.ToLower(q.sql), explain(err))
		}
	}
	if pageSize < 512 || pageSize > 65536 || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("page size %d out of range", pageSize)
	}
	if pageCount < 0 || pageCount > 0xFFFFFFFE {
		return fmt.Errorf("page count %d out of range", pageCount)
	}
	s.info = Info{
		PageSize:      int(pageSize),
		PageCount:     uint32(pageCount),
		JournalMode:   strings.ToLower(journal),
		SQLiteVersion: version,
		SchemaVersion: uint32(schemaVersion),
		FreelistCount: uint32(freelist),
	}
	if pageCount == 0 {
		// An empty file is an empty database to SQLite: no pages, no header.
		return nil
	}
	var page1 []byte
	err = conn.QueryRowContext(ctx, "SELECT data FROM sqlite_dbpage WHERE pgno = 1").Scan(&page1)
	if err != nil {
		return fmt.Errorf("read page 1: %w", explain(err))
	}
	if err := s.checkPage1(page1); err != nil {
		return err
	}
	s.head = bytes.Clone(page1[:100])
	h := s.head
	s.info.ChangeCounter = binary.BigEndian.Uint32(h[24:])
	s.info.UserVersion = binary.BigEndian.Uint32(h[60:])
	s.info.ApplicationID = binary.BigEndian.Uint32(h[68:])
	s.info.WAL = h[18] == 2 && h[19] == 2
	return nil
}

// checkPage1 verifies that page 1 is what Info says: the magic string and
// the page size in the header.
func (s *Snapshot) checkPage1(p []byte) error {
	if len(p) != s.info.PageSize {
		return fmt.Errorf("page 1 has %d bytes, want page size %d", len(p), s.info.PageSize)
	}
	if !bytes.HasPrefix(p, []byte(headerMagic)) {
		return fmt.Errorf("page 1: %w", ErrNotDatabase)
	}
	hs := int(binary.BigEndian.Uint16(p[16:]))
	if hs == 1 {
		hs = 65536
	}
	if hs != s.info.PageSize {
		return fmt.Errorf("page 1 header says page size %d, PRAGMA page_size %d", hs, s.info.PageSize)
	}
	return nil
}

// Info returns what Open read inside the transaction.
func (s *Snapshot) Info() Info { return s.info }

// Pages calls fn for pages 1..PageCount in order; page is only valid during
// the call (may be reused). Each page has exactly PageSize bytes. The pages
// are those of the transaction Open started, so they form a consistent
// database image. Pages may be called more than once; every call streams the
// same image.
//
// An error from fn stops the stream and is returned as is. A gap in the page
// numbers, a page of the wrong size or a page count different from
// Info().PageCount is an error naming the path. Cancelling ctx interrupts the
// stream; the Snapshot stays usable.
func (s *Snapshot) Pages(ctx context.Context, fn func(pgno uint32, page []byte) error) error {
	if s.closed {
		return wrap(s.path, errors.New("snapshot is closed"))
	}
	if s.direct && s.info.PageCount > 0 {
		// A page that may be in the WAL costs one query: when more than
		// a quarter of the pages have a frame, one stream of them all is
		// cheaper. Then, and when the WAL cannot be read (SQLite could),
		// all pages come through SQLite.
		if wal, ok := s.walPages(s.info.PageCount / 4); ok {
			return s.pagesDirect(ctx, wal, fn)
		}
	}
	return s.pagesSQL(ctx, fn)
}

// pagesSQL streams every page through SQLite (sqlite_dbpage).
func (s *Snapshot) pagesSQL(ctx context.Context, fn func(pgno uint32, page []byte) error) error {
	rows, err := s.conn.QueryContext(ctx, "SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno")
	if err != nil {
		return wrap(s.path, fmt.Errorf("read pages: %w", explain(err)))
	}
	defer rows.Close()
	var (
		next = uint32(1)
		pgno int64
		data sql.RawBytes // the driver's buffer: no copy here
	)
	for rows.Next() {
		if err := rows.Scan(&pgno, &data); err != nil {
			return wrap(s.path, fmt.Errorf("read page %d: %w", next, err))
		}
		if pgno != int64(next) {
			return wrap(s.path, fmt.Errorf("page %d follows page %d", pgno, next-1))
		}
		if next > s.info.PageCount {
			return wrap(s.path, fmt.Errorf("more than the %d pages of the transaction", s.info.PageCount))
		}
		if len(data) != s.info.PageSize {
			return wrap(s.path, fmt.Errorf("page %d has %d bytes, want page size %d", pgno, len(data), s.info.PageSize))
		}
		if err := s.emit(ctx, next, data, fn); err != nil {
			return err
		}
		next++
	}
	if err := rows.Err(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return wrap(s.path, fmt.Errorf("read pages: %w", ctxErr))
		}
		return wrap(s.path, fmt.Errorf("read page %d: %w", next, explain(err)))
	}
	if got := next - 1; got != s.info.PageCount {
		return wrap(s.path, fmt.Errorf("streamed %d pages, page_count in the same transaction is %d", got, s.info.PageCount))
	}
	return nil
}

// Close ends the transaction and closes the connection; safe to call twice.
// Ending a read transaction cannot lose data; an error here means the lock or
// the read mark may have been held until the connection closed.
func (s *Snapshot) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.conn != nil {
		if s.inTx {
			if _, err := s.conn.ExecContext(context.Background(), "COMMIT"); err != nil {
				errs = append(errs, fmt.Errorf("end transaction: %w", err))
			}
		}
		if err := s.conn.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, err)
	}
	// Last: SQLite's locks are gone now (see Open).
	if s.file != nil {
		s.file.Close() // read-only: nothing to lose
	}
	if err := errors.Join(errs...); err != nil {
		return wrap(s.path, err)
	}
	return nil
}

// wrap prefixes err with the package and the path.
func wrap(path string, err error) error {
	return fmt.Errorf("sqlite snapshot %s: %w", path, err)
}

// sqliteCode returns the extended result code of an error from the driver,
// or 0.
func sqliteCode(err error) int {
	var ce interface{ Code() int }
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return 0
}

// explain puts the driver's errors that have a plainer meaning into words,
// keeping the original in the chain.
func explain(err error) error {
	code := sqliteCode(err)
	var msg string
	switch {
	case code&0xff == codeNotADB:
		return &codeError{ErrNotDatabase, err}
	case code&0xff == codeBusy:
		msg = "database is locked longer than the busy timeout"
	case code == codeReadOnlyDirectory, code == codeReadOnlyCantInit:
		msg = "WAL database whose -shm file is missing and cannot be created read-only (directory not writable?)"
	case code == codeReadOnlyRecovery:
		msg = "WAL database needs recovery, which a read-only connection cannot run (open it once with write access)"
	case code == codeReadOnlyRollback:
		msg = "hot journal needs a rollback, which a read-only connection cannot do (open it once with write access)"
	case code&0xff == codeCantOpen:
		msg = "unable to open the database or its -wal/-shm file"
	default:
		return err
	}
	return &codeError{errors.New(msg), err}
}

// codeError shows a plain message followed by the driver's, and unwraps to
// both.
type codeError struct {
	msg   error
	cause error
}

func (e *codeError) Error() string {
	m, c := e.msg.Error(), e.cause.Error()
	if strings.HasPrefix(c, m) {
		return c // "file is not a database (26)"
	}
	return m + ": " + c
}

func (e *codeError) Unwrap() []error { return []error{e.msg, e.cause} }
