package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

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

// errorLine renders err as the one line printed for it, with a hint on
// what to do where there is an obvious next step.
func errorLine(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, context.Canceled):
		msg = "interrupted"
	case errors.Is(err, repo.ErrNoRepository):
		msg += " (create one with 'repo init', or check -r / REPO_REPOSITORY)"
	case errors.As(err, new(*repo.LockedError)) && !strings.Contains(msg, "unlock"):
		msg += "; wait for it to finish, retry with --retry-lock 10m, or, if that process is gone, run 'repo unlock'"
	case errors.Is(err, repo.ErrLockLost):
		msg += "; the operation was stopped before committing more: run the command again"
	case errors.Is(err, repo.ErrPasswordRequired):
		msg += " (set REPO_PASSWORD or REPO_PASSWORD_FILE, or use --password-file)"
	case errors.Is(err, repo.ErrWrongPassword):
		msg += " (check REPO_PASSWORD / REPO_PASSWORD_FILE / --password-file)"
	case errors.Is(err, backend.ErrNotExist) && strings.Contains(msg, "data/"):
		msg += " (run 'repo check' to see what is affected)"
	}
	return "repo: " + strings.ReplaceAll(msg, "\n", " ")
}
