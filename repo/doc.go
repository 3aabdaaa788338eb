// Package repo is the repository: its config and keys, the blob store
// (Saver for writing, LoadBlob for reading), trees and snapshots, and the
// backup, restore and check operations built on them.
//
// Invariants the package keeps (see docs/format.md):
//   - Write ordering: a pack is saved before any index file lists it, and
//     an index file before any snapshot that needs its blobs. A crash at any
//     instant leaves at most packs no index lists, never a dangling
//     reference.
//   - Everything read is verified: objects against the hash that names
//     them, blobs against their id after decryption and decompression.
//     Damage is an error, never data.
//   - The local index cache is only a cache: it is synced from the index
//     files, and a lost or corrupt cache is rebuilt.
//
// The package never prints or exits; it reports through return values,
// errors and callbacks, and long operations through a Progress that a
// display polls (progress.go).
package repo
