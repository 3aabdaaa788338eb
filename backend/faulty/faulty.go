package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"repo/backend"
)

// Op is a set of backend operations; Fault.Op selects the ones a fault
// applies to.
type Op uint8

// The operations of backend.Backend that faults apply to.
const (
	Save Op = 1 << iota
	Load
	Stat
	List
	Remove
)

// String returns the operation's lowercase name.
func (o Op) String() string {
	switch o {
	case Save:
		return "save"
	case Load:
		return "load"
	case Stat:
		return "stat"
	case List:
		return "list"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("op(%#x)", uint8(o))
}

// Mode says how a fault strikes.
type Mode uint8

const (
	// Fail returns Err without calling the wrapped backend.
	Fail Mode = iota
	// FailMidway lets Bytes bytes through, then fails with Err. Save reads
	// Bytes bytes of its reader and stores nothing; Load calls fn with a
	// reader that yields Bytes bytes and then Err; List calls fn for Bytes
	// objects and then returns Err. On Stat and Remove it is Fail.
	FailMidway
	// FailAfter calls the wrapped backend and returns Err even when the
	// call succeeded, like a reply lost on the way back. On Load, fn has
	// run; on List, fn has seen every object.
	FailAfter
	// Drop makes Save and Remove report success without calling the
	// wrapped backend: a lost write or a lost removal. On other operations
	// it is Fail.
	Drop
	// Corrupt makes Load call fn with Mutate applied to the requested
	// range (e.g. truncated or with a byte flipped) instead of failing. On
	// other operations it is Fail.
	Corrupt
)

// ErrInjected is the error of a fault without its own Err. It is not
// permanent, so retry wrappers retry it.
var ErrInjected = errors.New("injected fault")

// Fault describes when and how calls fail. The zero value fails every call
// of every operation with ErrInjected.
type Fault struct {
	// Op is the set of operations the fault applies to; zero means all.
	Op Op
	// Type restricts the fault to objects of one type; zero means all.
	Type backend.FileType
	// Name restricts the fault to one object name; "" means all. A fault
	// with a Name never applies to List.
	Name string
	// Skip is how many matching calls go through before the fault fires.
	Skip int
	// Every makes the fault fire only on every Every-th matching call
	// after the skipped ones (the first, the 1+Every-th, ...): a flaky
	// backend. Zero and one mean on each.
	Every int
	// Times is how often the fault fires; zero means without end.
	Times int
	// Mode says how the fault strikes; the zero value is Fail.
	Mode Mode
	// Err is the error returned; nil means ErrInjected. The returned error
	// wraps it and names the operation and object.
	Err error
	// Bytes is how much FailMidway lets through (objects, for List).
	Bytes int64
	// Mutate changes the data Load returns in Corrupt mode; it may modify
	// its argument and return a slice of it.
	Mutate func([]byte) []byte
}

func (f *Fault) matches(op Op, h backend.Handle, list bool) bool {
	return (f.Op == 0 || f.Op&op != 0) &&
		(f.Type == 0 || f.Type == h.Type) &&
		(f.Name == "" || (!list && f.Name == h.Name))
}

func (f *Fault) err() error {
	if f.Err != nil {
		return f.Err
	}
	return ErrInjected
}

// fault is an injected Fault and how often it matched and fired.
type fault struct {
	Fault
	seen, fired int
}

// Backend is the fault-injecting wrapper. It is safe for concurrent use.
type Backend struct {
	backend.Backend

	mu sync.Mutex
	// faults in the order they were injected; each call fires at most the
	// first one that matches and is due.
	faults []*fault
	// calls counts the calls of each operation, faulty or not.
	calls map[Op]int
}

var _ backend.Backend = (*Backend)(nil)

// New returns be wrapped, with no faults yet.
func New(be backend.Backend) *Backend {
	return &Backend{Backend: be, calls: make(map[Op]int)}
}

// Unwrap returns the wrapped backend (see backend.As); its optional
// interfaces are not subject to faults.
func (b *Backend) Unwrap() backend.Backend { return b.Backend }

// Inject adds f; it applies to calls made from now on.
func (b *Backend) Inject(f Fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults = append(b.faults, &fault{Fault: f})
}

// Reset removes all faults and zeroes the call counts.
func (b *Backend) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults = nil
	b.calls = make(map[Op]int)
}

// Calls returns how many calls of the operations in op were made, including
// the ones that failed by a fault.
func (b *Backend) Calls(op Op) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for o, c := range b.calls {
		if o&op != 0 {
			n += c
		}
	}
	return n
}

// next counts the call and returns the fault that fires on it, or nil.
func (b *Backend) next(op Op, h backend.Handle, list bool) *Fault {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[op]++
	for _, f := range b.faults {
		if !f.matches(op, h, list) {
			continue
		}
		f.seen++
		due := f.seen - f.Skip // 1 for the first call after the skipped ones
		if due < 1 || (f.Every > 1 && (due-1)%f.Every != 0) || (f.Times > 0 && f.fired >= f.Times) {
			continue
		}
		f.fired++
		return &f.Fault
	}
	return nil
}

// Save applies the first due fault, if any, to the save of h.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	f := b.next(Save, h, false)
	if f == nil {
		return b.Backend.Save(ctx, h, rd)
	}
	switch f.Mode {
	case FailMidway:
		if err := rd.Rewind(); err != nil {
			return fmt.Errorf("save %v: %w", h, err)
		}
		if _, err := io.CopyN(io.Discard, rd, f.Bytes); err != nil && err != io.EOF {
			return fmt.Errorf("save %v: read: %w", h, err)
		}
	case FailAfter:
		if err := b.Backend.Save(ctx, h, rd); err != nil {
			return err
		}
	case Drop:
		return nil
	}
	return fmt.Errorf("save %v: %w", h, f.err())
}

// Load applies the first due fault, if any, to the load of h.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	f := b.next(Load, h, false)
	if f == nil {
		return b.Backend.Load(ctx, h, length, offset, fn)
	}
	switch f.Mode {
	case FailMidway:
		return b.Backend.Load(ctx, h, length, offset, func(rd io.Reader) error {
			return fn(io.MultiReader(io.LimitReader(rd, f.Bytes), errReader{fmt.Errorf("load %v: %w", h, f.err())}))
		})
	case FailAfter:
		if err := b.Backend.Load(ctx, h, length, offset, fn); err != nil {
			return err
		}
	case Corrupt:
		return b.Backend.Load(ctx, h, length, offset, func(rd io.Reader) error {
			data, err := io.ReadAll(rd)
			if err != nil {
				return fn(io.MultiReader(bytes.NewReader(data), errReader{err}))
			}
			if f.Mutate != nil {
				data = f.Mutate(data)
			}
			return fn(bytes.NewReader(data))
		})
	}
	return fmt.Errorf("load %v: %w", h, f.err())
}

// errReader fails every Read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// Stat applies the first due fault, if any, to the stat of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	f := b.next(Stat, h, false)
	if f == nil {
		return b.Backend.Stat(ctx, h)
	}
	if f.Mode == FailAfter {
		if _, err := b.Backend.Stat(ctx, h); err != nil {
			return backend.FileInfo{}, err
		}
	}
	return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, f.err())
}

// List applies the first due fault, if any, to the listing of t.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	f := b.next(List, backend.Handle{Type: t}, true)
	if f == nil {
		return b.Backend.List(ctx, t, fn)
	}
	errFault := fmt.Errorf("list %v: %w", t, f.err())
	switch f.Mode {
	case FailMidway:
		n := int64(0)
		err := b.Backend.List(ctx, t, func(fi backend.FileInfo) error {
			if n >= f.Bytes {
				return errFault
			}
			n++
			return fn(fi)
		})
		if err != nil {
			return err
		}
	case FailAfter:
		if err := b.Backend.List(ctx, t, fn); err != nil {
			return err
		}
	}
	return errFault
}

// Remove applies the first due fault, if any, to the removal of h.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	f := b.next(Remove, h, false)
	if f == nil {
		return b.Backend.Remove(ctx, h)
	}
	switch f.Mode {
	case FailAfter:
		if err := b.Backend.Remove(ctx, h); err != nil {
			return err
		}
	case Drop:
		return nil
	}
	return fmt.Errorf("remove %v: %w", h, f.err())
}
