package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"repo/backend"
	"repo/chunk"
	"repo/index"
	"repo/internal/testserver"
	"repo/repo"
)

// runInProcess runs the command line args in this process, as main does,
// and returns what it printed and its exit code. It suits commands that
// do not open a repository.
func runInProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, streams{in: strings.NewReader(""), out: &out, err: &errOut})
	return out.String(), errOut.String(), code
}

// visibleCommands returns every command of a fresh tree that a user can
// call: all but the hidden ones (__man).
func visibleCommands(t *testing.T) []*cobra.Command {
	t.Helper()
	var cmds []*cobra.Command
	walkCommands(newRootCmd(&globalOptions{}), func(c *cobra.Command) {
		if !c.Hidden {
			cmds = append(cmds, c)
		}
	})
	if len(cmds) < 20 {
		t.Fatalf("only %d commands in the tree", len(cmds))
	}
	return cmds
}

// Every command's help shows examples and its exit codes: this is the
// guard that keeps a new command from arriving without them.
func TestHelpEveryCommand(t *testing.T) {
	for _, c := range visibleCommands(t) {
		args := append(strings.Fields(c.CommandPath())[1:], "--help")
		t.Run(c.CommandPath(), func(t *testing.T) {
			out, stderr, code := runInProcess(t, args...)
			if code != 0 || stderr != "" {
				t.Fatalf("repo %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr)
			}
			_, examples, ok := strings.Cut(out, "Examples:\n")
			if !ok {
				t.Errorf("%s: help has no \"Examples:\" section:\n%s", c.CommandPath(), out)
			} else if first, _, _ := strings.Cut(examples, "\n"); !strings.HasPrefix(first, "  ") || !strings.Contains(first, "repo") {
				t.Errorf("%s: the first line under Examples: is %q, want an indented command line", c.CommandPath(), first)
			}
			_, codes, ok := strings.Cut(out, "Exit codes: 0 ")
			if !ok {
				t.Errorf("%s: help lists no exit codes (\"Exit codes: 0 ...\"):\n%s", c.CommandPath(), out)
			}
			// Every command exits 2 on a bad flag; every one that takes
			// a lock exits 11 when another process holds a conflicting one.
			codes, _, _ = strings.Cut(codes, "\n\n")
			codes = strings.Join(strings.Fields(codes), " ")
			if !strings.Contains(codes, " 2 usage") {
				t.Errorf("%s: the exit codes do not list 2 usage: %q", c.CommandPath(), codes)
			}
			if m := c.Annotations["lock"]; (m == lockShared || m == lockExclusive) && !strings.Contains(codes, " 11 ") {
				t.Errorf("%s: takes a %s lock, but the exit codes do not list 11: %q", c.CommandPath(), m, codes)
			}
		})
	}
}

// 'repo help' shows every command in one of the groups, none under
// cobra's "Additional Commands", and every name in commandGroups exists.
func TestHelpGroups(t *testing.T) {
	root := newRootCmd(&globalOptions{})
	for _, grp := range commandGroups {
		for _, name := range grp.commands {
			if c, _, err := root.Find([]string{name}); err != nil || c == root {
				t.Errorf("group %q lists %q, which is no command", grp.id, name)
			}
		}
	}
	for _, c := range root.Commands() {
		if !c.Hidden && c.GroupID == "" {
			t.Errorf("command %q is in no group of commandGroups", c.Name())
		}
	}
	out, _, code := runInProcess(t, "help")
	if code != 0 {
		t.Fatalf("repo help: exit %d", code)
	}
	for _, grp := range commandGroups {
		if !strings.Contains(out, "\n"+grp.title+"\n") {
			t.Errorf("repo help does not show the group %q:\n%s", grp.title, out)
		}
	}
	if strings.Contains(out, "Additional Commands") {
		t.Errorf("repo help lists ungrouped commands:\n%s", out)
	}
}

// Mistyped commands, subcommands and flags are usage errors (exit 2) that
// name what was probably meant, in one line.
func TestSuggestions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" for no suggestion at all
	}{
		{[]string{"bakup"}, `(did you mean "backup"?); see 'repo --help'`},
		{[]string{"snapshot"}, `(did you mean "snapshots"?)`},
		{[]string{"key", "lst"}, `unknown command "key lst" (did you mean "key list"?); see 'repo key --help'`},
		{[]string{"key", "frobnicate"}, ""},
		{[]string{"help", "restor"}, `(did you mean "restore"?)`},
		{[]string{"help", "key", "ad"}, `(did you mean "key add"?)`},
		{[]string{"completion", "bsh"}, `(did you mean "completion bash"?)`},
		{[]string{"backup", "--exlude", "x", "/"}, "unknown flag: --exlude (did you mean --exclude?); see 'repo backup --help'"},
		{[]string{"forget", "--keep-dayly", "3"}, "(did you mean --keep-daily?)"},
		{[]string{"check", "--read-dta"}, "(did you mean --read-data?)"},
		{[]string{"prune", "--dry"}, "(did you mean --dry-run?)"},
		{[]string{"snapshots", "--passwrd-file", "x"}, "(did you mean --password-file?)"},
		{[]string{"snapshots", "--verify"}, "(--verify is a flag of 'repo restore')"},
		{[]string{"backup", "--zzzzzzzz"}, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := runInProcess(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "repo: ") {
				t.Errorf("want one line on stderr, got %q", stderr)
			}
			switch {
			case tc.want == "" && (strings.Contains(stderr, "did you mean") || strings.Contains(stderr, "is a flag of")):
				t.Errorf("stderr %q suggests something, want no suggestion", stderr)
			case tc.want != "" && !strings.Contains(stderr, tc.want):
				t.Errorf("stderr %q, want it to contain %q", stderr, tc.want)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"exclude", "exclude", 0},
		{"exlude", "exclude", 1},
		{"keep-dayly", "keep-daily", 1},
		{"tag", "tga", 2},
		{"kitten", "sitting", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := editDistance(tc.b, tc.a); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.b, tc.a, got, tc.want)
		}
	}
}

// The fixed-value flags complete their values (registered from help.go on
// flags the command files define), each value is one the flag's usage
// names, and shells get them through cobra's __complete.
func TestFlagCompletions(t *testing.T) {
	root := newRootCmd(&globalOptions{})
	for _, fv := range flagValues {
		c, _, err := root.Find(strings.Fields(fv.command)[1:])
		if err != nil || c.CommandPath() != fv.command {
			t.Errorf("%s: no such command", fv.command)
			continue
		}
		f := c.Flag(fv.flag)
		if f == nil {
			t.Errorf("%s --%s: no such flag", fv.command, fv.flag)
			continue
		}
		complete, ok := c.GetFlagCompletionFunc(fv.flag)
		if !ok {
			t.Errorf("%s --%s: no completion registered", fv.command, fv.flag)
			continue
		}
		got, directive := complete(c, nil, "")
		if !slices.Equal(got, fv.values) || directive != cobra.ShellCompDirectiveNoFileComp {
			t.Errorf("%s --%s completes %q (directive %d), want %q without files", fv.command, fv.flag, got, directive, fv.values)
		}
		for _, v := range fv.values {
			value, _, _ := strings.Cut(v, "\t")
			for part := range strings.SplitSeq(value, ",") {
				if !strings.Contains(f.Usage, part) && part != f.DefValue && !strings.Contains(c.Long, part) {
					t.Errorf("%s --%s completes %q, which neither its usage %q nor the command's help names", fv.command, fv.flag, part, f.Usage)
				}
			}
		}
	}
	for _, df := range dirFlags {
		c, _, err := root.Find(strings.Fields(df.command)[1:])
		if err != nil || c.CommandPath() != df.command || c.Flag(df.flag) == nil {
			t.Errorf("%s --%s: no such command or flag", df.command, df.flag)
			continue
		}
		complete, ok := c.GetFlagCompletionFunc(df.flag)
		if !ok {
			t.Errorf("%s --%s: no completion registered", df.command, df.flag)
			continue
		}
		if _, directive := complete(c, nil, ""); directive != cobra.ShellCompDirectiveFilterDirs {
			t.Errorf("%s --%s: directive %d, want directories (%d)", df.command, df.flag, directive, cobra.ShellCompDirectiveFilterDirs)
		}
	}

	// What a shell runs when the user presses Tab after --overwrite.
	out, stderr, code := runInProcess(t, "__complete", "restore", "latest", "--overwrite", "if")
	if code != 0 {
		t.Fatalf("__complete: exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var values []string
	for _, l := range lines[:len(lines)-1] {
		v, _, _ := strings.Cut(l, "\t")
		values = append(values, v)
	}
	// Shells filter by the prefix; cobra hands them the whole list.
	if !slices.Contains(values, "if-changed") || !slices.Contains(values, "if-newer") || lines[len(lines)-1] != fmt.Sprintf(":%d", cobra.ShellCompDirectiveNoFileComp) {
		t.Errorf("__complete restore --overwrite: got %q", out)
	}
}

// The completion scripts are valid shell: bash -n, zsh -n and fish
// --no-execute (zsh and fish are installed with apt-get when missing).
func TestCompletionScripts(t *testing.T) {
	for _, sh := range []struct {
		shell string
		check []string
		path  string // the shell, installed from the Debian package of the same name
	}{
		{"bash", []string{"bash", "-n"}, "/bin/bash"},
		{"zsh", []string{"zsh", "-n"}, "/usr/bin/zsh"},
		{"fish", []string{"fish", "--no-execute"}, "/usr/bin/fish"},
	} {
		t.Run(sh.shell, func(t *testing.T) {
			testserver.EnsurePackage(t, sh.path, sh.shell)
			bin := sh.path
			script, stderr, code := runInProcess(t, "completion", sh.shell)
			if code != 0 || !strings.Contains(script, "__complete") {
				t.Fatalf("repo completion %s: exit %d, stderr %q, script of %d bytes without __complete", sh.shell, code, stderr, len(script))
			}
			file := filepath.Join(t.TempDir(), "repo."+sh.shell)
			if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, append(sh.check[1:], file)...).CombinedOutput()
			if err != nil {
				t.Errorf("%s %s: %v\n%s", strings.Join(sh.check, " "), file, err, out)
			}
			// A script with a syntax error must fail the same check,
			// or passing it proves nothing.
			broken := filepath.Join(t.TempDir(), "broken."+sh.shell)
			if err := os.WriteFile(broken, []byte(script+"\nif then fi ( }\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, append(sh.check[1:], broken)...).CombinedOutput(); err == nil {
				t.Errorf("%s accepts a broken script: %s", strings.Join(sh.check, " "), out)
			}
		})
	}
	if _, stderr, code := runInProcess(t, "completion", "nushell"); code != exitUsage || !strings.Contains(stderr, "bash, zsh, fish or powershell") {
		t.Errorf("repo completion nushell: exit %d, stderr %q; want a usage error naming the shells", code, stderr)
	}
}

// 'repo __man DIR' writes one page per command that 'repo help' lists,
// with the help text's examples kept line by line.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, code := runInProcess(t, "__man", dir); code != 0 {
		t.Fatalf("repo __man: exit %d, stderr %q", code, stderr)
	}
	var want []string
	walkCommands(newRootCmd(&globalOptions{}), func(c *cobra.Command) {
		if !c.HasParent() || c.IsAvailableCommand() {
			want = append(want, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1")
		}
	})
	got := dirNames(t, dir)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("man pages %q,\nwant one per command: %q", got, want)
	}
	for _, name := range []string{"repo-backup.1", "repo-key-add.1"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		page := string(b)
		if !strings.HasPrefix(page, ".nh\n.TH \"REPO\" \"1\"") || !strings.Contains(page, "Exit codes") {
			t.Errorf("%s: not a man page with exit codes:\n%s", name, page)
		}
	}
	// An example line of backup's help stays a line of its own, in an
	// example block (.EX ... .EE), not run into a paragraph.
	b, _ := os.ReadFile(filepath.Join(dir, "repo-backup.1"))
	_, block, _ := strings.Cut(string(b), "\n.EX\n")
	block, _, _ = strings.Cut(block, "\n.EE\n")
	if !hasLine(block, "repo backup --sqlite /var/lib/app/app.db") {
		t.Errorf("repo-backup.1 has no example block with the line 'repo backup --sqlite /var/lib/app/app.db':\n%s", b)
	}

	if _, stderr, code := runInProcess(t, "__man", filepath.Join(dir, "missing")); code != exitUsage {
		t.Errorf("repo __man into a missing directory: exit %d, want %d; stderr %q", code, exitUsage, stderr)
	}
}

// hasLine reports whether s has a line that, trimmed, is exactly line.
func hasLine(s, line string) bool {
	for l := range strings.SplitSeq(s, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// The man page conversion leaves a tree's help texts as they were.
func TestManPagesRestoreHelp(t *testing.T) {
	root := newRootCmd(&globalOptions{})
	before := map[string]string{}
	walkCommands(root, func(c *cobra.Command) { before[c.CommandPath()] = c.Long })
	if err := writeManPages(root, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	walkCommands(root, func(c *cobra.Command) {
		// Generating adds cobra's help subcommands to parents (key help);
		// only the commands that were there before count.
		if long, ok := before[c.CommandPath()]; ok && c.Long != long {
			t.Errorf("%s: Long changed by writeManPages", c.CommandPath())
		}
	})
}

func TestTextToMarkdown(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain words", "plain words\n"},
		{"a *glob* and_under [x] <y> `z`", "a \\*glob\\* and\\_under \\[x\\] \\<y\\> \\`z\\`\n"},
		{"--flag starts a line\n- and a dash", "\\--flag starts a line\n\\- and a dash\n"},
		{"2. a list?\n10) too\n10 no repository", "2\\. a list?\n10\\) too\n10 no repository\n"},
		{"Examples:\n  repo ls '*.go'\n  repo x\nafter", "Examples:\n\n      repo ls '*.go'\n      repo x\n\nafter\n"},
		{"para\n\n  code\n\nnext", "para\n\n      code\n\nnext\n"},
	} {
		if got := textToMarkdown(tc.in); got != tc.want {
			t.Errorf("textToMarkdown(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// errorLine names what to do next for each kind of failure, chosen by the
// error's type, in one line.
func TestErrorLine(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	holder := func(h string) repo.LockRecord {
		return repo.LockRecord{Exclusive: true, Hostname: h, PID: 4242, Command: "prune", Created: created, Refreshed: created}
	}
	pack := chunk.ID{1, 2, 3}
	for _, tc := range []struct {
		name string
		err  error
		want []string // substrings, in order
		not  []string
	}{
		{"plain", errors.New("boom"), []string{"repo: boom"}, []string{"("}},
		{"multi-line", errors.New("first\nsecond"), []string{"repo: first second"}, nil},
		{"interrupted", fmt.Errorf("backup: %w", context.Canceled), []string{"repo: interrupted"}, nil},
		{"no repository", fmt.Errorf("/srv/x: %w", repo.ErrNoRepository), []string{"no repository", "repo init -r LOCATION", "REPO_REPOSITORY"}, nil},
		{"lock of another host", &repo.LockedError{Holder: holder("db7.example"), Name: "abcdef0123"},
			[]string{"db7.example PID 4242 (prune", "since " + created.Format("2006-01-02 15:04:05"), "--retry-lock", "if no repo process on db7.example uses the repository any more", "'repo unlock --remove-all'"}, nil},
		{"lock of a live process here", &repo.LockedError{Holder: holder(host), Name: "abcdef0123"},
			[]string{host + " PID 4242", "alive on this host", "since " + created.Format("2006-01-02 15:04:05"), "kill 4242"}, []string{"--remove-all"}},
		{"lock gate", &repo.LockedError{Holder: holder("db7.example"), Name: "exclusive", Gate: true}, []string{"being locked by", "again in a moment"}, []string{"--remove-all"}},
		{"unreadable lock", fmt.Errorf("lock: %w", &repo.LockedError{Name: "abcdef0123", Unreadable: true, Err: errors.New("ciphertext damaged")}),
			[]string{"unreadable lock", "repo unlock --remove-all"}, nil},
		{"lock lost", fmt.Errorf("backup: %w", repo.ErrLockLost), []string{"lock lost", "run the command again"}, nil},
		{"no password", repo.ErrPasswordRequired, []string{"REPO_PASSWORD", "REPO_PASSWORD_FILE", "--password-file", "terminal"}, nil},
		{"wrong password", fmt.Errorf("open repository: %w", repo.ErrWrongPassword), []string{"wrong password", "REPO_PASSWORD, when set, is used before --password-file"}, nil},
		{"exists", fmt.Errorf("init: %w", repo.ErrAlreadyInitialized), []string{"already initialized", "another location"}, nil},
		{"snapshot not found", fmt.Errorf("find 3fa2: %w", repo.ErrSnapshotNotFound), []string{"not found", "'repo snapshots'"}, nil},
		{"ambiguous snapshot", &repo.AmbiguousSnapshotError{Prefix: "3f", Matches: 2}, []string{"ambiguous", "more digits"}, nil},
		{"missing pack", fmt.Errorf("restore /x: %w", &repo.BlobError{Type: index.DataBlob, ID: chunk.ID{9}, Pack: pack, Err: fmt.Errorf("load: %w", backend.ErrNotExist)}),
			[]string{"in pack " + pack.Short(), "'repo check'", "'repo list-broken-files'", "'repo check --repair'"}, nil},
		{"blob not indexed", &repo.BlobError{Type: index.TreeBlob, ID: chunk.ID{9}, Err: repo.ErrBlobNotIndexed}, []string{"not in index", "'repo check --repair'"}, nil},
		{"missing config is no pack", fmt.Errorf("load config: %w", backend.ErrNotExist), []string{"does not exist"}, []string{"repair"}},
		{"disk full", backend.Permanent(fmt.Errorf("disk is full: %w", &fs.PathError{Op: "write", Path: "/srv/backup/data/ab/x", Err: syscall.ENOSPC})),
			[]string{"disk is full", "free space", "elsewhere", "resumes"}, nil},
		{"quota", &fs.PathError{Op: "write", Path: "/srv/backup/data/ab/x", Err: syscall.EDQUOT}, []string{"free space"}, nil},
		{"permission denied", fmt.Errorf("open repository: %w", &fs.PathError{Op: "open", Path: "/srv/backup/config", Err: syscall.EACCES}),
			[]string{"permission denied", "run as a user who may access that path"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := errorLine(tc.err)
			if !strings.HasPrefix(got, "repo: ") || strings.Contains(got, "\n") {
				t.Errorf("errorLine = %q, want one line starting with \"repo: \"", got)
			}
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("errorLine = %q\nwant, in order: %q (missing %q)", got, tc.want, w)
					break
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("errorLine = %q, must not contain %q", got, n)
				}
			}
		})
	}
}

// version --json is one summary object with the build information.
func TestVersion(t *testing.T) {
	out, stderr, code := runInProcess(t, "version", "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("repo version --json: exit %d, stderr %q", code, stderr)
	}
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("repo version --json: want one line, got %q", out)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	want := versionInfo{MessageType: "summary", Version: version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if v.MessageType != want.MessageType || v.Version != want.Version || v.GoVersion != want.GoVersion || v.OS != want.OS || v.Arch != want.Arch || v.Dependencies != nil {
		t.Errorf("repo version --json = %+v, want %+v", v, want)
	}

	text, _, code := runInProcess(t, "version")
	if code != 0 || !strings.HasPrefix(text, "repo "+version+"\n") || !strings.Contains(text, runtime.Version()) || !strings.Contains(text, runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("repo version: exit %d, output %q", code, text)
	}

	// The global -v (of the progress display) adds the dependencies.
	out, stderr, code = runInProcess(t, "version", "-v", "--json")
	v = versionInfo{}
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || len(v.Dependencies) != len(mainDependencies) {
		t.Errorf("repo version -v --json: exit %d, stderr %q, %d dependencies (%v), want %d: %s", code, stderr, len(v.Dependencies), err, len(mainDependencies), out)
	}
}

// Every main dependency 'version -v' names is linked in, with a version.
func TestVersionDependencies(t *testing.T) {
	v := readVersionInfo(true)
	var got []string
	for _, d := range v.Dependencies {
		got = append(got, d.Path)
		if d.Version == "" || d.Role == "" {
			t.Errorf("dependency %+v lacks a version or role", d)
		}
	}
	for _, m := range mainDependencies {
		if !slices.Contains(got, m.path) {
			t.Errorf("main dependency %s is not linked into this binary: remove it from mainDependencies", m.path)
		}
	}
	if readVersionInfo(false).Dependencies != nil {
		t.Error("dependencies listed without verbose")
	}
}

func TestVerboseFlag(t *testing.T) {
	for _, tc := range []struct {
		define func(c *cobra.Command)
		args   []string
		want   bool
	}{
		{func(*cobra.Command) {}, nil, false},
		{func(c *cobra.Command) { c.Flags().BoolP("verbose", "v", false, "") }, nil, false},
		{func(c *cobra.Command) { c.Flags().BoolP("verbose", "v", false, "") }, []string{"-v"}, true},
		{func(c *cobra.Command) { c.Flags().BoolP("verbose", "v", false, "") }, []string{"--verbose=false"}, false},
		{func(c *cobra.Command) { c.Flags().CountP("verbose", "v", "") }, []string{"-vv"}, true},
		{func(c *cobra.Command) { c.Flags().CountP("verbose", "v", "") }, []string{"--verbose=0"}, false},
	} {
		c := &cobra.Command{Use: "x"}
		tc.define(c)
		if err := c.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := verboseFlag(c); got != tc.want {
			t.Errorf("verboseFlag after %q = %v, want %v", tc.args, got, tc.want)
		}
	}
}
