// Package mem is an in-memory Backend for tests: fast, hermetic, and held
// to the same conformance suite (backend/backendtest) as the real backends,
// so a test that passes against it exercises the contract rather than an
// accident of one implementation.
//
// Caveats: nothing is durable; objects are copied in and out, so a caller
// that modifies a buffer after Save or inside Load's callback cannot change
// what is stored.
package mem
