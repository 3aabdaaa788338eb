package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// TestE2EErrors checks the documented exit codes of common mistakes and
// that the messages are one line saying what is wrong.
func TestE2EErrors(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 4, TextFiles: 20, TextMax: 4 << 10})
	sum := r.backup(src)
	file := filepath.Join(src, "d00", "e0", "t00000.txt")
	target := filepath.Join(t.TempDir(), "target")

	// Commands that open the repository, with what they need besides.
	opening := [][]string{
		{"snapshots"},
		{"ls", "latest"},
		{"check"},
		{"backup", src},
		{"restore", "latest", "--target", target},
		{"dump", "latest", file},
	}
	cleanEnv := func(vars ...string) []string {
		env := baseEnv(t)
		return append(env, vars...)
	}

	t.Run("wrong password", func(t *testing.T) {
		for _, args := range opening {
			stdout, stderr, code := runBin(t, cleanEnv("REPO_REPOSITORY="+r.dir, "REPO_PASSWORD=wrong"), nil, args...)
			if code != exitPassword {
				t.Errorf("repo %s with a wrong password: exit %d, want %d\nstderr: %s", quoteArgs(args), code, exitPassword, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(strings.ToLower(lines[0]), "password") {
				t.Errorf("repo %s with a wrong password: want one stderr line about the password, got %q", quoteArgs(args), stderr)
			}
			if stdout != "" {
				t.Errorf("repo %s with a wrong password printed to stdout: %q", quoteArgs(args), stdout)
			}
		}
		// The password file is an alternative way to give the same.
		pwFile := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pwFile, []byte("wrong\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := runBin(t, cleanEnv(), nil, "snapshots", "-r", r.dir, "--password-file", pwFile); code != exitPassword {
			t.Errorf("wrong --password-file: exit %d, want %d; stderr: %s", code, exitPassword, stderr)
		}
	})

	t.Run("no password", func(t *testing.T) {
		for _, args := range opening {
			_, stderr, code := runBin(t, cleanEnv("REPO_REPOSITORY="+r.dir), nil, args...)
			if code != exitPassword {
				t.Errorf("repo %s without a password (and no terminal): exit %d, want %d\nstderr: %s", quoteArgs(args), code, exitPassword, stderr)
			}
			if !strings.Contains(strings.ToLower(stderr), "password") {
				t.Errorf("repo %s without a password: stderr does not mention the password: %q", quoteArgs(args), stderr)
			}
		}
	})

	t.Run("no repository", func(t *testing.T) {
		empty := t.TempDir()
		missing := filepath.Join(t.TempDir(), "does", "not", "exist")
		for _, loc := range []string{missing, empty, "local:" + missing} {
			for _, args := range opening {
				_, stderr, code := runBin(t, cleanEnv("REPO_PASSWORD="+testPassword), nil, append(args, "-r", loc)...)
				if code != exitNoRepo {
					t.Errorf("repo %s -r %s: exit %d, want %d\nstderr: %s", quoteArgs(args), loc, code, exitNoRepo, stderr)
				}
			}
		}
		if _, err := os.Stat(filepath.Dir(filepath.Dir(missing))); !os.IsNotExist(err) {
			t.Errorf("commands on a missing repository created %s (stat: %v)", filepath.Dir(filepath.Dir(missing)), err)
		}
		if ents, _ := os.ReadDir(empty); len(ents) != 0 {
			t.Errorf("commands on an empty directory wrote into it: %v", ents)
		}
	})

	t.Run("init on a repository", func(t *testing.T) {
		before := hashDir(t, r.dir)
		for _, env := range [][]string{
			r.env,
			cleanEnv("REPO_REPOSITORY="+r.dir, "REPO_PASSWORD=another password"),
		} {
			for _, args := range [][]string{{"init"}, {"init", "--insecure-no-password"}} {
				_, stderr, code := runBin(t, env, nil, args...)
				if code != exitError {
					t.Errorf("repo %s on an existing repository: exit %d, want %d\nstderr: %s", quoteArgs(args), code, exitError, stderr)
				}
				if !strings.Contains(stderr, "already") {
					t.Errorf("repo %s on an existing repository: stderr does not say it exists: %q", quoteArgs(args), stderr)
				}
			}
		}
		after := hashDir(t, r.dir)
		for _, d := range setDiff(after, before) {
			t.Errorf("init on an existing repository changed it: %s", d)
		}
		// Still the same repository, with the same password.
		if sns := r.snapshots(); len(sns) != 1 || sns[0].ID != sum.SnapshotID {
			t.Errorf("after a refused init: snapshots %v, want only %s", sns, sum.SnapshotID)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"restore", "latest"},           // no --target
			{"restore", "--target", target}, // no snapshot
			{"restore", "a", "b", "--target", target},
			{"snapshots", "--no-such-flag"},
			{"backup", "--no-such-flag", src},
			{"backup"},                 // no paths
			{"backup", "--stdin", src}, // both
			{"backup", "--force", "--parent", sum.SnapshotID, src},
			{"ls"},
			{"ls", "latest", "/", "extra"},
			{"dump", "latest"},
			{"check", "extra"},
			{"snapshots", "extra"},
			{"init", "--pack-size", "0"},
			{"init", "--pack-size", "many"},
			{"version", "extra"},
			{"no-such-command"},
		} {
			_, stderr, code := r.run(nil, args...)
			if code != exitUsage {
				t.Errorf("repo %s: exit %d, want %d (usage)\nstderr: %s", quoteArgs(args), code, exitUsage, stderr)
			}
			if strings.Count(strings.TrimSuffix(stderr, "\n"), "\n") != 0 || stderr == "" {
				t.Errorf("repo %s: want one line on stderr, got %q", quoteArgs(args), stderr)
			}
		}
		// No repository given at all is a usage error too.
		if _, stderr, code := runBin(t, cleanEnv("REPO_PASSWORD="+testPassword), nil, "snapshots"); code != exitUsage {
			t.Errorf("snapshots without -r or REPO_REPOSITORY: exit %d, want %d\nstderr: %s", code, exitUsage, stderr)
		}
	})

	t.Run("missing backup path", func(t *testing.T) {
		// A path that does not exist among the targets: an error, and no
		// snapshot is saved.
		_, stderr, code := r.run(nil, "backup", src, filepath.Join(src, "no-such-dir"))
		if code != exitError {
			t.Errorf("backup of a missing path: exit %d, want %d\nstderr: %s", code, exitError, stderr)
		}
		if !strings.Contains(stderr, "no-such-dir") {
			t.Errorf("backup of a missing path: stderr does not name it: %q", stderr)
		}
		if sns := r.snapshots(); len(sns) != 1 {
			t.Errorf("backup of a missing path saved a snapshot: %d snapshots, want 1", len(sns))
		}
	})

	t.Run("unknown snapshot", func(t *testing.T) {
		for _, args := range [][]string{
			{"restore", "deadbeef", "--target", target},
			{"ls", "deadbeef"},
			{"dump", "deadbeef", file},
		} {
			_, stderr, code := r.run(nil, args...)
			if code != exitError || !strings.Contains(stderr, "not found") {
				t.Errorf("repo %s: exit %d, stderr %q; want exit %d and 'not found'", quoteArgs(args), code, stderr, exitError)
			}
		}
	})
}

// hashDir describes every entry below dir (name, type, mode, and the
// SHA-256 of file contents), sorted.
func hashDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%s %v", p, fi.Mode())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out = append(out, desc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
