package index

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// trimMapping drops this process's page table entries for db's memory map
// (madvise MADV_DONTNEED), within tx, which must be open: it pins the
// mapping, which a commit that grows the file replaces only once no
// transaction is open. The pages stay in the page cache, the file is not
// touched, and the next access faults them in again (a minor fault).
//
// Why: every page read through the map counts in the resident set size
// for as long as it stays mapped, and Linux maps up to 16 already cached
// neighbours with each page faulted in (fault-around), so each lookup in a
// large cache adds about 64 KiB of resident size until the whole file is
// resident (measured: 1,000 random lookups in a 2M-blob cache, +82 MiB).
// Trimming after a bounded amount of reading keeps that bounded. It costs
// page faults (a lookup in a 200k-blob cache took 11–15 µs instead of
// 3–4), so a cache of at most largeCacheBytes is left resident whole.
func trimMapping(db *bolt.DB, tx *bolt.Tx) {
	size := tx.Size() // the pages in use: never more than is mapped
	if size <= largeCacheBytes {
		return
	}
	// Through syscall.Syscall, so that the address stays a uintptr:
	// nothing here dereferences it.
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, db.Info().Data, uintptr(size), syscall.MADV_DONTNEED)
}
