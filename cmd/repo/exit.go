package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"repo/backend"
	"repo/repo"
)

// Exit codes; documented in the README and each command's help.
const (
	exitOK         = 0
	exitError      = 1
	exitUsage      = 2
	exitIncomplete = 3  // backup saved, but some sources could not be read
	exitNoRepo     = 10 // no repository at the location
	exitLocked     = 11 // repository locked by another process, or our lock lost
	exitPassword   = 12 // wrong or missing password
)

// codeError carries an exit code other than 1 up to main.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// usageError marks a command-line mistake (exit 2).
func usageError(format string, args ...any) error {
	return &codeError{exitUsage, fmt.Errorf(format, args...)}
}

// errIncomplete is returned by backup after saving a snapshot that lacks
// entries it could not read (exit 3); the details were printed already.
var errIncomplete = errors.New("backup finished, but some entries could not be read (see above)")

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	var ce *codeError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, errIncomplete):
		return exitIncomplete
	case errors.Is(err, repo.ErrNoRepository):
		return exitNoRepo
	case errors.As(err, new(*repo.LockedError)), errors.Is(err, repo.ErrLockLost):
		return exitLocked
	case errors.Is(err, repo.ErrWrongPassword), errors.Is(err, repo.ErrPasswordRequired):
		return exitPassword
	}
	return exitError
}

// errorLine renders err as the one line printed for it, followed, where
// there is one, by what to do next: the command that fixes it, or where to
// look. The hints are chosen by error type (errors.Is/As), never by the
// message's text.
func errorLine(err error) string {
	msg := err.Error()
	var (
		locked  *repo.LockedError
		blobErr *repo.BlobError
		ambig   *repo.AmbiguousSnapshotError
	)
	switch {
	case errors.Is(err, context.Canceled):
		msg = "interrupted"
	case errors.Is(err, repo.ErrNoRepository):
		msg += " (create one with 'repo init -r LOCATION', or check -r / REPO_REPOSITORY)"
	case errors.As(err, &locked):
		msg += lockHint(locked)
	case errors.Is(err, repo.ErrLockLost):
		msg += "; the operation was stopped before committing more: run the command again"
	case errors.Is(err, repo.ErrPasswordRequired):
		msg += " (give it with REPO_PASSWORD, REPO_PASSWORD_FILE or --password-file FILE, or run on a terminal to be asked)"
	case errors.Is(err, repo.ErrWrongPassword):
		msg += " (REPO_PASSWORD, when set, is used before --password-file and REPO_PASSWORD_FILE: check the one in effect)"
	case errors.Is(err, repo.ErrAlreadyInitialized):
		msg += " (use it as it is, or choose another location for a new one)"
	case errors.Is(err, repo.ErrSnapshotNotFound):
		msg += " ('repo snapshots' lists them)"
	case errors.As(err, &ambig):
		msg += " (give more digits of the id; 'repo snapshots' lists them)"
	case errors.As(err, &blobErr) && (errors.Is(err, backend.ErrNotExist) || errors.Is(err, repo.ErrBlobNotIndexed)):
		msg += " (data is missing from the repository: 'repo check' shows what is affected, 'repo list-broken-files' which files, 'repo check --repair' recovers what can be; see docs/repair.md)"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		msg += " (free space on that file system, or use a repository, cache (--cache-dir) or restore target elsewhere; an interrupted backup resumes without uploading again)"
	case errors.Is(err, fs.ErrPermission):
		msg += " (run as a user who may access that path, or change its permissions)"
	}
	return "repo: " + strings.ReplaceAll(msg, "\n", " ")
}

// lockHint says what to do about a lock in the way. A lock that a command
// would remove by itself (its process gone, or not refreshed for 30
// minutes) never gets here, so the holder is running, or is on another
// host where that cannot be checked; plain 'repo unlock' would keep it.
func lockHint(le *repo.LockedError) string {
	if le.Unreadable {
		return "" // the message says to use 'repo unlock --remove-all'
	}
	if le.Gate {
		// Another process is between writing its exclusive lock and
		// confirming it, which takes a moment.
		return "; run the command again in a moment, or retry with --retry-lock 10m"
	}
	h := le.Holder
	since := ""
	if !h.Created.IsZero() {
		since = " since " + h.Created.Local().Format("2006-01-02 15:04:05")
	}
	if host, err := os.Hostname(); err == nil && host == h.Hostname {
		return fmt.Sprintf("; that process is alive on this host and has held the lock%s: wait for it to finish, or retry with --retry-lock 10m (if it hangs, end it with 'kill %d': the lock of a dead process is removed by the next command)", since, h.PID)
	}
	return fmt.Sprintf("; held%s: wait for it to finish, or retry with --retry-lock 10m; if no repo process on %s uses the repository any more, remove the lock with 'repo unlock --remove-all'",
		since, h.Hostname)
}
