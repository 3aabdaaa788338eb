// Package wrap decides, in one place, which wrappers a backend gets and in
// which order. Wrap stacks them as
//
//	retry → connection limit → rate limit → backend
//
// (outermost first), for these reasons:
//
//   - Retry is outermost so that each attempt takes a connection slot of
//     its own and gives it back before the wait: a call sleeping between
//     attempts must not hold a slot that others could use for up to a
//     minute. Every attempt also passes the rate limit again, which is
//     right, since its bytes cross the network again.
//   - The rate limit is innermost, closest to the network: it counts the
//     bytes the backend actually reads for sending and the bytes fn
//     actually reads from the connection, per attempt. Since those reads
//     happen while the call holds its slot anyway, putting it inside or
//     outside the connection limit makes no difference to when bytes move;
//     inside keeps it next to the bytes it paces.
//   - The connection limit sits between: it bounds the calls in progress,
//     each of which may be waiting for the rate limit.
//
// Lock files bypass both limits (see package limit), so lock refreshes are
// never starved by a busy backend, but they are retried like everything
// else.
package wrap
