package limit

import (
	"context"
	"fmt"
	"io"

	"repo/backend"
)

// Connections is the wrapper that runs at most n operations of the wrapped
// backend at once; see the package documentation for what counts. It is
// safe for concurrent use.
type Connections struct {
	backend.Backend
	// sem holds one token per operation in progress; its capacity is the
	// limit.
	sem chan struct{}
}

var _ backend.Backend = (*Connections)(nil)

// NewConnections returns be wrapped so that at most n operations (at least
// one) run at once.
func NewConnections(be backend.Backend, n int) *Connections {
	return &Connections{Backend: be, sem: make(chan struct{}, max(n, 1))}
}

// Unwrap returns the wrapped backend (see backend.As).
func (c *Connections) Unwrap() backend.Backend { return c.Backend }

// acquire waits for a slot for an operation on an object of type t and
// returns the function that frees it. Lock files need no slot.
func (c *Connections) acquire(ctx context.Context, t backend.FileType) (release func(), err error) {
	if t == backend.LockFile {
		return func() {}, nil
	}
	select {
	case c.sem <- struct{}{}:
		return func() { <-c.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Properties reports the wrapped backend's, with Connections lowered to the
// limit.
func (c *Connections) Properties() backend.Properties {
	p := c.Backend.Properties()
	p.Connections = min(p.Connections, cap(c.sem))
	return p
}

// Save saves h once a slot is free.
func (c *Connections) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	release, err := c.acquire(ctx, h.Type)
	if err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	defer release()
	return c.Backend.Save(ctx, h, rd)
}

// Load loads h once a slot is free, and holds the slot while fn runs.
func (c *Connections) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	release, err := c.acquire(ctx, h.Type)
	if err != nil {
		return fmt.Errorf("load %v: %w", h, err)
	}
	defer release()
	return c.Backend.Load(ctx, h, length, offset, fn)
}

// Stat stats h once a slot is free.
func (c *Connections) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	release, err := c.acquire(ctx, h.Type)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	defer release()
	return c.Backend.Stat(ctx, h)
}

// Remove removes h once a slot is free.
func (c *Connections) Remove(ctx context.Context, h backend.Handle) error {
	release, err := c.acquire(ctx, h.Type)
	if err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	defer release()
	return c.Backend.Remove(ctx, h)
}
