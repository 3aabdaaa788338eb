package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"repo/chunk"
)

// ErrMalformed is wrapped by every error about malformed encoded data
// (ParseBlob, DecodeFile), so that check can tell a damaged index file from
// a failure to read it.
var ErrMalformed = errors.New("malformed index data")

// BlobType tells data blobs (file content) from tree blobs (directories).
type BlobType uint8

// Blob types; the zero value is invalid.
const (
	DataBlob BlobType = 1
	TreeBlob BlobType = 2
)

// String returns "data" or "tree".
func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return "invalid(" + strconv.Itoa(int(t)) + ")"
}

// Valid reports whether t is DataBlob or TreeBlob.
func (t BlobType) Valid() bool { return t == DataBlob || t == TreeBlob }

// Compression of a stored blob.
const (
	CompressionNone uint8 = 0
	CompressionZstd uint8 = 1
)

// Blob locates one blob inside its pack. It is both the pack header entry
// and (with the pack id) the index entry.
type Blob struct {
	Type        BlobType
	ID          chunk.ID
	Offset      uint32 // of the sealed blob within the pack
	Length      uint32 // sealed length in the pack, seal overhead included
	RawLength   uint32 // plaintext length, before compression
	Compression uint8
}

// BlobSize is the size of one encoded Blob (AppendBlob).
const BlobSize = 1 + 32 + 4 + 4 + 4 + 1

// AppendBlob appends b's fixed-size little-endian encoding to dst:
// type, id, offset, length, raw length, compression.
//
//	offset  size  field
//	     0     1  type (1 data, 2 tree)
//	     1    32  id
//	    33     4  offset, uint32 little-endian
//	    37     4  length, uint32 little-endian
//	    41     4  raw length, uint32 little-endian
//	    45     1  compression (0 none, 1 zstd)
//
// It does not validate b; ParseBlob rejects what it should not have written.
func AppendBlob(dst []byte, b Blob) []byte {
	dst = append(dst, byte(b.Type))
	dst = append(dst, b.ID[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, b.Offset)
	dst = binary.LittleEndian.AppendUint32(dst, b.Length)
	dst = binary.LittleEndian.AppendUint32(dst, b.RawLength)
	return append(dst, b.Compression)
}

// ParseBlob decodes one encoded Blob from the first BlobSize bytes of src;
// it rejects an unknown type or compression.
func ParseBlob(src []byte) (Blob, error) {
	if len(src) < BlobSize {
		return Blob{}, fmt.Errorf("parse blob: %d bytes, want %d: %w", len(src), BlobSize, ErrMalformed)
	}
	src = src[:BlobSize]
	b := Blob{
		Type:        BlobType(src[0]),
		Offset:      binary.LittleEndian.Uint32(src[33:]),
		Length:      binary.LittleEndian.Uint32(src[37:]),
		RawLength:   binary.LittleEndian.Uint32(src[41:]),
		Compression: src[45],
	}
	copy(b.ID[:], src[1:33])
	if !b.Type.Valid() {
		return Blob{}, fmt.Errorf("parse blob %s: unknown type %d: %w", b.ID.Short(), src[0], ErrMalformed)
	}
	if b.Compression != CompressionNone && b.Compression != CompressionZstd {
		return Blob{}, fmt.Errorf("parse blob %s: unknown compression %d: %w", b.ID.Short(), b.Compression, ErrMalformed)
	}
	return b, nil
}

// PackedBlob is a Blob with the pack that holds it.
type PackedBlob struct {
	Blob
	Pack chunk.ID
}

// Pack lists the blobs of one pack, in offset order.
type Pack struct {
	ID    chunk.ID
	Blobs []Blob
}
