package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"repo/backend"
	"repo/backend/location"
	"repo/backend/retry"
	"repo/backend/wrap"
	"repo/repo"
)

// streams are where a command reads and writes; tests inject buffers.
type streams struct {
	in  io.Reader
	out io.Writer
	err io.Writer
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	streams
	repo         string
	passwordFile string
	cacheDir     string
	noCache      bool
	json         bool
	quiet        bool
	// verbose is the -v count: 1 prints each file saved or restored, 2
	// also those left as they were; --quiet overrides it.
	verbose int
	// noColor is --no-color; see colorEnabled for NO_COLOR.
	noColor   bool
	retryLock time.Duration
	// backendOptions are -o KEY=VALUE settings of the backend.
	backendOptions []string
	// limitUpload and limitDownload are in KiB/s; zero means no limit.
	limitUpload   int
	limitDownload int

	// errMu serialises the retry reports, which come from concurrent
	// backend calls.
	errMu sync.Mutex

	// cmd is the command being run (set before it runs); its "lock"
	// annotation says which lock openRepository takes.
	cmd *cobra.Command
	// lock is the lock held by this command, nil when none; lockCtx is the
	// context it cancels when the lock is lost.
	lock    *repo.Lock
	lockCtx context.Context
}

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, s streams) int {
	g := &globalOptions{streams: s}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	err := root.ExecuteContext(ctx)
	if g.lockCtx != nil && errors.Is(context.Cause(g.lockCtx), repo.ErrLockLost) {
		// The command failed because its lock was lost; say that, not
		// "context canceled".
		err = context.Cause(g.lockCtx)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = context.Canceled
		}
		if g.json {
			printJSON(s.out, map[string]any{"message_type": "exit_error", "code": exitCode(err), "message": err.Error()})
		}
		fmt.Fprintln(s.err, errorLine(err))
	}
	return exitCode(err)
}

func newRootCmd(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "repo",
		Short: "Deduplicating, encrypted backups of files, streams and live databases",
		Long: `repo backs up directories, dump streams and live databases into a
content-addressed, deduplicating, encrypted repository.

Exit codes: 0 ok, 1 error, 2 usage, 3 backup saved but some files were
unreadable, 10 no repository at the location, 11 repository locked by
another process (or this process lost its lock), 12 wrong or missing
password.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(),
		// Runnable so that an unknown command reaches RunE and becomes a
		// usage error (exit 2) with suggestions, not cobra's plain error.
		Args: cobra.ArbitraryArgs,
		PersistentPreRun: func(c *cobra.Command, args []string) {
			g.cmd = c
		},
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				if g.json {
					// Help text is no JSON; a script asked for a command.
					return usageError("no command given; see 'repo --help'")
				}
				return c.Help()
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return usageError("%s; see 'repo --help'", msg)
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &codeError{exitUsage, fmt.Errorf("%w%s; see '%s --help'", err, flagSuggestion(c, err), c.CommandPath())}
	})
	f := root.PersistentFlags()
	f.StringVarP(&g.repo, "repo", "r", os.Getenv("REPO_REPOSITORY"), "repository `location` (env REPO_REPOSITORY): a path, local:PATH, sftp:[user@]host[:port]:PATH or s3:https://host/bucket[/prefix] (see docs/backends.md)")
	f.StringVar(&g.passwordFile, "password-file", os.Getenv("REPO_PASSWORD_FILE"), "read the password from `file` (env REPO_PASSWORD_FILE)")
	f.StringVar(&g.cacheDir, "cache-dir", "", "local cache `directory` (default $XDG_CACHE_HOME/repo)")
	f.BoolVar(&g.noCache, "no-cache", false, "use a temporary cache, removed on exit")
	f.BoolVar(&g.json, "json", false, "print JSON, one object per line")
	f.BoolVarP(&g.quiet, "quiet", "q", false, "print only errors and the result")
	f.CountVarP(&g.verbose, "verbose", "v", "backup, restore: print each file saved or restored (-v), also unchanged and skipped ones (-vv); --quiet wins")
	f.BoolVar(&g.noColor, "no-color", false, "never colour the output (also when NO_COLOR is set)")
	f.StringArrayVarP(&g.backendOptions, "option", "o", nil, "backend option `KEY=VALUE` (repeatable): sftp.command, sftp.known-hosts, sftp.identity, sftp.fingerprint, sftp.connections, s3.path-style, s3.storage-class, s3.region, s3.connections")
	f.DurationVar(&g.retryLock, "retry-lock", 0, "when the repository is locked, keep trying for `duration` (e.g. 10m) instead of failing at once")
	f.IntVar(&g.limitUpload, "limit-upload", 0, "limit uploads to `KiB/s` (0: no limit)")
	f.IntVar(&g.limitDownload, "limit-download", 0, "limit downloads to `KiB/s` (0: no limit)")
	root.AddCommand(
		newInitCmd(g),
		newBackupCmd(g),
		newSnapshotsCmd(g),
		newLsCmd(g),
		newDiffCmd(g),
		newRestoreCmd(g),
		newDumpCmd(g),
		newCheckCmd(g),
		newForgetCmd(g),
		newPruneCmd(g),
		newListBrokenFilesCmd(g),
		newPurgeBrokenFilesCmd(g),
		newUnlockCmd(g),
		newLocksCmd(g),
		newKeyCmd(g),
		newStatsCmd(g),
		newVersionCmd(g),
		newCompletionCmd(),
		newManCmd(),
	)
	// cobra would add its own help command when the root runs; this one
	// reports unknown topics (see help.go).
	help := newHelpCmd()
	root.SetHelpCommand(help)
	root.AddCommand(help)
	organizeHelp(root)
	return root
}

// argsRange checks the number of positional arguments (max < 0: no
// upper bound); a wrong count is a usage error (exit 2).
func argsRange(min, max int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			switch {
			case min == max:
				return usageError("%s takes %d argument(s), got %d (see '%s --help')", c.Name(), min, len(args), c.CommandPath())
			case max < 0:
				return usageError("%s takes at least %d argument(s), got %d (see '%s --help')", c.Name(), min, len(args), c.CommandPath())
			}
			return usageError("%s takes %d to %d arguments, got %d (see '%s --help')", c.Name(), min, max, len(args), c.CommandPath())
		}
		return nil
	}
}

// backend opens (or, with create, creates) the storage at -r, wrapped as
// wrapOptions says.
func (g *globalOptions) backend(ctx context.Context, create bool) (backend.Backend, error) {
	if g.repo == "" {
		return nil, usageError("no repository given: use -r/--repo or set REPO_REPOSITORY")
	}
	if g.limitUpload < 0 || g.limitDownload < 0 {
		return nil, usageError("--limit-upload and --limit-download take a rate in KiB/s, 0 or more")
	}
	loc, err := location.Parse(g.repo)
	if err != nil {
		return nil, usageError("%v", err)
	}
	for _, kv := range g.backendOptions {
		k, v, ok := strings.Cut(kv, "=")
		if _, known := location.ValidOptions[k]; !ok || !known {
			return nil, usageError("-o %q: want KEY=VALUE with KEY one of %s", kv, strings.Join(slices.Sorted(maps.Keys(location.ValidOptions)), ", "))
		}
		if !strings.HasPrefix(k, loc.Scheme+".") {
			return nil, usageError("-o %s: not an option of the %s backend", k, loc.Scheme)
		}
		if loc.Options == nil {
			loc.Options = map[string]string{}
		}
		loc.Options[k] = v
	}
	var be backend.Backend
	if create {
		be, err = location.Create(ctx, loc)
	} else {
		be, err = location.Open(ctx, loc)
		if errors.Is(err, backend.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", g.repo, repo.ErrNoRepository)
		}
	}
	if err != nil {
		return nil, err
	}
	return wrap.Wrap(be, g.wrapOptions(loc, be)), nil
}

// wrapOptions decides the backend's wrappers: the rate limits when asked
// for, and for remote backends, whose connections break and heal, retries
// and a connection limit. A local repository stays unwrapped unless limits
// are set: its errors do not heal by waiting.
func (g *globalOptions) wrapOptions(loc location.Location, be backend.Backend) wrap.Options {
	o := wrap.Options{Upload: g.limitUpload * 1024, Download: g.limitDownload * 1024}
	if loc.Scheme != "local" {
		o.Retry = &retry.Options{OnRetry: g.reportRetry}
		o.Connections = be.Properties().Connections
	}
	return o
}

// reportRetry prints that a backend call failed and is retried, unless
// --quiet.
func (g *globalOptions) reportRetry(op string, h backend.Handle, err error, wait time.Duration) {
	if g.quiet {
		return
	}
	obj := h.String()
	if h.Name == "" {
		obj = h.Type.String() // a listing
	}
	g.errMu.Lock()
	defer g.errMu.Unlock()
	fmt.Fprintf(g.err, "retrying %s %s in %v: %v\n", op, obj, wait.Round(time.Millisecond), err)
}

// password returns the repository password from, in order, REPO_PASSWORD,
// the password file, or a prompt on the terminal.
func (g *globalOptions) password(prompt string, confirm bool) (string, error) {
	if pw, ok := os.LookupEnv("REPO_PASSWORD"); ok {
		return pw, nil
	}
	if g.passwordFile != "" {
		b, err := os.ReadFile(g.passwordFile)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return "", repo.ErrPasswordRequired
	}
	defer tty.Close()
	ask := func(p string) (string, error) {
		fmt.Fprint(tty, p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		return string(b), err
	}
	pw, err := ask(prompt)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if confirm {
		again, err := ask("enter the password again: ")
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if again != pw {
			return "", &codeError{exitPassword, errors.New("the passwords do not match")}
		}
	}
	return pw, nil
}

// cacheRoot is where the index caches live, or "" for a temporary one.
func (g *globalOptions) cacheRoot() string {
	if g.noCache {
		return ""
	}
	if g.cacheDir != "" {
		return g.cacheDir
	}
	if d := os.Getenv("REPO_CACHE_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "repo")
	}
	return ""
}

// openRepository opens the repository at -r, takes the lock the running
// command declares (see lockMode) and, when withIndex, brings its index
// cache up to date. Every command that reads a repository opens it here, so
// password, lock and cache handling are the same for all and no command can
// forget its lock. It returns the context the command must use from then
// on: it is cancelled when the lock is lost. The close func releases the
// lock and closes the repository.
func (g *globalOptions) openRepository(ctx context.Context, withIndex bool) (*repo.Repository, context.Context, func(), error) {
	mode, err := lockMode(g.cmd)
	if err != nil {
		return nil, nil, nil, err
	}
	// REPO_INDEX_INTERVAL is for tests, which cannot wait minutes for a
	// periodic index file.
	var indexInterval time.Duration
	if v := os.Getenv("REPO_INDEX_INTERVAL"); v != "" {
		if indexInterval, err = time.ParseDuration(v); err != nil || indexInterval <= 0 {
			return nil, nil, nil, usageError("REPO_INDEX_INTERVAL=%q: want a positive duration such as 30s", v)
		}
	}
	be, err := g.backend(ctx, false)
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := repo.Open(ctx, be, repo.OpenOptions{
		Password:      func() (string, error) { return g.password("enter the repository password: ", false) },
		CacheDir:      g.cacheRoot(),
		IndexInterval: indexInterval,
	})
	if err != nil {
		be.Close()
		return nil, nil, nil, err
	}
	if err := r.CacheFallback(); err != nil && !g.quiet { // stderr: not in the way of --json
		fmt.Fprintf(g.err, "warning: cache directory unusable, using a temporary cache: %v\n", err)
	}
	closeRepo := func() {
		r.Close()
		be.Close()
	}
	if mode != lockNone {
		opts, err := g.lockOptions(mode == lockExclusive)
		if err != nil {
			closeRepo()
			return nil, nil, nil, err
		}
		lk, lctx, err := r.Lock(ctx, opts)
		if err != nil {
			closeRepo()
			return nil, nil, nil, err
		}
		g.lock, g.lockCtx, ctx = lk, lctx, lctx
		closeRepo = func() {
			if err := lk.Unlock(); err != nil {
				fmt.Fprintf(g.err, "warning: could not remove lock %s: %v\n", lk.Name(), err)
			}
			r.Close()
			be.Close()
		}
		if err := holdForTest(ctx); err != nil {
			closeRepo()
			return nil, nil, nil, err
		}
	}
	if withIndex {
		if _, err := r.LoadIndex(ctx); err != nil {
			closeRepo()
			return nil, nil, nil, err
		}
	}
	return r, ctx, closeRepo, nil
}

// openSnapshot opens the repository with its index and resolves the
// snapshot reference ref ("latest" picked with f, or an id prefix).
func (g *globalOptions) openSnapshot(ctx context.Context, ref string, f repo.SnapshotFilter) (*repo.Repository, *repo.Snapshot, context.Context, func(), error) {
	r, ctx, closeRepo, err := g.openRepository(ctx, true)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	sn, err := r.FindSnapshot(ctx, ref, f)
	if err != nil {
		closeRepo()
		return nil, nil, nil, nil, err
	}
	return r, sn, ctx, closeRepo, nil
}

// verbosef prints a progress or informational line unless --quiet or --json.
func (g *globalOptions) verbosef(format string, args ...any) {
	if g.quiet || g.json {
		return
	}
	fmt.Fprintf(g.out, format+"\n", args...)
}

// warn reports an entry that could not be processed: a line on stderr, or a
// JSON error object on stdout.
func (g *globalOptions) warn(path string, err error) {
	if g.json {
		printJSON(g.out, map[string]any{"message_type": "error", "item": path, "error": err.Error()})
		return
	}
	fmt.Fprintf(g.err, "error: %s: %v\n", path, err)
}
