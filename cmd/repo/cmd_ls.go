package main

import (
	"fmt"
	"io/fs"
	"time"

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

Exit codes: 0 ok, 1 error, 2 usage, 10 no repository, 11 repository locked,
12 wrong password.`,
		Args: argsRange(1, 2),
		RunE: func(c *cobra.Command, args []string) error { return runLs(c, g, o, args) },
	}
	c.Flags().BoolVarP(&o.long, "long", "l", false, "show mode, owner, size and time")
	o.addFlags(c.Flags(), "for latest: ")
	return withLock(c, lockShared)
}

// lsNodeJSON is one entry in ls --json: what ls -l shows. The tree's own
// node encoding (docs/format.md) is not used: it carries blob lists and
// raw names that are no business of a listing.
type lsNodeJSON struct {
	MessageType string `json:"message_type"`
	Path        string `json:"path"`
	Type        string `json:"type"`
	// Size is the file's size in bytes; 0 for anything but a file.
	Size uint64 `json:"size"`
	// Mode is the permission bits with setuid, setgid and sticky, in
	// octal as chmod takes it ("0644", "4755").
	Mode       string    `json:"mode"`
	UID        uint32    `json:"uid"`
	GID        uint32    `json:"gid"`
	ModTime    time.Time `json:"mtime"`
	LinkTarget string    `json:"link_target,omitempty"`
}

// lsSummary is the summary line of ls --json.
type lsSummary struct {
	MessageType string `json:"message_type"`
	SnapshotID  string `json:"snapshot_id"`
	Nodes       int    `json:"nodes"` // entries listed
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
			printJSON(g.out, lsNodeJSON{MessageType: "node", Path: p, Type: n.Type, Size: n.Size,
				Mode: fmt.Sprintf("%04o", n.Mode), UID: n.UID, GID: n.GID, ModTime: n.ModTime, LinkTarget: n.LinkTarget})
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
		printJSON(g.out, lsSummary{"summary", sn.ID.String(), count})
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
