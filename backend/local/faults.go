//go:build faults

// Fault injection for crash and torture tests, compiled in only with the
// faults build tag (go build -tags faults). It sets the hooks of local.go
// from the environment variable REPO_FAULTS when the program starts; a
// binary built with the tag but run without REPO_FAULTS behaves exactly
// like a normal one.
//
// REPO_FAULTS is a ";"-separated list of faults, each a kind followed by
// ":"-separated key=value settings:
//
//	write:type=pack:skip=2:after=100000:times=1
//	rename:type=index:times=1
//	fsync:skip=3:times=1
//	enospc:after=20000000
//
// Kinds (the point of Save or Remove where the fault strikes):
//
//	write    a write of an object's data: the write that would pass byte
//	         `after` of the object (default 0: its first write) writes up
//	         to that byte and fails, leaving a partial temporary file
//	enospc   a disk that fills up: once the process has written `after`
//	         bytes of object data in all (counting only objects of `type`
//	         when given), every later write fails with ENOSPC (times
//	         defaults to 0, for ever)
//	fsync    the fsync of an object's temporary file
//	dirsync  the fsync of an object's directory after it was published or
//	         removed (the object is then visible but the call fails)
//	rename   publishing the temporary file under the object's name (the
//	         link, or the rename on file systems without hard links)
//	remove   removing an object
//
// Settings:
//
//	type=T   only objects of type T: config, key, pack (or data), index,
//	         snapshot, lock, quarantine; default: every type
//	skip=N   let the first N matching calls through (for write: the first
//	         N objects that reach byte `after`); default 0
//	times=N  then fail N matching calls; 0 means every one from then on;
//	         default 1 (enospc: 0)
//	after=N  bytes; see write and enospc
//	errno=E  the error: EIO (default; enospc: ENOSPC), ENOSPC, EDQUOT,
//	         EACCES, EPERM, EROFS, EINTR
//
// The errors are the real errno values wrapped like the os package wraps
// them (*fs.PathError, *os.LinkError), so they pass through classify as a
// real failure would: ENOSPC and EDQUOT become permanent "disk is full"
// errors, EIO stays transient. Faults are tried in the order given; a
// write cut short by one is offered to the next with the shorter length.
//
// When REPO_FAULTS_LOG names a file, every injected fault appends a line
// to it ("fault write data/3f/3fa2…: input/output error"), so a test can
// tell a fault that fired from one that never got its chance.
//
// A malformed REPO_FAULTS panics at start-up: a test that asked for faults
// must not silently run without them.
package local

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"repo/backend"
)

func init() {
	if err := setFaults(os.Getenv("REPO_FAULTS")); err != nil {
		panic(fmt.Sprintf("REPO_FAULTS: %v", err))
	}
}

// fault is one parsed entry of REPO_FAULTS.
type fault struct {
	kind  string
	typ   backend.FileType // 0: every type
	skip  int
	times int // 0: no limit
	after int64
	errno syscall.Errno

	// Guarded by faultMu.
	seen  int   // matching calls (write: objects reaching after) so far
	fired int   // calls failed so far
	total int64 // enospc: bytes written so far
}

var (
	faultMu sync.Mutex
	faults  []*fault
	// faultLog is REPO_FAULTS_LOG, read once by setFaults.
	faultLog string
)

var faultKinds = map[string]bool{"write": true, "enospc": true, "fsync": true, "dirsync": true, "rename": true, "remove": true}

var faultTypes = map[string]backend.FileType{
	"config": backend.ConfigFile, "key": backend.KeyFile, "keys": backend.KeyFile,
	"pack": backend.PackFile, "data": backend.PackFile, "index": backend.IndexFile,
	"snapshot": backend.SnapshotFile, "snapshots": backend.SnapshotFile,
	"lock": backend.LockFile, "locks": backend.LockFile, "quarantine": backend.QuarantineFile,
}

var faultErrnos = map[string]syscall.Errno{
	"EIO": syscall.EIO, "ENOSPC": syscall.ENOSPC, "EDQUOT": syscall.EDQUOT, "EACCES": syscall.EACCES,
	"EPERM": syscall.EPERM, "EROFS": syscall.EROFS, "EINTR": syscall.EINTR,
}

// parseFaults parses a REPO_FAULTS value; "" gives no faults.
func parseFaults(spec string) ([]*fault, error) {
	var out []*fault
	for item := range strings.SplitSeq(spec, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		f := &fault{kind: parts[0], times: 1, errno: syscall.EIO}
		if !faultKinds[f.kind] {
			return nil, fmt.Errorf("%q: unknown fault %q", item, f.kind)
		}
		if f.kind == "enospc" {
			f.times, f.errno = 0, syscall.ENOSPC
		}
		for _, kv := range parts[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("%q: %q is not key=value", item, kv)
			}
			var err error
			switch k {
			case "type":
				var known bool
				if f.typ, known = faultTypes[v]; !known {
					err = errors.New("unknown type")
				}
			case "skip":
				f.skip, err = strconv.Atoi(v)
			case "times":
				f.times, err = strconv.Atoi(v)
			case "after":
				f.after, err = strconv.ParseInt(v, 10, 64)
			case "errno":
				var known bool
				if f.errno, known = faultErrnos[strings.ToUpper(v)]; !known {
					err = errors.New("unknown errno")
				}
			default:
				err = errors.New("unknown key")
			}
			if err == nil && (f.skip < 0 || f.times < 0 || f.after < 0) {
				err = errors.New("negative")
			}
			if err != nil {
				return nil, fmt.Errorf("%q: %s=%s: %v", item, k, v, err)
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// setFaults replaces the faults with those of spec and sets or clears the
// hooks. Tests call it directly; init calls it with REPO_FAULTS.
func setFaults(spec string) error {
	parsed, err := parseFaults(spec)
	if err != nil {
		return err
	}
	faultMu.Lock()
	defer faultMu.Unlock()
	faults = parsed
	faultLog = os.Getenv("REPO_FAULTS_LOG")
	hookWrite, hookSync, hookSyncDir, hookPublish, hookRemove = nil, nil, nil, nil, nil
	if len(parsed) > 0 {
		hookWrite = faultWrite
		hookSync = func(h backend.Handle) error { return faultCall("fsync", h) }
		hookSyncDir = func(h backend.Handle) error { return faultCall("dirsync", h) }
		hookPublish = func(h backend.Handle) error { return faultCall("rename", h) }
		hookRemove = func(h backend.Handle) error { return faultCall("remove", h) }
	}
	return nil
}

// matches reports whether f applies to a call of kind on h.
func (f *fault) matches(kind string, h backend.Handle) bool {
	return f.kind == kind && (f.typ == 0 || f.typ == h.Type)
}

// strikeLocked counts a matching call and reports whether it fails.
func (f *fault) strikeLocked() bool {
	f.seen++
	if f.seen <= f.skip || (f.times > 0 && f.fired >= f.times) {
		return false
	}
	f.fired++
	return true
}

// faultCall is the hook of the faults that fail a whole call.
func faultCall(kind string, h backend.Handle) error {
	faultMu.Lock()
	defer faultMu.Unlock()
	for _, f := range faults {
		if f.matches(kind, h) && f.strikeLocked() {
			logFaultLocked(fmt.Sprintf("fault %s %v: %v", kind, h, f.errno))
			return f.errno
		}
	}
	return nil
}

// faultWrite is hookWrite: the write and enospc faults.
func faultWrite(h backend.Handle, written int64, n int) (int, error) {
	faultMu.Lock()
	defer faultMu.Unlock()
	allow := n
	var ferr error
	for _, f := range faults {
		switch {
		case f.matches("write", h):
			// Fires on the write that would pass byte f.after.
			if written <= f.after && f.after < written+int64(allow) && f.strikeLocked() {
				allow, ferr = int(f.after-written), f.errno
				logFaultLocked(fmt.Sprintf("fault write %v after %d bytes: %v", h, f.after, f.errno))
			}
		case f.matches("enospc", h):
			room := max(f.after-f.total, 0)
			if int64(allow) <= room {
				f.total += int64(allow)
				continue
			}
			if f.strikeLocked() {
				allow, ferr = int(room), f.errno
				f.total += room
				logFaultLocked(fmt.Sprintf("fault enospc %v after %d bytes in all: %v", h, f.after, f.errno))
			} else {
				f.total += int64(allow)
			}
		}
	}
	return allow, ferr
}

// logFaultLocked appends line to REPO_FAULTS_LOG, if set. Failing to log
// does not change the fault.
func logFaultLocked(line string) {
	if faultLog == "" {
		return
	}
	f, err := os.OpenFile(faultLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintln(f, line)
	f.Close()
}
