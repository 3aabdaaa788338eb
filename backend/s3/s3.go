package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"repo/backend"
)

var _ backend.Backend = (*Backend)(nil)

// Backend is a repository in an S3 bucket. It is safe for concurrent use.
type Backend struct {
	client *minio.Client
	core   minio.Core // the same client, for single-request calls
	// transport is the one Backend made, closed by Close; nil when the
	// caller passed Options.Transport.
	transport *http.Transport

	location     string // "s3:" + Options.String(), for messages
	bucket       string
	region       string // "" when minio-go asks the server
	prefix       string // "" or the key prefix ending in "/"
	storageClass string
	partSize     int64
	// signPayload: plain http, so PUT bodies are signed with their
	// SHA-256 instead of the chunked streaming signature.
	signPayload bool
	props       backend.Properties
	// partBufs holds *[]byte of partSize bytes for multipart uploads.
	partBufs sync.Pool
}

// Create returns a backend on opts, making the bucket if it does not exist.
// Like local.Create it does not look for a config: a bucket or prefix that
// holds a repository already is fine here, and the repository layer refuses
// to initialise it again. It probes whether the server honours
// If-None-Match (see the package documentation).
func Create(ctx context.Context, opts Options) (*Backend, error) {
	b, err := newBackend(opts)
	if err != nil {
		return nil, err
	}
	if err := b.create(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("create repository %s: %w", b.location, err)
	}
	return b, nil
}

func (b *Backend) create(ctx context.Context) error {
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return b.classify(ctx, err)
	}
	if !ok {
		err := b.client.MakeBucket(ctx, b.bucket, minio.MakeBucketOptions{Region: b.region})
		// Someone (maybe a concurrent Create of ours) made it meanwhile.
		if err != nil && errCode(err) != "BucketAlreadyOwnedByYou" {
			return fmt.Errorf("make bucket %s: %w", b.bucket, b.classify(ctx, err))
		}
	}
	return b.probe(ctx, true)
}

// Open returns a backend on the existing repository at opts. A missing
// bucket or a missing config is an error wrapping backend.ErrNotExist: on
// S3 a prefix exists only through the objects under it. Like Create it
// probes for conditional writes; with read-only credentials the probe fails
// and Properties().ExclusiveCreate is false.
func Open(ctx context.Context, opts Options) (*Backend, error) {
	b, err := newBackend(opts)
	if err != nil {
		return nil, err
	}
	if err := b.open(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("open repository %s: %w", b.location, err)
	}
	return b, nil
}

func (b *Backend) open(ctx context.Context) error {
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return b.classify(ctx, err)
	}
	if !ok {
		return fmt.Errorf("bucket %s: %w", b.bucket, backend.ErrNotExist)
	}
	if _, err := b.stat(ctx, backend.Handle{Type: backend.ConfigFile}); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return b.probe(ctx, false)
}

// newBackend checks opts and makes the client; it does no I/O.
func newBackend(opts Options) (*Backend, error) {
	if err := opts.check(); err != nil {
		return nil, backend.Permanent(fmt.Errorf("open repository s3:%v: %w", opts, err))
	}
	b := &Backend{
		location:     "s3:" + opts.String(),
		bucket:       opts.Bucket,
		storageClass: opts.StorageClass,
		partSize:     opts.PartSize,
		signPayload:  opts.Insecure,
		props:        backend.Properties{Connections: opts.Connections},
	}
	if opts.Prefix != "" {
		b.prefix = opts.Prefix + "/"
	}
	if b.partSize == 0 {
		b.partSize = DefaultPartSize
	}
	b.partBufs.New = func() any { buf := make([]byte, b.partSize); return &buf }
	if b.props.Connections == 0 {
		b.props.Connections = DefaultConnections
	}
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = awsEndpoint
	}
	b.region = opts.Region
	for _, env := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
		if b.region == "" {
			b.region = os.Getenv(env)
		}
	}
	creds := credentials.NewStaticV4(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken)
	if opts.AccessKeyID == "" {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{},
		})
	}
	rt := opts.Transport
	if rt == nil {
		tr, err := minio.DefaultTransport(!opts.Insecure)
		if err != nil {
			return nil, fmt.Errorf("open repository %s: %w", b.location, err)
		}
		tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, b.props.Connections)
		if opts.RootCAs != nil && tr.TLSClientConfig != nil {
			tr.TLSClientConfig.RootCAs = opts.RootCAs
		}
		b.transport = tr
		rt = tr
	}
	lookup := minio.BucketLookupAuto
	if opts.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:        creds,
		Secure:       !opts.Insecure,
		Transport:    rt,
		Region:       b.region,
		BucketLookup: lookup,
		// A few quick retries of idempotent requests inside minio-go;
		// longer outages are the retry wrapper's business.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, backend.Permanent(fmt.Errorf("open repository %s: %w", b.location, err))
	}
	b.client = client
	b.core = minio.Core{Client: client}
	return b, nil
}

// probe finds out whether the server refuses a PUT with If-None-Match: *
// onto an existing key, and sets Properties().ExclusiveCreate accordingly:
// it writes a probe key twice and removes it. A server that rejects the
// header itself gets plain PUTs. needWrite says whether being unable to
// write is an error (Create) or only means no exclusive create (Open with
// read-only credentials).
func (b *Backend) probe(ctx context.Context, needWrite bool) error {
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails
	key := b.prefix + ".probe-exclusive-create-" + hex.EncodeToString(id[:])
	data := []byte("probe")
	written := false
	put := func(conditional bool) error {
		var opts minio.PutObjectOptions
		if conditional {
			opts.SetMatchETagExcept("*")
		}
		b.setPutOptions(&opts)
		_, err := b.core.PutObject(ctx, b.bucket, key, bytes.NewReader(data), int64(len(data)), "", b.payloadHash(data), opts)
		written = written || err == nil
		return err
	}
	defer func() {
		if written {
			// Best effort, also when ctx is cancelled: a leftover probe
			// key costs a few bytes and is never listed.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
			defer cancel()
			_ = b.client.RemoveObject(rctx, b.bucket, key, minio.RemoveObjectOptions{})
		}
	}()

	if err := put(true); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Maybe the server rejects the header rather than the write.
		err := b.classify(ctx, put(false))
		switch {
		case err == nil:
			return nil
		case needWrite || !backend.IsPermanent(err):
			return fmt.Errorf("probe write: %w", err)
		}
		return nil // read-only access
	}
	err := put(true)
	if errCode(err) == "PreconditionFailed" {
		b.props.ExclusiveCreate = true
		return nil
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// Location returns the location as "s3:" and the form ParseLocation reads.
func (b *Backend) Location() string { return b.location }

// Properties: ExclusiveCreate as probed by Create or Open.
func (b *Backend) Properties() backend.Properties { return b.props }

// key returns h's object key; h must be valid.
func (b *Backend) key(h backend.Handle) string { return b.prefix + h.String() }

// Load reads h with a ranged GET; see backend.Backend.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("load: %w", err))
	}
	if length < 0 || offset < 0 {
		return backend.Permanent(fmt.Errorf("load %v: invalid range: length %d, offset %d", h, length, offset))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("load %v: %w", h, err)
	}
	var opts minio.GetObjectOptions
	ranged := offset > 0 || length > 0
	if ranged {
		end := ""
		if length > 0 {
			end = fmt.Sprint(offset + int64(length) - 1)
		}
		opts.Set("Range", fmt.Sprintf("bytes=%d-%s", offset, end))
	}
	body, _, hdr, err := b.core.GetObject(ctx, b.bucket, b.key(h), opts)
	if err != nil {
		if er := minio.ToErrorResponse(err); er.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			// The object exists but ends at or before offset (or is
			// empty): a short read, not an error.
			return fn(backend.ContextReader(ctx, strings.NewReader("")))
		}
		return fmt.Errorf("load %v: %w", h, b.classify(ctx, err))
	}
	defer body.Close() // read-only: nothing to lose
	var rd io.Reader = body
	if ranged && hdr.Get("Content-Range") == "" && offset > 0 {
		// The server ignored the range and sent the whole object.
		if _, err := io.CopyN(io.Discard, backend.ContextReader(ctx, body), offset); err != nil && err != io.EOF {
			return fmt.Errorf("load %v: skip to %d: %w", h, offset, b.classify(ctx, err))
		}
	}
	if length > 0 {
		rd = io.LimitReader(rd, int64(length))
	}
	return fn(backend.ContextReader(ctx, rd))
}

// Stat returns the size of h from a HEAD request.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("stat: %w", err))
	}
	fi, err := b.stat(ctx, h)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	return fi, nil
}

// stat is Stat for a valid h, with errors that do not name h.
func (b *Backend) stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	oi, err := b.client.StatObject(ctx, b.bucket, b.key(h), minio.StatObjectOptions{})
	if err != nil {
		return backend.FileInfo{}, b.classify(ctx, err)
	}
	return backend.FileInfo{Name: h.Name, Size: oi.Size}, nil
}

// List lists the keys under t's prefix (for packs all data/xx/ at once),
// page by page. Keys that no Handle of type t addresses are skipped.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := t.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("list: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %v: %w", t, err)
	}
	if t == backend.ConfigFile {
		fi, err := b.stat(ctx, backend.Handle{Type: t})
		switch {
		case errors.Is(err, backend.ErrNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("list %v: %w", t, err)
		}
		return fn(fi)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing when fn fails
	dir := b.prefix + t.String() + "/"
	noOwner := false
	for oi := range b.client.ListObjectsIter(lctx, b.bucket, minio.ListObjectsOptions{Prefix: dir, Recursive: true, FetchOwner: &noOwner}) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %v: %w", t, err)
		}
		if oi.Err != nil {
			return fmt.Errorf("list %v: %w", t, b.classify(ctx, oi.Err))
		}
		name, ok := nameOf(t, strings.TrimPrefix(oi.Key, dir))
		if !ok {
			continue
		}
		if err := fn(backend.FileInfo{Name: name, Size: oi.Size}); err != nil {
			return err
		}
	}
	// The iterator ends silently when ctx is cancelled.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %v: %w", t, err)
	}
	return nil
}

// nameOf returns the name of the object of type t at rel, the key relative
// to t's directory, and whether a Handle of type t addresses it.
func nameOf(t backend.FileType, rel string) (string, bool) {
	name := rel
	if t == backend.PackFile {
		dir, n, ok := strings.Cut(rel, "/")
		if !ok || len(dir) != 2 || !strings.HasPrefix(n, dir) {
			return "", false
		}
		name = n
	}
	if (backend.Handle{Type: t, Name: name}).Valid() != nil {
		return "", false
	}
	return name, true
}

// Remove deletes h. S3 deletes a missing key without complaint, so Remove
// asks first; two concurrent Removes of one object may thus both succeed.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("remove: %w", err))
	}
	if _, err := b.stat(ctx, h); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	if err := b.client.RemoveObject(ctx, b.bucket, b.key(h), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("remove %v: %w", h, b.classify(ctx, err))
	}
	return nil
}

// Close closes idle connections of the transport Backend made.
func (b *Backend) Close() error {
	if b.transport != nil {
		b.transport.CloseIdleConnections()
	}
	return nil
}
