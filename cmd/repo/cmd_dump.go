package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"repo/repo"
)

func newDumpCmd(g *globalOptions) *cobra.Command {
	var o filterFlags
	c := &cobra.Command{
		Use:   "dump SNAPSHOT PATH",
		Short: "Write one file of a snapshot to standard output",
		Long: `Write the content of the file at PATH in SNAPSHOT to standard output,
verifying every block. Useful for dump streams:

Examples:
  repo dump latest /mydb.sql | psql mydb
  repo dump 3fa2b1c9 /etc/fstab

Exit codes: 0 ok, 1 error (nothing or a verified prefix was written),
2 usage, 10 no repository, 12 wrong password.`,
		Args: argsRange(2, 2),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			r, sn, ctx, closeRepo, err := g.openSnapshot(ctx, args[0], o.filter())
			if err != nil {
				return err
			}
			defer closeRepo()
			node, clean, err := r.FindNode(ctx, sn, args[1])
			if err != nil {
				return err
			}
			if node.Type != repo.NodeFile {
				return fmt.Errorf("%s is a %s, not a file", clean, node.Type)
			}
			return r.WriteContent(ctx, node, g.out)
		},
	}
	o.addFlags(c.Flags(), "for latest: ")
	return withLock(c, lockShared)
}
