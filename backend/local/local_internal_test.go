package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"

	"repo/backend"
)

func TestClassify(t *testing.T) {
	pathErr := func(errno syscall.Errno) error {
		return &fs.PathError{Op: "write", Path: "/r/data/ab/.tmp-1", Err: errno}
	}
	tests := []struct {
		err       error
		permanent bool
		full      bool // message says the disk is full
	}{
		{pathErr(syscall.ENOSPC), true, true},
		{pathErr(syscall.EDQUOT), true, true},
		{pathErr(syscall.EACCES), true, false},
		{pathErr(syscall.EPERM), true, false},
		{pathErr(syscall.EIO), false, false},
		{pathErr(syscall.EINTR), false, false},
	}
	for _, tt := range tests {
		got := classify(tt.err)
		if !errors.Is(got, tt.err) {
			t.Errorf("classify(%v) = %v, does not wrap the error", tt.err, got)
		}
		if backend.IsPermanent(got) != tt.permanent {
			t.Errorf("classify(%v): permanent %v, want %v", tt.err, backend.IsPermanent(got), tt.permanent)
		}
		if strings.Contains(got.Error(), "disk is full") != tt.full {
			t.Errorf("classify(%v) = %q: says disk full %v, want %v", tt.err, got, !tt.full, tt.full)
		}
	}
	if classify(nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

// TestSaveWithoutHardLinks runs Save on a file system that refuses hard
// links, through the check-then-rename fallback.
func TestSaveWithoutHardLinks(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.ENOTSUP, syscall.EXDEV, syscall.EMLINK} {
		t.Run(errno.Error(), func(t *testing.T) {
			link = func(oldname, newname string) error {
				return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: errno}
			}
			t.Cleanup(func() { link = os.Link })

			be, err := Create(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
			if err := be.Save(ctx, h, backend.NewByteReader([]byte("first"))); err != nil {
				t.Fatalf("save: %v", err)
			}
			err = be.Save(ctx, h, backend.NewByteReader([]byte("second")))
			if !errors.Is(err, backend.ErrExists) {
				t.Errorf("save existing: got %v, want ErrExists", err)
			}
			got, err := backend.LoadAll(ctx, be, h, nil)
			if err != nil || string(got) != "first" {
				t.Errorf("load: got %q, %v; want %q", got, err, "first")
			}
			var names []string
			if err := be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
				names = append(names, fi.Name)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(names) != 1 || names[0] != "ab01" {
				t.Errorf("list: got %q, want [ab01] and no temporary files", names)
			}
		})
	}
}
