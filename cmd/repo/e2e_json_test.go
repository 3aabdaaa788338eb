package main

import (
	"path/filepath"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// TestE2EJSON: with --json every command prints only JSON objects, one per
// line, each with a message_type, and the commands that produce a result
// end with its summary; failures print an exit_error object.
func TestE2EJSON(t *testing.T) {
	t.Parallel()
	env := append(baseEnv(t), "REPO_PASSWORD="+testPassword)
	repoDir := filepath.Join(t.TempDir(), "repo")
	env = append(env, "REPO_REPOSITORY="+repoDir)

	// init --json on a fresh location; then the repository checks itself
	// at the end like every other.
	initOut := mustRunBin(t, env, nil, "init", "--json")
	if s := lastSummary[map[string]any](t, initOut); s["id"] == nil {
		t.Errorf("init --json summary has no id: %v", s)
	}
	r := &testRepo{t: t, dir: repoDir, env: env}
	r.cleanupCheck()

	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 11, TextFiles: 30, TextMax: 8 << 10, Odd: true})
	target := filepath.Join(t.TempDir(), "target")

	for _, c := range []struct {
		args    []string
		summary bool // the last line is the summary
	}{
		{[]string{"backup", src}, true},
		{[]string{"backup", src}, true},
		{[]string{"snapshots"}, true},
		{[]string{"ls", "latest"}, true},
		{[]string{"ls", "-l", "latest", src}, true},
		{[]string{"restore", "latest", "--target", target}, true},
		{[]string{"check"}, true},
		{[]string{"check", "--read-data"}, true},
		{[]string{"version"}, false},
	} {
		args := append(append([]string{}, c.args...), "--json")
		out := r.mustRun(args...)
		lines := jsonLines(t, out)
		if len(lines) == 0 {
			t.Errorf("repo %s: no output", quoteArgs(args))
			continue
		}
		if last := lines[len(lines)-1]["message_type"]; c.summary && last != "summary" {
			t.Errorf("repo %s: last line has message_type %v, want summary", quoteArgs(args), last)
		}
		for i, l := range lines[:len(lines)-1] {
			if c.summary && l["message_type"] == "summary" {
				t.Errorf("repo %s: summary on line %d of %d", quoteArgs(args), i+1, len(lines))
			}
		}
	}

	// Failures: the exit_error object on stdout, with the exit code.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"snapshots", "-r", filepath.Join(t.TempDir(), "missing")}, exitNoRepo},
		{[]string{"backup", filepath.Join(src, "no-such-file")}, exitError},
		{[]string{"restore", "latest"}, exitUsage},
		{[]string{"ls", "deadbeef"}, exitError},
	} {
		args := append(append([]string{}, c.args...), "--json")
		stdout, stderr, code := r.run(nil, args...)
		if code != c.code {
			t.Errorf("repo %s: exit %d, want %d; stderr %s", quoteArgs(args), code, c.code, stderr)
		}
		lines := jsonLines(t, stdout)
		if len(lines) == 0 || lines[len(lines)-1]["message_type"] != "exit_error" {
			t.Errorf("repo %s: last stdout line is not an exit_error object: %q", quoteArgs(args), stdout)
			continue
		}
		if got, _ := lines[len(lines)-1]["code"].(float64); int(got) != c.code {
			t.Errorf("repo %s: exit_error code %v, want %d", quoteArgs(args), lines[len(lines)-1]["code"], c.code)
		}
		if strings.TrimSpace(stderr) == "" {
			t.Errorf("repo %s: nothing on stderr", quoteArgs(args))
		}
	}
}
