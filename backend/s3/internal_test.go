package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/minio/minio-go/v7"

	"repo/backend"
)

func TestClassify(t *testing.T) {
	b := &Backend{bucket: "bucket"}
	resp := func(code string, status int) error {
		return minio.ErrorResponse{Code: code, StatusCode: status, Message: "message"}
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name      string
		ctx       context.Context
		err       error
		is        error // errors.Is must hold; nil: no check
		permanent bool
	}{
		{"not found", nil, resp("NoSuchKey", 404), backend.ErrNotExist, true},
		{"wrapped not found", nil, fmt.Errorf("get: %w", resp("NoSuchKey", 404)), backend.ErrNotExist, true},
		{"no bucket", nil, resp("NoSuchBucket", 404), backend.ErrNotExist, true},
		{"precondition", nil, resp("PreconditionFailed", 412), backend.ErrExists, true},
		{"access denied", nil, resp("AccessDenied", 403), nil, true},
		{"unknown key", nil, resp("InvalidAccessKeyId", 403), nil, true},
		{"bad signature", nil, resp("SignatureDoesNotMatch", 403), nil, true},
		{"403 without code", nil, resp("", 403), nil, true},
		{"expired token", nil, resp("ExpiredToken", 400), nil, true},
		{"archived", nil, resp("InvalidObjectState", 403), nil, true},
		{"not implemented", nil, resp("NotImplemented", 501), nil, true},
		{"internal error", nil, resp("InternalError", 500), nil, false},
		{"unavailable", nil, resp("ServiceUnavailable", 503), nil, false},
		{"slow down", nil, resp("SlowDown", 503), nil, false},
		{"request timeout", nil, resp("RequestTimeout", 400), nil, false},
		{"conditional conflict", nil, resp("ConditionalRequestConflict", 409), nil, false},
		{"connection reset", nil, &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, nil, false},
		{"unexpected EOF", nil, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF, false},
		{"cancelled", cancelled, errors.New("whatever the transport said"), context.Canceled, true},
	}
	for _, tt := range tests {
		ctx := tt.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		got := b.classify(ctx, tt.err)
		if tt.is != nil && !errors.Is(got, tt.is) {
			t.Errorf("%s: %v is not %v", tt.name, got, tt.is)
		}
		if backend.IsPermanent(got) != tt.permanent {
			t.Errorf("%s: %v: permanent %v, want %v", tt.name, got, backend.IsPermanent(got), tt.permanent)
		}
	}
	if b.classify(context.Background(), nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

// TestBody checks the reader a PUT sends: exactly the announced length,
// the last bytes held back until the source proves to end, ctx obeyed,
// and no reads after detach.
func TestBody(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 300_000) // 3 MB: several steps
	type src struct{ io.Reader }                        // hides bytes.Reader's WriteTo
	tests := []struct {
		name    string
		rd      io.Reader
		size    int64
		wantErr string
	}{
		{"exact", bytes.NewReader(data), int64(len(data)), ""},
		{"empty", bytes.NewReader(nil), 0, ""},
		{"shorter", bytes.NewReader(data), int64(len(data)) + 1, "yielded 3000000 bytes, want 3000001"},
		{"longer", bytes.NewReader(data), int64(len(data)) - 1, "more than the announced"},
		{"fails at the end", io.MultiReader(bytes.NewReader(data), &errReader{}), int64(len(data)), "read: broken"},
		{"fails early", io.MultiReader(bytes.NewReader(data[:10]), &errReader{}), int64(len(data)), "read: broken"},
	}
	for _, tt := range tests {
		b := newBody(context.Background(), src{tt.rd}, tt.size)
		var out bytes.Buffer
		_, err := io.Copy(&out, b)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr))):
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.wantErr)
		case tt.wantErr == "" && !bytes.Equal(out.Bytes(), data[:tt.size]):
			t.Errorf("%s: %d bytes out, want %d", tt.name, out.Len(), tt.size)
		case tt.wantErr != "" && int64(out.Len()) >= tt.size:
			t.Errorf("%s: all %d bytes handed out before the failure", tt.name, out.Len())
		}
		if derr := b.detach(); (derr != nil) != (tt.wantErr != "") {
			t.Errorf("%s: detach: %v", tt.name, derr)
		}
	}

	// Cancellation stops the next step.
	ctx, cancel := context.WithCancel(context.Background())
	b := newBody(ctx, bytes.NewReader(data), int64(len(data)))
	buf := make([]byte, len(data))
	if n, err := b.Read(buf); err != nil || n != maxStep {
		t.Fatalf("first read: %d, %v; want %d bytes", n, err, maxStep)
	}
	cancel()
	if _, err := b.Read(buf); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
	if err := b.detach(); !errors.Is(err, context.Canceled) {
		t.Errorf("detach after cancel: %v", err)
	}

	// After detach nothing reads the source.
	b = newBody(context.Background(), &errReader{}, 10)
	b.detach()
	if _, err := b.Read(buf); !errors.Is(err, errDetached) {
		t.Errorf("read after detach: %v", err)
	}
}

type errReader struct{}

func (*errReader) Read([]byte) (int, error) { return 0, errors.New("broken") }

func TestNameOf(t *testing.T) {
	tests := []struct {
		t    backend.FileType
		rel  string
		want string // "" for not addressable
	}{
		{backend.KeyFile, "abc", "abc"},
		{backend.KeyFile, "sub/abc", ""},
		{backend.KeyFile, "ABC", ""},
		{backend.KeyFile, ".tmp", ""},
		{backend.PackFile, "ab/abcd", "abcd"},
		{backend.PackFile, "ab/ab", "ab"},
		{backend.PackFile, "ab/cd", ""},
		{backend.PackFile, "abcd", ""},
		{backend.PackFile, "abc/abcd", ""},
		{backend.PackFile, "ab/abcd/x", ""},
		{backend.QuarantineFile, "a", "a"},
	}
	for _, tt := range tests {
		name, ok := nameOf(tt.t, tt.rel)
		if name != tt.want || ok != (tt.want != "") {
			t.Errorf("nameOf(%v, %q) = %q, %v; want %q", tt.t, tt.rel, name, ok, tt.want)
		}
	}
}
