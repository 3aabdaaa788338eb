package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// FileType names the kind of object a Handle refers to. Each type lives in
// its own namespace (directory or key prefix) on the backend.
type FileType uint8

// The object types of a repository. The zero value is invalid so that a
// forgotten field is caught by Handle.Valid.
const (
	ConfigFile FileType = iota + 1
	KeyFile
	PackFile
	IndexFile
	SnapshotFile
	LockFile
	// QuarantineFile is a damaged pack that check --repair moved out of
	// data/ and keeps for inspection; nothing reads it as part of the
	// repository. Names are like pack names but not sharded.
	QuarantineFile
	// PlanFile is the plan of a multi-step maintenance operation (prune,
	// repair, ...): written before its first change and removed after
	// its last. It records intent only; nothing depends on it for
	// correctness.
	PlanFile
)

// lastFileType is the highest valid FileType.
const lastFileType = PlanFile

// String returns the directory name used for the type ("config" for the
// single config object).
func (t FileType) String() string {
	switch t {
	case ConfigFile:
		return "config"
	case KeyFile:
		return "keys"
	case PackFile:
		return "data"
	case IndexFile:
		return "index"
	case SnapshotFile:
		return "snapshots"
	case LockFile:
		return "locks"
	case QuarantineFile:
		return "quarantine"
	case PlanFile:
		return "plans"
	}
	return fmt.Sprintf("filetype(%d)", uint8(t))
}

// Handle names one object: its type and, for every type but ConfigFile, its
// name (a lowercase hex id in a repository).
type Handle struct {
	Type FileType
	Name string
}

// String returns the object's path inside the repository, e.g.
// "data/3f/3fa2…", "quarantine/3fa2…" or "config"; it is what error
// messages show.
func (h Handle) String() string {
	switch {
	case h.Type == ConfigFile:
		return "config"
	case h.Type == PackFile && len(h.Name) >= 2:
		return "data/" + h.Name[:2] + "/" + h.Name
	}
	return h.Type.String() + "/" + h.Name
}

// Valid reports whether h can name an object: a known type, a name for all
// types but ConfigFile, and a name of only [0-9a-z] so that it is safe as a
// file name and an object key on every backend.
func (h Handle) Valid() error {
	if h.Type.Valid() != nil {
		return fmt.Errorf("invalid handle %v: unknown type", h)
	}
	if h.Type == ConfigFile {
		if h.Name != "" {
			return fmt.Errorf("invalid handle %v: config has no name", h)
		}
		return nil
	}
	if h.Name == "" {
		return fmt.Errorf("invalid handle %v: empty name", h)
	}
	if h.Type == PackFile && len(h.Name) < 2 {
		return fmt.Errorf("invalid handle %v: pack name too short", h)
	}
	for _, c := range h.Name {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return fmt.Errorf("invalid handle %v: name must be [0-9a-z]", h)
		}
	}
	return nil
}

// FileInfo describes a stored object.
type FileInfo struct {
	Name string // the Handle's name; "" for the config
	Size int64
}

// Properties describes what a backend guarantees beyond the interface.
type Properties struct {
	// ExclusiveCreate is true when Save fails with ErrExists instead of
	// replacing an object that already exists. When false, Save may
	// replace; the repository only relies on it for config creation and
	// locks, and falls back to check-then-write with a re-check.
	ExclusiveCreate bool
	// Connections is how many operations the backend serves well at once;
	// callers size their worker pools with it. At least 1.
	Connections int
	// ConsistentListing is true when a List that starts after a Save
	// returned always shows the object (read-after-write consistent
	// listings, e.g. a local file system). The lock protocol then needs no
	// settle wait (docs/locks.md); when false, or unknown, it waits.
	ConsistentListing bool
}

// Backend stores a repository's objects. Implementations must be safe for
// concurrent use.
//
// Contract, checked by backendtest for every implementation:
//   - An object that does not exist is reported by an error for which
//     errors.Is(err, ErrNotExist) is true (Load, Stat, Remove).
//   - Errors that retrying cannot fix (not found, exists, access denied,
//     invalid handle, bad credentials) are permanent: IsPermanent reports
//     true. Every other error may be transient and a retry wrapper may
//     retry the call.
//   - Every method returns promptly with ctx.Err() (possibly wrapped) once
//     ctx is cancelled, and leaves no partial object visible.
type Backend interface {
	// Location returns the repository location as the user gave it,
	// without secrets; it is shown in messages.
	Location() string

	// Properties describes the backend's guarantees.
	Properties() Properties

	// Save stores the whole content of rd under h, atomically: readers see
	// either no object or the complete one, never a prefix, also after a
	// crash. When h exists already it returns ErrExists if
	// Properties().ExclusiveCreate, and may replace it otherwise. Save
	// calls rd.Rewind before reading, so a retry wrapper may call it again
	// with the same rd. The object is durable when Save returns nil.
	Save(ctx context.Context, h Handle, rd RewindReader) error

	// Load calls fn with a reader for length bytes of h starting at offset;
	// length 0 means to the end. The reader may yield fewer bytes when the
	// object is shorter: callers use io.ReadFull and treat a short read as
	// damage. fn may be called more than once (by a retry wrapper), so it
	// must be idempotent; the reader is only valid during fn. Load returns
	// fn's error unchanged, so callers can branch on their own errors.
	Load(ctx context.Context, h Handle, length int, offset int64, fn func(rd io.Reader) error) error

	// Stat returns the size of h.
	Stat(ctx context.Context, h Handle) (FileInfo, error)

	// List calls fn for every object of type t, in no particular order;
	// temporary objects of unfinished Saves are never listed. It stops and
	// returns fn's error if fn fails. For ConfigFile it lists the config
	// (Name "") when it exists.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error

	// Remove deletes h; removing a missing object returns ErrNotExist.
	Remove(ctx context.Context, h Handle) error

	// Close releases connections; the backend is unusable afterwards.
	Close() error
}

// Unwrapper is implemented by wrappers (retry, connection and rate limits,
// fault injection) to give access to the backend they wrap, so that the
// optional interfaces of the innermost backend stay reachable through As.
type Unwrapper interface {
	Unwrap() Backend
}

// TempCleaner is an optional interface of backends whose interrupted Saves
// can leave temporary objects behind that List does not show (local: the
// ".tmp-*" files of a killed process).
type TempCleaner interface {
	// RemoveTemp removes the temporary objects last modified more than
	// olderThan ago and returns how many it removed and their total
	// size. A Save in progress keeps its temporary object fresh, so an
	// age of an hour or more never removes one that is still in use.
	RemoveTemp(ctx context.Context, olderThan time.Duration) (n int, bytes int64, err error)
}

// As returns the first backend in the chain be, be.Unwrap(), ... that
// implements T (an optional interface such as TempCleaner), and whether
// there was one.
func As[T any](be Backend) (T, bool) {
	for be != nil {
		if t, ok := be.(T); ok {
			return t, true
		}
		u, ok := be.(Unwrapper)
		if !ok {
			break
		}
		be = u.Unwrap()
	}
	var zero T
	return zero, false
}

// Sentinel errors; test with errors.Is.
var (
	// ErrNotExist: the object, or the repository location, does not exist.
	ErrNotExist = errors.New("does not exist")
	// ErrExists: Save on a backend with ExclusiveCreate found h present.
	ErrExists = errors.New("already exists")
)

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that IsPermanent reports true; nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether retrying the operation that returned err is
// pointless: a Permanent error, ErrNotExist, ErrExists, or cancellation.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) ||
		errors.Is(err, ErrNotExist) || errors.Is(err, ErrExists) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
