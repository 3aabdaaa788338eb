//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package index

import (
	"errors"
	"os"
	"syscall"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
)

// lockSupported tells whether lockFile really locks. Where it does, the
// file is validated and reset under the lock before bbolt reads it.
const lockSupported = true

// lockFile takes bbolt's lock on f (flock, exclusive) before bbolt does:
// flock belongs to the open file description, so bbolt's own flock on the
// same *os.File then succeeds at once and Close releases both. It waits up
// to timeout and then returns bolterrors.ErrTimeout, like bbolt.
func lockFile(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return &os.SyscallError{Syscall: "flock", Err: err}
		}
		if time.Now().After(deadline) {
			return bolterrors.ErrTimeout
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedByOther reports whether another open file description holds a
// lock on the file at path (false if it does not exist or cannot be
// opened).
func lockedByOther(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// unlockFile releases the lock on f explicitly. Closing f is not enough
// when bbolt panicked after mapping it: the mapping keeps the open file
// description, and with it the lock, alive.
func unlockFile(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
