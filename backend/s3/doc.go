// Package s3 stores a repository in a bucket of Amazon S3 or any server
// that speaks its API (MinIO, Ceph RGW, Garage, Wasabi, B2, …), through
// minio-go. Keys mirror backend/local's layout under an optional prefix:
//
//	PREFIX/config
//	PREFIX/keys/<name>  PREFIX/index/<name>  PREFIX/snapshots/<name>
//	PREFIX/locks/<name>  PREFIX/quarantine/<name>
//	PREFIX/data/<first two characters of name>/<name>
//
// Locations (after "s3:", see ParseLocation) are
// https://host[:port]/bucket[/prefix], the same with http:// for local
// servers, and bucket[/prefix] for AWS. Credentials and the region come
// from Options or the usual AWS environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE,
// AWS_SHARED_CREDENTIALS_FILE, AWS_REGION, AWS_DEFAULT_REGION, instance
// roles), never from the location.
//
// # Saving
//
// An object up to Options.PartSize (32 MiB by default, so every pack of
// the default size) goes up in one PUT, which S3 applies atomically. A
// larger one is a multipart upload of PartSize parts sent one after the
// other, visible only once completed and aborted on any failure, also
// after cancellation. Only a killed process leaves an upload incomplete;
// its parts stay stored (and billed) but unlisted until RemoveTemp
// (backend.TempCleaner, which prune calls) aborts it once neither its
// start nor its last part is recent (see RemoveTemp for the caveats).
// Save reads the caller's reader in steps of 1 MiB,
// checking ctx before each, and holds back the last bytes until the reader
// has shown it ends there: a reader that fails or yields more than its
// Length never produces an object.
//
// Over https payloads are unsigned (TLS protects them); over http they are
// signed with their SHA-256, never with AWS's chunked streaming signature,
// which gofakes3 (multipart parts) and s3rver (all PUTs) store as data.
//
// # Exclusive create
//
// Create and Open probe the server: they PUT a key
// (PREFIX/.probe-exclusive-create-<random>) twice with If-None-Match: *
// and delete it. If the second PUT is refused with 412, the server
// honours conditional writes (AWS since 2024, MinIO, gofakes3), Save sends
// If-None-Match: * on every PUT and Properties().ExclusiveCreate is true.
// Otherwise (s3rver, older servers, read-only credentials) it is false
// and Save replaces. Open needs write access only for the probe.
//
// Some servers honour If-None-Match on single PUTs but not on
// CompleteMultipartUpload (gofakes3). A multipart Save therefore also
// asks first and returns ErrExists if the key exists; two concurrent
// multipart Saves of one key may then both succeed on such a server. Only
// packs are that large, and they are content-addressed, so the later one
// replaces the earlier with the same bytes.
//
// # Caveats
//
//   - Remove asks with HEAD first, because S3 deletes a missing key
//     without complaint; two concurrent Removes of one object may both
//     succeed.
//   - Open fails with ErrNotExist when the bucket or the config is
//     missing: a prefix exists only through its objects. Create does not
//     look for a config, like local.Create.
//   - minio-go retries idempotent requests up to 3 times itself; the
//     error classification (classify) leaves the rest to a retry wrapper:
//     NoSuchKey is ErrNotExist, 403, bad credentials and never-acceptable
//     requests are permanent, 5xx, throttling and network errors are not.
package s3
