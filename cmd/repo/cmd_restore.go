package main

import (
	"fmt"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"repo/repo"
)

type restoreOptions struct {
	target    string
	verify    bool
	overwrite string
	filterFlags
}

func newRestoreCmd(g *globalOptions) *cobra.Command {
	var o restoreOptions
	c := &cobra.Command{
		Use:   "restore SNAPSHOT[:PATH] --target DIR",
		Short: "Restore a snapshot, or a part of it, into a directory",
		Long: `Restore files from a snapshot into --target. SNAPSHOT is an id (or a
unique prefix of one) or "latest". Without :PATH the whole snapshot is
restored, recreating the backed-up paths below the target
(/home/ann/x becomes TARGET/home/ann/x); with :PATH only that directory's
contents (or that file) are restored into the target.

Every block is verified against its hash; a file that cannot be restored
completely is removed and reported, never left with wrong content. Nothing is
written outside the target, whatever the snapshot holds. Blocks of zeros
are not written, so sparse files stay sparse.

--overwrite says what happens to an entry already at the target (an
existing directory is always kept and restored into):
  always      replace it (the default)
  if-changed  keep a file whose size and mtime match the snapshot's; read
              one of the same size but another mtime and keep it if every
              block matches; keep a symlink, device or FIFO equal to the
              snapshot's; kept entries only get their metadata set. This
              makes re-running an interrupted restore cheap.
  if-newer    keep it if its mtime is not older than the snapshot's
  never       keep it as it is
Kept files are counted as skipped, not as errors.

A database image (backup --sqlite) is written with any stale -wal, -shm or
-journal file beside it removed, and PRAGMA integrity_check runs on it; the
verdict is printed. --verify then reads every restored file back and
checks its size and every block against the snapshot.

Progress: on a terminal a progress line shows files and bytes restored of
the totals, the rate, the time left and the current file; with --json,
status objects are printed every second (REPO_PROGRESS_FPS=N: N times a
second); when stdout is a pipe or a file, only the summary. -v prints
every file restored ("restored"), -vv also those --overwrite kept
("skipped"); with --json these are verbose_status objects. --quiet shows
none of it; --no-color or NO_COLOR keeps the progress line plain.

Examples:
  repo restore latest --target /tmp/restore
  repo restore latest --path /home --host laptop --target /tmp/restore
  repo restore 3fa2b1c9:/home/ann/projects --target ./projects
  repo restore latest --path /var/lib/app/app.db --target /tmp/db --verify
  repo restore latest --target /tmp/restore --overwrite if-changed   # finish an interrupted restore

Exit codes: 0 ok, 1 error, some files not restored, a restored database
failing its integrity check, or --verify finding a difference, 2 usage,
10 no repository, 11 repository locked, 12 wrong password.`,
		Args: argsRange(1, 1),
		RunE: func(c *cobra.Command, args []string) error { return runRestore(c, g, o, args[0]) },
	}
	c.Flags().StringVarP(&o.target, "target", "t", "", "restore into `directory` (required)")
	c.Flags().BoolVar(&o.verify, "verify", false, "read the restored files back and check them against the snapshot")
	c.Flags().StringVar(&o.overwrite, "overwrite", "always", "existing entries at the target: `mode` always, if-changed, if-newer or never")
	o.addFlags(c.Flags(), "for latest: ")
	return withLock(c, lockShared)
}

// splitSnapshotRef splits "ID[:PATH]".
func splitSnapshotRef(ref string) (id, path string) {
	id, path, _ = strings.Cut(ref, ":")
	return id, path
}

func runRestore(c *cobra.Command, g *globalOptions, o restoreOptions, ref string) error {
	ctx := c.Context()
	if o.target == "" {
		return usageError("--target is required")
	}
	overwrite, err := repo.ParseOverwrite(o.overwrite)
	if err != nil {
		return usageError("--overwrite: %v", err)
	}
	id, sub := splitSnapshotRef(ref)
	ui := g.startProgress()
	defer ui.stop()
	r, sn, ctx, closeRepo, err := g.openSnapshot(ctx, id, o.filter())
	if err != nil {
		return err
	}
	defer closeRepo()
	var mu sync.Mutex
	st, err := r.Restore(ctx, sn, sub, repo.RestoreOptions{
		Target:    o.target,
		Overwrite: overwrite,
		OnError: func(path string, err error) {
			mu.Lock()
			defer mu.Unlock()
			g.warn(path, err)
		},
		OnDatabase: func(path, verdict string, err error) {
			switch {
			case err != nil:
				g.warn(path, fmt.Errorf("database integrity check failed to run: %w", err))
			case verdict != "ok":
				g.warn(path, fmt.Errorf("database integrity check: %s", verdict))
			case g.json:
				printJSON(g.out, map[string]any{"message_type": "verbose_status", "item": path, "integrity_check": verdict})
			default:
				g.verbosef("database %s: integrity_check %s", path, verdict)
			}
		},
		Progress: ui.progress(),
		OnItem:   ui.onItem(),
	})
	ui.stop()
	if err != nil {
		return err
	}
	// With --json the summary is the last line: after --verify, it
	// carries the verification's figures too.
	summary := func(vs *repo.VerifyStats) {
		printJSON(g.out, struct {
			MessageType string `json:"message_type"`
			SnapshotID  string `json:"snapshot_id"`
			repo.RestoreStats
			Verify *repo.VerifyStats `json:"verify,omitempty"`
		}{"summary", sn.ID.String(), st, vs})
	}
	failed := st.Errors > 0 || st.DatabasesDamaged > 0
	if g.json && (!o.verify || failed) {
		summary(nil)
	} else if !g.json {
		fmt.Fprintf(g.out, "restored snapshot %s to %s: %d files, %d dirs, %d symlinks, %s\n",
			sn.ID.Short(), o.target, st.Files, st.Dirs, st.Symlinks, formatBytes(st.Bytes))
		if st.FilesSkipped > 0 || st.OtherSkipped > 0 {
			fmt.Fprintf(g.out, "skipped (already at the target, --overwrite %s): %d files, %s, %d other entries\n",
				overwrite, st.FilesSkipped, formatBytes(st.BytesSkipped), st.OtherSkipped)
		}
	}
	if st.Errors > 0 {
		return fmt.Errorf("%d entries could not be restored (see above)", st.Errors)
	}
	if st.DatabasesDamaged > 0 {
		return fmt.Errorf("%d of %d restored databases failed the integrity check (see above)", st.DatabasesDamaged, st.Databases)
	}
	if o.verify {
		vs, err := r.VerifyRestore(ctx, sn, sub, o.target, func(path string, err error) {
			mu.Lock()
			defer mu.Unlock()
			g.warn(path, err)
		})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if g.json {
			summary(&vs)
		} else if !g.quiet {
			fmt.Fprintf(g.out, "verified %d files, %s: %d differ\n", vs.Files, formatBytes(vs.Bytes), vs.Errors)
		}
		if vs.Errors > 0 {
			return fmt.Errorf("verify: %d restored files differ from the snapshot (see above)", vs.Errors)
		}
	}
	return nil
}
