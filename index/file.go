package index

import (
	"encoding/binary"
	"fmt"

	"repo/chunk"
)

// File is one index file of the repository: which blobs live in which
// packs, and which older index files it replaces (set by prune; readers
// ignore superseded files only once the superseding file exists).
//
// Supersedes is not transitive: a reader ignores a file only when a file it
// does not ignore names it. So a writer that replaces files must list every
// file it replaces, including files it skipped because they were already
// superseded.
type File struct {
	Supersedes []chunk.ID
	Packs      []Pack
}

// Encoding of an index file (plaintext, before sealing).
const (
	fileMagic   = "RIDX"
	fileVersion = 1
	// fileHeaderSize is magic and version.
	fileHeaderSize = len(fileMagic) + 1
	// minPackSize is the smallest encoded pack: its id and a zero count.
	minPackSize = len(chunk.ID{}) + 1
)

// Encode returns the plaintext encoding of f (the repository seals it).
//
// The format (version 1), with uvarint as in encoding/binary (minimal
// encoding required) and blob entries as written by AppendBlob:
//
//	"RIDX"            4 bytes, magic
//	0x01              1 byte, format version
//	uvarint n         number of superseded index files
//	n × id            32 bytes each: the ids of the superseded index files
//	uvarint p         number of packs
//	p × pack:
//	    id            32 bytes: the pack id
//	    uvarint k     number of blobs in the pack
//	    k × blob      BlobSize (46) bytes each, see AppendBlob
//
// Nothing follows the last pack. The encoding of a File is unique, so
// DecodeFile(b).Encode() returns b for every b that decodes.
func (f *File) Encode() []byte {
	size := fileHeaderSize + uvarintLen(uint64(len(f.Supersedes))) + len(f.Supersedes)*len(chunk.ID{}) +
		uvarintLen(uint64(len(f.Packs)))
	for _, p := range f.Packs {
		size += len(p.ID) + uvarintLen(uint64(len(p.Blobs))) + len(p.Blobs)*BlobSize
	}
	b := make([]byte, 0, size)
	b = append(b, fileMagic...)
	b = append(b, fileVersion)
	b = binary.AppendUvarint(b, uint64(len(f.Supersedes)))
	for _, id := range f.Supersedes {
		b = append(b, id[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(f.Packs)))
	for _, p := range f.Packs {
		b = append(b, p.ID[:]...)
		b = binary.AppendUvarint(b, uint64(len(p.Blobs)))
		for _, blob := range p.Blobs {
			b = AppendBlob(b, blob)
		}
	}
	return b
}

// DecodeFile parses an index file's plaintext; every malformed input is an
// error, never a panic.
//
// Every count is checked against the bytes left before anything is
// allocated or looped over, so memory and time stay proportional to
// len(b) whatever the counts claim. Errors wrap ErrMalformed.
func DecodeFile(b []byte) (*File, error) {
	// Pass 1: check the structure and count the blobs, so that pass 2 can
	// allocate every Blob in one slice.
	d := decoder{buf: b}
	nsup, npacks, nblobs, err := d.scan()
	if err != nil {
		return nil, fmt.Errorf("decode index file: %w", err)
	}

	// Pass 2: fill. The structure is known to be sound; only blob fields
	// can still be invalid.
	f := &File{}
	d = decoder{buf: b, off: fileHeaderSize}
	d.uvarint()
	if nsup > 0 {
		f.Supersedes = make([]chunk.ID, nsup)
		for i := range f.Supersedes {
			f.Supersedes[i] = d.id()
		}
	}
	d.uvarint()
	if npacks > 0 {
		f.Packs = make([]Pack, npacks)
	}
	blobs := make([]Blob, nblobs)
	for i := range f.Packs {
		p := &f.Packs[i]
		p.ID = d.id()
		k := int(d.uvarint())
		if k == 0 {
			continue
		}
		p.Blobs = blobs[:k:k]
		blobs = blobs[k:]
		for j := range p.Blobs {
			blob, err := ParseBlob(d.buf[d.off:])
			if err != nil {
				return nil, fmt.Errorf("decode index file: pack %s, blob %d: %w", p.ID.Short(), j, err)
			}
			p.Blobs[j] = blob
			d.off += BlobSize
		}
	}
	return f, nil
}

// decoder reads the fields of an index file. Its methods assume the bytes
// are there: scan checks that before anything else reads.
type decoder struct {
	buf []byte
	off int
}

func (d *decoder) left() int { return len(d.buf) - d.off }

func (d *decoder) id() (id chunk.ID) {
	d.off += copy(id[:], d.buf[d.off:])
	return id
}

// uvarint reads a uvarint known to be valid (checked by scan).
func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf[d.off:])
	d.off += n
	return v
}

// count reads a uvarint count of items of at least itemSize bytes each, and
// fails unless that many items can fit in the bytes left. what names the
// count in errors (formatted only then: this is the hot path).
func (d *decoder) count(what string, itemSize int) (int, error) {
	v, n := binary.Uvarint(d.buf[d.off:])
	if n <= 0 {
		return 0, fmt.Errorf("count of %s: bad uvarint at offset %d: %w", what, d.off, ErrMalformed)
	}
	if n != uvarintLen(v) {
		return 0, fmt.Errorf("count of %s: non-minimal uvarint at offset %d: %w", what, d.off, ErrMalformed)
	}
	d.off += n
	if v > uint64(d.left()/itemSize) {
		return 0, fmt.Errorf("count of %s: %d at offset %d exceeds the %d bytes left: %w", what, v, d.off-n, d.left(), ErrMalformed)
	}
	return int(v), nil
}

// scan checks the structure of the whole file and returns its counts.
func (d *decoder) scan() (nsup, npacks, nblobs int, err error) {
	if len(d.buf) < fileHeaderSize || string(d.buf[:len(fileMagic)]) != fileMagic {
		return 0, 0, 0, fmt.Errorf("no %s header: %w", fileMagic, ErrMalformed)
	}
	if v := d.buf[len(fileMagic)]; v != fileVersion {
		return 0, 0, 0, fmt.Errorf("unsupported format version %d: %w", v, ErrMalformed)
	}
	d.off = fileHeaderSize
	if nsup, err = d.count("superseded ids", len(chunk.ID{})); err != nil {
		return 0, 0, 0, err
	}
	d.off += nsup * len(chunk.ID{})
	if npacks, err = d.count("packs", minPackSize); err != nil {
		return 0, 0, 0, err
	}
	for i := 0; i < npacks; i++ {
		if d.left() < minPackSize {
			return 0, 0, 0, fmt.Errorf("pack %d: truncated at offset %d: %w", i, d.off, ErrMalformed)
		}
		d.off += len(chunk.ID{})
		k, err := d.count("blobs", BlobSize)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("pack %d: %w", i, err)
		}
		d.off += k * BlobSize
		nblobs += k
	}
	if d.left() != 0 {
		return 0, 0, 0, fmt.Errorf("%d trailing bytes: %w", d.left(), ErrMalformed)
	}
	return nsup, npacks, nblobs, nil
}

// uvarintLen is the length of v's minimal uvarint encoding.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
