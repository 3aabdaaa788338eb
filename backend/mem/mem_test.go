package mem_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/mem"
)

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return mem.New() })
}

// TestCopies checks that callers cannot change stored objects through the
// buffers they passed to Save or got from Load.
func TestCopies(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	h := backend.Handle{Type: backend.KeyFile, Name: "k"}
	buf := []byte("original")
	if err := be.Save(ctx, h, backend.NewByteReader(buf)); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXX")

	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		got, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		if string(got) != "original" {
			t.Errorf("after changing Save's buffer: loaded %q, want %q", got, "original")
		}
		copy(got, "YYYY")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte("original")) {
		t.Errorf("after changing a loaded buffer: loaded %q, want %q", got, "original")
	}
}
