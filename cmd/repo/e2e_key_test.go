package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// keyJSON is one key line of key list --json.
type keyJSON struct {
	MessageType string `json:"message_type"`
	ID          string `json:"id"`
	ShortID     string `json:"short_id"`
	Current     bool   `json:"current"`
	Host        string `json:"host"`
	Username    string `json:"username"`
	Created     string `json:"created"`
}

// withPassword returns env with REPO_PASSWORD set to pw (and no other
// REPO_PASSWORD).
func withPassword(env []string, pw string) []string {
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "REPO_PASSWORD=") })
	return append(out, "REPO_PASSWORD="+pw)
}

// listKeys runs key list --json with password pw and returns the keys and
// the summary.
func listKeys(t *testing.T, env []string, pw string) ([]keyJSON, map[string]any) {
	t.Helper()
	out := mustRunBin(t, withPassword(env, pw), nil, "key", "list", "--json")
	var keys []keyJSON
	lines := jsonLines(t, out)
	for _, l := range lines {
		if l["message_type"] == "key" {
			var k keyJSON
			decodeLine(t, l, &k)
			keys = append(keys, k)
		}
	}
	return keys, lastSummary[map[string]any](t, out)
}

// opens reports how a command that reads the repository ends with
// password pw: its exit code.
func opens(t *testing.T, env []string, pw string) int {
	t.Helper()
	_, _, code := runBin(t, withPassword(env, pw), nil, "snapshots", "-q")
	return code
}

func TestE2EKey(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 21, TextFiles: 10, TextMax: 4 << 10})
	r.backup(src)
	pwDir := t.TempDir()
	pwFile := func(name, pw string) string {
		p := filepath.Join(pwDir, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cheap := []string{"--kdf-memory", "1", "--kdf-time", "1"}
	const second, third = "second password", "third password"

	// One key to start with, the current one.
	keys, _ := listKeys(t, r.env, testPassword)
	if len(keys) != 1 || !keys[0].Current || len(keys[0].ID) != 64 || keys[0].ShortID != keys[0].ID[:8] {
		t.Fatalf("keys after init: %+v", keys)
	}
	first := keys[0].ID

	// Add a second password with labels.
	out := r.mustRun(append([]string{"key", "add", "--new-password-file", pwFile("2", second), "--host", "laptop", "--user", "ann", "--json"}, cheap...)...)
	added, _ := lastSummary[map[string]any](t, out)["added"].(string)
	if len(added) != 64 || added == first {
		t.Fatalf("key add --json: added %q", added)
	}
	for pw, want := range map[string]int{testPassword: 0, second: 0, "wrong": exitPassword} {
		if code := opens(t, r.env, pw); code != want {
			t.Errorf("snapshots with password %q: exit %d, want %d", pw, code, want)
		}
	}
	keys, sum := listKeys(t, r.env, second)
	if len(keys) != 2 || sum["keys"] != float64(2) || sum["current"] != added {
		t.Fatalf("keys with the second password: %+v, summary %v", keys, sum)
	}
	for _, k := range keys {
		if k.Current != (k.ID == added) {
			t.Errorf("key %s: current %v", k.ShortID, k.Current)
		}
		if k.ID == added && (k.Host != "laptop" || k.Username != "ann") {
			t.Errorf("added key labelled %q@%q, want ann@laptop", k.Username, k.Host)
		}
	}
	// The table: a header, then one line per key, * on the current one.
	table := r.mustRun("key", "list")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "ID") {
		t.Fatalf("key list:\n%s", table)
	}
	for _, l := range lines[1:] {
		current := strings.HasPrefix(l, "*"+first[:8])
		other := strings.HasPrefix(l, " "+added[:8]) && strings.Contains(l, "ann") && strings.Contains(l, "laptop")
		if !current && !other {
			t.Errorf("key list line %q: want *%s or %s with ann and laptop", l, first[:8], added[:8])
		}
	}

	// Removal: not the key in use, not the only one.
	env2 := withPassword(r.env, second)
	if _, stderr, code := runBin(t, env2, nil, "key", "remove", added[:8]); code != exitError || !strings.Contains(stderr, "in use") {
		t.Errorf("remove the key in use: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := runBin(t, env2, nil, "key", "remove", "ffffffffffff"); code != exitError || !strings.Contains(stderr, "not found") {
		t.Errorf("remove a key that does not exist: exit %d, stderr %q", code, stderr)
	}
	out = mustRunBin(t, env2, nil, "key", "remove", first[:10], "--json")
	if got := lastSummary[map[string]any](t, out)["removed"]; got != first {
		t.Errorf("key remove --json: removed %v, want %s", got, first)
	}
	if code := opens(t, r.env, testPassword); code != exitPassword {
		t.Errorf("the removed key's password: exit %d, want %d", code, exitPassword)
	}
	if _, stderr, code := runBin(t, env2, nil, "key", "remove", added); code != exitError || !strings.Contains(stderr, "cannot remove the only key") {
		t.Errorf("remove the only key: exit %d, stderr %q", code, stderr)
	}

	// passwd: the new password works, the old one no longer does, and the
	// data is the same.
	out = mustRunBin(t, env2, nil, append([]string{"key", "passwd", "--new-password-file", pwFile("3", third), "--json"}, cheap...)...)
	s := lastSummary[map[string]any](t, out)
	if s["removed"] != added || s["added"] == nil || s["added"] == added {
		t.Errorf("key passwd --json: %v", s)
	}
	if code := opens(t, r.env, second); code != exitPassword {
		t.Errorf("the old password after passwd: exit %d, want %d", code, exitPassword)
	}
	if keys, _ := listKeys(t, r.env, third); len(keys) != 1 || !keys[0].Current || keys[0].ID != s["added"] {
		t.Errorf("keys after passwd: %+v", keys)
	}

	// Usage errors: no terminal and no file; an empty file; kdf bounds.
	env3 := withPassword(r.env, third)
	for _, args := range [][]string{
		{"key", "add"},
		{"key", "passwd"},
		{"key", "add", "--new-password-file", pwFile("empty", "")},
		{"key", "add", "--new-password-file", pwFile("4", "x"), "--kdf-time", "0"},
		{"key", "remove"},
		{"key", "frobnicate"},
	} {
		if _, stderr, code := runBin(t, env3, nil, args...); code != exitUsage {
			t.Errorf("repo %s: exit %d, want %d; stderr %q", quoteArgs(args), code, exitUsage, stderr)
		}
	}
	if code := opens(t, r.env, third); code != 0 {
		t.Errorf("after the usage errors: exit %d", code)
	}

	// Back to the test password, through passwd, for the final check.
	mustRunBin(t, env3, nil, append([]string{"key", "passwd", "-q", "--new-password-file", pwFile("back", testPassword)}, cheap...)...)
	r.mustRun("restore", "latest", "--target", filepath.Join(t.TempDir(), "restore"))
}

// Key commands refuse an unencrypted repository, which has no keys.
func TestE2EKeyUnencrypted(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "--insecure-no-password")
	for _, args := range [][]string{
		{"key", "list"},
		{"key", "add", "--new-password-file", "/dev/null"},
		{"key", "remove", "00"},
		{"key", "passwd", "--new-password-file", "/dev/null"},
	} {
		if _, stderr, code := r.run(nil, args...); code != exitError || !strings.Contains(stderr, "not encrypted") {
			t.Errorf("repo %s on an unencrypted repository: exit %d, stderr %q", quoteArgs(args), code, stderr)
		}
	}
}

// The key commands declare the locks their help promises.
func TestKeyLockModes(t *testing.T) {
	g := &globalOptions{}
	want := map[string]string{"list": lockNone, "add": lockShared, "remove": lockExclusive, "passwd": lockExclusive}
	for _, c := range newKeyCmd(g).Commands() {
		if got, err := lockMode(c); err != nil || got != want[c.Name()] {
			t.Errorf("key %s: lock %q (%v), want %q", c.Name(), got, err, want[c.Name()])
		}
		delete(want, c.Name())
	}
	if len(want) != 0 {
		t.Errorf("key subcommands missing: %v", want)
	}
	if got, err := lockMode(newStatsCmd(g)); err != nil || got != lockShared {
		t.Errorf("stats: lock %q (%v), want shared", got, err)
	}
}

// While another process holds a shared lock, key add and key list run and
// key remove and key passwd fail with exit 11, changing nothing.
func TestE2EKeyLocks(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	release := filepath.Join(t.TempDir(), "release")
	holder := startBg(t, append(slices.Clone(r.env), "REPO_LOCK_TEST_HOLD="+release), false, "snapshots")
	waitHolding(t, r.env, holder, false)

	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("second"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := r.mustRun("key", "add", "--new-password-file", pw, "--kdf-memory", "1", "--kdf-time", "1", "--json")
	added, _ := lastSummary[map[string]any](t, out)["added"].(string)
	r.mustRun("key", "list")
	for _, args := range [][]string{
		{"key", "remove", added},
		{"key", "passwd", "--new-password-file", pw},
	} {
		if _, stderr, code := r.run(nil, args...); code != exitLocked {
			t.Errorf("repo %s beside a shared lock: exit %d, want %d; stderr %q", quoteArgs(args), code, exitLocked, stderr)
		}
	}
	if keys, _ := listKeys(t, r.env, testPassword); len(keys) != 2 {
		t.Errorf("%d keys after the refused commands, want 2", len(keys))
	}

	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	holder.finish(t)
	if code := holder.code(); code != 0 {
		t.Fatalf("lock holder: %s", holder.describe())
	}
	r.mustRun("key", "remove", added)
	checkNoLocks(t, r.dir, "after key remove")
}
