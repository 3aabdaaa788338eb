package s3

import (
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	tests := []struct {
		in      string
		want    Options
		wantErr string // a part of the error; "" for success
	}{
		{"https://s3.example.com/bucket", Options{Endpoint: "s3.example.com", Bucket: "bucket"}, ""},
		{"https://s3.example.com/bucket/", Options{Endpoint: "s3.example.com", Bucket: "bucket"}, ""},
		{"https://127.0.0.1:9000/bucket/a/b", Options{Endpoint: "127.0.0.1:9000", Bucket: "bucket", Prefix: "a/b"}, ""},
		{"https://host/bucket/a/b/", Options{Endpoint: "host", Bucket: "bucket", Prefix: "a/b"}, ""},
		{"http://localhost:4568/my.bucket/repo", Options{Endpoint: "localhost:4568", Insecure: true, Bucket: "my.bucket", Prefix: "repo"}, ""},
		{"https://[::1]:9000/bucket", Options{Endpoint: "[::1]:9000", Bucket: "bucket"}, ""},
		{"bucket", Options{Bucket: "bucket"}, ""},
		{"bucket/", Options{Bucket: "bucket"}, ""},
		{"bucket/prefix", Options{Bucket: "bucket", Prefix: "prefix"}, ""},
		{"bucket/deep/prefix/", Options{Bucket: "bucket", Prefix: "deep/prefix"}, ""},
		{"", Options{}, "no bucket"},
		{"/bucket", Options{}, "no bucket"},
		{"https://host", Options{}, "no bucket"},
		{"https://host/", Options{}, "no bucket"},
		{"https:///bucket", Options{}, "no host"},
		{"https://key:secret@host/bucket", Options{}, "credentials do not belong"},
		{"https://host/bucket?region=x", Options{}, "query"},
		{"https://host/bucket#x", Options{}, "fragment"},
		{"ftp://host/bucket", Options{}, "only https:// and http://"},
		{"s3.amazonaws.com/bucket", Options{}, "looks like a host"},
		{"host:9000/bucket", Options{}, "looks like a host"},
		{"Bad_Bucket!", Options{}, "bucket"},
		{"ab", Options{}, "bucket"},
		{"bucket/a//b", Options{}, "empty, . or .. component"},
		{"bucket/a/../b", Options{}, "empty, . or .. component"},
		{"https://host/bucket/./x", Options{}, "empty, . or .. component"},
	}
	for _, tt := range tests {
		got, err := ParseLocation(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseLocation(%q) = %+v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		// String is the canonical form, which parses to the same.
		again, err := ParseLocation(got.String())
		if err != nil || again != got {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

func TestOptionsCheck(t *testing.T) {
	for _, tt := range []struct {
		opts    Options
		wantErr string
	}{
		{Options{Bucket: "bucket"}, ""},
		{Options{Bucket: "bucket", PartSize: MinPartSize}, ""},
		{Options{}, "no bucket"},
		{Options{Bucket: "bucket", Prefix: "/x"}, "leading or trailing"},
		{Options{Bucket: "bucket", PartSize: 1 << 20}, "below S3's minimum"},
		{Options{Bucket: "bucket", Connections: -1}, "negative"},
	} {
		err := tt.opts.check()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("check %+v: %v, want %q", tt.opts, err, tt.wantErr)
		}
	}
}
