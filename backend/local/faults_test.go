//go:build faults

package local

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/retry"
)

// useFaults installs spec (logging to a file in the test's directory) and
// removes the faults when the test ends. It returns the log's path.
func useFaults(t *testing.T, spec string) string {
	t.Helper()
	log := filepath.Join(t.TempDir(), "faults.log")
	t.Setenv("REPO_FAULTS_LOG", log)
	if err := setFaults(spec); err != nil {
		t.Fatalf("setFaults(%q): %v", spec, err)
	}
	t.Cleanup(func() {
		if err := setFaults(""); err != nil {
			t.Error(err)
		}
	})
	return log
}

// faultLines returns the lines of the fault log.
func faultLines(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func TestFaultsParse(t *testing.T) {
	good := []string{
		"",
		"write:type=pack:skip=2:after=100000:times=1",
		"rename:type=index:times=1",
		"fsync:skip=3:times=1",
		"enospc:after=20000000",
		"dirsync:type=snapshot; remove:type=lock:errno=eacces ;write:errno=ENOSPC:times=0",
	}
	for _, spec := range good {
		if _, err := parseFaults(spec); err != nil {
			t.Errorf("parseFaults(%q): %v", spec, err)
		}
	}
	bad := []string{
		"explode",
		"write:type=tape",
		"write:after",
		"write:after=-1",
		"write:skip=x",
		"fsync:errno=EWHATEVER",
		"rename:colour=red",
	}
	for _, spec := range bad {
		if _, err := parseFaults(spec); err == nil {
			t.Errorf("parseFaults(%q) accepted a malformed spec", spec)
		}
	}
	parsed, err := parseFaults("enospc:after=5;write")
	if err != nil {
		t.Fatal(err)
	}
	if parsed[0].times != 0 || parsed[0].errno != syscall.ENOSPC || parsed[1].times != 1 || parsed[1].errno != syscall.EIO || parsed[1].after != 0 {
		t.Errorf("defaults: enospc times=%d errno=%v, write times=%d errno=%v after=%d; want 0 ENOSPC, 1 EIO 0",
			parsed[0].times, parsed[0].errno, parsed[1].times, parsed[1].errno, parsed[1].after)
	}
}

// op is one call in TestFaultsFire.
type op struct {
	save   bool // Save (else Remove) of h
	h      backend.Handle
	size   int
	errno  syscall.Errno // 0: must succeed
	exists bool          // the object exists afterwards
}

var (
	pack1 = backend.Handle{Type: backend.PackFile, Name: "aa01"}
	pack2 = backend.Handle{Type: backend.PackFile, Name: "aa02"}
	pack3 = backend.Handle{Type: backend.PackFile, Name: "aa03"}
	idx1  = backend.Handle{Type: backend.IndexFile, Name: "bb01"}
)

// TestFaultsFire: each kind of fault fails the call it names with its
// errno, as often as it says, and leaves other calls alone.
func TestFaultsFire(t *testing.T) {
	save := func(h backend.Handle, size int, errno syscall.Errno, exists bool) op {
		return op{save: true, h: h, size: size, errno: errno, exists: exists}
	}
	remove := func(h backend.Handle, errno syscall.Errno, exists bool) op {
		return op{h: h, errno: errno, exists: exists}
	}
	const big = 3 << 20 // several writes of copyStep
	tests := []struct {
		name  string
		spec  string
		ops   []op
		fired int // lines in the fault log
	}{
		{"write fails once", "write:type=pack:after=1000",
			[]op{save(idx1, 5000, 0, true), save(pack1, 5000, syscall.EIO, false), save(pack1, 5000, 0, true)}, 1},
		{"write in a later step", "write:after=1500000",
			[]op{save(pack1, big, syscall.EIO, false), save(pack1, big, 0, true)}, 1},
		{"write past the end never fires", "write:after=5000",
			[]op{save(pack1, 5000, 0, true)}, 0},
		{"write skips", "write:skip=1:times=2",
			[]op{save(pack1, 10, 0, true), save(pack2, 10, syscall.EIO, false), save(pack2, 10, syscall.EIO, false), save(pack2, 10, 0, true)}, 2},
		{"write errno", "write:errno=ENOSPC",
			[]op{save(pack1, 10, syscall.ENOSPC, false), save(pack1, 10, 0, true)}, 1},
		{"enospc fills up", "enospc:after=3000",
			[]op{save(pack1, 2000, 0, true), save(pack2, 2000, syscall.ENOSPC, false), save(pack3, 10, syscall.ENOSPC, false), remove(pack1, 0, false)}, 2},
		{"enospc of one type", "enospc:type=pack:after=0",
			[]op{save(idx1, 2000, 0, true), save(pack1, 10, syscall.ENOSPC, false)}, 1},
		{"fsync", "fsync:skip=1:times=1",
			[]op{save(pack1, 10, 0, true), save(pack2, 10, syscall.EIO, false), save(pack2, 10, 0, true)}, 1},
		{"rename", "rename:type=index:times=1",
			[]op{save(pack1, 10, 0, true), save(idx1, 10, syscall.EIO, false), save(idx1, 10, 0, true)}, 1},
		// The object is published before its directory's fsync fails.
		{"dirsync", "dirsync:type=pack",
			[]op{save(pack1, 10, syscall.EIO, true), save(pack2, 10, 0, true)}, 1},
		{"remove", "remove:times=1",
			[]op{save(pack1, 10, 0, true), remove(pack1, syscall.EIO, true), remove(pack1, 0, false)}, 1},
		{"remove then dirsync", "dirsync:type=pack:skip=1",
			[]op{save(pack1, 10, 0, true), remove(pack1, syscall.EIO, false)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := useFaults(t, tt.spec)
			dir := t.TempDir()
			be, err := Create(dir)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for i, o := range tt.ops {
				var err error
				data := bytes.Repeat([]byte{byte(i + 1)}, o.size)
				if o.save {
					err = be.Save(ctx, o.h, backend.NewByteReader(data))
				} else {
					err = be.Remove(ctx, o.h)
				}
				switch {
				case o.errno == 0 && err != nil:
					t.Errorf("op %d on %v: %v, want success", i, o.h, err)
				case o.errno != 0 && !errors.Is(err, o.errno):
					t.Errorf("op %d on %v: %v, want %v", i, o.h, err, o.errno)
				case o.errno == syscall.ENOSPC && (!backend.IsPermanent(err) || !strings.Contains(err.Error(), "disk is full")):
					t.Errorf("op %d on %v: %v: want a permanent error saying the disk is full", i, o.h, err)
				case o.errno == syscall.EIO && backend.IsPermanent(err):
					t.Errorf("op %d on %v: %v is permanent; EIO must stay transient", i, o.h, err)
				}
				_, serr := os.Stat(be.filename(o.h))
				if exists := serr == nil; exists != o.exists {
					t.Errorf("op %d on %v: object exists %v, want %v", i, o.h, exists, o.exists)
				}
				if o.save && o.errno == 0 {
					if got, err := backend.LoadAll(ctx, be, o.h, nil); err != nil || !bytes.Equal(got, data) {
						t.Errorf("op %d: load %v after a successful save: %d bytes, %v", i, o.h, len(got), err)
					}
				}
			}
			if tmp, _ := filepath.Glob(filepath.Join(dir, "*", "*", ".tmp-*")); len(tmp) > 0 {
				t.Errorf("temporary files left behind: %q", tmp)
			}
			if lines := faultLines(t, log); len(lines) != tt.fired {
				t.Errorf("fault log has %d lines, want %d:\n%s", len(lines), tt.fired, strings.Join(lines, "\n"))
			}
		})
	}
}

// TestFaultsRetry shows what the retry wrapper makes of each fault: an
// EIO that strikes once is retried and the call succeeds (also when the
// object was published before the failure), while ENOSPC is permanent and
// ends the call at once with an error that says the disk is full.
func TestFaultsRetry(t *testing.T) {
	tests := []struct {
		spec    string
		remove  bool
		retries int64
		full    bool // fails for good: disk is full
	}{
		{spec: "write:after=100", retries: 1},
		{spec: "fsync", retries: 1},
		{spec: "rename", retries: 1},
		{spec: "dirsync", retries: 1}, // the retry finds the object with the same content
		{spec: "write:times=3", retries: 3},
		{spec: "remove", remove: true, retries: 1},
		{spec: "dirsync:type=pack", remove: true, retries: 1}, // removed, then the retry sees it gone
		{spec: "enospc:after=100", full: true},
		{spec: "write:errno=ENOSPC:times=0", full: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			useFaults(t, "")
			local, err := Create(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var retries atomic.Int64
			be := retry.New(local, retry.Options{
				InitialDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond,
				OnRetry: func(string, backend.Handle, error, time.Duration) { retries.Add(1) },
			})
			ctx := context.Background()
			data := bytes.Repeat([]byte("x"), 5000)
			if tt.remove {
				if err := be.Save(ctx, pack1, backend.NewByteReader(data)); err != nil {
					t.Fatal(err)
				}
			}
			useFaults(t, tt.spec)
			start := time.Now()
			if tt.remove {
				err = be.Remove(ctx, pack1)
			} else {
				err = be.Save(ctx, pack1, backend.NewByteReader(data))
			}
			took := time.Since(start)
			if got := retries.Load(); got != tt.retries {
				t.Errorf("%d retries, want %d (err %v)", got, tt.retries, err)
			}
			if tt.full {
				if err == nil || !backend.IsPermanent(err) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk is full") {
					t.Errorf("error %v: want a permanent ENOSPC saying the disk is full", err)
				}
				if took > time.Second {
					t.Errorf("a full disk took %v to report", took)
				}
				return
			}
			if err != nil {
				t.Fatalf("with retries: %v", err)
			}
			_, serr := os.Stat(local.filename(pack1))
			if exists := serr == nil; exists == tt.remove {
				t.Errorf("object exists %v after the call", exists)
			}
		})
	}
}
