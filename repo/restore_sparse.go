package repo

import (
	"bytes"
	"sync"

	"repo/chunk"
)

// zeroBlobs remembers, for one restore, the data blobs found to be all
// zeros. Restore does not write such a blob but leaves a hole, so sparse
// files stay sparse (and a file of zeros costs no disk blocks). A zero
// block is found when it is decoded (allZero on plaintext that is being
// hashed anyway); its id is then remembered, so every later use of the
// same blob (a large hole is one blob repeated: the chunker cuts a run of
// zeros at its minimum size) is skipped without even being fetched. Safe
// for concurrent use.
type zeroBlobs struct {
	mu  sync.RWMutex
	ids map[chunk.ID]uint32 // id -> plaintext length
}

// length returns the plaintext length of id if it is a known zero block.
func (z *zeroBlobs) length(id chunk.ID) (uint32, bool) {
	z.mu.RLock()
	n, ok := z.ids[id]
	z.mu.RUnlock()
	return n, ok
}

// add records that blob id is n zero bytes.
func (z *zeroBlobs) add(id chunk.ID, n uint32) {
	z.mu.Lock()
	if z.ids == nil {
		z.ids = make(map[chunk.ID]uint32)
	}
	z.ids[id] = n
	z.mu.Unlock()
}

var zeroPage [32 << 10]byte

// allZero reports whether b holds only zero bytes. Real data almost always
// fails on the first comparison, so this costs next to nothing.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
