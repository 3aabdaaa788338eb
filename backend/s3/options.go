package s3

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// awsEndpoint is the endpoint of the "s3:bucket/prefix" form.
const awsEndpoint = "s3.amazonaws.com"

// Defaults for the zero values of Options.
const (
	// DefaultConnections is how many requests run at once by default: S3
	// latency is high and per-connection bandwidth limited, so several
	// requests in flight pay off; more mostly costs memory.
	DefaultConnections = 5
	// DefaultPartSize is above the largest pack of the default pack size
	// (16 MiB target plus slack), so that ordinary packs go up in one
	// atomic, conditional PUT and only larger ones use multipart.
	DefaultPartSize = 32 << 20
	// MinPartSize is S3's lower limit for every part but the last.
	MinPartSize = 5 << 20
)

// Options says where the repository is and how to reach it. The zero value
// of every field but Bucket has a meaning, given with the field.
type Options struct {
	// Endpoint is the server's host[:port], without scheme; "" means AWS
	// (s3.amazonaws.com).
	Endpoint string
	// Insecure talks plain http instead of https; for local test servers.
	// Payloads are then signed with their SHA-256 (a second pass over the
	// data) instead of AWS's chunked streaming signature, which several S3
	// clones store wrongly.
	Insecure bool
	// Bucket holds the repository; required.
	Bucket string
	// Prefix is the key prefix of the repository inside the bucket,
	// without leading or trailing "/"; "" is the bucket's root.
	Prefix string
	// Region is the bucket's region; "" takes AWS_REGION, then
	// AWS_DEFAULT_REGION, and otherwise asks the server (one request,
	// cached).
	Region string
	// PathStyle forces path-style requests (https://host/bucket/key); false
	// lets minio-go choose: virtual-host style for AWS, path style for
	// every other endpoint.
	PathStyle bool
	// StorageClass is sent with every new object (e.g. "STANDARD_IA");
	// "" is the bucket's default.
	StorageClass string

	// AccessKeyID, SecretAccessKey and SessionToken are static
	// credentials. When AccessKeyID is "", credentials come, in this
	// order, from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
	// the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
	// ~/.aws/credentials, profile AWS_PROFILE or "default"), and the EC2 or
	// ECS instance role; with none of them requests are anonymous.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string

	// RootCAs, when not nil, replaces the system's certificate pool for
	// https (SSL_CERT_FILE works too); for tests and private CAs.
	RootCAs *x509.CertPool
	// Transport, when not nil, carries every request; RootCAs is then
	// ignored. For tests.
	Transport http.RoundTripper

	// Connections is Properties().Connections and sizes the connection
	// pool; 0 means DefaultConnections.
	Connections int
	// PartSize is the size of multipart upload parts; objects up to
	// PartSize go up in a single PUT. 0 means DefaultPartSize; at least
	// MinPartSize. A multipart Save holds one part in memory.
	PartSize int64
}

// ParseLocation reads the part of a repository location after "s3:":
//
//	https://host[:port]/bucket[/prefix]   any S3 server
//	http://host[:port]/bucket[/prefix]    the same over plain http (Insecure)
//	bucket[/prefix]                       AWS (s3.amazonaws.com)
//
// Credentials never go into a location: user info in the URL, a query or a
// fragment is an error, as are "." and ".." in the prefix.
func ParseLocation(s string) (Options, error) {
	var opts Options
	rest := s
	switch {
	case strings.HasPrefix(s, "https://"), strings.HasPrefix(s, "http://"):
		u, err := url.Parse(s)
		if err != nil {
			return Options{}, fmt.Errorf("parse s3 location %q: %w", s, err)
		}
		switch {
		case u.User != nil:
			return Options{}, fmt.Errorf("parse s3 location %q: credentials do not belong in the location; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", s)
		case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			return Options{}, fmt.Errorf("parse s3 location %q: unexpected query or fragment", s)
		case u.Hostname() == "":
			return Options{}, fmt.Errorf("parse s3 location %q: no host", s)
		}
		opts.Endpoint = u.Host
		opts.Insecure = u.Scheme == "http"
		rest = strings.TrimPrefix(u.Path, "/")
	case strings.Contains(s, "://"):
		return Options{}, fmt.Errorf("parse s3 location %q: only https:// and http:// endpoints", s)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return Options{}, fmt.Errorf("parse s3 location %q: no bucket", s)
	}
	if opts.Endpoint == "" && (strings.HasSuffix(bucket, ".amazonaws.com") || strings.Contains(bucket, ":")) {
		return Options{}, fmt.Errorf("parse s3 location %q: %q looks like a host; write s3:https://%s/BUCKET", s, bucket, bucket)
	}
	opts.Bucket = bucket
	opts.Prefix = strings.Trim(prefix, "/")
	if err := opts.check(); err != nil {
		return Options{}, fmt.Errorf("parse s3 location %q: %w", s, err)
	}
	return opts, nil
}

// String returns the location in the form ParseLocation reads (without
// "s3:"); it holds no credentials.
func (o Options) String() string {
	s := o.Bucket
	if o.Prefix != "" {
		s += "/" + o.Prefix
	}
	if o.Endpoint == "" {
		return s
	}
	scheme := "https://"
	if o.Insecure {
		scheme = "http://"
	}
	return scheme + o.Endpoint + "/" + s
}

// check validates the bucket and the prefix.
func (o Options) check() error {
	if o.Bucket == "" {
		return errors.New("no bucket")
	}
	if err := s3utils.CheckValidBucketName(o.Bucket); err != nil {
		return fmt.Errorf("bucket %q: %w", o.Bucket, err)
	}
	if o.Prefix != "" {
		if strings.HasPrefix(o.Prefix, "/") || strings.HasSuffix(o.Prefix, "/") {
			return fmt.Errorf("prefix %q: leading or trailing /", o.Prefix)
		}
		for seg := range strings.SplitSeq(o.Prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("prefix %q: empty, . or .. component", o.Prefix)
			}
		}
	}
	if o.PartSize != 0 && o.PartSize < MinPartSize {
		return fmt.Errorf("part size %d below S3's minimum of %d", o.PartSize, MinPartSize)
	}
	if o.Connections < 0 {
		return fmt.Errorf("connections %d: negative", o.Connections)
	}
	return nil
}
