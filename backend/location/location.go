package location

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"repo/backend"
	"repo/backend/local"
	"repo/backend/s3"
	"repo/backend/sftp"
)

// Location is a parsed repository location.
type Location struct {
	// Scheme names the backend: "local", "s3" or "sftp".
	Scheme string
	// Path is the scheme-specific rest; for "local", a directory with a
	// leading "~" already expanded; for "s3", the canonical form of
	// s3.ParseLocation (s3.Options.String); for "sftp", the canonical
	// form of sftp.ParseLocation without the "sftp:" prefix.
	Path string
}

// String returns the location in the form Parse accepts, e.g.
// "local:/srv/repo".
func (l Location) String() string { return l.Scheme + ":" + l.Path }

// Parse reads a repository location; see the package documentation for the
// accepted forms. It does no I/O beyond looking up the home directory for a
// leading "~".
func Parse(s string) (Location, error) {
	if s == "" {
		return Location{}, errors.New("no repository given (use -r or REPO_REPOSITORY)")
	}
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "~") {
		return parseLocal(s)
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok {
		return parseLocal(s)
	}
	switch scheme {
	case "local":
		if rest == "" {
			return Location{}, fmt.Errorf("parse repository %q: empty path", s)
		}
		return parseLocal(rest)
	case "s3":
		opts, err := s3.ParseLocation(rest)
		if err != nil {
			return Location{}, fmt.Errorf("parse repository %q: %w", s, err)
		}
		return Location{Scheme: "s3", Path: opts.String()}, nil
	case "sftp":
		l, err := sftp.ParseLocation(s)
		if err != nil {
			return Location{}, err // names the location, without a password
		}
		return Location{Scheme: "sftp", Path: strings.TrimPrefix(l.String(), "sftp:")}, nil
	}
	if !isWord(scheme) {
		// Not shaped like a scheme: a path holding ':' ("x/y:z", "a1:b").
		return parseLocal(s)
	}
	return Location{}, fmt.Errorf("parse repository %q: unknown backend %q (known: local, sftp, s3; a path containing ':' can be written as local:PATH or ./PATH)", s, scheme)
}

// isWord reports whether s is non-empty and only ASCII letters: the shape
// of a scheme as opposed to a path that happens to hold ':'.
func isWord(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// parseLocal expands a leading "~" or "~/" to the home directory, since the
// shell does not when the location comes from REPO_REPOSITORY or
// --repo=~/x. "~user" is left alone.
func parseLocal(p string) (Location, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return Location{}, fmt.Errorf("parse repository %q: %w", p, err)
		}
		p = filepath.Join(home, p[1:])
	}
	return Location{Scheme: "local", Path: p}, nil
}

// Open opens the backend of an existing repository location. A location
// that does not exist gives an error wrapping backend.ErrNotExist; for s3
// that is a missing bucket or config (see s3.Open).
func Open(ctx context.Context, loc Location) (backend.Backend, error) {
	switch loc.Scheme {
	case "local":
		return local.Open(loc.Path)
	case "s3":
		opts, err := s3.ParseLocation(loc.Path)
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("open repository %v: %w", loc, err))
		}
		be, err := s3.Open(ctx, opts)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return be, nil
	case "sftp":
		l, err := sftp.ParseLocation(loc.String())
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("open repository %v: %w", loc, err))
		}
		be, err := sftp.Open(ctx, l, sftp.Options{})
		if err != nil {
			return nil, err
		}
		return be, nil
	}
	return nil, unknownScheme("open", loc)
}

// Create makes the location's storage (e.g. the directory layout, or the
// bucket) and opens it. It does not check whether a repository is there already; the
// repository layer does, by looking for its config.
func Create(ctx context.Context, loc Location) (backend.Backend, error) {
	switch loc.Scheme {
	case "local":
		return local.Create(loc.Path)
	case "s3":
		opts, err := s3.ParseLocation(loc.Path)
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("create repository %v: %w", loc, err))
		}
		be, err := s3.Create(ctx, opts)
		if err != nil {
			return nil, err
		}
		return be, nil
	case "sftp":
		l, err := sftp.ParseLocation(loc.String())
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("create repository %v: %w", loc, err))
		}
		be, err := sftp.Create(ctx, l, sftp.Options{})
		if err != nil {
			return nil, err
		}
		return be, nil
	}
	return nil, unknownScheme("create", loc)
}

func unknownScheme(op string, loc Location) error {
	return backend.Permanent(fmt.Errorf("%s repository %v: unknown backend %q", op, loc, loc.Scheme))
}
