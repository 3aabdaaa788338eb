package source

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

func TestStreamReaderCopies(t *testing.T) {
	data := make([]byte, 5*streamChunk+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	// iotest-like: a reader returning odd-sized pieces.
	got, err := io.ReadAll(StreamReader(t.Context(), &oddReader{r: bytes.NewReader(data)}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, differ from the %d written", len(got), len(data))
	}
}

type oddReader struct {
	r io.Reader
	n int
}

func (o *oddReader) Read(p []byte) (int, error) {
	o.n++
	return o.r.Read(p[:min(len(p), 1+o.n*7919%200000)])
}

// A Read blocked on an idle pipe returns once ctx is cancelled.
func TestStreamReaderCancelWhileBlocked(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	cause := errors.New("stop")
	ctx, cancel := context.WithCancelCause(t.Context())
	rd := StreamReader(ctx, pr)
	done := make(chan error, 1)
	go func() {
		_, err := rd.Read(make([]byte, 10))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Read returned %v before cancel", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel(cause)
	select {
	case err := <-done:
		if !errors.Is(err, cause) {
			t.Fatalf("Read error %v, want the cancel cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked 10 s after cancel")
	}
}
