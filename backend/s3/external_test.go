package s3_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"testing"

	"github.com/minio/minio-go/v7"

	"repo/backend/s3"
)

// TestExternal runs the suite against the server named by
// REPO_TEST_S3_ENDPOINT, a location as ParseLocation reads it that names an
// existing bucket ("https://minio.example:9000/test-bucket",
// "my-bucket/ci" for AWS). Credentials and region come from the AWS
// environment. Each repository lives under a random prefix below the
// location's and is removed at the end.
func TestExternal(t *testing.T) {
	loc := os.Getenv("REPO_TEST_S3_ENDPOINT")
	if loc == "" {
		t.Skip("REPO_TEST_S3_ENDPOINT not set")
	}
	base, err := s3.ParseLocation(loc)
	if err != nil {
		t.Fatalf("REPO_TEST_S3_ENDPOINT: %v", err)
	}
	srv := server{
		options: func(tb testing.TB) s3.Options {
			opts := base
			var id [8]byte
			_, _ = rand.Read(id[:])
			if opts.Prefix != "" {
				opts.Prefix += "/"
			}
			opts.Prefix += "repo-test-" + hex.EncodeToString(id[:])
			tb.Cleanup(func() { removeAll(tb, opts) })
			return opts
		},
		transport: func() http.RoundTripper {
			tr, err := minio.DefaultTransport(!base.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			return tr
		},
	}
	// What the server supports is what the probe finds; the tests check
	// that Save then behaves accordingly.
	be := create(t, srv.options(t))
	srv.exclusive = be.Properties().ExclusiveCreate
	t.Logf("%s: ExclusiveCreate %v", be.Location(), srv.exclusive)
	runServerTests(t, srv)
}

// removeAll deletes every object under opts' prefix.
func removeAll(tb testing.TB, opts s3.Options) {
	c := rawClient(tb, opts)
	ctx := context.Background()
	objs := c.ListObjects(ctx, opts.Bucket, minio.ListObjectsOptions{Prefix: opts.Prefix + "/", Recursive: true})
	for e := range c.RemoveObjects(ctx, opts.Bucket, objs, minio.RemoveObjectsOptions{}) {
		tb.Errorf("clean up %s: %v", e.ObjectName, e.Err)
	}
}
