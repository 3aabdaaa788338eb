// Package pack owns the stored form of blobs and the pack files that hold
// them: per-blob compression and sealing (Codec), building a pack in memory
// (Writer) and reading a pack's header back (ParseHeader, ReadHeader).
//
// It does no I/O except ReadHeader's ranged reads; uploading a finished
// pack, choosing when to finalize one and indexing its entries belong to
// the repository. Sealing is crypto.Sealer's: see package repo/crypto for
// the sealed form ("seal" below) and its overhead (40 bytes encrypted,
// 16 bytes plain).
//
// # Stored blob
//
// A blob's stored form is
//
//	seal(raw)          when its Compression is 0 (none), or
//	seal(zstd(raw))    when its Compression is 1 (zstd),
//
// where zstd(raw) is one zstd frame (RFC 8878) holding the frame content
// size and no checksum (the seal protects the bytes, and callers hash the
// plaintext against the blob id). Writers compress at the codec's level and
// keep the frame only when it is strictly shorter than raw; empty blobs,
// blobs over 64 MiB and blobs whose sampled byte entropy says they are
// random (see looksRandom) are not even tried. Readers accept any zstd data that
// decodes to exactly RawLength bytes, but refuse compressed blobs whose
// RawLength exceeds 64 MiB and stop as soon as the output would exceed
// RawLength, so a hostile blob cannot make them allocate more.
//
// # Pack file
//
//	offset 0:           blob_1 || blob_2 || … || blob_n     (stored forms, back to back)
//	offset H:           sealed header                        (L bytes)
//	offset H+L:         L as uint32, little endian           (4 bytes)
//	total size:         H + L + 4
//
// The header plaintext is
//
//	version (1 byte, = 1) || entry_1 || … || entry_n
//
// with each entry index.BlobSize = 46 bytes, little endian:
//
//	type        1 byte   1 = data, 2 = tree
//	id         32 bytes  the blob id (keyed or unkeyed BLAKE3-256 of raw)
//	offset      4 bytes  of the stored blob within the pack
//	length      4 bytes  of the stored blob, seal overhead included
//	raw length  4 bytes  of the plaintext, before compression
//	compression 1 byte   0 = none, 1 = zstd
//
// so L = 1 + 46·n + seal overhead (HeaderSize adds the 4 bytes of the
// length field). The pack id is the unkeyed BLAKE3-256 of the whole file,
// so a pack can be verified without the key; it is stored as
// data/<first two hex digits>/<64 hex digits>.
//
// Writers put blobs back to back in the order of their entries, starting at
// offset 0, and write at most MaxBlobs entries. Readers require
//
//   - 1 + overhead ≤ L ≤ min(size − 4, 16 MiB),
//   - the header to open with the repository's sealer, version 1, and a
//     whole number of entries, each of a known type and compression,
//   - entries in increasing offset order, not overlapping, each at least
//     the seal overhead long and ending at or before H.
//
// Readers tolerate gaps between blobs (a salvaged or hand-made pack may
// have them) but writers never leave any. A reader that knows the pack's
// size loads its last 64 KiB, reads L, and loads the rest of the header
// only if L + 4 exceeds that (ReadHeader; ParseHeader's *ShortTailError).
//
// # Errors
//
// Every error caused by the bytes themselves (ParseHeader's, apart from
// *ShortTailError, and Codec.Decode's) matches ErrDamaged; those of a seal
// that does not verify also match crypto.ErrAuth. Errors of ReadHeader name
// the pack; backend errors pass through unchanged (wrapped).
package pack
