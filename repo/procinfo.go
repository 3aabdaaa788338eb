package repo

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// processStart reports whether process pid exists and, where /proc has it,
// its start time in clock ticks after boot (0 when unknown). A zombie
// counts as dead: it holds no lock any more.
func processStart(pid int) (alive bool, start uint64) {
	if pid <= 0 {
		return false, 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if _, serr := os.Stat("/proc/self/stat"); serr == nil {
			return false, 0 // /proc works, so the process does not exist
		}
		// No /proc: signal 0 tells whether the PID exists (EPERM: it
		// does, but belongs to another user).
		err := syscall.Kill(pid, 0)
		return err == nil || errors.Is(err, syscall.EPERM), 0
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// and parentheses; the fields after the last ')' start with the state
	// (field 3); the start time is field 22.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return true, 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return true, 0
	}
	if f[0] == "Z" || f[0] == "X" {
		return false, 0
	}
	return true, parseUint(f[19])
}

var bootIDOnce = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// bootID is the kernel's id of the current boot, "" when unknown.
func bootID() string { return bootIDOnce() }
