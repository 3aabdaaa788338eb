package location

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"repo/backend"
)

// TestOpenCreateS3 goes from an s3: location to a working backend on a
// gofakes3 server (plain http, so that no certificate needs trusting),
// with credentials from the environment as a user would give them.
func TestOpenCreateS3(t *testing.T) {
	faker := gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog()))
	ts := httptest.NewUnstartedServer(faker.Server())
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.Start()
	defer ts.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "id")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_REGION", "us-east-1")

	ctx := context.Background()
	s := "s3:" + ts.URL + "/bucket/repo"
	loc, err := Parse(s)
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
	defer be.Close()
	if be.Location() != s {
		t.Errorf("Location() = %q, want %q", be.Location(), s)
	}
	if !be.Properties().ExclusiveCreate {
		t.Error("gofakes3 honours If-None-Match, but ExclusiveCreate is false")
	}
	cfg := backend.Handle{Type: backend.ConfigFile}
	if err := be.Save(ctx, cfg, backend.NewByteReader([]byte("config"))); err != nil {
		t.Fatal(err)
	}
	be2, err := Open(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	defer be2.Close()
	if got, err := backend.LoadAll(ctx, be2, cfg, nil); err != nil || string(got) != "config" {
		t.Errorf("load through a second Open: %q, %v", got, err)
	}

	for _, fn := range []func(context.Context, Location) (backend.Backend, error){Open, Create} {
		if _, err := fn(ctx, Location{Scheme: "s3", Path: "https://host"}); err == nil || !strings.Contains(err.Error(), "no bucket") || !backend.IsPermanent(err) {
			t.Errorf("bad s3 path: got %v, want a permanent error about the bucket", err)
		}
	}
}
