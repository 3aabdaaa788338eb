package repo

import (
	"errors"
	"fmt"

	"repo/repo/crypto"
)

// Errors a caller branches on (with errors.Is); the command line maps them to
// exit codes.
var (
	// ErrNoRepository: there is no repository (no config) at the location.
	ErrNoRepository = errors.New("no repository at this location")
	// ErrAlreadyInitialized: init found a repository already there.
	ErrAlreadyInitialized = errors.New("repository already initialized")
	// ErrWrongPassword: no key file opens with the password given.
	ErrWrongPassword = crypto.ErrWrongPassword
	// ErrPasswordRequired: the repository is encrypted and no password was
	// supplied.
	ErrPasswordRequired = errors.New("repository is encrypted and no password was given")
	// ErrConfigDamaged: the password opens a key file, but no key opens the
	// config: it is damaged or belongs to another repository.
	ErrConfigDamaged = errors.New("the password is right, but the repository config cannot be decrypted: it is damaged or belongs to another repository")
	// ErrSnapshotNotFound: no snapshot matches the id or prefix given.
	ErrSnapshotNotFound = errors.New("snapshot not found")
)

// AmbiguousSnapshotError: a snapshot id prefix matches several snapshots.
type AmbiguousSnapshotError struct {
	Prefix  string
	Matches int
}

func (e *AmbiguousSnapshotError) Error() string {
	return fmt.Sprintf("snapshot prefix %q is ambiguous: %d snapshots match", e.Prefix, e.Matches)
}
