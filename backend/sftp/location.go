package sftp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// Location is where a repository lives on an SFTP server.
type Location struct {
	// User is the login name; "" means the local user's name.
	User string
	// Host is a host name or an IP address (IPv6 without brackets).
	Host string
	// Port is the SSH port; "" means 22.
	Port string
	// Path is the repository directory. A relative path starts at the
	// directory the server puts a new session in (usually the home
	// directory).
	Path string
}

// ParseLocation reads a repository location of one of the forms
//
//	sftp:[user@]host[:port]:path     path absolute, or relative to the login directory
//	sftp://[user@]host[:port]/path   path absolute; /~/path is relative
//
// IPv6 addresses go in brackets ("sftp:[::1]:/srv/repo"). In the first
// form a leading "~/" is dropped (the login directory is the home
// directory), and a path starting with digits and a colon must be
// written "./12:x" so that the digits are not taken for a port. Passwords
// are refused: authentication is by keys only.
func ParseLocation(s string) (Location, error) {
	rest, ok := strings.CutPrefix(s, "sftp:")
	if !ok {
		return Location{}, fmt.Errorf("parse sftp location %q: does not start with sftp:", redact(s))
	}
	var (
		loc Location
		err error
	)
	if strings.HasPrefix(rest, "//") {
		loc, err = parseURL(s)
	} else {
		loc, err = parseSCP(rest)
	}
	if err == nil {
		err = loc.check()
	}
	if err != nil {
		return Location{}, fmt.Errorf("parse sftp location %q: %w", redact(s), err)
	}
	return loc, nil
}

// redact hides the password of an sftp:// URL, for error messages.
func redact(s string) string {
	rest, ok := strings.CutPrefix(s, "sftp://")
	if !ok {
		return s
	}
	authority, _, _ := strings.Cut(rest, "/")
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return s
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if !hasPassword {
		return s
	}
	return "sftp://" + user + ":xxxxx" + rest[at:]
}

// parseURL reads the sftp://[user@]host[:port]/path form.
func parseURL(s string) (Location, error) {
	u, err := url.Parse(s)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the URL, which may hold a password
	}
	if err != nil {
		return Location{}, err
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Location{}, errors.New("query and fragment are not allowed")
	}
	loc := Location{Host: u.Hostname(), Port: u.Port()}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			return Location{}, errors.New("passwords are not supported; use a key or the ssh agent")
		}
		loc.User = u.User.Username()
		if loc.User == "" {
			return Location{}, errors.New("empty user name")
		}
	}
	p := u.Path
	switch {
	case p == "/~" || p == "/~/":
		return Location{}, errors.New("the home directory itself cannot be the repository; give a directory below it")
	case strings.HasPrefix(p, "/~/"):
		p = p[len("/~/"):]
	case p == "" || p == "/":
		return Location{}, errors.New("no path (sftp://host/path)")
	}
	loc.Path = path.Clean(p)
	return loc, nil
}

// parseSCP reads the scp-like [user@]host[:port]:path form.
func parseSCP(rest string) (Location, error) {
	// The host ends at the first colon outside brackets.
	end, inBrackets := -1, false
	for i, c := range rest {
		switch c {
		case '[':
			inBrackets = true
		case ']':
			inBrackets = false
		case ':':
			if !inBrackets {
				end = i
			}
		}
		if end >= 0 {
			break
		}
	}
	if end < 0 {
		return Location{}, errors.New("no ':' between host and path (sftp:[user@]host[:port]:/path)")
	}
	var loc Location
	userHost, p := rest[:end], rest[end+1:]
	if j := strings.IndexByte(p, ':'); j > 0 && allDigits(p[:j]) {
		loc.Port, p = p[:j], p[j+1:]
	}
	loc.Host = userHost
	if k := strings.LastIndexByte(userHost, '@'); k >= 0 {
		loc.User, loc.Host = userHost[:k], userHost[k+1:]
		if loc.User == "" {
			return Location{}, errors.New("empty user name")
		}
	}
	if strings.HasPrefix(loc.Host, "[") {
		h, ok := strings.CutSuffix(loc.Host[1:], "]")
		if !ok {
			return Location{}, errors.New("unbalanced '[' in host")
		}
		loc.Host = h
	}
	switch {
	case p == "":
		return Location{}, errors.New("empty path")
	case p == "~" || p == "~/":
		return Location{}, errors.New("the home directory itself cannot be the repository; give a directory below it")
	case strings.HasPrefix(p, "~/"):
		p = p[len("~/"):]
	}
	loc.Path = path.Clean(p)
	return loc, nil
}

// check validates the parts both forms share.
func (l Location) check() error {
	if l.Host == "" {
		return errors.New("no host")
	}
	if strings.ContainsAny(l.Host, "/@[] \t") {
		return fmt.Errorf("invalid host %q", l.Host)
	}
	if strings.ContainsAny(l.User, ":/ \t") {
		return fmt.Errorf("invalid user name %q", l.User)
	}
	if l.Port != "" {
		n, err := strconv.Atoi(l.Port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("invalid port %q", l.Port)
		}
	}
	return nil
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// String returns the location in the scp-like form ParseLocation reads,
// e.g. "sftp:backup@example.com:2222:/srv/repo".
func (l Location) String() string {
	var b strings.Builder
	b.WriteString("sftp:")
	if l.User != "" {
		b.WriteString(l.User + "@")
	}
	if strings.Contains(l.Host, ":") {
		b.WriteString("[" + l.Host + "]:")
	} else {
		b.WriteString(l.Host + ":")
	}
	if l.Port != "" {
		b.WriteString(l.Port + ":")
	}
	p := l.Path
	if j := strings.IndexByte(p, ':'); j > 0 && allDigits(p[:j]) || strings.HasPrefix(p, "~") {
		p = "./" + p // not a port, not the home directory
	}
	b.WriteString(p)
	return b.String()
}

// addr returns host:port for dialing, with the default port filled in.
func (l Location) addr() string {
	port := l.Port
	if port == "" {
		port = "22"
	}
	return net.JoinHostPort(l.Host, port)
}
