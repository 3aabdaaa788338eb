// Package backendtest is the one conformance suite that every
// backend.Backend implementation runs, so that the repository can rely on
// the contract written on backend.Backend rather than on one
// implementation's habits. An implementation's test calls Run with a
// function that makes a fresh, empty backend:
//
//	func TestBackend(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Backend {
//			be, err := local.Create(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return be
//		})
//	}
//
// Subtests run in parallel, each on its own backend, which Run closes at
// the end of the subtest. Data is pseudo-random from fixed seeds, so a
// failure reproduces.
package backendtest
