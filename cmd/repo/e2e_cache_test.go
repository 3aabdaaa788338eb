package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"repo/internal/gentree"
)

// TestE2ECache: the local index cache is disposable. A missing, stale,
// corrupt or foreign cache never fails a command nor makes it trust
// blobs the repository does not have.
func TestE2ECache(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 30, TextFiles: 60, TextMax: 16 << 10, RandFiles: 2, RandSize: 1 << 20})
	r.backup(src)
	cache := envValue(r.env, "REPO_CACHE_DIR")
	oldCache := filepath.Join(t.TempDir(), "old-cache")
	copyDir(t, cache, oldCache)

	writeFile(t, filepath.Join(src, "new", "n1.bin"), randomBytes(31, 2<<20), 0o644, gentree.Epoch)
	r.backup(src)

	restoreAndCompare := func(t *testing.T, env []string, extra ...string) {
		t.Helper()
		target := filepath.Join(t.TempDir(), "target")
		mustRunBin(t, env, nil, append([]string{"restore", "latest", "--target", target}, extra...)...)
		compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
	}

	t.Run("stale cache", func(t *testing.T) {
		// A cache from before the last backup learns its index file.
		stale := filepath.Join(t.TempDir(), "cache")
		copyDir(t, oldCache, stale)
		restoreAndCompare(t, envWith(r.env, "REPO_CACHE_DIR", stale))
	})

	t.Run("no cache", func(t *testing.T) {
		restoreAndCompare(t, r.env, "--no-cache")
		restoreAndCompare(t, envWith(r.env, "REPO_CACHE_DIR", filepath.Join(t.TempDir(), "new-cache")))
	})

	// keep is how much of the file survives: nothing, or bbolt's two meta
	// pages, so that the file opens and its other pages are garbage.
	for _, keep := range []int{0, 8192} {
		t.Run("corrupt cache "+strconv.Itoa(keep), func(t *testing.T) {
			broken := filepath.Join(t.TempDir(), "cache")
			copyDir(t, cache, broken)
			var dbs []string
			filepath.WalkDir(broken, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Name() == "index.db" {
					dbs = append(dbs, p)
				}
				return nil
			})
			if len(dbs) == 0 {
				t.Fatalf("no index.db in the cache %s", broken)
			}
			for _, db := range dbs {
				b := mustRead(t, db)
				garbage := randomBytes(32, len(b))
				copy(garbage, b[:min(len(b), keep)])
				if err := os.WriteFile(db, garbage, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			env := envWith(r.env, "REPO_CACHE_DIR", broken)
			mustRunBin(t, env, nil, "ls", "latest")
			restoreAndCompare(t, env)
			mustRunBin(t, env, nil, "backup", src)
		})
	}

	t.Run("foreign cache of a copied repository", func(t *testing.T) {
		// A copy of the repository has the same id, so both share one
		// cache directory. Data only the copy has must not be taken as
		// present in the original.
		copyRepo := &testRepo{t: t, dir: filepath.Join(t.TempDir(), "copy")}
		copyDir(t, r.dir, copyRepo.dir)
		copyRepo.env = envWith(r.env, "REPO_REPOSITORY", copyRepo.dir)
		copyRepo.cleanupCheck()

		writeFile(t, filepath.Join(src, "new", "n2.bin"), randomBytes(33, 2<<20), 0o644, gentree.Epoch)
		inCopy := copyRepo.backup(src)
		if inCopy.BytesAdded < 2<<20 {
			t.Fatalf("backup into the copy added %d bytes, want >= 2 MiB", inCopy.BytesAdded)
		}
		inOrig := r.backup(src)
		if inOrig.BytesAdded < 2<<20 {
			t.Errorf("backup into the original added %d bytes: it trusted blobs only the copy has", inOrig.BytesAdded)
		}
		if stdout, stderr, code := r.run(nil, "check"); code != 0 {
			t.Errorf("check of the original: exit %d\n%s%s", code, stdout, stderr)
		}
		restoreAndCompare(t, r.env)
	})
}

// TestE2EConcurrentBackups runs three backups into one repository at the
// same time, sharing one cache directory and some content: all succeed,
// the repository checks clean, and every snapshot restores exactly.
func TestE2EConcurrentBackups(t *testing.T) {
	r := newRepo(t)
	shared := randomBytes(40, 6<<20)
	var srcs []string
	for i := range 3 {
		src := filepath.Join(t.TempDir(), "src")
		generate(t, src, gentree.Spec{Seed: uint64(41 + i), TextFiles: 80, TextMax: 32 << 10, BinFiles: 2, BinMax: 2 << 20})
		writeFile(t, filepath.Join(src, "shared.bin"), shared, 0o644, gentree.Epoch)
		srcs = append(srcs, src)
	}

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	type result struct {
		stdout, stderr bytes.Buffer
		err            error
	}
	results := make([]*result, len(srcs))
	done := make(chan struct{}, len(srcs))
	for i, src := range srcs {
		res := &result{}
		results[i] = res
		cmd := repoCommand(t, ctx, r.env, nil, "backup", "--json", src)
		cmd.Stdout, cmd.Stderr = &res.stdout, &res.stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			res.err = cmd.Wait()
			done <- struct{}{}
		}()
	}
	for range srcs {
		<-done
	}
	ids := map[string]string{}
	for i, res := range results {
		if res.err != nil {
			t.Fatalf("concurrent backup %d: %v\n%s", i, res.err, res.stderr.String())
		}
		ids[srcs[i]] = lastSummary[backupSummary](t, res.stdout.String()).SnapshotID
	}
	if n := len(r.snapshots()); n != len(srcs) {
		t.Errorf("%d snapshots, want %d", n, len(srcs))
	}
	if stdout, stderr, code := r.run(nil, "check"); code != 0 {
		t.Errorf("check after concurrent backups: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, src := range srcs {
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", ids[src], "--target", target)
		compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
	}
}
