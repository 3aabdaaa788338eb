//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package index

import (
	"os"
	"time"
)

// lockSupported tells whether lockFile really locks. Here it does not:
// bbolt locks the file itself (after the cache's checks, which are then
// made without the lock), and stale private caches are never removed.
const lockSupported = false

func lockFile(*os.File, time.Duration) error { return nil }

func lockedByOther(string) bool { return true }

func unlockFile(*os.File) {}
