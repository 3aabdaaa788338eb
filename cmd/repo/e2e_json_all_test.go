package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	"repo/internal/gentree"
)

// TestE2EJSONAll runs every command of the CLI with --json against one
// small repository and holds each to the contract of docs/json.md: stdout
// is JSON objects only, one per line, each with a message_type; a command
// that succeeds ends with exactly one summary, one that fails with an
// exit_error object carrying its exit code; and every message_type and
// field printed is named in docs/json.md. The commands come from the cobra
// tree, so a new command without a case here fails the test.
func TestE2EJSONAll(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "json.md"))
	if err != nil {
		t.Fatalf("the schema is documented in docs/json.md: %v", err)
	}
	// Status objects as often as allowed, so that even these short
	// commands print some, and they are held to the rules too.
	env := append(baseEnv(t), "REPO_PASSWORD="+testPassword, "REPO_PROGRESS_FPS=1000")
	repoDir := filepath.Join(t.TempDir(), "repo")
	env = append(env, "REPO_REPOSITORY="+repoDir)
	r := &testRepo{t: t, dir: repoDir, env: env}

	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	generate(t, src, gentree.Spec{Seed: 31, TextFiles: 12, TextMax: 4 << 10, Odd: true})
	db := filepath.Join(tmp, "app.db")
	createBank(t, db, "wal", 31, 20, 200)
	stdinData := randomBytes(31, 70_000)
	pwFile := func(name, pw string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const secondPW = "second password"
	cheapKDF := []string{"--kdf-memory", "1", "--kdf-time", "1"}

	root := newRootCmd(&globalOptions{})
	covered := map[string]bool{}
	seen := map[string]int{} // message types printed, over all commands
	hexID := regexp.MustCompile(`^[0-9a-f]{64}$`)
	// run runs repo args --json with env and stdin (nil: none), wants exit
	// code want, checks the output against the contract and returns its
	// lines.
	run := func(env []string, stdin []byte, want int, args ...string) []map[string]any {
		t.Helper()
		c, _, err := root.Find(args)
		if err != nil || c == root {
			t.Fatalf("repo %s: not a command: %v", quoteArgs(args), err)
		}
		covered[c.CommandPath()] = true
		args = append(slices.Clone(args), "--json")
		var in io.Reader
		if stdin != nil {
			in = bytes.NewReader(stdin)
		}
		stdout, stderr, code := runBin(t, env, in, args...)
		if code != want {
			t.Fatalf("repo %s: exit %d, want %d\nstderr:\n%s\nstdout:\n%s", quoteArgs(args), code, want, stderr, truncate(stdout, 4000))
		}
		lines := jsonLines(t, stdout)
		if len(lines) == 0 {
			t.Fatalf("repo %s: no output", quoteArgs(args))
		}
		last := lines[len(lines)-1]
		summaries := 0
		for _, l := range lines {
			if l["message_type"] == "summary" {
				summaries++
			}
		}
		switch {
		case want == 0 && (last["message_type"] != "summary" || summaries != 1):
			t.Errorf("repo %s: %d summaries, last line %v; want one summary, last\n%s", quoteArgs(args), summaries, last["message_type"], stdout)
		case want != 0 && last["message_type"] != "exit_error":
			t.Errorf("repo %s: last line %v, want exit_error\n%s", quoteArgs(args), last["message_type"], stdout)
		case want != 0 && last["code"] != float64(want):
			t.Errorf("repo %s: exit_error code %v, want %d", quoteArgs(args), last["code"], want)
		}
		reported := map[string]bool{}
		for _, l := range lines {
			seen[l["message_type"].(string)]++
			for _, name := range append([]string{l["message_type"].(string)}, sortedKeys(l)...) {
				if !bytes.Contains(doc, []byte("`"+name+"`")) && !reported[name] {
					reported[name] = true
					t.Errorf("repo %s: %s object: %q is not documented in docs/json.md", quoteArgs(args), l["message_type"], name)
				}
			}
		}
		return lines
	}
	// summary runs a command that must succeed and returns its summary.
	summary := func(args ...string) map[string]any {
		t.Helper()
		lines := run(env, nil, 0, args...)
		return lines[len(lines)-1]
	}
	// items returns the objects of message_type mt.
	items := func(lines []map[string]any, mt string) []map[string]any {
		var out []map[string]any
		for _, l := range lines {
			if l["message_type"] == mt {
				out = append(out, l)
			}
		}
		return out
	}

	if id, _ := summary(append([]string{"init"}, cheapKDF...)...)["id"].(string); !hexID.MatchString(id) {
		t.Errorf("init: repository id %q", id)
	}
	r.cleanupCheck()

	// Two snapshots of the tree for diff and forget, one of a stream for
	// dump.
	first, _ := summary("backup", src)["snapshot_id"].(string)
	lines := run(env, stdinData, 0, "backup", "--stdin", "--stdin-filename", "data.bin")
	stream, _ := lines[len(lines)-1]["snapshot_id"].(string)
	if err := os.WriteFile(filepath.Join(src, "new.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	second, _ := summary("backup", "-v", src, "--sqlite", db)["snapshot_id"].(string)
	for _, id := range []string{first, stream, second} {
		if !hexID.MatchString(id) {
			t.Fatalf("backup summaries name snapshots %q, %q, %q", first, stream, second)
		}
	}

	if sns := items(run(env, nil, 0, "snapshots"), "snapshot"); len(sns) != 3 {
		t.Errorf("snapshots: %d snapshot objects, want 3", len(sns))
	}
	summary("ls", "-l", second, src)
	if ch := items(run(env, nil, 0, "diff", first, second), "change"); len(ch) == 0 {
		t.Errorf("diff of two different snapshots lists no change")
	}
	if v, ok := summary("restore", "-vv", "--verify", second, "--target", filepath.Join(tmp, "restored"))["verify"].(map[string]any); !ok || v["files_verified"] == float64(0) {
		t.Errorf("restore --verify: the summary has no verify figures: %v", v)
	}

	target := filepath.Join(tmp, "dumped.bin")
	if n := summary("dump", "--target", target, stream, "/data.bin")["bytes"]; n != float64(len(stdinData)) {
		t.Errorf("dump --target: summary says %v bytes, want %d", n, len(stdinData))
	}
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, stdinData) {
		t.Errorf("dump --target wrote %d bytes (%v), not the %d backed up", len(got), err, len(stdinData))
	}
	// Without a file the content has nowhere to go but stdout.
	run(env, nil, exitUsage, "dump", stream, "/data.bin")

	summary("check")
	summary("check", "--read-data")
	summary("check", "--repair", "--dry-run")
	summary("list-broken-files")
	summary("purge-broken-files", "--dry-run")
	summary("stats")

	// A live lock for locks and unlock to report. Killed, its holder
	// leaves it stale, and the next command that takes the exclusive lock
	// (key passwd) removes it with a lock_notice.
	holder := startBg(t, append(slices.Clone(env), "REPO_LOCK_TEST_HOLD="+filepath.Join(tmp, "never")), false, "snapshots")
	waitHolding(t, env, holder, false)
	if l := items(run(env, nil, 0, "locks"), "lock"); len(l) != 1 || l[0]["pid"] != float64(holder.pid()) {
		t.Errorf("locks: %v, want the holder's lock", l)
	}
	if k := items(run(env, nil, 0, "unlock"), "kept"); len(k) != 1 {
		t.Errorf("unlock: kept %v, want the holder's live lock", k)
	}
	holder.signal(t, syscall.SIGKILL)
	if !holder.waitExit(lockWait) {
		t.Fatalf("the lock holder survived SIGKILL")
	}

	// Keys: add one, change its password with it, remove the changed one
	// with the test password, which opens the repository throughout.
	if keys := items(run(env, nil, 0, "key", "list"), "key"); len(keys) != 1 {
		t.Errorf("key list: %d keys, want 1", len(keys))
	}
	summary(append([]string{"key", "add", "--new-password-file", pwFile("pw2", secondPW)}, cheapKDF...)...)
	lines = run(withPassword(env, secondPW), nil, 0, append([]string{"key", "passwd", "--new-password-file", pwFile("pw3", "third password")}, cheapKDF...)...)
	changed, _ := lines[len(lines)-1]["added"].(string)
	if !hexID.MatchString(changed) {
		t.Fatalf("key passwd: added %q", changed)
	}
	summary("key", "remove", changed)
	run(env, nil, exitUsage, "key") // help is no JSON

	if d := items(run(env, nil, 0, "forget", "--keep-last", "1", "--dry-run"), "snapshot"); len(d) != 3 {
		t.Errorf("forget --dry-run: %d decisions, want 3", len(d))
	}
	run(env, nil, exitError, "forget", "deadbeef")
	if rm := items(run(env, nil, 0, "forget", first, "--prune"), "removed"); len(rm) != 1 || rm[0]["snapshot_id"] != first {
		t.Errorf("forget %s: removed %v", first[:8], rm)
	}
	summary("prune")
	summary("version")
	run(envWith(env, "REPO_REPOSITORY", filepath.Join(tmp, "missing")), nil, exitNoRepo, "snapshots")

	// These objects were held to the rules above only if some were
	// printed: -v and -vv print verbose_status for the new and restored
	// files, at 1000 status objects a second every command that reads a
	// pack lasts long enough for several, and the killed holder's lock
	// gave a lock_notice.
	for _, mt := range []string{"status", "verbose_status", "lock_notice"} {
		if seen[mt] == 0 {
			t.Errorf("no command printed a %s object", mt)
		}
	}
	for _, p := range jsonCommands(root) {
		if !covered[p] {
			t.Errorf("%s is not run by TestE2EJSONAll: add a case for it", p)
		}
	}
}

// jsonCommands lists the command paths below root that take --json: every
// command but help, completion, help topics and hidden commands (build
// tools such as the man page writer, which are no part of the interface
// scripts use).
func jsonCommands(root *cobra.Command) []string {
	var out []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" || sub.IsAdditionalHelpTopicCommand() || sub.Hidden {
				continue
			}
			out = append(out, sub.CommandPath())
			walk(sub)
		}
	}
	walk(root)
	return out
}
