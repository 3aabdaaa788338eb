package main

import (
	"fmt"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"repo/repo"
)

type restoreOptions struct {
	target string
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
written outside the target, whatever the snapshot holds. Existing files at
the target are replaced.

Examples:
  repo restore latest --target /tmp/restore
  repo restore latest --path /home --host laptop --target /tmp/restore
  repo restore 3fa2b1c9:/home/ann/projects --target ./projects

Exit codes: 0 ok, 1 error or some files not restored, 2 usage,
10 no repository, 12 wrong password.`,
		Args: argsRange(1, 1),
		RunE: func(c *cobra.Command, args []string) error { return runRestore(c, g, o, args[0]) },
	}
	c.Flags().StringVarP(&o.target, "target", "t", "", "restore into `directory` (required)")
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
	id, sub := splitSnapshotRef(ref)
	r, sn, ctx, closeRepo, err := g.openSnapshot(ctx, id, o.filter())
	if err != nil {
		return err
	}
	defer closeRepo()
	var mu sync.Mutex
	st, err := r.Restore(ctx, sn, sub, repo.RestoreOptions{
		Target: o.target,
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
	})
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, struct {
			MessageType string `json:"message_type"`
			SnapshotID  string `json:"snapshot_id"`
			repo.RestoreStats
		}{"summary", sn.ID.String(), st})
	} else {
		fmt.Fprintf(g.out, "restored snapshot %s to %s: %d files, %d dirs, %d symlinks, %s\n",
			sn.ID.Short(), o.target, st.Files, st.Dirs, st.Symlinks, formatBytes(st.Bytes))
	}
	if st.Errors > 0 {
		return fmt.Errorf("%d entries could not be restored (see above)", st.Errors)
	}
	if st.DatabasesDamaged > 0 {
		return fmt.Errorf("%d of %d restored databases failed the integrity check (see above)", st.DatabasesDamaged, st.Databases)
	}
	return nil
}
