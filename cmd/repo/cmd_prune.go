package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"repo/repo"
)

// pruneOptions are the flags of prune.
type pruneOptions struct {
	maxUnused string
	dryRun    bool
}

func newPruneCmd(g *globalOptions) *cobra.Command {
	var o pruneOptions
	c := &cobra.Command{
		Use:   "prune",
		Short: "Remove data that no snapshot uses",
		Long: `Delete the packs whose blobs no snapshot uses any more (after forget),
and repack partly used packs: their used blobs are copied into new packs
and the old packs deleted, the emptiest first, until the unused space left
is at most --max-unused of the data the snapshots use. Packs that no index
lists (left by interrupted backups) and leftover temporary files of killed
processes are removed too. prune takes the exclusive lock.

prune refuses, and changes nothing, when a snapshot cannot be read or a
blob a snapshot uses is missing or damaged: run 'repo check --repair'
first.

It writes its plan to the repository before the first change, writes new
objects before it removes the ones they replace, and removes packs last,
so the repository is consistent at every instant: after a crash or Ctrl-C
run prune again and it finishes the job ('repo check' meanwhile notes the
interrupted prune). See docs/prune.md.

--max-unused is N% (default 5%; 0% repacks every partly used pack) or
"unlimited" (only delete, never repack).

Progress: on a terminal a progress line shows the step (index files read,
snapshots walked, packs repacked, packs deleted), how much of it is done
and the time left; with --json, status objects are printed every second
(REPO_PROGRESS_FPS=N: N times a second); when stdout is a pipe or a file,
only the actions and the summary. --no-color or NO_COLOR keeps the
progress line plain.

Examples:
  repo prune --dry-run
  repo prune
  repo prune --max-unused 20%
  repo prune --json

Exit codes: 0 ok, 1 error (also: refused because of damage; run
'repo check --repair'), 2 usage, 10 no repository, 11 repository locked,
12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			return runPrune(c.Context(), g, o)
		},
	}
	c.Flags().StringVar(&o.maxUnused, "max-unused", "5%", "leave at most `LIMIT` unused space in kept packs, as N% of the used data, or \"unlimited\"")
	c.Flags().BoolVarP(&o.dryRun, "dry-run", "n", false, "show what would be done, change nothing")
	return withLock(c, lockExclusive)
}

// parseMaxUnused reads --max-unused (see repo.ParseMaxUnused).
func parseMaxUnused(s string) (float64, error) {
	v, err := repo.ParseMaxUnused(s)
	if err != nil {
		return 0, fmt.Errorf("--max-unused %w", err)
	}
	return v, nil
}

func runPrune(ctx context.Context, g *globalOptions, o pruneOptions) error {
	maxUnused, err := parseMaxUnused(o.maxUnused)
	if err != nil {
		return usageError("%v", err)
	}
	ui := g.startProgress()
	defer ui.stop()
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	res, err := r.Prune(ctx, repo.PruneOptions{
		MaxUnused: maxUnused,
		DryRun:    o.dryRun,
		Report:    g.actionReporter("prune"),
		Progress:  ui.progress(),
	})
	ui.stop()
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, struct {
			MessageType string `json:"message_type"`
			DryRun      bool   `json:"dry_run"`
			repo.PruneResult
		}{"summary", o.dryRun, res})
		return nil
	}
	if g.quiet {
		return nil
	}
	line := fmt.Sprintf("freed %s in %d packs, repacked %s in %d packs", formatBytes(res.BytesFreed), res.PacksDeleted, formatBytes(res.BytesRepacked), res.PacksRepacked)
	if o.dryRun {
		line = fmt.Sprintf("prune (dry run, nothing changed): would free %s in %d packs, would repack %s in %d packs", formatBytes(res.BytesFreed), res.PacksDeleted, formatBytes(res.BytesRepacked), res.PacksRepacked)
	}
	fmt.Fprintf(g.out, "%s (%d snapshots use %s; %s unused left; %d index files, %d packs; %s)\n",
		line, res.Snapshots, formatBytes(res.BytesUsed), formatBytes(res.BytesUnusedLeft), res.IndexFilesAfter, res.PacksAfter, formatDuration(res.Duration))
	return nil
}
