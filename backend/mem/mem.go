package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"repo/backend"
)

var _ backend.Backend = (*Backend)(nil)

// Backend keeps objects in a map. It is safe for concurrent use.
type Backend struct {
	mu sync.Mutex
	// objects maps a valid handle to its content. A stored slice is never
	// modified or handed out: Save stores a fresh copy and Load copies out.
	objects map[backend.Handle][]byte
}

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{objects: make(map[backend.Handle][]byte)}
}

// Location returns "mem:".
func (b *Backend) Location() string { return "mem:" }

// Properties: Save never replaces, and memory serves several callers well.
func (b *Backend) Properties() backend.Properties {
	return backend.Properties{ExclusiveCreate: true, Connections: 4}
}

// step is how much Save reads between two checks of ctx.
const step = 1 << 20

// Save reads all of rd into a new buffer and stores it under h unless h
// exists.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("save: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	if err := rd.Rewind(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	want := rd.Length()
	if want < 0 {
		return fmt.Errorf("save %v: reader has negative length %d", h, want)
	}
	// One byte more than announced, so that a reader yielding too much is
	// noticed.
	buf := make([]byte, 0, want+1)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("save %v: %w", h, err)
		}
		n, err := io.ReadFull(rd, buf[len(buf):min(len(buf)+step, cap(buf))])
		buf = buf[:len(buf)+n]
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("save %v: read: %w", h, err)
		}
		if len(buf) == cap(buf) {
			break
		}
	}
	if int64(len(buf)) != want {
		return fmt.Errorf("save %v: reader yielded %d bytes, want %d", h, len(buf), want)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objects[h]; ok {
		return fmt.Errorf("save %v: %w", h, backend.ErrExists)
	}
	b.objects[h] = buf[:len(buf):len(buf)]
	return nil
}

// Load copies the requested range of h and calls fn with a reader over the
// copy.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("load: %w", err))
	}
	if length < 0 || offset < 0 {
		return backend.Permanent(fmt.Errorf("load %v: invalid range: length %d, offset %d", h, length, offset))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("load %v: %w", h, err)
	}

	b.mu.Lock()
	data, ok := b.objects[h]
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("load %v: %w", h, backend.ErrNotExist)
	}
	data = data[min(offset, int64(len(data))):]
	if length > 0 && length < len(data) {
		data = data[:length]
	}
	return fn(backend.ContextReader(ctx, bytes.NewReader(bytes.Clone(data))))
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("stat: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	b.mu.Lock()
	data, ok := b.objects[h]
	b.mu.Unlock()
	if !ok {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, backend.ErrNotExist)
	}
	return backend.FileInfo{Name: h.Name, Size: int64(len(data))}, nil
}

// List calls fn for each object of type t. It works on a snapshot of the
// names taken at the start, so fn may call other methods of b; objects
// removed meanwhile are skipped.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := t.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("list: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %v: %w", t, err)
	}

	b.mu.Lock()
	var found []backend.Handle
	for h := range b.objects {
		if h.Type == t {
			found = append(found, h)
		}
	}
	b.mu.Unlock()

	for _, h := range found {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %v: %w", t, err)
		}
		b.mu.Lock()
		data, ok := b.objects[h]
		b.mu.Unlock()
		if !ok {
			continue
		}
		if err := fn(backend.FileInfo{Name: h.Name, Size: int64(len(data))}); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("remove: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objects[h]; !ok {
		return fmt.Errorf("remove %v: %w", h, backend.ErrNotExist)
	}
	delete(b.objects, h)
	return nil
}

// Close does nothing: there is nothing to release, and tests may keep
// inspecting a backend after the code under test closed it.
func (b *Backend) Close() error { return nil }
