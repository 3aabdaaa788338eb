package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"repo/chunk"
	"repo/repo"
)

type snapshotsOptions struct {
	filterFlags
}

func newSnapshotsCmd(g *globalOptions) *cobra.Command {
	var o snapshotsOptions
	c := &cobra.Command{
		Use:   "snapshots",
		Short: "List snapshots",
		Long: `List the snapshots in the repository, oldest first.

Examples:
  repo snapshots
  repo snapshots --host db1 --tag nightly
  repo snapshots --json | jq .id

Exit codes: 0 ok, 1 error, 2 usage, 10 no repository, 11 repository locked,
12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error { return runSnapshots(c, g, o) },
	}
	o.addFlags(c.Flags(), "")
	return withLock(c, lockShared)
}

// snapshotItemJSON is one snapshot in snapshots --json: the snapshot file's
// fields (see docs/format.md) and its id, which the file itself does not
// hold (it is the file's name).
type snapshotItemJSON struct {
	MessageType string `json:"message_type"`
	ID          string `json:"id"`
	ShortID     string `json:"short_id"`
	*repo.Snapshot
}

// snapshotsSummary is the summary line of snapshots --json.
type snapshotsSummary struct {
	MessageType string `json:"message_type"`
	Snapshots   int    `json:"snapshots"`  // listed (those the filter selects)
	Unreadable  int    `json:"unreadable"` // snapshot files that could not be read
}

func runSnapshots(c *cobra.Command, g *globalOptions, o snapshotsOptions) error {
	ctx := c.Context()
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	broken := 0
	sns, err := r.Snapshots(ctx, func(id chunk.ID, err error) {
		broken++
		g.warn("snapshots/"+id.String(), err)
	})
	if err != nil {
		return err
	}
	f := o.filter()
	var shown []*repo.Snapshot
	for _, sn := range sns {
		if f.Match(sn) {
			shown = append(shown, sn)
		}
	}
	if g.json {
		for _, sn := range shown {
			printJSON(g.out, snapshotItemJSON{"snapshot", sn.ID.String(), sn.ID.Short(), sn})
		}
		printJSON(g.out, snapshotsSummary{"summary", len(shown), broken})
	} else {
		tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTime\tHost\tTags\tSize\tPaths")
		for _, sn := range shown {
			size := ""
			if sn.Summary != nil {
				size = formatBytes(sn.Summary.TotalBytes)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sn.ID.Short(), sn.Time.Local().Format("2006-01-02 15:04:05"),
				sn.Hostname, strings.Join(sn.Tags, ","), size, strings.Join(sn.Paths, " "))
		}
		tw.Flush()
		fmt.Fprintf(g.out, "%d snapshots\n", len(shown))
	}
	if broken > 0 {
		return fmt.Errorf("%d snapshots could not be read (run 'repo check')", broken)
	}
	return nil
}
