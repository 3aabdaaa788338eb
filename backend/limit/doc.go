// Package limit wraps a backend.Backend to bound how much it is used: how
// many operations run at once (Connections) and how many bytes per second
// are uploaded and downloaded (Rate).
//
// Lock files are exempt from both: a lock is refreshed by a background
// goroutine while the operation under it keeps every connection busy and
// the bandwidth saturated, and a refresh that waits for a slot or for
// tokens can come too late, making the lock look stale to others. Lock
// objects are a few hundred bytes and written every few minutes, so the
// exemption does not break the limits in any way that matters.
//
// Connections counts Save, Load (including the time fn runs: it reads from
// the connection), Stat and Remove. List is not counted: its fn may call
// the backend again, and a List holding a slot while fn waits for another
// one would deadlock once every slot is held so; listings are few and
// sequential.
//
// Rate paces the bytes Save reads from its RewindReader and the bytes fn
// reads from Load's reader, after they are read: every attempt of a
// retried call counts, since its bytes cross the network again.
package limit
