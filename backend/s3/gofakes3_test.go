package s3_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"repo/backend"
	"repo/backend/s3"
)

// startGofakes3 serves an in-memory gofakes3 over TLS (or plain http) for
// the rest of tb, with options added to the quiet logger.
func startGofakes3(tb testing.TB, useTLS bool, options ...gofakes3.Option) (*httptest.Server, server) {
	tb.Helper()
	faker := gofakes3.New(s3mem.New(), append([]gofakes3.Option{gofakes3.WithLogger(gofakes3.DiscardLog())}, options...)...)
	ts := httptest.NewUnstartedServer(faker.Server())
	// Quiet: gofakes3 writes some error headers twice, and clients that
	// give up on a connection (cancellation, idle-pool races) log TLS
	// handshake errors; neither is this test's business.
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	if useTLS {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	tb.Cleanup(ts.Close)
	u, err := url.Parse(ts.URL)
	if err != nil {
		tb.Fatal(err)
	}
	var pool *x509.CertPool
	if useTLS {
		pool = x509.NewCertPool()
		pool.AddCert(ts.Certificate())
	}
	srv := server{
		options: func(testing.TB) s3.Options {
			return s3.Options{
				Endpoint:        u.Host,
				Insecure:        !useTLS,
				Bucket:          newBucketName(),
				Prefix:          "some/prefix",
				AccessKeyID:     "id",
				SecretAccessKey: "secret",
				RootCAs:         pool,
			}
		},
		exclusive: true,
		transport: func() http.RoundTripper {
			tr := ts.Client().Transport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 32 // not 2: keep connections, not handshakes
			return tr
		},
	}
	return ts, srv
}

func TestGofakes3TLS(t *testing.T) {
	t.Parallel()
	_, srv := startGofakes3(t, true)
	runServerTests(t, srv)
}

// TestGofakes3HTTP runs over plain http, where Save signs payloads
// instead of streaming them with chunk signatures (which gofakes3 stores
// into multipart parts), and without a prefix.
func TestGofakes3HTTP(t *testing.T) {
	t.Parallel()
	_, srv := startGofakes3(t, false)
	options := srv.options
	srv.options = func(tb testing.TB) s3.Options {
		opts := options(tb)
		opts.Prefix = ""
		return opts
	}
	runServerTests(t, srv)
}

// setBackClock is a gofakes3 time source that runs behind the real time by
// a settable amount, so that a test can make uploads and parts that look
// old.
type setBackClock struct{ back atomic.Int64 } // a time.Duration

func (c *setBackClock) set(back time.Duration) { c.back.Store(int64(back)) }

func (c *setBackClock) Now() time.Time {
	return time.Now().Add(-time.Duration(c.back.Load()))
}

func (c *setBackClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// TestRemoveTempAges checks how RemoveTemp judges an incomplete multipart
// upload's age: by when it was initiated, and by its newest part, so that
// a Save that is still sending parts of an old upload keeps it. gofakes3
// takes both times from its clock, which the test sets back (with its
// check of the requests' time turned off).
func TestRemoveTempAges(t *testing.T) {
	t.Parallel()
	clock := &setBackClock{}
	_, srv := startGofakes3(t, true, gofakes3.WithTimeSource(clock), gofakes3.WithTimeSkewLimit(0))
	opts := srv.options(t)
	be := create(t, opts)
	raw := rawCore(t, opts)
	tests := []struct {
		name      string
		initiated time.Duration // how long ago
		part      time.Duration // how long ago its one part was stored; <0: no part
		size      int
		removed   bool
	}{
		{"old, no part", 2 * time.Hour, -1, 0, true},
		{"old, old part", 2 * time.Hour, 90 * time.Minute, 100, true},
		{"old, fresh part", 2 * time.Hour, 10 * time.Minute, 50, false},
		{"half an hour", 30 * time.Minute, -1, 0, false},
		{"new", 0, 0, 7, false},
	}
	var removed, kept []string
	wantSize := 0
	for i, tt := range tests {
		key := fmt.Sprintf("%s/data/ab/ab%062x", opts.Prefix, i)
		clock.set(tt.initiated)
		id := startUpload(t, raw, opts, key)
		if tt.part >= 0 {
			clock.set(tt.part)
			putPart(t, raw, opts, key, id, 1, tt.size)
		}
		if tt.removed {
			removed = append(removed, key)
			wantSize += tt.size
		} else {
			kept = append(kept, key)
		}
	}
	clock.set(0)

	n, size, err := be.RemoveTemp(context.Background(), time.Hour)
	if err != nil {
		t.Fatalf("remove temp: %v", err)
	}
	if n != len(removed) || size != int64(wantSize) {
		t.Errorf("removed %d uploads of %d bytes, want %d of %d", n, size, len(removed), wantSize)
	}
	if got := openUploads(t, raw, opts, append(removed, kept...)); !slices.Equal(got, kept) {
		t.Errorf("uploads left: %q, want %q", got, kept)
	}
}

// BenchmarkSave measures uploads of 16 MiB objects (the default pack size)
// to gofakes3 over TLS, one at a time and Connections at once. Each
// iteration also removes its object (a HEAD and a DELETE) to bound the
// server's memory.
func BenchmarkSave(b *testing.B) {
	_, srv := startGofakes3(b, true)
	data := randBytes(1, 16<<20)
	for _, par := range []int{1, s3.DefaultConnections} {
		b.Run(fmt.Sprintf("16MiB/conns=%d", par), func(b *testing.B) {
			be := create(b, srv.options(b))
			ctx := context.Background()
			var seq atomic.Int64
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			var wg sync.WaitGroup
			for range par {
				wg.Go(func() {
					for i := seq.Add(1); i <= int64(b.N); i = seq.Add(1) {
						h := backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("%064x", i)}
						if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
							b.Error(err)
							return
						}
						if err := be.Remove(ctx, h); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// BenchmarkLoad measures downloads of a 16 MiB object from gofakes3 over
// TLS.
func BenchmarkLoad(b *testing.B) {
	_, srv := startGofakes3(b, true)
	be := create(b, srv.options(b))
	ctx := context.Background()
	data := randBytes(1, 16<<20)
	h := backend.Handle{Type: backend.PackFile, Name: randName(1)}
	if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var buf []byte
	for b.Loop() {
		var err error
		if buf, err = backend.LoadAll(ctx, be, h, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// headerRecorder records one request header of every request.
type headerRecorder struct {
	base   http.RoundTripper
	header string
	mu     sync.Mutex
	seen   map[string][]string // request kind → header values
}

func (r *headerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := req.Method
	if q := req.URL.Query(); q.Has("uploads") {
		kind = "initiate"
	} else if q.Has("partNumber") {
		kind = "part"
	}
	r.mu.Lock()
	r.seen[kind] = append(r.seen[kind], req.Header.Get(r.header))
	r.mu.Unlock()
	return r.base.RoundTrip(req)
}

// TestStorageClass checks that new objects, single PUT or multipart, carry
// the storage class.
func TestStorageClass(t *testing.T) {
	t.Parallel()
	_, srv := startGofakes3(t, true)
	rec := &headerRecorder{base: srv.transport(), header: "X-Amz-Storage-Class", seen: map[string][]string{}}
	opts := srv.options(t)
	opts.Transport = rec
	opts.StorageClass = "STANDARD_IA"
	opts.PartSize = s3.MinPartSize
	be := create(t, opts)
	ctx := context.Background()
	for i, size := range []int{100, s3.MinPartSize + 1} {
		rec.seen = map[string][]string{}
		h := backend.Handle{Type: backend.PackFile, Name: randName(uint64(i))}
		if err := be.Save(ctx, h, backend.NewByteReader(randBytes(uint64(i), size))); err != nil {
			t.Fatal(err)
		}
		kind := "PUT"
		if size > s3.MinPartSize {
			kind = "initiate"
		}
		if got := rec.seen[kind]; len(got) != 1 || got[0] != "STANDARD_IA" {
			t.Errorf("save of %d bytes: %s requests with storage class %q, want one with STANDARD_IA", size, kind, got)
		}
	}
}
