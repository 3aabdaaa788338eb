// Package retry wraps a backend.Backend so that calls failing with a
// transient error are tried again, after an exponential backoff with
// jitter. It is meant for remote backends, whose connections break and
// heal; a local disk's errors do not go away by waiting.
//
// What is retried: every error for which backend.IsPermanent is false.
// Permanent errors (not found, exists, invalid handle, access denied) and
// cancellation end the call at once, and a cancelled context also ends a
// wait between attempts at once.
//
// Errors of the caller are never retried and come back unchanged: an
// error returned by Load's or List's fn, and a Save whose RewindReader
// failed or yielded another number of bytes than its Length. A Load whose
// fn failed because the backend's reader failed with a transient error is
// retried, though: that is the usual way a download breaks, and fn is
// idempotent by contract. When the retries are used up, Load still returns
// fn's last error unchanged.
//
// Calls that may have taken effect before their reply was lost are
// resolved rather than reported wrongly: a retried Save that finds the
// object present (ErrExists) loads it and reports success if it holds
// exactly the bytes being saved, and a retried Remove that finds the object
// gone reports success. A retried List calls fn only for objects it did not
// report before.
//
// Caveats: a retried List remembers every name it reported, so its memory
// grows with the listing. A Remove retried after a lost reply cannot tell
// whether it or someone else removed the object.
package retry
