package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"repo/backend"
	"repo/backend/backendtest"
	"repo/backend/retry"
	"repo/backend/s3"
)

// server is an S3 server the shared tests run against.
type server struct {
	// options returns options for a fresh, empty repository: a new bucket
	// on a local server, a new prefix on a shared one.
	options func(t testing.TB) s3.Options
	// exclusive is what Properties().ExclusiveCreate must be.
	exclusive bool
	// transport is a transport that trusts the server's certificate,
	// for tests that count requests.
	transport func() http.RoundTripper
	// skip maps conformance subtests (e.g. "Cancel") that test what the
	// server cannot do to the reason.
	skip map[string]string
}

var bucketSeq atomic.Int64

// newBucketName returns a bucket name unique in this process.
func newBucketName() string {
	return fmt.Sprintf("repo-test-%04d", bucketSeq.Add(1))
}

// unavailable skips t because a server cannot run, or fails it when the
// environment says that every test must run (CI=true).
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, but: "+format, args...)
	}
	t.Skipf(format, args...)
}

func create(t testing.TB, opts s3.Options) *s3.Backend {
	t.Helper()
	be, err := s3.Create(context.Background(), opts)
	if err != nil {
		t.Fatalf("create %v: %v", opts, err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// rawClient is a minio client on opts' server, to look behind the
// backend's back.
func rawClient(t testing.TB, opts s3.Options) *minio.Client {
	t.Helper()
	tr := opts.Transport
	if tr == nil {
		tr = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: opts.RootCAs}}
	}
	creds := credentials.NewStaticV4(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken)
	if opts.AccessKeyID == "" {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}})
	}
	endpoint, lookup := opts.Endpoint, minio.BucketLookupAuto
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	if opts.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds: creds, Secure: !opts.Insecure, Transport: tr, Region: opts.Region, BucketLookup: lookup,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// keysOf lists every key in opts' bucket under its prefix, including
// what the backend hides.
func keysOf(t testing.TB, opts s3.Options) []string {
	t.Helper()
	var keys []string
	for oi := range rawClient(t, opts).ListObjectsIter(context.Background(), opts.Bucket, minio.ListObjectsOptions{Prefix: opts.Prefix, Recursive: true}) {
		if oi.Err != nil {
			t.Fatalf("list bucket %s: %v", opts.Bucket, oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	return keys
}

// incompleteUploads returns the keys of unfinished multipart uploads in
// opts' bucket.
func incompleteUploads(t testing.TB, opts s3.Options) []string {
	t.Helper()
	var keys []string
	for u := range rawClient(t, opts).ListIncompleteUploads(context.Background(), opts.Bucket, opts.Prefix, true) {
		if minio.ToErrorResponse(u.Err).Code == "NotImplemented" {
			t.Logf("cannot check for incomplete uploads: %v", u.Err)
			return nil
		}
		if u.Err != nil {
			t.Fatalf("list multipart uploads in %s: %v", opts.Bucket, u.Err)
		}
		keys = append(keys, u.Key)
	}
	return keys
}

// countingTransport counts requests by kind, so that tests see listings
// page and large objects go up in parts.
type countingTransport struct {
	base   http.RoundTripper
	mu     sync.Mutex
	counts map[string]int
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	q := req.URL.Query()
	kind := req.Method
	switch {
	case q.Has("list-type") || (req.Method == http.MethodGet && q.Has("prefix")):
		kind = "list"
	case q.Has("partNumber"):
		kind = "part"
	case q.Has("uploads"):
		kind = "initiate"
	case req.Method == http.MethodPost && q.Has("uploadId"):
		kind = "complete"
	case req.Method == http.MethodDelete && q.Has("uploadId"):
		kind = "abort"
	}
	c.mu.Lock()
	if c.counts == nil {
		c.counts = make(map[string]int)
	}
	c.counts[kind]++
	c.mu.Unlock()
	return c.base.RoundTrip(req)
}

func (c *countingTransport) count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[kind]
}

func (c *countingTransport) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = nil
}

func randBytes(seed uint64, n int) []byte {
	buf := make([]byte, n)
	rng := mrand.New(mrand.NewPCG(seed, seed))
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			buf[i+j] = byte(v >> (8 * j))
		}
	}
	return buf
}

func randName(seed uint64) string {
	return hex.EncodeToString(randBytes(seed, 32))
}

// runServerTests runs the conformance suite and the S3-specific tests
// against srv.
func runServerTests(t *testing.T, srv server) {
	t.Run("Conformance", func(t *testing.T) {
		backendtest.Run(t, func(t *testing.T) backend.Backend {
			if reason, ok := srv.skip[path.Base(t.Name())]; ok {
				t.Skip(reason)
			}
			be, err := s3.Create(context.Background(), srv.options(t))
			if err != nil {
				t.Fatal(err)
			}
			return be
		})
	})
	t.Run("ExclusiveCreate", func(t *testing.T) { t.Parallel(); testExclusiveCreate(t, srv) })
	t.Run("Open", func(t *testing.T) { t.Parallel(); testOpen(t, srv) })
	t.Run("ListMany", func(t *testing.T) { t.Parallel(); testListMany(t, srv) })
	t.Run("Multipart", func(t *testing.T) { t.Parallel(); testMultipart(t, srv) })
	t.Run("MultipartFailure", func(t *testing.T) { t.Parallel(); testMultipartFailure(t, srv) })
	t.Run("RemoveTemp", func(t *testing.T) { t.Parallel(); testRemoveTemp(t, srv) })
}

// testExclusiveCreate checks the probe's verdict and that it cleans up.
func testExclusiveCreate(t *testing.T, srv server) {
	opts := srv.options(t)
	be := create(t, opts)
	if got := be.Properties().ExclusiveCreate; got != srv.exclusive {
		t.Errorf("ExclusiveCreate = %v, want %v", got, srv.exclusive)
	}
	if keys := keysOf(t, opts); len(keys) != 0 {
		t.Errorf("keys left after Create: %q", keys)
	}
	ctx := context.Background()
	h := backend.Handle{Type: backend.LockFile, Name: "lock1"}
	if err := be.Save(ctx, h, backend.NewByteReader([]byte("first"))); err != nil {
		t.Fatal(err)
	}
	err := be.Save(ctx, h, backend.NewByteReader([]byte("second")))
	if srv.exclusive != errors.Is(err, backend.ErrExists) {
		t.Errorf("second save with ExclusiveCreate %v: %v", srv.exclusive, err)
	}
}

// testOpen checks that Open needs the bucket and a config.
func testOpen(t *testing.T, srv server) {
	ctx := context.Background()
	opts := srv.options(t)
	if be, err := s3.Open(ctx, opts); !errors.Is(err, backend.ErrNotExist) || !backend.IsPermanent(err) {
		t.Fatalf("open before create: got %v, %v; want a permanent ErrNotExist", be, err)
	}
	be := create(t, opts)
	if _, err := s3.Open(ctx, opts); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("open without config: got %v, want ErrNotExist", err)
	}
	cfg := backend.Handle{Type: backend.ConfigFile}
	if err := be.Save(ctx, cfg, backend.NewByteReader([]byte("config"))); err != nil {
		t.Fatal(err)
	}
	be2, err := s3.Open(ctx, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer be2.Close()
	if be2.Location() != be.Location() || be2.Properties() != be.Properties() {
		t.Errorf("Open: %s %+v, Create: %s %+v", be2.Location(), be2.Properties(), be.Location(), be.Properties())
	}
	if got, err := backend.LoadAll(ctx, be2, cfg, nil); err != nil || string(got) != "config" {
		t.Errorf("load config through Open: %q, %v", got, err)
	}
	// Create on an existing repository is fine; the repository layer
	// looks for the config.
	create(t, opts)
}

// testListMany lists more keys than one page (1000) holds. Packs, since
// their keys are the deepest; every type lists the same way.
func testListMany(t *testing.T, srv server) {
	const n = 1050
	ct := &countingTransport{base: srv.transport()}
	opts := srv.options(t)
	opts.Transport = ct
	be := create(t, opts)
	ctx := context.Background()

	types := []backend.FileType{backend.PackFile}
	want := map[backend.FileType]map[string]int64{}
	var handles []backend.Handle
	for i, ft := range types {
		want[ft] = map[string]int64{}
		for j := range n {
			h := backend.Handle{Type: ft, Name: randName(uint64(i*n + j))}
			handles = append(handles, h)
			want[ft][h.Name] = int64(j % 7)
		}
	}
	var wg sync.WaitGroup
	work := make(chan backend.Handle)
	for range 16 {
		wg.Go(func() {
			for h := range work {
				if err := be.Save(ctx, h, backend.NewByteReader(make([]byte, want[h.Type][h.Name]))); err != nil {
					t.Errorf("save %v: %v", h, err)
				}
			}
		})
	}
	for _, h := range handles {
		work <- h
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, ft := range types {
		ct.reset()
		got := map[string]int64{}
		err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			if _, dup := got[fi.Name]; dup {
				t.Errorf("list %v: %s twice", ft, fi.Name)
			}
			got[fi.Name] = fi.Size
			return nil
		})
		if err != nil {
			t.Fatalf("list %v: %v", ft, err)
		}
		if len(got) != n {
			t.Errorf("list %v: %d objects, want %d", ft, len(got), n)
		}
		for name, size := range want[ft] {
			if gs, ok := got[name]; !ok || gs != size {
				t.Errorf("list %v: %s has size %d (listed %v), want %d", ft, name, gs, ok, size)
				break
			}
		}
		if pages := ct.count("list"); pages < 2 {
			t.Errorf("list %v of %d objects took %d requests; no pagination tested", ft, n, pages)
		}
	}
	// Stopping early ends the listing.
	calls := 0
	errStop := errors.New("stop")
	if err := be.List(ctx, backend.PackFile, func(backend.FileInfo) error { calls++; return errStop }); err != errStop || calls != 1 {
		t.Errorf("list stopped by fn: %v after %d calls", err, calls)
	}
}

const (
	testPartSize  = 16 << 20
	multipartSize = 40<<20 + 123 // three parts: 16, 16 and 8 MiB + 123
)

// testMultipart saves an object of three parts and reads ranges of it,
// across the part boundaries.
func testMultipart(t *testing.T, srv server) {
	ct := &countingTransport{base: srv.transport()}
	opts := srv.options(t)
	opts.Transport = ct
	opts.PartSize = testPartSize
	be := create(t, opts)
	ctx := context.Background()
	data := randBytes(1, multipartSize)
	h := backend.Handle{Type: backend.PackFile, Name: randName(2)}

	ct.reset()
	if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
		t.Fatalf("save: %v", err)
	}
	if got := ct.count("part"); got != 3 {
		t.Errorf("save of %d bytes with parts of %d: %d part uploads, want 3", len(data), testPartSize, got)
	}
	if ct.count("complete") != 1 {
		t.Errorf("no CompleteMultipartUpload: %v", ct.counts)
	}
	got, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("load: %d bytes, want %d; first difference at %d", len(got), len(data), firstDiff(got, data))
	}
	for _, r := range []struct {
		offset int64
		length int
	}{
		{0, 100},
		{testPartSize - 50, 100},
		{testPartSize, 1},
		{2*testPartSize - 1, 8 << 20},
		{multipartSize - 10, 10},
		{5, testPartSize * 2},
	} {
		buf := make([]byte, r.length)
		if err := backend.ReadAt(ctx, be, h, buf, r.offset); err != nil {
			t.Errorf("ReadAt %d+%d: %v", r.offset, r.length, err)
		} else if !bytes.Equal(buf, data[r.offset:r.offset+int64(r.length)]) {
			t.Errorf("ReadAt %d+%d: wrong content", r.offset, r.length)
		}
	}
	if fi, err := be.Stat(ctx, h); err != nil || fi.Size != multipartSize {
		t.Errorf("stat: %+v, %v", fi, err)
	}

	// Saving it again: refused when exclusive (the multipart path asks
	// first), replaced otherwise.
	err = be.Save(ctx, h, backend.NewByteReader(data))
	if srv.exclusive && !errors.Is(err, backend.ErrExists) {
		t.Errorf("save existing multipart object: %v, want ErrExists", err)
	}
	if !srv.exclusive && err != nil {
		t.Errorf("save existing multipart object: %v", err)
	}
	if ups := incompleteUploads(t, opts); len(ups) != 0 {
		t.Errorf("incomplete multipart uploads left: %q", ups)
	}
}

// failingReader yields data but fails, or cancels, once past failAt.
type failingReader struct {
	data   []byte
	pos    int
	failAt int
	cancel context.CancelFunc // when set, cancel instead of failing
}

var errFailing = errors.New("failing reader")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.pos >= r.failAt {
		if r.cancel == nil {
			return 0, errFailing
		}
		r.cancel()
	}
	if r.pos >= len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.pos:])
	r.pos += n
	return n, nil
}

func (r *failingReader) Rewind() error { r.pos = 0; return nil }
func (r *failingReader) Length() int64 { return int64(len(r.data)) }

// testMultipartFailure checks that a multipart Save that fails or is
// cancelled in its second part leaves neither an object nor an upload.
func testMultipartFailure(t *testing.T, srv server) {
	ct := &countingTransport{base: srv.transport()}
	opts := srv.options(t)
	opts.Transport = ct
	opts.PartSize = s3.MinPartSize // small parts: less data to send
	be := create(t, opts)
	size := 2*s3.MinPartSize + 1000
	data := randBytes(3, size)

	for i, tt := range []struct {
		name    string
		failAt  int
		cancel  bool
		wantErr error
	}{
		{"reader fails", s3.MinPartSize + 1<<20, false, errFailing},
		{"cancelled", s3.MinPartSize + 1<<20, true, context.Canceled},
		{"reader fails at the end", size, false, errFailing},
		{"longer than announced", 0, false, nil},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		rd := &failingReader{data: data, failAt: tt.failAt}
		var src backend.RewindReader = rd
		switch {
		case tt.cancel:
			rd.cancel = cancel
		case tt.failAt == 0:
			rd.failAt = len(data) + 1
			src = &lyingLength{rd, int64(len(data) - 1)}
		}
		h := backend.Handle{Type: backend.PackFile, Name: randName(uint64(10 + i))}
		ct.reset()
		err := be.Save(ctx, h, src)
		cancel()
		if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: save: %v, want %v", tt.name, err, tt.wantErr)
		}
		if ct.count("abort") != 1 {
			t.Errorf("%s: %d AbortMultipartUpload requests, want 1", tt.name, ct.count("abort"))
		}
		if _, err := be.Stat(context.Background(), h); !errors.Is(err, backend.ErrNotExist) {
			t.Errorf("%s: stat after failed save: %v, want ErrNotExist", tt.name, err)
		}
	}
	if ups := incompleteUploads(t, opts); len(ups) != 0 {
		t.Errorf("incomplete multipart uploads left: %q", ups)
	}
}

// lyingLength announces another length than its reader has.
type lyingLength struct {
	backend.RewindReader
	length int64
}

func (l *lyingLength) Length() int64 { return l.length }

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// rawCore is rawClient for single requests, such as the steps of a
// multipart upload.
func rawCore(t testing.TB, opts s3.Options) minio.Core {
	t.Helper()
	return minio.Core{Client: rawClient(t, opts)}
}

// startUpload begins a multipart upload of key behind the backend's back,
// as a Save that is then killed does, and returns its id. Every upload
// still open at the end of the test is aborted.
func startUpload(t testing.TB, c minio.Core, opts s3.Options, key string) string {
	t.Helper()
	id, err := c.NewMultipartUpload(context.Background(), opts.Bucket, key, minio.PutObjectOptions{})
	if err != nil {
		t.Fatalf("start upload of %s: %v", key, err)
	}
	t.Cleanup(func() {
		err := c.AbortMultipartUpload(context.Background(), opts.Bucket, key, id)
		if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
			t.Errorf("clean up upload of %s: %v", key, err)
		}
	})
	return id
}

// putPart uploads part number n of size bytes to the upload id of key,
// signing the payload as Save does (see setPutOptions).
func putPart(t testing.TB, c minio.Core, opts s3.Options, key, id string, n, size int) {
	t.Helper()
	data := randBytes(uint64(n), size)
	var hash string
	if opts.Insecure {
		sum := sha256.Sum256(data)
		hash = hex.EncodeToString(sum[:])
	}
	_, err := c.PutObjectPart(context.Background(), opts.Bucket, key, id, n, bytes.NewReader(data), int64(size),
		minio.PutObjectPartOptions{Sha256Hex: hash, DisableContentSha256: true})
	if err != nil {
		t.Fatalf("upload part %d of %s: %v", n, key, err)
	}
}

// openUploads returns which of keys have an incomplete multipart upload.
func openUploads(t testing.TB, c minio.Core, opts s3.Options, keys []string) []string {
	t.Helper()
	var open []string
	for _, key := range keys {
		res, err := c.ListMultipartUploads(context.Background(), opts.Bucket, key, "", "", "", 0)
		if minio.ToErrorResponse(err).Code == "NoSuchUpload" { // gofakes3: no upload in the bucket
			continue
		}
		if err != nil {
			t.Fatalf("list uploads of %s: %v", key, err)
		}
		for _, u := range res.Uploads {
			if u.Key == key {
				open = append(open, key)
				break
			}
		}
	}
	return open
}

// testRemoveTemp plants incomplete multipart uploads as killed Saves leave
// them and checks that RemoveTemp aborts those of the repository's keys,
// and only when they are old enough: olderThan of an hour keeps the fresh
// ones, a negative olderThan (a cutoff in the future) makes every one old.
// Ages in between are tested against gofakes3 (TestRemoveTempAges), whose
// clock the test can set back.
func testRemoveTemp(t *testing.T, srv server) {
	ctx := context.Background()
	opts := srv.options(t)
	be := create(t, opts)
	raw := rawCore(t, opts)
	if _, err := raw.ListMultipartUploads(ctx, opts.Bucket, "", "", "", "", 0); minio.ToErrorResponse(err).Code == "NotImplemented" {
		// RemoveTemp finds nothing there, and must not fail prune.
		if n, size, err := be.RemoveTemp(ctx, -time.Hour); n != 0 || size != 0 || err != nil {
			t.Errorf("remove temp on a server without ListMultipartUploads: %d, %d, %v; want 0, 0, nil", n, size, err)
		}
		t.Skipf("the server cannot list multipart uploads (%v), so there is nothing for RemoveTemp to find", err)
	}
	// Nothing yet (gofakes3 answers NoSuchUpload for a bucket that never
	// had an upload).
	if n, size, err := be.RemoveTemp(ctx, -time.Hour); n != 0 || size != 0 || err != nil {
		t.Errorf("remove temp without uploads: %d, %d, %v", n, size, err)
	}

	obj := backend.Handle{Type: backend.PackFile, Name: randName(40)}
	if err := be.Save(ctx, obj, backend.NewByteReader([]byte("pack"))); err != nil {
		t.Fatal(err)
	}
	prefix := ""
	if opts.Prefix != "" {
		prefix = opts.Prefix + "/"
	}
	pack := randName(41)
	ours := []struct {
		key  string
		size int
	}{
		{prefix + "data/" + pack[:2] + "/" + pack, 1000},
		{prefix + "index/" + randName(42), 0},
		{prefix + "config", 10},
	}
	var oursKeys []string
	for _, u := range ours {
		id := startUpload(t, raw, opts, u.key)
		if u.size > 0 {
			putPart(t, raw, opts, u.key, id, 1, u.size)
		}
		oursKeys = append(oursKeys, u.key)
	}
	// Not the repository's: a key outside its layout and, with a prefix,
	// one of a sibling prefix that merely starts the same.
	foreign := []string{prefix + "notours/" + pack}
	if opts.Prefix != "" {
		foreign = append(foreign, opts.Prefix+"-sibling/data/"+pack[:2]+"/"+pack)
	}
	for _, key := range foreign {
		putPart(t, raw, opts, key, startUpload(t, raw, opts, key), 1, 5)
	}
	all := append(append([]string(nil), oursKeys...), foreign...)

	if n, size, err := be.RemoveTemp(ctx, time.Hour); n != 0 || size != 0 || err != nil {
		t.Errorf("remove temp of an hour: %d, %d, %v; want nothing removed", n, size, err)
	}
	if got := openUploads(t, raw, opts, all); len(got) != len(all) {
		t.Errorf("after remove temp of an hour: uploads of %q, want all of %q", got, all)
	}

	// Through a wrapper, as prune finds it.
	tc, ok := backend.As[backend.TempCleaner](retry.New(be, retry.Options{}))
	if !ok {
		t.Fatal("backend.As does not find RemoveTemp through a wrapper")
	}
	n, size, err := tc.RemoveTemp(ctx, -time.Hour)
	if err != nil {
		t.Fatalf("remove temp: %v", err)
	}
	if n != len(ours) || size != 1000+10 {
		t.Errorf("removed %d uploads of %d bytes, want %d of %d", n, size, len(ours), 1000+10)
	}
	if got := openUploads(t, raw, opts, all); !slices.Equal(got, foreign) {
		t.Errorf("uploads left: %q, want only the foreign %q", got, foreign)
	}
	if got, err := backend.LoadAll(ctx, be, obj, nil); err != nil || string(got) != "pack" {
		t.Errorf("object after RemoveTemp: %q, %v", got, err)
	}
	if n, size, err := be.RemoveTemp(ctx, -time.Hour); n != 0 || size != 0 || err != nil {
		t.Errorf("remove temp again: %d, %d, %v", n, size, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := be.RemoveTemp(cctx, -time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("remove temp with a cancelled context: %v, want context.Canceled", err)
	}
}
