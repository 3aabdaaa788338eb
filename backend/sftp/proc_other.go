//go:build !unix

package sftp

import (
	"os"
	"os/exec"
)

// setProcessGroup does nothing where process groups are not available.
func setProcessGroup(cmd *exec.Cmd) {}

// killProcessGroup kills p (its children may survive).
func killProcessGroup(p *os.Process) { _ = p.Kill() }
