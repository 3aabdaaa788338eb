package pack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/repo/crypto"
)

// ErrDamaged is matched (errors.Is) by every error of ParseHeader except
// *ShortTailError, and by every error of Codec.Decode: the bytes are not
// what a Writer or Codec produced. Errors of a failed seal also match
// crypto.ErrAuth.
var ErrDamaged = errors.New("damaged")

// damaged returns an error matching ErrDamaged, worded "damaged: …".
func damaged(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDamaged, fmt.Sprintf(format, args...))
}

// Format limits. See doc.go for what they mean to readers.
const (
	// headerVersion is the first byte of every header plaintext.
	headerVersion = 1
	// maxHeaderLength bounds the sealed header a reader accepts, so that a
	// damaged length field cannot make it load or allocate much.
	maxHeaderLength = 16 << 20
	// maxCompressedRaw bounds the raw length of a zstd-compressed blob:
	// Encode stores larger blobs uncompressed and Decode refuses to inflate
	// beyond it, so that a hostile blob or header entry cannot make us
	// allocate more. Chunks are at most 8 MiB; only huge tree blobs exceed
	// it, and they are still stored, uncompressed.
	maxCompressedRaw = 64 << 20
	// tailGuess is how much of a pack's end ReadHeader loads at first: the
	// header of a 16 MiB pack of 4 KiB blobs (about 190 KiB) needs a second
	// read, that of a pack of ordinary ~1 MiB chunks does not.
	tailGuess = 64 << 10
)

// MaxBlobs is the most blobs a Writer accepts in one pack. It keeps the
// sealed header (1 + MaxBlobs·index.BlobSize bytes plus the seal, about
// 12 MiB) well inside what readers accept (16 MiB). Callers finalize a pack
// when Count reaches it, whatever its size.
const MaxBlobs = 1 << 18

// Codec turns plaintext blobs into their stored form and back: zstd
// compression (kept only when it shrinks the blob) and sealing. Safe for
// concurrent use; encoders and decoders are pooled.
//
// Use NewCodec; the zero Codec is not usable.
type Codec struct {
	sealer crypto.Sealer
	// enc is nil for LevelOff. Its EncodeAll is safe for concurrent use: it
	// keeps GOMAXPROCS single-threaded encoders in a channel, so callers
	// beyond that wait instead of allocating more encoder state.
	enc *zstd.Encoder
	// scratch holds *[]byte buffers for the compressed form (Encode) and
	// the opened form (Decode) of a blob before its final step.
	scratch sync.Pool
}

// Level is the zstd encoder level a Codec compresses with; LevelOff stores
// every blob uncompressed.
type Level = zstd.EncoderLevel

// LevelOff disables compression.
const LevelOff Level = 0

// NewCodec returns a codec sealing with s and compressing at level. It
// panics on a level that is neither LevelOff nor one of zstd's (a
// programming error: levels come from the repository config, which is
// validated when read).
func NewCodec(s crypto.Sealer, level Level) *Codec {
	c := &Codec{sealer: s}
	if level == LevelOff {
		return c
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		// The seal authenticates (or checksums) the compressed bytes and
		// callers hash the plaintext: a frame checksum adds nothing but
		// 4 bytes per blob.
		zstd.WithEncoderCRC(false),
	)
	if err != nil {
		panic(fmt.Sprintf("pack: create zstd encoder at level %d: %v", level, err))
	}
	c.enc = enc
	return c
}

// decoder is shared by all codecs: DecodeAll is safe for concurrent use
// and runs up to GOMAXPROCS decodes at once. With WithDecodeAllCapLimit,
// DecodeAll never writes past cap(dst), which Decode sets to the expected
// raw length.
var decoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxCompressedRaw),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		panic(fmt.Sprintf("pack: create zstd decoder: %v", err))
	}
	return d
})

// Sealer returns the codec's sealer.
func (c *Codec) Sealer() crypto.Sealer { return c.sealer }

// getScratch returns a pooled buffer of capacity at least n, length 0.
func (c *Codec) getScratch(n int) *[]byte {
	bp, _ := c.scratch.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	*bp = (*bp)[:0]
	return bp
}

func (c *Codec) putScratch(bp *[]byte, b []byte) {
	*bp = b[:0]
	c.scratch.Put(bp)
}

// Encode appends the stored form of raw to dst: compressed if that makes it
// smaller, then sealed. It returns the new dst and the compression used.
func (c *Codec) Encode(dst, raw []byte) ([]byte, uint8) {
	if c.enc == nil || len(raw) == 0 || len(raw) > maxCompressedRaw || looksRandom(raw) {
		return c.sealer.Seal(dst, raw), index.CompressionNone
	}
	// Incompressible input comes out a few bytes larger; room for that
	// avoids a reallocation just before the result is thrown away.
	bp := c.getScratch(len(raw) + len(raw)>>8 + 64)
	comp := c.enc.EncodeAll(raw, *bp)
	if len(comp) < len(raw) {
		dst = c.sealer.Seal(dst, comp)
		c.putScratch(bp, comp)
		return dst, index.CompressionZstd
	}
	c.putScratch(bp, comp)
	return c.sealer.Seal(dst, raw), index.CompressionNone
}

// Sampling of looksRandom.
const (
	sampleMinLen   = 64 << 10 // smaller blobs are not sampled
	sampleSegments = 64       // spread evenly, first and last included
	sampleSegLen   = 512
	// randomEntropy is the byte entropy (bits per byte) of the sample above
	// which a blob counts as random. Measured with this sampling: random
	// data 7.9927–7.9960 (mean 7.9944; 96% above the bound), deflate
	// streams 7.990–7.994, a 1 MiB chunk of a Go module zip that zstd
	// still shrank by 8% 7.9921. Chunks of Go module zips and binaries
	// above the bound did not compress at all, so skipping them lost
	// nothing; at 7.992 one such zip grew by 0.5%.
	randomEntropy = 7.9935
)

// looksRandom reports whether raw is almost certainly incompressible
// (encrypted or random data), judged by the byte entropy of a 32 KiB
// sample of 64 pieces spread over it. Skipping zstd on such blobs saves its
// 0.3–0.5 ms per MiB (a third of Encode's time there) at a cost of about
// 0.03 ms per MiB on the others (0.3% at SpeedFastest). A compressible run
// shorter than the gap between pieces (len/64) can go unseen; the bound is
// strict enough that it then costs little (see randomEntropy).
func looksRandom(raw []byte) bool {
	if len(raw) < sampleMinLen {
		return false
	}
	// Four histograms break the dependency between consecutive increments
	// of the same counter.
	var h [4][256]uint32
	for i := range sampleSegments {
		off := i * (len(raw) - sampleSegLen) / (sampleSegments - 1)
		seg := raw[off : off+sampleSegLen]
		for j := 0; j+4 <= len(seg); j += 4 {
			h[0][seg[j]]++
			h[1][seg[j+1]]++
			h[2][seg[j+2]]++
			h[3][seg[j+3]]++
		}
	}
	const n = sampleSegments * sampleSegLen
	e := 0.0
	for c := range 256 {
		if k := h[0][c] + h[1][c] + h[2][c] + h[3][c]; k > 0 {
			p := float64(k) / n
			e -= p * math.Log2(p)
		}
	}
	return e > randomEntropy
}

// Decode appends the plaintext of a stored blob to dst: opens the seal and
// decompresses per b.Compression; the result must be b.RawLength bytes.
// It does not check the id; callers hash and compare. On error dst is
// returned unchanged (same length) with an error matching ErrDamaged.
func (c *Codec) Decode(dst, stored []byte, b index.Blob) ([]byte, error) {
	ov := c.sealer.Overhead()
	if len(stored) < ov {
		return dst, fmt.Errorf("decode blob %v: %w", b.ID.Short(),
			damaged("stored length %d is less than the seal overhead %d", len(stored), ov))
	}
	raw := int(b.RawLength)
	switch b.Compression {
	case index.CompressionNone:
		if len(stored)-ov != raw {
			return dst, fmt.Errorf("decode blob %v: %w", b.ID.Short(),
				damaged("uncompressed blob holds %d bytes, want raw length %d", len(stored)-ov, raw))
		}
		out, err := c.sealer.Open(dst, stored)
		if err != nil {
			return dst, fmt.Errorf("decode blob %v: %w: %w", b.ID.Short(), ErrDamaged, err)
		}
		return out, nil

	case index.CompressionZstd:
		if raw > maxCompressedRaw {
			return dst, fmt.Errorf("decode blob %v: %w", b.ID.Short(),
				damaged("raw length %d of a compressed blob exceeds %d", raw, maxCompressedRaw))
		}
		bp := c.getScratch(len(stored) - ov)
		comp, err := c.sealer.Open(*bp, stored)
		if err != nil {
			c.putScratch(bp, comp)
			return dst, fmt.Errorf("decode blob %v: %w: %w", b.ID.Short(), ErrDamaged, err)
		}
		n := len(dst)
		dst = slices.Grow(dst, raw)
		// cap(limited) is exactly n+raw: the decoder fails rather than
		// write more than raw bytes (see decoder).
		limited := dst[: n : n+raw]
		out, err := decoder().DecodeAll(comp, limited)
		c.putScratch(bp, comp)
		if err != nil {
			return dst[:n], fmt.Errorf("decompress blob %v: %w: %w", b.ID.Short(), ErrDamaged, err)
		}
		if len(out)-n != raw {
			return dst[:n], fmt.Errorf("decompress blob %v: %w", b.ID.Short(),
				damaged("%d bytes, want raw length %d", len(out)-n, raw))
		}
		// out lies in dst's array (it never outgrew its capacity): return
		// it with dst's full capacity so that callers can reuse it.
		return dst[:len(out)], nil

	default:
		return dst, fmt.Errorf("decode blob %v: %w", b.ID.Short(),
			damaged("unknown compression %d", b.Compression))
	}
}

// Writer builds one pack in memory:
//
//	blob_1 … blob_n  header  header_len(uint32 LE)
//
// header = sealed(version byte 1 || n × index.AppendBlob entries); header_len
// is the sealed header's length. Not safe for concurrent use.
type Writer struct {
	sealer crypto.Sealer
	buf    []byte       // the blobs so far; the header is appended by Finalize
	blobs  []index.Blob // one per blob in buf, in offset order, contiguous
}

// NewWriter starts an empty pack whose header will be sealed with s.
// sizeHint preallocates the buffer; pass the expected size of the whole
// pack, header included, so that Finalize need not copy it.
func NewWriter(s crypto.Sealer, sizeHint int) *Writer {
	return &Writer{sealer: s, buf: make([]byte, 0, max(sizeHint, 0))}
}

// NewWriterBuffer starts an empty pack in buf[:0], reusing its capacity, so
// that a caller writing many packs can recycle one buffer per pack in
// flight instead of allocating 16 MiB each time. The data Finalize returns
// aliases buf while it fits.
func NewWriterBuffer(s crypto.Sealer, buf []byte) *Writer {
	return &Writer{sealer: s, buf: buf[:0]}
}

// Add appends one stored (already encoded) blob and records its entry; the
// Offset and Length fields of b are set by Add. It panics when the pack
// would hold more than MaxBlobs blobs or more than 4 GiB of blobs (offsets
// are uint32): callers finalize packs long before either.
func (w *Writer) Add(b index.Blob, stored []byte) {
	if len(w.blobs) >= MaxBlobs {
		panic(fmt.Sprintf("pack: more than %d blobs in one pack", MaxBlobs))
	}
	if uint64(len(w.buf))+uint64(len(stored)) > math.MaxUint32 {
		panic("pack: blobs of one pack exceed 4 GiB")
	}
	b.Offset = uint32(len(w.buf))
	b.Length = uint32(len(stored))
	w.buf = append(w.buf, stored...)
	w.blobs = append(w.blobs, b)
}

// Size is the number of bytes written so far (blobs only).
func (w *Writer) Size() int { return len(w.buf) }

// Count is the number of blobs added.
func (w *Writer) Count() int { return len(w.blobs) }

// Finalize appends the header and returns the whole pack, its id (the
// unkeyed BLAKE3 of the bytes) and its entries. The Writer is spent.
func (w *Writer) Finalize() (data []byte, id chunk.ID, blobs []index.Blob) {
	hdr := make([]byte, 0, 1+len(w.blobs)*index.BlobSize)
	hdr = append(hdr, headerVersion)
	for _, b := range w.blobs {
		hdr = index.AppendBlob(hdr, b)
	}
	start := len(w.buf)
	data = w.sealer.Seal(w.buf, hdr)
	data = binary.LittleEndian.AppendUint32(data, uint32(len(data)-start))
	blobs = w.blobs
	w.buf, w.blobs = nil, nil
	return data, chunk.Hash(data), blobs
}

// HeaderSize is the size of the sealed header plus its length field for a
// pack of n blobs, so that a pack's total size can be derived from its index
// entries: end of last blob + HeaderSize.
func HeaderSize(s crypto.Sealer, n int) int64 {
	return int64(1) + int64(n)*index.BlobSize + int64(s.Overhead()) + 4
}

// ShortTailError is returned by ParseHeader when the tail it was given
// does not reach back to the start of the header. Need is the tail length
// that does (sealed header plus its 4-byte length), never more than the
// pack size.
type ShortTailError struct{ Need int }

func (e *ShortTailError) Error() string {
	return fmt.Sprintf("pack tail too short: the header needs the last %d bytes", e.Need)
}

// ParseHeader parses a pack's trailer. tail holds the last len(tail) bytes
// of a pack of packSize bytes. If tail is too short to hold the whole
// header, it returns a *ShortTailError saying how many tail bytes are
// needed. Entries are checked: inside the pack, not overlapping the header or
// each other, in offset order; any violation is an error naming it.
//
// Every other error matches ErrDamaged. It never panics, whatever the input.
func ParseHeader(s crypto.Sealer, tail []byte, packSize int64) ([]index.Blob, error) {
	blobs, err := parseHeader(s, tail, packSize)
	if err != nil {
		var short *ShortTailError
		if errors.As(err, &short) {
			return nil, err
		}
		return nil, fmt.Errorf("parse pack header: %w", err)
	}
	return blobs, nil
}

func parseHeader(s crypto.Sealer, tail []byte, packSize int64) ([]index.Blob, error) {
	if int64(len(tail)) > packSize {
		return nil, damaged("tail of %d bytes is longer than the pack of %d", len(tail), packSize)
	}
	minHeader := int64(s.Overhead()) + 1 // a sealed version byte
	if packSize < minHeader+4 {
		return nil, damaged("pack of %d bytes is too small to hold a header", packSize)
	}
	if len(tail) < 4 {
		return nil, &ShortTailError{Need: 4}
	}
	hdrLen := int64(binary.LittleEndian.Uint32(tail[len(tail)-4:]))
	switch {
	case hdrLen < minHeader:
		return nil, damaged("header length %d is less than the minimum %d", hdrLen, minHeader)
	case hdrLen > packSize-4:
		return nil, damaged("header length %d exceeds the pack of %d bytes", hdrLen, packSize)
	case hdrLen > maxHeaderLength:
		return nil, damaged("header length %d exceeds the limit of %d", hdrLen, maxHeaderLength)
	}
	need := int(hdrLen) + 4
	if len(tail) < need {
		return nil, &ShortTailError{Need: need}
	}
	sealed := tail[len(tail)-need : len(tail)-4]
	plain, err := s.Open(make([]byte, 0, len(sealed)), sealed)
	if err != nil {
		return nil, fmt.Errorf("open header: %w: %w", ErrDamaged, err)
	}
	if len(plain) == 0 { // a Sealer keeping its Overhead promise never does this
		return nil, damaged("empty header")
	}
	if plain[0] != headerVersion {
		return nil, damaged("unknown header version %d", plain[0])
	}
	entries := plain[1:]
	if len(entries)%index.BlobSize != 0 {
		return nil, damaged("header of %d entry bytes is not a multiple of %d", len(entries), index.BlobSize)
	}
	blobsEnd := uint64(packSize - int64(need)) // where the header starts
	blobs := make([]index.Blob, 0, len(entries)/index.BlobSize)
	var prevEnd uint64
	for i := 0; len(entries) > 0; i++ {
		b, err := index.ParseBlob(entries[:index.BlobSize])
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w: %w", i, ErrDamaged, err)
		}
		entries = entries[index.BlobSize:]
		start, end := uint64(b.Offset), uint64(b.Offset)+uint64(b.Length)
		switch {
		case b.Length < uint32(s.Overhead()):
			return nil, damaged("entry %d: length %d is less than the seal overhead %d", i, b.Length, s.Overhead())
		case start < prevEnd:
			return nil, damaged("entry %d at offset %d overlaps or precedes the previous entry, which ends at %d", i, start, prevEnd)
		case end > blobsEnd:
			return nil, damaged("entry %d ends at %d, past the header's start at %d", i, end, blobsEnd)
		}
		prevEnd = end
		blobs = append(blobs, b)
	}
	return blobs, nil
}

// ReadHeader loads a pack's header from the backend (one ranged read of the
// tail, a second one if the header is larger than guessed) and parses it.
// packSize must be the pack's actual size (from the index or Stat); errors
// name the pack and match ErrDamaged when the bytes were read but are wrong.
func ReadHeader(ctx context.Context, be backend.Backend, id chunk.ID, packSize int64, s crypto.Sealer) ([]index.Blob, error) {
	blobs, err := readHeader(ctx, be, id, packSize, s)
	if err != nil {
		return nil, fmt.Errorf("read header of pack %v: %w", id.Short(), err)
	}
	return blobs, nil
}

func readHeader(ctx context.Context, be backend.Backend, id chunk.ID, packSize int64, s crypto.Sealer) ([]index.Blob, error) {
	if packSize < 4 {
		return nil, damaged("pack of %d bytes is too small to hold a header", packSize)
	}
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	tail := make([]byte, min(packSize, tailGuess))
	if err := backend.ReadAt(ctx, be, h, tail, packSize-int64(len(tail))); err != nil {
		return nil, err
	}
	blobs, err := ParseHeader(s, tail, packSize)
	var short *ShortTailError
	if !errors.As(err, &short) {
		return blobs, err
	}
	// Load only the part in front of what we have. Need ≤ packSize, and
	// Need > len(tail) since the first parse found the tail too short.
	full := make([]byte, short.Need)
	front := full[:short.Need-len(tail)]
	if err := backend.ReadAt(ctx, be, h, front, packSize-int64(short.Need)); err != nil {
		return nil, err
	}
	copy(full[len(front):], tail)
	return ParseHeader(s, full, packSize)
}
