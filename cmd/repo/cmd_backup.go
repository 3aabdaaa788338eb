package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"repo/repo"
	"repo/source"
	"repo/source/sqlite"
)

type backupOptions struct {
	stdin         bool
	stdinFilename string
	excludes      []string
	tags          []string
	host          string
	parent        string
	force         bool
	databases     []string
	fromCommand   bool
	freezeCmd     string
	thawCmd       string
	freezeTimeout time.Duration
	time          string // --time: the snapshot's time instead of now
	compression   string // --compression: overrides the repository's default
}

func newBackupCmd(g *globalOptions) *cobra.Command {
	var o backupOptions
	c := &cobra.Command{
		Use:   "backup [flags] [PATH...] [--sqlite DB...] | --stdin | --stdin-from-command -- CMD [ARG...]",
		Short: "Save a snapshot of files, live SQLite databases, or a dump stream",
		Long: `Save a new snapshot. Directories are walked; regular files, directories,
symlinks, device nodes and fifos are recorded with modes, owners, times and
extended attributes. Files unchanged since the parent snapshot (same size,
mtime, ctime and inode) are not read again. Unreadable entries are reported
and left out; the snapshot is still saved and the exit code is 3.

--sqlite DB saves a live SQLite database as one consistent transaction
while its writers go on (in WAL mode; in rollback-journal mode writers wait
until the image is read), streaming its pages with no copy on disk. A
database below a PATH replaces the plain copy there, and its -wal, -shm and
-journal files are left out.

--freeze-cmd and --thaw-cmd run around the whole backup for engines with a
lock mode (Firebird 'nbackup -L' / 'nbackup -N', fsfreeze): the thaw
command always runs once the freeze command succeeded - after the data was
read, on errors, on Ctrl-C or SIGTERM, and when --freeze-timeout expires
(then the backup fails). Both commands and their exit codes are recorded in
the snapshot.

--stdin-from-command -- CMD runs a dump tool and saves its output; the
snapshot is kept only if CMD exits with status 0, so a truncated dump never
looks like a good backup. Its stderr is passed through.

Progress: on a terminal a progress line shows files and bytes done of the
totals (counted by a walk of the paths beside the backup), the rate, the
time left and the current file; with --json, status objects are printed
every second (REPO_PROGRESS_FPS=N: N times a second); when stdout is a
pipe or a file, only the summary. -v prints every new or changed file
("new", "changed"), -vv also the unchanged ones; with --json these are
verbose_status objects. --quiet shows none of it; --no-color or NO_COLOR
keeps the progress line plain.

Examples:
  repo backup -r /srv/backup /home /etc
  repo backup --exclude '*.tmp' --exclude '/home/*/.cache' --tag nightly /home
  repo backup --sqlite /var/lib/app/app.db
  repo backup /srv/app --sqlite /srv/app/data.db
  repo backup --stdin-from-command --stdin-filename mydb.sql -- pg_dump mydb
  pg_dump mydb | repo backup --stdin --stdin-filename mydb.sql
  repo backup --freeze-cmd 'nbackup -L /db/emp.fdb' --thaw-cmd 'nbackup -N /db/emp.fdb' /db

Exit codes: 0 ok, 1 error (no snapshot saved), 2 usage, 3 snapshot saved but
some entries could not be read, 10 no repository, 11 repository locked,
12 wrong password.`,
		RunE: func(c *cobra.Command, args []string) error { return runBackup(c, g, o, args) },
	}
	f := c.Flags()
	f.BoolVar(&o.stdin, "stdin", false, "back up standard input as one file")
	f.StringVar(&o.stdinFilename, "stdin-filename", "stdin", "file `name` for --stdin")
	f.StringArrayVarP(&o.excludes, "exclude", "e", nil, "exclude paths matching `pattern` (repeatable; * ? [..] per component, ** for any depth)")
	f.StringArrayVar(&o.tags, "tag", nil, "add `tag` to the snapshot (repeatable)")
	f.StringVar(&o.host, "host", "", "host name to record (default: this host)")
	f.StringVar(&o.parent, "parent", "", "use snapshot `id` as parent instead of the latest one of the same host and paths")
	f.StringVar(&o.compression, "compression", "", "compression for this backup: auto, fastest, better or off (default: the repository's, set by init)")
	f.BoolVar(&o.force, "force", false, "read every file, even those unchanged since the parent")
	f.StringArrayVar(&o.databases, "sqlite", nil, "save the live SQLite database `file` as one consistent transaction (repeatable)")
	f.BoolVar(&o.fromCommand, "stdin-from-command", false, "run the command given after -- and save its output; keep the snapshot only if it exits 0")
	f.StringVar(&o.freezeCmd, "freeze-cmd", "", "shell `command` that freezes the source before the backup")
	f.StringVar(&o.thawCmd, "thaw-cmd", "", "shell `command` that thaws it; always run once the freeze succeeded")
	f.DurationVar(&o.freezeTimeout, "freeze-timeout", 0, "thaw and fail the backup if the source stays frozen longer than `duration` (0: no limit)")
	f.StringVar(&o.time, "time", "", "record `time` as the snapshot's time instead of now: \"2006-01-02 15:04:05\" (local time) or RFC 3339")
	return withLock(c, lockShared)
}

func runBackup(c *cobra.Command, g *globalOptions, o backupOptions, args []string) error {
	ctx := c.Context()
	var command []string
	if o.fromCommand {
		if o.stdin {
			return usageError("--stdin and --stdin-from-command cannot be combined")
		}
		if c.ArgsLenAtDash() < 0 || len(args) == 0 {
			return usageError("--stdin-from-command: give the command after --, e.g. 'repo backup --stdin-from-command -- pg_dump mydb'")
		}
		if c.ArgsLenAtDash() > 0 {
			return usageError("--stdin-from-command cannot be combined with paths")
		}
		command, args = args, nil
	}
	stream := o.stdin || o.fromCommand
	if stream && (len(args) > 0 || len(o.databases) > 0) {
		return usageError("--stdin cannot be combined with paths or --sqlite")
	}
	if !stream && len(args) == 0 && len(o.databases) == 0 {
		return usageError("nothing to back up: give paths, --sqlite or --stdin (see 'repo backup --help')")
	}
	if (o.freezeCmd == "") != (o.thawCmd == "") {
		return usageError("--freeze-cmd and --thaw-cmd go together")
	}
	if o.freezeTimeout != 0 && o.freezeCmd == "" {
		return usageError("--freeze-timeout needs --freeze-cmd")
	}
	if stream && !repo.ValidName(o.stdinFilename) {
		return usageError("--stdin-filename %q: want a plain file name, without '/'", o.stdinFilename)
	}
	if o.force && o.parent != "" {
		return usageError("--force and --parent cannot be combined")
	}
	var snapTime time.Time
	if o.time != "" {
		t, err := parseSnapshotTime(o.time)
		if err != nil {
			return usageError("--time: %v", err)
		}
		snapTime = t
	}
	if o.compression != "" {
		if err := repo.ValidCompression(o.compression); err != nil {
			return usageError("--compression: %v", err)
		}
	}
	// Hooks and dump commands write to stderr itself, not through the
	// progress display: a child given a pipe instead of a file would
	// keep Wait waiting for whatever it leaves running.
	childErr := g.err
	ui := g.startProgress()
	defer ui.stop()
	r, ctx, closeRepo, err := g.openRepository(ctx, true)
	if err != nil {
		return err
	}
	if o.compression != "" {
		if err := r.SetCompression(o.compression); err != nil {
			return err
		}
	}
	defer closeRepo()

	var mu sync.Mutex
	opts := repo.BackupOptions{
		Paths:          args,
		Excludes:       o.excludes,
		Tags:           o.tags,
		Hostname:       o.host,
		NoParent:       o.force,
		Time:           snapTime,
		ProgramVersion: version,
		OnError: func(path string, err error) {
			mu.Lock()
			defer mu.Unlock()
			g.warn(path, err)
		},
		Progress: ui.progress(),
		OnItem:   ui.onItem(),
	}
	opts.Databases = o.databases
	opts.OnDatabase = func(p string, info sqlite.Info) {
		how := "writers continue while it is read"
		if info.JournalMode != "wal" {
			how = "rollback-journal mode: writers wait until it is read"
		}
		g.verbosef("database %s: %d pages of %d bytes, %s mode, %s", p, info.PageCount, info.PageSize, info.JournalMode, how)
	}
	if o.stdin {
		opts.Stdin, opts.StdinName = g.in, o.stdinFilename
	}
	var afterRead []func(*repo.Snapshot) error
	var thawErr error
	if o.freezeCmd != "" {
		fz, err := source.StartFreeze(ctx, source.FreezeOptions{
			FreezeCmd: o.freezeCmd, ThawCmd: o.thawCmd, Timeout: o.freezeTimeout,
			Stdout: childErr, Stderr: childErr,
		})
		if err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		defer fz.Thaw() // once only: a no-op after the thaw below
		// The backup stops when the freeze ends early (timeout, signal),
		// but not because of the thaw it asks for itself after reading.
		frozen := fz.Frozen(ctx)
		bctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := context.AfterFunc(frozen, func() {
			if cause := context.Cause(frozen); !errors.Is(cause, source.ErrThawed) {
				cancel(cause)
			}
		})
		defer stop()
		ctx = bctx
		afterRead = append(afterRead, func(sn *repo.Snapshot) error {
			fr := fz.FreezeResult()
			th, err := fz.Thaw()
			sn.Source.Freeze, sn.Source.Thaw = &fr, &th
			if err != nil {
				// The data was read while frozen: keep the snapshot, but
				// fail the command so that someone looks at the source.
				thawErr = fmt.Errorf("thaw: %w", err)
			}
			return nil
		})
	}
	if command != nil {
		cmd, err := source.StartCommand(ctx, command, childErr)
		if err != nil {
			return err
		}
		defer func() {
			cmd.Kill()
			cmd.Wait()
		}()
		opts.Stdin, opts.StdinName = cmd, o.stdinFilename
		afterRead = append(afterRead, func(sn *repo.Snapshot) error {
			sn.Source.Kind, sn.Source.Command = repo.SourceCommand, command
			return cmd.Wait()
		})
	}
	if len(afterRead) > 0 {
		opts.AfterRead = func(sn *repo.Snapshot) error {
			for _, fn := range afterRead {
				if err := fn(sn); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if o.parent != "" {
		p, err := r.FindSnapshot(ctx, o.parent, repo.SnapshotFilter{})
		if err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		opts.Parent = p
	}
	sn, err := r.Backup(ctx, opts)
	ui.stop()
	if err != nil {
		return err
	}
	printBackupSummary(g, sn)
	if thawErr != nil {
		return fmt.Errorf("snapshot %s saved, but %w", sn.ID.Short(), thawErr)
	}
	if sn.Summary.Errors > 0 {
		return errIncomplete
	}
	return nil
}

// parseSnapshotTime reads --time: "2006-01-02 15:04:05" or
// "2006-01-02 15:04" in the local time zone (as snapshots shows times), or
// RFC 3339 with an explicit offset.
func parseSnapshotTime(s string) (time.Time, error) {
	for _, layout := range []string{time.DateTime, "2006-01-02 15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want \"2006-01-02 15:04:05\" (local time) or RFC 3339 (2006-01-02T15:04:05Z)", s)
}

func printBackupSummary(g *globalOptions, sn *repo.Snapshot) {
	s := sn.Summary
	if g.json {
		printJSON(g.out, struct {
			MessageType string `json:"message_type"`
			SnapshotID  string `json:"snapshot_id"`
			*repo.Summary
			DurationS float64 `json:"duration_seconds"`
		}{"summary", sn.ID.String(), s, s.End.Sub(s.Start).Seconds()})
		return
	}
	parent := "none"
	if sn.Parent != nil {
		parent = sn.Parent.Short()
	}
	fmt.Fprintf(g.out, "files:  %d new, %d changed, %d unmodified (parent %s)\n", s.FilesNew, s.FilesChanged, s.FilesUnmodified, parent)
	fmt.Fprintf(g.out, "dirs:   %d new, %d changed, %d unmodified\n", s.DirsNew, s.DirsChanged, s.DirsUnmodified)
	fmt.Fprintf(g.out, "read:   %d files, %s (%s already in the repository, not stored again)\n", s.FilesRead, formatBytes(s.BytesRead), formatBytes(s.BytesSkipped))
	fmt.Fprintf(g.out, "added:  %s in %d blobs, %s stored in %d packs\n", formatBytes(s.BytesAdded), s.BlobsAdded, formatBytes(s.BytesStored), s.PacksAdded)
	if s.PacksResumed > 0 {
		fmt.Fprintf(g.out, "resumed: %d packs an interrupted backup had uploaded were indexed, not uploaded again\n", s.PacksResumed)
	}
	if s.Errors > 0 {
		fmt.Fprintf(g.out, "errors: %d entries could not be read and are not in the snapshot\n", s.Errors)
	}
	fmt.Fprintf(g.out, "snapshot %s saved: %d files, %s in %s\n", sn.ID.Short(), s.TotalFiles, formatBytes(s.TotalBytes), formatDuration(s.End.Sub(s.Start).Round(10*time.Millisecond)))
}
