// Package faulty wraps a backend.Backend and injects faults on request:
// fail the Nth call, fail halfway through the data, lose the reply of a call
// that succeeded, lose a write, or corrupt what Load returns. Tests of
// retry, check, repair and crash behaviour use it instead of hand-written
// failing backends.
//
// Faults are described by Fault values and added with Inject; each call is
// matched against them in order and the first one that fires decides what
// happens. Calls that no fault fires on go to the wrapped backend
// unchanged. The default error, ErrInjected, is transient: a retry wrapper
// may retry it.
//
// Caveat: the Corrupt mode reads the requested range into memory before
// fn sees it, so it is meant for small test objects.
package faulty
