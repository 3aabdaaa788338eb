package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"repo/chunk"
	"repo/repo"
)

// repairOptions are the flags of check --repair and purge-broken-files.
type repairOptions struct {
	dryRun       bool
	from         []string
	noHeal       bool
	noQuarantine bool
	readData     bool
}

// runRepair runs the repair steps (all, or with purgeOnly just the purge)
// and prints what was done.
func runRepair(ctx context.Context, g *globalOptions, o repairOptions, purgeOnly bool) error {
	ui := g.startProgress()
	defer ui.stop()
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	opts := repo.RepairOptions{
		ReadData:     o.readData,
		DryRun:       o.dryRun,
		NoQuarantine: o.noQuarantine,
		SkipHeal:     purgeOnly || o.noHeal,
		Op:           repo.OpRepair,
		Report:       g.actionReporter("repair"),
		Progress:     ui.progress(),
	}
	if purgeOnly {
		opts.Op = repo.OpPurge
	}
	if o.from != nil {
		opts.From = o.from
	}
	res, err := r.Repair(ctx, opts)
	ui.stop()
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, struct {
			MessageType string `json:"message_type"`
			DryRun      bool   `json:"dry_run"`
			repo.RepairResult
		}{"summary", o.dryRun, res})
		return nil
	}
	for _, f := range res.FilesHealed {
		fmt.Fprintf(g.out, "healed: %s\n", f)
	}
	for _, bf := range res.FilesPurged {
		fmt.Fprintf(g.out, "purged: snapshot %s %s (%s, %d of %d blobs lost)\n", bf.Snapshot.Short(), bf.Path, bf.Kind, bf.MissingBlobs, bf.TotalBlobs)
	}
	verb := "repair"
	if o.dryRun {
		verb = "repair (dry run, nothing changed)"
	}
	fmt.Fprintf(g.out, "%s: %d packs re-indexed, %d missing, %d damaged (%d blobs salvaged), %d index files replaced, %d blobs healed (%d files), %d files purged, %d snapshots rewritten, %d removed, %s lost\n",
		verb, res.PacksReindexed, res.PacksMissing, res.PacksDamaged, res.BlobsSalvaged, res.IndexFilesReplaced,
		res.BlobsHealed, len(res.FilesHealed), len(res.FilesPurged), res.SnapshotsRewritten, res.SnapshotsRemoved, formatBytes(res.BytesLost))
	return nil
}

func newPurgeBrokenFilesCmd(g *globalOptions) *cobra.Command {
	var o repairOptions
	c := &cobra.Command{
		Use:   "purge-broken-files",
		Short: "Rewrite snapshots without the files whose content is lost",
		Long: `Rewrite every snapshot that references lost blobs without the files (and
directories) they belong to: the new snapshot is tagged "repaired" and
names the original, which is removed. A snapshot whose root tree is lost is
removed. This is 'repo check --repair' without healing from the source:
it still re-indexes and salvages first (a purge against an index that names
missing packs would not leave a repository check accepts), but it never
reads your files, so files that healing could save are purged.

Progress: on a terminal a progress line shows the step (packs read,
salvaged, snapshots rewritten) and how much of it is done; with --json,
status objects are printed every second (REPO_PROGRESS_FPS=N: N times a
second); when stdout is a pipe or a file, only the actions and the
summary. --no-color or NO_COLOR keeps the progress line plain.

Examples:
  repo list-broken-files
  repo purge-broken-files --dry-run
  repo purge-broken-files

Exit codes: 0 ok, 1 error, 2 usage, 10 no repository, 11 repository locked,
12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			return runRepair(c.Context(), g, o, true)
		},
	}
	c.Flags().BoolVarP(&o.dryRun, "dry-run", "n", false, "show what would be purged, change nothing")
	return withLock(c, lockExclusive)
}

func newListBrokenFilesCmd(g *globalOptions) *cobra.Command {
	var readData bool
	c := &cobra.Command{
		Use:   "list-broken-files [SNAPSHOT...]",
		Short: "List the files whose content is missing or damaged",
		Long: `List, for each snapshot (all, or those given), every file whose content
cannot be recovered from the repository, with how many of its blobs are
lost and how many bytes that is. Blobs in packs that no index lists and
readable blobs of damaged packs count as recoverable: 'repo check --repair'
keeps them. With --read-data every pack is read, so damaged blobs are found
too; without it only missing and visibly damaged packs are. On a terminal
a progress line shows the packs read; with --json, status objects (see
'repo check --help').

Examples:
  repo list-broken-files
  repo list-broken-files --read-data latest
  repo list-broken-files --json

Exit codes: 0 nothing broken, 1 broken files listed (or an error), 2 usage,
10 no repository, 11 repository locked, 12 wrong password.`,
		RunE: func(c *cobra.Command, args []string) error {
			return runListBrokenFiles(c.Context(), g, readData, args)
		},
	}
	c.Flags().BoolVar(&readData, "read-data", false, "read every pack to find damaged blobs")
	return withLock(c, lockShared)
}

func runListBrokenFiles(ctx context.Context, g *globalOptions, readData bool, refs []string) error {
	ui := g.startProgress()
	defer ui.stop()
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	d, err := r.Scan(ctx, repo.ScanOptions{ReadData: readData, Progress: ui.progress()})
	ui.stop()
	if err != nil {
		return err
	}
	var sns []*repo.Snapshot
	unreadable := 0
	if len(refs) == 0 {
		// An unreadable snapshot loses everything in it: it counts as
		// broken (check --repair moves it to quarantine/).
		if sns, err = r.Snapshots(ctx, func(id chunk.ID, err error) {
			unreadable++
			g.warn("snapshots/"+id.String(), err)
		}); err != nil {
			return err
		}
	} else {
		for _, ref := range refs {
			sn, err := r.FindSnapshot(ctx, ref, repo.SnapshotFilter{})
			if err != nil {
				return err
			}
			sns = append(sns, sn)
		}
	}
	n := 0
	var lost int64
	err = r.BrokenFiles(ctx, d, sns, func(bf repo.BrokenFile) {
		n++
		lost += bf.BytesLost
		if g.json {
			printJSON(g.out, struct {
				MessageType string `json:"message_type"`
				repo.BrokenFile
			}{"broken_file", bf})
			return
		}
		fmt.Fprintf(g.out, "snapshot %s %s: %s, %d of %d blobs lost (%s)\n", bf.Snapshot.Short(), bf.Path, bf.Kind, bf.MissingBlobs, bf.TotalBlobs, formatBytes(bf.BytesLost))
	})
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, map[string]any{"message_type": "summary", "broken_files": n, "bytes_lost": lost, "snapshots": len(sns)})
	} else if !g.quiet {
		fmt.Fprintf(g.out, "%d broken files in %d snapshots, %s lost\n", n, len(sns), formatBytes(lost))
	}
	switch {
	case n > 0 && unreadable > 0:
		return fmt.Errorf("%d broken files and %d unreadable snapshots (repair with 'repo check --repair')", n, unreadable)
	case n > 0:
		return fmt.Errorf("%d broken files (repair with 'repo check --repair')", n)
	case unreadable > 0:
		return fmt.Errorf("%d snapshots could not be read (repair with 'repo check --repair')", unreadable)
	}
	return nil
}
