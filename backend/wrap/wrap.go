package wrap

import (
	"repo/backend"
	"repo/backend/limit"
	"repo/backend/retry"
)

// Options say which wrappers Wrap applies. The zero value applies none.
type Options struct {
	// Retry, when not nil, retries transient errors with these options.
	// Remote backends want it; local disks do not (their errors do not go
	// away by waiting).
	Retry *retry.Options
	// Connections caps the operations running at once; zero means no cap.
	// Callers usually pass be.Properties().Connections.
	Connections int
	// Upload and Download cap the bytes per second saved and loaded; zero
	// means no limit.
	Upload, Download int
}

// Wrap returns be with the wrappers o asks for, in the order the package
// documentation explains; with none, it returns be itself.
func Wrap(be backend.Backend, o Options) backend.Backend {
	if o.Upload > 0 || o.Download > 0 {
		var up, down limit.Limiter
		if o.Upload > 0 {
			up = limit.NewLimiter(o.Upload)
		}
		if o.Download > 0 {
			down = limit.NewLimiter(o.Download)
		}
		be = limit.NewRate(be, up, down)
	}
	if o.Connections > 0 {
		be = limit.NewConnections(be, o.Connections)
	}
	if o.Retry != nil {
		be = retry.New(be, *o.Retry)
	}
	return be
}
