package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"repo/chunk"
	"repo/repo"
)

func newStatsCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "stats [SNAPSHOT...]",
		Short: "Show sizes, deduplication and compression of snapshots",
		Long: `Show what the given snapshots (ids, unique id prefixes or "latest"; all
when none is given) hold and what they cost in storage:

  snapshots           how many were counted
  files, restore size the regular files of every snapshot and their total
                      size, a file in two snapshots counted twice: what
                      restoring each would write
  data blobs          the distinct pieces of content they reference, with
                      their size before (raw) and after (stored) compression
                      and encryption
  tree blobs          the distinct directory listings and database page maps
  dedup ratio         restore size / raw data size
  compression ratio   raw data size / stored data size
  packs, index files  the objects in data/ and index/ and their total size
  unreferenced        with no SNAPSHOT given: indexed blobs that no snapshot
                      uses, and their stored size, which a prune would free

Every directory is read once however many snapshots share it; database
images count their pages through their page maps. stats takes a shared
lock and reads the index and the trees, not the file contents.

Examples:
  repo stats
  repo stats latest
  repo stats 3fa2b1c9 77d0e5aa --json | jq .dedup_ratio

Exit codes: 0 ok, 1 error (also: a snapshot or tree could not be read; the
rest is counted and shown), 2 usage, 10 no repository, 11 locked, 12 wrong
password.`,
		Args: argsRange(0, -1),
		RunE: func(c *cobra.Command, args []string) error { return runStats(c.Context(), g, args) },
	}
	return withLock(c, lockShared)
}

// statsSummary is the summary line of stats --json.
type statsSummary struct {
	MessageType string `json:"message_type"`
	*repo.Stats
	// Set only when every snapshot was counted.
	UnreferencedBlobs *int64 `json:"unreferenced_blobs,omitempty"`
	UnreferencedSize  *int64 `json:"unreferenced_size,omitempty"`
}

func runStats(ctx context.Context, g *globalOptions, refs []string) error {
	r, ctx, closeRepo, err := g.openRepository(ctx, true)
	if err != nil {
		return err
	}
	defer closeRepo()
	var sns []*repo.Snapshot
	broken := 0
	if len(refs) == 0 {
		sns, err = r.Snapshots(ctx, func(id chunk.ID, err error) {
			broken++
			g.warn("snapshots/"+id.String(), err)
		})
		if err != nil {
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
	st, err := r.Stats(ctx, repo.StatsOptions{
		Snapshots: sns,
		// With a snapshot unreadable, its blobs would count as unused.
		Unreferenced: len(refs) == 0 && broken == 0,
		OnError:      g.warn,
	})
	if err != nil {
		return err
	}
	if g.json {
		out := statsSummary{MessageType: "summary", Stats: st}
		if u := st.Unreferenced; u != nil {
			out.UnreferencedBlobs, out.UnreferencedSize = &u.Blobs, &u.StoredSize
		}
		printJSON(g.out, out)
	} else {
		printStats(g, st, len(refs) == 0)
	}
	switch {
	case broken > 0:
		return fmt.Errorf("%d snapshots could not be read and are not counted (run 'repo check')", broken)
	case st.Errors > 0:
		return fmt.Errorf("%d trees or page maps could not be read; what they hold is not counted (run 'repo check')", st.Errors)
	}
	return nil
}

func printStats(g *globalOptions, st *repo.Stats, all bool) {
	tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
	which := "selected"
	if all {
		which = "all"
	}
	fmt.Fprintf(tw, "Snapshots:\t%d (%s)\n", st.Snapshots, which)
	fmt.Fprintf(tw, "Files:\t%d\n", st.TotalFiles)
	fmt.Fprintf(tw, "Restore size:\t%s\n", formatBytes(st.TotalSize))
	fmt.Fprintf(tw, "Data blobs:\t%d, %s raw, %s stored\n", st.DataBlobs, formatBytes(st.RawSize), formatBytes(st.StoredSize))
	trees := fmt.Sprintf("%d, %s raw, %s stored", st.TreeBlobs, formatBytes(st.TreeRawSize), formatBytes(st.TreeStoredSize))
	if st.PageMapBlobs > 0 {
		trees += fmt.Sprintf(" (%d of them database page maps)", st.PageMapBlobs)
	}
	fmt.Fprintf(tw, "Tree blobs:\t%s\n", trees)
	fmt.Fprintf(tw, "Dedup ratio:\t%.2f (restore size / raw data)\n", st.DedupRatio)
	fmt.Fprintf(tw, "Compression ratio:\t%.2f (raw data / stored data)\n", st.CompressionRatio)
	fmt.Fprintf(tw, "Packs:\t%d, %s\n", st.Packs, formatBytes(st.PacksSize))
	fmt.Fprintf(tw, "Index files:\t%d, %s\n", st.IndexFiles, formatBytes(st.IndexSize))
	if st.MissingBlobs > 0 {
		fmt.Fprintf(tw, "Missing blobs:\t%d (referenced but not indexed: run 'repo check')\n", st.MissingBlobs)
	}
	if u := st.Unreferenced; u != nil {
		fmt.Fprintf(tw, "Unreferenced:\t%d blobs, %s stored (used by no snapshot; a prune frees them)\n", u.Blobs, formatBytes(u.StoredSize))
	}
	tw.Flush()
}
