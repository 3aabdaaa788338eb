package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"repo/repo"
)

type checkOptions struct {
	readData       bool
	readDataSubset string
	repair         bool
	repairOptions
}

func newCheckCmd(g *globalOptions) *cobra.Command {
	var o checkOptions
	c := &cobra.Command{
		Use:   "check",
		Short: "Verify the repository's structure, and optionally all data",
		Long: `Check the repository without changing it: the config and keys open,
every index file parses, every indexed pack exists with the size the index
says, every snapshot's trees are readable and every block they reference is
indexed. Packs that no index lists are reported as notes, and so is the
plan of an interrupted prune or repair (the repository is consistent; run
that command again to finish its work). With --read-data
every pack is also downloaded and every block decrypted, decompressed and
verified against its hash. Every problem found is reported, not just the
first.

--read-data-subset=SUBSET reads only part of the packs, so that a large
repository can be verified in instalments. SUBSET is either
  K/M  (1 <= K <= M) the K-th of M groups; the runs 1/M, 2/M ... M/M
       together read every pack exactly once, or
  N%   (0 < N <= 100, decimals allowed) about N percent of the packs.
The choice depends only on the pack ids, so the same SUBSET reads the same
packs each time (packs added since are assigned to a group by their id).
It implies --read-data and takes precedence over it.

--repair (exclusive lock) brings the repository back to a state check
accepts, in steps that can be re-run after a crash until done:
  1. re-index intact packs that no index lists; replace all index files
     by one that lists every intact pack (missing packs drop out);
  2. salvage every readable blob of a damaged pack into new packs, then
     move the damaged pack to quarantine/ (removed with --no-quarantine);
  3. heal from the source: read --from PATH... (default: the paths of the
     affected snapshots that exist on this host) and upload every chunk
     that is among the missing blobs, making old snapshots whole again;
  4. rewrite snapshots that still miss blobs without the broken files,
     tagged "repaired" (purge-broken-files does this step alone).
With --read-data it reads every pack to find damaged blobs first;
--dry-run shows all of it and changes nothing. See docs/repair.md.

Progress: on a terminal a progress line shows the step (index files,
snapshots, packs read; with --repair packs read, salvaged, files healed,
snapshots rewritten), how much of it is done and the time left; with
--json, status objects are printed every second (REPO_PROGRESS_FPS=N: N
times a second); when stdout is a pipe or a file, only the findings and
the summary. --no-color or NO_COLOR keeps the progress line plain.

Examples:
  repo check
  repo check --read-data
  repo check --read-data-subset=1/7     # on day 1 of 7; 2/7 on day 2, ...
  repo check --read-data-subset=2.5%
  repo check --json | jq 'select(.message_type=="finding")'
  repo check --repair --dry-run
  repo check --repair --read-data --from /srv/data

Exit codes: 0 no errors (notes may be printed; after --repair: repaired),
1 errors found, 2 usage (e.g. a malformed --read-data-subset),
10 no repository, 11 repository locked (by an exclusive lock; with
--repair, by any lock), 12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error { return runCheck(c, g, o) },
	}
	c.Flags().BoolVar(&o.readData, "read-data", false, "also read and verify every pack")
	c.Flags().StringVar(&o.readDataSubset, "read-data-subset", "", "read and verify only the packs of `SUBSET`: K/M (group K of M) or N% (about N percent)")
	f := c.Flags()
	f.BoolVar(&o.repair, "repair", false, "repair the repository (exclusive lock; see above)")
	f.BoolVarP(&o.dryRun, "dry-run", "n", false, "with --repair: show what would be done, change nothing")
	f.StringArrayVar(&o.from, "from", nil, "with --repair: heal missing blobs from `path` (repeatable; default: the affected snapshots' paths)")
	f.BoolVar(&o.noHeal, "no-heal", false, "with --repair: do not read sources to heal")
	f.BoolVar(&o.noQuarantine, "no-quarantine", false, "with --repair: remove damaged packs instead of keeping them in quarantine/")
	return withLock(c, lockShared)
}

func runCheck(c *cobra.Command, g *globalOptions, o checkOptions) error {
	ctx := c.Context()
	if !o.repair && (o.dryRun || o.from != nil || o.noHeal || o.noQuarantine) {
		return usageError("--dry-run, --from, --no-heal and --no-quarantine need --repair")
	}
	if o.repair {
		if c.Flags().Changed("read-data-subset") {
			return usageError("--repair reads all packs or none: use --read-data, not --read-data-subset")
		}
		// The lock is decided by the flag: repair writes.
		c.Annotations["lock"] = lockExclusive
		o.repairOptions.readData = o.readData
		return runRepair(ctx, g, o.repairOptions, false)
	}
	opts := repo.CheckOptions{ReadData: o.readData}
	if c.Flags().Changed("read-data-subset") {
		subset, err := repo.ParseReadDataSubset(o.readDataSubset)
		if err != nil {
			return usageError("--read-data-subset: %v (see '%s --help')", err, c.CommandPath())
		}
		opts.Subset = subset
	}
	ui := g.startProgress()
	defer ui.stop()
	opts.Progress = ui.progress()
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	res, err := r.Check(ctx, opts, func(f repo.Finding) {
		if g.json {
			printJSON(g.out, struct {
				MessageType string `json:"message_type"`
				repo.Finding
			}{"finding", f})
			return
		}
		fmt.Fprintf(g.out, "%s: %s %s: %s\n", f.Level, f.Kind, f.Object, f.Message)
	})
	ui.stop()
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, struct {
			MessageType string `json:"message_type"`
			repo.CheckResult
		}{"summary", res})
	} else {
		read := ""
		switch {
		case opts.Subset != nil:
			read = fmt.Sprintf(", read %d packs (subset %s)", res.PacksRead, opts.Subset)
		case opts.ReadData:
			read = fmt.Sprintf(", read %d packs", res.PacksRead)
		}
		fmt.Fprintf(g.out, "checked %d snapshots, %d trees, %d index files, %d packs, %d blobs%s: %d errors, %d notes\n",
			res.Snapshots, res.Trees, res.IndexFiles, res.Packs, res.Blobs, read, res.Errors, res.Notes)
	}
	if res.Errors > 0 {
		return fmt.Errorf("check found %d errors", res.Errors)
	}
	return nil
}
