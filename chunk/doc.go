// Package chunk cuts byte streams into content-defined chunks and names
// data by its BLAKE3-256 hash.
//
// It owns:
//   - ID, the 32-byte name of every blob, pack and stored object, with its
//     hex text form (JSON-friendly);
//   - Hash (unkeyed BLAKE3-256: pack and object ids anyone can verify) and
//     Hasher (blob ids, keyed with a per-repository secret in encrypted
//     repositories so that ids reveal nothing about content);
//   - Chunker, a thin wrapper around github.com/restic/chunker (Rabin
//     fingerprints over a 64-byte window) configured by a size Class.
//
// It does no I/O beyond the reader it is given.
//
// # Invariants and caveats
//
// Chunk boundaries and ids are part of the repository format: the same
// input, polynomial and class must cut the same chunks forever, or new
// snapshots stop deduplicating against old ones. Golden vectors in the
// tests pin both; a change that makes them fail is a format change.
//
// github.com/restic/chunker is pinned at v0.4.0. Its Reset and
// ResetWithBoundaries put the split mask back to 20 average bits, so
// Chunker.Reset applies the class's AverageBits after every reset; the
// golden tests fail if that is lost. The mean chunk size is about
// MinSize + 2^AverageBits (not 2^AverageBits), because no cut is looked for
// before MinSize.
//
// A Chunker is not safe for concurrent use and holds a 512 KiB read buffer:
// keep one per goroutine and Reset it per stream. A Hasher is safe for
// concurrent use and does not allocate per Sum (keyed states are pooled).
package chunk
