package location

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	// Options are the backend's extended options (-o key=value), e.g.
	// sftp.command or s3.storage-class; see ValidOptions.
	Options map[string]string
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
		if err := checkOptions(loc.Options, "local."); err != nil {
			return nil, err
		}
		return local.Open(loc.Path)
	case "s3":
		opts, err := s3.ParseLocation(loc.Path)
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("open repository %v: %w", loc, err))
		}
		if err := applyS3(&opts, loc.Options); err != nil {
			return nil, err
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
		so, err := sftpOptions(loc.Options)
		if err != nil {
			return nil, err
		}
		be, err := sftp.Open(ctx, l, so)
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
		if err := checkOptions(loc.Options, "local."); err != nil {
			return nil, err
		}
		return local.Create(loc.Path)
	case "s3":
		opts, err := s3.ParseLocation(loc.Path)
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("create repository %v: %w", loc, err))
		}
		if err := applyS3(&opts, loc.Options); err != nil {
			return nil, err
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
		so, err := sftpOptions(loc.Options)
		if err != nil {
			return nil, err
		}
		be, err := sftp.Create(ctx, l, so)
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

// ValidOptions lists the extended options each backend takes, with what
// they set.
var ValidOptions = map[string]string{
	"sftp.command":     "run this command instead of ssh; its stdin and stdout speak SFTP",
	"sftp.known-hosts": "known_hosts file to check the server's key against",
	"sftp.identity":    "private key file to log in with (instead of the agent and ~/.ssh/id_*)",
	"sftp.fingerprint": "accept the server key with this SHA256:... fingerprint",
	"sftp.connections": "number of SFTP sessions (default 4)",
	"s3.path-style":    "true: address the bucket in the path, not the host name",
	"s3.storage-class": "storage class of new objects (e.g. STANDARD_IA)",
	"s3.region":        "region of the bucket",
	"s3.connections":   "number of concurrent requests (default 5)",
}

// checkOptions refuses options of another backend and unknown ones.
func checkOptions(opts map[string]string, prefix string) error {
	for k := range opts {
		if _, ok := ValidOptions[k]; !ok {
			return backend.Permanent(fmt.Errorf("unknown option %q", k))
		}
		if !strings.HasPrefix(k, prefix) {
			return backend.Permanent(fmt.Errorf("option %q does not apply to this repository's backend", k))
		}
	}
	return nil
}

func intOption(opts map[string]string, k string) (int, error) {
	v, ok := opts[k]
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, backend.Permanent(fmt.Errorf("option %s=%q: want a positive number", k, v))
	}
	return n, nil
}

func sftpOptions(opts map[string]string) (sftp.Options, error) {
	var o sftp.Options
	if err := checkOptions(opts, "sftp."); err != nil {
		return o, err
	}
	o.Command = opts["sftp.command"]
	o.KnownHostsFile = opts["sftp.known-hosts"]
	if v := opts["sftp.identity"]; v != "" {
		o.IdentityFiles = []string{v}
	}
	o.HostKeyFingerprint = opts["sftp.fingerprint"]
	var err error
	o.Connections, err = intOption(opts, "sftp.connections")
	return o, err
}

func applyS3(o *s3.Options, opts map[string]string) error {
	if err := checkOptions(opts, "s3."); err != nil {
		return err
	}
	if v, ok := opts["s3.path-style"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return backend.Permanent(fmt.Errorf("option s3.path-style=%q: want true or false", v))
		}
		o.PathStyle = b
	}
	if v, ok := opts["s3.storage-class"]; ok {
		o.StorageClass = v
	}
	if v, ok := opts["s3.region"]; ok {
		o.Region = v
	}
	n, err := intOption(opts, "s3.connections")
	if n > 0 {
		o.Connections = n
	}
	return err
}
