//go:build !linux

package index

import bolt "go.etcd.io/bbolt"

// trimMapping does nothing here: MADV_DONTNEED on a file mapping is Linux's
// way to drop its pages from the resident set (see trim_linux.go).
func trimMapping(db *bolt.DB, tx *bolt.Tx) {}
