package sftp

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	tests := []struct {
		in      string
		want    Location
		wantErr string // part of the error message; "" for success
	}{
		{"sftp:host:/srv/repo", Location{Host: "host", Path: "/srv/repo"}, ""},
		{"sftp:user@host:/srv/repo", Location{User: "user", Host: "host", Path: "/srv/repo"}, ""},
		{"sftp:user@host:2222:/srv/repo", Location{User: "user", Host: "host", Port: "2222", Path: "/srv/repo"}, ""},
		{"sftp:host:2222:repo", Location{Host: "host", Port: "2222", Path: "repo"}, ""},
		{"sftp:host:repo", Location{Host: "host", Path: "repo"}, ""},
		{"sftp:host:backups/repo/", Location{Host: "host", Path: "backups/repo"}, ""},
		{"sftp:host:~/repo", Location{Host: "host", Path: "repo"}, ""},
		{"sftp:host:./12:x", Location{Host: "host", Path: "12:x"}, ""},
		{"sftp:host:a:b", Location{Host: "host", Path: "a:b"}, ""},
		{"sftp:host:/srv/a:b", Location{Host: "host", Path: "/srv/a:b"}, ""},
		{"sftp:u@x@host:/r", Location{User: "u@x", Host: "host", Path: "/r"}, ""},
		{"sftp:[::1]:/srv/repo", Location{Host: "::1", Path: "/srv/repo"}, ""},
		{"sftp:user@[fe80::1]:22:/srv/repo", Location{User: "user", Host: "fe80::1", Port: "22", Path: "/srv/repo"}, ""},
		{"sftp:192.168.1.2:/r", Location{Host: "192.168.1.2", Path: "/r"}, ""},
		{"sftp://host/srv/repo", Location{Host: "host", Path: "/srv/repo"}, ""},
		{"sftp://user@host:2222/srv/repo", Location{User: "user", Host: "host", Port: "2222", Path: "/srv/repo"}, ""},
		{"sftp://user@host/~/repo", Location{User: "user", Host: "host", Path: "repo"}, ""},
		{"sftp://[::1]:2222/srv/repo", Location{Host: "::1", Port: "2222", Path: "/srv/repo"}, ""},
		{"sftp://host/srv/with%20space", Location{Host: "host", Path: "/srv/with space"}, ""},
		{"sftp://host//srv/repo", Location{Host: "host", Path: "/srv/repo"}, ""},

		{"host:/srv/repo", Location{}, "does not start with sftp:"},
		{"sftp:", Location{}, "no ':' between host and path"},
		{"sftp:host", Location{}, "no ':' between host and path"},
		{"sftp:host:", Location{}, "empty path"},
		{"sftp:host:2222:", Location{}, "empty path"},
		{"sftp::/srv/repo", Location{}, "no host"},
		{"sftp:@host:/r", Location{}, "empty user name"},
		{"sftp:host:99999:/r", Location{}, `invalid port "99999"`},
		{"sftp:host:0:/r", Location{}, `invalid port "0"`},
		{"sftp:host:~", Location{}, "home directory itself"},
		{"sftp:[::1:/r", Location{}, "no ':' between host and path"},
		{"sftp:a/b:/r", Location{}, `invalid host "a/b"`},
		{"sftp://host", Location{}, "no path"},
		{"sftp://host/", Location{}, "no path"},
		{"sftp://host/~", Location{}, "home directory itself"},
		{"sftp://user:secret@host/r", Location{}, "passwords are not supported"},
		{"sftp://host:x/r", Location{}, "invalid port"},
		{"sftp://u:secret@host:x/r", Location{}, "invalid port"},
		{"sftp://host/r?x=1", Location{}, "query"},
		{"sftp:///r", Location{}, "no host"},
	}
	for _, tt := range tests {
		got, err := ParseLocation(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseLocation(%q): got %+v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("ParseLocation(%q): error %q shows the password", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		// String gives a form that parses to the same location.
		again, err := ParseLocation(got.String())
		if err != nil || again != got {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

func TestLocationString(t *testing.T) {
	tests := []struct {
		loc  Location
		want string
	}{
		{Location{Host: "host", Path: "/srv/repo"}, "sftp:host:/srv/repo"},
		{Location{User: "u", Host: "host", Port: "2222", Path: "repo"}, "sftp:u@host:2222:repo"},
		{Location{Host: "::1", Path: "/r"}, "sftp:[::1]:/r"},
		{Location{Host: "h", Path: "12:x"}, "sftp:h:./12:x"},
		{Location{Host: "h", Path: "~x"}, "sftp:h:./~x"},
	}
	for _, tt := range tests {
		if got := tt.loc.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.loc, got, tt.want)
		}
	}
}

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"ssh -s host sftp", []string{"ssh", "-s", "host", "sftp"}, false},
		{"  /usr/lib/openssh/sftp-server  ", []string{"/usr/lib/openssh/sftp-server"}, false},
		{`ssh -o 'ProxyCommand=nc -X 5 %h %p' host`, []string{"ssh", "-o", "ProxyCommand=nc -X 5 %h %p", "host"}, false},
		{`a "b c" d\ e "f\"g" 'h\i' ""`, []string{"a", "b c", "d e", `f"g`, `h\i`, ""}, false},
		{"a\tb\nc", []string{"a", "b", "c"}, false},
		{"", nil, true},
		{"   ", nil, true},
		{"a 'b", nil, true},
		{`a "b`, nil, true},
		{`a\`, nil, true},
	}
	for _, tt := range tests {
		got, err := splitCommand(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("splitCommand(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
			t.Errorf("splitCommand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
