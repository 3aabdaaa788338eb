package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"repo/repo"
)

func newForgetCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "forget SNAPSHOT...",
		Short: "Remove snapshots from the repository",
		Long: `Remove the given snapshots (ids or unique id prefixes). The data they
alone reference stays in the repository until a prune. forget takes the
exclusive lock.

Examples:
  repo forget 3fa2b1c4
  repo forget 3fa2b1c4 77d0e5aa

Exit codes: 0 ok, 1 error (e.g. a snapshot not found; the others given are
still removed), 2 usage, 10 no repository, 11 repository locked,
12 wrong password.`,
		Args: argsRange(1, -1),
		RunE: func(c *cobra.Command, args []string) error {
			return runForget(c.Context(), g, args)
		},
	}
	return withLock(c, lockExclusive)
}

func runForget(ctx context.Context, g *globalOptions, refs []string) error {
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	var firstErr error
	removed := 0
	for _, ref := range refs {
		sn, err := r.FindSnapshot(ctx, ref, repo.SnapshotFilter{})
		if err == nil {
			err = r.RemoveSnapshot(ctx, sn.ID)
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			g.warn(ref, err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		removed++
		if g.json {
			printJSON(g.out, map[string]any{"message_type": "removed", "snapshot_id": sn.ID.String()})
		} else {
			g.verbosef("removed snapshot %s", sn.ID.Short())
		}
	}
	if g.json {
		printJSON(g.out, map[string]any{"message_type": "summary", "removed": removed})
	} else if !g.quiet {
		fmt.Fprintf(g.out, "%d snapshot(s) removed\n", removed)
	}
	if firstErr != nil {
		return fmt.Errorf("%d of %d snapshots not removed; first: %w", len(refs)-removed, len(refs), firstErr)
	}
	return nil
}
