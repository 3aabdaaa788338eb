package main

import (
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"repo/repo"
)

type lsOptions struct {
	long bool
	filterFlags
}

func newLsCmd(g *globalOptions) *cobra.Command {
	var o lsOptions
	c := &cobra.Command{
		Use:   "ls SNAPSHOT [PATH]",
		Short: "List the files of a snapshot",
		Long: `List everything in a snapshot, or below PATH in it.

Examples:
  repo ls latest
  repo ls -l 3fa2b1c9 /home/ann
  repo ls --json latest /etc

Exit codes: 0 ok, 1 error, 2 usage, 10 no repository, 12 wrong password.`,
		Args: argsRange(1, 2),
		RunE: func(c *cobra.Command, args []string) error { return runLs(c, g, o, args) },
	}
	c.Flags().BoolVarP(&o.long, "long", "l", false, "show mode, owner, size and time")
	o.addFlags(c.Flags(), "for latest: ")
	return withLock(c, lockShared)
}

func runLs(c *cobra.Command, g *globalOptions, o lsOptions, args []string) error {
	ctx := c.Context()
	r, sn, ctx, closeRepo, err := g.openSnapshot(ctx, args[0], o.filter())
	if err != nil {
		return err
	}
	defer closeRepo()
	p := "/"
	if len(args) > 1 {
		p = args[1]
	}
	node, clean, err := r.FindNode(ctx, sn, p)
	if err != nil {
		return err
	}
	count := 0
	err = r.Walk(ctx, clean, node, func(p string, n *repo.Node) error {
		if p == "/" {
			return nil
		}
		count++
		switch {
		case g.json:
			printJSON(g.out, map[string]any{"message_type": "node", "path": p, "type": n.Type, "size": n.Size,
				"mode": fmt.Sprintf("%04o", n.Mode), "uid": n.UID, "gid": n.GID, "mtime": n.ModTime})
		case o.long:
			fmt.Fprintf(g.out, "%s %5d %5d %12d %s %s\n", modeString(n), n.UID, n.GID, n.Size, n.ModTime.Local().Format("2006-01-02 15:04:05"), p)
		default:
			fmt.Fprintln(g.out, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, map[string]any{"message_type": "summary", "snapshot_id": sn.ID.String(), "nodes": count})
	}
	return nil
}

// modeString renders a node's type and mode like ls -l.
func modeString(n *repo.Node) string {
	var m fs.FileMode = fs.FileMode(n.Mode & 0o777)
	if n.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch n.Type {
	case repo.NodeDir:
		m |= fs.ModeDir
	case repo.NodeSymlink:
		m |= fs.ModeSymlink
	case repo.NodeDevice:
		m |= fs.ModeDevice
	case repo.NodeCharDevice:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case repo.NodeFIFO:
		m |= fs.ModeNamedPipe
	case repo.NodeSocket:
		m |= fs.ModeSocket
	}
	return m.String()
}
