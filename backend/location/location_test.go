package location

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"repo/backend/s3"
	"strings"
	"testing"

	"repo/backend"
)

func TestParse(t *testing.T) {
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in      string
		want    Location
		wantErr string // a part of the error message; "" for success
	}{
		{"/srv/repo", Location{Scheme: "local", Path: "/srv/repo"}, ""},
		{"/tmp/a:b", Location{Scheme: "local", Path: "/tmp/a:b"}, ""},
		{"./x:y", Location{Scheme: "local", Path: "./x:y"}, ""},
		{"../repo", Location{Scheme: "local", Path: "../repo"}, ""},
		{".", Location{Scheme: "local", Path: "."}, ""},
		{"repo", Location{Scheme: "local", Path: "repo"}, ""},
		{"x/y:z", Location{Scheme: "local", Path: "x/y:z"}, ""},
		{"a1:b", Location{Scheme: "local", Path: "a1:b"}, ""},
		{"my-repo:2024", Location{Scheme: "local", Path: "my-repo:2024"}, ""},
		{":x", Location{Scheme: "local", Path: ":x"}, ""},
		{"~", Location{Scheme: "local", Path: home}, ""},
		{"~/backups/repo", Location{Scheme: "local", Path: filepath.Join(home, "backups/repo")}, ""},
		{"~other/repo", Location{Scheme: "local", Path: "~other/repo"}, ""},
		{"local:/srv/repo", Location{Scheme: "local", Path: "/srv/repo"}, ""},
		{"local:relative", Location{Scheme: "local", Path: "relative"}, ""},
		{"local:foo:bar", Location{Scheme: "local", Path: "foo:bar"}, ""},
		{"local:~/r", Location{Scheme: "local", Path: filepath.Join(home, "r")}, ""},
		{"", Location{}, "no repository given (use -r or REPO_REPOSITORY)"},
		{"local:", Location{}, "empty path"},
		{"sftp:user@host:/srv/repo", Location{Scheme: "sftp", Path: "user@host:/srv/repo"}, ""},
		{"sftp:host:2222:repo/", Location{Scheme: "sftp", Path: "host:2222:repo"}, ""},
		{"sftp://user@host:2222/srv/repo", Location{Scheme: "sftp", Path: "user@host:2222:/srv/repo"}, ""},
		{"sftp://host/~/repo", Location{Scheme: "sftp", Path: "host:repo"}, ""},
		{"sftp:[::1]:/r", Location{Scheme: "sftp", Path: "[::1]:/r"}, ""},
		{"sftp:host", Location{}, "no ':' between host and path"},
		{"sftp:host:", Location{}, "empty path"},
		{"sftp://user:secret@host/r", Location{}, "passwords are not supported"},
		{"s3:bucket/prefix", Location{Scheme: "s3", Path: "bucket/prefix"}, ""},
		{"s3:bucket/", Location{Scheme: "s3", Path: "bucket"}, ""},
		{"s3:https://s3.example.com:9000/bucket/a/b/", Location{Scheme: "s3", Path: "https://s3.example.com:9000/bucket/a/b"}, ""},
		{"s3:http://127.0.0.1:4568/bucket", Location{Scheme: "s3", Path: "http://127.0.0.1:4568/bucket"}, ""},
		{"s3:", Location{}, "no bucket"},
		{"s3:https://host", Location{}, "no bucket"},
		{"s3:https://id:secret@host/bucket", Location{}, "credentials do not belong"},
		{"s3:s3.amazonaws.com/bucket", Location{}, "looks like a host"},
		{"s3:ftp://host/bucket", Location{}, "only https:// and http://"},
		{"foo:bar", Location{}, `unknown backend "foo"`},
		{"lcoal:/srv/repo", Location{}, `unknown backend "lcoal"`},
		{"Local:/srv/repo", Location{}, `unknown backend "Local"`},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q): got %+v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Scheme != tt.want.Scheme || got.Path != tt.want.Path {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestString(t *testing.T) {
	for _, s := range []string{"local:/srv/repo", "local:/tmp/a:b", "local:repo", "s3:bucket", "s3:bucket/a/b", "s3:https://host:9000/bucket/p", "s3:http://host/bucket", "sftp:host:/srv/repo", "sftp:u@host:2222:repo"} {
		loc, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		if loc.String() != s {
			t.Errorf("Parse(%q).String() = %q", s, loc.String())
		}
		again, err := Parse(loc.String())
		if err != nil || again.String() != loc.String() {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", loc.String(), again, err, loc)
		}
	}
}

func TestOpenCreate(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "a:b")
	loc, err := Parse(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, loc); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("open before create: got %v, want ErrNotExist", err)
	}
	be, err := Create(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.KeyFile, Name: "k1"}
	if err := be.Save(ctx, h, backend.NewByteReader([]byte("key"))); err != nil {
		t.Fatal(err)
	}
	be2, err := Open(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	if be2.Location() != dir {
		t.Errorf("Location() = %q, want %q", be2.Location(), dir)
	}
	if _, err := be2.Stat(ctx, h); err != nil {
		t.Errorf("stat through a second Open: %v", err)
	}

	for _, fn := range []func(context.Context, Location) (backend.Backend, error){Open, Create} {
		if _, err := fn(ctx, Location{Scheme: "foo", Path: "x"}); err == nil || !strings.Contains(err.Error(), "unknown backend") {
			t.Errorf("scheme foo: got %v, want unknown backend", err)
		}
	}
}

func TestExtendedOptions(t *testing.T) {
	o, err := sftpOptions(map[string]string{"sftp.command": "ssh -s host sftp", "sftp.connections": "2", "sftp.identity": "/k"})
	if err != nil || o.Command != "ssh -s host sftp" || o.Connections != 2 || len(o.IdentityFiles) != 1 {
		t.Fatalf("sftp options: %+v, %v", o, err)
	}
	for _, bad := range []map[string]string{
		{"sftp.nope": "x"},
		{"s3.path-style": "true"},
		{"sftp.connections": "0"},
	} {
		if _, err := sftpOptions(bad); err == nil {
			t.Errorf("sftp options %v accepted", bad)
		}
	}
	var so s3.Options
	if err := applyS3(&so, map[string]string{"s3.path-style": "true", "s3.storage-class": "STANDARD_IA"}); err != nil || !so.PathStyle || so.StorageClass != "STANDARD_IA" {
		t.Fatalf("s3 options: %+v, %v", so, err)
	}
	if err := applyS3(&so, map[string]string{"s3.path-style": "maybe"}); err == nil {
		t.Error("s3.path-style=maybe accepted")
	}
}
