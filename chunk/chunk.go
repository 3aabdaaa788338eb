package chunk

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/restic/chunker"
	"github.com/zeebo/blake3"
)

// ID is a BLAKE3-256 hash: the name of a blob, a pack or any stored object.
type ID [32]byte

// String returns the lowercase hex form (64 characters).
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex characters, for messages.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// Compare orders ids bytewise (for slices.SortFunc).
func (id ID) Compare(other ID) int { return bytes.Compare(id[:], other[:]) }

// IsNull reports whether id is all zeros (the zero value, never a real hash).
func (id ID) IsNull() bool { return id == ID{} }

// MarshalText / UnmarshalText make IDs hex strings in JSON.
func (id ID) MarshalText() ([]byte, error) {
	b := make([]byte, hex.EncodedLen(len(id)))
	hex.Encode(b, id[:])
	return b, nil
}

// UnmarshalText parses the 64-character hex form; on error id is unchanged.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := parseID(b)
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseID parses a 64-character hex id.
func ParseID(s string) (ID, error) { return parseID([]byte(s)) }

func parseID(b []byte) (ID, error) {
	var id ID
	if len(b) != hex.EncodedLen(len(id)) {
		return ID{}, fmt.Errorf("parse id %q: want %d hex characters, got %d", truncate(b), hex.EncodedLen(len(id)), len(b))
	}
	if _, err := hex.Decode(id[:], b); err != nil {
		return ID{}, fmt.Errorf("parse id %q: %w", truncate(b), err)
	}
	return id, nil
}

// truncate keeps error messages short when a caller passes a whole file.
func truncate(b []byte) string {
	const max = 80
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// Hash returns the unkeyed BLAKE3-256 of data: the id of packs and of the
// unpacked objects (index files, snapshots, locks), which anyone can verify
// without the key.
func Hash(data []byte) ID { return blake3.Sum256(data) }

// Hasher computes blob ids: BLAKE3-256 keyed with a 32-byte repository
// secret, or unkeyed when the key is nil (unencrypted repositories). Safe for
// concurrent use.
//
// A keyed BLAKE3 state is about 9 KiB, so Sum borrows one from a pool and
// resets it (Reset keeps the key) instead of allocating per call.
type Hasher struct {
	keyed bool
	pool  sync.Pool // of *blake3.Hasher, all keyed with the same key; unused when !keyed
}

// KeySize is the length of a Hasher key.
const KeySize = 32

// NewHasher returns a Hasher; key must be nil or KeySize bytes. Any other
// length is a programming error (the key comes from the decrypted master
// key, whose size is fixed) and panics. The key is copied.
func NewHasher(key []byte) *Hasher {
	if key == nil {
		return &Hasher{}
	}
	if len(key) != KeySize {
		panic(fmt.Sprintf("chunk: NewHasher: key must be nil or %d bytes, got %d", KeySize, len(key)))
	}
	k := make([]byte, KeySize)
	copy(k, key)
	h := &Hasher{keyed: true}
	h.pool.New = func() any {
		bh, err := blake3.NewKeyed(k)
		if err != nil { // unreachable: the length was checked above
			panic(fmt.Sprintf("chunk: new keyed blake3: %v", err))
		}
		return bh
	}
	// Fail now rather than on first use if the library disagrees about keys.
	h.pool.Put(h.pool.New())
	return h
}

// Sum returns the blob id of data.
func (h *Hasher) Sum(data []byte) ID {
	if !h.keyed {
		return blake3.Sum256(data)
	}
	bh := h.pool.Get().(*blake3.Hasher)
	bh.Reset()
	_, _ = bh.Write(data) // never fails
	var id ID
	bh.Sum(id[:0])
	h.pool.Put(bh)
	return id
}

// Pol is the irreducible polynomial of the rolling hash; one per repository,
// chosen at random at init so chunk boundaries reveal nothing across
// repositories.
type Pol = chunker.Pol

// RandomPol returns a random irreducible polynomial of degree 53.
func RandomPol() (Pol, error) { return chunker.RandomPolynomial() }

// Class is a chunk size class: the bounds of the content-defined cut. The
// mean chunk size is about MinSize + 2^AverageBits.
type Class struct {
	MinSize     uint `json:"min_size"`
	MaxSize     uint `json:"max_size"`
	AverageBits int  `json:"average_bits"`
}

// FileClass is the size class of ordinary files: 512 KiB min, about 1 MiB
// mean, 8 MiB max.
var FileClass = Class{MinSize: 512 << 10, MaxSize: 8 << 20, AverageBits: 19}

// StreamClass is the size class of dump streams (stdin, a dump command's
// output): 2 KiB min, about 6 KiB mean, 64 KiB max. A text dump shifts
// everything after an inserted row, so only small chunks find the
// unchanged rows around a change again. Measured on the shared dataset's
// database (sqlite3 .dump of db-day0, then db-day1, 574 MB): the second
// dump adds 99.9% of its bytes at FileClass, 56.8% at a 80 KiB mean, 23.8%
// at 24 KiB, 8.0% at this class's 6 KiB, 4.8% at 3 KiB, where the per-blob
// overhead (about 130 bytes) would pass 4%.
var StreamClass = Class{MinSize: 2 << 10, MaxSize: 64 << 10, AverageBits: 12}

// Limits of a valid Class. The rolling hash looks at a 64-byte window, so a
// cut before 64 bytes is impossible (and the underlying chunker would
// underflow); MaxChunkSize keeps every chunk, once sealed, far below the
// 4 GiB that the uint32 lengths of the index can describe.
const (
	MinChunkSize = 64
	MaxChunkSize = 1 << 30
)

// Validate reports whether c can be used with NewChunker. Classes read from
// a repository's config must be validated before use: NewChunker panics on
// an invalid class.
func (c Class) Validate() error {
	switch {
	case c.MinSize < MinChunkSize:
		return fmt.Errorf("invalid chunk class: min size %d below %d", c.MinSize, MinChunkSize)
	case c.MaxSize < c.MinSize:
		return fmt.Errorf("invalid chunk class: max size %d below min size %d", c.MaxSize, c.MinSize)
	case c.MaxSize > MaxChunkSize:
		return fmt.Errorf("invalid chunk class: max size %d above %d", c.MaxSize, MaxChunkSize)
	case c.AverageBits < 1 || c.AverageBits > 30:
		return fmt.Errorf("invalid chunk class: average bits %d outside [1, 30]", c.AverageBits)
	}
	return nil
}

// Chunker cuts a stream into content-defined chunks. Not safe for
// concurrent use; reuse one per goroutine with Reset.
//
// It owns a 512 KiB read buffer (inside the wrapped chunker), so keeping one
// per goroutine and calling Reset is much cheaper than NewChunker per file.
type Chunker struct {
	pol   Pol
	class Class
	c     *chunker.Chunker
	ready bool // Reset was called
}

// NewChunker returns a chunker for pol and class; call Reset before Next.
// It panics if class is invalid (see Class.Validate). An unusable pol (zero,
// or of degree outside 8..53) is reported by Next as an error.
func NewChunker(pol Pol, class Class) *Chunker {
	if err := class.Validate(); err != nil {
		panic("chunk: NewChunker: " + err.Error())
	}
	return &Chunker{
		pol:   pol,
		class: class,
		c:     chunker.NewWithBoundaries(nil, pol, class.MinSize, class.MaxSize),
	}
}

// Reset starts a new stream read from rd.
func (c *Chunker) Reset(rd io.Reader) {
	c.c.ResetWithBoundaries(rd, c.pol, c.class.MinSize, c.class.MaxSize)
	// ResetWithBoundaries sets the split mask back to 20 bits: the class's
	// average must be applied after every reset, or chunks silently double.
	c.c.SetAverageBits(c.class.AverageBits)
	c.ready = true
}

// errNotReset is returned by Next when Reset was never called.
var errNotReset = errors.New("chunker: Next called before Reset")

// Next returns the next chunk's bytes, stored in buf when its capacity
// suffices (pass a buffer of class.MaxSize to never allocate), and io.EOF
// after the last chunk. An empty stream yields io.EOF at once.
//
// Errors of the reader are returned as they are (not wrapped), so that
// callers can test them with errors.Is; after one, the stream is broken and
// Reset must be called.
func (c *Chunker) Next(buf []byte) ([]byte, error) {
	if !c.ready {
		return nil, errNotReset
	}
	ch, err := c.c.Next(buf)
	if err != nil {
		return nil, err
	}
	return ch.Data, nil
}
