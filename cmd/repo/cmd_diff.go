package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"repo/repo"
)

// diffOptions are the flags of diff.
type diffOptions struct {
	metadata bool
	filterFlags
}

func newDiffCmd(g *globalOptions) *cobra.Command {
	var o diffOptions
	c := &cobra.Command{
		Use:   "diff SNAPSHOT1[:PATH] SNAPSHOT2[:PATH]",
		Short: "Show what changed between two snapshots",
		Long: `List the differences between two snapshots (ids, unique id prefixes or
"latest"), or between a directory in each (SNAPSHOT:PATH), one line per
entry, in name order:

  + PATH   added
  - PATH   removed (everything below an added or removed directory is
           listed too; directories end in /)
  M PATH   content changed: a file's data or size, a database image's
           pages, a symlink's target, a device's number
  T PATH   type changed (e.g. a file became a directory)
  U PATH   only metadata changed: mode, owner, mtime or extended
           attributes (listed with --metadata; always counted)

A summary counts the files, directories and other entries added, removed
and changed, and the bytes of the files added and removed (a changed file
counts its old size as removed and its new size as added). Directories
whose contents are identical are not read, so comparing two snapshots of a
large, mostly unchanged tree is quick. Paths are those in the snapshots;
when the two PATHs differ, they are relative to them.

Examples:
  repo diff 3fa2b1c4 latest
  repo diff --metadata 3fa2b1c4 77d0e5aa
  repo diff 3fa2b1c4:/home/ann latest:/home/ann
  repo diff --json 3fa2b1c4 latest | jq 'select(.modifier == "M") | .path'

Exit codes: 0 ok (also when the snapshots differ), 1 error, 2 usage,
10 no repository, 11 repository locked, 12 wrong password.`,
		Args: argsRange(2, 2),
		RunE: func(c *cobra.Command, args []string) error { return runDiff(c, g, o, args) },
	}
	c.Flags().BoolVar(&o.metadata, "metadata", false, "also list entries whose metadata alone changed (U)")
	o.addFlags(c.Flags(), "for latest: ")
	return withLock(c, lockShared)
}

// diffChangeJSON is one line of diff --json.
type diffChangeJSON struct {
	MessageType string  `json:"message_type"` // "change"
	Path        string  `json:"path"`
	Modifier    string  `json:"modifier"` // + - M T U
	Type        string  `json:"type"`     // the new entry's type (the old one's when removed)
	OldType     string  `json:"old_type,omitempty"`
	Size        *uint64 `json:"size,omitempty"` // files: the new size (the old one when removed)
	OldSize     *uint64 `json:"old_size,omitempty"`
}

// diffSummary is the summary line of diff --json.
type diffSummary struct {
	MessageType string `json:"message_type"`
	OldSnapshot string `json:"old_snapshot"` // the first snapshot's id
	NewSnapshot string `json:"new_snapshot"` // the second's
	repo.DiffStats
}

func runDiff(c *cobra.Command, g *globalOptions, o diffOptions, args []string) error {
	ctx := c.Context()
	ref1, p1 := splitSnapshotRef(args[0])
	ref2, p2 := splitSnapshotRef(args[1])
	f := o.filter()
	r, sn1, ctx, closeRepo, err := g.openSnapshot(ctx, ref1, f)
	if err != nil {
		return err
	}
	defer closeRepo()
	sn2, err := r.FindSnapshot(ctx, ref2, f)
	if err != nil {
		return err
	}
	if p1 == "" {
		p1 = "/"
	}
	if p2 == "" {
		p2 = "/"
	}
	n1, clean1, err := r.FindNode(ctx, sn1, p1)
	if err != nil {
		return err
	}
	n2, clean2, err := r.FindNode(ctx, sn2, p2)
	if err != nil {
		return err
	}
	base := clean1
	if clean1 != clean2 {
		base = "/"
	}
	if !g.json && !g.quiet {
		fmt.Fprintf(g.out, "comparing snapshot %s%s with %s%s\n", sn1.ID.Short(), pathSuffix(clean1), sn2.ID.Short(), pathSuffix(clean2))
	}
	st, err := r.Diff(ctx, base, n1, n2, func(ch repo.DiffChange) error {
		if ch.Kind == repo.DiffMetadata && !o.metadata {
			return nil
		}
		printDiffChange(g, ch)
		return nil
	})
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, diffSummary{"summary", sn1.ID.String(), sn2.ID.String(), st})
		return nil
	}
	if g.quiet {
		return nil
	}
	fmt.Fprintln(g.out)
	fmt.Fprintf(g.out, "files:  %d added, %d removed, %d changed\n", st.FilesAdded, st.FilesRemoved, st.FilesChanged)
	fmt.Fprintf(g.out, "dirs:   %d added, %d removed\n", st.DirsAdded, st.DirsRemoved)
	fmt.Fprintf(g.out, "others: %d added, %d removed, %d changed\n", st.OthersAdded, st.OthersRemoved, st.OthersChanged)
	meta := ""
	if !o.metadata && st.MetadataChanged > 0 {
		meta = " (listed with --metadata)"
	}
	fmt.Fprintf(g.out, "type changed: %d, metadata only: %d%s\n", st.TypeChanged, st.MetadataChanged, meta)
	fmt.Fprintf(g.out, "bytes:  %s added, %s removed\n", formatBytes(st.BytesAdded), formatBytes(st.BytesRemoved))
	return nil
}

func pathSuffix(p string) string {
	if p == "/" {
		return ""
	}
	return ":" + p
}

// printDiffChange prints one change: "M /etc/passwd", directories with a
// trailing slash, or a JSON object. The changes are diff's result, so
// --quiet keeps them (and drops the header and summary).
func printDiffChange(g *globalOptions, ch repo.DiffChange) {
	n := ch.New
	if n == nil {
		n = ch.Old
	}
	if g.json {
		j := diffChangeJSON{MessageType: "change", Path: ch.Path, Modifier: ch.Kind, Type: n.Type}
		if ch.Old != nil && ch.New != nil && ch.Old.Type != ch.New.Type {
			j.OldType = ch.Old.Type
		}
		if n.Type == repo.NodeFile {
			j.Size = &n.Size
		}
		if ch.Old != nil && ch.New != nil && ch.Old.Type == repo.NodeFile {
			j.OldSize = &ch.Old.Size
		}
		printJSON(g.out, j)
		return
	}
	p := ch.Path
	if n.Type == repo.NodeDir && p != "/" {
		p += "/"
	}
	fmt.Fprintf(g.out, "%s %s\n", ch.Kind, p)
}
