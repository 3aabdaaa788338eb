package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// TestE2EInitOptions: repositories made with the init options work end to
// end: unencrypted, without compression, with small packs, and opened with
// a password file.
func TestE2EInitOptions(t *testing.T) {
	t.Parallel()
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 60, TextFiles: 40, TextMax: 64 << 10, RandFiles: 2, RandSize: 3 << 20, Odd: true})
	want := scanTree(t, src)

	roundTrip := func(t *testing.T, r *testRepo) backupSummary {
		t.Helper()
		sum := r.backup(src)
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", "latest", "--target", target)
		compareTrees(t, want, scanTree(t, restoredPath(target, src)), false)
		return sum
	}

	t.Run("insecure no password", func(t *testing.T) {
		r := newRepo(t, "--insecure-no-password")
		if ents, err := os.ReadDir(filepath.Join(r.dir, "keys")); err != nil || len(ents) != 0 {
			t.Errorf("unencrypted repository has key files: %v (err %v)", ents, err)
		}
		// No password needed at all; one given is ignored.
		r.env = envWithout(r.env, "REPO_PASSWORD")
		roundTrip(t, r)
		mustRunBin(t, envWith(r.env, "REPO_PASSWORD", "anything"), nil, "snapshots")
	})

	t.Run("encrypted needs a password for init", func(t *testing.T) {
		env := append(baseEnv(t), "REPO_REPOSITORY="+filepath.Join(t.TempDir(), "repo"))
		if _, stderr, code := runBin(t, env, nil, "init"); code != exitPassword {
			t.Errorf("init without a password or terminal: exit %d, want %d; stderr %s", code, exitPassword, stderr)
		}
		if _, stderr, code := runBin(t, append(env, "REPO_PASSWORD="), nil, "init"); code != exitUsage {
			t.Errorf("init with an empty password: exit %d, want %d; stderr %s", code, exitUsage, stderr)
		}
	})

	t.Run("compression off, 1 MiB packs", func(t *testing.T) {
		r := newRepo(t, "--compression", "off", "--pack-size", "1")
		sum := roundTrip(t, r)
		if sum.BytesStored < sum.BytesAdded {
			t.Errorf("compression off: stored %d bytes for %d added", sum.BytesStored, sum.BytesAdded)
		}
		if sum.PacksAdded < 5 {
			t.Errorf("1 MiB packs: %d packs for %d bytes", sum.PacksAdded, sum.BytesStored)
		}
	})

	t.Run("compression better", func(t *testing.T) {
		r := newRepo(t, "--compression", "better")
		sum := roundTrip(t, r)
		// The text compresses; the random files do not.
		if sum.BytesStored >= sum.BytesAdded {
			t.Errorf("compression better: stored %d bytes for %d added", sum.BytesStored, sum.BytesAdded)
		}
	})

	t.Run("password file", func(t *testing.T) {
		r := newRepo(t)
		pwFile := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pwFile, []byte(testPassword+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env := envWithout(r.env, "REPO_PASSWORD")
		mustRunBin(t, env, nil, "snapshots", "--password-file", pwFile)
		mustRunBin(t, append(env, "REPO_PASSWORD_FILE="+pwFile), nil, "snapshots")
	})

	t.Run("unknown compression", func(t *testing.T) {
		// A usage error: refused before anything is written.
		loc := filepath.Join(t.TempDir(), "repo")
		env := append(baseEnv(t), "REPO_REPOSITORY="+loc, "REPO_PASSWORD=x")
		if _, stderr, code := runBin(t, env, nil, "init", "--compression", "fast-please"); code != exitUsage {
			t.Errorf("init --compression fast-please: exit %d, want %d (usage); stderr %s", code, exitUsage, stderr)
		}
		if _, err := os.Stat(loc); !os.IsNotExist(err) {
			var left []string
			filepath.WalkDir(loc, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			t.Errorf("refused init created %s (files left: %q)", loc, left)
		}
	})
}

// TestE2EBackupCompression: --compression overrides the repository's
// default for one backup, what it stored restores exactly, and a bad value
// is a usage error.
func TestE2EBackupCompression(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 88, TextFiles: 30, TextMax: 32 << 10})
	off := r.backup("--compression", "off", src)
	if off.BytesStored < off.BytesAdded {
		t.Errorf("--compression off stored %d bytes for %d added", off.BytesStored, off.BytesAdded)
	}
	writeFile(t, filepath.Join(src, "more.txt"), gentree.Text(newRand(89), 64<<10), 0o644, gentree.Epoch)
	better := r.backup("--compression", "better", src)
	if better.BytesStored*2 > better.BytesAdded {
		t.Errorf("--compression better stored %d bytes for %d added of text", better.BytesStored, better.BytesAdded)
	}
	target := filepath.Join(t.TempDir(), "target")
	r.mustRun("restore", better.SnapshotID, "--target", target)
	compareTrees(t, scanTree(t, src), scanTree(t, restoredPath(target, src)), false)
	if _, stderr, code := r.run(nil, "backup", "--compression", "bogus", src); code != exitUsage || !strings.Contains(stderr, "unknown compression") {
		t.Errorf("--compression bogus: exit %d, %q", code, stderr)
	}
}
