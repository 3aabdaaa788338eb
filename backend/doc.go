// Package backend defines where a repository's objects are stored: the
// Backend interface, the Handle and FileType that name an object, the
// Properties a backend guarantees, and the sentinel errors callers branch
// on. It knows nothing about blobs, packs or keys.
//
// Implementations live in sub-packages (backend/local, backend/mem, and
// later backend/sftp, backend/s3); backend/location turns a repository
// string such as "local:/srv/repo" into one of them, and backend/backendtest
// is the conformance suite every implementation runs.
//
// The contract in short (Backend's doc comment is the reference):
//   - Objects are immutable: Save writes a whole object atomically and
//     durably, never a visible prefix, and with Properties.ExclusiveCreate
//     refuses to replace one (ErrExists).
//   - Missing objects give errors wrapping ErrNotExist; errors a retry
//     cannot fix are permanent (IsPermanent), everything else may be
//     retried by a wrapper, which is why Save takes a RewindReader and
//     Load's callback must be idempotent.
//   - A cancelled context stops every call promptly with an error wrapping
//     ctx.Err() and leaves no partial object behind.
//   - Error messages name the operation and object ("load data/3f/3fa2…:
//     does not exist").
//
// LoadAll and ReadAt are the two ways most callers read: a whole object, or
// an exact byte range where a short object is damage (io.ErrUnexpectedEOF).
package backend
