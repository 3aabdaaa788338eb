package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/minio/minio-go/v7"

	"repo/backend"
)

// permanentCodes are S3 error codes that retrying cannot fix: denied
// access, bad or expired credentials, and requests the server will never
// accept. 403 and 501 are permanent whatever the code.
var permanentCodes = map[string]bool{
	"AccessDenied":          true,
	"AccountProblem":        true,
	"AllAccessDisabled":     true,
	"InvalidAccessKeyId":    true,
	"SignatureDoesNotMatch": true,
	"ExpiredToken":          true,
	"InvalidToken":          true,
	"InvalidBucketName":     true,
	"InvalidStorageClass":   true,
	"InvalidArgument":       true,
	"InvalidObjectState":    true, // archived (Glacier) and not restored
	"EntityTooLarge":        true,
	"KeyTooLongError":       true,
	"MethodNotAllowed":      true,
	"NotImplemented":        true,
	"BucketAlreadyExists":   true, // the name belongs to someone else
}

// errCode returns the S3 error code in err's chain, or "".
func errCode(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}

// classify turns an error of minio-go into the backend's vocabulary:
//   - ctx's error once ctx is done, whatever the request made of it;
//   - NoSuchKey is backend.ErrNotExist, NoSuchBucket wraps it, and a
//     failed precondition (If-None-Match) is backend.ErrExists;
//   - denied access, bad credentials and the like are permanent;
//   - everything else (5xx, throttling, timeouts, resets) may be transient.
//
// nil stays nil.
func (b *Backend) classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return err // transport: reset, timeout, refused
	}
	switch er.Code {
	case "NoSuchKey":
		return backend.ErrNotExist
	case "NoSuchBucket":
		return fmt.Errorf("bucket %s: %w", b.bucket, backend.ErrNotExist)
	case "PreconditionFailed":
		return backend.ErrExists
	}
	err = fmt.Errorf("%s (HTTP %d): %w", er.Code, er.StatusCode, err)
	if permanentCodes[er.Code] || er.StatusCode == http.StatusForbidden || er.StatusCode == http.StatusNotImplemented {
		return backend.Permanent(err)
	}
	return err
}
