// Package crypto owns a repository's key material and the sealing of every
// stored object but key files: the encryption (or, in repositories made
// with --insecure-no-password, the checksum) that makes damage and tampering
// detectable, and the password-wrapped key files that hold the master key.
//
// It knows nothing of what it seals; callers name objects in their errors.
//
// # Sealed objects (Sealer)
//
// Encrypted repositories (NewAEAD) store each object as
//
//	nonce (24 bytes) || ciphertext (len(plaintext) bytes) || tag (16 bytes)
//
// with XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha, as implemented by
// golang.org/x/crypto/chacha20poly1305.NewX) under Key.Encrypt, a fresh
// random nonce per object and no additional data. Overhead: 40 bytes.
//
// Unencrypted repositories (NewPlain) store
//
//	plaintext || BLAKE3-256(plaintext)[0:16]
//
// where BLAKE3 is unkeyed. Overhead: 16 bytes. This detects damage, not
// tampering: anyone can recompute the checksum.
//
// Either way Open fails with an error matching ErrAuth (errors.Is) when the
// object is shorter than the overhead or does not verify; nothing of a
// failed object is returned.
//
// # Key files (KeyFile)
//
// A key file is the JSON encoding of KeyFile (not sealed; []byte fields are
// standard base64 with padding, as encoding/json writes them):
//
//	{
//	  "version": 1,
//	  "created": "2025-01-02T03:04:05.123456789Z",   // RFC 3339, UTC
//	  "host": "…", "username": "…",                  // informative, may be absent
//	  "kdf": "argon2id",
//	  "params": {"time": 3, "memory_kib": 65536, "threads": 2},
//	  "salt": "<32 bytes>",
//	  "data": "<sealed key>"
//	}
//
// The wrapping key is argon2id (RFC 9106, version 0x13) of the password's
// UTF-8 bytes with the salt, params.time passes, params.memory_kib KiB,
// params.threads lanes, 32 bytes of output, no secret and no associated
// data. "data" is that key's AEAD seal (the format above) of the JSON
//
//	{"encrypt": "<32 bytes>", "blob_id": "<32 bytes>"}
//
// again with base64 []byte fields: the AEAD key of the repository and the
// key of its keyed BLAKE3 blob ids.
//
// Readers accept only version 1 and kdf "argon2id", a 32-byte salt, data of
// at least 40 bytes, and parameters with 1 ≤ time ≤ 100, 1 ≤ threads ≤ 255
// and 8·threads ≤ memory_kib ≤ 4 GiB (4194304), so that a hostile key file
// cannot make a client allocate or compute without bound. A wrong password
// and a damaged "data" field both give ErrWrongPassword: the AEAD cannot
// tell them apart.
//
// Caveat: Host, Username and Created are not authenticated; they describe
// the key, they do not prove anything.
package crypto
