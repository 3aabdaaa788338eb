//go:build !linux

package local

import (
	"errors"
	"os"
)

// setDirect: direct I/O is only used on Linux; elsewhere packs are written
// through the page cache.
func setDirect(*os.File, bool) error { return errors.ErrUnsupported }
