package crypto

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// ErrAuth: a sealed object failed authentication (or its checksum, when
// unencrypted): it is damaged or was sealed with another key.
var ErrAuth = errors.New("authentication failed")

// ErrWrongPassword: the password opens none of the key files offered.
var ErrWrongPassword = errors.New("wrong password")

// Key is a repository's master key material, created once at init and never
// changed; passwords only wrap it.
type Key struct {
	Encrypt [32]byte `json:"encrypt"` // AEAD key
	BlobID  [32]byte `json:"blob_id"` // key of the keyed BLAKE3 blob ids
}

// NewRandomKey returns fresh key material from crypto/rand.
func NewRandomKey() (*Key, error) {
	// crypto/rand.Read never returns an error (it aborts the program
	// instead), so neither does this; the error result is for future
	// sources of key material.
	k := new(Key)
	rand.Read(k.Encrypt[:])
	rand.Read(k.BlobID[:])
	return k, nil
}

// Sealer seals and opens stored objects. Safe for concurrent use.
type Sealer interface {
	// Seal appends the sealed form of plaintext to dst and returns it.
	Seal(dst, plaintext []byte) []byte
	// Open appends the plaintext of sealed to dst; ErrAuth when it does not
	// verify. dst and sealed must not overlap.
	Open(dst, sealed []byte) ([]byte, error)
	// Overhead is len(sealed) - len(plaintext).
	Overhead() int
}

// Sizes of the AEAD sealed form.
const (
	nonceSize = chacha20poly1305.NonceSizeX // 24
	tagSize   = chacha20poly1305.Overhead   // 16
	plainSum  = 16                          // BLAKE3 prefix of the plain sealer
)

// aeadSealer is the XChaCha20-Poly1305 sealer. cipher.AEAD values of
// x/crypto are stateless after construction, so one is shared by all
// goroutines.
type aeadSealer struct{ aead cipher.AEAD }

// NewAEAD returns the sealer of encrypted repositories:
// XChaCha20-Poly1305, stored as nonce(24) || ciphertext || tag(16). Random
// 24-byte nonces make collisions negligible however many blobs a repository
// holds, which a 12-byte-nonce AEAD cannot promise past 2^32 objects.
func NewAEAD(k *Key) Sealer {
	a, err := chacha20poly1305.NewX(k.Encrypt[:])
	if err != nil {
		// Only possible with a wrong key length (impossible with [32]byte)
		// or in FIPS-140-only mode, where XChaCha20 is not allowed at all.
		panic(fmt.Sprintf("crypto: create XChaCha20-Poly1305: %v", err))
	}
	return &aeadSealer{aead: a}
}

func (s *aeadSealer) Seal(dst, plaintext []byte) []byte {
	n := len(dst)
	dst = grow(dst, nonceSize+len(plaintext)+tagSize)
	nonce := dst[n : n+nonceSize]
	rand.Read(nonce) // never fails: it aborts the program instead
	// The output starts right after the nonce, so it does not overlap it.
	return s.aead.Seal(dst[:n+nonceSize], nonce, plaintext, nil)
}

func (s *aeadSealer) Open(dst, sealed []byte) ([]byte, error) {
	if len(sealed) < nonceSize+tagSize {
		return dst, fmt.Errorf("%w: sealed object of %d bytes is shorter than nonce and tag", ErrAuth, len(sealed))
	}
	out, err := s.aead.Open(dst, sealed[:nonceSize], sealed[nonceSize:], nil)
	if err != nil {
		return dst, ErrAuth
	}
	return out, nil
}

func (s *aeadSealer) Overhead() int { return nonceSize + tagSize }

// plainSealer appends a truncated unkeyed BLAKE3 checksum: it detects
// damage, not tampering (anyone can recompute it).
type plainSealer struct{}

// NewPlain returns the sealer of unencrypted repositories: the plaintext
// followed by the first 16 bytes of its unkeyed BLAKE3, so damage is still
// detected.
func NewPlain() Sealer { return plainSealer{} }

func (plainSealer) Seal(dst, plaintext []byte) []byte {
	sum := blake3.Sum256(plaintext)
	dst = grow(dst, len(plaintext)+plainSum)
	dst = append(dst, plaintext...)
	return append(dst, sum[:plainSum]...)
}

func (plainSealer) Open(dst, sealed []byte) ([]byte, error) {
	if len(sealed) < plainSum {
		return dst, fmt.Errorf("%w: sealed object of %d bytes is shorter than its checksum", ErrAuth, len(sealed))
	}
	body := sealed[:len(sealed)-plainSum]
	sum := blake3.Sum256(body)
	if subtle.ConstantTimeCompare(sum[:plainSum], sealed[len(body):]) != 1 {
		return dst, ErrAuth
	}
	return append(dst, body...), nil
}

func (plainSealer) Overhead() int { return plainSum }

// grow makes room for n more bytes in dst, so that appending them does not
// reallocate (and does not copy dst twice).
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	out := make([]byte, len(dst), len(dst)+n)
	copy(out, dst)
	return out
}

// KDFParams are the argon2id parameters stored in a key file.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF is used by init and key add: 64 MiB, 3 passes, 2 lanes
// (RFC 9106's second recommended setting), about 0.2 s here.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 2}

// Bounds of KDFParams accepted from a key file. The upper bounds keep a
// hostile or corrupt key file from making us allocate or compute without
// limit; the lower ones are argon2's own (RFC 9106: t ≥ 1, m ≥ 8·p KiB).
const (
	maxKDFTime      = 100
	maxKDFMemoryKiB = 4 << 20 // 4 GiB
)

// check reports parameters outside the accepted bounds.
func (p KDFParams) check() error {
	switch {
	case p.Time < 1 || p.Time > maxKDFTime:
		return fmt.Errorf("argon2id time %d outside 1..%d", p.Time, maxKDFTime)
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads %d outside 1..255", p.Threads)
	case p.MemoryKiB > maxKDFMemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB above the limit of %d KiB", p.MemoryKiB, maxKDFMemoryKiB)
	case p.MemoryKiB < 8*uint32(p.Threads):
		return fmt.Errorf("argon2id memory %d KiB below 8 KiB per thread (%d threads)", p.MemoryKiB, p.Threads)
	}
	return nil
}

// KeyFile is a stored key: the master Key sealed with a key derived from a
// password by argon2id. It is JSON and not itself sealed, since it is what
// unlocks everything else.
type KeyFile struct {
	Version  int       `json:"version"` // 1
	Created  time.Time `json:"created"`
	Host     string    `json:"host,omitempty"`
	Username string    `json:"username,omitempty"`
	KDF      string    `json:"kdf"` // "argon2id"
	Params   KDFParams `json:"params"`
	Salt     []byte    `json:"salt"` // 32 random bytes
	Data     []byte    `json:"data"` // NewAEAD(derived).Seal(JSON of Key)
}

const (
	keyFileVersion = 1
	kdfArgon2id    = "argon2id"
	saltSize       = 32
)

// keyJSON is the sealed plaintext of KeyFile.Data. Key's own JSON form would
// spell each [32]byte as an array of 32 numbers; this one uses base64.
type keyJSON struct {
	Encrypt []byte `json:"encrypt"`
	BlobID  []byte `json:"blob_id"`
}

// NewKeyFile wraps k with password using params (zero params: DefaultKDF).
// Host and Username are filled from the environment when available; callers
// may change them before storing the file, as they are not authenticated.
func NewKeyFile(k *Key, password string, params KDFParams) (*KeyFile, error) {
	if params == (KDFParams{}) {
		params = DefaultKDF
	}
	if err := params.check(); err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	kf := &KeyFile{
		Version: keyFileVersion,
		Created: time.Now().UTC(),
		KDF:     kdfArgon2id,
		Params:  params,
		Salt:    make([]byte, saltSize),
	}
	if h, err := os.Hostname(); err == nil {
		kf.Host = h
	}
	if u, err := user.Current(); err == nil {
		kf.Username = u.Username
	}
	rand.Read(kf.Salt)
	plain, err := json.Marshal(keyJSON{Encrypt: k.Encrypt[:], BlobID: k.BlobID[:]})
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	kf.Data = kf.wrapper(password).Seal(nil, plain)
	clear(plain)
	return kf, nil
}

// wrapper returns the AEAD keyed with the key derived from password.
func (kf *KeyFile) wrapper(password string) Sealer {
	p := kf.Params
	derived := argon2.IDKey([]byte(password), kf.Salt, p.Time, p.MemoryKiB, p.Threads, 32)
	var k Key
	copy(k.Encrypt[:], derived)
	clear(derived)
	s := NewAEAD(&k)
	clear(k.Encrypt[:])
	return s
}

// Open unwraps the master key; ErrWrongPassword when the password is wrong.
// A damaged Data field is indistinguishable from a wrong password.
func (kf *KeyFile) Open(password string) (*Key, error) {
	// A KeyFile built in memory has not been through ParseKeyFile.
	if err := kf.validate(); err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	plain, err := kf.wrapper(password).Open(nil, kf.Data)
	if err != nil {
		return nil, ErrWrongPassword
	}
	defer clear(plain)
	var kj keyJSON
	if err := json.Unmarshal(plain, &kj); err != nil {
		return nil, fmt.Errorf("decode key: %w", err)
	}
	if len(kj.Encrypt) != 32 || len(kj.BlobID) != 32 {
		return nil, fmt.Errorf("decode key: key lengths %d and %d, want 32", len(kj.Encrypt), len(kj.BlobID))
	}
	k := new(Key)
	copy(k.Encrypt[:], kj.Encrypt)
	copy(k.BlobID[:], kj.BlobID)
	clear(kj.Encrypt)
	clear(kj.BlobID)
	return k, nil
}

// validate checks everything ParseKeyFile promises about a key file.
func (kf *KeyFile) validate() error {
	if kf.Version != keyFileVersion {
		return fmt.Errorf("unsupported key file version %d", kf.Version)
	}
	if kf.KDF != kdfArgon2id {
		return fmt.Errorf("unsupported kdf %q", kf.KDF)
	}
	if err := kf.Params.check(); err != nil {
		return err
	}
	if len(kf.Salt) != saltSize {
		return fmt.Errorf("salt of %d bytes, want %d", len(kf.Salt), saltSize)
	}
	if len(kf.Data) < nonceSize+tagSize {
		return fmt.Errorf("sealed key of %d bytes is too short", len(kf.Data))
	}
	return nil
}

// ParseKeyFile decodes a stored key file, rejecting unknown versions or KDFs
// and parameters outside sane bounds (so a hostile file cannot make us
// allocate terabytes).
func ParseKeyFile(b []byte) (*KeyFile, error) {
	kf := new(KeyFile)
	if err := json.Unmarshal(b, kf); err != nil {
		return nil, fmt.Errorf("parse key file: %w", err)
	}
	if err := kf.validate(); err != nil {
		return nil, fmt.Errorf("parse key file: %w", err)
	}
	return kf, nil
}
