//go:build !faults

package local

import "testing"

// TestNoFaultHooks: without the faults build tag nothing sets the fault
// hooks, so Save and Remove pay one nil comparison each and inject nothing.
func TestNoFaultHooks(t *testing.T) {
	if hookWrite != nil || hookSync != nil || hookSyncDir != nil || hookPublish != nil || hookRemove != nil {
		t.Error("a fault hook is set in a build without the faults tag")
	}
}
