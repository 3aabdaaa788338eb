package index

import (
	"fmt"

	"repo/chunk"
)

// WalkFile calls fn for each pack of the index file plaintext b, in file
// order, without decoding the whole file at once: besides b, memory stays
// at one pack's entries. p.Blobs is reused between calls, so fn must copy
// what it keeps. It returns the file's supersedes list, and fn's first
// error unchanged.
//
// b is checked as DecodeFile checks it before fn is called at all, so fn
// never sees part of a malformed file; such errors wrap ErrMalformed.
func WalkFile(b []byte, fn func(p Pack) error) ([]chunk.ID, error) {
	d := decoder{buf: b}
	nsup, npacks, _, err := d.scan()
	if err != nil {
		return nil, fmt.Errorf("decode index file: %w", err)
	}
	// Every entry's fields, as DecodeFile checks them while filling.
	d = decoder{buf: b, off: fileHeaderSize}
	d.uvarint()
	d.off += nsup * len(chunk.ID{})
	d.uvarint()
	for range npacks {
		id := d.id()
		k := int(d.uvarint())
		for j := range k {
			if _, err := ParseBlob(d.buf[d.off:]); err != nil {
				return nil, fmt.Errorf("decode index file: pack %s, blob %d: %w", id.Short(), j, err)
			}
			d.off += BlobSize
		}
	}

	d = decoder{buf: b, off: fileHeaderSize}
	d.uvarint()
	var sup []chunk.ID
	if nsup > 0 {
		sup = make([]chunk.ID, nsup)
		for i := range sup {
			sup[i] = d.id()
		}
	}
	d.uvarint()
	var blobs []Blob
	for range npacks {
		p := Pack{ID: d.id()}
		k := int(d.uvarint())
		blobs = blobs[:0]
		for range k {
			blob, _ := ParseBlob(d.buf[d.off:]) // checked above
			blobs = append(blobs, blob)
			d.off += BlobSize
		}
		if k > 0 {
			p.Blobs = blobs
		}
		if err := fn(p); err != nil {
			return sup, err
		}
	}
	return sup, nil
}
