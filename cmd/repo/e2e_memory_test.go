package main

import (
	"bytes"
	"context"
	"path/filepath"
	"syscall"
	"testing"

	"repo/internal/gentree"
)

// maxBackupRSS bounds the peak resident memory of a backup of a few
// hundred MiB: memory must not grow with the data.
const maxBackupRSS = 200 << 20

// TestE2EMemory backs up ~300 MiB of mixed data and bounds the process's
// peak RSS (a memory bound, not a time threshold).
func TestE2EMemory(t *testing.T) {
	skipHeavy(t)
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{
		Seed: 10, TextFiles: 2000, TextMax: 48 << 10, BinFiles: 4, BinMax: 24 << 20,
		RandFiles: 3, RandSize: 40 << 20, Odd: true,
	})
	writeFile(t, filepath.Join(src, "big", "random-50M"), randomBytes(11, 50<<20), 0o644, gentree.Epoch)
	writeFile(t, filepath.Join(src, "big", "random-20M"), randomBytes(12, 20<<20), 0o644, gentree.Epoch)

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := repoCommand(t, ctx, r.env, nil, "backup", "--json", src)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr.String())
	}
	sum := lastSummary[backupSummary](t, stdout.String())
	if sum.BytesRead < 250<<20 {
		t.Fatalf("backup read only %d bytes; the test wants ~300 MiB", sum.BytesRead)
	}
	// Maxrss is in KiB on Linux.
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	t.Logf("backup of %.0f MiB: peak RSS %.1f MiB", float64(sum.BytesRead)/(1<<20), float64(rss)/(1<<20))
	if rss >= maxBackupRSS {
		t.Errorf("backup of %d bytes: peak RSS %.1f MiB, want < %d MiB", sum.BytesRead, float64(rss)/(1<<20), maxBackupRSS>>20)
	}
}
