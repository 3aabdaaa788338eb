package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"repo/repo"
)

type backupOptions struct {
	stdin         bool
	stdinFilename string
	excludes      []string
	tags          []string
	host          string
	parent        string
	force         bool
}

func newBackupCmd(g *globalOptions) *cobra.Command {
	var o backupOptions
	c := &cobra.Command{
		Use:   "backup [flags] PATH... | --stdin",
		Short: "Save a snapshot of files and directories, or of standard input",
		Long: `Save a new snapshot. Directories are walked; regular files, directories,
symlinks, device nodes and fifos are recorded with modes, owners, times and
extended attributes. Files unchanged since the parent snapshot (same size,
mtime, ctime and inode) are not read again. Unreadable entries are reported
and left out; the snapshot is still saved and the exit code is 3.

Examples:
  repo backup -r /srv/backup /home /etc
  repo backup --exclude '*.tmp' --exclude '/home/*/.cache' --tag nightly /home
  pg_dump mydb | repo backup --stdin --stdin-filename mydb.sql

Exit codes: 0 ok, 1 error (no snapshot saved), 2 usage, 3 snapshot saved but
some entries could not be read, 10 no repository, 12 wrong password.`,
		RunE: func(c *cobra.Command, args []string) error { return runBackup(c, g, o, args) },
	}
	f := c.Flags()
	f.BoolVar(&o.stdin, "stdin", false, "back up standard input as one file")
	f.StringVar(&o.stdinFilename, "stdin-filename", "stdin", "file `name` for --stdin")
	f.StringArrayVarP(&o.excludes, "exclude", "e", nil, "exclude paths matching `pattern` (repeatable; * ? [..] per component, ** for any depth)")
	f.StringArrayVar(&o.tags, "tag", nil, "add `tag` to the snapshot (repeatable)")
	f.StringVar(&o.host, "host", "", "host name to record (default: this host)")
	f.StringVar(&o.parent, "parent", "", "use snapshot `id` as parent instead of the latest one of the same host and paths")
	f.BoolVar(&o.force, "force", false, "read every file, even those unchanged since the parent")
	return withLock(c, lockShared)
}

func runBackup(c *cobra.Command, g *globalOptions, o backupOptions, args []string) error {
	ctx := c.Context()
	if o.stdin && len(args) > 0 {
		return usageError("--stdin and paths cannot be combined")
	}
	if !o.stdin && len(args) == 0 {
		return usageError("nothing to back up: give paths or --stdin (see 'repo backup --help')")
	}
	if o.stdin && !repo.ValidName(o.stdinFilename) {
		return usageError("--stdin-filename %q: want a plain file name, without '/'", o.stdinFilename)
	}
	if o.force && o.parent != "" {
		return usageError("--force and --parent cannot be combined")
	}
	r, ctx, closeRepo, err := g.openRepository(ctx, true)
	if err != nil {
		return err
	}
	defer closeRepo()

	var mu sync.Mutex
	opts := repo.BackupOptions{
		Paths:          args,
		Excludes:       o.excludes,
		Tags:           o.tags,
		Hostname:       o.host,
		NoParent:       o.force,
		ProgramVersion: version,
		OnError: func(path string, err error) {
			mu.Lock()
			defer mu.Unlock()
			g.warn(path, err)
		},
	}
	if o.stdin {
		opts.Stdin, opts.StdinName = g.in, o.stdinFilename
	}
	if o.parent != "" {
		p, err := r.FindSnapshot(ctx, o.parent, repo.SnapshotFilter{})
		if err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		opts.Parent = p
	}
	sn, err := r.Backup(ctx, opts)
	if err != nil {
		return err
	}
	printBackupSummary(g, sn)
	if sn.Summary.Errors > 0 {
		return errIncomplete
	}
	return nil
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
	fmt.Fprintf(g.out, "read:   %d files, %s\n", s.FilesRead, formatBytes(s.BytesRead))
	fmt.Fprintf(g.out, "added:  %s in %d blobs, %s stored in %d packs\n", formatBytes(s.BytesAdded), s.BlobsAdded, formatBytes(s.BytesStored), s.PacksAdded)
	if s.Errors > 0 {
		fmt.Fprintf(g.out, "errors: %d entries could not be read and are not in the snapshot\n", s.Errors)
	}
	fmt.Fprintf(g.out, "snapshot %s saved: %d files, %s in %s\n", sn.ID.Short(), s.TotalFiles, formatBytes(s.TotalBytes), formatDuration(s.End.Sub(s.Start).Round(10*time.Millisecond)))
}
