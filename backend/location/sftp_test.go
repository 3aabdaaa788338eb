package location

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"repo/backend"
)

// TestSFTPPasswordHidden checks that a password in an sftp:// location
// is refused without being repeated in the message.
func TestSFTPPasswordHidden(t *testing.T) {
	_, err := Parse("sftp://user:secret@host/srv/repo")
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("got %v, want an error that does not show the password", err)
	}
}

// TestOpenCreateSFTP checks that sftp: locations reach backend/sftp (which
// tests itself against a real OpenSSH server): here nothing listens on the
// port, so both fail with a connection error that names the location.
func TestOpenCreateSFTP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	l.Close() // a port where nothing listens

	loc, err := Parse("sftp://127.0.0.1:" + strconv.Itoa(addr.Port) + "/srv/repo")
	if err != nil {
		t.Fatal(err)
	}
	for name, fn := range map[string]func(context.Context, Location) (backend.Backend, error){"open": Open, "create": Create} {
		_, err := fn(context.Background(), loc)
		if err == nil || errors.Is(err, backend.ErrNotExist) || backend.IsPermanent(err) ||
			!strings.Contains(err.Error(), loc.String()) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s %v: got %v, want a transient connection error naming the location", name, loc, err)
		}
	}
}
